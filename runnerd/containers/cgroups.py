"""Reading a container's resource use straight from its cgroup (#15): a few small files per
container, no Docker call, microseconds each, so one reader can sample every running job often
without loading dockerd (`docker stats` costs dockerd a second's sampling per container).

Both hierarchies and both Docker cgroup drivers are found by path:
    v1 cgroupfs  /sys/fs/cgroup/<controller>/docker/<id>/
    v1 systemd   /sys/fs/cgroup/<controller>/system.slice/docker-<id>.scope/
    v2 cgroupfs  /sys/fs/cgroup/docker/<id>/
    v2 systemd   /sys/fs/cgroup/system.slice/docker-<id>.scope/
A container whose cgroup is not found (rootless Docker, another runtime, runnerd itself in a
container) gives None here and the Docker runtime falls back to Docker's one-shot stats.
Network bytes come from /proc/<pid>/net/dev of the container's init process (its namespace).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable

from runnerd.containers.runtime import ContainerUsage

ROOT = Path("/sys/fs/cgroup")


def _read(path: Path) -> str | None:
    try:
        with open(path, "rb") as f:
            return f.read(65536).decode("ascii", "replace")
    except OSError:
        return None


def _int(path: Path) -> int | None:
    text = _read(path)
    try:
        return int(text.split()[0]) if text else None
    except ValueError:  # "max"
        return None


def _stat(path: Path) -> dict[str, int]:
    out: dict[str, int] = {}
    for line in (_read(path) or "").splitlines():
        key, _, value = line.partition(" ")
        if value.strip().isdigit():
            out[key] = int(value)
    return out


def _candidates(container_id: str) -> tuple[str, str]:
    return f"docker/{container_id}", f"system.slice/docker-{container_id}.scope"


def find(container_id: str, root: Path = ROOT) -> tuple[int, Path | dict[str, Path]] | None:
    """(2, the cgroup dir) or (1, {controller: dir}) for a container, or None if not found."""
    for rel in _candidates(container_id):
        if (root / rel / "cgroup.controllers").exists():
            return 2, root / rel
        if (root / "memory" / rel).is_dir():
            return 1, {c: root / c / rel for c in ("memory", "cpuacct", "pids")}
    return None


def read(container_id: str, root: Path = ROOT,
         where: tuple[int, Path | dict[str, Path]] | None = None) -> ContainerUsage | None:
    """One reading, or None when the container's cgroup is not there (not running, or elsewhere)."""
    where = where or find(container_id, root)
    if where is None:
        return None
    version, at = where
    if version == 2:
        assert isinstance(at, Path)
        cpu = _stat(at / "cpu.stat").get("usage_usec")
        current, peak = _int(at / "memory.current"), _int(at / "memory.peak")
        inactive = _stat(at / "memory.stat").get("inactive_file", 0)
        pids, procs = _int(at / "pids.current"), at / "cgroup.procs"
        cpu_seconds = None if cpu is None else cpu / 1e6
    else:
        assert isinstance(at, dict)
        nanos = _int(at["cpuacct"] / "cpuacct.usage")
        current, peak = _int(at["memory"] / "memory.usage_in_bytes"), _int(at["memory"] / "memory.max_usage_in_bytes")
        inactive = _stat(at["memory"] / "memory.stat").get("total_inactive_file", 0)
        pids, procs = _int(at["pids"] / "pids.current"), at["memory"] / "cgroup.procs"
        cpu_seconds = None if nanos is None else nanos / 1e9
    if current is None or cpu_seconds is None:
        return None  # removed between finding and reading
    pid = _int(procs)  # any process of the container: they all share its network namespace
    rx, tx = net_bytes(pid) if pid else (None, None)
    return ContainerUsage(cpu_seconds=cpu_seconds, memory_bytes=max(0, current - inactive), memory_peak_bytes=peak,
                          pids=pids or 0, net_rx_bytes=rx, net_tx_bytes=tx)


def net_bytes(pid: int) -> tuple[int | None, int | None]:
    """Bytes received and sent on every interface but loopback, in the namespace of `pid`; (None,
    None) when it has loopback only (network "none": nothing to count)."""
    text = _read(Path(f"/proc/{pid}/net/dev"))
    if not text:
        return None, None
    rx = tx = 0
    seen = False
    for line in text.splitlines()[2:]:
        name, _, fields = line.partition(":")
        numbers = fields.split()
        if name.strip() == "lo" or len(numbers) < 9:
            continue
        seen = True
        rx += int(numbers[0])
        tx += int(numbers[8])
    return (rx, tx) if seen else (None, None)


def available(root: Path = ROOT) -> bool:
    return os.path.isdir(root)


def from_docker_stats(data: dict[str, Any]) -> ContainerUsage | None:
    """The same reading from Docker's one-shot stats answer (the fallback; pure, tested)."""
    cpu = ((data.get("cpu_stats") or {}).get("cpu_usage") or {}).get("total_usage")
    memory = data.get("memory_stats") or {}
    if cpu is None or "usage" not in memory:
        return None  # a container that is not running answers zeros without these
    stats = memory.get("stats") or {}
    inactive = stats.get("total_inactive_file", stats.get("inactive_file", 0))
    networks = data.get("networks")
    rx = tx = None
    if isinstance(networks, dict) and networks:
        rx = sum(int(n.get("rx_bytes", 0)) for n in networks.values())
        tx = sum(int(n.get("tx_bytes", 0)) for n in networks.values())
    return ContainerUsage(cpu_seconds=int(cpu) / 1e9, memory_bytes=max(0, int(memory["usage"]) - int(inactive)),
                          memory_peak_bytes=memory.get("max_usage"), pids=int((data.get("pids_stats") or {})
                                                                               .get("current") or 0),
                          net_rx_bytes=rx, net_tx_bytes=tx)


def read_many(container_ids: list[str], stats: Callable[[str], dict[str, Any]],
              not_found: type[Exception]) -> dict[str, ContainerUsage]:
    """One reading per running container: the cgroup files (no Docker call at all), else Docker's
    one-shot stats (where no cgroup is found); a container that is not running is left out."""
    out = {}
    for cid in container_ids:
        reading = read(cid)
        if reading is None:
            try:
                reading = from_docker_stats(stats(cid))
            except not_found:
                reading = None
        if reading is not None:
            out[cid] = reading
    return out
