"""An ocean-node start body (freeCompute / compute) → the start request runnerd's engine takes.

Only the shape changes here; the engine's intake applies the same catalog, policy and limits to
both dialects. What this dialect adds per job (resources, maxJobDuration, queueMaxWaitTime,
additionalViewers, metadata) is checked here and handed to the engine typed (domain.JobTerms). What runnerd does
not offer is refused by name, never dropped: remote output storage (`output`, `outputBucketId`),
a policy server, registry credentials, container environment variables, and raw file inputs.
"""

from __future__ import annotations

import json
import math
import secrets
from dataclasses import dataclass
from typing import Any

from runnerd import signing
from runnerd.catalog import Catalog
from runnerd.config import Environment, Settings
from runnerd.domain import JobTerms
from runnerd.engine.intake import MAX_INPUTS
from runnerd.errors import BadRequest

MAX_VIEWERS = 16
MAX_METADATA_BYTES = 16 * 1024
MAX_METADATA_DEPTH = 32  # the store copies terms recursively (dataclasses.asdict): 500 levels overflowed it
_REFUSED = {
    "output": "remote output storage (`output`) is not offered by this node; results stay here for computeResult",
    "outputBucketId": "persistent storage buckets (`outputBucketId`) are not offered by this node",
    "policyServer": "a policy server (`policyServer`) is not used by this node",
    "encryptedDockerRegistryAuth": "registry credentials are not accepted: this node runs only images its "
                                   "operator allows",
}


@dataclass(frozen=True)
class Resource:
    """One resource of an environment in ocean-node's terms (cpu, ram GB, disk GB, gpu)."""

    id: str
    total: float
    min: float
    max: float


def resources_of(env: Environment) -> list[Resource]:
    """The environment's resources in ocean-node's terms. A job may ask for fewer CPUs than the
    environment's nCPU (down to one, or nCPU if that is less): it is given that many pinned cores,
    and the rest stay free for other jobs. Memory, disk and GPUs are the slot's, fixed (min = max).
    `total` is what all of the environment's slots hold."""
    amounts = [("cpu", min(1.0, env.nCPU), env.nCPU), ("ram", env.ramGB, env.ramGB),
               ("disk", env.diskGB, env.diskGB)]
    if env.nGPU:
        amounts.append(("gpu", env.nGPU, env.nGPU))
    return [Resource(rid, high * env.maxJobs, low, high) for rid, low, high in amounts]


def is_free(env: Environment) -> bool:
    return env.priceMin == 0


def environment(settings: Settings, params: dict[str, Any]) -> Environment:
    env_id = params.get("environment")
    env = settings.environment(env_id) if isinstance(env_id, str) else None
    if env is None:
        known = ", ".join(e.id for e in settings.environments)
        raise BadRequest(f"environment {env_id!r} does not exist; known: {known}", "invalid_environment",
                         "environment")
    return env


def _resources(value: Any, env: Environment) -> list[dict[str, Any]]:
    """ocean-node's checkAndFillMissingResources, but a missing amount is the environment's slot
    (ocean-node: the minimum), so a client that asks for nothing gets what the root dialect gives;
    a lower one is raised to the minimum, one above the maximum is refused with ocean-node's words."""
    if value in (None, ""):
        value = []
    if not isinstance(value, list) or not all(isinstance(r, dict) for r in value) or len(value) > 16:
        raise BadRequest("resources must be a list of {id, amount}", "invalid", "resources")
    known = {r.id: r for r in resources_of(env)}
    asked: dict[str, float] = {}
    for item in value:
        rid, amount = item.get("id"), item.get("amount")
        if not isinstance(rid, str) or rid not in known:
            raise BadRequest(f"environment {env.id} has no resource {rid!r:.60} (it has {', '.join(known)})",
                             "invalid", "resources")
        if not _finite(amount) or amount < 0:
            raise BadRequest(f"resources: the amount of {rid} must be a number >= 0", "invalid", "resources")
        asked[rid] = float(amount)
    out = []
    for rid, r in known.items():
        amount = max(asked.get(rid, r.max), r.min)
        if amount > r.max:
            raise BadRequest(f"Not enough {rid} resources. Requested {asked[rid]:g}, but max is {r.max:g}",
                             "resources_exceeded", "resources")
        out.append({"id": rid, "amount": amount})
    return out


def _finite(value: Any) -> bool:
    """A JSON number that is one: Python's parser also takes NaN, Infinity and 1e999 (inf), which
    would be stored with the job and make every later answer about it invalid JSON."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _seconds(params: dict[str, Any], name: str) -> float | None:
    value = params.get(name)
    if value in (None, "", 0):
        return None
    if not _finite(value) or not value > 0:
        raise BadRequest(f"{name} must be a number of seconds > 0", "invalid", name)
    return float(value)


def terms(params: dict[str, Any], env: Environment) -> JobTerms:
    """What the start asks beyond its plan; the engine bounds the durations by the environment's."""
    for name, why in _REFUSED.items():
        if params.get(name) not in (None, "", [], {}):
            raise BadRequest(why, "not_offered", name)
    duration = _seconds(params, "maxJobDuration")  # ocean-node caps it at the environment's, as the engine does
    viewers = params.get("additionalViewers") or []
    if not isinstance(viewers, list) or len(viewers) > MAX_VIEWERS or not all(signing.is_address(v) for v in viewers):
        raise BadRequest(f"additionalViewers must be a list of at most {MAX_VIEWERS} addresses", "invalid",
                         "additionalViewers")
    metadata = params.get("metadata")
    if metadata is not None and (not isinstance(metadata, dict) or _json_size(metadata) > MAX_METADATA_BYTES
                                 or _depth(metadata) > MAX_METADATA_DEPTH):
        raise BadRequest(f"metadata must be an object of at most {MAX_METADATA_BYTES // 1024} KiB of JSON (finite "
                         f"numbers only), nested at most {MAX_METADATA_DEPTH} deep", "invalid", "metadata")
    granted = tuple((r["id"], r["amount"]) for r in _resources(params.get("resources"), env))
    return JobTerms(max_duration=duration, queue_max_wait=_seconds(params, "queueMaxWaitTime"),
                    viewers=tuple(dict.fromkeys(v.lower() for v in viewers)), metadata=metadata, resources=granted)


def _json_size(value: Any) -> float:
    """Its size as strict JSON; infinite when it holds NaN or an infinity (not JSON: see _finite)."""
    try:
        return len(json.dumps(value, allow_nan=False))
    except (ValueError, RecursionError):
        return math.inf


def _depth(value: Any) -> int:
    """How deeply objects and lists nest in `value` (walked without recursion; stops past the bound)."""
    deepest, stack = 0, [(value, 1)]
    while stack and deepest <= MAX_METADATA_DEPTH:
        item, depth = stack.pop()
        if isinstance(item, (dict, list)):
            deepest = max(deepest, depth)
            stack.extend((child, depth + 1) for child in (item.values() if isinstance(item, dict) else item))
    return deepest


def _service_id(catalog: Catalog, item: dict[str, Any], kinds: tuple[str, ...]) -> dict[str, Any]:
    """ocean-node makes serviceId optional: with none, the asset's only service of `kinds` is meant."""
    if item.get("serviceId") or not isinstance(item.get("documentId"), str):
        return item
    asset = catalog.get(item["documentId"].lower())
    services = [s for s in (asset.ddo.get("services", []) if asset else []) if s.get("type") in kinds]
    return {**item, "serviceId": services[0]["id"]} if len(services) == 1 else item


def start_request(params: dict[str, Any], env: Environment, catalog: Catalog) -> dict[str, Any]:
    """The engine's start request: datasets[0] is the job's dataset, the rest additional inputs; a
    free job has no order, so its agreementId is made up (random, like a transfer transaction's)."""
    datasets = params.get("datasets")
    if datasets in (None, []) and isinstance(params.get("dataset"), dict):
        datasets = [params["dataset"]]
    if not isinstance(datasets, list) or not datasets or not all(isinstance(d, dict) for d in datasets):
        raise BadRequest("datasets must be a non-empty list of {documentId, serviceId}", "missing", "datasets")
    if len(datasets) > MAX_INPUTS:  # before any catalog lookup: each one scans the assets folder
        raise BadRequest(f"at most {MAX_INPUTS} datasets per job", "invalid", "datasets")
    if isinstance(params.get("dataset"), dict) and params["dataset"].get("documentId") != datasets[0].get(
            "documentId"):
        raise BadRequest("dataset must be datasets[0] (ocean.js sends both)", "invalid", "dataset")
    for i, item in enumerate(datasets):
        if item.get("fileObject") and not item.get("documentId"):
            raise BadRequest("raw file inputs (fileObject) are not offered: this node computes on the datasets "
                             "of its catalog (documentId)", "not_offered", f"datasets[{i}].fileObject")
    algorithm = params.get("algorithm")
    if not isinstance(algorithm, dict):
        raise BadRequest("algorithm must be an object with documentId or meta", "missing_meta_documentId",
                         "algorithm")
    if algorithm.get("envs"):
        raise BadRequest("algorithm.envs (container environment variables) is not offered by this node; pass "
                         "values in algocustomdata", "not_offered", "algorithm.envs")
    if algorithm.get("fileObject") and not algorithm.get("documentId") and not algorithm.get("meta"):
        raise BadRequest("an algorithm fileObject is not offered: use meta (rawcode or url) or a documentId",
                         "not_offered", "algorithm.fileObject")
    first = _service_id(catalog, datasets[0], ("compute",))
    first = {**first, "transferTxId": first.get("transferTxId") or "0x" + secrets.token_hex(32)}
    if not algorithm.get("meta"):
        algorithm = _service_id(catalog, algorithm, ("access", "compute"))
    return {"environment": env.id, "dataset": first,
            "additionalDatasets": [_service_id(catalog, d, ("compute", "access")) for d in datasets[1:]],
            "algorithm": algorithm}
