"""Jobs through runnerd's real API on the three-node Swarm lab (#17): `backend: swarm`, the lab's
manager as the Docker API, runnerd listening on the lab bridge for its workers' job-site routes.

What a shared disk would hide, each test proves on the real parts: the data reaches the node by
the provision step's fetch and the outputs come back by the filter's push (a container on a node
that mounted a path of runnerd's data dir fails the test); runnerd places the jobs (two at once on
two nodes) and each job's steps all run on its node.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import docker
import pytest

from runnerd.config import parse_config
from tests.helpers import Daemon, base_config, dataset, free_port, raw, result_of, wait_done
from tests.swarm_lab import skip_reason

pytestmark = [pytest.mark.docker, pytest.mark.skipif(skip_reason() is not None, reason=skip_reason() or "")]

ENV = {"id": "ocean-compute", "nCPU": 1, "ramGB": 0.25, "diskGB": 0.02, "diskQuota": "tmpfs", "maxJobs": 3,
       "maxJobDuration": 120}
CODE = """
import json, os
data = open('/data/inputs/' + json.loads(os.environ['DIDS'])[0] + '/0').read()
open('/data/outputs/doubled.txt', 'w').write(data * 2)
import time; time.sleep(3)
print('done on the node', flush=True)
"""


def swarm_daemon(lab, root: Path, **overrides) -> Daemon:
    port = free_port()
    overrides.setdefault("environments", [dict(ENV)])
    config = base_config(backend="swarm", swarmManager=lab.url(1), siteURL=f"http://{lab.host_address}:{port}",
                         maxDownloadGB=0.01, **overrides)
    return Daemon(root, config, port=port, host=lab.host_address).start()


class Watcher:
    """Polls the lab while jobs run: every mount of every container on every node (containers
    vanish once a job ends; the specs themselves are refused bind mounts by construction)."""

    def __init__(self, lab, data_dir: Path):
        self.lab, self.data_dir = lab, str(data_dir)
        self.host_mounts: list[str] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> "Watcher":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.thread.join(30)

    def _run(self) -> None:
        nodes = [docker.APIClient(base_url=self.lab.url(n), timeout=30) for n in (1, 2, 3)]
        while not self.stop.is_set():
            for api in nodes:
                for c in api.containers(all=True):
                    self.host_mounts += [m.get("Source", "") for m in c.get("Mounts") or ()
                                         if self.data_dir in (m.get("Source") or "")]
            self.stop.wait(0.3)


def started_on_nodes(lab, since: float, job_id: str) -> dict[str, set[str]]:
    """step -> the nodes whose dockerd started a container of that step of the job (each dockerd's
    own event log: it misses no container, however briefly it ran)."""
    out: dict[str, set[str]] = {}
    for n in (1, 2, 3):
        lines = lab.docker(n, "events", "--since", f"{since:.0f}", "--until", f"{time.time():.0f}", "--filter",
                           "event=start", "--filter", f"label=runnerd.job={job_id}", "--format",
                           '{{index .Actor.Attributes "runnerd.step"}}').split()
        for step in lines:
            out.setdefault(step, set()).add(lab.node_id(n))
    return out


def test_two_jobs_run_on_two_nodes_each_on_one_and_their_data_moves_over_http(swarm_lab, tmp_path):
    lab = swarm_lab
    daemon = swarm_daemon(lab, tmp_path / "d")
    try:
        client = daemon.client()
        did = dataset(daemon.assets, b"abc\n")
        since = time.time() - 1
        with Watcher(lab, daemon.data_dir) as watch:
            jobs = [client.start(did, raw(CODE), "ocean-compute")["jobId"] for _ in range(2)]
            ended = [wait_done(client, job_id, timeout=240) for job_id in jobs]
        for job in ended:
            assert job["status"] == 70, (job, daemon.log()[-4000:])
            assert result_of(client, job, "output", "doubled.txt") == b"abc\nabc\n"
            assert "done on the node" in result_of(client, job, "algorithmLog").decode()
        placed = [started_on_nodes(lab, since, job_id) for job_id in jobs]
        for job_id, steps in zip(jobs, placed):
            assert {"site", "provision", "algorithm", "filter"} <= set(steps), (job_id, steps)
            assert len(set().union(*steps.values())) == 1, f"job {job_id} ran on more than one node: {steps}"
        first, second = (set().union(*steps.values()) for steps in placed)
        assert first != second, "two jobs at once were not spread over two nodes"
        assert watch.host_mounts == [], "a container on a node mounted a path of runnerd's data dir"
        deadline = time.time() + 60  # the job's services (and its holder: its volumes) are gone
        while lab.docker(1, "service", "ls", "-q", "--filter", "label=runnerd.job").split() and time.time() < deadline:
            time.sleep(0.5)
        assert lab.docker(1, "service", "ls", "-q", "--filter", "label=runnerd.job").split() == []
    finally:
        daemon.stop()


LIMITS = [{**ENV, "id": "limits", "nCPU": 0.5, "pidsLimit": 40, "maxJobs": 6},
          {**ENV, "id": "short", "maxJobDuration": 4, "maxJobs": 2}]
HOG = "b = bytearray(700 * 1024 * 1024)\nfor i in range(0, len(b), 4096): b[i] = 1"
FILL = "open('/data/outputs/big', 'wb').write(b'x' * (64 * 1024 * 1024))"
FORKS = """
import os, time
made = 0
for _ in range(200):
    try:
        if os.fork() == 0:
            time.sleep(5); os._exit(0)
        made += 1
    except OSError:
        break
open('/data/outputs/forks', 'w').write(str(made))
"""
CGROUP = """
import glob
out = []
for name in ('cpu.cfs_quota_us', 'cpu.max', 'memory.limit_in_bytes', 'memory.max', 'memory.memsw.limit_in_bytes'):
    for path in glob.glob('/sys/fs/cgroup/**/' + name, recursive=True)[:1]:
        out.append(name + '=' + open(path).read().strip())
open('/data/outputs/cgroup', 'w').write('\\n'.join(out))
"""


def test_every_limit_the_swarm_backend_declares_holds_on_the_lab(swarm_lab, tmp_path):
    """Through the real API on the lab, at once: a memory hog ends at 73 with the honest
    "most likely" text (Swarm has no OOM flag); a disk filler at 74 (the site's probe on the node
    reads the volume full); a sleeper at 72 (maxJobDuration); a fork loop is cut at pidsLimit; the
    algorithm's cgroup carries the CPU quota and memory = memory+swap."""
    daemon = swarm_daemon(swarm_lab, tmp_path / "d", environments=[dict(e) for e in LIMITS])
    try:
        client = daemon.client()
        did = dataset(daemon.assets, b"x\n")
        codes = {"hog": (HOG, "limits"), "fill": (FILL, "limits"), "forks": (FORKS, "limits"),
                 "cgroup": (CGROUP, "limits"), "sleep": ("import time\ntime.sleep(60)", "short")}
        jobs = {name: client.start(did, raw(code), env)["jobId"] for name, (code, env) in codes.items()}
        done = {name: wait_done(client, job_id, timeout=240) for name, job_id in jobs.items()}
        log = daemon.log()[-4000:]
        hog = done["hog"]
        assert hog["status"] == 73 and "most likely it used more than ramGB (0.25 GB)" in hog["error"], (hog, log)
        assert hog["terminationDetails"]["reason"] == "oom_probable"
        assert done["fill"]["status"] == 74 and "diskGB" in done["fill"]["error"], (done["fill"], log)
        assert done["sleep"]["status"] == 72, (done["sleep"], log)
        assert done["forks"]["status"] == 70, (done["forks"], log)
        made = int(result_of(client, done["forks"], "output", "forks"))
        assert 20 < made < 40, made  # pidsLimit 40 counts the python, tini and the children
        assert done["cgroup"]["status"] == 70, (done["cgroup"], log)
        limits = dict(line.split("=", 1) for line in result_of(client, done["cgroup"], "output", "cgroup").decode()
                      .splitlines())
        quota = limits.get("cpu.cfs_quota_us") or limits["cpu.max"].split()[0]
        assert int(quota) == 50000, limits  # nCPU 0.5 of a 100 ms period
        memory = int(limits.get("memory.limit_in_bytes") or limits["memory.max"])
        # ramGB, and what it may write to its outputs and logs (tmpfs pages are charged to their writer)
        disk = parse_config({"environments": [dict(LIMITS[0])]}).environments[0].disk_bytes
        assert memory == (256 * 1024 * 1024 + 2 * disk) // 4096 * 4096, limits  # the kernel keeps whole pages
    finally:
        daemon.stop()
