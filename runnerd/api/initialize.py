"""POST /api/services/initializeCompute (Provider v2): what each input and the algorithm must be
ordered with before a start, i.e. a providerFee signed by the node key, or a validOrder to reuse.

Unsigned, as in Provider: it only quotes and signs a fee payable to this node, which nobody but
the payer can spend. The fee is charged on one part only (the first whose order can be reused,
else the first with a datatoken); the others get a fee of 0, as in Provider.
"""

from __future__ import annotations

import time
from typing import Any

from aiohttp import web

from runnerd import signing
from runnerd.api.keys import ENGINE, SETTINGS, STORE
from runnerd.api.params import read_params
from runnerd.chain.gate import Ordered, ordered_part
from runnerd.errors import BadRequest, PolicyRejected
from runnerd.store import orders as spent_orders

_MAX_VALID_UNTIL = 2**40  # a unix time far beyond any use; also keeps the signed uint256 sane


def _required(value: Any, field: str) -> Any:
    if value is None or value == "" or value == []:
        raise BadRequest(f"The {field} field is required.", "missing", field)
    return value


def _valid_until(value: Any) -> int:
    _required(value, "compute.validUntil")
    text = str(value) if isinstance(value, (int, str)) and not isinstance(value, bool) else ""
    if not text.isdigit():
        raise BadRequest("The compute.validUntil must be an integer.", "invalid", "compute.validUntil")
    number = int(text)
    if number <= time.time() or number > _MAX_VALID_UNTIL:
        raise BadRequest("The validUntil value is not correct.", "invalid", "compute.validUntil")
    return number


async def initialize_compute(request: web.Request) -> web.Response:
    params = await read_params(request)
    settings, engine = request.app[SETTINGS], request.app[ENGINE]
    datasets = _required(params.get("datasets"), "datasets")
    if not isinstance(datasets, list) or not all(isinstance(d, dict) for d in datasets):
        raise BadRequest("datasets must be a list of {documentId, serviceId, transferTxId?}", "invalid", "datasets")
    algorithm = params.get("algorithm")
    if not isinstance(algorithm, dict) or not (algorithm.get("documentId") or algorithm.get("meta")):
        raise BadRequest("The algorithm.documentId field is required when algorithm.meta is not present.",
                         "missing", "algorithm.documentId")
    compute = params.get("compute")
    compute = compute if isinstance(compute, dict) else {}
    env_id = _required(compute.get("env"), "compute.env")
    valid_until = _valid_until(compute.get("validUntil"))
    consumer = _required(params.get("consumerAddress"), "consumerAddress")
    if not signing.is_address(consumer):
        raise BadRequest("consumerAddress must be a 0x-prefixed 40-hex-digit address", "invalid", "consumerAddress")
    env = settings.environment(str(env_id))
    if env is None:
        raise BadRequest("Compute environment does not exist", "invalid_environment", "compute.env")

    # The would-be start through intake: the same catalog, policy and codes a start will meet.
    start = {"environment": env.id, "algorithm": algorithm,
             "dataset": {**datasets[0], "transferTxId": datasets[0].get("transferTxId") or "0x"},
             "additionalDatasets": datasets[1:]}
    engine.intake.build(start, consumer)
    items: list[tuple[str, dict[str, Any]]] = [("dataset" if i == 0 else f"datasets[{i}]", d)
                                               for i, d in enumerate(datasets)]
    if algorithm.get("documentId") and not algorithm.get("meta"):
        items.append(("algorithm", algorithm))
    parts: list[Ordered | None] = []
    for res, item in items:
        asset = engine.catalog.get(str(item.get("documentId", "")))
        parts.append(None if asset is None else ordered_part(res, asset, str(item.get("serviceId", "")),
                                                             str(item.get("transferTxId") or "")))
    if env.priceMin > 0 and not any(parts):
        raise PolicyRejected(f"environment {env.id!r} costs {env.priceMin:g} per minute, but no input nor the "
                             "algorithm has a datatoken to order it with", "fees_not_paid", "order")

    store, gate = request.app[STORE], engine.chain
    reusable: dict[int, str] = {}  # part index -> the startOrder a renewal (reuseOrder) must name
    fresh: set[int] = set()  # parts whose order is still good until validUntil
    for i, part in enumerate(parts):
        if part is None or not part.tx:
            continue
        try:
            order = await gate.verify(part, consumer, env if part.res != "algorithm" else None, allow_expired=True)
        except PolicyRejected:
            continue  # no usable order: a new one is needed (Provider answers the same way)
        reusable[i] = order.start_tx
        if order.valid_until >= valid_until and not spent_orders.used(store.db, part.key):
            fresh.add(i)
    charged = next((i for i in range(len(parts)) if i in fresh), None)
    if charged is None:
        charged = next((i for i, p in enumerate(parts) if p is not None), -1)
    out: dict[str, Any] = {"datasets": []}
    for i, ((res, _item), part) in enumerate(zip(items, parts)):
        if part is None:
            entry: dict[str, Any] = {}  # a local asset: nothing to order
        elif i in fresh:  # the transaction itself (a reuse stands for its own, newer fee)
            entry = {"validOrder": str(part.tx).lower()}
        else:
            entry = {"datatoken": part.target.datatoken,
                     "providerFee": await gate.quote(part, env, valid_until, charge=i == charged)}
            if i in reusable:
                entry["validOrder"] = reusable[i]
        if res == "algorithm":
            out["algorithm"] = entry
        else:
            out["datasets"].append(entry)
    return web.json_response(out)
