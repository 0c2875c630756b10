"""HTTP API: the only package that imports aiohttp."""
