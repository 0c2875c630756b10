"""Ordinary mistakes get one line that says how to fix them and a distinct exit status, never a
traceback (#14). None of these needs a daemon: nothing is sent before the input is checked."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.helpers import free_port

DID = "did:op:" + "a" * 64
KEY = "0x" + "11" * 32


def cli(tmp_path, *args, env=None):
    full = {k: v for k, v in os.environ.items() if not k.startswith("RUNNERD_")}
    full.update({"RUNNERD_URL": f"http://127.0.0.1:{free_port()}", "XDG_CONFIG_HOME": str(tmp_path / "cfg"),
                 **(env or {})})
    return subprocess.run([sys.executable, "-m", "runnerd", *args], capture_output=True, text=True, env=full,
                          cwd=tmp_path, timeout=60)


def one_line_error(proc, code: int, *words: str) -> str:
    assert proc.returncode == code, (proc.returncode, proc.stderr)
    assert "Traceback" not in proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("runnerd: "), proc.stderr
    for word in words:
        assert word in lines[0], (word, lines[0])
    return lines[0]


@pytest.mark.parametrize("custom,words", [
    ("{delimiter: ;}", ["not JSON", "quote keys"]),
    ("hello", ["not JSON"]),
    ("@nope.json", ["nope.json", "no such file"]),
])
def test_bad_custom_data(tmp_path, custom, words):
    (tmp_path / "a.py").write_text("print(1)")
    proc = cli(tmp_path, "submit", "--dataset", DID, "--algo-file", "a.py", "--custom-data", custom,
               env={"RUNNERD_PRIVATE_KEY": KEY})
    one_line_error(proc, 2, *words)


def test_missing_algorithm_file(tmp_path):
    proc = cli(tmp_path, "submit", "--dataset", DID, "--algo-file", "missing.py", env={"RUNNERD_PRIVATE_KEY": KEY})
    one_line_error(proc, 2, "--algo-file missing.py", "no such file")


@pytest.mark.parametrize("key", ["0x1234", "not a key", "0x" + "00" * 32])
def test_a_key_that_is_not_a_key(tmp_path, key):
    one_line_error(cli(tmp_path, "status", env={"RUNNERD_PRIVATE_KEY": key}), 2, "RUNNERD_PRIVATE_KEY", "64 hex")
    (tmp_path / "k").write_text(key + "\n")
    one_line_error(cli(tmp_path, "status", "--key-file", "k"), 2, "key file k", "64 hex")


def test_a_missing_key_file(tmp_path):
    one_line_error(cli(tmp_path, "status", "--key-file", "missing"), 2, "missing", "does not exist")


def test_negative_index_is_refused_before_anything_is_asked(tmp_path):
    proc = cli(tmp_path, "get", "f" * 32, "--index", "-1", env={"RUNNERD_PRIVATE_KEY": KEY})
    one_line_error(proc, 2, "--index -1", "start at 0")


def test_an_unreachable_daemon_has_its_own_exit_status(tmp_path):
    one_line_error(cli(tmp_path, "status", env={"RUNNERD_PRIVATE_KEY": KEY}), 3, "cannot reach", "runnerd serve")


def test_the_key_created_on_first_use_is_announced_once(tmp_path):
    first = cli(tmp_path, "status")
    key_file = tmp_path / "cfg" / "runnerd" / "client.key"
    assert key_file.exists() and oct(key_file.stat().st_mode & 0o777) == "0o600"
    assert f"created a signing key for you in {key_file}" in first.stderr and "back it up" in first.stderr
    second = cli(tmp_path, "status")
    assert "created a signing key" not in second.stderr


def test_the_cli_takes_its_statuses_from_domain():
    """The CLI's status numbers are domain.py's (#12): no cli module spells one (as a dict key, in a
    comparison with a status, or as a constant named like one), and each failure has its hint."""
    import ast
    from pathlib import Path

    from runnerd import domain
    from runnerd.cli import common, follow

    statuses = {int(s) for s in domain.JobStatus}
    names = {s.name for s in domain.JobStatus}
    spelled = []
    for path in sorted((Path(common.__file__).parent).glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            found: list[ast.expr] = []
            if isinstance(node, ast.Dict):
                found = [k for k in node.keys if k is not None]
            elif isinstance(node, ast.Compare) and "status" in ast.unparse(node):
                found = [node.left, *node.comparators]
            elif isinstance(node, ast.Assign) and any(isinstance(t, (ast.Name, ast.Tuple)) and {
                    n.id for n in ast.walk(t) if isinstance(n, ast.Name)} & names for t in node.targets):
                found = [node.value, *getattr(node.value, "elts", [])]
            spelled += [f"{path.name}:{n.lineno}" for n in found
                        if isinstance(n, ast.Constant) and type(n.value) is int and n.value in statuses]
    assert spelled == []
    assert common.TERMINAL == {int(s) for s in domain.TERMINAL}
    assert set(follow._NEXT) == common.TERMINAL - {common.COMPLETED}
