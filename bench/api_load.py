"""API: signed status requests per second and p50/p99 latency with C concurrent clients while jobs
run, against an unsigned GET /health baseline under the same load generator.

Every client is its own address with its own nonce sequence; requests are signed before the
timed window, so the load generator measures the server, not its own signing.

    .venv/bin/python bench/api_load.py --clients 100 --seconds 10
"""

from __future__ import annotations

import asyncio
import secrets
import time

import aiohttp
from eth_account import Account

from common import dataset, parser, pct, progress, start_daemon, stop_daemon, summary, table, write_json
from runnerd import signing
from runnerd.client import Client


def presign(url: str, job_id: str, n: int, key: str | None = None, first: int = 1) -> list[str]:
    """n signed status URLs for one address (a new one unless `key`), nonces first..first+n-1."""
    key = key or "0x" + secrets.token_hex(32)
    address = Account.from_key(key).address
    urls = []
    for nonce in range(first, first + n):
        sig = signing.sign(key, [address, job_id, ""], str(nonce))
        urls.append(f"{url}/api/services/compute?consumerAddress={address}&jobId={job_id}&nonce={nonce}"
                    f"&signature={sig}")
    return urls


async def hammer(per_client: list[list[str]], seconds: float) -> tuple[list[float], int, float]:
    """Each client sends its URLs one after another; all clients at once. Returns latencies (s),
    5xx count (a 404 for another owner's job is a served request) and elapsed."""
    latencies: list[float] = []
    errors = 0
    deadline = time.perf_counter() + seconds
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:
        async def client(urls: list[str]) -> None:
            nonlocal errors
            for u in urls:
                if time.perf_counter() > deadline:
                    return
                t = time.perf_counter()
                async with session.get(u) as r:
                    await r.read()
                    if r.status >= 500:
                        errors += 1
                latencies.append(time.perf_counter() - t)

        started = time.perf_counter()
        await asyncio.gather(*(client(urls) for urls in per_client))
        return latencies, errors, time.perf_counter() - started


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--clients", type=int, default=100)
    p.add_argument("--seconds", type=float, default=10)
    p.add_argument("--per-client", type=int, default=400, help="pre-signed requests per client")
    p.add_argument("--jobs", type=int, default=2, help="sleeping jobs that run during the measurement")
    args = p.parse_args()
    daemon = start_daemon([{"id": "bench", "nCPU": 0.25, "ramGB": 0.25, "diskGB": 0.05, "maxJobs": args.jobs}])
    try:
        owner: Client = daemon.client()
        did = dataset(daemon.assets)
        repo, _, tag = args.image.rpartition(":")
        sleeper = {"meta": {"rawcode": "import time\ntime.sleep(600)", "container": {
            "image": repo, "tag": tag, "entrypoint": "python3 $ALGO"}}}
        running = [owner.start(did, sleeper, "bench")["jobId"] for _ in range(args.jobs)]
        progress(f"{args.jobs} jobs running; signing {args.clients}x{args.per_client} requests")
        # Each client asks for a job that is not its own: the full path (signature, nonce claim,
        # lookup) runs and answers 404. One client owns a job, to include the 200 path.
        per_client = [presign(daemon.url, running[0], args.per_client) for _ in range(args.clients - 1)]
        per_client.append(presign(daemon.url, running[0], args.per_client, owner.key,
                                  owner.reserve_nonces(args.per_client)))
        health = [[f"{daemon.url}/health"] * args.per_client for _ in range(args.clients)]
        progress("baseline: GET /health")
        base_lat, base_err, base_elapsed = asyncio.run(hammer(health, args.seconds))
        progress("signed GET /api/services/compute")
        lat, err, elapsed = asyncio.run(hammer(per_client, args.seconds))
        for job_id in running:
            owner.stop(job_id)
        for job_id in running:
            while owner.job(job_id)["status"] not in (7, 70, 71, 76):
                time.sleep(0.2)
    finally:
        stop_daemon(daemon)
    b, s = summary(base_lat), summary(lat)
    base_rps, rps = len(base_lat) / base_elapsed, len(lat) / elapsed
    rows = [["GET /health (unsigned baseline)", base_rps, b["median"] * 1000, pct(base_lat, 0.99) * 1000, base_err,
             1.0],
            ["signed GET compute (status)", rps, s["median"] * 1000, pct(lat, 0.99) * 1000, err, rps / base_rps]]
    print(table(f"API under load: {args.clients} concurrent clients, {args.jobs} jobs running",
                ["request", "req/s", "p50 ms", "p99 ms", "5xx", "ratio (req/s)"], rows))
    write_json(args.json, {"bench": "api_load", "clients": args.clients,
                           "baseline": {"rps": len(base_lat) / base_elapsed, "p50_ms": b["median"] * 1000,
                                        "p99_ms": pct(base_lat, 0.99) * 1000},
                           "signed_status": {"rps": len(lat) / elapsed, "p50_ms": s["median"] * 1000,
                                             "p99_ms": pct(lat, 0.99) * 1000, "server_errors": err}})


if __name__ == "__main__":
    main()
