"""ruff over the product, the tests, the benchmarks and the scripts (#12): the `# noqa` markers in
the code are for a tool that runs. The rules are in pyproject.toml ([tool.ruff])."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_ruff_finds_nothing():
    ruff = shutil.which("ruff", path=str(Path(sys.executable).parent)) or shutil.which("ruff")
    assert ruff, "ruff is missing: `bash scripts/install.sh --dev` installs the test extras"
    proc = subprocess.run([ruff, "check", "--no-cache", "runnerd", "tests", "bench", "scripts"], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
