"""What signed provenance and live usage cost (#15), side by side with the same work without them.

    .venv/bin/python bench/provenance.py -n 10 --mb 512

1. per job: N trivial jobs through the HTTP API on a daemon with `provenance: true` and
   `usageInterval: 1`, alternating with N on one with `provenance: false` and `usageInterval: 0`;
2. per GB of inputs: a local input hashed the first time (sha256 of the file) and the next time
   (the hash cache: one stat);
3. per GB of outputs: the filter step copying an output with `hash` and without (alternating);
4. usage collection: one round's cost per running container (cgroup files), on a real container.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import PY_IMAGE, ROOT, dataset, parser, progress, start_daemon, stop_daemon, summary, table, write_json

ALGO = "print('hello from the algorithm')\n"
FILTER = ROOT / "runnerd" / "steps" / "filter.py"
ENV = {"id": "bench", "nCPU": 1, "ramGB": 0.5, "diskGB": 0.1, "maxJobs": 1}


def per_job(n: int, image: str, poll: float) -> tuple[list[float], list[float]]:
    """Two daemons side by side, one without provenance and usage, one with; their jobs alternate,
    so that whatever else the host does at a moment weighs on both sides alike."""
    off = start_daemon([dict(ENV)], provenance=False, usageInterval=0)
    on = start_daemon([dict(ENV)], provenance=True, usageInterval=1)
    times: dict[bool, list[float]] = {False: [], True: []}
    try:
        sides = []
        for trust, daemon in ((False, off), (True, on)):
            client = daemon.client()
            sides.append((trust, client, dataset(daemon.assets, b"a,b\n1,2\n")))
        repo, _, tag = image.rpartition(":")
        algo = {"meta": {"rawcode": ALGO, "container": {"image": repo, "tag": tag, "entrypoint": "python3 $ALGO"}}}
        for i in range(n + 1):
            for trust, client, did in sides if i % 2 else reversed(sides):
                started = time.perf_counter()
                job_id = client.start(did, algo, "bench")["jobId"]
                while (job := client.job(job_id))["status"] < 70 and job["status"] != 7:
                    time.sleep(poll)
                elapsed = time.perf_counter() - started
                assert job["status"] == 70, job
                kinds = {r["type"] for r in job["results"]}
                assert ("attestation" in kinds) == trust, kinds
                if i:  # the first job of each side warms caches
                    times[trust].append(elapsed)
                    progress(f"{'with' if trust else 'without'} provenance+usage, job {i}/{n}: {elapsed:.3f}s")
        return times[False], times[True]
    finally:
        stop_daemon(off)
        stop_daemon(on)


def input_hashing(folder: Path, mb: int) -> dict[str, float]:
    sys.path.insert(0, str(ROOT))
    from runnerd.engine.hashcache import HashCache

    data = folder / "input.bin"
    with open(data, "wb") as f:
        for _ in range(mb):
            f.write(os.urandom(1 << 20))
    subprocess.run(["cat", str(data)], stdout=subprocess.DEVNULL, check=True)  # in the page cache, as a hot dataset

    async def go() -> tuple[float, float]:
        cache = HashCache(folder)
        started = time.perf_counter()
        await cache.digest(data)
        cold = time.perf_counter() - started
        started = time.perf_counter()
        await cache.digest(data)
        return cold, time.perf_counter() - started

    cold, warm = asyncio.run(go())
    gb = mb / 1024
    return {"first_s_per_gb": cold / gb, "cached_s_per_job": warm}


def output_hashing(folder: Path, mb: int, rounds: int = 3) -> tuple[float, float]:
    """Seconds per GB the filter takes to copy an output without and with hashing: the median of
    `rounds` alternating runs, after one that warms the page cache."""
    filter_once(folder, mb, False)
    runs: dict[bool, list[float]] = {False: [], True: []}
    for _ in range(rounds):
        for hashing in (False, True):
            runs[hashing].append(filter_once(folder, mb, hashing))
    return statistics.median(runs[False]), statistics.median(runs[True])


def filter_once(folder: Path, mb: int, hashing: bool) -> float:
    src, out = folder / "src", folder / ("out-h" if hashing else "out")
    src.mkdir(exist_ok=True)
    big = src / "out.bin"
    if not big.exists():
        with open(big, "wb") as f:
            for _ in range(mb):
                f.write(os.urandom(1 << 20))
    shutil.rmtree(out, ignore_errors=True)
    plan = {"src": str(src), "dest": str(out / "outputs"), "maxFiles": 10, "maxBytes": (mb + 1) << 20,
            "report": str(out / "report.json"), "hash": hashing}
    started = time.perf_counter()
    subprocess.run([sys.executable, str(FILTER)], env={**os.environ, "RUNNERD_PLAN": json.dumps(plan)}, check=True,
                   capture_output=True)
    elapsed = time.perf_counter() - started
    shutil.rmtree(out, ignore_errors=True)
    return elapsed / (mb / 1024)


def usage_round(containers: int, image: str) -> float:
    """Seconds one collector round costs per running container (median of 20 rounds)."""
    from runnerd.containers.docker_runtime import DockerRuntime

    names = [f"runnerd-bench-usage-{i}-{os.getpid()}" for i in range(containers)]
    ids = [subprocess.run(["docker", "run", "-d", "--rm", "--name", n, "--network", "none", image, "sleep", "60"],
                          capture_output=True, text=True, check=True).stdout.strip() for n in names]
    runtime = DockerRuntime()

    async def go() -> list[float]:
        rounds = []
        await runtime.usage(ids)  # the first round inspects each container once (its pid)
        for _ in range(20):
            started = time.perf_counter()
            got = await runtime.usage(ids)
            rounds.append(time.perf_counter() - started)
            assert len(got) == len(ids)
        await runtime.close()
        return rounds

    try:
        rounds = asyncio.run(go())
    finally:
        subprocess.run(["docker", "rm", "-f", *names], capture_output=True)
    return summary(rounds)["median"] / containers


def main() -> None:
    p = parser(__doc__)
    p.add_argument("-n", type=int, default=10, help="jobs per side (default %(default)s; one more warms up)")
    p.add_argument("--mb", type=int, default=512, help="size of the input and output files hashed (MiB)")
    p.add_argument("--containers", type=int, default=4, help="running containers the usage round reads")
    p.add_argument("--poll", type=float, default=0.02)
    args = p.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="runnerd-bench-prov-"))
    try:
        inputs = input_hashing(folder, args.mb)
        plain, hashed = output_hashing(folder, args.mb)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    per_container = usage_round(args.containers, args.image or PY_IMAGE)
    without, with_trust = per_job(args.n, args.image, args.poll)
    off, on = summary(without), summary(with_trust)
    print(table(f"Per job, {args.n} sequential trivial jobs (seconds)", ["what", "median", "p95", "ratio"], [
        ["without provenance and usage", off["median"], off["p95"], 1.0],
        ["with provenance and usage (1 s)", on["median"], on["p95"], on["median"] / off["median"]]]))
    print(table(f"Per GB ({args.mb} MiB files, seconds per GB)", ["what", "without", "with", "cost of hashing"], [
        ["filter: copy an output", plain, hashed, hashed - plain],
        ["local input: first job hashes it", 0.0, inputs["first_s_per_gb"], inputs["first_s_per_gb"]],
        ["local input: next jobs (cache)", 0.0, inputs["cached_s_per_job"], inputs["cached_s_per_job"]]]))
    print(f"usage collection: {per_container * 1e6:.0f} µs per running container per round "
          f"({args.containers} containers, cgroup files)")
    write_json(args.json, {"bench": "provenance", "n": args.n, "mb": args.mb, "per_job_without": off,
                           "per_job_with": on, "ratio_median": on["median"] / off["median"],
                           "filter_s_per_gb": {"without": plain, "with": hashed},
                           "input_hash": inputs, "usage_s_per_container_round": per_container})


if __name__ == "__main__":
    main()
