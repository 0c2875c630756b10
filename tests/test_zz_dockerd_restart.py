"""dockerd itself restarted mid-job (issues #4, #10). Disruptive for everything else on the host, so
it runs only where RUNNERD_TEST_DOCKERD_RESTART=1 (CI sets it; this file sorts last in the suite).

By default the system dockerd is stopped with SIGTERM and started again with its own command line.
To aim at another dockerd (a private one on its own socket), set DOCKER_HOST to its socket and
RUNNERD_TEST_DOCKERD_RESTART_CMD to a shell command that restarts it and returns once it answers
(the daemons under test and the `docker` CLI of the helpers both follow DOCKER_HOST)."""

from __future__ import annotations

import os
import subprocess
import time

import httpx
import pytest

from runnerd.engine.steps import LOST_WITH_DOCKER
from tests.helpers import dataset, docker_containers, raw, wait_done

LOST = "the algorithm was interrupted: its container was lost when Docker restarted"

pytestmark = [
    pytest.mark.docker,
    pytest.mark.skipif(os.environ.get("RUNNERD_TEST_DOCKERD_RESTART") != "1",
                       reason="restarts dockerd; set RUNNERD_TEST_DOCKERD_RESTART=1 (CI does)"),
]


def _dockerd_pid() -> int:
    """The system dockerd: the one in this process's network namespace. The Swarm lab's dockerds
    (tests/swarm_lab.py, a session fixture, so still up when this file runs last) live in their own
    namespaces, and `pidof` lists them too, newest first: taking its first pid restarted a lab
    node instead, the job under test simply finished, and CI failed with 70 == 76."""
    ours = os.readlink("/proc/self/ns/net")
    pids = subprocess.run(["pidof", "dockerd"], capture_output=True, text=True, check=True).stdout.split()
    host = [int(p) for p in pids if _net_namespace(int(p)) == ours]
    assert len(host) == 1, f"expected one dockerd in the host's network namespace, found {host} of {pids}"
    return host[0]


def _net_namespace(pid: int) -> str | None:
    try:
        return os.readlink(f"/proc/{pid}/ns/net")
    except OSError:  # it exited meanwhile
        return None


def _restart_dockerd() -> None:
    command = os.environ.get("RUNNERD_TEST_DOCKERD_RESTART_CMD")
    if command:
        subprocess.run(command, shell=True, check=True, timeout=120)
        return
    pid = _dockerd_pid()
    with open(f"/proc/{pid}/cmdline", "rb") as f:
        argv = [a.decode() for a in f.read().split(b"\0") if a]
    os.kill(pid, 15)
    # dockerd stops each running container on its way down (a grace period each, in parallel), so
    # its exit and its start get a deadline each
    deadline = time.time() + 120
    while os.path.exists(f"/proc/{pid}") and time.time() < deadline:
        time.sleep(0.2)
    subprocess.Popen(argv, stdout=open("/tmp/dockerd-restarted.log", "ab"), stderr=subprocess.STDOUT,
                     start_new_session=True)
    deadline = time.time() + 90
    while subprocess.run(["docker", "info"], capture_output=True).returncode != 0:
        if time.time() > deadline:
            raise TimeoutError("dockerd did not come back")
        time.sleep(0.5)


def _live_restore() -> bool:
    out = subprocess.run(["docker", "info", "--format", "{{.LiveRestoreEnabled}}"], capture_output=True, text=True)
    return out.stdout.strip() == "true"


def test_dockerd_restart_mid_job(make_daemon):
    daemon = make_daemon(dockerOutageSeconds=120)
    client = daemon.client()
    code = "import time\nprint('start', flush=True)\ntime.sleep(20)\nopen('/data/outputs/o', 'w').write('o')"
    job_id = client.start(dataset(daemon.assets), raw(code), "ocean-compute")["jobId"]
    wait_done(client, job_id, statuses={40})
    time.sleep(1)
    live_restore = _live_restore()
    _restart_dockerd()
    job = wait_done(client, job_id, timeout=180)
    if live_restore:  # the container survived the restart: the job simply finishes
        assert job["status"] == 70, job
    else:  # Docker stopped the container on its way down: the job is interrupted, not "failed"
        assert job["status"] == 76, job
        assert LOST_WITH_DOCKER in job["error"], job  # (runnerd stayed up: it saw Docker go)
    deadline = time.time() + 30
    while httpx.get(f"{daemon.url}/health").status_code != 200 and time.time() < deadline:
        time.sleep(0.5)
    assert httpx.get(f"{daemon.url}/health").status_code == 200
    assert daemon.proc.poll() is None
    # what could not be removed while Docker was away is removed once it is back
    while docker_containers(f"runnerd.job={job_id}") and time.time() < deadline:
        time.sleep(0.5)
    assert docker_containers(f"runnerd.job={job_id}") == []


def test_dockerd_restart_with_jobs_running_and_queued(make_daemon):
    """Measured on the code before #10: all three ended at 76 within a second, each with
    `internal error: Error while fetching server API version`. Now the queued job waits in the
    queue and completes; a running algorithm whose container dockerd stopped on its way down ends
    at 76 with a plain reason (it cannot be run twice silently); with live-restore it finishes."""
    daemon = make_daemon(dockerOutageSeconds=180, environments=[
        {"id": "two", "nCPU": 1, "ramGB": 0.5, "diskGB": 0.1, "maxJobs": 2, "maxJobDuration": 300}])
    client = daemon.client()
    did = dataset(daemon.assets)
    code = "import time\nprint('start', flush=True)\ntime.sleep(25)\nopen('/data/outputs/o', 'w').write('o')"
    running = [client.start(did, raw(code), "two")["jobId"] for _ in range(2)]
    for job_id in running:
        wait_done(client, job_id, statuses={40})
    queued = client.start(did, raw("print('queued')"), "two")["jobId"]
    assert client.job(queued)["status"] == 1
    time.sleep(1)
    live_restore = _live_restore()
    _restart_dockerd()
    for job_id in running:
        job = wait_done(client, job_id, timeout=240)
        if live_restore:
            assert job["status"] == 70, job
        else:
            assert job["status"] == 76 and job["error"] == LOST, job
    job = wait_done(client, queued, timeout=240)
    assert job["status"] == 70, (job, daemon.log()[-3000:])
    assert "internal error" not in daemon.log()
    assert daemon.proc.poll() is None
    deadline = time.time() + 60
    while any(docker_containers(f"runnerd.job={j}") for j in running + [queued]) and time.time() < deadline:
        time.sleep(0.5)
    assert all(docker_containers(f"runnerd.job={j}") == [] for j in running + [queued])
