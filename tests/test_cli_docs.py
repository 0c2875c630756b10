"""The consumer guide's console samples are real output (#14): the typical session and the
`--wait` run of the Python example are run here against a real daemon, and each command's output
must have the shape the guide shows (ids, numbers and times aside). When this fails, paste the
actual output (printed by the assertion) into docs/consumer-guide.md."""

from __future__ import annotations

import os
import re
import secrets
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.docker

GUIDE = Path(__file__).resolve().parent.parent / "docs" / "consumer-guide.md"
IMAGE = os.environ.get("RUNNERD_TEST_PYTHON_IMAGE", "runnerd-test-python:latest")
SLOW = ("import time\nprint('tick 0', flush=True)\nprint('tick 1', flush=True)\n"
        "open('/data/outputs/partial.txt', 'w').write('so far')\ntime.sleep(60)\n")


def shape(text: str) -> list[str]:
    """A sample as its shape: ids, DIDs, addresses, numbers and times become placeholders, runs of
    blanks one blank, heartbeats (which come only with a slow machine) and usage lines (a job shorter
    than usageInterval may have no reading) dropped."""
    lines = []
    for line in text.splitlines():
        if "(still running)" in line or "(still queued)" in line or line.startswith("usage:") or not line.strip():
            continue
        line = re.sub(r"did:op:(?:[0-9a-f]{64}|[0-9a-f]{4}…[0-9a-f]{4})", "DID", line)
        line = re.sub(r"\b(?:[0-9a-f]{64}|[0-9a-f]{4}…[0-9a-f]{4})\b", "DIDHEX", line)
        line = re.sub(r"\b[0-9a-f]{32}\b", "JOB", line)
        line = re.sub(r"0x[0-9a-fA-F]{40}", "ADDRESS", line)
        line = re.sub(r"\b\d+[smhd] ago\b", "T ago", line)
        line = re.sub(r"\b(?:\d+(?:\.\d+)?s|\d+m\d+s|\d+h\d+m)\b", "D", line)
        line = re.sub(r"\d+(?:\.\d+)?", "N", line)
        lines.append(re.sub(r"\s+", " ", line).strip())
    return lines


def samples(after: str) -> list[tuple[str, str]]:
    """(command, output) of each `$ ` line of the first console block after the text `after`."""
    guide = GUIDE.read_text(encoding="utf-8")
    block = re.search(r"```console\n(.*?)```", guide[guide.index(after):], re.S).group(1)
    found: list[tuple[str, list[str]]] = []
    continued = False
    for line in block.splitlines():
        if line.startswith("$ "):
            found.append((line[2:], []))
        elif continued:
            found[-1] = (found[-1][0] + " " + line.strip(), found[-1][1])
        else:
            found[-1][1].append(line)
        continued = line.endswith("\\")
    return [(command, "\n".join(out)) for command, out in found]


def test_the_typical_session_and_the_wait_sample_are_real_output(make_daemon, tmp_path):
    daemon = make_daemon(environments=[{"id": "ocean-compute", "description": "Free CPU environment", "nCPU": 0.5,
                                        "ramGB": 0.25, "diskGB": 0.05, "maxJobDuration": 3600}])
    env = {**os.environ, "RUNNERD_URL": daemon.url, "RUNNERD_PRIVATE_KEY": "0x" + secrets.token_hex(32)}

    def run(*args: str) -> str:
        proc = subprocess.run([sys.executable, "-m", "runnerd", *args], capture_output=True, text=True, env=env,
                              cwd=tmp_path, stdin=subprocess.DEVNULL, timeout=120)
        return proc.stdout + proc.stderr

    (tmp_path / "data.csv").write_text("a,b\n1,2\n3,4\n")
    did = run("assets", "add", "data.csv", "--allow-raw-algorithm", "--assets", str(daemon.assets),
              "--data-dir", str(daemon.data_dir)).splitlines()[0]
    (tmp_path / "slow.py").write_text(SLOW)
    actual = [("export", ""), ("envs", run("envs"))]
    job = run("submit", "--dataset", did, "--algo-file", "slow.py", "--image", IMAGE).strip()
    actual.append(("submit", ""))
    deadline = time.time() + 120
    while "tick 1" not in run("logs", job) and time.time() < deadline:
        time.sleep(0.3)
    actual += [("status", run("status")), ("logs", run("logs", job)), ("stop", run("stop", job)),
               ("status JOB", run("status", job)), ("get", run("get", job, "--index", "0")),
               ("delete", run("delete", job))]

    guide = GUIDE.read_text(encoding="utf-8")
    algo = re.search(r"`algo\.py`: summarise.*?```python\n(.*?)```", guide, re.S).group(1)
    (tmp_path / "algo.py").write_text(algo)
    wait = run("submit", "--dataset", did, "--algo-file", "algo.py", "--image", IMAGE, "--custom-data",
               '{"delimiter": ","}', "--wait")

    documented = samples("A typical session:")
    report = "\n".join(f"$ {name}\n{out}" for name, out in actual) + "\n$ submit --wait\n" + wait
    assert len(documented) == len(actual), report
    for (command, doc), (_name, out) in zip(documented, actual):
        assert shape(doc) == shape(out), f"`{command}` in the guide differs from real output:\n{report}"
    ((_, doc_wait),) = samples("Run it as raw code")
    assert shape(doc_wait) == shape(wait), f"the --wait sample differs from real output:\n{report}"
