"""A real job end to end: real daemon process, real HTTP, real SQLite, real Docker (issue #2)."""

from __future__ import annotations

import json
import secrets

import httpx
import pytest

from runnerd import signing
from tests.helpers import dataset, raw, result_of, wait_done

pytestmark = pytest.mark.docker

READ_AND_WRITE = """
import json, os
dids = json.loads(os.environ["DIDS"])
rows = open(f"/data/inputs/{dids[0]}/0").read().splitlines()
print("read", len(rows), "rows from", dids[0])
json.dump({"rows": len(rows), "header": rows[0]}, open("/data/outputs/result.json", "w"))
"""


def test_raw_python_job_reaches_70_and_streams_its_result(shared_daemon):
    did = dataset(shared_daemon.assets, b"a,b\n1,2\n3,4\n")
    client = shared_daemon.client()
    started = client.start(did, raw(READ_AND_WRITE), "ocean-compute")
    assert started["status"] == 1 and len(started["jobId"]) == 32
    job = wait_done(client, started["jobId"])
    assert job["status"] == 70, job
    assert job["statusText"] == "Job completed"
    assert float(job["dateFinished"]) >= float(job["dateCreated"]) > 0
    assert json.loads(result_of(client, job, "output", "result.json")) == {"rows": 3, "header": "a,b"}
    log = result_of(client, job, "algorithmLog").decode()
    assert f"read 3 rows from {did.removeprefix('did:op:')}" in log
    assert job["terminationDetails"] == {"exitCode": 0, "oomKilled": False, "reason": "exited"}
    assert [r["index"] for r in job["results"]] == list(range(len(job["results"])))
    # the capability URLs work without a signature, for this job only
    assert httpx.get(job["resultsUrls"][0]).json() == {"rows": 3, "header": "a,b"}
    assert "read 3 rows" in httpx.get(job["algorithmLogUrl"]).text


def test_failing_algorithm_ends_at_71_with_exit_code_and_log(shared_daemon):
    did = dataset(shared_daemon.assets)
    client = shared_daemon.client()
    job = wait_done(client, client.start(did, raw("import sys\nprint('about to fail')\nsys.exit(3)"),
                                         "ocean-compute")["jobId"])
    assert job["status"] == 71 and job["statusText"] == "Algorithm failed"
    assert job["terminationDetails"]["exitCode"] == 3
    assert "exited with code 3" in job["error"]
    assert "about to fail" in result_of(client, job, "algorithmLog").decode()
    # once, at warning, with the reason: what `journalctl -p warning` shows an operator (#14)
    lines = [line for line in shared_daemon.log().splitlines() if f"job={job['jobId']}" in line and "71" in line]
    warned = [line for line in lines if "level=warning" in line]
    assert len(warned) == 1 and "Algorithm failed: " in warned[0] and "exited with code 3" in warned[0], lines


def test_dataset_url_that_404s_ends_at_31(make_daemon, http_server):
    daemon = make_daemon(provisionAllow=[http_server.host])
    did = dataset(daemon.assets, url=http_server.url("/missing.csv"))
    client = daemon.client()
    job = wait_done(client, client.start(did, raw("print('never runs')"), "ocean-compute")["jobId"])
    assert job["status"] == 31 and job["statusText"] == "Data provisioning failed"
    assert "404" in job["error"]
    assert [r["type"] for r in job["results"]] == ["configurationLog"]
    assert "/missing.csv" in http_server.paths


def test_missing_image_ends_at_32(shared_daemon):
    did = dataset(shared_daemon.assets)
    client = shared_daemon.client()
    job = wait_done(client, client.start(did, raw("print(1)", image="runnerd-no-such-image:1"),
                                         "ocean-compute")["jobId"])
    assert job["status"] == 32 and job["statusText"] == "Algorithm provisioning failed"
    assert "runnerd-no-such-image:1" in job["error"]


def _start_body(client, did: str, nonce: str, signature: str) -> dict:
    return {"consumerAddress": client.address, "nonce": nonce, "signature": signature,
            "environment": "ocean-compute", "algorithm": raw("print(1)"),
            "dataset": {"documentId": did, "serviceId": "compute", "transferTxId": "0x" + secrets.token_hex(32)}}


def test_wrong_signature_is_401_and_starts_nothing(shared_daemon):
    did = dataset(shared_daemon.assets)
    client = shared_daemon.client()
    other = "0x" + secrets.token_hex(32)
    body = _start_body(client, did, "1", signing.sign(other, [client.address, did], "1"))
    r = httpx.post(f"{shared_daemon.url}/api/services/compute", json=body)
    assert r.status_code == 401 and r.json()["code"] == "invalid_signature"
    assert client.status() == []


def test_replayed_nonce_is_401_and_nothing_starts_twice(shared_daemon):
    did = dataset(shared_daemon.assets)
    client = shared_daemon.client()
    body = _start_body(client, did, "7", signing.sign(client.key, [client.address, did], "7"))
    first = httpx.post(f"{shared_daemon.url}/api/services/compute", json=body)
    assert first.status_code == 200
    replay = httpx.post(f"{shared_daemon.url}/api/services/compute", json=body)
    assert replay.status_code == 401 and replay.json()["code"] == "invalid_nonce"
    client._nonce = 7
    jobs = client.status()
    assert [j["jobId"] for j in jobs] == [first.json()[0]["jobId"]]
    wait_done(client, jobs[0]["jobId"])


def test_another_address_gets_404_for_the_job(shared_daemon):
    did = dataset(shared_daemon.assets)
    owner, stranger = shared_daemon.client(), shared_daemon.client()
    job = wait_done(owner, owner.start(did, raw("print('secret')"), "ocean-compute")["jobId"])
    r = httpx.get(f"{shared_daemon.url}/api/services/compute",
                  params={**stranger.signed(job["jobId"], ""), "jobId": job["jobId"]})
    assert r.status_code == 404 and r.json()["code"] == "not_found"
    assert owner.address not in r.text and "secret" not in r.text
    r = httpx.get(f"{shared_daemon.url}/api/services/computeResult",
                  params={**stranger.signed(job["jobId"], "0"), "jobId": job["jobId"], "index": "0"})
    assert r.status_code == 404


def test_an_algorithm_killed_by_a_signal_is_a_failure_not_an_interruption(shared_daemon):
    """SPEC: a non-zero exit is 71. Only a container lost with Docker itself is 76."""
    did = dataset(shared_daemon.assets)
    client = shared_daemon.client()
    code = "import os, signal\nprint('bye', flush=True)\nos.kill(os.getpid(), signal.SIGKILL)"
    job = wait_done(client, client.start(did, raw(code), "ocean-compute")["jobId"])
    assert job["status"] == 71, job
    assert job["terminationDetails"] == {"exitCode": 137, "oomKilled": False, "reason": "signal"}
    assert "SIGKILL" in job["error"]
    assert "bye" in result_of(client, job, "algorithmLog").decode()


def test_unsigned_status_carries_no_result_links(make_daemon):
    daemon = make_daemon(unsignedStatus=True)
    did = dataset(daemon.assets)
    client = daemon.client()
    job = wait_done(client, client.start(did, raw(READ_AND_WRITE), "ocean-compute")["jobId"])
    assert job["resultsUrls"] and job["algorithmLogUrl"]  # signed: the owner gets links
    unsigned = httpx.get(f"{daemon.url}/api/services/compute",
                         params={"consumerAddress": client.address, "jobId": job["jobId"]}).json()[0]
    assert unsigned["status"] == 70 and unsigned["results"]
    assert unsigned["resultsUrls"] == [] and unsigned["algorithmLogUrl"] is None
