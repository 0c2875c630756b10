#!/usr/bin/env python3
"""Regenerate the three key tables of docs/configuration.md from runnerd/config.py.

    .venv/bin/python scripts/gen_config_docs.py           rewrite the tables in place
    .venv/bin/python scripts/gen_config_docs.py --check   exit 1 (and show a diff) if they are stale

The tables sit between marker comments (`<!-- BEGIN GENERATED: GLOBAL_KEYS … -->` …
`<!-- END GENERATED: GLOBAL_KEYS -->`, the same for ENV_KEYS); everything else in the file is
written by hand and left alone. The single source of truth is the key's line in Settings or
Environment or Chain (`name: type = key(…)`; GLOBAL_KEYS, ENV_KEYS and CHAIN_KEYS are derived from those fields): change
it there, then rerun this script. tests/test_docs.py fails while the file is out of date.
"""

from __future__ import annotations

import argparse
import difflib
import re
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from runnerd.config import CHAIN_KEYS, ENV_KEYS, GLOBAL_KEYS, Key  # noqa: E402

DOC = ROOT / "docs" / "configuration.md"
TABLES = {"GLOBAL_KEYS": GLOBAL_KEYS, "ENV_KEYS": ENV_KEYS, "CHAIN_KEYS": CHAIN_KEYS}
KINDS = {
    "bool": "boolean",
    "int": "integer",
    "number": "number",
    "str": "string",
    "enum": "string (one of)",
    "list[str]": "list of strings",
    "list[int]": "list of integers",
}


def _scalar(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else f"{value:.12f}".rstrip("0")
    if isinstance(value, str):
        return f'"{value}"' if value == "" else value
    return str(value)


def format_default(key: Key) -> str:
    """The `default` cell of a key's row, as YAML would spell the value."""
    if key.required:
        return "*required*"
    if isinstance(key.default, (list, tuple)):
        return "`[" + ", ".join(_scalar(v) for v in key.default) + "]`"
    return f"`{_scalar(key.default)}`"


def _allowed(key: Key) -> str:
    if key.choices:
        return ", ".join(f"`{c}`" for c in key.choices)
    if key.minimum is not None:
        return f"≥ {_scalar(key.minimum)}"
    if key.kind == "list[int]":
        return "positive integers"
    return ""


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def table(keys: tuple[Key, ...]) -> str:
    lines = [
        "| key | type | default | unit | allowed | meaning |",
        "|---|---|---|---|---|---|",
    ]
    for key in keys:
        lines.append(
            f"| `{key.name}` | {KINDS.get(key.kind, key.kind)} | {format_default(key)} | {key.unit} "
            f"| {_allowed(key)} | {_cell(key.help)} |"
        )
    return "\n".join(lines)


def _markers(name: str) -> tuple[str, str]:
    begin = (f"<!-- BEGIN GENERATED: {name} (scripts/gen_config_docs.py from runnerd/config.py; "
             f"do not edit by hand) -->")
    return begin, f"<!-- END GENERATED: {name} -->"


def render(text: str) -> str:
    """`text` (the document) with each generated table replaced by a fresh one."""
    for name, keys in TABLES.items():
        begin, end = _markers(name)
        pattern = re.compile(re.escape(begin.split(" (")[0]) + r"[^\n]*\n.*?" + re.escape(end), re.S)
        if not pattern.search(text):
            raise SystemExit(f"{DOC}: no marker pair for {name}; expected a line starting with "
                             f"{begin.split(' (')[0]!r} and a line {end!r}")
        replacement = f"{begin}\n\n{table(keys)}\n\n{end}"
        text = pattern.sub(lambda _m, r=replacement: r, text, count=1)
    return text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="do not write; exit 1 if the tables are stale")
    parser.add_argument("--file", type=Path, default=DOC, help=f"the document (default {DOC.relative_to(ROOT)})")
    args = parser.parse_args(argv)
    current = args.file.read_text(encoding="utf-8")
    fresh = render(current)
    if fresh == current:
        print(f"{args.file}: up to date")
        return 0
    if args.check:
        sys.stdout.writelines(difflib.unified_diff(current.splitlines(True), fresh.splitlines(True),
                                                   str(args.file), "regenerated"))
        print(f"\n{args.file} is stale: run .venv/bin/python scripts/gen_config_docs.py", file=sys.stderr)
        return 1
    args.file.write_text(fresh, encoding="utf-8")
    print(f"{args.file}: tables regenerated")
    return 0


if __name__ == "__main__":
    sys.exit(main())
