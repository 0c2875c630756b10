"""ocean.py's own compute flow against runnerd and the test chain, run with ocean-lib's Python
(tests/test_chain_oceanpy.py installs nothing: it runs this with the interpreter it is given).

Everything that touches runnerd or the chain is ocean.py's own code, called as its c2d flow guide
(READMEs/c2d-flow.md) does: ocean.assets.resolve, ocean.compute.get_c2d_environments,
ocean.assets.pay_for_compute_service (initializeCompute, then Datatoken.start_order with the
provider fee runnerd signed), ocean.compute.start (the DDO again, runnerd's fileinfo, the signed
start), ocean.compute.status and ocean.compute.result. The one thing that is not Ocean's stack is
the Aquarius: runnerd has its own catalog, so a stand-in on 127.0.0.1 serves ocean.py the
catalog's DDO (ocean.py's default Aquarius, barge's address, is never contacted).

Arguments: one JSON object on stdin. Output: one JSON object on stdout.
"""

import http.server
import json
import sys
import threading
import time

import inspect
import typing

import enforce_typing
from eth_account import Account


def _skip_any(enforce_types):
    """The client-side workaround ocean.py needs on Python >= 3.11: enforce-typing 1.0.0.post1
    calls isinstance(value, typing.Any), which raises TypeError since 3.11 (Any is no longer a
    _SpecialForm). Parameters annotated Any are left unchecked, as they were before 3.11; every
    other check stays."""

    def patched(wrapped):
        target = wrapped.__init__ if inspect.isclass(wrapped) else wrapped
        annotations = getattr(target, "__annotations__", {})
        for name in [n for n, hint in annotations.items() if hint is typing.Any]:
            del annotations[name]
        return enforce_types(wrapped)

    return patched


enforce_typing.enforce_types = _skip_any(enforce_typing.enforce_types)  # before ocean_lib imports it

from ocean_lib.example_config import get_config_dict  # noqa: E402
from ocean_lib.models.compute_input import ComputeInput  # noqa: E402
from ocean_lib.ocean.ocean import Ocean  # noqa: E402
from ocean_lib.structures.algorithm_metadata import AlgorithmMetadata  # noqa: E402


def aquarius_stand_in(ddo: dict) -> str:
    """Ocean() asks its Aquarius (METADATA_CACHE_URI) for `/` when it is made; its default is
    barge's address, which must never be contacted from here. This one, on 127.0.0.1, answers
    that and the one DDO."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # the stdlib's name for it
            body = json.dumps(ddo if self.path.endswith(ddo["id"]) else {"software": "Aquarius"}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return f"http://127.0.0.1:{server.server_address[1]}"


def main() -> None:
    args = json.loads(sys.stdin.read())
    config = get_config_dict(args["rpc"])
    config["PROVIDER_URL"] = args["provider"]
    config["METADATA_CACHE_URI"] = aquarius_stand_in(args["ddo"])  # before Ocean() contacts it
    ocean = Ocean(config)
    bob = Account.from_key(args["key"])
    ddo = ocean.assets.resolve(args["ddo"]["id"])
    service = ddo.services[0]

    envs = ocean.compute.get_c2d_environments(service.service_endpoint, ddo.chain_id)
    env = next(e for e in envs if e["id"] == args["env"])
    # a paid environment: the provider fee is pulled from bob's OCEAN, so allow it first
    ocean.OCEAN_token.approve(service.datatoken, 10**24, {"from": bob})
    algorithm = AlgorithmMetadata(args["algorithm"])
    valid_until = int(time.time()) + 600
    datasets, _ = ocean.assets.pay_for_compute_service(
        datasets=[ComputeInput(ddo, service)], algorithm_data=algorithm,
        compute_environment=env["id"], valid_until=valid_until,
        consume_market_order_fee_address=bob.address, tx_dict={"from": bob},
        consumer_address=env["consumerAddress"])
    tx = datasets[0].transfer_tx_id
    job_id = ocean.compute.start(consumer_wallet=bob, dataset=datasets[0], compute_environment=env["id"],
                                 algorithm_meta=algorithm)
    status = {}
    for _ in range(600):
        status = ocean.compute.status(ddo, service, job_id, bob)
        if status["status"] >= 70:
            break
        time.sleep(0.2)
    outputs = [r for r in status["results"] if r["type"] == "output"]
    result = ocean.compute.result(ddo, service, job_id, outputs[0]["index"], bob) if outputs else None
    print(json.dumps({"tx": tx if isinstance(tx, str) else tx.hex(), "env": env, "jobId": job_id,
                      "status": status["status"], "output": result.decode() if result else None}))


if __name__ == "__main__":
    main()
