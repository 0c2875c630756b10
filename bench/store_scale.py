"""Scale of the store: signed status lookups by job id with N jobs in the database (many owners,
finished jobs with results), against the same lookups with a near-empty database.

    .venv/bin/python bench/store_scale.py --jobs 100000
"""

from __future__ import annotations

import asyncio
import random
import secrets
import tempfile
import time
import uuid
from pathlib import Path

import httpx
from eth_account import Account

from common import parser, pct, progress, stop_daemon, summary, table, write_json
from runnerd import signing
from runnerd.domain import Job, JobStatus, ResultFile, ResultType
from runnerd.store import Database, JobStore

OWNERS = 1000


def fake_jobs(n: int, owners: list[str]) -> list[Job]:
    now = time.time()
    jobs = []
    for i in range(n):
        jobs.append(Job(
            job_id=uuid.uuid4().hex, owner=owners[i % len(owners)], document_id="did:op:" + "ab" * 32,
            environment="bench", agreement_id="0x" + secrets.token_hex(32), algo_did="raw",
            input_dids=["did:op:" + "ab" * 32],
            status=JobStatus.COMPLETED, date_created=now - n + i, date_finished=now - n + i + 1,
            results=[ResultFile("result.json", 100, ResultType.OUTPUT, "results/outputs/result.json"),
                     ResultFile("algorithm.log", 10, ResultType.ALGORITHM_LOG, "logs/algorithm.log")]))
    return jobs


async def seed(data_dir: Path, jobs: list[Job]) -> None:
    db = await Database.open(data_dir / "runnerd.db")
    try:
        for k in range(0, len(jobs), 10000):
            await JobStore(db).import_jobs(jobs[k:k + 10000])
    finally:
        await db.close()


def measure(url: str, key: str, address: str, job_ids: list[str], lookups: int) -> list[float]:
    urls = []
    for nonce, job_id in enumerate(random.choices(job_ids, k=lookups), start=1):
        sig = signing.sign(key, [address, job_id, ""], str(nonce))
        urls.append((f"{url}/api/services/compute", {"consumerAddress": address, "jobId": job_id,
                                                     "nonce": str(nonce), "signature": sig}))
    latencies = []
    with httpx.Client() as http:
        for u, params in urls:
            t = time.perf_counter()
            r = http.get(u, params=params)
            latencies.append(time.perf_counter() - t)
            assert r.status_code == 200 and r.json()[0]["status"] == 70, r.text
    return latencies


def run(n: int, lookups: int) -> tuple[list[float], float]:
    keys = ["0x" + secrets.token_hex(32) for _ in range(min(OWNERS, n))]
    owners = [Account.from_key(k).address for k in keys]
    jobs = fake_jobs(n, owners)
    root = Path(tempfile.mkdtemp(prefix="runnerd-bench-store-"))
    started = time.perf_counter()
    asyncio.run(seed(root / "data", jobs))
    seeded = time.perf_counter() - started
    progress(f"{n} jobs seeded in {seeded:.1f}s")
    from tests.helpers import Daemon, base_config

    config = base_config(environments=[{"id": "bench", "nCPU": 1, "ramGB": 0.5, "diskGB": 0.1}])
    daemon = Daemon(root, config).start()
    try:
        mine = [j.job_id for j in jobs if j.owner == owners[0]]
        lat = measure(daemon.url, keys[0], owners[0], mine, lookups)
        db_mb = (root / "data" / "runnerd.db").stat().st_size / 1e6
    finally:
        stop_daemon(daemon)
    return lat, db_mb


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--jobs", type=int, default=100_000)
    p.add_argument("--lookups", type=int, default=500)
    args = p.parse_args()
    small, small_mb = run(10, args.lookups)
    big, big_mb = run(args.jobs, args.lookups)
    s, b = summary(small), summary(big)
    rows = [["10 jobs (baseline)", small_mb, s["median"] * 1000, pct(small, 0.99) * 1000, 1.0],
            [f"{args.jobs} jobs", big_mb, b["median"] * 1000, pct(big, 0.99) * 1000, b["median"] / s["median"]]]
    print(table("Signed status lookup by job id (end to end over HTTP, one client)",
                ["database", "size MB", "p50 ms", "p99 ms", "ratio (p50)"], rows))
    write_json(args.json, {"bench": "store_scale", "jobs": args.jobs,
                           "baseline": {"p50_ms": s["median"] * 1000, "p99_ms": pct(small, 0.99) * 1000},
                           "large": {"p50_ms": b["median"] * 1000, "p99_ms": pct(big, 0.99) * 1000,
                                     "db_MB": big_mb}})


if __name__ == "__main__":
    main()
