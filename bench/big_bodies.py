"""API: GET /health latency while S senders keep posting large JSON bodies (issue #10 item 7).

Each sender is its own process posting, one after another, a body of about 4 MiB (just under the
default maxRequestBytes) made of many small values, the costliest shape to parse, to the start
route; none is signed, so each is refused after parsing. A separate client reads /health one
request after another on one connection and records its latency, first without senders
(baseline), then with them. Only default configuration keys are used, so the same script measures
an older checkout too (PYTHONPATH=<that checkout> decides which runnerd the daemon runs).

    .venv/bin/python bench/big_bodies.py --senders 4 --seconds 10
"""

from __future__ import annotations

import multiprocessing
import time

import httpx

from common import parser, pct, progress, start_daemon, stop_daemon, summary, table, write_json

BODY_BYTES = 4 * 1024 * 1024 - 64


def body(size: int = BODY_BYTES) -> bytes:
    n = (size - 16) // 2
    return b'{"x":[' + b"0," * n + b"0]}"


def sender(url: str, seconds: float, counter) -> None:
    payload = body()
    deadline = time.monotonic() + seconds
    with httpx.Client(timeout=60) as client:
        while time.monotonic() < deadline:
            try:
                client.post(f"{url}/api/services/compute", content=payload,
                            headers={"Content-Type": "application/json"})
                with counter.get_lock():
                    counter.value += 1
            except httpx.HTTPError:
                pass


def health_latencies(url: str, seconds: float) -> list[float]:
    out = []
    deadline = time.monotonic() + seconds
    with httpx.Client(timeout=30) as client:
        while time.monotonic() < deadline:
            t = time.perf_counter()
            client.get(f"{url}/health").raise_for_status()
            out.append(time.perf_counter() - t)
            time.sleep(0.01)
    return out


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--senders", type=int, default=4)
    p.add_argument("--seconds", type=float, default=10)
    args = p.parse_args()
    daemon = start_daemon([{"id": "bench", "nCPU": 0.25, "ramGB": 0.25, "diskGB": 0.05}])
    try:
        progress("baseline: GET /health alone")
        base = health_latencies(daemon.url, args.seconds / 2)
        progress(f"GET /health while {args.senders} senders post {BODY_BYTES / 2**20:.1f} MiB bodies")
        posted = multiprocessing.Value("i", 0)
        procs = [multiprocessing.Process(target=sender, args=(daemon.url, args.seconds + 2, posted))
                 for _ in range(args.senders)]
        for proc in procs:
            proc.start()
        time.sleep(2)  # let every sender be mid-body
        loaded = health_latencies(daemon.url, args.seconds)
        for proc in procs:
            proc.join(120)
    finally:
        stop_daemon(daemon)
    b, s = summary(base), summary(loaded)
    rows = [["GET /health alone", b["n"], b["median"] * 1000, pct(base, 0.99) * 1000, b["max"] * 1000, 1.0],
            [f"GET /health, {args.senders} senders", s["n"], s["median"] * 1000, pct(loaded, 0.99) * 1000,
             s["max"] * 1000, s["median"] / b["median"]]]
    print(table(f"/health latency while large bodies arrive ({posted.value} bodies posted)",
                ["request", "n", "p50 ms", "p99 ms", "max ms", "ratio (p50)"], rows))
    write_json(args.json, {"bench": "big_bodies", "senders": args.senders, "bodies_posted": posted.value,
                           "baseline": {"p50_ms": b["median"] * 1000, "p99_ms": pct(base, 0.99) * 1000},
                           "loaded": {"p50_ms": s["median"] * 1000, "p99_ms": pct(loaded, 0.99) * 1000,
                                      "max_ms": s["max"] * 1000}})


if __name__ == "__main__":
    main()
