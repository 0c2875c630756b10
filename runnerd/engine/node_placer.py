"""Per-node placement on a cluster (#17): runnerd stays the placer, Swarm only executes.

The `NodePlacer` keeps, for every Ready node the cluster lists (`SwarmRuntime.nodes()`: id,
hostname, CPUs, memory, labels), what the jobs runnerd placed there hold, and gives each admitted
job one node for all three of its steps (`Slot.node`, in the job's row; the Swarm job site,
engine/swarm_site.py, pins each step's spec and the job's volumes there).
What a job counts against its node (`demand`):
- CPUs: its nCPU (Swarm enforces it as a CPU quota; there is no cpuset on Swarm);
- RAM: its ramGB, plus twice its diskGB (on Swarm a job's outputs and logs are two tmpfs volumes
  of diskGB each on its node, whatever its diskQuota: engine/swarm_site.py; a tmpfs lives in the
  node's RAM, and the algorithm's memory limit covers what it writes there), plus one helper step
  (HELPER_MEMORY: provision and filter run one at a time, and beside the algorithm's container
  only while one ends and the next begins).
GPUs are never placed: Swarm has no device requests, so an environment with GPUs is refused by the
capability check (capabilities.SWARM) before any job.

A node is used only if the operator labelled it `runnerd.swap=off` (services cannot turn swap off,
so only a swap-free node keeps ramGB a limit); the labels `runnerd.reserve.cpus` and
`runnerd.reserve.ramGB` leave that much of a node to the node itself (its dockerd, the OS).

Jobs are spread, not packed: the node with the most free CPU, then the most free RAM, then the
lowest id (deterministic). Accounting is by held slots, never by a running total: `refresh` replaces
the node list (nodes joining, leaving, resized) and the free room is recomputed from the slots held,
so a refresh can never count a job twice, and a job on a node that left stays accounted (and is
released) like any other. Everything here is pure but `update`, which asks the node list of its
`source` at most every `every` seconds of the injected clock.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from runnerd.clock import SYSTEM, Clock
from runnerd.config import Environment, Settings
from runnerd.containers.spec import HELPER_MEMORY
from runnerd.containers.swarm_spec import SWAP_LABEL
from runnerd.domain import Slot

log = logging.getLogger("runnerd.placer")

RESERVE_CPUS = "runnerd.reserve.cpus"  # node label: CPUs runnerd leaves to the node itself
RESERVE_RAM = "runnerd.reserve.ramGB"  # node label: GB of RAM runnerd leaves to the node itself
NODE_REFRESH = 5.0  # seconds between two looks at the cluster's node list
NODE_LIST_TIMEOUT = 10.0  # a manager slower than this to list its nodes holds up no admission pass
GB = 1024**3

NodeSource = Callable[[], Awaitable[list[dict[str, Any]]]]  # SwarmRuntime.nodes


def _millis(cpus: float) -> int:
    """CPUs as whole milli-CPUs: sums and comparisons stay exact (0.1 + 0.2 fits in 0.3)."""
    return round(cpus * 1000)


@dataclass(frozen=True)
class Node:
    """One Ready node as the placer sees it: what runnerd may hand out there (its resources less
    the operator's reserve), or why runnerd does not use it at all."""

    id: str
    hostname: str
    millicpus: int
    memory: int  # bytes
    problem: str | None = None  # set: runnerd places nothing there (the text says why and the fix)

    @staticmethod
    def parse(raw: Mapping[str, Any]) -> Node:
        node_id = str(raw["id"])
        hostname = str(raw.get("hostname") or node_id)
        labels: Mapping[str, Any] = raw.get("labels") or {}
        problem = None
        if labels.get(SWAP_LABEL) != "off":
            problem = (f"not labelled {SWAP_LABEL}=off, so runnerd places no job there (services cannot turn "
                       f"swap off); on a node without swap: docker node update --label-add {SWAP_LABEL}=off {node_id}")
        reserve = {}
        for label in (RESERVE_CPUS, RESERVE_RAM):
            try:
                reserve[label] = float(labels.get(label) or 0)
                if not reserve[label] >= 0:  # also refuses nan
                    raise ValueError(label)
            except ValueError:
                reserve[label] = 0.0
                problem = problem or (f"its label {label}={labels.get(label)!r} is not a number >= 0, so runnerd "
                                      f"places no job there; fix: docker node update --label-add {label}=<n> {node_id}")
        millicpus = max(0, _millis(float(raw.get("cpus") or 0)) - _millis(reserve[RESERVE_CPUS]))
        memory = max(0, int(raw.get("memory") or 0) - int(reserve[RESERVE_RAM] * GB))
        return Node(node_id, hostname, millicpus, memory, problem)

    def describe(self) -> str:
        return f"{self.hostname} ({self.id}: {self.millicpus / 1000:g} CPUs, {self.memory / GB:.2f} GB)"


def demand(env: Environment) -> tuple[float, int]:
    """What one job of `env` counts against its node: (CPUs, bytes of RAM)."""
    return env.nCPU, env.ram_bytes + 2 * env.disk_bytes + HELPER_MEMORY


def _demand_text(env: Environment) -> str:
    cpus, memory = demand(env)
    return (f"{cpus:g} CPUs and {memory / GB:.2f} GB of RAM (ramGB {env.ramGB:g} + 2 × diskGB {env.diskGB:g}: "
            f"outputs and logs, tmpfs on the node, + {HELPER_MEMORY / GB:g} GB for a helper step)")


def _parsed(nodes: Iterable[Mapping[str, Any] | Node]) -> list[Node]:
    return sorted((n if isinstance(n, Node) else Node.parse(n) for n in nodes), key=lambda n: n.id)


def unplaceable(settings: Settings, nodes: Iterable[Mapping[str, Any] | Node]) -> list[str]:
    """Why environments can never start a job on these nodes (empty: every one fits somewhere when
    the cluster is idle), each with the numbers and the fix. For the log, doctor and check-config;
    takes SwarmRuntime.nodes()' dicts."""
    listed = _parsed(nodes)
    usable = [n for n in listed if n.problem is None]
    if not usable:
        why = f"{len(listed)} Ready node(s), none labelled {SWAP_LABEL}=off" if listed else "no Ready swarm node"
        return [f"no job can start: {why}; label each worker without swap: "
                f"docker node update --label-add {SWAP_LABEL}=off <node>"]
    widest = max(usable, key=lambda n: (n.millicpus, n.id))
    largest = max(usable, key=lambda n: (n.memory, n.id))
    out = []
    for env in settings.environments:
        if env.nGPU:
            out.append(f"environment {env.id}: asks for {env.nGPU} GPU(s) per job; runnerd places no GPUs on a "
                       "swarm (no device requests): set nGPU 0, or run it on a host with backend docker")
            continue
        cpus, memory = demand(env)
        if any(n.millicpus >= _millis(cpus) and n.memory >= memory for n in usable):
            continue
        unused = len(listed) - len(usable)
        out.append(f"environment {env.id}: one job needs {_demand_text(env)}, which no usable node offers (the "
                   f"most CPUs: {widest.describe()}; the most RAM: {largest.describe()}, each after its reserve"
                   f"{f'; {unused} more node(s) are not usable' if unused else ''}); its jobs stay queued: lower "
                   f"its nCPU, ramGB or diskGB, or add a bigger node labelled {SWAP_LABEL}=off")
    return out


class NodePlacer:
    """The `Placer` of a cluster (engine/placement.py): one node per job, spread, from held slots."""

    def __init__(self, settings: Settings, nodes: Iterable[Mapping[str, Any]] | None = None, *,
                 source: NodeSource | None = None, clock: Clock = SYSTEM, every: float = NODE_REFRESH):
        self.settings = settings
        self.source, self.clock, self.every = source, clock, every
        self.nodes: dict[str, Node] = {}
        self._held: dict[str, Counter[tuple[int, int]]] = {}  # node id -> (millicpus, bytes) of each job
        self._looked_at: float | None = None  # monotonic time of the last look at the source
        self._source_failing = False
        self._said: set[str] = set()  # what the operator was told and still holds (said once)
        if nodes is not None:
            self.refresh(nodes)

    # -- the node list --------------------------------------------------------------------

    def refresh(self, nodes: Iterable[Mapping[str, Any]]) -> None:
        """Take the cluster's current Ready nodes. The held jobs stay as they are: a node that left
        keeps its jobs accounted until they are released, and one that comes back has them."""
        fresh = {n.id: n for n in _parsed(nodes)}
        for node in fresh.values():
            old = self.nodes.get(node.id)
            if old == node:
                continue
            if node.problem:
                if old is None or old.problem != node.problem:  # an unused node's size is no news
                    log.warning("swarm node %s: %s", node.hostname, node.problem)
            elif old is None or old.problem:
                log.info("swarm node %s is used for jobs", node.describe())
            else:
                log.info("swarm node %s changed: now %s", old.hostname, node.describe())
        for gone in sorted(set(self.nodes) - set(fresh)):
            jobs = sum(self._held.get(gone, Counter()).values())
            log.warning("swarm node %s is no longer Ready%s", self.nodes[gone].describe(),
                        f"; its {jobs} job(s) stay accounted until they end" if jobs else "")
        self.nodes = fresh
        messages = unplaceable(self.settings, fresh.values())
        for text in messages:
            if text not in self._said:
                log.warning("placement: %s", text)
        self._said = set(messages)  # one that stops holding is said again if it comes back

    async def update(self) -> None:
        """Refresh from the source, at most every `every` seconds. A source that fails keeps the
        last list (jobs keep being placed on it; a step on a node that is gone fails on its own)."""
        now = self.clock.monotonic()
        if self.source is None or (self._looked_at is not None and now - self._looked_at < self.every):
            return
        self._looked_at = now
        try:
            nodes = await asyncio.wait_for(self.source(), NODE_LIST_TIMEOUT)
        except Exception as exc:  # noqa: BLE001 - whatever the listing raised, admission goes on with the last list
            if not self._source_failing:
                log.warning("cannot list the swarm's nodes (%s); placing on the last list until it answers",
                            str(exc) or type(exc).__name__)
            self._source_failing = True
            return
        if self._source_failing:
            log.info("the swarm's node list answers again")
        self._source_failing = False
        self.refresh(nodes)

    @property
    def retry_after(self) -> float | None:
        return self.every if self.source is not None else None

    # -- accounting ---------------------------------------------------------------------------

    def _used(self, node_id: str) -> tuple[int, int]:
        held = self._held.get(node_id, Counter())
        return sum(c * n for (c, _), n in held.items()), sum(m * n for (_, m), n in held.items())

    def free(self, node_id: str) -> tuple[int, int]:
        """(milli-CPUs, bytes) still free on a node; never negative (a node that shrank under its
        jobs has none free until enough of them end)."""
        node = self.nodes.get(node_id)
        if node is None:
            return 0, 0
        cpus, memory = self._used(node_id)
        return max(0, node.millicpus - cpus), max(0, node.memory - memory)

    def take(self, env: Environment) -> Slot | None:
        if env.nGPU:
            return None  # refused before (capabilities); never placed here
        cpus, memory = demand(env)
        fits = [(-c, -m, n.id) for n in self.nodes.values() if n.problem is None
                for c, m in [self.free(n.id)] if c >= _millis(cpus) and m >= memory]
        if not fits:
            return None
        slot = Slot(node=min(fits)[2], cpus=cpus, memory=memory)
        self.hold(slot)
        return slot

    def hold(self, slot: Slot) -> None:
        if slot.node is not None:  # a slot of this host (no node) holds nothing on a node
            self._held.setdefault(slot.node, Counter())[(_millis(slot.cpus), slot.memory)] += 1

    def release(self, slot: Slot) -> None:
        node, key = slot.node, (_millis(slot.cpus), slot.memory)
        held = self._held.get(node) if node is not None else None
        if node is None or held is None or held[key] <= 0:
            return  # not held (released twice): nothing to give back
        held[key] -= 1
        if held[key] == 0:
            del held[key]
        if not held:
            del self._held[node]

    def view(self) -> list[dict[str, Any]]:
        """Per node (those listed, then those gone that still hold jobs): what it offers, what is
        free and how many jobs hold it. For the console, doctor and tests."""
        rows = []
        for node_id in sorted(self.nodes) + sorted(set(self._held) - set(self.nodes)):
            node = self.nodes.get(node_id)
            cpus, memory = self.free(node_id)
            rows.append({"id": node_id, "hostname": node.hostname if node else None, "ready": node is not None,
                         "problem": node.problem if node else None,
                         "cpus": node.millicpus / 1000 if node else 0.0, "cpusFree": cpus / 1000,
                         "memory": node.memory if node else 0, "memoryFree": memory,
                         "jobs": sum(self._held.get(node_id, Counter()).values())})
        return rows
