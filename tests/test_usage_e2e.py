"""Live usage through the daemon (#15 item 2), on real Docker: `usage` moves in the status while a
CPU-bound job runs, its peak memory is within 10 % of what the algorithm allocated, the final
figures stay with the finished job (and in its attestation), /metrics has them per environment
and never per owner, and `runnerd status JOB` shows them."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time

import httpx
import pytest

from tests.helpers import PY_IMAGE, dataset, raw, result_of, wait_done

pytestmark = pytest.mark.docker

MIB = 1024 * 1024
ALLOCATE = 300
HOG = f"""
import time
block = bytearray({ALLOCATE} * 1024 * 1024)
for i in range(0, len(block), 4096):
    block[i] = 1
print("allocated", flush=True)
t = time.time()
while time.time() - t < 6:
    pass
"""


def test_usage_moves_while_it_runs_and_its_final_figures_stay(make_daemon):
    daemon = make_daemon(usageInterval=0.5, environments=[
        {"id": "metered", "nCPU": 1, "ramGB": 0.75, "diskGB": 0.1, "maxJobs": 1, "maxJobDuration": 120}])
    did = dataset(daemon.assets)
    key = "0x" + "5a" * 32
    client = daemon.client(key)
    job_id = client.start(did, raw(HOG), "metered")["jobId"]
    readings = []
    deadline = time.time() + 90
    while time.time() < deadline:
        job = client.job(job_id, signed=False)
        if job["status"] == 40 and job.get("usage"):
            readings.append(job["usage"])
        if job["status"] > 40:
            break
        time.sleep(0.4)
    cpu = [r["cpuSeconds"] for r in readings]
    assert len(readings) >= 2 and cpu[-1] > cpu[0] + 0.5, readings  # it moved while it ran
    assert readings[-1]["diskQuotaBytes"] and readings[-1]["networkRxBytes"] is None
    done = wait_done(client, job_id)
    assert done["status"] == 70, done
    final = done["usage"]
    assert final["cpuSeconds"] >= cpu[-1] and final["samples"] >= readings[-1]["samples"]
    assert abs(final["memoryPeakBytes"] - ALLOCATE * MIB) <= 0.10 * ALLOCATE * MIB, final
    assert client.job(job_id, signed=False)["usage"] == final  # kept, unchanged
    attested = json.loads(result_of(client, done, "attestation"))["statement"]["predicate"]["job"]["usage"]
    assert attested["memoryPeakBytes"] == final["memoryPeakBytes"]
    assert attested["cpuMillis"] == round(final["cpuSeconds"] * 1000)

    metrics = httpx.get(daemon.url + "/metrics").text
    cpu_line = next(line for line in metrics.splitlines() if line.startswith("runnerd_job_cpu_seconds_total{"))
    assert cpu_line.startswith('runnerd_job_cpu_seconds_total{environment="metered"}') and \
        float(cpu_line.split()[-1]) > 0.5
    assert 'runnerd_job_memory_bytes{environment="metered"} 0.0' in metrics  # nothing runs any more
    owner = client.address.lower()
    assert owner not in metrics.lower() and owner[2:] not in metrics.lower()

    env = {**os.environ, "RUNNERD_PRIVATE_KEY": key}
    shown = subprocess.run([sys.executable, "-m", "runnerd", "status", job_id, "--url", daemon.url],
                           capture_output=True, text=True, env=env, timeout=60)
    assert shown.returncode == 0, shown.stderr
    assert "usage:" in shown.stdout and "cpu " in shown.stdout and "(peak " in shown.stdout

    algo = daemon.root / "busy.py"
    algo.write_text("import time\nt = time.time()\nwhile time.time() - t < 2:\n    pass\n")
    waited = subprocess.run([sys.executable, "-m", "runnerd", "submit", "--dataset", did, "--algo-file", str(algo),
                             "--image", PY_IMAGE, "--env", "metered", "--wait", "--quiet", "--output",
                             str(daemon.root / "w"), "--url", daemon.url], capture_output=True, text=True, env=env,
                            timeout=120)
    assert waited.returncode == 0, waited.stderr
    assert re.search(r"^usage: cpu [\d.]+s · memory ", waited.stderr, re.M), waited.stderr


def test_usage_off_leaves_it_null(make_daemon):
    daemon = make_daemon(usageInterval=0)
    did = dataset(daemon.assets)
    client = daemon.client()
    done = wait_done(client, client.start(did, raw("import time; time.sleep(1)"), "ocean-compute")["jobId"])
    assert done["status"] == 70 and done["usage"] is None
