"""Starts: signed POST /api/services/compute per second and p50/p99 latency with C concurrent
clients, each its own address, into an environment whose one slot is busy (every start is
queued: the path measured is signature, nonce claim, intake, the insert's commit). Baseline:
signed status reads of the same clients under the same load generator.

    .venv/bin/python bench/start_rate.py --clients 20 --per-client 25
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


def presign_starts(did: str, n: int, image: str) -> tuple[str, list[dict]]:
    key = "0x" + secrets.token_hex(32)
    address = Account.from_key(key).address
    repo, _, tag = image.rpartition(":")
    bodies = []
    for nonce in range(1, n + 1):
        bodies.append({"consumerAddress": address, "nonce": str(nonce),
                       "signature": signing.sign(key, [address, did], str(nonce)), "environment": "bench",
                       "dataset": {"documentId": did, "serviceId": "compute",
                                   "transferTxId": "0x" + secrets.token_hex(32)},
                       "algorithm": {"meta": {"rawcode": "print(1)", "container": {
                           "image": repo, "tag": tag, "entrypoint": "python3 $ALGO"}}}})
    return key, bodies


def presign_status(key: str, n: int, first: int) -> list[dict]:
    address = Account.from_key(key).address
    return [{"consumerAddress": address, "nonce": str(nonce), "jobId": "",
             "signature": signing.sign(key, [address, "", ""], str(nonce))} for nonce in range(first, first + n)]


async def hammer(url: str, method: str, per_client: list[list[dict]]) -> tuple[list[float], int, float]:
    latencies: list[float] = []
    errors = 0
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        async def client(items: list[dict]) -> None:
            nonlocal errors
            for item in items:
                t = time.perf_counter()
                kwargs = {"json": item} if method == "POST" else {"params": {k: v for k, v in item.items() if v}}
                async with session.request(method, url, **kwargs) as r:
                    await r.read()
                    if r.status != 200:
                        errors += 1
                latencies.append(time.perf_counter() - t)

        started = time.perf_counter()
        await asyncio.gather(*(client(items) for items in per_client))
        return latencies, errors, time.perf_counter() - started


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--clients", type=int, default=20)
    p.add_argument("--per-client", type=int, default=25, help="starts (and status reads) per client")
    args = p.parse_args()
    n = args.clients * args.per_client
    daemon = start_daemon([{"id": "bench", "nCPU": 0.25, "ramGB": 0.25, "diskGB": 0.05, "maxJobs": 1,
                            "maxQueue": n + 10}])
    try:
        owner = daemon.client()
        did = dataset(daemon.assets)
        repo, _, tag = args.image.rpartition(":")
        busy = owner.start(did, {"meta": {"rawcode": "import time\ntime.sleep(600)", "container": {
            "image": repo, "tag": tag, "entrypoint": "python3 $ALGO"}}}, "bench")["jobId"]
        progress(f"signing {args.clients}x{args.per_client} starts")
        signed = [presign_starts(did, args.per_client, args.image) for _ in range(args.clients)]
        statuses = [presign_status(key, args.per_client, args.per_client + 1) for key, _ in signed]
        url = f"{daemon.url}/api/services/compute"
        progress("signed POST compute (start)")
        lat, err, elapsed = asyncio.run(hammer(url, "POST", [bodies for _, bodies in signed]))
        progress("signed GET compute (status of all the client's jobs)")
        base_lat, base_err, base_elapsed = asyncio.run(hammer(url, "GET", statuses))
        owner.stop(busy)
        for key, _ in signed:  # the queued jobs end at 7 at once
            Client(daemon.url, key).stop()
    finally:
        stop_daemon(daemon)
    b, s = summary(base_lat), summary(lat)
    base_rps, rps = len(base_lat) / base_elapsed, len(lat) / elapsed
    rows = [["signed GET compute (status, baseline)", base_rps, b["median"] * 1000, pct(base_lat, 0.99) * 1000,
             base_err, 1.0],
            ["signed POST compute (start, queued)", rps, s["median"] * 1000, pct(lat, 0.99) * 1000, err,
             rps / base_rps]]
    print(table(f"Starts: {args.clients} concurrent clients x {args.per_client}",
                ["request", "req/s", "p50 ms", "p99 ms", "non-200", "ratio (req/s)"], rows))
    write_json(args.json, {"bench": "start_rate", "clients": args.clients,
                           "baseline": {"rps": base_rps, "p50_ms": b["median"] * 1000,
                                        "p99_ms": pct(base_lat, 0.99) * 1000},
                           "starts": {"rps": rps, "p50_ms": s["median"] * 1000, "p99_ms": pct(lat, 0.99) * 1000,
                                      "refused": err}})


if __name__ == "__main__":
    main()
