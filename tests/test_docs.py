"""The docs kept honest (in the manner of datasette's documentation tests): every config key, CLI
command, API route, API error code, job status, metric and algorithm environment variable that the
code defines must be documented, the generated configuration tables must match the code, and every
relative link in docs/*.md and README.md must point at something that exists.

Pure: no daemon, no Docker. When a test here fails, fix the docs (or, for the configuration
tables, run `.venv/bin/python scripts/gen_config_docs.py`), not the test.
"""

from __future__ import annotations

import argparse
import ast
import importlib.util
import re
import types
from functools import lru_cache
from pathlib import Path

import pytest
from aiohttp import web

import runnerd.errors
from runnerd.api.routes import setup_routes
from runnerd.cli.main import build_parser
from runnerd.config import CHAIN_KEYS, ENV_KEYS, GLOBAL_KEYS, Key
from runnerd.containers.spec import algorithm_env
from runnerd.domain import JobStatus
from runnerd.metrics import Metrics

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
PACKAGE = ROOT / "runnerd"
REGENERATE = "run `.venv/bin/python scripts/gen_config_docs.py` and commit docs/configuration.md"


def read(name: str) -> str:
    return (DOCS / name).read_text(encoding="utf-8")


@lru_cache(maxsize=1)
def generator() -> types.ModuleType:
    spec = importlib.util.spec_from_file_location("gen_config_docs", ROOT / "scripts" / "gen_config_docs.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def all_docs() -> str:
    return "\n".join(p.read_text(encoding="utf-8") for p in sorted(DOCS.glob("*.md")))


# -- configuration ------------------------------------------------------------------------------


def test_configuration_tables_are_the_generated_ones():
    """Regenerate-and-compare: a key added, removed or changed in runnerd/config.py (default, unit,
    minimum, choices, help) makes the committed tables stale."""
    current = read("configuration.md")
    assert generator().render(current) == current, f"docs/configuration.md is stale: {REGENERATE}"


def _generated_rows(table: str) -> dict[str, str]:
    """{key name: default cell} of the generated table `table` (GLOBAL_KEYS or ENV_KEYS)."""
    text = read("configuration.md")
    block = re.search(rf"<!-- BEGIN GENERATED: {table}\b.*?<!-- END GENERATED: {table} -->", text, re.S)
    assert block, f"docs/configuration.md has no generated {table} table: {REGENERATE}"
    rows = {}
    for line in block.group(0).splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split(" | ")]
        m = re.fullmatch(r"`(\w+)`", cells[0]) if len(cells) >= 3 else None
        if m:
            rows[m.group(1)] = cells[2]
    return rows


@pytest.mark.parametrize("table, key", [("GLOBAL_KEYS", k) for k in GLOBAL_KEYS] + [("ENV_KEYS", k) for k in ENV_KEYS]
                         + [("CHAIN_KEYS", k) for k in CHAIN_KEYS], ids=lambda v: v.name if isinstance(v, Key) else v)
def test_every_config_key_is_documented_with_its_default(table: str, key: Key):
    rows = _generated_rows(table)
    assert key.name in rows, f"config key {key.name!r} is missing from docs/configuration.md: {REGENERATE}"
    assert rows[key.name] == generator().format_default(key), \
        f"docs/configuration.md gives {key.name} the default {rows[key.name]}, the code " \
        f"{generator().format_default(key)}: {REGENERATE}"


def test_no_documented_config_key_is_gone_from_the_code():
    for table, keys in (("GLOBAL_KEYS", GLOBAL_KEYS), ("ENV_KEYS", ENV_KEYS), ("CHAIN_KEYS", CHAIN_KEYS)):
        stale = set(_generated_rows(table)) - {k.name for k in keys}
        assert not stale, f"docs/configuration.md documents keys the code no longer has: {stale}: {REGENERATE}"


# -- CLI ----------------------------------------------------------------------------------------


def _commands(parser: argparse.ArgumentParser, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Every command and subcommand path of the parser, e.g. ("serve",), ("assets", "add")."""
    found = []
    for action in parser._actions:  # argparse has no public API for walking subparsers
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found.append(prefix + (name,))
                found += _commands(sub, prefix + (name,))
    return found


COMMANDS = _commands(build_parser())


def test_the_cli_walk_finds_the_nested_assets_verbs():
    assert {("assets", "add"), ("assets", "list"), ("assets", "remove"), ("serve",)} <= set(COMMANDS)


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_every_cli_command_is_documented(command: tuple[str, ...]):
    pattern = r"(?<![\w-])runnerd\s+" + r"\s+".join(map(re.escape, command)) + r"(?![\w-])"
    assert re.search(pattern, all_docs()), f"`runnerd {' '.join(command)}` is not mentioned in docs/*.md"


# -- API routes and error codes -----------------------------------------------------------------


def _routes() -> list[tuple[str, str]]:
    app = web.Application()
    setup_routes(app)
    routes = set()
    for route in app.router.routes():
        if route.method in ("HEAD", "*"):
            continue  # aiohttp adds HEAD to every GET
        routes.add((route.method, route.resource.canonical))
    return sorted(routes)


ROUTES = _routes()


def test_routes_are_found():
    assert ("POST", "/api/services/compute") in ROUTES and ("GET", "/") in ROUTES


@pytest.mark.parametrize("method, path", ROUTES, ids=lambda v: v)
def test_every_route_is_in_the_api_reference(method: str, path: str):
    """A line of docs/api.md names the method and, after it, the exact path (not a longer one)."""
    pattern = rf"\b{method}\b[^\n]*?(?<![\w/]){re.escape(path)}(?![\w/])"
    assert re.search(pattern, read("api.md")), f"{method} {path} is not documented in docs/api.md"


def _error_classes() -> dict[str, type]:
    return {name: cls for name, cls in vars(runnerd.errors).items()
            if isinstance(cls, type) and issubclass(cls, runnerd.errors.RunnerdError)}


def _literal(node: ast.AST | None) -> str | None:
    return node.value if isinstance(node, ast.Constant) and isinstance(node.value, str) else None


def _error_codes() -> dict[str, str]:
    """{code: where} for every literal API error code in runnerd/: the `code` argument of the
    error classes (RunnerdError and its subclasses), their default codes, the codes the middleware
    and /health answer with (error_response(...), _HTTP_CODES, {"code": ...} literals in api/)."""
    classes = _error_classes()
    codes = {cls.default_code: f"{name}.default_code" for name, cls in classes.items()}
    for path in sorted(PACKAGE.rglob("*.py")):
        where = path.relative_to(ROOT).as_posix()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call):
                func = node.func
                name = func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else ""
                position = 1 if name in classes else 2 if name == "error_response" else None
                if position is None:
                    continue
                code = node.args[position] if len(node.args) > position else next(
                    (k.value for k in node.keywords if k.arg == "code"), None)
                if (value := _literal(code)) is not None:
                    codes.setdefault(value, f"{where}:{node.lineno}")
            elif isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "_HTTP_CODES"
                                                      for t in node.targets):
                for value_node in getattr(node.value, "values", []):
                    if (value := _literal(value_node)) is not None:
                        codes.setdefault(value, f"{where}:{node.lineno}")
            elif isinstance(node, ast.Dict) and "/api/" in f"/{where}":
                for key, value_node in zip(node.keys, node.values):
                    if _literal(key) == "code" and (value := _literal(value_node)) is not None:
                        codes.setdefault(value, f"{where}:{node.lineno}")
    return codes


ERROR_CODES = _error_codes()


def test_the_error_code_scan_finds_codes():
    assert {"no_raw_algo_allowed", "invalid_nonce", "not_found", "queue_full", "starting",
            "docker_unavailable", "payload_too_large"} <= set(ERROR_CODES)


@pytest.mark.parametrize("code", sorted(ERROR_CODES))
def test_every_error_code_is_in_the_api_reference(code: str):
    assert f"`{code}`" in read("api.md"), \
        f"API error code {code!r} (used at {ERROR_CODES[code]}) is not documented in docs/api.md"


# -- statuses, metrics, the algorithm's environment ---------------------------------------------


@pytest.mark.parametrize("status", list(JobStatus), ids=lambda s: f"{int(s)}-{s.name}")
def test_every_status_code_is_in_the_consumer_guide(status: JobStatus):
    """A table row that starts with the code and its exact statusText."""
    row = rf"^\|\s*{int(status)}\s*\|\s*{re.escape(status.text)}\s*\|"
    assert re.search(row, read("consumer-guide.md"), re.M), \
        f"status {int(status)} ({status.text}) has no row in docs/consumer-guide.md"


def _metric_names() -> list[str]:
    return sorted({metric.name for metric in Metrics().registry.collect()})


@pytest.mark.parametrize("name", _metric_names())
def test_every_metric_is_in_the_operator_guide(name: str):
    # prometheus_client reports counters without their _total suffix
    assert re.search(rf"`{re.escape(name)}(_total)?`", read("operator-guide.md")), \
        f"metric {name} is not documented in docs/operator-guide.md"


def _algorithm_variables() -> list[str]:
    job = types.SimpleNamespace(plan=types.SimpleNamespace(algorithm=types.SimpleNamespace(did=None), inputs=(),
                                                           secret="x"))
    return sorted(algorithm_env(job))


@pytest.mark.parametrize("variable", _algorithm_variables())
def test_every_algorithm_environment_variable_is_in_the_consumer_guide(variable: str):
    assert re.search(rf"^\|\s*`{re.escape(variable)}`\s*\|", read("consumer-guide.md"), re.M), \
        f"the algorithm's environment variable {variable} has no row in docs/consumer-guide.md"


# -- architecture -------------------------------------------------------------------------------


def _module_table() -> list[str]:
    """The modules the first column of docs/architecture.md's module table names, in order."""
    text = read("architecture.md")
    section = text.split("## Modules and why they exist", 1)[1].split("\n## ", 1)[0]
    names: list[str] = []
    for line in section.splitlines():
        cells = line.split("|")
        if line.startswith("|") and len(cells) > 2:
            names += re.findall(r"`([\w/]+\.py)`", cells[1])
    return names


def test_the_module_table_lists_every_module_once_and_nothing_else():
    """A new module gets its row in docs/architecture.md, a removed one loses it (#12)."""
    listed = _module_table()
    tree = sorted(p.relative_to(PACKAGE).as_posix() for p in PACKAGE.rglob("*.py"))
    assert sorted(m for m in set(listed) if listed.count(m) > 1) == [], "listed twice"
    assert sorted(set(tree) - set(listed)) == [], "modules missing from the table in docs/architecture.md"
    assert sorted(set(listed) - set(tree)) == [], "the table in docs/architecture.md lists modules that do not exist"


def test_the_layer_diagram_is_the_tested_order():
    """The Layers diagram of docs/architecture.md draws tests/test_layers.py's LAYERS: one line per
    layer, top first, naming its parts (`a · b`) before any description."""
    from tests.test_layers import LAYERS

    diagram = read("architecture.md").split("## Layers", 1)[1].split("```text", 1)[1].split("```", 1)[0]
    drawn = []
    for line in diagram.splitlines():
        parts = tuple(w for chunk in line.strip().split(" · ") if (w := chunk.split(" ")[0]).endswith(("/", ".py")))
        if parts and line.strip().startswith(parts[0]):
            drawn.append(parts)
    assert drawn == list(LAYERS)


# -- links --------------------------------------------------------------------------------------

LINK = re.compile(r"(?<!!)\[[^\]\n]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
FENCE = re.compile(r"^(```|~~~).*?^\1", re.S | re.M)
CODE_SPAN = re.compile(r"`[^`\n]*`")


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"<[^>]+>", "", heading.strip().lower())
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def _anchors(path: Path) -> set[str]:
    seen: dict[str, int] = {}
    anchors = set()
    for line in FENCE.sub("", path.read_text(encoding="utf-8")).splitlines():
        m = re.match(r"#{1,6}\s+(.*?)\s*#*\s*$", line)
        if not m:
            continue
        slug = _slug(m.group(1))
        n = seen.get(slug, 0)
        seen[slug] = n + 1
        anchors.add(slug if n == 0 else f"{slug}-{n}")
    return anchors


def _links(path: Path) -> list[str]:
    text = CODE_SPAN.sub("", FENCE.sub("", path.read_text(encoding="utf-8")))
    return LINK.findall(text)


LINKED_FILES = sorted(DOCS.glob("*.md")) + [ROOT / "README.md"]


@pytest.mark.parametrize("source", LINKED_FILES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_relative_links_point_at_existing_files(source: Path):
    broken = []
    for target in _links(source):
        if re.match(r"[a-z][a-z0-9+.-]*:", target, re.I):
            continue  # http:, https:, mailto: …
        file_part, _, anchor = target.partition("#")
        resolved = (source.parent / file_part).resolve() if file_part else source
        if file_part and ROOT not in resolved.parents and resolved != ROOT:
            continue  # outside this repository (README's ../shared/SPEC.md): not checkable from a checkout
        if not resolved.exists():
            broken.append(f"{target} (no {resolved.relative_to(ROOT) if ROOT in resolved.parents else resolved})")
        elif anchor and resolved.suffix == ".md" and anchor not in _anchors(resolved):
            broken.append(f"{target} (no heading #{anchor} in {resolved.name})")
    assert not broken, f"{source.relative_to(ROOT)} has broken links: {broken}"


def test_the_docs_exist():
    for name in ("operator-guide.md", "consumer-guide.md", "configuration.md", "api.md", "architecture.md"):
        assert (DOCS / name).is_file(), f"docs/{name} is missing"
