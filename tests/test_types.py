"""mypy over runnerd (#12): every module checked, the core strict. The files and flags are in
pyproject.toml ([tool.mypy]); a `# type: ignore` that hides nothing is itself an error, so each one
left in the code is true. Run by hand: `.venv/bin/mypy` from the checkout."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# What must stay strict (each flag of `mypy --strict`): the layers everything else builds on.
STRICT = {"runnerd.domain", "runnerd.store.*", "runnerd.containers.*", "runnerd.engine.*"}
STRICT_FLAGS = {"disallow_any_generics", "disallow_subclassing_any", "disallow_untyped_calls", "disallow_untyped_defs",
                "disallow_incomplete_defs", "check_untyped_defs", "disallow_untyped_decorators", "warn_return_any",
                "strict_equality", "extra_checks"}


def test_mypy_finds_nothing(tmp_path):
    assert importlib.util.find_spec("mypy"), "mypy is missing: `bash scripts/install.sh --dev` installs the test extras"
    proc = subprocess.run([sys.executable, "-m", "mypy", "--cache-dir", str(tmp_path / "cache")], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_the_core_is_checked_strictly():
    overrides = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["mypy"]["overrides"]
    strict = [o for o in overrides if STRICT_FLAGS <= {k for k, v in o.items() if v is True}
              and o.get("implicit_reexport") is False]
    assert STRICT <= {m for o in strict for m in o["module"]}
    assert not any(o.get("ignore_errors") and set(o["module"]) & STRICT for o in overrides)
