"""Paid compute on a real chain (#16): ganache with Ocean's own contracts (tests/chain/ocean.py),
real orders placed with the provider fee runnerd quoted, and every refusal with Provider's code.

Skipped without the test chain (`npm ci --prefix tests/chain`), unless RUNNERD_REQUIRE_CHAIN=1
(.ci/run) makes that a failure. About 30 s: the chain starts in about a second, the paid jobs run
in Docker, every refusal is decided before a container exists.
"""

from __future__ import annotations

import concurrent.futures
import os
import secrets
import subprocess
import sys
import time
from typing import Any

import httpx
import pytest

from runnerd.client import ApiError, Client
from tests.chain import ocean as oc
from tests.helpers import dataset, raw, result_of, wait_done

pytestmark = pytest.mark.docker

if not oc.available():
    if oc.require_chain():
        raise RuntimeError("the test chain is missing: npm ci --prefix tests/chain")
    pytest.skip("no test chain (npm ci --prefix tests/chain)", allow_module_level=True)

from tests.chain.world import CODE, PRICE, World, on_chain  # noqa: E402 - after the skip above


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    w = World(tmp_path_factory.mktemp("chain"))
    yield w
    w.close()


def refused(world: World, tx: str, code: str, field: str, **kwargs: Any) -> dict[str, Any]:
    with pytest.raises(ApiError) as err:
        world.start(tx, **kwargs)
    assert err.value.status == 400, err.value.body
    assert (err.value.body["code"], err.value.body.get("field")) == (code, field), err.value.body
    return err.value.body


# -- the paid path -----------------------------------------------------------------------------


def test_runnerd_quotes_a_fee_the_contract_accepts_and_the_paid_job_runs(world):
    answer = world.initialize(world.did, seconds=600)
    assert answer.status_code == 200, answer.text
    entry = answer.json()["datasets"][0]
    fee = entry["providerFee"]
    assert entry["datatoken"] == world.dt
    assert fee["providerFeeAddress"] == world.node and fee["providerFeeToken"].lower() == world.ocean.ocean.lower()
    # priceMin × the seconds until validUntil / 60, in the token's 18 decimals (a second may pass)
    assert 0.99 * PRICE * 10 * oc.ETHER <= int(fee["providerFeeAmount"]) <= PRICE * 10 * oc.ETHER
    before = world.ocean.balance(world.ocean.ocean, world.node)
    # startOrder reverts unless the signature is the node key's over exactly these fields
    receipt = world.ocean.start_order("consumer", world.dt, fee, consumer=world.node)
    assert world.ocean.balance(world.ocean.ocean, world.node) > before  # the fee reached the node's address
    job = world.start(receipt["transactionHash"])
    assert job["agreementId"] == receipt["transactionHash"]
    done = wait_done(world.client(), job["jobId"])
    assert done["status"] == 70, done
    assert world.did.removeprefix("did:op:") in result_of(world.client(), done, "output", "out.txt").decode()


def test_an_order_is_never_usable_twice(world):
    tx = world.order()
    first = world.start(tx)
    refused(world, tx, "order_invalid", "dataset.serviceId")
    wait_done(world.client(), first["jobId"])
    world.client().delete(first["jobId"])
    refused(world, tx, "order_invalid", "dataset.serviceId")  # not even once its job is gone


def test_concurrent_starts_with_one_order_run_one_job(world):
    """The order names the stranger as consumer and the consumer pays: both may use it, and both
    start at once (different addresses, so no nonce decides), each passing the chain check while
    neither has spent it yet. The store's insert lets one through."""
    for _ in range(3):
        fee = world.initialize(world.did).json()["datasets"][0]["providerFee"]
        tx = world.ocean.start_order("consumer", world.dt, fee, consumer=oc.ADDRESSES["stranger"])["transactionHash"]
        clients = [world.client("consumer"), world.client("stranger")]
        for c in clients:
            c.next_nonce(), c.refresh_nonce()  # the nonce fetched before the race

        def start(c: Client, tx: str = tx) -> Any:
            try:
                return c.start(world.did, raw(CODE), "paid", transfer_tx=tx)
            except ApiError as exc:
                return exc

        with concurrent.futures.ThreadPoolExecutor(len(clients)) as pool:
            answers = list(pool.map(start, clients))
        jobs = [a for a in answers if isinstance(a, dict)]
        errors = [a for a in answers if isinstance(a, ApiError)]
        assert len(jobs) == 1, answers
        assert [(e.status, e.body["code"]) for e in errors] == [(400, "order_invalid")], [e.body for e in errors]
        wait_done(world.client(jobs[0]["owner"] == oc.ADDRESSES["stranger"] and "stranger" or "consumer"),
                  jobs[0]["jobId"])


def test_a_used_order_is_renewed_with_reuse_order(world):
    tx = world.order()
    job = world.start(tx)
    again = world.initialize(world.did, tx=tx)
    assert again.status_code == 200, again.text
    entry = again.json()["datasets"][0]
    assert entry["validOrder"] == tx and int(entry["providerFee"]["providerFeeAmount"]) > 0
    reuse = world.ocean.reuse_order("consumer", world.dt, entry["validOrder"], entry["providerFee"])
    # the reuse is itself an unused order now, paid for 600 s: good as it is for 300
    assert world.initialize(world.did, seconds=300, tx=reuse["transactionHash"]).json()["datasets"][0] == \
        {"validOrder": reuse["transactionHash"]}
    second = world.start(reuse["transactionHash"])
    for j in (job, second):
        assert wait_done(world.client(), j["jobId"])["status"] == 70


def test_an_unused_order_is_answered_as_valid_order(world):
    tx = world.order(seconds=900)
    entry = world.initialize(world.did, seconds=300, tx=tx).json()["datasets"][0]
    assert entry == {"validOrder": tx}


# -- refusals, with Provider's codes -----------------------------------------------------------


def test_a_missing_order_is_refused(world):
    refused(world, "0x" + secrets.token_hex(32), "order_invalid", "dataset.serviceId")
    refused(world, "not-a-transaction", "order_invalid", "dataset.serviceId")


def test_a_reverted_order_is_refused(world):
    fee = world.signed_fee(world.dt)
    fee["validUntil"] += 1  # no longer what the node signed: _checkProviderFee reverts
    receipt = world.ocean.start_order("consumer", world.dt, fee, consumer=world.node, check=False)
    assert int(receipt["status"], 16) == 0
    body = refused(world, receipt["transactionHash"], "order_invalid", "dataset.serviceId")
    assert "reverted" in body["error"]  # said as such (a reverted transaction also has no events)


def test_an_order_of_another_asset_is_refused(world):
    tx = world.order(did=world.did_b, datatoken=world.dt_b)
    refused(world, tx, "order_invalid", "dataset.serviceId")  # dataset A with dataset B's order
    world.start(tx, did=world.did_b)  # and B's order is good for B


def test_a_datatoken_not_deployed_by_the_assets_nft_is_refused(world):
    """A DDO naming dataset A's datatoken but dataset B's NFT: A's orders are real, but B's NFT
    never deployed that token, so they are not orders for this asset."""
    did = on_chain(world.chain.root, world.daemon.assets, world.nft_b, world.dt)
    tx = world.order(did=did, datatoken=world.dt)
    body = refused(world, tx, "order_invalid", "dataset.serviceId", did=did)
    assert "not deployed by its NFT" in body["error"]


def test_a_fee_paid_to_another_provider_is_refused(world):
    fee = world.signed_fee(world.dt, key=oc.KEYS["other_provider"], address=oc.ADDRESSES["other_provider"])
    receipt = world.ocean.start_order("consumer", world.dt, fee, consumer=world.node)
    refused(world, receipt["transactionHash"], "order_invalid", "dataset.serviceId")


def test_someone_elses_order_is_refused(world):
    tx = world.order()
    refused(world, tx, "order_invalid", "dataset.serviceId", role="stranger")
    world.start(tx)  # the refusal did not spend it


def test_an_expired_provider_fee_is_refused(world):
    """Quoted and mined half an hour ago (ganache's clock set back for that block), valid for 100 s:
    expired even with Provider's grace (the quote-to-block delay, 0 here, plus 90 s)."""
    then = int(time.time()) - 1800
    fee = world.signed_fee(world.dt, valid_until=then + 100, stamp=then, amount=10 * oc.ETHER)
    world.chain.rpc("evm_setTime", [then * 1000])
    try:
        receipt = world.ocean.start_order("consumer", world.dt, fee, consumer=world.node)
    finally:
        world.chain.rpc("evm_setTime", [int(time.time() * 1000)])
        world.chain.rpc("evm_mine", [])
    assert world.chain.block_time() > then + 1700  # the clock is back for the orders that follow
    refused(world, receipt["transactionHash"], "order_invalid", "dataset.serviceId")


def test_an_order_older_than_the_service_timeout_is_refused(world):
    tx = world.order(did=world.did_t, datatoken=world.dt_t)
    time.sleep(3)  # the service's timeout is 2 s
    refused(world, tx, "order_invalid", "dataset.serviceId", did=world.did_t)


def test_an_underpaid_fee_is_refused_with_fees_not_paid(world):
    fee = world.signed_fee(world.dt, amount=1)  # signed by the node, so the contract takes it
    receipt = world.ocean.start_order("consumer", world.dt, fee, consumer=world.node)
    refused(world, receipt["transactionHash"], "fees_not_paid", "order")


def test_an_order_for_another_environment_is_refused(world):
    tx = world.order(env="free")  # a fee of 0 for the free environment
    refused(world, tx, "order_invalid", "dataset.serviceId")  # is no fee for the paid one
    world.start(tx, env="free")


def test_a_paid_environment_needs_an_order(world):
    local = dataset(world.daemon.assets)  # no datatoken: nothing could carry the fee
    with pytest.raises(ApiError) as err:
        world.client().start(local, raw(CODE), "paid")
    assert (err.value.body["code"], err.value.body["field"]) == ("fees_not_paid", "order")
    job = world.client().start(local, raw(CODE), "free")  # a free environment runs as before
    assert wait_done(world.client(), job["jobId"])["status"] == 70


# -- initializeCompute's own errors --------------------------------------------------------------


def test_initialize_errors_are_providers(world):
    def post(**change: Any) -> httpx.Response:
        body = {"datasets": [{"documentId": world.did, "serviceId": "compute"}], "algorithm": raw(CODE),
                "compute": {"env": "paid", "validUntil": int(time.time()) + 60}, "consumerAddress": world.node}
        body.update(change)
        return httpx.post(f"{world.daemon.url}/api/services/initializeCompute", json=body, timeout=30)

    answer = post(compute={"env": "paid", "validUntil": int(time.time()) - 5})
    assert answer.status_code == 400 and answer.json()["error"] == "The validUntil value is not correct."
    answer = post(compute={"env": "nope", "validUntil": int(time.time()) + 60})
    assert answer.status_code == 400 and answer.json()["error"] == "Compute environment does not exist"
    answer = post(datasets=[])
    assert answer.status_code == 400 and answer.json()["field"] == "datasets"
    answer = post(datasets=[{"documentId": "did:op:" + "0" * 64, "serviceId": "compute"}])
    assert answer.status_code == 400 and answer.json()["code"] == "did_not_found"


def test_fileinfo_answers_for_a_registered_asset_without_its_path(world):
    """What ocean.py's compute.start asks before each start (tests/test_chain_oceanpy.py)."""
    answer = httpx.post(f"{world.daemon.url}/api/services/fileinfo", json={"did": world.did, "serviceId": "compute"})
    assert answer.status_code == 200, answer.text
    assert answer.json() == [{"index": 0, "type": "file", "valid": True, "contentLength": "8"}]
    assert str(world.daemon.assets) not in answer.text


def test_doctor_checks_the_chain(world, tmp_path):
    from runnerd import doctor
    from runnerd.chain.gate import probe
    from runnerd.config import Chain

    good = Chain(oc.CHAIN_ID, world.chain.url, world.ocean.ocean, 1, 5)
    assert probe(good) == ""
    assert "not 1" in probe(Chain(1, world.chain.url, world.ocean.ocean, 1, 5))  # another chain's node
    assert "decimals()" in probe(Chain(oc.CHAIN_ID, world.chain.url, world.dt[:-4] + "0000", 1, 5))  # no token there
    assert doctor.exit_status([doctor.Result("chain", doctor.OK, "")]) == 0


def test_a_published_algorithm_with_a_datatoken_is_paid_for_with_its_own_order(world):
    """The algorithm's order is checked like an input's, with Provider's code for it; the fee is
    charged on the dataset's order only (the algorithm's quote is 0)."""
    code = world.chain.root / "algo.py"
    code.write_text(CODE)
    code.chmod(0o644)
    nft, dt = world.ocean.publish("algo")
    proc = subprocess.run([sys.executable, "-m", "runnerd", "assets", "add", str(code), "--type", "algorithm",
                           "--assets", str(world.daemon.assets), "--image", "runnerd-test-python", "--tag", "latest",
                           "--entrypoint", "python3 $ALGO", "--nft-address", nft, "--datatoken", dt,
                           "--chain-id", str(oc.CHAIN_ID)], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "RUNNERD_CONFIG": "/nonexistent"})
    assert proc.returncode == 0, proc.stderr
    algo = {"documentId": proc.stdout.strip(), "serviceId": "access"}
    answer = httpx.post(f"{world.daemon.url}/api/services/initializeCompute", timeout=30, json={
        "datasets": [{"documentId": world.did, "serviceId": "compute"}], "algorithm": algo,
        "compute": {"env": "paid", "validUntil": int(time.time()) + 600}, "consumerAddress": oc.ADDRESSES["consumer"]})
    assert answer.status_code == 200, answer.text
    quote = answer.json()
    assert int(quote["datasets"][0]["providerFee"]["providerFeeAmount"]) > 0
    assert quote["algorithm"]["datatoken"] == dt and quote["algorithm"]["providerFee"]["providerFeeAmount"] == "0"
    data_tx = world.ocean.start_order("consumer", world.dt, quote["datasets"][0]["providerFee"],
                                      consumer=world.node)["transactionHash"]
    algo_tx = world.ocean.start_order("consumer", dt, quote["algorithm"]["providerFee"],
                                      consumer=world.node)["transactionHash"]
    client = world.client()
    with pytest.raises(ApiError) as err:  # the algorithm's order is required
        client.start(world.did, algo, "paid", transfer_tx=data_tx)
    assert (err.value.body["code"], err.value.body["field"]) == ("in_use_or_not_on_chain", "algorithm")
    job = client.start(world.did, {**algo, "transferTxId": algo_tx}, "paid", transfer_tx=data_tx)
    assert wait_done(client, job["jobId"])["status"] == 70
    second = world.order()
    with pytest.raises(ApiError) as err:  # and it paid for that job only
        client.start(world.did, {**algo, "transferTxId": algo_tx}, "paid", transfer_tx=second)
    assert (err.value.body["code"], err.value.body["field"]) == ("in_use_or_not_on_chain", "algorithm")


def test_an_order_counts_once_it_has_the_confirmations_asked_for(world):
    from runnerd.chain.orders import OrderRefused, OrderTarget, verify_order
    from runnerd.chain.rpc import Rpc

    tx = world.order()
    target = OrderTarget(world.nft, world.dt, "compute", 0, 0)
    rpc = Rpc(world.chain.url, 5)
    with pytest.raises(OrderRefused, match="1 of the 3 confirmations"):
        verify_order(rpc, tx, target, oc.ADDRESSES["consumer"], world.node, "paid", confirmations=3)
    world.chain.rpc("evm_mine", [])
    world.chain.rpc("evm_mine", [])
    assert verify_order(rpc, tx, target, oc.ADDRESSES["consumer"], world.node, "paid", confirmations=3).tx == tx
