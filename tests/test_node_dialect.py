"""ocean-node's dialect under /c2d/v2 (#11 §2), over HTTP against a real daemon (and real Docker
for the jobs): what ocean.js 8 does not exercise, or exercises only on the happy path. Requests
are built by hand, the way ocean.js 8 builds them (signature over address + nonce + command)."""

from __future__ import annotations

import io
import json
import os
import secrets
import tarfile
import time

import httpx
import pytest
from eth_account import Account

from runnerd import signing
from runnerd.api.node.views import NODE_CODE, NODE_TEXT, node_code
from runnerd.domain import Job, JobStatus
from tests.helpers import TEST_RAW_IMAGES, dataset, raw, wait_done

NODE = "/c2d/v2"
S = f"{NODE}/api/services"


class Consumer:
    """One address speaking the node dialect: fresh nonces, ocean.js 8's signatures."""

    def __init__(self, url: str):
        self.key = "0x" + secrets.token_hex(32)
        self.address = Account.from_key(self.key).address
        self.http = httpx.Client(base_url=url, timeout=60)
        self._nonce = time.time_ns()

    def signed(self, command: str, name: str = "consumerAddress") -> dict:
        self._nonce += 1
        nonce = str(self._nonce)
        signature = signing.sign(self.key, [self.address, nonce, command], "")
        return {name: self.address, "nonce": nonce, "signature": signature}

    def start(self, did: str, code: str = "print('hello')", env: str = "ocean-compute", **extra) -> httpx.Response:
        body = {**self.signed("freeStartCompute"), "environment": env, "datasets": [{"documentId": did}],
                "algorithm": raw(code), **extra}
        return self.http.post(f"{S}/freeCompute", json=body)

    def token(self) -> str:
        answer = self.http.post(f"{S}/auth/token", json=self.signed("createAuthToken", "address"))
        assert answer.status_code == 200, answer.text
        return answer.json()["token"]

    def wait(self, job_id: str, timeout: float = 120) -> dict:
        deadline = time.time() + timeout
        while time.time() < deadline:
            job = self.http.get(f"{S}/compute", params={"consumerAddress": self.address, "jobId": job_id}).json()[0]
            if job["dateFinished"]:
                return job
            time.sleep(0.2)
        raise TimeoutError(job_id)


@pytest.fixture(scope="module")
def node(tmp_path_factory):
    from tests.helpers import Daemon, base_config

    # a priced environment needs chain mode (#16); its node is never asked: no asset here has a datatoken
    unasked = {"chainId": 8996, "rpcUrl": "http://127.0.0.1:9", "feeToken": "0x" + "1" * 40}
    d = Daemon(tmp_path_factory.mktemp("node"), base_config(chains=[unasked], environments=[
        {"id": "ocean-compute", "nCPU": 1, "ramGB": 0.5, "diskGB": 0.1, "maxJobs": 2, "maxJobDuration": 60,
         "rawAlgorithmImages": TEST_RAW_IMAGES},
        {"id": "paid", "nCPU": 1, "ramGB": 0.5, "diskGB": 0.1, "maxJobs": 1, "priceMin": 2,
         "rawAlgorithmImages": TEST_RAW_IMAGES},
        {"id": "one", "nCPU": 1, "ramGB": 0.5, "diskGB": 0.1, "maxJobs": 1, "maxJobDuration": 60,
         "queueMaxWaitTime": 3, "rawAlgorithmImages": TEST_RAW_IMAGES},
        {"id": "two", "nCPU": 2, "ramGB": 0.5, "diskGB": 0.1, "maxJobs": 1, "rawAlgorithmImages": TEST_RAW_IMAGES},
    ])).start()
    d.did = dataset(d.assets)
    yield d
    d.stop()
    assert d.leftover_containers() == []


def _error(response: httpx.Response, status: int, code: str) -> dict:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["code"] == code and body["error"] and "Traceback" not in response.text, body
    return body


# -- status mapping (no daemon) -----------------------------------------------------------------


def test_every_runnerd_status_maps_to_an_ocean_node_code_and_never_to_71():
    for status in JobStatus:
        if status == JobStatus.DELETED:
            continue
        job = Job("j", "0x" + "1" * 40, "did", "e", "a", "raw", [], status=status)
        code = node_code(job)
        assert code in NODE_TEXT and code != 71, (status, code)
    ended = {s for s, c in NODE_CODE.items() if c == 70}
    assert ended == {JobStatus.COMPLETED, JobStatus.ALGORITHM_FAILED, JobStatus.TIMED_OUT, JobStatus.OUT_OF_MEMORY,
                     JobStatus.STOPPED}
    expired = Job("j", "0x" + "1" * 40, "did", "e", "a", "raw", [], status=JobStatus.INTERRUPTED,
                  termination={"reason": "queue_expired"})
    assert node_code(expired) == 2 and NODE_TEXT[2] == "Job expired in queue"


# -- discovery, environments, DDOs --------------------------------------------------------------


def test_discovery_lists_paths_under_the_base_and_environments_have_ocean_nodes_shape(node):
    root = httpx.get(node.url + NODE).json()
    assert root["providerAddress"].startswith("0x") and root["serviceEndpoints"]["freeCompute"] == [
        "POST", "/api/services/freeCompute"]
    assert httpx.get(node.url + NODE + "/").json() == root
    envs = {e["id"]: e for e in httpx.get(f"{node.url}{S}/computeEnvironments").json()}
    free, paid = envs["ocean-compute"], envs["paid"]
    assert "free" in free and "free" not in paid and free["fees"] == {} == paid["fees"]
    cpu = next(r for r in free["resources"] if r["id"] == "cpu")
    assert (cpu["min"], cpu["max"], cpu["total"]) == (1, 1, 2)
    cpu = next(r for r in envs["two"]["resources"] if r["id"] == "cpu")
    ram = next(r for r in envs["two"]["resources"] if r["id"] == "ram")
    assert (cpu["min"], cpu["max"], ram["min"], ram["max"]) == (1, 2, 0.5, 0.5)
    assert free["platform"]["os"] == "linux" and free["maxJobs"] == 2
    # the root dialect is untouched: its own shape, its own discovery
    assert "priceMin" in httpx.get(f"{node.url}/api/services/computeEnvironments").json()[0]
    assert "freeCompute" not in httpx.get(node.url + "/").json()["serviceEndpoints"]


def test_the_ddo_route_strips_files_and_names_this_dialect_as_endpoint(node):
    ddo = httpx.get(f"{node.url}{NODE}/api/aquarius/assets/ddo/{node.did}")
    assert ddo.status_code == 200
    service = ddo.json()["services"][0]
    assert "files" not in service and service["serviceEndpoint"] == node.url + NODE
    assert str(node.assets) not in ddo.text and "files/" not in ddo.text
    _error(httpx.get(f"{node.url}{NODE}/api/aquarius/assets/ddo/did:op:{'0' * 64}"), 404, "not_found")


# -- signatures, nonces, tokens -----------------------------------------------------------------


def test_a_signature_is_good_for_its_own_command_and_nonce_only(node):
    c = Consumer(node.url)
    stop_sig = c.signed("stopCompute")
    body = {**stop_sig, "environment": "ocean-compute", "datasets": [{"documentId": node.did}], "algorithm": raw("")}
    _error(c.http.post(f"{S}/freeCompute", json=body), 401, "invalid_signature")  # a stop's text cannot start
    # one ledger for both dialects: a nonce used at the root is used here too
    used = c.signed("freeStartCompute")
    root_sig = signing.sign(c.key, [c.address, node.did], used["nonce"])
    root = c.http.post("/api/services/compute", json={
        "consumerAddress": c.address, "nonce": used["nonce"], "signature": root_sig, "environment": "ocean-compute",
        "dataset": {"documentId": node.did, "serviceId": "compute", "transferTxId": "0x1"}, "algorithm": raw("")})
    # refused by the policy, after its nonce was claimed (the root dialect's order)
    assert root.json()["code"] == "meta_oneof_url_rawcode_remote"
    assert str(c.http.get(f"{S}/nonce", params={"userAddress": c.address}).json()["nonce"]) == used["nonce"]
    again = {**used, "environment": "ocean-compute", "datasets": [{"documentId": node.did}], "algorithm": raw("")}
    _error(c.http.post(f"{S}/freeCompute", json=again), 401, "invalid_nonce")


@pytest.mark.docker
def test_a_token_acts_only_for_the_address_it_was_issued_to(node):
    alice, bob = Consumer(node.url), Consumer(node.url)
    job = bob.start(node.did, "print('bob')").json()[0]
    token = alice.token()
    as_alice = {"Authorization": token}
    # naming bob with alice's token: refused (ocean-node's main branch lets it through)
    _error(alice.http.get(f"{S}/compute", params={"consumerAddress": bob.address}, headers=as_alice), 401,
           "token_address_mismatch")
    _error(alice.http.put(f"{S}/compute", params={"consumerAddress": bob.address, "jobId": job["jobId"]},
                          headers=as_alice), 401, "token_address_mismatch")
    # and as herself, bob's job is not hers to read or stop
    _error(alice.http.get(f"{S}/computeResult", params={"jobId": job["jobId"], "index": 0}, headers=as_alice), 404,
           "not_found")
    _error(alice.http.put(f"{S}/compute", params={"jobId": job["jobId"]}, headers=as_alice), 404, "not_found")
    assert alice.http.get(f"{S}/compute", headers=as_alice).json() == []  # her own (none)
    bob.wait(job["jobId"])
    # a made-up or invalidated token is refused
    forged = token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB")
    _error(alice.http.get(f"{S}/compute", headers={"Authorization": forged}), 401, "invalid_token")
    gone = alice.http.post(f"{S}/auth/token/invalidate", json={**alice.signed("invalidateAuthToken", "address"),
                                                               "token": token})
    assert gone.json() == {"success": True}
    _error(alice.http.get(f"{S}/compute", headers=as_alice), 401, "invalid_token")


def test_listing_an_addresss_jobs_needs_its_token(node):
    c = Consumer(node.url)
    _error(c.http.get(f"{S}/compute", params={"consumerAddress": c.address}), 401, "token_required")


# -- starts that are refused --------------------------------------------------------------------


def test_a_paid_start_is_refused_before_any_nonce_is_used_and_unoffered_features_are_named(node):
    c = Consumer(node.url)
    sig = c.signed("startCompute")
    body = {**sig, "environment": "paid", "datasets": [{"documentId": node.did}], "algorithm": raw(""),
            "payment": {"chainId": 8996, "token": "0x" + "0" * 40}}
    refused = _error(c.http.post(f"{S}/compute", json=body), 400, "paid_compute_unsupported")
    assert "freeCompute" in refused["error"]
    assert c.http.get(f"{S}/nonce", params={"userAddress": c.address}).json()["nonce"] == 0
    _error(c.start(node.did, output="0xdeadbeef"), 400, "not_offered")
    _error(c.start(node.did, resources=[{"id": "cpu", "amount": 4}]), 400, "resources_exceeded")
    _error(c.start(node.did, resources=[{"id": "quantum", "amount": 1}]), 400, "invalid")
    unfree = {**c.signed("freeStartCompute"), "environment": "paid", "datasets": [{"documentId": node.did}],
              "algorithm": raw("")}
    _error(c.http.post(f"{S}/freeCompute", json=unfree), 400, "not_free")


# -- a job: status mapping, results, outputs.tar, Range -----------------------------------------


@pytest.mark.docker
def test_a_failed_run_is_70_with_its_exit_code_and_outputs_tar_serves_ranges(node):
    c = Consumer(node.url)
    started = c.start(node.did, "import os\nos.makedirs('/data/outputs/sub')\n"
                                "open('/data/outputs/sub/o.txt','w').write('x' * 1500)\nraise SystemExit(3)")
    assert started.status_code == 200, started.text
    job = c.wait(started.json()[0]["jobId"])
    assert (job["status"], job["statusText"], job["runnerdStatus"]) == (70, "Job finished", 71)
    assert job["terminationDetails"]["exitCode"] == 3 and job["stopRequested"] is False
    entry = next(r for r in job["results"] if r["type"] == "output")

    def get(headers=None):
        return c.http.get(f"{S}/computeResult", params={**c.signed("getComputeResult"), "jobId": job["jobId"],
                                                        "index": entry["index"]}, headers=headers or {})

    whole = get()
    assert whole.status_code == 200 and len(whole.content) == entry["filesize"] == int(whole.headers["content-length"])
    with tarfile.open(fileobj=io.BytesIO(whole.content)) as tar:
        assert tar.extractfile("outputs/sub/o.txt").read() == b"x" * 1500
    part = get({"Range": "bytes=600-2099"})
    assert part.status_code == 206 and part.content == whole.content[600:2100]
    assert part.headers["content-range"] == f"bytes 600-2099/{len(whole.content)}"
    tail = get({"Range": "bytes=-700"})
    assert tail.status_code == 206 and tail.content == whole.content[-700:]
    assert get().content == whole.content  # the same bytes every time (a resumed download continues them)
    _error(get({"Range": f"bytes={len(whole.content)}-"}), 416, "range_not_satisfiable")
    # a result signature is good once
    params = {**c.signed("getComputeResult"), "jobId": job["jobId"], "index": entry["index"]}
    assert c.http.get(f"{S}/computeResult", params=params).status_code == 200
    _error(c.http.get(f"{S}/computeResult", params=params), 401, "invalid_nonce")
    # runnerd's delete: its owner's signature over deleteCompute
    deleted = c.http.delete(f"{S}/compute", params={**c.signed("deleteCompute"), "jobId": job["jobId"]})
    assert deleted.json() == [{"jobId": job["jobId"], "deleted": True}]
    _error(c.http.get(f"{S}/compute", params={"consumerAddress": c.address, "jobId": job["jobId"]}), 404,
           "not_found")


LOOP = "import time\nprint('looping', flush=True)\nwhile True:\n    time.sleep(0.1)\n"


@pytest.mark.docker
def test_a_queued_job_ends_when_its_queue_wait_runs_out_bounded_by_the_environments(node):
    """queueMaxWaitTime per job (ocean-node's field), at most the environment's, which also bounds
    the jobs of the root dialect: the job ends at 76 with `queue_expired` (ocean-node's 2), whatever
    keeps it waiting, and nothing of it ever ran."""
    c = Consumer(node.url)
    first = c.start(node.did, LOOP, env="one").json()[0]  # holds the environment's only slot
    try:
        asked = c.start(node.did, env="one", queueMaxWaitTime=100).json()[0]
        assert asked["queueMaxWaitTime"] == 3  # bounded by the environment's
        root_client = node.client()
        root = root_client.start(node.did, raw("print('never')"), "one")  # asks for none: 3 s too
        job = c.wait(asked["jobId"], timeout=60)
        assert (job["status"], job["statusText"], job["runnerdStatus"]) == (2, "Job expired in queue", 76)
        assert job["terminationDetails"]["reason"] == "queue_expired" and job["results"] == []
        assert "queueMaxWaitTime" in job["error"]
        other = wait_done(root_client, root["jobId"], timeout=60)
        assert (other["status"], other["terminationDetails"]["reason"]) == (76, "queue_expired")
        assert c.http.get(f"{S}/compute", params={"consumerAddress": c.address, "jobId": first["jobId"]}).json()[
            0]["runnerdStatus"] == 40  # the running one is not touched
    finally:
        stopped = c.http.put(f"{S}/compute", params={**c.signed("stopCompute"), "jobId": first["jobId"]})
        assert stopped.json()[0]["runnerdStatus"] == 7, stopped.text


@pytest.mark.docker
def test_a_jobs_own_max_job_duration_stops_it_and_viewers_may_read_but_not_stop(node):
    c, viewer = Consumer(node.url), Consumer(node.url)
    started = c.start(node.did, LOOP, maxJobDuration=2, additionalViewers=[viewer.address],
                      metadata={"run": 7}).json()[0]
    assert started["maxJobDuration"] == 2 and started["additionalViewers"] == [viewer.address.lower()]
    job = viewer.wait(started["jobId"], timeout=90)  # the viewer polls it
    assert (job["status"], job["runnerdStatus"], job["terminationDetails"]["reason"]) == (70, 72, "timeout")
    assert job["metadata"] == {"run": 7} and "maxJobDuration (2s)" in job["error"]
    log = viewer.http.get(f"{S}/computeStreamableLogs", params={**viewer.signed("getComputeStreamableLogs"),
                                                                 "jobId": job["jobId"]})
    assert log.status_code == 200 and "looping" in log.text
    _error(viewer.http.put(f"{S}/compute", params={**viewer.signed("stopCompute"), "jobId": job["jobId"]}), 404,
           "not_found")
    _error(viewer.http.delete(f"{S}/compute", params={**viewer.signed("deleteCompute"), "jobId": job["jobId"]}),
           404, "not_found")


@pytest.mark.docker
@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs two cores to pin one of two")
def test_a_job_may_ask_for_fewer_cpus_and_gets_that_many_cores(node):
    c = Consumer(node.url)
    code = "import os\nprint('cores', len(os.sched_getaffinity(0)), flush=True)"
    asked = c.start(node.did, code, env="two", resources=[{"id": "cpu", "amount": 1}]).json()[0]
    assert {"id": "cpu", "amount": 1} in asked["resources"]
    whole = c.start(node.did, code, env="two").json()[0]  # asks nothing: the whole slot
    assert {"id": "cpu", "amount": 2} in whole["resources"]
    for job_id, cores in ((asked["jobId"], 1), (whole["jobId"], 2)):
        job = c.wait(job_id)
        index = next(r["index"] for r in job["results"] if r["type"] == "algorithmLog")
        log = c.http.get(f"{S}/computeResult", params={**c.signed("getComputeResult"), "jobId": job_id,
                                                       "index": index})
        assert f"cores {cores}" in log.text, (job_id, log.text)


# -- adversarial review (#11 §2, r3-node) -------------------------------------------------------


def _post_raw(c: Consumer, path: str, body: dict, **literals: str) -> httpx.Response:
    """POST `body` as JSON text, with each `"@NAME@"` string replaced by the literal given (what a
    hostile client can send and Python's parser takes: NaN, Infinity, 1e999, a 400-digit integer)."""
    text_ = json.dumps(body)
    for name, literal in literals.items():
        text_ = text_.replace(f'"@{name}@"', literal)
    return c.http.post(path, content=text_, headers={"Content-Type": "application/json"})


def test_a_datasets_list_beyond_the_inputs_bound_is_refused_before_any_catalog_lookup(node):
    """Each catalog lookup scans the assets folder: 40,000 datasets without serviceId (840 KB)
    held the event loop for 48 s with 200 assets, before the engine's bound refused the start."""
    from runnerd.api.node import intake
    from runnerd.config import parse_config
    from runnerd.engine.intake import MAX_INPUTS
    from runnerd.errors import BadRequest

    lookups: list[str] = []

    class Catalog:
        def get(self, did: str) -> None:
            lookups.append(did)

    datasets = [{"documentId": "did:op:%064x" % i} for i in range(MAX_INPUTS + 1)]
    with pytest.raises(BadRequest) as refused:
        env = parse_config({"environments": [{"id": "e"}]}).environments[0]
        intake.start_request({"datasets": datasets, "algorithm": raw("")}, env, Catalog())
    assert refused.value.field == "datasets" and lookups == []
    c = Consumer(node.url)
    body = _error(c.start(node.did, datasets=[{"documentId": node.did}] * (MAX_INPUTS + 1)), 400, "invalid")
    assert body["field"] == "datasets"


def test_numbers_that_json_has_not_are_refused_and_never_stored(node):
    """NaN, Infinity and 1e999 parse in Python: a NaN cpu amount made the job end at 76 with an
    internal error, and a stored NaN or infinity made every answer about the job invalid JSON."""
    c = Consumer(node.url)
    cases = [
        ({"resources": [{"id": "cpu", "amount": "@X@"}]}, "NaN", "resources"),
        ({"resources": [{"id": "cpu", "amount": "@X@"}]}, "-Infinity", "resources"),
        ({"queueMaxWaitTime": "@X@"}, "1e999", "queueMaxWaitTime"),
        ({"queueMaxWaitTime": "@X@"}, "Infinity", "queueMaxWaitTime"),
        ({"maxJobDuration": "@X@"}, "NaN", "maxJobDuration"),
        ({"metadata": {"x": ["@X@"]}}, "NaN", "metadata"),
        ({"metadata": {"x": "@X@"}}, "1e999", "metadata"),
    ]
    for extra, literal, field in cases:
        body = {**c.signed("freeStartCompute"), "environment": "ocean-compute", "datasets": [{"documentId": node.did}],
                "algorithm": raw("print(1)"), **extra}
        answer = _post_raw(c, f"{S}/freeCompute", body, X=literal)
        assert _error(answer, 400, "invalid")["field"] == field, (extra, literal)
        assert "NaN" not in answer.text and "Infinity" not in answer.text


def test_odd_types_get_the_error_shape_never_a_500(node):
    c = Consumer(node.url)
    for rid in (["cpu"], {"id": "cpu"}):  # unhashable: `rid in known` raised TypeError
        assert _error(c.start(node.did, resources=[{"id": rid, "amount": 1}]), 400, "invalid")["field"] == "resources"
    body = {**c.signed("createAuthToken", "address"), "validUntil": "@BIG@"}  # float() raised OverflowError
    assert _error(_post_raw(c, f"{S}/auth/token", body, BIG="9" * 400), 400, "invalid")["field"] == "validUntil"


@pytest.mark.docker
def test_an_agreement_id_is_no_secret_so_listing_by_it_needs_the_token(node):
    """A root-dialect job's agreementId is its order's transaction id, public on chain together
    with the consumer's address: it must not unlock an unsigned read of the job (and its jobId)."""
    c = Consumer(node.url)
    tx = "0x" + secrets.token_hex(32)
    job = node.client(c.key).start(node.did, raw("print(1)"), "ocean-compute", transfer_tx=tx)
    try:
        query = {"consumerAddress": c.address, "agreementId": tx}
        unsigned = c.http.get(f"{S}/compute", params=query)
        _error(unsigned, 401, "token_required")
        assert job["jobId"] not in unsigned.text
        listed = c.http.get(f"{S}/compute", params=query, headers={"Authorization": c.token()})
        assert listed.status_code == 200 and [j["jobId"] for j in listed.json()] == [job["jobId"]]
    finally:
        c.wait(job["jobId"])


def test_a_finished_jobs_outputs_tar_is_laid_out_once_not_on_every_status_answer(monkeypatch):
    """Every status answer lists outputs.tar's size; laying the tar out takes ~50 ms for 1000
    long names (maxOutputFiles), and unsigned reads by jobId or token listings are free to send."""
    from runnerd.api.node import tarview, views
    from runnerd.domain import ResultFile, ResultType

    headers: list[str] = []
    real = tarview._header
    monkeypatch.setattr(tarview, "_header", lambda name, *a, **k: headers.append(name) or real(name, *a, **k))
    outputs = [ResultFile("d" * 150 + f"/f{i}", 10, ResultType.OUTPUT, f"results/outputs/f{i}") for i in range(50)]
    job = Job(secrets.token_hex(16), "0x" + "1" * 40, "did", "e", "a", "raw", [], status=JobStatus.COMPLETED,
              results=outputs)
    first = views.render(job)["results"]
    laid_out = len(headers)
    assert laid_out == 51  # the outputs/ folder and each file
    assert views.render(job)["results"] == first and len(headers) == laid_out
    assert [r["filesize"] for r in first if r["filename"] == "outputs.tar"] == [tarview.tar_size(outputs)]


def test_deeply_nested_metadata_is_refused_not_a_500(node):
    """500 levels parse (the parser's bound is ~1000), but the store's recursive copy of the terms
    (dataclasses.asdict) overflowed on them: a 500 after the nonce was used."""
    c = Consumer(node.url)
    body = {**c.signed("freeStartCompute"), "environment": "ocean-compute", "datasets": [{"documentId": node.did}],
            "algorithm": raw("print(1)"), "metadata": "@M@"}
    nested = '{"a": ' + "[" * 500 + "]" * 500 + "}"
    assert _error(_post_raw(c, f"{S}/freeCompute", body, M=nested), 400, "invalid")["field"] == "metadata"


async def test_a_range_of_outputs_tar_reuses_its_layout_and_checks_only_the_files_it_covers(tmp_path, monkeypatch):
    """`Range: bytes=0-0` with a token costs the client nothing; it laid out the whole tar (~50 ms
    for 1000 long names) and looked at every file on disk, each time, to send one byte."""
    from aiohttp import web
    from aiohttp.test_utils import TestClient, TestServer

    from runnerd.api.node import tarview
    from runnerd.domain import ResultFile, ResultType

    (tmp_path / "outputs").mkdir()
    outputs = []
    for i in range(20):
        (tmp_path / "outputs" / f"f{i}").write_bytes(b"%d" % i * 10)
        outputs.append(ResultFile(f"f{i}", len(b"%d" % i * 10), ResultType.OUTPUT, f"outputs/f{i}"))
    headers: list[str] = []
    looked_at: set[str] = set()  # the output files stat'ed (realpath stats each folder above them too)
    real_header, real_lstat = tarview._header, tarview.os.lstat

    def lstat(path, *args, **kwargs):
        if os.path.dirname(str(path)) == str(tmp_path / "outputs"):
            looked_at.add(os.path.basename(str(path)))
        return real_lstat(path, *args, **kwargs)

    monkeypatch.setattr(tarview, "_header", lambda name, *a, **k: headers.append(name) or real_header(name, *a, **k))
    monkeypatch.setattr(tarview.os, "lstat", lstat)

    async def handler(request: web.Request) -> web.StreamResponse:
        return await tarview.serve_outputs_tar(request, outputs, tmp_path, 1_700_000_000)

    app = web.Application()
    app.router.add_get("/outputs.tar", handler)
    async with TestClient(TestServer(app)) as client:
        whole = await (await client.get("/outputs.tar")).read()
        assert len(looked_at) == 20 and len(headers) == 21
        with tarfile.open(fileobj=io.BytesIO(whole)) as tar:
            assert tar.extractfile("outputs/f7").read() == b"7" * 10
        headers.clear(), looked_at.clear()
        first = await client.get("/outputs.tar", headers={"Range": "bytes=0-0"})
        assert first.status == 206 and await first.read() == whole[:1]
        assert headers == [] and looked_at == set()  # the folder's header: no file's bytes
        last = await client.get("/outputs.tar", headers={"Range": "bytes=-1100"})  # the last file and the end
        assert await last.read() == whole[-1100:]
        assert headers == [] and looked_at == {"f19"}
