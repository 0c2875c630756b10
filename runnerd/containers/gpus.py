"""What this host has for GPUs, for doctor's `gpus` checks: the GPUs `nvidia-smi -L` lists, and how
Docker could hand them to a container (its nvidia runtime, the runtime hook, or NVIDIA CDI specs)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any, Callable


def nvidia_gpus(run: Callable[..., subprocess.CompletedProcess[str]]) -> tuple[set[str] | None, str]:
    try:
        proc = run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=20)
    except FileNotFoundError:
        return None, "nvidia-smi is not installed"
    except (OSError, subprocess.SubprocessError) as exc:
        return None, f"nvidia-smi failed: {exc}"
    if proc.returncode != 0:
        return None, f"nvidia-smi -L failed: {(proc.stderr or proc.stdout).strip()[:200]}"
    found: set[str] = set()
    for line in proc.stdout.splitlines():  # GPU 0: NVIDIA H100 80GB HBM3 (UUID: GPU-…)
        m = re.match(r"\s*GPU (\d+):.*\(UUID: ([^)]+)\)", line)
        if m:
            found.update(m.groups())
    return found, ""


def gpu_docker_support(info: dict[str, Any]) -> str:
    if "nvidia" in (info.get("Runtimes") or {}):
        return "Docker's nvidia runtime"
    if shutil.which("nvidia-container-runtime-hook"):
        return "nvidia-container-runtime-hook"
    for folder in info.get("CDISpecDirs") or ["/etc/cdi", "/var/run/cdi"]:
        if any(p.name.startswith("nvidia") for p in Path(folder).glob("*") if p.suffix in (".yaml", ".json")):
            return f"CDI specs in {folder}"
    return ""
