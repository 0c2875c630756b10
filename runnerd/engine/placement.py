"""Where an admitted job's resources come from: the `Placer` the scheduler is typed against, and
the local one, the `Allocator` (this host's cores and GPUs). On a cluster the placer is
engine/node_placer.py `NodePlacer`, which also chooses the node a whole job runs on (#17).

A placer is pure accounting, driven from the event loop only (no locks): `take` at admission,
`hold` for a job re-adopted after a restart, `release` when a job's run ends, each with the
`Slot` recorded in the job's row."""

from __future__ import annotations

from typing import Protocol

from runnerd.config import Environment
from runnerd.domain import Slot


class Placer(Protocol):
    def take(self, env: Environment) -> Slot | None:
        """A slot for one job of `env`, now held; None when it does not fit now (it stays queued)."""
        ...

    def hold(self, slot: Slot) -> None:
        """Account a slot given before (a job re-adopted at startup); never refuses."""
        ...

    def release(self, slot: Slot) -> None:
        """Give back a slot taken or held; one that is not held is ignored."""
        ...

    async def update(self) -> None:
        """Bring its view of the resources up to date; the scheduler calls it before each
        admission pass (a placer whose resources never change does nothing)."""
        ...

    @property
    def retry_after(self) -> float | None:
        """Seconds after which a `take` that returned None may succeed without any release (the
        resources may have grown meanwhile), so the scheduler looks again; None: only a release
        frees room, and a release wakes the scheduler anyway."""
        ...


class Allocator:
    """Hands out whole cores (cpuset) while free ones remain, and GPUs exclusively."""

    def __init__(self, cores: list[int]):
        self.cores = sorted(cores)
        self.cores_used: set[int] = set()
        self.gpus_used: set[str] = set()

    def take(self, env: Environment) -> Slot | None:
        """A slot for a job of `env`, or None if its GPUs are not free (the job keeps waiting)."""
        gpus: tuple[str, ...] = ()
        if env.nGPU:
            free = [g for g in env.gpus if g not in self.gpus_used]
            if len(free) < env.nGPU:
                return None
            gpus = tuple(free[: env.nGPU])
        cpuset = None
        if float(env.nCPU).is_integer():
            free_cores = [c for c in self.cores if c not in self.cores_used]
            if len(free_cores) >= env.nCPU:
                cpuset = ",".join(str(c) for c in free_cores[: int(env.nCPU)])
        slot = Slot(cpuset, gpus)
        self.hold(slot)
        return slot

    def hold(self, slot: Slot) -> None:
        if slot.cpuset:
            self.cores_used.update(int(c) for c in slot.cpuset.split(","))
        self.gpus_used.update(slot.gpus)

    def release(self, slot: Slot) -> None:
        if slot.cpuset:
            self.cores_used.difference_update(int(c) for c in slot.cpuset.split(","))
        self.gpus_used.difference_update(slot.gpus)

    async def update(self) -> None:
        """This host's cores and GPUs are fixed while the daemon runs."""

    @property
    def retry_after(self) -> float | None:
        return None
