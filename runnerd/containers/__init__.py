"""Containers: the runtime interface, the pure spec builder and the Docker implementation."""
