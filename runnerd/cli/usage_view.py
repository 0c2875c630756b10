"""A job's `usage` (#15) as one line, for `runnerd status JOB` and `submit --wait`'s heartbeat.
The values are the server's: anything that is not a number is shown escaped, never trusted."""

from __future__ import annotations

from typing import Any

from runnerd.cli.safe import text


def _n(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _bytes(value: Any) -> str:
    if not _n(value):
        return text(value)
    amount = float(value)
    for unit in ("B", "kB", "MB", "GB"):
        if amount < 1000 or unit == "GB":
            return f"{int(value)} B" if unit == "B" else f"{amount:.1f} {unit}"
        amount /= 1000
    return f"{value} B"


def usage_text(usage: Any) -> str | None:
    """`cpu 3.1s · memory 210.5 MB (peak 214.0 MB) · pids 1 · disk 1.2 MB of 104.9 MB · net in 736 B
    out 0 B`, or None when the job has no readings (queued, or collection is off)."""
    if not isinstance(usage, dict) or not usage.get("samples"):
        return None
    parts = []
    if _n(usage.get("cpuSeconds")):
        parts.append(f"cpu {usage['cpuSeconds']:.1f}s")
    if _n(usage.get("memoryBytes")):
        peak = f" (peak {_bytes(usage.get('memoryPeakBytes'))})" if _n(usage.get("memoryPeakBytes")) else ""
        parts.append(f"memory {_bytes(usage['memoryBytes'])}{peak}")
    if _n(usage.get("pids")):
        parts.append(f"pids {int(usage['pids'])}")
    if _n(usage.get("diskBytes")):
        quota = f" of {_bytes(usage['diskQuotaBytes'])}" if _n(usage.get("diskQuotaBytes")) else ""
        parts.append(f"disk {_bytes(usage['diskBytes'])}{quota}")
    if _n(usage.get("networkRxBytes")) or _n(usage.get("networkTxBytes")):
        rx, tx = usage.get("networkRxBytes") or 0, usage.get("networkTxBytes") or 0
        parts.append(f"net in {_bytes(rx)} out {_bytes(tx)}")
    return " · ".join(parts) or None
