"""The architecture's import rules (README "Layout", docs/architecture.md), checked on the source:
one module talks to Docker, one package to SQLite, one package speaks HTTP, and the inner layers
never reach outwards."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "runnerd"


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


MODULES = {p.relative_to(PACKAGE).as_posix(): _imports(p) for p in PACKAGE.rglob("*.py")}

# third-party library -> where it may be imported
OWNERS = {"docker": ("containers/docker_runtime.py",), "aiosqlite": ("store/",), "aiohttp": ("api/",)}
# inner module -> runnerd modules it must never import
INWARD = {
    "domain.py": ("runnerd.",),
    "errors.py": ("runnerd.",),
    "config.py": ("runnerd.",),
    "imageref.py": ("runnerd.",),  # the image reference parser: used by every layer, so it uses none
    "store/": ("runnerd.engine", "runnerd.api", "runnerd.containers", "runnerd.cli"),
    "containers/": ("runnerd.engine", "runnerd.api", "runnerd.store", "runnerd.cli"),
    "engine/": ("runnerd.api", "runnerd.cli", "runnerd.containers.docker_runtime"),
    "steps/": ("runnerd",),  # run inside the helper image: stdlib only
}


@pytest.mark.parametrize("library", sorted(OWNERS))
def test_a_library_is_imported_by_its_owner_only(library):
    offenders = [m for m, names in MODULES.items()
                 if any(n == library or n.startswith(library + ".") for n in names)
                 and not m.startswith(OWNERS[library])]
    assert offenders == [], f"{library} imported outside {OWNERS[library]}"


@pytest.mark.parametrize("inner", sorted(INWARD))
def test_inner_layers_do_not_import_outer_ones(inner):
    offenders = {m: sorted(n for n in names if n.startswith(INWARD[inner]))
                 for m, names in MODULES.items() if m.startswith(inner)}
    assert {m: v for m, v in offenders.items() if v} == {}


def test_modules_stay_small():
    """About 400 lines is where a module should be split by responsibility."""
    big = {m: n for m in MODULES if (n := len((PACKAGE / m).read_text().splitlines())) > 400}
    assert big == {}
