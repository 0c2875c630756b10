"""The Swarm backend against local Docker, in the same run (#17): per-job overhead (N trivial jobs
one after another through the API) and throughput (M jobs submitted at once), each on a daemon with
`backend: docker` and on one with `backend: swarm` over the three-node lab (scripts/swarm_lab.sh).

    .venv/bin/python bench/swarm.py -n 10 -m 12          # brings the lab up and down itself
    .venv/bin/python bench/swarm.py -n 3 -m 4 --keep-lab # leaves the lab up afterwards

The lab's three dockerd run on this one machine: the swarm side pays the cluster's coordination
(services, task dispatch over the raft store, polling, the job-site transfers over HTTP) but gains
no CPUs, so its throughput here is a floor, not what more nodes buy.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from common import PY_IMAGE, Daemon, dataset, parser, progress, start_daemon, stop_daemon, summary, table, write_json

from tests.helpers import base_config, free_port
from tests.swarm_lab import LAB_DIR, LAB_NET, Lab, skip_reason

ALGO = "print('hello from the algorithm')\n"
LOCAL = {"id": "bench", "nCPU": 1, "ramGB": 0.5, "diskGB": 0.1, "maxJobs": 2}
SWARM = {**LOCAL, "diskQuota": "tmpfs", "diskGB": 0.02, "maxJobs": 6}  # 2 per node: each has 2 CPUs


def swarm_daemon(lab: Lab, root: Path) -> Daemon:
    port = free_port()
    env = {**SWARM, "rawAlgorithmImages": ["*"]}
    config = base_config(environments=[env], backend="swarm", swarmManager=lab.url(1), maxDownloadGB=0.01,
                         siteURL=f"http://{lab.host_address}:{port}", maxJobsPerOwner=0, startsPerMinutePerOwner=0,
                         maxResultGBPerOwner=0, helperImage=PY_IMAGE)
    return Daemon(root, config, port=port, host=lab.host_address).start()


def algorithm(image: str) -> dict[str, Any]:
    repo, _, tag = image.rpartition(":")
    return {"meta": {"rawcode": ALGO, "container": {"image": repo, "tag": tag, "entrypoint": "python3 $ALGO"}}}


def done(client, job_id: str, poll: float) -> dict[str, Any]:
    while (job := client.job(job_id))["status"] < 70 and job["status"] != 7:
        time.sleep(poll)
    assert job["status"] == 70, job
    return job


def overhead(daemon: Daemon, name: str, n: int, image: str, poll: float) -> list[float]:
    client, did = daemon.client(), dataset(daemon.assets, b"a,b\n1,2\n")
    times = []
    for i in range(n + 1):
        started = time.perf_counter()
        done(client, client.start(did, algorithm(image), "bench")["jobId"], poll)
        if i:  # the first warms caches (and, on the swarm, makes the step scripts' configs)
            times.append(time.perf_counter() - started)
            progress(f"{name} job {i}/{n}: {times[-1]:.2f}s")
    return times


def throughput(daemon: Daemon, name: str, m: int, image: str, poll: float) -> float:
    """Jobs per minute: m jobs submitted at once, until the last one is done."""
    client, did = daemon.client(), dataset(daemon.assets, b"a,b\n1,2\n")
    started = time.perf_counter()
    jobs = [client.start(did, algorithm(image), "bench")["jobId"] for _ in range(m)]
    for job_id in jobs:
        done(client, job_id, poll)
    wall = time.perf_counter() - started
    progress(f"{name}: {m} jobs in {wall:.1f}s")
    return m / wall * 60


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("-n", type=int, default=10, help="sequential jobs per side for the overhead (default 10)")
    p.add_argument("-m", type=int, default=12, help="jobs submitted at once per side for throughput (default 12)")
    p.add_argument("--poll", type=float, default=0.05, help="status poll interval, seconds")
    p.add_argument("--keep-lab", action="store_true", help="leave the Swarm lab up afterwards")
    args = p.parse_args()
    if reason := skip_reason(env_flag=False):
        raise SystemExit(f"bench/swarm.py: {reason}")
    lab = Lab(LAB_DIR, LAB_NET)
    progress("bringing the Swarm lab up")
    lab.up()
    figures: dict[str, Any] = {}
    try:
        local = start_daemon([dict(LOCAL)])
        try:
            figures["local_overhead"] = summary(overhead(local, "local", args.n, args.image, args.poll))
            figures["local_throughput"] = throughput(local, "local", args.m, args.image, args.poll)
        finally:
            stop_daemon(local)
        root = Path(local.root.parent) / f"runnerd-bench-swarm-{int(time.time())}"
        swarm = swarm_daemon(lab, root)
        try:
            figures["swarm_overhead"] = summary(overhead(swarm, "swarm", args.n, args.image, args.poll))
            figures["swarm_throughput"] = throughput(swarm, "swarm", args.m, args.image, args.poll)
        finally:
            stop_daemon(swarm)
    finally:
        if not args.keep_lab:
            lab.down()
    lo, so = figures["local_overhead"], figures["swarm_overhead"]
    rows = [["per-job latency, median (s)", so["median"], lo["median"], so["median"] / lo["median"]],
            ["per-job latency, p95 (s)", so["p95"], lo["p95"], so["p95"] / lo["p95"]],
            [f"throughput, {args.m} jobs at once (jobs/min)", figures["swarm_throughput"],
             figures["local_throughput"], figures["swarm_throughput"] / figures["local_throughput"]]]
    print(table(f"Swarm lab (3 nodes on this machine) vs local Docker, n={args.n}, m={args.m}",
                ["what", "swarm", "local docker", "ratio"], rows))
    write_json(args.json, {"n": args.n, "m": args.m, **figures})


if __name__ == "__main__":
    main()
