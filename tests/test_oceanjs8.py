"""The real ocean.js 8.x (`@oceanprotocol/lib`, the latest, pinned in tests/oceanjs8/package-lock.json),
unpatched, runs its own compute calls against runnerd's ocean-node dialect (/c2d/v2) on a real daemon
(#11 §2): discovery, the catalog's DDO, environments, a free start with resources, metadata and an
additional viewer, unsigned status polling, the outputs.tar download and a resumed (Range) one, the
algorithm log, an auth token (status and a start with it), the live log of a second job, its stop,
the token's invalidation, the viewer's read (and refused stop), the paid start's refusal.
tests/oceanjs8/flow.js drives the library and prints a JSON summary.

Needs `node` and `npm ci --prefix tests/oceanjs8` (.ci/run does both); skipped without them unless
RUNNERD_REQUIRE_OCEANJS=1 (CI), which turns that into a failure.
"""

from __future__ import annotations

import base64
import io
import json
import os
import re
import secrets
import shutil
import subprocess
import tarfile
import textwrap
from pathlib import Path

import pytest
from eth_account import Account

from tests.helpers import PY_IMAGE, TEST_RAW_IMAGES, algorithm_asset, dataset

HERE = Path(__file__).parent / "oceanjs8"
LOCK = HERE / "package-lock.json"
LOOP = "import time\nprint('looping', flush=True)\nwhile True:\n    time.sleep(0.1)\n"
PUBLISHER = "0x" + "3" * 40
NPM_CI = "npm ci --prefix tests/oceanjs8 --omit=peer --ignore-scripts"


def _pinned() -> str:
    return json.loads(LOCK.read_text())["packages"]["node_modules/@oceanprotocol/lib"]["version"]


def _missing() -> str | None:
    if shutil.which("node") is None:
        return "no `node` on PATH (apt-get install nodejs npm)"
    installed = HERE / "node_modules" / "@oceanprotocol" / "lib" / "package.json"
    if not installed.exists():
        return f"ocean.js 8 is not installed ({NPM_CI})"
    if json.loads(installed.read_text())["version"] != _pinned():
        return f"tests/oceanjs8/node_modules is not the locked version ({NPM_CI})"
    return None


@pytest.fixture
def oceanjs8():
    problem = _missing()
    if problem:
        if os.environ.get("RUNNERD_REQUIRE_OCEANJS") == "1":
            pytest.fail(f"RUNNERD_REQUIRE_OCEANJS=1 but {problem}", pytrace=False)
        pytest.skip(problem)
    return HERE / "flow.js"


def test_the_pinned_client_is_oceanjs_8():
    """The lock pins one exact 8.x; package.json asks for exactly that one."""
    declared = json.loads((HERE / "package.json").read_text())["dependencies"]["@oceanprotocol/lib"]
    assert re.fullmatch(r"8\.\d+\.\d+", declared) and _pinned() == declared == "8.6.2"


UNASKED_CHAIN = {"chainId": 8996, "rpcUrl": "http://127.0.0.1:9", "feeToken": "0x" + "1" * 40}


@pytest.mark.docker
def test_oceanjs_8_runs_a_whole_compute_flow_unpatched_against_the_node_dialect(make_daemon, oceanjs8):
    # a priced environment needs chain mode (#16); its node is never asked: no asset here has a datatoken
    d = make_daemon(stopWaitSeconds=60, chains=[UNASKED_CHAIN], environments=[
        {"id": "ocean-compute", "nCPU": 1, "ramGB": 0.5, "diskGB": 0.1, "maxJobs": 2, "maxJobDuration": 120,
         "rawAlgorithmImages": TEST_RAW_IMAGES},
        {"id": "paid", "nCPU": 1, "ramGB": 0.5, "diskGB": 0.1, "maxJobs": 1, "priceMin": 1,
         "rawAlgorithmImages": TEST_RAW_IMAGES},
    ])
    did = dataset(d.assets, publishers=[PUBLISHER])  # raw algorithms and PUBLISHER's published ones
    algo = algorithm_asset(d.assets, LOOP, owner=PUBLISHER)
    key, viewer_key = "0x" + secrets.token_hex(32), "0x" + secrets.token_hex(32)
    repo, _, tag = PY_IMAGE.rpartition(":")
    env = {"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/tmp"), "NODE_URL": d.url + "/c2d/v2",
           "CONSUMER_KEY": key, "VIEWER_KEY": viewer_key, "DATASET_DID": did, "ALGO_DID": algo,
           "RAW_IMAGE": repo, "RAW_TAG": tag, "PAID_ENV": "paid"}
    run = subprocess.run(["node", str(oceanjs8)], env=env, capture_output=True, text=True, timeout=240)
    lines = run.stdout.strip().splitlines()
    assert lines, f"no summary (exit {run.returncode}):\n{run.stderr[-4000:]}"
    summary = json.loads(lines[-1])
    s = summary.get("steps", {})
    context = (f"\n{json.dumps(summary, indent=1)[:8000]}\nocean.js said:\n{run.stderr[-4000:]}\n"
               f"daemon:\n{d.log()[-3000:]}")
    assert summary.get("lib") == _pinned() and summary["ok"] and run.returncode == 0, context

    address = Account.from_key(key).address
    assert s["discovery"]["valid"] is True
    assert s["ddo"]["id"] == did and s["ddo"]["endpoint"] == d.url + "/c2d/v2" and s["ddo"].get("files") is None
    assert s["environments"]["chosen"] == "ocean-compute" and "paid" in s["environments"]["ids"]
    assert s["environments"]["resources"] == ["cpu", "ram", "disk"]
    job_id = s["start"]["jobId"]
    assert re.fullmatch(r"[0-9a-f]{32}", job_id) and s["start"]["status"] < 70
    assert s["status"]["status"] == 70 and s["status"]["statusText"] == "Job finished", context
    assert s["status"]["seen"][-1] == 70 and 71 not in s["status"]["seen"]
    assert s["status"]["terminationDetails"]["exitCode"] == 0
    assert s["status"]["metadata"] == {"name": "ocean.js 8 check"}
    results = s["status"]["results"]
    # ocean-node's order: the logs, then the outputs as one tar; then runnerd's filtering log
    assert [(r["index"], r["type"], r["filename"]) for r in results] == [
        (0, "configurationLog", "configuration.log"), (1, "algorithmLog", "algorithm.log"),
        (2, "output", "outputs.tar"), (3, "filteringLog", "filtering.log"),
        (4, "attestation", "attestation.json")]  # runnerd's signed provenance (#15), last
    tar = base64.b64decode(s["result"]["tar"])
    assert s["result"]["filename"] == "outputs.tar" and len(tar) == s["result"]["size"] == results[2]["filesize"]
    with tarfile.open(fileobj=io.BytesIO(tar)) as archive:
        assert archive.getnames() == ["outputs", "outputs/out.txt"]
        assert archive.extractfile("outputs/out.txt").read() == b"hello ocean.js 8"
    assert s["range"]["size"] == len(tar) - 512 and base64.b64decode(s["range"]["head"]) == tar[512:544]
    assert "hello from ocean.js 8" in s["algorithmLog"]["text"]
    assert s["token"]["listed"] == [job_id]
    long_id = s["startLong"]["jobId"]
    assert s["startLong"]["status"] == 40 and long_id != job_id
    assert "looping" in s["liveLog"]["text"]
    assert s["stop"]["answer"] == [[long_id, 70, True]] and s["stop"]["after"] == 7
    assert s["invalidate"]["answer"] == {"success": True}
    assert s["invalidate"]["after"]["code"] == "invalid_token"
    assert s["viewer"]["status"] == 70 and s["viewer"]["size"] == len(tar)
    assert s["viewer"]["stop"]["code"] == "not_found"
    assert s["paid"]["refused"] and s["paid"]["answer"]["code"] == "paid_compute_unsupported"
    assert "freeCompute" in s["paid"]["answer"]["error"]
    assert address and sorted(d.job_ids()) == sorted([job_id, long_id])


def test_the_consumer_guide_shows_the_tested_example():
    """docs/consumer-guide.md carries flow.js's example part verbatim, so the documented code is
    the code CI runs."""
    source = (HERE / "flow.js").read_text()
    example = source.split("// -- example: ocean.js 8.x against runnerd", 1)[1].split("// -- end of example", 1)[0]
    body = textwrap.dedent("\n".join(example.splitlines()[1:]))
    guide = (Path(__file__).parents[1] / "docs" / "consumer-guide.md").read_text()
    assert body.strip() in guide, "docs/consumer-guide.md's ocean.js 8.x example is not flow.js's (copy it over)"
    assert f"@oceanprotocol/lib@{_pinned()}" in guide
