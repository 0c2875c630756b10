"""Shared bench plumbing: a real daemon process on a scratch data dir, a dataset, a client, tables."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.helpers import Daemon, base_config, dataset  # noqa: E402  (the same harness the tests use)

PY_IMAGE = os.environ.get("RUNNERD_BENCH_IMAGE", os.environ.get("RUNNERD_TEST_PYTHON_IMAGE",
                                                                "runnerd-test-python:latest"))


def parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--json", metavar="FILE", help="also write the figures as JSON here")
    p.add_argument("--image", default=PY_IMAGE, help="python3 image for helper and algorithm (default %(default)s)")
    return p


def start_daemon(environments: list[dict[str, Any]], **overrides: Any) -> Daemon:
    root = Path(tempfile.mkdtemp(prefix="runnerd-bench-"))
    # One key submits every job of a bench: the per-owner limits would measure themselves.
    overrides = {"maxJobsPerOwner": 0, "startsPerMinutePerOwner": 0, "maxResultGBPerOwner": 0, **overrides}
    for env in environments:  # --image may name any image: benchmarks measure speed, not the image policy
        env.setdefault("rawAlgorithmImages", ["*"])
    config = base_config(environments=environments, **overrides)
    config["helperImage"] = overrides.get("helperImage", PY_IMAGE)
    return Daemon(root, config).start()


def stop_daemon(daemon: Daemon) -> None:
    """Stop it and delete its scratch folder. A bench that failed half-way may leave jobs running:
    SIGTERM leaves their containers alone by design, so remove them before the folder goes."""
    daemon.stop()
    daemon.purge()
    shutil.rmtree(daemon.root, ignore_errors=True)


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    if not values:
        return float("nan")
    k = (len(values) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(values) - 1)
    return values[lo] + (values[hi] - values[lo]) * (k - lo)


def summary(values: list[float]) -> dict[str, float]:
    return {"n": len(values), "median": statistics.median(values), "p95": pct(values, 0.95),
            "mean": statistics.fmean(values), "min": min(values), "max": max(values)}


def table(title: str, header: list[str], rows: list[list[Any]]) -> str:
    cells = [header] + [[f"{c:.3f}" if isinstance(c, float) else str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    lines = [title, "  ".join(h.ljust(w) for h, w in zip(header, widths)),
             "  ".join("-" * w for w in widths)]
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths)) for row in cells[1:]]
    return "\n".join(lines)


def write_json(path: str | None, payload: dict[str, Any]) -> None:
    payload = {"machine": machine(), "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **payload}
    if path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(json.dumps(payload, indent=2))


def machine() -> dict[str, Any]:
    cpu = ""
    try:
        cpu = next(l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name"))
    except (OSError, StopIteration):
        pass
    docker = subprocess.run(["docker", "version", "--format", "{{.Server.Version}}"], capture_output=True, text=True)
    return {"cpus": os.cpu_count(), "cpu": cpu, "docker": docker.stdout.strip(),
            "kernel": os.uname().release}


def progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


__all__ = ["Daemon", "dataset", "parser", "start_daemon", "stop_daemon", "summary", "table", "write_json",
           "progress", "pct", "ROOT", "PY_IMAGE"]
