"""The real ocean.js 3.x (`@oceanprotocol/lib`, the last 3.x, pinned in tests/oceanjs/package-lock.json),
unpatched, runs its own compute calls against a real daemon with runnerd's defaults (#11): environments,
start, unsigned status polling, result download and a Range request, the live log, stop of a second
(published) job, delete. tests/oceanjs/flow.js drives the library and prints a JSON summary.

Needs `node` and `npm ci --prefix tests/oceanjs` (.ci/run does both); skipped without them unless
RUNNERD_REQUIRE_OCEANJS=1 (CI), which turns that into a failure.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import subprocess
from pathlib import Path

import pytest
from eth_account import Account

from tests.helpers import PY_IMAGE, algorithm_asset, dataset

HERE = Path(__file__).parent / "oceanjs"
LOCK = HERE / "package-lock.json"
LOOP = "import time\nprint('looping', flush=True)\nwhile True:\n    time.sleep(0.1)\n"
PUBLISHER = "0x" + "3" * 40


def _pinned() -> str:
    return json.loads(LOCK.read_text())["packages"]["node_modules/@oceanprotocol/lib"]["version"]


def _missing() -> str | None:
    if shutil.which("node") is None:
        return "no `node` on PATH (apt-get install nodejs npm)"
    installed = HERE / "node_modules" / "@oceanprotocol" / "lib" / "package.json"
    if not installed.exists():
        return "ocean.js is not installed (npm ci --prefix tests/oceanjs --omit=peer --ignore-scripts)"
    if json.loads(installed.read_text())["version"] != _pinned():
        return ("tests/oceanjs/node_modules is not the locked version "
                "(npm ci --prefix tests/oceanjs --omit=peer --ignore-scripts)")
    return None


@pytest.fixture
def oceanjs():
    problem = _missing()
    if problem:
        if os.environ.get("RUNNERD_REQUIRE_OCEANJS") == "1":
            pytest.fail(f"RUNNERD_REQUIRE_OCEANJS=1 but {problem}", pytrace=False)
        pytest.skip(problem)
    return HERE / "flow.js"


def test_the_pinned_client_is_the_last_oceanjs_3():
    """The lock pins one exact 3.x; package.json asks for exactly that one."""
    declared = json.loads((HERE / "package.json").read_text())["dependencies"]["@oceanprotocol/lib"]
    assert re.fullmatch(r"3\.\d+\.\d+", declared) and _pinned() == declared == "3.4.6"


@pytest.mark.docker
def test_oceanjs_3_runs_a_whole_compute_flow_unpatched_against_the_defaults(make_daemon, oceanjs):
    d = make_daemon(stopWaitSeconds=60)  # runnerd's defaults otherwise: signed status lists, no unsignedStatus
    did = dataset(d.assets, publishers=[PUBLISHER])  # raw algorithms and PUBLISHER's published ones
    algo = algorithm_asset(d.assets, LOOP, owner=PUBLISHER)
    key = "0x" + secrets.token_hex(32)
    repo, _, tag = PY_IMAGE.rpartition(":")
    env = {"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/tmp"), "RUNNERD_URL": d.url,
           "CONSUMER_KEY": key, "DATASET_DID": did, "ALGO_DID": algo, "RAW_IMAGE": repo, "RAW_TAG": tag,
           "ENVIRONMENT": "ocean-compute"}
    run = subprocess.run(["node", str(oceanjs)], env=env, capture_output=True, text=True, timeout=240)
    lines = run.stdout.strip().splitlines()
    assert lines, f"no summary (exit {run.returncode}):\n{run.stderr[-4000:]}"
    summary = json.loads(lines[-1])
    s = summary.get("steps", {})
    context = f"\n{json.dumps(summary, indent=1)}\nocean.js said:\n{run.stderr[-4000:]}\ndaemon:\n{d.log()[-3000:]}"
    assert summary.get("lib") == _pinned() and summary["ok"] and run.returncode == 0, context

    address = Account.from_key(key).address
    assert s["discovery"]["valid"] is True
    assert s["environments"]["found"] and "ocean-compute" in s["environments"]["ids"]
    job_id = s["start"]["jobId"]
    assert re.fullmatch(r"[0-9a-f]{32}", job_id) and s["start"]["status"] < 70
    assert s["status"]["status"] == 70 and s["status"]["statusText"] == "Job completed", context
    assert s["status"]["seen"][-1] == 70  # the polls it saw, the last one done
    assert s["result"] == {"ok": True, "filename": "out.txt", "text": "hello ocean.js 3"}
    assert s["range"]["http"] == 206 and s["range"]["text"] == "ocean"
    assert s["range"]["contentRange"] == "bytes 6-10/16"
    assert "hello from ocean.js" in s["algorithmLog"]["text"]
    long_id = s["startLong"]["jobId"]
    assert s["startLong"]["status"] == 40 and long_id != job_id
    assert "looping" in s["liveLog"]["text"]
    assert s["stop"]["answer"] == [[long_id, 7, "Job stopped"]] and s["stop"]["after"] == 7
    assert s["delete"]["answer"] == [[job_id, 8]] and s["delete"]["second"] == [[long_id, 8]]
    assert s["delete"]["after"]["code"] == "not_found"
    # what the client's signer asked its chain: the chain id, nothing else (no chain is needed)
    assert summary["rpcMethods"] and set(summary["rpcMethods"]) == {"eth_chainId"}
    assert d.job_ids() == [] and address  # both jobs are gone from the store


def test_the_consumer_guide_shows_the_tested_example():
    """docs/consumer-guide.md carries flow.js's example part verbatim, so the documented code is
    the code CI runs."""
    source = (HERE / "flow.js").read_text()
    example = source.split("// -- example: ocean.js 3.x against runnerd", 1)[1].split("// -- end of example", 1)[0]
    body = "\n".join(line[4:] if line.startswith("    ") else line for line in example.splitlines()[1:])
    guide = (Path(__file__).parents[1] / "docs" / "consumer-guide.md").read_text()
    assert body.strip() in guide, "docs/consumer-guide.md's ocean.js 3.x example is not flow.js's (copy it over)"
    assert f"@oceanprotocol/lib@{_pinned()}" in guide
