"""Chain mode with its node down (#16): a start that needs an order, and initializeCompute, answer
503 chain_unavailable in bounded time; no job is queued (never a free job) and the daemon goes on
serving everything else. No test chain needed: the RPC URL is a port nothing listens on."""

from __future__ import annotations

import json
import time

import httpx
import pytest

from runnerd.client import ApiError
from tests.helpers import dataset, free_port, raw, wait_done, write_ddo

pytestmark = pytest.mark.docker

CODE = "open('/data/outputs/x','w').write('ok')\n"


def test_an_rpc_outage_is_a_503_and_never_a_free_job(make_daemon):
    images = ["runnerd-*", "runnerd-test-python"]
    daemon = make_daemon(startsPerMinutePerOwner=0, chains=[
        {"chainId": 8996, "rpcUrl": f"http://127.0.0.1:{free_port()}", "feeToken": "0x" + "ab" * 20,
         "rpcTimeout": 0.5}], environments=[
        {"id": "paid", "priceMin": 1, "ramGB": 0.5, "diskGB": 0.1, "rawAlgorithmImages": images},
        {"id": "free", "ramGB": 0.5, "diskGB": 0.1, "rawAlgorithmImages": images}])
    did = dataset(daemon.assets)
    ddo_path = daemon.assets / f"{did.removeprefix('did:op:')}.json"
    ddo = json.loads(ddo_path.read_text())
    ddo.update(nftAddress="0x" + "01" * 20, chainId=8996)
    ddo["services"][0].update(datatokenAddress="0x" + "02" * 20)
    write_ddo(daemon.assets, ddo)
    client = daemon.client()
    for env in ("paid", "free"):  # an asset with a datatoken needs its order checked in any environment
        started = time.monotonic()
        with pytest.raises(ApiError) as err:
            client.start(did, raw(CODE), env)
        assert err.value.status == 503 and err.value.body["code"] == "chain_unavailable", err.value.body
        assert time.monotonic() - started < 15
    assert daemon.job_ids() == []  # nothing was queued
    answer = httpx.post(f"{daemon.url}/api/services/initializeCompute", timeout=30, json={
        "datasets": [{"documentId": did, "serviceId": "compute"}], "algorithm": raw(CODE),
        "compute": {"env": "paid", "validUntil": int(time.time()) + 600}, "consumerAddress": client.address})
    assert answer.status_code == 503 and answer.json()["code"] == "chain_unavailable", answer.text
    assert "127.0.0.1" not in answer.text  # the operator's RPC URL stays in the daemon's log
    local = dataset(daemon.assets)  # the rest of the node is unaffected
    assert wait_done(client, client.start(local, raw(CODE), "free")["jobId"])["status"] == 70
    assert httpx.get(f"{daemon.url}/health").status_code == 200
