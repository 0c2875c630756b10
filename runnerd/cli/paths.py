"""Where the daemon's files are: flags, then RUNNERD_* variables, then defaults (SPEC §1)."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from runnerd.config import default_config_path


def default_data_dir() -> Path:
    """Per-user: $XDG_DATA_HOME/runnerd (~/.local/share/runnerd); the systemd unit passes
    /var/lib/runnerd."""
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return Path(base) / "runnerd"


def add_location_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", metavar="F", default=os.environ.get("RUNNERD_CONFIG"),
                        help="environments.yaml (env RUNNERD_CONFIG; default ./environments.yaml, "
                             "else /etc/runnerd/environments.yaml)")
    parser.add_argument("--data-dir", metavar="D", default=os.environ.get("RUNNERD_DATA_DIR"),
                        help="jobs, database and node key (env RUNNERD_DATA_DIR; default ~/.local/share/runnerd)")
    parser.add_argument("--assets", metavar="A", default=os.environ.get("RUNNERD_ASSETS"),
                        help="the asset catalog folder (env RUNNERD_ASSETS; default <data-dir>/assets)")


def resolve(args: argparse.Namespace) -> tuple[Path, Path, Path]:
    config = Path(args.config) if args.config else default_config_path()
    data_dir = Path(args.data_dir) if args.data_dir else default_data_dir()
    assets = Path(args.assets) if args.assets else data_dir / "assets"
    return config, data_dir, assets
