"""Per-job overhead: N trivial jobs through the HTTP API, one after another, against the same three
containers (provision, algorithm, filter) run with plain `docker run --rm` in sequence.

    .venv/bin/python bench/job_overhead.py -n 20
    .venv/bin/python bench/job_overhead.py -n 20 --runtime runsc   # the algorithm under gVisor, both sides
    .venv/bin/python bench/job_overhead.py -n 20 --url   # the dataset is a URL: the provision step downloads it
"""

from __future__ import annotations

import json
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from common import ROOT, dataset, parser, progress, start_daemon, stop_daemon, summary, table, write_json

from tests.netutil import JOB_NETWORK, BridgeServer, ensure_job_network

ALGO = "print('hello from the algorithm')\n"
DATA = b"a,b\n1,2\n"
STEPS = ROOT / "runnerd" / "steps"
from runnerd.containers.spec import GVISOR_HOST_PIDS_BASE, GVISOR_HOST_PIDS_PER_TASK  # noqa: E402


GAPS = ((1, 10), (10, 20), (20, 30), (30, 40), (40, 50), (50, 60), (60, 70))


def status_gaps(job: dict) -> dict[str, float]:
    """Seconds between consecutive statuses, from the job's own statusHistory: where the time goes."""
    at = {h["status"]: float(h["date"]) for h in job.get("statusHistory") or ()}
    return {f"{a}-{b}": at[b] - at[a] for a, b in GAPS if a in at and b in at}


def run_runnerd(n: int, image: str, poll: float, gaps: list | None = None, runtime: str = "",
                server: BridgeServer | None = None) -> list[float]:
    daemon = start_daemon([{**ENV, "runtime": runtime}], **({"provisionAllow": [server.host]} if server else {}))
    try:
        client = daemon.client()
        did = dataset(daemon.assets, url=server.url("/data.csv")) if server else dataset(daemon.assets, DATA)
        repo, _, tag = image.rpartition(":")
        algo = {"meta": {"rawcode": ALGO, "container": {"image": repo, "tag": tag, "entrypoint": "python3 $ALGO"}}}
        times = []
        for i in range(n + 1):
            started = time.perf_counter()
            job_id = client.start(did, algo, "bench")["jobId"]
            while (job := client.job(job_id))["status"] < 70 and job["status"] != 7:
                time.sleep(poll)
            elapsed = time.perf_counter() - started
            assert job["status"] == 70, job
            if i:  # the first job warms caches (page cache, Docker's image layers)
                times.append(elapsed)
                if gaps is not None:
                    gaps.append(status_gaps(job))
                progress(f"runnerd job {i}/{n}: {elapsed:.3f}s")
        return times
    finally:
        stop_daemon(daemon)


def prepare_docker_workdir() -> Path:
    work = Path(tempfile.mkdtemp(prefix="runnerd-bench-docker-"))
    (work / "data.csv").write_text("a,b\n1,2\n")
    (work / "algo.py").write_text(ALGO)
    return work


ENV = {"id": "bench", "nCPU": 1, "ramGB": 0.5, "diskGB": 0.1, "maxJobs": 1}


def docker_job_commands(work: Path, i: int, image: str, env: dict = ENV, runtime: str = "",
                        url: str = "") -> list[list[str]]:
    """The three `docker run --rm` of one job, with the same scripts, mounts, hardening and
    resource limits runnerd gives them (helper steps: 1 CPU, 512 MiB; algorithm: the env's, under
    `runtime` if one is given, with the pids limits runnerd gives a gVisor sandbox). With `url`
    the provision container downloads the dataset into the job's /data on runnerd's job network."""
    out = work / f"out{i}"
    (out / "outputs").mkdir(parents=True)
    (out / "results").mkdir()
    (out / "data" / "inputs" / "x").mkdir(parents=True)
    subprocess.run(["chown", "-R", "65532:65532", str(out)], check=True)
    common = ["docker", "run", "--rm", "--user", "65532:65532", "--read-only", "--tmpfs", "/tmp",
              "--cap-drop", "ALL", "--security-opt", "no-new-privileges:true", "--init", "--network", "none"]
    downloads = [{"kind": "dataset", "label": "dataset x file 0", "url": url, "sha256": None,
                  "dest": "/data/inputs/x/0", "allow": [url.split("/")[2].split(":")[0]]}] if url else []
    plan_p = json.dumps({"downloads": downloads, "timeout": 60, "retries": 0, "maxBytes": 1 << 30,
                         "report": "/runnerd/out/report.json"})
    plan_f = json.dumps({"src": "/data/outputs", "dest": "/runnerd/out/outputs", "maxFiles": 1000,
                         "maxBytes": 1 << 30, "report": "/runnerd/out/report.json"})
    helper = ["--cpus", "1", "--memory", "512m", "--memory-swap", "512m", "--pids-limit", "64"]
    ram = f"{int(env['ramGB'] * 1024)}m"
    algo = ["--cpus", str(env["nCPU"]), "--memory", ram, "--memory-swap", ram, "--pids-limit", "512"]
    if runtime:
        algo = ["--runtime", runtime, *algo[:-1], str(512 * GVISOR_HOST_PIDS_PER_TASK + GVISOR_HOST_PIDS_BASE),
                "--ulimit", "nproc=512:512"]
    provision = common + helper if not url else [*common[:-1], JOB_NETWORK, *helper, "-v", f"{out}/data:/data"]
    data = f"{out}/data/inputs/x/0" if url else f"{work}/data.csv"
    return [
        provision + ["-e", f"RUNNERD_PLAN={plan_p}", "-v", f"{out}/results:/runnerd/out",
                           "-v", f"{STEPS}/provision.py:/runnerd/provision.py:ro",
                           "-v", f"{STEPS}/netpolicy.py:/runnerd/netpolicy.py:ro", image, "python3",
                           "/runnerd/provision.py"],
        common + algo + ["-v", f"{data}:/data/inputs/x/0:ro",
                         "-v", f"{work}/algo.py:/data/transformations/algorithm:ro",
                         "-v", f"{out}/outputs:/data/outputs", image, "python3", "/data/transformations/algorithm"],
        common + helper + ["-e", f"RUNNERD_PLAN={plan_f}", "-v", f"{out}/outputs:/data/outputs:ro",
                           "-v", f"{out}/results:/runnerd/out", "-v", f"{STEPS}/filter.py:/runnerd/filter.py:ro",
                           image, "python3", "/runnerd/filter.py"],
    ]


def run_docker(n: int, image: str, runtime: str = "", server: BridgeServer | None = None) -> list[float]:
    """The same three containers, by hand: what Docker itself costs."""
    work = prepare_docker_workdir()
    times = []
    for i in range(n + 1):
        commands = docker_job_commands(work, i, image, runtime=runtime, url=server.url("/data.csv") if server else "")
        started = time.perf_counter()
        for argv in commands:
            subprocess.run(argv, check=True, capture_output=True)
        elapsed = time.perf_counter() - started
        if i:
            times.append(elapsed)
            progress(f"docker run x3 {i}/{n}: {elapsed:.3f}s")
    subprocess.run(["rm", "-rf", str(work)])
    return times


def main() -> None:
    p = parser(__doc__)
    p.add_argument("-n", type=int, default=20, help="jobs per side (default %(default)s; one more warms up)")
    p.add_argument("--poll", type=float, default=0.02, help="status poll interval of the client (s)")
    p.add_argument("--runtime", default="", help="OCI runtime of the algorithm on both sides, e.g. runsc")
    p.add_argument("--url", action="store_true", help="the dataset is an HTTP URL (on this host's docker0)")
    args = p.parse_args()
    server = None
    if args.url:
        server = BridgeServer()
        server.files["/data.csv"] = DATA
        ensure_job_network()
    try:
        docker = summary(run_docker(args.n, args.image, args.runtime, server))
        gaps: list[dict[str, float]] = []
        ours = summary(run_runnerd(args.n, args.image, args.poll, gaps, args.runtime, server))
    finally:
        if server:
            server.close()
    medians = {k: statistics.median(g[k] for g in gaps if k in g) for k in gaps[0]} if gaps else {}
    rows = [["docker run --rm x3 (baseline)", docker["median"], docker["p95"], 1.0],
            ["runnerd job via HTTP API", ours["median"], ours["p95"], ours["median"] / docker["median"]]]
    print(table(f"Per-job overhead, {args.n} sequential trivial jobs (seconds), algorithm runtime "
                f"{args.runtime or 'runc'}, dataset {'a URL' if args.url else 'a local file'}",
                ["what", "median", "p95", "ratio (median)"], rows))
    print(table("runnerd statusHistory gaps, median (ms)", list(medians),
                [[f"{v * 1000:.0f}" for v in medians.values()]]))
    write_json(args.json, {"bench": "job_overhead", "n": args.n, "poll": args.poll, "runtime": args.runtime or "runc",
                           "dataset": "url" if args.url else "local",
                           "baseline": docker,
                           "runnerd": ours, "ratio_median": ours["median"] / docker["median"],
                           "ratio_p95": ours["p95"] / docker["p95"],
                           "gaps_median": medians})


if __name__ == "__main__":
    main()
