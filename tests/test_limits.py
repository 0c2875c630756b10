"""Environments that hold (issue #7): RAM, pids, run time, disk and log limits, against real Docker.

One daemon with a deliberately tight environment runs several misbehaving algorithms at once;
each must end in its own status with a useful error and terminationDetails, nothing left behind.
"""

from __future__ import annotations

import os

import httpx
import pytest

from tests.helpers import Daemon, base_config, dataset, raw, result_of, wait_done

pytestmark = pytest.mark.docker

TIGHT = {"id": "tight", "nCPU": 0.5, "ramGB": 0.125, "diskGB": 0.05, "maxJobs": 6, "maxJobDuration": 4,
         "pidsLimit": 64, "maxLogMB": 0.5}


@pytest.fixture(scope="module")
def daemon(tmp_path_factory):
    d = Daemon(tmp_path_factory.mktemp("limits"), base_config(environments=[TIGHT])).start()
    yield d
    d.stop()
    assert d.leftover_containers() == []


def _run(daemon: Daemon, code: str, timeout: float = 120):
    client = daemon.client()
    did = dataset(daemon.assets)
    job = client.start(did, raw(code), "tight")
    return client, job["jobId"]


def test_misbehaving_algorithms_each_end_in_their_own_status(daemon):
    """Submitted together: memory hog, fork bomb, busy loop, disk filler, log flood, good citizen."""
    cases = {
        "oom": "print('allocating', flush=True)\nx = bytearray(512 * 1024 * 1024)\nx[::4096] = b'x' * len(x[::4096])",
        "forkbomb": FORK_BOMB,
        "timeout": "print('spinning', flush=True)\nwhile True:\n    pass",
        "disk": DISK_FILLER,
        # 8 MiB: 16 times the cap, written well within the 4 s maxJobDuration at 0.5 CPU
        "flood": ("import sys\nline = b'y' * 1023 + b'\\n'\n"
                  "for _ in range(8 * 1024):\n    sys.stdout.buffer.write(line)"),
        "good": "print('fine')\nopen('/data/outputs/ok.txt', 'w').write('ok')",
    }
    started = {name: _run(daemon, code) for name, code in cases.items()}
    # The daemon stays responsive while they misbehave.
    assert httpx.get(f"{daemon.url}/health", timeout=5).status_code == 200
    done = {name: (client, wait_done(client, job_id, timeout=180)) for name, (client, job_id) in started.items()}

    client, job = done["oom"]
    assert job["status"] == 73, job
    assert job["terminationDetails"]["oomKilled"] is True
    assert "ramGB" in job["error"]
    assert "allocating" in result_of(client, job, "algorithmLog").decode()

    client, job = done["forkbomb"]
    assert job["status"] == 70, job
    report = result_of(client, job, "output", "forks.txt").decode().split()
    forked, limit_hit = int(report[0]), report[1]
    assert limit_hit == "limited" and forked < TIGHT["pidsLimit"]

    client, job = done["timeout"]
    assert job["status"] == 72 and job["stopreq"] == 2, job
    assert job["terminationDetails"]["reason"] == "timeout"
    assert "maxJobDuration" in job["error"]
    assert "spinning" in result_of(client, job, "algorithmLog").decode()

    client, job = done["disk"]
    assert job["status"] == 74, job
    assert "diskGB" in job["error"]
    assert "No space left" in result_of(client, job, "algorithmLog").decode()

    client, job = done["flood"]
    assert job["status"] == 70, job
    log = result_of(client, job, "algorithmLog")
    limit = int(TIGHT["maxLogMB"] * 1024 * 1024)
    assert limit <= len(log) <= limit + 200 and b"log cut at" in log

    client, job = done["good"]
    assert job["status"] == 70 and result_of(client, job, "output", "ok.txt") == b"ok"

    # The disk filler wrote ~50 MiB into its own quota filesystem, which is gone now: what the job
    # still holds on the host is only its logs. (Measured on the job's folder, not the host's free
    # space, which other processes on this machine move.)
    client, job = done["disk"]
    folder = daemon.data_dir / "jobs" / job["jobId"]
    assert not (folder / "disk.img").exists() and not (folder / "fs").exists()
    assert _bytes_used(folder) < 1024 * 1024


def _bytes_used(folder) -> int:
    """Disk blocks actually allocated under a folder (sparse files count as what they use)."""
    total = 0
    for root, _dirs, files in os.walk(folder):
        for name in files:
            total += os.lstat(os.path.join(root, name)).st_blocks * 512
    return total


FORK_BOMB = """
import os, time
children = []
limited = "unlimited"
for _ in range(500):
    try:
        pid = os.fork()
    except OSError:
        limited = "limited"
        break
    if pid == 0:
        time.sleep(30)
        os._exit(0)
    children.append(pid)
for pid in children:
    os.kill(pid, 9)
    os.waitpid(pid, 0)
open("/data/outputs/forks.txt", "w").write(f"{len(children)} {limited}")
print("forked", len(children), limited)
"""

DISK_FILLER = """
import sys
block = b"z" * (1024 * 1024)
with open("/data/outputs/big.bin", "wb") as f:
    for i in range(1024):
        try:
            f.write(block)
            f.flush()
        except OSError as exc:
            print("stopped after", i, "MiB:", exc, flush=True)
            sys.exit(1)
"""
