"""The egress guard (#15): a data owner's rule, in the dataset's compute service, for what may
leave through a job's outputs. Pure: the DDO option in, the filter step's `guard` plan out.

    "compute": {..., "egressGuard": {"noVerbatimCopies": true, "maxOutputRatio": 0.01}}

noVerbatimCopies  no output file may be byte for byte one of this dataset's files (whole-file sha256)
maxOutputRatio    all outputs together at most this fraction of this dataset's size in bytes

docs/egress-guard.md says what this stops and what it does not.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from runnerd.provenance import Digest

OPTION = "egressGuard"
_KEYS = {"noVerbatimCopies", "maxOutputRatio"}


@dataclass(frozen=True)
class EgressGuard:
    no_verbatim_copies: bool = False
    max_output_ratio: float | None = None

    @property
    def active(self) -> bool:
        return self.no_verbatim_copies or self.max_output_ratio is not None

    def public(self) -> dict[str, Any]:
        """The form kept in the job's plan (and, with its verdict, in the attestation: the ratio as
        a string, since canonical JSON carries no floats)."""
        return {"noVerbatimCopies": self.no_verbatim_copies,
                "maxOutputRatio": None if self.max_output_ratio is None else repr(self.max_output_ratio)}

    @classmethod
    def from_public(cls, data: Any) -> "EgressGuard | None":
        if not isinstance(data, dict):
            return None
        ratio = data.get("maxOutputRatio")
        return cls(bool(data.get("noVerbatimCopies")), None if ratio is None else float(ratio))


def parse(compute: Any) -> EgressGuard | None:
    """The guard of a dataset's compute service, None if it sets none; ValueError naming the key
    when it is malformed (a guard that does not parse must refuse the job, never run unguarded)."""
    if not isinstance(compute, dict) or compute.get(OPTION) is None:
        return None
    raw = compute[OPTION]
    if not isinstance(raw, dict):
        raise ValueError(f"{OPTION} must be an object")
    unknown = sorted(set(raw) - _KEYS)
    if unknown:
        raise ValueError(f"{OPTION}.{unknown[0]} is not a known option (known: {', '.join(sorted(_KEYS))})")
    verbatim = raw.get("noVerbatimCopies", False)
    if not isinstance(verbatim, bool):
        raise ValueError(f"{OPTION}.noVerbatimCopies must be true or false")
    ratio = raw.get("maxOutputRatio")
    if ratio is not None:
        if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or not math.isfinite(ratio) or ratio < 0:
            raise ValueError(f"{OPTION}.maxOutputRatio must be a number >= 0")
        ratio = float(ratio)
    guard = EgressGuard(verbatim, ratio)
    return guard if guard.active else None


def merge(guards: list[EgressGuard | None]) -> EgressGuard | None:
    """One input under several compute services' guards (an access-service input, each compute
    service's policy applying): every rule of each, the strictest budget."""
    present = [g for g in guards if g is not None and g.active]
    if not present:
        return None
    ratios = [g.max_output_ratio for g in present if g.max_output_ratio is not None]
    return EgressGuard(any(g.no_verbatim_copies for g in present), min(ratios) if ratios else None)


@dataclass(frozen=True)
class GuardedInput:
    """One input dataset of a job, its guard and its files' digests (in file order)."""

    did: str
    guard: EgressGuard | None
    files: tuple[Digest | None, ...]


class GuardUnavailable(Exception):
    """A guarded dataset's file could not be hashed: the guard cannot be applied, so the job must
    not publish outputs (it fails closed)."""


def filter_guard(inputs: list[GuardedInput]) -> dict[str, Any] | None:
    """The filter plan's `guard`: the sha256 of every file of a noVerbatimCopies dataset (labelled
    as the consumer sees it) and each maxOutputRatio dataset's byte budget; None when no input
    of the job is guarded."""
    copies: dict[str, str] = {}
    budgets = []
    for item in inputs:
        if item.guard is None or not item.guard.active:
            continue
        if any(d is None for d in item.files):
            missing = next(i for i, d in enumerate(item.files) if d is None)
            raise GuardUnavailable(f"dataset {item.did} file {missing} could not be hashed for its egress guard")
        if item.guard.no_verbatim_copies:
            for index, d in enumerate(item.files):
                assert d is not None
                copies.setdefault(d.sha256, f"dataset {item.did} file {index}")
        if item.guard.max_output_ratio is not None:
            size = sum(d.size for d in item.files if d is not None)
            budgets.append({"label": f"dataset {item.did}", "maxBytes": math.floor(item.guard.max_output_ratio * size)})
    if not copies and not budgets:
        return None
    return {"inputs": copies, "budgets": budgets}
