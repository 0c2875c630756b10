"""The architecture's import rules (docs/architecture.md "Layers"), checked on the source.

The whole order is `LAYERS` below, stated once: every module of runnerd/ belongs to exactly one
part of one layer; a module may import its own part and anything in a lower layer; the parts of one
layer are independent (neither imports the other); nothing imports upwards. A new module that no
part names fails `test_every_module_has_a_place_in_the_order`, so the rule covers it from the start.
Beside the order: each third-party library has one home, and the helper scripts use the stdlib only.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "runnerd"

# Top first. A part is a folder ("api/": every module below it) or one module ("daemon.py").
LAYERS: tuple[tuple[str, ...], ...] = (
    ("__main__.py",),                             # `python -m runnerd`
    ("cli/",),                                    # the `runnerd` command (serve starts the API)
    ("api/",),                                    # HTTP: aiohttp app, handlers, transport limits
    ("daemon.py", "doctor.py"),                   # the two that pick the real Docker runtime
    ("engine/",),                                 # intake, scheduler, runner, steps, workspace, sweeper
    ("store/", "containers/", "metrics.py", "client.py", "chain/", "egress.py"),  # SQLite · containers ·
    # Prometheus · HTTP client · chain mode (fees, orders) · a dataset's egress guard
    ("identity.py", "hooks.py", "fields.py", "provenance.py"),  # node key and tokens · engine events · a client's
    # field · signed attestations
    ("domain.py", "config.py", "errors.py", "layout.py", "catalog.py", "signing.py", "logs.py", "notify.py",
     "clock.py"),
    ("imageref.py", "configkeys.py", "holdings.py"),  # the one image reference parser (config checks patterns) ·
    # how a config key is declared and read · what a running job holds (domain.py re-exports it)
    ("__init__.py", "steps/"),                    # the version; the helper containers' stdlib-only scripts
)

# third-party library -> where it may be imported
OWNERS = {"docker": ("containers/docker_runtime.py", "containers/swarm_runtime.py"), "aiosqlite": ("store/",),
          "aiohttp": ("api/",), "prometheus_client": ("metrics.py",), "httpx": ("client.py", "cli/common.py"),
          "coincurve": ("signing.py",), "eth_hash": ("signing.py",), "eth_account": (),
          "yaml": ("config.py", "api/docs.py"), "tqdm": ("cli/results_cmd.py",), "eth_abi": ("chain/abi.py",)}
# The engine reaches containers through the ContainerRuntime protocol only; the real one is chosen
# by the composition root (and by doctor, which checks the host the way the daemon would).
REAL_RUNTIME = "containers/docker_runtime.py"
CHOOSES_RUNTIME = ("daemon.py", "doctor.py", "containers/")


def _module_file(dotted: str) -> str | None:
    """runnerd/… path (relative to the package) of a dotted module name, if it is in the tree."""
    if dotted != "runnerd" and not dotted.startswith("runnerd."):
        return None
    rel = Path(*dotted.split(".")[1:])
    for candidate in (rel.with_suffix(".py") if rel.parts else None, rel / "__init__.py"):
        if candidate is not None and (PACKAGE / candidate).is_file():
            return candidate.as_posix()
    return None


def _targets(path: Path) -> tuple[set[str], set[str]]:
    """(runnerd modules this file imports, top-level names of everything it imports). Imports in
    functions and under TYPE_CHECKING count, and so does a string naming a module (`lazy(...)`)."""
    here = path.relative_to(PACKAGE.parent).with_suffix("").parts
    own, top = set(), set()
    for node in ast.walk(ast.parse(path.read_text())):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: `.` is this file's package, each further dot one package up
                package = here[:len(here) - node.level]
                base = ".".join([*package, *([base] if base else [])])
            names = [f"{base}.{a.name}" if _module_file(f"{base}.{a.name}") else base for a in node.names]
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and _module_file(node.value):
            names = [node.value]
        for name in names:
            top.add(name.split(".")[0])
            if (target := _module_file(name)) is not None:
                own.add(target)
    rel = path.relative_to(PACKAGE).as_posix()
    return own - {rel}, top


MODULES = {p.relative_to(PACKAGE).as_posix(): _targets(p) for p in sorted(PACKAGE.rglob("*.py"))}


def _place(module: str, layers=LAYERS) -> list[tuple[int, str]]:
    return [(i, part) for i, parts in enumerate(layers) for part in parts
            if module == part or (part.endswith("/") and module.startswith(part))]


def violations(edges: dict[str, set[str]], layers=LAYERS) -> list[str]:
    """Every import that breaks the order: upwards, or across two parts of one layer."""
    found = []
    for module, targets in sorted(edges.items()):
        ((here, part),) = _place(module, layers)
        for target in sorted(targets):
            ((there, other),) = _place(target, layers)
            if there < here:
                found.append(f"{module} (layer {here}) imports {target} of the higher layer {there} ({other})")
            elif there == here and other != part:
                found.append(f"{module} imports {target}: {part} and {other} share layer {here} and are independent")
    return found


def test_every_module_has_a_place_in_the_order():
    misplaced = {m: _place(m) for m in MODULES if len(_place(m)) != 1}
    assert misplaced == {}, "add each module to exactly one part of LAYERS (none = not covered, two = ambiguous)"


def test_every_part_of_the_order_names_something_that_exists():
    stale = [part for parts in LAYERS for part in parts if not any(_place(m, ((part,),)) for m in MODULES)]
    assert stale == []


def test_no_module_imports_upwards_or_across_its_layer():
    assert violations({m: own for m, (own, _) in MODULES.items()}) == []


def test_the_order_check_finds_what_it_must():
    """The checker itself, on a made-up tree: an upward import, a sibling import, and a clean one."""
    layers = (("top/",), ("a.py", "b.py"), ("base.py",))
    assert violations({"top/x.py": {"a.py", "base.py"}, "a.py": {"base.py"}, "base.py": set()}, layers) == []
    assert len(violations({"base.py": {"top/x.py"}, "top/x.py": set()}, layers)) == 1
    assert len(violations({"a.py": {"b.py"}, "b.py": set()}, layers)) == 1
    with pytest.raises(ValueError):  # a module no part names cannot be placed
        violations({"new.py": set()}, layers)


def test_lazy_and_relative_imports_are_seen():
    """`common.lazy("runnerd.cli.x", …)` and a TYPE_CHECKING import are arrows too."""
    own, _ = MODULES["cli/common.py"]
    assert "client.py" in own and "domain.py" in own
    own, _ = MODULES["cli/client_cmds.py"]
    assert {"cli/status_view.py", "cli/submit_cmd.py"} <= own


@pytest.mark.parametrize("library", sorted(OWNERS))
def test_a_library_is_imported_by_its_owner_only(library):
    offenders = [m for m, (_, top) in MODULES.items() if library in top and not m.startswith(OWNERS[library])]
    assert offenders == [], f"{library} imported outside {OWNERS[library]}"


def test_only_the_composition_root_picks_the_real_runtime():
    offenders = [m for m, (own, _) in MODULES.items() if REAL_RUNTIME in own and not m.startswith(CHOOSES_RUNTIME)]
    assert offenders == []


def test_the_helper_scripts_use_the_standard_library_only():
    """steps/*.py run inside the helper image (python:3.12-slim): nothing but the stdlib and each other."""
    beside = {p.stem for p in (PACKAGE / "steps").glob("*.py")}
    foreign = {m: sorted(top - set(sys.stdlib_module_names) - beside - {"__future__"})
               for m, (_, top) in MODULES.items() if m.startswith("steps/")}
    assert {m: t for m, t in foreign.items() if t} == {}


def test_modules_stay_small():
    """About 400 lines is where a module should be split by responsibility."""
    big = {m: n for m in MODULES if (n := len((PACKAGE / m).read_text().splitlines())) > 400}
    assert big == {}


def test_the_helper_scripts_default_to_the_daemons_report_path():
    """The report's path is spelled in layout.py; the scripts cannot import it, so their fallback
    (used when the plan itself is unreadable) must be the same text."""
    from runnerd import layout

    for script in ("provision.py", "filter.py"):
        tree = ast.parse((PACKAGE / "steps" / script).read_text())
        paths = {n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)
                 and n.value.endswith(layout.REPORT)}
        assert paths == {layout.STEP_REPORT}, script


def test_only_the_command_line_and_the_helper_scripts_print():
    """Everything below cli/ returns or logs what it has to say (doctor's checks return results,
    the CLI prints them), so it can be called from anywhere without writing to someone's stdout."""
    printing = sorted(m for m in MODULES if not m.startswith(("cli/", "steps/", "__main__.py"))
                      for node in ast.walk(ast.parse((PACKAGE / m).read_text()))
                      if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "print")
    assert printing == []


# What is parsed or spelled at a boundary, and the one module allowed to do it (#12).
ONE_PLACE = {
    "the report's file name": (r'"[^"\n]*report\.json"', ("layout.py", "steps/")),
    "jobUser taken apart": (r"(jobUser|job_user)\b[^\n]*\.(split|partition)\(", ("config.py",)),
    "a client's scalar field refused": (r"is longer than \{limit\} characters", ("fields.py",)),
    "a sha256 digest's grammar": (r"sha256:\[0-9a-f", ("imageref.py", "steps/")),
}


@pytest.mark.parametrize("what", sorted(ONE_PLACE))
def test_each_boundary_is_parsed_in_one_place(what):
    import re

    pattern, home = ONE_PLACE[what]
    elsewhere = sorted(m for m in MODULES if not m.startswith(home) and re.search(pattern, (PACKAGE / m).read_text()))
    assert elsewhere == [], f"{what} outside {home}"
