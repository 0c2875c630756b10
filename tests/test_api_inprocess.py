"""SPEC §2's signatures, nonces, error shape and start policy, in-process: the daemon runs in the
test's event loop on the FakeRuntime (tests/inprocess.py), behind aiohttp's test client, so none of
these needs Docker. Every answer is still checked against the OpenAPI document (`conform`).

Moved here from tests/test_api_conformance.py and tests/test_review_r1.py with their assertions.
What stays over real HTTP to a real daemon there: the whole Ocean flow (both signature styles, the
nonce, results), the nonce race, one policy refusal, the trusted algorithm that runs, the transport's
own refusals (413, 414, a deeply nested body), unknown routes and byte ranges.
"""

from __future__ import annotations

import secrets
import sqlite3
import time
from typing import Any

import httpx
import pytest

from runnerd.identity import NodeIdentity
from tests.fakes import Outcome
from tests.helpers import BUSYBOX_IMAGE, PY_IMAGE, dataset, raw
from tests.inprocess import AsyncOceanStyle, writes_outputs
from tests.test_api_conformance import API, POLICY_CASES, REAL_POLICY_CASES, shape_body, write_catalog
from tests.test_openapi import assert_error_shape, conform, document

JSON = {"content-type": "application/json"}
ANY_FIELD = "<any field>"  # runnerd names it "documentId" here; "dataset.documentId" would be as right
SECRET_OUTPUTS = {"secret-report.csv": "top,secret\n", "second-file.txt": "2"}


@pytest.fixture
async def ocean(inprocess) -> AsyncOceanStyle:
    return await AsyncOceanStyle(inprocess.http).discover()


def secret_algorithm(inprocess) -> None:
    """What SECRET_ALGO of tests/test_api_conformance.py does, as the fake's algorithm container."""
    inprocess.fake.script(Outcome(logs="very private log line\n", on_start=writes_outputs(SECRET_OUTPUTS)),
                          image=PY_IMAGE, step="algorithm")


@pytest.fixture
async def finished(inprocess):
    """Two completed jobs of one owner, for the ownership and bad-input tests."""
    secret_algorithm(inprocess)
    owner = await AsyncOceanStyle(inprocess.http).discover()
    did = dataset(inprocess.assets)
    ids = [(await owner.start(did, raw("print('secret')")))["jobId"] for _ in range(2)]
    jobs = [await owner.wait(j) for j in ids]
    assert [j["status"] for j in jobs] == [70, 70], jobs
    return owner, did, jobs


# -- computeEnvironments ------------------------------------------------------------------------


async def test_environments_flat_list_and_keyed_by_chain(ocean):
    flat = await ocean.environments()
    assert isinstance(flat, list) and {e["id"] for e in flat} >= {"ocean-compute", "small"}
    for env in flat:
        assert env["nCPU"] == env["cpuNumber"] and env["nGPU"] == env["gpuNumber"]
        assert isinstance(env["currentJobs"], int) and isinstance(env["queuedJobs"], int)
        assert float(env["priceMin"]) == 0 and env["consumerAddress"].startswith("0x")
    assert next(e for e in flat if e["id"] == "small")["maxJobs"] == 1
    keyed = await ocean.environments(chainId=str(ocean.chain_ids[0]))
    assert list(keyed) == [str(ocean.chain_ids[0])]
    assert [e["id"] for e in keyed[str(ocean.chain_ids[0])]] == [e["id"] for e in flat]
    assert 8996 in ocean.chain_ids and list(await ocean.environments(chainId="8996")) == ["8996"]
    assert await ocean.environments(chainId="424242") == {"424242": []}  # a chain this node does not serve


# -- nonces -------------------------------------------------------------------------------------


async def _signed_status(client: AsyncOceanStyle, nonce: Any) -> httpx.Response:
    return await client.status(nonce=nonce)


async def test_nonce_must_be_strictly_greater(ocean):
    assert (await _signed_status(ocean, 5)).status_code == 200
    assert await ocean.stored_nonce() == 5
    for stale in (5, 4, "5", "4.99"):
        r = await _signed_status(ocean, stale)
        assert r.status_code == 401 and assert_error_shape(r)["code"] == "invalid_nonce", (stale, r.text)
    assert await ocean.stored_nonce() == 5
    assert (await _signed_status(ocean, 6)).status_code == 200
    # compared as decimals, not as text: "10" > "9"
    assert (await _signed_status(ocean, 9)).status_code == 200
    assert (await _signed_status(ocean, 10)).status_code == 200
    assert await ocean.stored_nonce() == 10


async def test_nonce_formats_in_the_wild_compare_as_decimals(ocean):
    legacy = "1693212345678.123"  # ocean.py < 3.1: str(timestamp() * 1000)
    assert (await _signed_status(ocean, legacy)).status_code == 200
    assert float(await ocean.stored_nonce()) == float(legacy)
    for stale in ("1693212345678", legacy, "1693212345678.1229", "1693212345678.12"):
        assert (await _signed_status(ocean, stale)).status_code == 401, stale
    assert (await _signed_status(ocean, "1693212345678.124")).status_code == 200
    # ocean.py's next nonce after a float one: int(ceil(float(n))) + 1
    assert await ocean.next_nonce() == 1693212345680
    assert (await _signed_status(ocean, await ocean.next_nonce())).status_code == 200
    time_ns = "1764300000123456789"  # 19 digits, Provider's time.time_ns()
    assert (await _signed_status(ocean, time_ns)).status_code == 200
    assert await ocean.stored_nonce() == int(time_ns)
    assert (await _signed_status(ocean, "1693212345681")).status_code == 401
    assert (await _signed_status(ocean, "1764300000123456788")).status_code == 401
    assert (await _signed_status(ocean, "1764300000123456789.5")).status_code == 200
    assert (await _signed_status(ocean, "1764300000123456789.25")).status_code == 401
    assert (await _signed_status(ocean, "1764300000123456790")).status_code == 200
    assert await ocean.stored_nonce() == 1764300000123456790


async def test_nonce_read_never_writes(inprocess, ocean):
    stranger = "0x" + secrets.token_hex(20)
    first = conform(await inprocess.http.get(f"{API}/nonce", params={"userAddress": stranger}))
    second = conform(await inprocess.http.get(f"{API}/nonce", params={"userAddress": stranger.upper()
                                                                      .replace("0X", "0x")}))
    assert first.json() == second.json() == {"nonce": 0}
    assert await ocean.stored_nonce() == await ocean.stored_nonce() == 0
    assert (await _signed_status(ocean, 3)).status_code == 200
    assert await ocean.stored_nonce() == await ocean.stored_nonce() == 3
    with sqlite3.connect(f"file:{inprocess.data_dir / 'runnerd.db'}?mode=ro", uri=True) as db:
        tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        assert "nonces" in tables
        assert db.execute("SELECT COUNT(*) FROM nonces WHERE address = ?", (stranger.lower(),)).fetchone() == (0,)


# -- ownership and capability tokens ------------------------------------------------------------


def _reveals_nothing(r: httpx.Response, owner: AsyncOceanStyle, job: dict) -> None:
    assert r.status_code == 404, r.text
    body = assert_error_shape(r)
    assert body["code"] == "not_found"
    text = r.text.lower()
    assert owner.address.lower() not in text and owner.address[2:].lower() not in text
    for entry in job["results"]:
        assert entry["filename"].lower() not in text
    assert "secret" not in text and "private" not in text


async def test_other_owner_gets_404_on_every_route_and_learns_nothing(inprocess, finished):
    owner, did, (job, _) = finished
    stranger = await AsyncOceanStyle(inprocess.http).discover()
    job_id = job["jobId"]
    _reveals_nothing(await stranger.status(job_id), owner, job)
    _reveals_nothing(await stranger.status("", did), owner, job)  # by documentId
    _reveals_nothing(await stranger.stop_py(job_id), owner, job)
    _reveals_nothing(await stranger.stop_js(job_id, did), owner, job)
    _reveals_nothing(await stranger.delete_py(job_id), owner, job)
    _reveals_nothing(await stranger.delete_js(job_id, did), owner, job)
    for entry in job["results"]:
        _reveals_nothing(await stranger.result(job_id, entry["index"]), owner, job)
    nonce = await stranger.next_nonce()
    logs = await stranger.http.get(f"{API}/computeLogs", params={
        "consumerAddress": stranger.address, "jobId": job_id, "nonce": nonce,
        "signature": stranger.sign(f"{stranger.address}{job_id}", nonce)})
    _reveals_nothing(conform(logs), owner, job)
    # without a jobId a stranger sees, stops and deletes only their own jobs: none
    assert (await stranger.status()).json() == []
    # (a stop or delete of every job is signed over runnerd's own action text, SPEC §2)
    for name, action in (("computeStop", "computeStop"), ("computeDelete", "computeDelete")):
        nonce = await stranger.next_nonce()
        own = {"consumerAddress": stranger.address, "nonce": nonce,
               "signature": stranger.sign(f"runnerd:{action}:{stranger.address}", nonce)}
        assert (await stranger.call(name, params=own)).json() == []
    # and the owner's job is untouched
    again = await owner.job(job_id)
    assert again["status"] == 70 and again["results"] == job["results"] and again["stopreq"] == 0
    assert (await owner.result(job_id, 0)).status_code == 200


async def test_capability_token_opens_one_result_of_one_job(inprocess, finished):
    _, _, (a, b) = finished
    http = inprocess.http
    link = httpx.URL(a["resultsUrls"][0])
    assert conform(await http.get(link)).status_code == 200
    index = int(link.params["index"])
    other_index = next(r["index"] for r in a["results"] if r["index"] != index)

    async def denied(url: httpx.URL) -> None:
        r = conform(await http.get(url))
        assert r.status_code == 401 and assert_error_shape(r)["code"] == "invalid_token", r.text

    await denied(link.copy_set_param("index", str(other_index)))  # another result of the same job
    await denied(link.copy_set_param("jobId", b["jobId"]))  # the same index of another job
    await denied(link.copy_set_param("token", secrets.token_hex(20)))  # forged
    await denied(link.copy_set_param("expires", str(int(link.params["expires"]) + 1)))  # extended
    # an expired token that was genuinely minted (the node key is readable by the test, not by clients)
    identity = NodeIdentity.load_or_create(inprocess.data_dir)
    expires, token = identity.mint(a["jobId"], index, 60, now=time.time() - 3600)
    await denied(link.copy_set_param("expires", str(expires)).copy_set_param("token", token))
    expires, token = identity.mint(a["jobId"], index, 60)  # the same, unexpired: accepted
    assert conform(await http.get(link.copy_set_param("expires", str(expires)).copy_set_param("token", token))) \
        .status_code == 200
    # the log URL is the algorithmLog entry's
    log_index = next(r["index"] for r in a["results"] if r["type"] == "algorithmLog")
    assert httpx.URL(a["algorithmLogUrl"]).params["index"] == str(log_index)
    assert "very private log line" in (await http.get(a["algorithmLogUrl"])).text


# -- start-time policy (reference/provider-compute.md §8) ---------------------------------------

INPROCESS_POLICY_CASES = [c for c in POLICY_CASES if c not in REAL_POLICY_CASES]


@pytest.mark.parametrize("case", INPROCESS_POLICY_CASES, ids=[c[0] for c in INPROCESS_POLICY_CASES])
async def test_start_policy_codes(inprocess, ocean, case):
    catalog = write_catalog(inprocess.assets)
    _, key, build, extra, code, field = case
    body = await ocean.start_body(catalog[key], build(catalog) if build else {})
    r = await ocean.call("computeStart", json=shape_body(body, catalog, build, extra))
    assert r.status_code == 400, r.text
    body = assert_error_shape(r)
    assert (body["code"], body.get("field")) == (code, field), body
    assert (await ocean.status()).json() == []  # nothing was started
    assert inprocess.fake.history == []  # and no container was ever created


# -- bad input: a clear 4xx in the one shape, and nothing lost ----------------------------------


async def _bad_requests(c: AsyncOceanStyle, did: str, job_id: str
                        ) -> list[tuple[str, str, str, dict, int, str, str | None]]:
    """(id, method, path, httpx kwargs, status, code, field) — each must fail before acting."""
    start = await c.start_body(did, raw("print(1)"))
    nonce = await c.next_nonce()
    signed = {"consumerAddress": c.address, "nonce": nonce, "signature": c.sign(f"{c.address}{job_id}", nonce)}
    res_signed = {"consumerAddress": c.address, "nonce": nonce}
    listing = {"consumerAddress": c.address, "nonce": nonce, "signature": c.sign(c.address, nonce)}
    compute, result = f"{API}/compute", f"{API}/computeResult"
    return [
        ("start_malformed_json", "POST", compute, {"content": b'{"nonce": 1,', "headers": JSON}, 400, "invalid_json",
         None),
        ("start_not_utf8", "POST", compute, {"content": b'{"a": "\xff\xfe"}', "headers": JSON}, 400, "invalid_json",
         None),
        ("start_array_body", "POST", compute, {"json": [start]}, 400, "invalid_json", None),
        ("start_string_body", "POST", compute, {"json": "hello"}, 400, "invalid_json", None),
        ("start_empty_body", "POST", compute, {}, 400, "missing", "dataset"),
        ("start_nonce_object", "POST", compute, {"json": {**start, "nonce": {"n": 1}}}, 400, "invalid", "nonce"),
        ("start_nonce_list", "POST", compute, {"json": {**start, "nonce": [1]}}, 400, "invalid", "nonce"),
        ("start_nonce_bool", "POST", compute, {"json": {**start, "nonce": True}}, 400, "invalid", "nonce"),
        ("start_nonce_negative", "POST", compute, {"json": {**start, "nonce": "-1"}}, 400, "invalid", "nonce"),
        ("start_nonce_float", "POST", compute, {"json": {**start, "nonce": 1.5}}, 400, "invalid", "nonce"),
        ("start_nonce_hex", "POST", compute, {"json": {**start, "nonce": "0x10"}}, 400, "invalid", "nonce"),
        ("start_dataset_string", "POST", compute, {"json": {**start, "dataset": did}}, 400, "missing", "dataset"),
        ("start_dataset_missing", "POST", compute, {"json": {k: v for k, v in start.items() if k != "dataset"}},
         400, "missing", "dataset"),
        ("start_consumer_missing", "POST", compute,
         {"json": {k: v for k, v in start.items() if k != "consumerAddress"}}, 400, "missing", "consumerAddress"),
        ("start_consumer_not_address", "POST", compute, {"json": {**start, "consumerAddress": "alice"}}, 400,
         "invalid", "consumerAddress"),
        ("start_consumer_number", "POST", compute, {"json": {**start, "consumerAddress": 12}}, 400, "invalid",
         "consumerAddress"),
        ("start_consumer_overlong", "POST", compute, {"json": {**start, "consumerAddress": "0x" + "a" * 300}}, 400,
         "invalid", "consumerAddress"),
        ("start_nonce_missing", "POST", compute, {"json": {k: v for k, v in start.items() if k != "nonce"}}, 400,
         "missing", "nonce"),
        ("start_nonce_overlong", "POST", compute, {"json": {**start, "nonce": "1" * 300}}, 400, "invalid", "nonce"),
        ("start_signature_missing", "POST", compute, {"json": {k: v for k, v in start.items() if k != "signature"}},
         401, "invalid_signature", "signature"),
        ("start_signature_number", "POST", compute, {"json": {**start, "signature": 12345}}, 401,
         "invalid_signature", "signature"),
        ("start_signature_garbage", "POST", compute, {"json": {**start, "signature": "0x" + "zz" * 65}}, 401,
         "invalid_signature", "signature"),
        ("start_signature_of_other_text", "POST", compute,
         {"json": {**start, "signature": c.sign(f"{c.address}{did}x", start["nonce"])}}, 401, "invalid_signature",
         "signature"),
        ("start_documentId_object", "POST", compute, {"json": {**start, "dataset": {"documentId": {"a": 1}}}}, 400,
         "invalid", ANY_FIELD),
        ("status_nothing", "GET", compute, {}, 400, "missing", "consumerAddress"),
        ("status_jobId_overlong", "GET", compute, {"params": {**signed, "jobId": "a" * 65}}, 400, "invalid",
         "jobId"),
        ("status_documentId_overlong", "GET", compute, {"params": {**signed, "documentId": "d" * 257}}, 400,
         "invalid", "documentId"),
        ("status_json_array_body", "GET", compute, {"content": b"[]", "headers": JSON}, 400, "invalid_json", None),
        ("status_bad_signature", "GET", compute, {"params": {**signed, "signature": "0x" + "00" * 65}}, 401,
         "invalid_signature", "signature"),
        ("stop_malformed_json", "PUT", compute, {"content": b"{", "headers": JSON}, 400, "invalid_json", None),
        ("stop_nonce_object", "PUT", compute, {"json": {**signed, "nonce": {}, "jobId": job_id}}, 400, "invalid",
         "nonce"),
        ("stop_jobId_list", "PUT", compute, {"json": {**signed, "jobId": [job_id]}}, 400, "invalid", "jobId"),
        # ocean.js 3.x sends no nonce (it is taken as stored + 1): this signature is over stored + 2
        ("delete_without_nonce_like_oceanjs", "DELETE", compute,
         {"json": {"consumerAddress": c.address, "jobId": job_id,
                   "signature": c.sign(f"{c.address}{job_id}", nonce + 1)}}, 401, "invalid_signature", "signature"),
        ("stop_all_over_oceans_text", "PUT", compute, {"json": listing}, 401, "invalid_signature", "signature"),
        ("delete_all_over_oceans_text", "DELETE", compute, {"json": listing}, 401, "invalid_signature",
         "signature"),
        ("delete_json_array", "DELETE", compute, {"json": [signed]}, 400, "invalid_json", None),
        ("result_nothing", "GET", result, {}, 400, "missing", "jobId"),
        ("result_index_missing", "GET", result, {"params": {**res_signed, "jobId": job_id}}, 400, "missing", "index"),
        ("result_index_negative", "GET", result, {"params": {**res_signed, "jobId": job_id, "index": "-1"}}, 400,
         "invalid", "index"),
        ("result_index_text", "GET", result, {"params": {**res_signed, "jobId": job_id, "index": "first"}}, 400,
         "invalid", "index"),
        ("result_index_float", "GET", result, {"params": {**res_signed, "jobId": job_id, "index": "1.0"}}, 400,
         "invalid", "index"),
        ("result_index_overlong", "GET", result, {"params": {**res_signed, "jobId": job_id, "index": "1" * 10}},
         400, "invalid", "index"),
        ("result_token_without_expires", "GET", result,
         {"params": {"jobId": job_id, "index": "0", "token": "0" * 40}}, 400, "missing", "expires"),
        ("result_token_bad_expires", "GET", result,
         {"params": {"jobId": job_id, "index": "0", "token": "0" * 40, "expires": "soon"}}, 401, "invalid_token",
         "token"),
        ("result_signature_for_other_index", "GET", result,
         {"params": {**res_signed, "jobId": job_id, "index": "1", "signature": c.sign(f"{c.address}{job_id}0", nonce)}},
         401, "invalid_signature", "signature"),
        ("logs_nothing", "GET", f"{API}/computeLogs", {}, 400, "missing", "jobId"),
        ("logs_unsigned", "GET", f"{API}/computeLogs", {"params": {"jobId": job_id, "consumerAddress": c.address}},
         400, "missing", "nonce"),
        ("nonce_nothing", "GET", f"{API}/nonce", {}, 400, "missing", "userAddress"),
        ("nonce_not_address", "GET", f"{API}/nonce", {"params": {"userAddress": "0x1234"}}, 400, "invalid",
         "userAddress"),
        # initializeCompute (#16): unsigned, so nothing to consume; each field as Provider names it
        ("initialize_nothing", "POST", f"{API}/initializeCompute", {"json": {}}, 400, "missing", "datasets"),
        ("initialize_past", "POST", f"{API}/initializeCompute", {"json": {
            "datasets": [{"documentId": did, "serviceId": "compute"}], "algorithm": raw("print(1)"),
            "compute": {"env": "ocean-compute", "validUntil": 1}, "consumerAddress": c.address}}, 400, "invalid",
         "compute.validUntil"),
        ("initialize_no_env", "POST", f"{API}/initializeCompute", {"json": {
            "datasets": [{"documentId": did, "serviceId": "compute"}], "algorithm": raw("print(1)"),
            "compute": {"env": "nope", "validUntil": 2**31}, "consumerAddress": c.address}}, 400,
         "invalid_environment", "compute.env"),
        ("fileinfo_url_form", "POST", f"{API}/fileinfo", {"json": {"type": "url", "url": "http://10.0.0.1/"}}, 400,
         "missing", "did"),
        ("fileinfo_unknown", "POST", f"{API}/fileinfo", {"json": {"did": "did:op:" + "0" * 64, "serviceId": "x"}},
         400, "did_not_found", "did"),
        ("fileinfo_bad_service", "POST", f"{API}/fileinfo", {"json": {"did": did, "serviceId": "nope"}}, 400,
         "not_found", "serviceId"),
        ("environments_bad_chain", "GET", f"{API}/computeEnvironments", {"params": {"chainId": "mainnet"}}, 400,
         "invalid", "chainId"),
        ("environments_chain_overlong", "GET", f"{API}/computeEnvironments", {"params": {"chainId": "1" * 21}}, 400,
         "invalid", "chainId"),
        # ocean-node's dialect under /c2d/v2 (#11): the same discipline
        *_node_bad_requests(c, did, job_id, nonce),
        # the web console (#14): a page of another site rebound to 127.0.0.1 names its own Host
        *((f"console_foreign_host_{path}", "GET", path, {"headers": {"Host": "attacker.example"}}, 401,
           "console_token", None)
          for path in ("/console", "/console/console.js", "/console/console.css", "/console/api/state")),
    ]


def _node_bad_requests(c: AsyncOceanStyle, did: str, job_id: str, nonce: int) -> list:
    node = "/c2d/v2/api/services"
    garbage = "0x" + "00" * 65
    signed = {"consumerAddress": c.address, "nonce": str(nonce), "signature": garbage}
    start = {**signed, "environment": "ocean-compute", "datasets": [{"documentId": did}], "algorithm": raw("print(1)")}
    token = {"address": c.address, "nonce": str(nonce), "signature": garbage}
    return [
        ("node_nonce_nothing", "GET", f"{node}/nonce", {}, 400, "missing", "userAddress"),
        ("node_free_no_environment", "POST", f"{node}/freeCompute", {"json": {}}, 400, "invalid_environment",
         "environment"),
        ("node_free_bad_signature", "POST", f"{node}/freeCompute", {"json": start}, 401, "invalid_signature",
         "signature"),
        ("node_free_malformed_json", "POST", f"{node}/freeCompute", {"content": b"{", "headers": JSON}, 400,
         "invalid_json", None),
        ("node_paid_no_environment", "POST", f"{node}/compute", {"json": {}}, 400, "invalid_environment",
         "environment"),
        ("node_status_nothing", "GET", f"{node}/compute", {}, 400, "missing", "consumerAddress"),
        ("node_status_listing_without_token", "GET", f"{node}/compute", {"params": {"consumerAddress": c.address}},
         401, "token_required", "Authorization"),
        ("node_status_bad_token", "GET", f"{node}/compute", {"params": {"jobId": job_id},
                                                            "headers": {"Authorization": "a.b.c"}}, 401,
         "invalid_token", "Authorization"),
        ("node_stop_nothing", "PUT", f"{node}/compute", {}, 400, "missing", "jobId"),
        ("node_stop_bad_signature", "PUT", f"{node}/compute", {"params": {**signed, "jobId": job_id}}, 401,
         "invalid_signature", "signature"),
        ("node_delete_nothing", "DELETE", f"{node}/compute", {}, 400, "missing", "jobId"),
        ("node_result_nothing", "GET", f"{node}/computeResult", {}, 400, "missing", "jobId"),
        ("node_result_index_text", "GET", f"{node}/computeResult",
         {"params": {**signed, "jobId": job_id, "index": "first"}}, 400, "invalid", "index"),
        ("node_logs_nothing", "GET", f"{node}/computeStreamableLogs", {}, 400, "missing", "jobId"),
        ("node_logs_unsigned", "GET", f"{node}/computeStreamableLogs",
         {"params": {"jobId": job_id, "consumerAddress": c.address}}, 400, "missing", "nonce"),
        ("node_token_nothing", "POST", f"{node}/auth/token", {"json": {}}, 400, "missing", "address"),
        ("node_token_bad_signature", "POST", f"{node}/auth/token", {"json": token}, 401, "invalid_signature",
         "signature"),
        ("node_invalidate_nothing", "POST", f"{node}/auth/token/invalidate", {"json": {}}, 400, "missing", "token"),
    ]


@pytest.fixture
async def bad_cases(finished):
    owner, did, (job, _) = finished
    return await _bad_requests(owner, did, job["jobId"])


async def test_bad_input_is_a_clear_4xx_in_the_one_shape_and_loses_nothing(inprocess, finished, bad_cases):
    owner, _, jobs = finished
    before = await owner.stored_nonce()
    seen = []
    for name, method, path, kwargs, status, code, field in bad_cases:
        r = conform(await inprocess.http.request(method, path, **kwargs))
        body = assert_error_shape(r)
        seen.append((name, r.status_code, body["code"], body.get("field")))
        if field is ANY_FIELD:
            field = body.get("field")
        assert (r.status_code, body["code"], body.get("field")) == (status, code, field), (name, body)
    assert len(seen) == len(bad_cases)
    # nothing was consumed or changed: the nonce, the jobs, their results
    assert await owner.stored_nonce() == before
    for job in jobs:
        now = await owner.job(job["jobId"])
        assert (now["status"], now["results"], now["stopreq"]) == (70, job["results"], 0)
    assert (await inprocess.http.get("/health")).status_code == 200


async def test_every_documented_failure_route_is_exercised(bad_cases):
    covered = {(m.lower(), p) for _, m, p, *_ in bad_cases}
    for path, item in document()["paths"].items():
        if path.startswith("/site/"):
            continue  # the internal job-site routes (#17): their refusals are in tests/test_site_transfer.py
        for method, op in item.items():
            if any(code in op["responses"] for code in ("400", "401")):
                assert (method, path) in covered, f"no bad-input case for {method.upper()} {path}"


async def test_wrong_method_is_405_with_allow(inprocess):
    for path in sorted(document()["paths"]):
        documented = {m.upper() for m in document()["paths"][path]}
        for method in ("PATCH", "POST", "PUT", "DELETE", "OPTIONS"):
            if method in documented:
                continue
            concrete = path.replace("{did}", "did:op:" + "0" * 64).replace("{jobId}", "0" * 32)
            concrete = concrete.replace("{step}", "filter")
            r = await inprocess.http.request(method, concrete)
            assert r.status_code == 405, (path, method, r.status_code)
            assert assert_error_shape(r)["code"] == "method_not_allowed"
            allowed = {m.strip() for m in r.headers["Allow"].split(",")}
            assert allowed - {"HEAD"} == documented, (path, method, allowed)


async def test_cors_preflight_and_header(inprocess):
    r = await inprocess.http.options(f"{API}/compute", headers={"Origin": "https://market.example",
                                                                "Access-Control-Request-Method": "POST"})
    assert r.status_code == 204 and r.headers["Access-Control-Allow-Origin"] == "*"
    assert (await inprocess.http.get(f"{API}/nonce")).headers["Access-Control-Allow-Origin"] == "*"


# -- robustness: each of these was a 500 or a crash when this suite was written (fixed since) -----


@pytest.mark.parametrize("path, params, status, code, field", [
    (f"{API}/computeResult", {"jobId": "a" * 32, "index": "²", "nonce": "1"}, 400, "invalid", "index"),
    (f"{API}/computeResult", {"jobId": "a" * 32, "index": "0", "expires": "²", "token": "0" * 40}, 401,
     "invalid_token", "token"),
    # Arabic-Indic 3:
    (f"{API}/computeResult", {"jobId": "a" * 32, "index": "٣", "nonce": "1"}, 400, "invalid", "index"),
    (f"{API}/computeEnvironments", {"chainId": "²"}, 400, "invalid", "chainId"),
    (f"{API}/computeEnvironments", {"chainId": "٨٩٩٦"}, 400, "invalid", "chainId"),
], ids=["index", "expires", "index-arabic-indic", "chainId", "chainId-arabic-indic"])
async def test_unicode_digits_are_a_4xx_not_a_500(inprocess, path, params, status, code, field):
    """str.isdigit() accepts "²" (which int() refuses) and "٣" (which int() reads as 3)."""
    r = await inprocess.http.get(path, params=params)
    body = assert_error_shape(r)
    assert (r.status_code, body["code"], body.get("field")) == (status, code, field), r.text


async def test_non_ascii_result_token_is_a_401_not_a_500(inprocess):
    r = conform(await inprocess.http.get(f"{API}/computeResult",
                                         params={"jobId": "a" * 32, "index": "0", "expires": "99999999999",
                                                 "token": "é"}))
    assert r.status_code == 401 and assert_error_shape(r)["code"] == "invalid_token"


# -- signatures replayed (the adversarial review of the #10 fixes, r1) ---------------------------


async def test_a_used_result_signature_is_not_a_delete(inprocess):
    """Ocean's computeResult text `address + jobId + index + nonce` is the delete text
    `address + jobId + "" + nonce'` with nonce' = index followed by nonce, a nonce never used."""
    owner = await AsyncOceanStyle(inprocess.http).discover()
    did = dataset(inprocess.assets)
    job = await owner.start(did, raw("print('hello')"))
    done = await owner.wait(job["jobId"])
    assert len(done["results"]) >= 2
    nonce = await owner.next_nonce()
    signature = owner.sign(f"{owner.address}{job['jobId']}1", nonce, "py")
    r = await owner.call("computeResult", params={"consumerAddress": owner.address, "jobId": job["jobId"],
                                                  "index": 1, "nonce": nonce, "signature": signature})
    assert r.status_code == 200, r.text
    # Someone who saw that URL (a proxy's log, a shared link) replays its signature as a delete.
    attacker = await AsyncOceanStyle(inprocess.http).discover()
    r = await attacker.call("computeDelete", params={"consumerAddress": owner.address, "jobId": job["jobId"],
                                                     "nonce": f"1{nonce}", "signature": signature})
    assert r.status_code == 401, r.text
    assert (await owner.job(job["jobId"]))["status"] == 70  # still there


async def test_a_used_result_signature_is_not_a_signed_status_read(inprocess):
    """The same text is a signed status read with nonce index+nonce: one used result-download URL
    (say of the algorithm log) would yield capability URLs for every output."""
    inprocess.fake.script(Outcome(on_start=writes_outputs({"secret.txt": "the data"})), image=PY_IMAGE,
                          step="algorithm")
    owner = await AsyncOceanStyle(inprocess.http).discover()
    did = dataset(inprocess.assets)
    job = await owner.start(did, raw("open('/data/outputs/secret.txt', 'w').write('the data')"))
    done = await owner.wait(job["jobId"])
    log_index = next(r["index"] for r in done["results"] if r["type"] == "algorithmLog")
    assert log_index >= 1
    nonce = await owner.next_nonce()
    signature = owner.sign(f"{owner.address}{job['jobId']}{log_index}", nonce, "py")
    r = await owner.call("computeResult", params={"consumerAddress": owner.address, "jobId": job["jobId"],
                                                  "index": log_index, "nonce": nonce, "signature": signature})
    assert r.status_code == 200, r.text
    r = await inprocess.http.get(f"{API}/compute", params={
        "consumerAddress": owner.address, "jobId": job["jobId"], "nonce": f"{log_index}{nonce}",
        "signature": signature})
    assert r.status_code == 401 and assert_error_shape(r)["code"] == "invalid_signature", r.text
    r = await inprocess.http.get(f"{API}/computeLogs", params={  # nor a log read
        "consumerAddress": owner.address, "jobId": job["jobId"], "nonce": f"{log_index}{nonce}",
        "signature": signature})
    assert r.status_code == 401, r.text


# -- per-owner limits (issue #10 item 8; the results budget stays in tests/test_owner_limits.py) -----

OWNERS_ENV = {"id": "owners", "nCPU": 0.25, "ramGB": 0.25, "diskGB": 0.1, "maxJobs": 1, "maxQueue": 20,
              "maxJobDuration": 120, "diskQuota": "none"}


@pytest.fixture
async def owners(tmp_path, aiohttp_client, request):
    """A daemon with maxJobsPerOwner 2 and no start rate, on the fakes; `parametrize("owners",
    [{key: value}], indirect=True)` changes top-level keys."""
    from contextlib import AsyncExitStack

    from tests.helpers import base_config
    from tests.inprocess import start

    keys = {"maxJobsPerOwner": 2, "startsPerMinutePerOwner": 0, **getattr(request, "param", {})}
    async with AsyncExitStack() as stack:
        node = await start(stack, tmp_path, aiohttp_client, base_config(environments=[dict(OWNERS_ENV)], **keys))
        node.fake.script(Outcome(duration=None), image=BUSYBOX_IMAGE)  # SLEEPER: runs until stopped
        yield node


SLEEPER = raw("import time\ntime.sleep(120)", image=BUSYBOX_IMAGE)


async def test_an_owner_at_max_jobs_is_refused_while_another_owner_starts(owners):
    did = dataset(owners.assets)
    greedy, other = await AsyncOceanStyle(owners.http).discover(), await AsyncOceanStyle(owners.http).discover()
    mine = [(await greedy.start(did, SLEEPER, "owners"))["jobId"] for _ in range(2)]
    refused = await greedy.call("computeStart", json=await greedy.start_body(did, SLEEPER, "owners"))
    body = assert_error_shape(refused)
    assert refused.status_code == 429 and body["code"] == "owner_limit", body
    assert "maxJobsPerOwner 2" in body["error"] and "stop one" in body["error"]
    theirs = (await other.start(did, raw("print('mine')"), "owners"))["jobId"]  # not affected
    await greedy.stop_py(mine[1])  # queued: ends at once and frees its place
    mine.append((await greedy.start(did, raw("print(1)"), "owners"))["jobId"])
    for job_id in mine:
        await greedy.stop_py(job_id)
    assert (await other.wait(theirs))["status"] == 70
    for job_id in mine:
        await greedy.wait(job_id)


@pytest.mark.parametrize("owners", [{"startsPerMinutePerOwner": 2, "maxJobsPerOwner": 10}], indirect=True)
async def test_the_n_plus_first_start_in_a_minute_answers_429_with_retry_after(owners):
    did = dataset(owners.assets)
    client, other = await AsyncOceanStyle(owners.http).discover(), await AsyncOceanStyle(owners.http).discover()
    ids = [(await client.start(did, raw("print(1)"), "owners"))["jobId"] for _ in range(2)]
    refused = await client.call("computeStart", json=await client.start_body(did, raw("print(1)"), "owners"))
    assert refused.status_code == 429 and refused.json()["code"] == "owner_limit", refused.text
    assert "startsPerMinutePerOwner 2" in refused.json()["error"]
    assert refused.headers["Retry-After"] == "30"  # a token every 30 s, and no time has passed
    await owners.clock.advance(29.5)
    again = await client.call("computeStart", json=await client.start_body(did, raw("print(1)"), "owners"))
    assert again.status_code == 429 and again.headers["Retry-After"] == "1"  # rounded up, never 0
    ids_other = [(await other.start(did, raw("print(1)"), "owners"))["jobId"]]  # per owner
    await owners.clock.advance(0.5)
    ids.append((await client.start(did, raw("print(1)"), "owners"))["jobId"])  # the token is back
    for c, job_ids in ((client, ids), (other, ids_other)):
        for job_id in job_ids:
            assert (await c.wait(job_id))["status"] == 70
