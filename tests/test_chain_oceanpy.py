"""ocean.py's own compute flow (tests/chain/oceanpy_flow.py) pays for and runs a job on runnerd,
against the test chain (#16, the stretch goal). ocean-lib 3.1.2 pins web3 6 and older eth-*
packages than runnerd's, so it lives in its own virtualenv: tests/chain/oceanpy (.ci/run makes
it), or the interpreter RUNNERD_OCEANPY_PYTHON names. Skipped without it, unless
RUNNERD_REQUIRE_OCEANPY=1. About 20 s."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from runnerd.client import ApiError
from runnerd.signing import to_checksum_address
from tests.chain import ocean as oc

pytestmark = pytest.mark.docker

HERE = Path(__file__).resolve().parent / "chain"
PYTHON = Path(os.environ.get("RUNNERD_OCEANPY_PYTHON") or HERE / "oceanpy" / "bin" / "python")

if not (oc.available() and PYTHON.exists()):
    if os.environ.get("RUNNERD_REQUIRE_OCEANPY") == "1":
        raise RuntimeError(f"ocean.py is missing: no {PYTHON} (see .ci/run) or no test chain")
    pytest.skip("no ocean.py virtualenv (tests/chain/oceanpy) or no test chain", allow_module_level=True)

from tests.chain.world import CODE, World  # noqa: E402 - after the skip above


def _ddo_for_oceanpy(world: World, did: str) -> dict:
    """The catalog's DDO as an Aquarius would serve it to ocean.py: the service names its
    provider (runnerd), addresses are checksummed (web3 6 refuses others), and the files are what
    Ocean keeps there, a blob encrypted for the provider, which ocean.py never reads."""
    ddo = json.loads((world.daemon.assets / f"{did.removeprefix('did:op:')}.json").read_text())
    ddo["nftAddress"] = to_checksum_address(ddo["nftAddress"])
    # what an Aquarius adds from the chain: the NFT's state (0: active) and address
    ddo["nft"] = {**ddo.get("nft", {}), "address": ddo["nftAddress"], "state": 0}
    for service in ddo["services"]:
        service.update(serviceEndpoint=world.daemon.url, files="0x",
                       datatokenAddress=to_checksum_address(service["datatokenAddress"]))
    return ddo


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    w = World(tmp_path_factory.mktemp("oceanpy"))
    yield w
    w.close()


def test_oceanpy_pays_runnerds_fee_and_gets_the_result(world, tmp_path):
    addresses = tmp_path / "address.json"
    addresses.write_text(json.dumps({"development": {
        "chainId": oc.CHAIN_ID, "Ocean": world.ocean.ocean, "ERC721Factory": world.ocean.factory,
        "Router": world.ocean.router}}))
    image = "runnerd-test-python"
    args = {"rpc": world.chain.url, "provider": world.daemon.url, "key": oc.KEYS["consumer"], "env": "paid",
            "ddo": _ddo_for_oceanpy(world, world.did),
            "algorithm": {"rawcode": CODE, "language": "python",
                          "container": {"entrypoint": "python3 $ALGO", "image": image, "tag": "latest",
                                        "checksum": ""}}}
    before = world.ocean.balance(world.ocean.ocean, world.node)
    proc = subprocess.run([str(PYTHON), str(HERE / "oceanpy_flow.py")], input=json.dumps(args), text=True,
                          capture_output=True, timeout=240,
                          env={**os.environ, "ADDRESS_FILE": str(addresses), "PYTHONPATH": ""})
    assert proc.returncode == 0, proc.stderr[-4000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["env"]["priceMin"] > 0 and out["status"] == 70, out
    assert world.did.removeprefix("did:op:") in out["output"]
    assert world.ocean.balance(world.ocean.ocean, world.node) > before  # ocean.py paid the fee runnerd quoted
    with pytest.raises(ApiError) as err:  # and its order paid for that one job only
        world.start(out["tx"])
    assert err.value.body["code"] == "order_invalid"
