"""runnerd: a single-host compute-to-data runner (Ocean Provider v2 compatible)."""

__version__ = "0.1.0"
