"""What real Ocean clients send (SPEC §2 "What real clients send, and what is accepted"), runnerd's
own action-bound texts (#10 item 14), restarts and the stop answer (#11 §1), and bounded live-log
followers (#10 item 10): each over HTTP against a real daemon and real Docker.

Ocean-style requests are built here by hand, the way ocean.js 3.x/4.x build them (JSON bodies,
string nonces); runnerd's own client is used only where its own signatures are the subject.
"""

from __future__ import annotations

import contextlib
import secrets
import signal
import sqlite3
import time

import httpx
import pytest
from eth_account import Account

from runnerd import signing
from runnerd.client import ApiError
from tests.helpers import Daemon, base_config, dataset, raw, wait_done

pytestmark = pytest.mark.docker

API = "/api/services"
COMPUTE = f"{API}/compute"
PRINT = "print('hello from the job', flush=True)\nopen('/data/outputs/out.txt', 'w').write('ok')\n"
FAIL = "print('attempt', flush=True)\nraise SystemExit(3)\n"
LOOP = "import time\nprint('looping', flush=True)\nwhile True:\n    time.sleep(0.1)\n"


class Js:
    """An ocean.js-style caller: its own key, JSON bodies, string nonces, v = 27/28."""

    def __init__(self, url: str):
        self.key = "0x" + secrets.token_hex(32)
        self.address = Account.from_key(self.key).address
        self.http = httpx.Client(base_url=url, timeout=120)

    def stored(self) -> int:
        return int(self.http.get(f"{API}/nonce", params={"userAddress": self.address}).json()["nonce"])

    def sign(self, text: str, nonce: str) -> str:
        return signing.sign(self.key, [text], nonce)

    def start(self, did: str, code: str) -> dict:
        nonce = str(self.stored() + 1)
        r = self.http.post(COMPUTE, json={
            "consumerAddress": self.address, "nonce": nonce, "signature": self.sign(self.address + did, nonce),
            "environment": "ocean-compute", "algorithm": raw(code),
            "dataset": {"documentId": did, "serviceId": "compute", "transferTxId": "0x" + secrets.token_hex(32)}})
        assert r.status_code == 200, r.text
        return r.json()[0]

    def status(self, job_id: str) -> dict:
        """ocean.js computeStatus: unsigned."""
        r = self.http.get(COMPUTE, params={"consumerAddress": self.address, "jobId": job_id, "agreementId": ""})
        assert r.status_code == 200, r.text
        return r.json()[0]

    def signed_status(self, job_id: str) -> dict:
        """ocean.py style: signed, so that the tests below do not depend on unsigned reads."""
        r = self.http.get(COMPUTE, params={**self.signed_params(self.address + job_id), "jobId": job_id})
        assert r.status_code == 200, r.text
        return r.json()[0]

    def wait(self, job_id: str, statuses=None) -> dict:
        deadline = time.time() + 180
        while time.time() < deadline:
            job = self.signed_status(job_id)
            if job["status"] in (statuses or {7, *range(31, 33), *range(70, 77)}):
                return job
            time.sleep(0.2)
        raise AssertionError(f"job {job_id} never ended: {job}")

    def signed_params(self, text: str) -> dict:
        nonce = str(self.stored() + 1)
        return {"consumerAddress": self.address, "nonce": nonce, "signature": self.sign(text, nonce)}


@pytest.fixture(scope="module")
def d(tmp_path_factory):
    daemon = Daemon(tmp_path_factory.mktemp("compat"), base_config(
        stopWaitSeconds=120, logFollowersPerJob=2, logFollowersPerOwner=3,
        environments=[{"id": "ocean-compute", "nCPU": 0.5, "ramGB": 0.25, "diskGB": 0.05, "maxJobs": 3,
                       "maxJobDuration": 120}])).start()
    yield daemon
    daemon.stop()
    assert not daemon.leftover_containers()


@pytest.fixture(scope="module")
def finished(d):
    """One completed job of an ocean.js caller."""
    js = Js(d.url)
    did = dataset(d.assets)
    job = js.wait(js.start(did, PRINT)["jobId"])
    assert job["status"] == 70, job
    return js, did, job


def _error(r: httpx.Response) -> tuple[int, str]:
    body = r.json()
    assert set(body) <= {"error", "code", "field"} and body["error"], body
    return r.status_code, body["code"]


# -- status reads ------------------------------------------------------------------------------


def test_unsigned_status_naming_a_job_id_is_answered_to_its_owner_without_capability_urls(d, finished):
    js, did, job = finished
    before = js.stored()
    got = js.status(job["jobId"])  # what every ocean.js release sends: no nonce, no signature
    assert got["status"] == 70 and got["results"] == job["results"] and got["results"]
    assert got["resultsUrls"] == [] and got["algorithmLogUrl"] is None
    lower = js.http.get(COMPUTE, params={"consumerAddress": js.address.lower(), "jobId": job["jobId"]})
    assert lower.status_code == 200 and lower.json()[0]["jobId"] == job["jobId"]
    assert js.stored() == before  # nothing consumed
    # another address naming the same jobId learns nothing
    stranger = Account.create().address
    r = js.http.get(COMPUTE, params={"consumerAddress": stranger, "jobId": job["jobId"]})
    assert _error(r) == (404, "not_found") and js.address.lower() not in r.text.lower()
    # listing without a jobId still needs a signature (unsignedStatus is off)
    r = js.http.get(COMPUTE, params={"consumerAddress": js.address})
    assert _error(r) == (400, "missing")
    # a signed read consumes its nonce and carries the capability URLs
    signed = js.http.get(COMPUTE, params={**js.signed_params(js.address + job["jobId"]), "jobId": job["jobId"]})
    assert signed.status_code == 200, signed.text
    assert signed.json()[0]["resultsUrls"] and js.stored() == before + 1


# -- delete and stop without a nonce ---------------------------------------------------------------


def test_delete_without_a_nonce_like_oceanjs_3_takes_stored_plus_one_and_cannot_be_replayed(d):
    js = Js(d.url)
    did = dataset(d.assets)
    job_id = js.start(did, PRINT)["jobId"]
    stored = js.stored()
    # ocean.js 3.x: {documentId, consumerAddress, jobId, signature}, signed over addr + jobId + did + (stored + 1)
    body = {"documentId": did, "consumerAddress": js.address, "jobId": job_id,
            "signature": js.sign(js.address + job_id + did, str(stored + 1))}
    r = js.http.request("DELETE", COMPUTE, json=body)
    assert r.status_code == 200, r.text
    assert [(j["jobId"], j["status"]) for j in r.json()] == [(job_id, 8)]
    assert js.stored() == stored + 1
    assert _error(js.http.request("DELETE", COMPUTE, json=body)) == (401, "invalid_signature")
    gone = js.http.get(COMPUTE, params={"consumerAddress": js.address, "jobId": job_id})
    assert _error(gone) == (404, "not_found")


def test_stop_signed_without_a_nonce_like_oceanjs_3_3_3_answers_once_the_job_stopped(d):
    js = Js(d.url)
    did = dataset(d.assets)
    job_id = js.start(did, LOOP)["jobId"]
    js.wait(job_id, {40})
    # ocean.js >= 3.3.3: signs addr + jobId only, and sends a nonce it did not sign
    body = {"signature": js.sign(js.address + job_id, ""), "agreementId": "", "consumerAddress": js.address,
            "nonce": str(js.stored() + 1), "jobId": job_id}
    r = js.http.put(COMPUTE, json=body)
    assert r.status_code == 200, r.text
    assert [(j["jobId"], j["status"], j["statusText"]) for j in r.json()] == [(job_id, 7, "Job stopped")]
    assert js.http.put(COMPUTE, json=body).json()[0]["status"] == 7  # a replay changes nothing
    # without a jobId the nonce-less form is no stop of anything
    everything = {**body, "jobId": "", "signature": js.sign(js.address, "")}
    assert _error(js.http.put(COMPUTE, json={k: v for k, v in everything.items() if k != "nonce"})) == \
        (400, "missing")


def test_a_stop_of_a_running_job_answers_7_once_it_stopped(d):
    c = d.client()
    did = dataset(d.assets)
    job_id = c.start(did, raw(LOOP), "ocean-compute")["jobId"]
    try:
        wait_done(c, job_id, statuses={40})
        stopped = c.stop(job_id)  # the daemon waits (stopWaitSeconds) until the stop took effect
        assert [(j["jobId"], j["status"], j["stopreq"]) for j in stopped] == [(job_id, 7, 1)]
        assert stopped[0]["dateFinished"] is not None and stopped[0]["results"]
    finally:
        if c.job(job_id, signed=False)["status"] != 7:
            c.stop(job_id)


# -- runnerd's own texts: a signature for one action is never another ------------------------------


def test_stop_or_delete_of_every_job_needs_runnerds_own_text(d):
    js = Js(d.url)
    c = d.client(js.key)
    did = dataset(d.assets)
    job_id = js.start(did, LOOP)["jobId"]
    try:
        # a signed status read of all jobs (addr + "" + "" + nonce), caught before runnerd saw it
        listing = js.signed_params(js.address)
        assert _error(js.http.put(COMPUTE, json=listing)) == (401, "invalid_signature")
        assert _error(js.http.request("DELETE", COMPUTE, json=listing)) == (401, "invalid_signature")
        # a start signature (addr + did + nonce) is no delete of every job on that dataset
        start_sig = {**js.signed_params(js.address + did), "documentId": did}
        assert _error(js.http.request("DELETE", COMPUTE, json=start_sig)) == (401, "invalid_signature")
        # the listing signature is still a good status read
        listed = js.http.get(COMPUTE, params=listing)
        assert listed.status_code == 200, listed.text
        assert [j["jobId"] for j in listed.json()] == [job_id]
        assert js.signed_status(job_id)["stopreq"] == 0  # neither stopped nor deleted (that would be a 404)
        # runnerd's own action text stops and deletes them all
        assert [(j["jobId"], j["status"]) for j in c.stop()] == [(job_id, 7)]
        assert [(j["jobId"], j["status"]) for j in c.delete()] == [(job_id, 8)]
        assert c.status() == []
    finally:
        c.delete(job_id) if c.status() else None


def test_runnerds_log_signature_is_no_stop_or_delete(d, finished):
    js, did, job = finished
    c = d.client(js.key)
    log_read = {**c.own("computeLogs", job["jobId"]), "jobId": job["jobId"]}
    assert _error(js.http.request("DELETE", COMPUTE, params=log_read)) == (401, "invalid_signature")
    assert _error(js.http.put(COMPUTE, params=log_read)) == (401, "invalid_signature")
    assert js.status(job["jobId"])["status"] == 70
    r = js.http.get(f"{API}/computeLogs", params=log_read)  # and it is still a good log read
    assert r.status_code == 200 and "hello from the job" in r.text, r.text
    # the status signature runnerd's client makes is no delete either
    status_read = {**c.own("computeStatus", job["jobId"], ""), "jobId": job["jobId"]}
    assert _error(js.http.request("DELETE", COMPUTE, params=status_read)) == (401, "invalid_signature")
    assert js.http.get(COMPUTE, params=status_read).json()[0]["resultsUrls"]


def test_computeStreamableLogs_is_advertised_and_takes_oceanjs_4_signature(d, finished):
    js, _, job = finished
    endpoints = js.http.get("/").json()["serviceEndpoints"]
    assert endpoints["computeStreamableLogs"] == ["GET", f"{API}/computeLogs"] == endpoints["computeLogs"]
    method, path = endpoints["computeStreamableLogs"]
    # ocean.js 4.x: GET ?jobId&consumerAddress&signature&nonce, signed addr + jobId + nonce
    r = js.http.request(method, path, params={**js.signed_params(js.address + job["jobId"]), "jobId": job["jobId"]})
    assert r.status_code == 200 and "hello from the job" in r.text


# -- restart -----------------------------------------------------------------------------------------


def test_restart_of_a_failed_job_runs_it_again_as_a_new_job(d, finished):
    js = Js(d.url)
    did = dataset(d.assets)
    old = js.wait(js.start(did, FAIL)["jobId"])
    assert old["status"] == 71
    nonce = str(js.stored() + 1)
    body = {"consumerAddress": js.address, "nonce": nonce, "jobId": old["jobId"],
            "signature": js.sign(js.address + did, nonce)}  # signed like any start
    r = js.http.post(COMPUTE, json=body)
    assert r.status_code == 200, r.text
    new = r.json()[0]
    assert new["jobId"] != old["jobId"] and new["restartedFrom"] == old["jobId"] and new["status"] == 1
    assert (new["inputDID"], new["algoDID"], new["environment"], new["agreementId"]) == \
        (old["inputDID"], old["algoDID"], old["environment"], old["agreementId"])
    assert _error(js.http.post(COMPUTE, json=body)) == (401, "invalid_nonce")  # a replay starts nothing
    again = js.wait(new["jobId"])
    assert again["status"] == 71 and again["restartedFrom"] == old["jobId"]
    log = js.http.get(f"{API}/computeLogs", params={**js.signed_params(js.address + new["jobId"]),
                                                   "jobId": new["jobId"]})
    assert "attempt" in log.text
    unchanged = js.signed_status(old["jobId"])  # the original is never rewritten
    assert (unchanged["status"], unchanged["dateFinished"], unchanged["restartedFrom"]) == \
        (71, old["dateFinished"], None)

    # a completed job is not restarted; another owner's job is unknown
    owner, done_did, done = finished
    n = str(owner.stored() + 1)
    r = owner.http.post(COMPUTE, json={"consumerAddress": owner.address, "nonce": n, "jobId": done["jobId"],
                                       "signature": owner.sign(owner.address + done_did, n)})
    assert _error(r) == (400, "not_restartable")
    n = str(owner.stored() + 1)
    r = owner.http.post(COMPUTE, json={"consumerAddress": owner.address, "nonce": n, "jobId": old["jobId"],
                                       "dataset": {"documentId": did}, "signature": owner.sign(owner.address + did, n)})
    assert _error(r) == (404, "not_found")

    # runnerd's client restarts over its own text; without the kept request it is a clear 400
    c = d.client(js.key)
    assert c.restart(old["jobId"])["restartedFrom"] == old["jobId"]
    with sqlite3.connect(d.data_dir / "runnerd.db") as db:
        db.execute("UPDATE jobs SET request = NULL WHERE job_id = ?", (old["jobId"],))
    with pytest.raises(ApiError) as err:
        c.restart(old["jobId"])
    assert err.value.status == 400 and err.value.body["code"] == "restart_unavailable"
    for job in c.status():  # nothing left running (wait_done returns at once for an ended one)
        wait_done(c, job["jobId"])


# -- live-log followers --------------------------------------------------------------------------------


def test_live_log_followers_are_capped_per_job_and_per_owner(d):
    js = Js(d.url)
    c = d.client(js.key)
    did = dataset(d.assets)
    a, b = js.start(did, LOOP)["jobId"], js.start(did, LOOP)["jobId"]
    try:
        js.wait(a, {40})
        js.wait(b, {40})
        with contextlib.ExitStack() as stack:
            def follow(job_id: str) -> httpx.Response:
                return stack.enter_context(c.log_stream(job_id))

            first = [follow(a), follow(a)]  # logFollowersPerJob: 2
            assert all(r.status_code == 200 for r in first)
            assert b"looping" in next(first[0].iter_raw())  # pushed to the follower
            third = follow(a)
            third.read()
            assert _error(third) == (429, "too_many_followers")
            assert follow(b).status_code == 200  # the owner's third (logFollowersPerOwner: 3)
            over = follow(b)
            over.read()
            assert _error(over) == (429, "too_many_followers")
            first[0].close()  # a follower that leaves frees its place
            deadline = time.time() + 30
            while (again := follow(b)).status_code == 429 and time.time() < deadline:
                again.read()
                time.sleep(0.2)
            assert again.status_code == 200
    finally:
        c.stop(a)
        c.stop(b)


def test_sigterm_with_an_open_follower_ends_it_cleanly(tmp_path):
    d = Daemon(tmp_path / "d", base_config()).start()
    c = d.client()
    try:
        did = dataset(d.assets)
        job_id = c.start(did, raw(LOOP), "ocean-compute")["jobId"]
        wait_done(c, job_id, statuses={40})
        with c.log_stream(job_id) as r:
            chunks = r.iter_raw()
            assert b"looping" in next(chunks)
            began = time.time()
            d.proc.send_signal(signal.SIGTERM)
            rest = b"".join(chunks)  # on main: cut after shutdown_timeout, an incomplete chunked body
            print(f"follower ended {time.time() - began:.2f}s after SIGTERM ({len(rest)} more bytes)")
        assert d.proc.wait(60) == 0
        d.start()
        c.stop(job_id)
        wait_done(c, job_id)  # ended, so that its containers are gone before the daemon stops
    finally:
        d.stop()
        left = d.leftover_containers()
        assert not left, left
