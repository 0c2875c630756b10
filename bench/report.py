"""The README's performance table, measured: every benchmark run --runs times (default 3, one
after another, each against a fresh daemon), each figure the median of the runs with their min
and max, the commit and the machine named (and its load average, since a busy machine moves every
figure). The one command behind the README's figures:

    .venv/bin/python bench/report.py                  # all rows, 3 runs each (about 25 min on 2 cores)
    .venv/bin/python bench/report.py --only job_overhead,throughput --runs 5
    .venv/bin/python bench/report.py --json figures.json

The markdown table it prints is pasted into README.md as it is.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

from common import ROOT, machine, parser, progress, write_json

BENCH = Path(__file__).resolve().parent
# what, ours, baseline, ratio, unit[, the baseline's name when not the benchmark's usual one]
Row = tuple[Any, ...]

# name: (script, its arguments for the README, tiny arguments for the test suite)
BENCHES: dict[str, tuple[str, list[str], list[str]]] = {
    "job_overhead": ("job_overhead.py", ["-n", "10"], ["-n", "1"]),
    "job_overhead_url": ("job_overhead.py", ["-n", "10", "--url"], ["-n", "1", "--url"]),
    "job_overhead_runsc": ("job_overhead.py", ["-n", "10", "--runtime", "runsc"], ["-n", "1", "--runtime", "runsc"]),
    "throughput": ("throughput.py", ["-n", "100"], ["-n", "4", "--slots", "2"]),
    "api_load": ("api_load.py", ["--clients", "50"], ["--clients", "3", "--seconds", "1", "--per-client", "20"]),
    "store_scale": ("store_scale.py", ["--jobs", "100000"], ["--jobs", "300", "--lookups", "5"]),
    "data_path": ("data_path.py", ["--mib", "1024"], ["--mib", "4"]),
}


def _job_rows(runs: list[dict], label: str, data: str = "local dataset") -> list[Row]:
    return [(f"per-job, trivial job ({data}, raw code), algorithm under {label}: median of -n {runs[0]['n']}",
             [r["runnerd"]["median"] for r in runs], [r["baseline"]["median"] for r in runs],
             [r["ratio_median"] for r in runs], "s"),
            (f"per-job, {data}, {label}: p95", [r["runnerd"]["p95"] for r in runs],
             [r["baseline"]["p95"] for r in runs], [r["ratio_p95"] for r in runs], "s")]


ROWS: dict[str, Callable[[list[dict]], list[Row]]] = {
    "job_overhead": lambda runs: _job_rows(runs, "runc"),
    "job_overhead_url": lambda runs: _job_rows(runs, "runc", "URL dataset, downloaded"),
    "job_overhead_runsc": lambda runs: _job_rows(runs, "runsc (gVisor)"),
    "throughput": lambda runs: [(f"throughput, {runs[0]['n']} jobs at once, maxJobs {runs[0]['slots']}",
                                 [r["runnerd_jobs_per_min"] for r in runs], [r["baseline_jobs_per_min"] for r in runs],
                                 [r["runnerd_jobs_per_min"] / r["baseline_jobs_per_min"] for r in runs], "jobs/min")],
    "api_load": lambda runs: [
        (f"signed status, {runs[0]['clients']} clients: req/s", [r["signed_status"]["rps"] for r in runs],
         [r["baseline"]["rps"] for r in runs], [r["signed_status"]["rps"] / r["baseline"]["rps"] for r in runs],
         "req/s"),
        ("signed status: p99", [r["signed_status"]["p99_ms"] for r in runs], [r["baseline"]["p99_ms"] for r in runs],
         None, "ms")],
    "store_scale": lambda runs: [
        (f"status by job id, {runs[0]['jobs']} jobs: p50", [r["large"]["p50_ms"] for r in runs],
         [r["baseline"]["p50_ms"] for r in runs], [r["large"]["p50_ms"] / r["baseline"]["p50_ms"] for r in runs], "ms"),
        ("status by job id: p99", [r["large"]["p99_ms"] for r in runs], [r["baseline"]["p99_ms"] for r in runs],
         None, "ms")],
    "data_path": lambda runs: [
        (f"stream a {runs[0]['mib']} MiB result (computeResult + curl)", [r["result"]["runnerd_MBps"] for r in runs],
         [r["result"]["cat_MBps"] for r in runs], [r["result"]["runnerd_MBps"] / r["result"]["cat_MBps"] for r in runs],
         "MB/s"),
        (f"provision {runs[0]['mib']} MiB over HTTP", [r["provision_http"]["MBps"] for r in runs],
         [r["curl_MBps"] for r in runs], [r["provision_http"]["MBps"] / r["curl_MBps"] for r in runs], "MB/s",
         "`curl` on the host")],
}
BASELINES = {"job_overhead": "3 × `docker run --rm`", "job_overhead_url": "3 × `docker run --rm`",
             "job_overhead_runsc": "3 × `docker run --rm`, algorithm runsc",
             "throughput": "4-way parallel `docker run`", "api_load": "GET /health", "store_scale": "10 jobs",
             "data_path": "`cat` > /dev/null"}


def fmt(values: list[float] | None, unit: str = "") -> str:
    """median (min–max) of the runs."""
    if not values:
        return "—"
    if unit == "ratio":
        spread = f" ({min(values):.2f}–{max(values):.2f})" if len(values) > 1 else ""
        return f"{statistics.median(values):.2f}×{spread}"
    digits = 3 if max(abs(v) for v in values) < 10 else (1 if max(values) < 1000 else 0)
    f = lambda v: f"{v:,.{digits}f}"  # noqa: E731
    spread = f" ({f(min(values))}–{f(max(values))})" if len(values) > 1 else ""
    return f"{f(statistics.median(values))}{' ' + unit if unit else ''}{spread}"


def commit() -> str:
    git = lambda *a: subprocess.run(["git", "-C", str(ROOT), *a], capture_output=True, text=True).stdout.strip()  # noqa: E731
    dirty = git("status", "--porcelain", "--", "runnerd", "bench")
    return git("rev-parse", "--short", "HEAD") + (" + uncommitted changes" if dirty else "")


def runsc_registered() -> bool:
    out = subprocess.run(["docker", "info", "--format", "{{json .Runtimes}}"], capture_output=True, text=True)
    return out.returncode == 0 and "runsc" in json.loads(out.stdout or "{}")


def run_once(script: str, args: list[str], image: str) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="runnerd-report-") as tmp:
        out = Path(tmp) / "figures.json"
        proc = subprocess.run([sys.executable, str(BENCH / script), *args, "--image", image, "--json", str(out)],
                              capture_output=True, text=True, cwd=BENCH)
        if proc.returncode != 0:
            sys.exit(f"{script} {' '.join(args)} failed:\n{proc.stderr[-3000:]}")
        return json.loads(out.read_text())


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--runs", type=int, default=3, help="runs of each benchmark (default %(default)s)")
    p.add_argument("--only", default="", help=f"comma-separated subset of: {', '.join(BENCHES)}")
    p.add_argument("--tiny", action="store_true", help="the test suite's sizes (checks the plumbing, not figures)")
    args = p.parse_args()
    names = [n.strip() for n in args.only.split(",") if n.strip()] or list(BENCHES)
    unknown = [n for n in names if n not in BENCHES]
    if unknown:
        sys.exit(f"unknown benchmark(s): {', '.join(unknown)}")
    skipped = []
    if "job_overhead_runsc" in names and not runsc_registered():
        names.remove("job_overhead_runsc")
        skipped.append("job_overhead_runsc (Docker has no runtime runsc: bash scripts/runsc.sh)")
    started, load_before = time.time(), os.getloadavg()
    results: dict[str, list[dict]] = {n: [] for n in names}
    for k in range(args.runs):  # round-robin: a load spike moves one run of each, not every run of one
        for name in names:
            script, full, tiny = BENCHES[name]
            progress(f"[report] run {k + 1}/{args.runs}: {name} (load {os.getloadavg()[0]:.1f})")
            results[name].append(run_once(script, tiny if args.tiny else full, args.image))
    rows = [(name, row) for name in names for row in ROWS[name](results[name])]
    m = machine()
    print(f"Measured {time.strftime('%Y-%m-%d', time.gmtime(started))} at commit {commit()} on {m['cpus']} CPUs "
          f"({m['cpu']}), kernel {m['kernel']}, Docker {m['docker']}; {args.runs} run(s) of each, "
          f"load average {load_before[0]:.1f} before, {os.getloadavg()[0]:.1f} after; "
          f"{(time.time() - started) / 60:.0f} min.")
    if skipped:
        print("Not measured: " + "; ".join(skipped))
    print()
    print("| benchmark | runnerd | baseline | ratio |")
    print("|---|---|---|---|")
    for name, (what, ours, base, ratio, unit, *label) in rows:
        print(f"| {what} | {fmt(ours, unit)} | {(label or [BASELINES[name]])[0]}: {fmt(base, unit)} | "
              f"{fmt(ratio, 'ratio')} |")
    if "job_overhead" in names and "job_overhead_runsc" in names:
        runc = [r["runnerd"]["median"] for r in results["job_overhead"]]
        gvisor = [r["runnerd"]["median"] for r in results["job_overhead_runsc"]]
        print(f"| per-job, runsc against runc (runnerd both) | {fmt(gvisor, 's')} | runc: {fmt(runc, 's')} | "
              f"{fmt([g / r for g, r in zip(gvisor, runc)], 'ratio')} |")
    gaps = [r.get("gaps_median") for r in results.get("job_overhead", []) if r.get("gaps_median")]
    if gaps:
        print("\nstatusHistory gaps of the runc per-job runs, ms, median (min–max) of the runs' medians: "
              + ", ".join(f"{k} {fmt([g[k] * 1000 for g in gaps if k in g])}" for k in gaps[0]))
    write_json(args.json, {"bench": "report", "commit": commit(), "runs": args.runs, "ratio": None,
                           "load_before": load_before, "results": results,
                           "rows": [{"what": r[0], "runnerd": r[1], "baseline": r[2], "ratio": r[3]} for _, r in rows]})


if __name__ == "__main__":
    main()
