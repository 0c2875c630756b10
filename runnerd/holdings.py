"""What a running job holds, recorded in its row so that a restarted runnerd re-adopts it: the
`Slot` the scheduler gave it and the `ResolvedImages` the runner resolved. No I/O; domain.py
re-exports both (they are part of the vocabulary, kept here so that it stays one readable file)."""

from __future__ import annotations

import json
from dataclasses import dataclass


@dataclass(frozen=True)
class Slot:
    """The resources the scheduler gave a running job (recorded, so a restart re-adopts them).
    On a cluster (#17) `node` is where all three of its steps run, and `cpus`/`memory` what it
    counts against that node (engine/node_placer.py): the amounts at admission, so a job re-adopted
    after the configuration changed is still accounted as it was admitted."""

    cpuset: str | None = None  # e.g. "0,1" when whole cores are pinned
    gpus: tuple[str, ...] = ()
    node: str | None = None  # the cluster node id the whole job runs on; None: this host
    cpus: float = 0.0  # CPUs it counts against `node`
    memory: int = 0  # bytes of `node`'s RAM it counts against it (its RAM, a tmpfs disk, a helper step)

    def to_json(self) -> str:
        raw: dict[str, object] = {"cpuset": self.cpuset, "gpus": list(self.gpus)}
        if self.node is not None:  # a local job's row keeps the form older versions read
            raw.update(node=self.node, cpus=self.cpus, memory=self.memory)
        return json.dumps(raw)

    @staticmethod
    def from_json(text: str) -> Slot:
        """Rows of every version load: a key a version did not write is its default."""
        raw = json.loads(text)
        node = raw.get("node")
        return Slot(raw.get("cpuset"), tuple(raw.get("gpus") or ()), str(node) if node else None,
                    float(raw.get("cpus") or 0), int(raw.get("memory") or 0))


@dataclass(frozen=True)
class ResolvedImages:
    """The algorithm's image as resolved (pulled, pinned to what the host has) and the VOLUMEs it
    and the helper image declare (each gets a tmpfs: containers/spec.py `volume_masks`)."""

    algorithm: str  # the image reference the algorithm's container is created from
    volumes: tuple[str, ...] = ()
    helper_volumes: tuple[str, ...] = ()

    def to_json(self) -> str:
        return json.dumps({"image": self.algorithm, "volumes": list(self.volumes),
                           "helperVolumes": list(self.helper_volumes)})

    @staticmethod
    def from_json(text: str) -> ResolvedImages | None:
        raw = json.loads(text)
        if not raw.get("image"):
            return None
        return ResolvedImages(raw["image"], tuple(raw.get("volumes") or ()), tuple(raw.get("helperVolumes") or ()))
