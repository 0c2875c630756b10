"""The runnerd command line."""
