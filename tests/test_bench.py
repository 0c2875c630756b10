"""Each benchmark runs from a fresh install on a tiny size and prints its table (issue #6).
No figure is asserted here: performance is measured by the scripts, not by the test suite."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.docker, pytest.mark.slow]
BENCH = Path(__file__).resolve().parent.parent / "bench"

CASES = {
    "job_overhead.py": ["-n", "1"],
    "throughput.py": ["-n", "4", "--slots", "2"],
    "api_load.py": ["--clients", "3", "--seconds", "1", "--per-client", "20", "--jobs", "1"],
    "data_path.py": ["--mib", "4"],
    "big_bodies.py": ["--senders", "1", "--seconds", "1"],
    "store_scale.py": ["--jobs", "300", "--lookups", "5"],
    "start_rate.py": ["--clients", "2", "--per-client", "3"],
    "report.py": ["--tiny", "--runs", "1", "--only", "job_overhead,job_overhead_url,throughput"],
    "provenance.py": ["-n", "1", "--mb", "4", "--containers", "1"],
}


@pytest.mark.parametrize("script", sorted(CASES))
def test_benchmark_runs_on_a_tiny_size(script, tmp_path):
    out = tmp_path / "figures.json"
    proc = subprocess.run([sys.executable, str(BENCH / script), *CASES[script], "--json", str(out)],
                          capture_output=True, text=True, timeout=300, cwd=BENCH)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "ratio" in proc.stdout  # the table puts runnerd and its baseline side by side
    figures = json.loads(out.read_text())
    assert figures["machine"]["cpus"] >= 1 and figures["bench"] == script.removesuffix(".py")
