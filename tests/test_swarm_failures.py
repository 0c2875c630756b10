"""What goes wrong on a cluster, on the three-node Swarm lab through runnerd's real API (#17):
runnerd killed with -9 mid-step, a worker's dockerd killed mid-job, the manager restarting."""

from __future__ import annotations

import os
import signal
import sqlite3
import time

import pytest

from runnerd.domain import Slot
from tests.helpers import dataset, raw, result_of, wait_done
from tests.swarm_lab import LAB_DIR, skip_reason
from tests.test_swarm_e2e import swarm_daemon

pytestmark = [pytest.mark.docker, pytest.mark.skipif(skip_reason() is not None, reason=skip_reason() or "")]

SLEEPER = """
import sys, time
print('start', flush=True)
time.sleep(float(sys.argv[1]) if len(sys.argv) > 1 else {seconds})
open('/data/outputs/o', 'w').write('survived')
"""


def node_of(daemon, job_id: str) -> str:
    with sqlite3.connect(daemon.data_dir / "runnerd.db") as db:
        (slot,) = db.execute("SELECT slot FROM jobs WHERE job_id = ?", (job_id,)).fetchone()
    node = Slot.from_json(slot).node
    assert node, slot
    return node


def test_runnerd_killed_mid_algorithm_reattaches_and_the_job_completes(swarm_lab, tmp_path):
    daemon = swarm_daemon(swarm_lab, tmp_path / "d")
    try:
        client = daemon.client()
        job_id = client.start(dataset(daemon.assets), raw(SLEEPER.format(seconds=8)), "ocean-compute")["jobId"]
        wait_done(client, job_id, statuses={40}, timeout=120)
        daemon.stop(signal.SIGKILL)
        daemon.start()  # the same data dir: recovery finds the job at 40 and its service on the node
        job = wait_done(client, job_id, timeout=180)
        assert job["status"] == 70, (job, daemon.log()[-4000:])
        assert result_of(client, job, "output", "o") == b"survived"
        assert "start" in result_of(client, job, "algorithmLog").decode()
    finally:
        daemon.stop()


def test_a_worker_lost_mid_job_ends_that_job_at_76_and_the_others_complete(swarm_lab, tmp_path):
    """Three jobs spread over the three nodes; node 3's dockerd is killed with -9 mid-job. The job
    on it ends at 76 (naming the node, once the manager marked it down); the jobs on nodes 1 and 2
    complete. Node 3 is restarted afterwards and rejoins."""
    lab = swarm_lab
    daemon = swarm_daemon(lab, tmp_path / "d")
    try:
        client = daemon.client()
        did = dataset(daemon.assets)
        jobs = [client.start(did, raw(SLEEPER.format(seconds=25)), "ocean-compute")["jobId"] for _ in range(3)]
        for job_id in jobs:
            wait_done(client, job_id, statuses={40}, timeout=180)
        placed = {node_of(daemon, job_id): job_id for job_id in jobs}
        assert len(placed) == 3, placed  # one per node
        doomed = placed[lab.node_id(3)]
        os.kill(int((LAB_DIR / "n3" / "docker.pid").read_text()), signal.SIGKILL)
        killed = time.monotonic()
        lost = wait_done(client, doomed, timeout=120)
        print(f"the job on the lost node ended {time.monotonic() - killed:.1f}s after the kill")
        assert lost["status"] == 76, (lost, daemon.log()[-4000:])
        assert "the node it ran on is down" in lost["error"] and "rdlab" not in lost["error"], lost
        assert "rdlab-n3" in daemon.log()  # the operator's log names the node
        for job_id in (j for j in jobs if j != doomed):
            job = wait_done(client, job_id, timeout=120)
            assert job["status"] == 70, (job, daemon.log()[-4000:])
            assert result_of(client, job, "output", "o") == b"survived"
        assert daemon.proc.poll() is None
    finally:
        daemon.stop()
        lab.restart(3)


def test_the_manager_restarting_is_an_outage_runnerd_survives(swarm_lab, tmp_path):
    """The manager (node 1) restarts while a job runs on a worker: runnerd cannot reach Docker for
    a while, waits it out (dockerOutageSeconds), and the job completes. Node 1 is kept out of the
    placement (its swap label removed) so that the job is not on the node that restarts."""
    lab = swarm_lab
    manager = lab.hostname(1)
    lab.docker(1, "node", "update", "--label-rm", "runnerd.swap", manager)
    daemon = swarm_daemon(lab, tmp_path / "d", dockerOutageSeconds=180)
    try:
        client = daemon.client()
        job_id = client.start(dataset(daemon.assets), raw(SLEEPER.format(seconds=20)), "ocean-compute")["jobId"]
        wait_done(client, job_id, statuses={40}, timeout=120)
        assert node_of(daemon, job_id) != lab.node_id(1)
        lab.restart(1)
        job = wait_done(client, job_id, timeout=240)
        assert job["status"] == 70, (job, daemon.log()[-4000:])
        assert result_of(client, job, "output", "o") == b"survived"
        assert daemon.proc.poll() is None
    finally:
        daemon.stop()
        lab.docker(1, "node", "update", "--label-add", "runnerd.swap=off", manager, check=False)
