"""Throughput: N trivial jobs submitted at once into an environment with maxJobs 4, against the
same three containers per job run with 4-way parallel `docker run --rm`.

    .venv/bin/python bench/throughput.py -n 100
"""

from __future__ import annotations

import subprocess
import time
from concurrent.futures import ThreadPoolExecutor

from common import dataset, parser, progress, start_daemon, stop_daemon, table, write_json
from job_overhead import ALGO, docker_job_commands, prepare_docker_workdir

ENV = {"id": "bench", "nCPU": 0.5, "ramGB": 0.25, "diskGB": 0.05}  # the same limits on both sides


def run_runnerd(n: int, image: str, slots: int) -> float:
    daemon = start_daemon([{**ENV, "maxJobs": slots, "maxQueue": n + 10}])
    try:
        client = daemon.client()
        did = dataset(daemon.assets, b"a,b\n1,2\n")
        repo, _, tag = image.rpartition(":")
        algo = {"meta": {"rawcode": ALGO, "container": {"image": repo, "tag": tag, "entrypoint": "python3 $ALGO"}}}
        started = time.time()
        ids = {client.start(did, algo, "bench")["jobId"] for _ in range(n)}
        progress(f"runnerd: {n} jobs submitted in {time.time() - started:.1f}s")
        # The end is the last job's own dateFinished, so the poll interval is not in the figure,
        # and the poller is slow: a signed listing of 100 jobs costs the daemon ~7 ms of CPU and
        # this client more; every 0.2 s that was ~5 % of this 2-core machine (#13).
        finished: dict[str, float] = {}
        while len(finished) < n:
            time.sleep(1)
            for job in client.status():
                if job["jobId"] in ids and (job["status"] >= 70 or job["status"] == 7):
                    assert job["status"] == 70, job
                    finished[job["jobId"]] = float(job["dateFinished"])
            progress(f"runnerd: {len(finished)}/{n} done")
        return max(finished.values()) - started
    finally:
        stop_daemon(daemon)


def run_docker(n: int, image: str, slots: int) -> float:
    work = prepare_docker_workdir()

    def one(i: int) -> None:
        for argv in docker_job_commands(work, i, image, ENV):
            subprocess.run(argv, check=True, capture_output=True)

    started = time.perf_counter()
    with ThreadPoolExecutor(slots) as pool:
        for k, _ in enumerate(pool.map(one, range(n)), 1):
            if k % 10 == 0:
                progress(f"docker: {k}/{n} done")
    elapsed = time.perf_counter() - started
    subprocess.run(["rm", "-rf", str(work)])
    return elapsed


def main() -> None:
    p = parser(__doc__)
    p.add_argument("-n", type=int, default=100, help="jobs (default %(default)s)")
    p.add_argument("--slots", type=int, default=4, help="maxJobs and docker parallelism (default %(default)s)")
    args = p.parse_args()
    docker = run_docker(args.n, args.image, args.slots)
    ours = run_runnerd(args.n, args.image, args.slots)
    per_min = lambda seconds: args.n / seconds * 60  # noqa: E731
    rows = [[f"docker run --rm x3, {args.slots}-way parallel (baseline)", docker, per_min(docker), 1.0],
            [f"runnerd, maxJobs {args.slots}", ours, per_min(ours), per_min(ours) / per_min(docker)]]
    print(table(f"Throughput, {args.n} trivial jobs submitted at once", ["what", "seconds", "jobs/min", "ratio"],
                rows))
    write_json(args.json, {"bench": "throughput", "n": args.n, "slots": args.slots, "baseline_seconds": docker,
                           "runnerd_seconds": ours, "baseline_jobs_per_min": per_min(docker),
                           "runnerd_jobs_per_min": per_min(ours), "ratio": docker / ours})


if __name__ == "__main__":
    main()
