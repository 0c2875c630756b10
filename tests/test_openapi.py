"""The OpenAPI document (runnerd/api/openapi.yaml, served at GET /openapi.json) stays honest:
it is valid OpenAPI 3.0, it lists exactly the routes the router has, and what a real daemon answers
for a real job validates against it (status, media type, headers, body).

`conform(response)` is also used by the conformance suite to check every response it sees."""

from __future__ import annotations

import json
import re
import secrets
from functools import lru_cache
from typing import Any

import httpx
import jsonschema_rs
import pytest
import schemathesis
from schemathesis.specs.openapi.definitions import OPENAPI_30_VALIDATOR

from runnerd import __version__
from runnerd.api.app import create_app
from runnerd.api.discovery import SERVICE_ENDPOINTS
from runnerd.api.docs import document
from runnerd.api.node.discovery import SERVICE_ENDPOINTS as NODE_ENDPOINTS
from runnerd.config import parse_config
from tests.helpers import dataset, raw, wait_done

TRACEBACK = re.compile(r"Traceback \(most recent call last\)|File \"[^\"]+\", line \d+|\bat 0x[0-9a-f]{6,}\b")


@lru_cache(maxsize=1)
def schema() -> Any:
    return schemathesis.openapi.from_dict(document())


def _resolve(node: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in node:
        target: Any = document()
        for part in node["$ref"].removeprefix("#/").split("/"):
            target = target[part]
        node = target
    return node


def _header_ok(value: str, header_schema: dict[str, Any]) -> bool:
    header_schema = _resolve(header_schema)
    instance: Any = value
    if header_schema.get("type") == "integer":
        if not value.isdigit():
            return False
        instance = int(value)
    return jsonschema_rs.validator_for(header_schema).is_valid(instance)


def assert_error_shape(response: httpx.Response) -> dict[str, Any]:
    """SPEC §2: `{"error": str, "code": str, "field"?: str}` and never a traceback."""
    assert response.headers.get("content-type", "").startswith("application/json"), \
        (response.status_code, response.headers.get("content-type"), response.text[:300])
    body = response.json()
    assert isinstance(body, dict), body
    assert isinstance(body.get("error"), str) and body["error"], body
    assert isinstance(body.get("code"), str) and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_.\[\]]*", body["code"]), body
    assert "field" not in body or isinstance(body["field"], str), body
    assert not TRACEBACK.search(response.text), response.text
    return body


def conform(response: httpx.Response, path: str | None = None, method: str | None = None) -> httpx.Response:
    """Assert that a real response is what the document says for its operation: a documented status
    code, a documented media type, the documented required headers, and a body that validates."""
    method = (method or response.request.method).lower()
    path = path or response.request.url.path
    paths = document()["paths"]
    assert path in paths and method in paths[path], f"{method.upper()} {path} is not documented"
    if method == "head":
        return response
    responses = paths[path][method]["responses"]
    code = str(response.status_code)
    assert code in responses, f"{method.upper()} {path} answered {code}, documented: {sorted(responses)}: " \
                              f"{response.text[:300]}"
    definition = _resolve(responses[code])
    media = response.headers.get("content-type", "").split(";")[0].strip()
    if definition.get("content"):
        assert media in definition["content"], f"{method.upper()} {path} {code}: {media} not in " \
                                               f"{sorted(definition['content'])}"
    for name, header in definition.get("headers", {}).items():
        header = _resolve(header)
        if header.get("required"):
            assert name in response.headers, f"{method.upper()} {path} {code}: no {name} header"
        if name in response.headers:
            assert _header_ok(response.headers[name], header["schema"]), (name, response.headers[name])
    schema()[path][method.upper()].validate_response(response)
    if response.status_code >= 400:
        assert_error_shape(response)
    return response


# -- the document itself ------------------------------------------------------------------------


def test_document_is_valid_openapi_30():
    doc = document()
    assert doc["openapi"].startswith("3.0.")
    errors = [str(e) for e in OPENAPI_30_VALIDATOR.iter_errors(doc)]
    assert errors == []
    schema().validate()
    # every $ref resolves, and YAML did not turn a status code into an int key
    text = json.dumps(doc)
    for ref in set(re.findall(r'"\$ref": "([^"]+)"', text)):
        assert _resolve({"$ref": ref}), ref
    for path, item in doc["paths"].items():
        for method, op in item.items():
            assert all(isinstance(c, str) for c in op["responses"]), (path, method)


def _router_table(tmp_path) -> set[tuple[str, str]]:
    settings = parse_config({"environments": [{"id": "e"}]})
    app = create_app(settings, engine=None, store=None, identity=None, data_dir=tmp_path)  # type: ignore[arg-type]
    table = set()
    for route in app.router.routes():
        info = route.resource.get_info() if route.resource else {}
        path = info.get("path") or info.get("formatter")
        table.add((path, route.method.upper()))
    return table


def test_every_route_is_documented_and_vice_versa(tmp_path):
    routes = _router_table(tmp_path)
    gets = {p for p, m in routes if m == "GET"}
    # aiohttp answers HEAD for the unsigned GETs (the document says so once, in info.description);
    # signed reads consume a nonce, so they have no HEAD
    signed_reads = {"/api/services/compute", "/api/services/computeResult", "/api/services/computeLogs",
                    "/c2d/v2/api/services/computeResult", "/c2d/v2/api/services/computeStreamableLogs"}
    no_head = signed_reads | {"/site/v1/jobs/{jobId}/{step}/in"}  # #17: a HEAD would list the seed to send nothing
    assert {p for p, m in routes if m == "HEAD"} == gets - no_head
    routed = {(p, m) for p, m in routes if m != "HEAD"}
    documented = {(p, m.upper()) for p, item in document()["paths"].items() for m in item
                  if m in ("get", "put", "post", "delete", "patch", "options", "head")}
    assert routed - documented == set(), "routes missing from openapi.yaml"
    assert documented - routed == set(), "documented operations with no route"
    assert "HEAD" in document()["info"]["description"]


def test_advertised_service_endpoints_are_documented():
    paths = document()["paths"]
    for name, (method, path) in SERVICE_ENDPOINTS.items():
        assert method.lower() in paths[path], name
    required = _resolve(document()["components"]["schemas"]["Discovery"])["properties"]["serviceEndpoints"]["required"]
    assert set(required) == set(SERVICE_ENDPOINTS)


def test_the_node_dialects_service_endpoints_are_documented():
    """Each endpoint /c2d/v2 advertises is documented at /c2d/v2 + its path (ocean.js 8 joins them)."""
    paths = document()["paths"]
    for name, (method, path) in NODE_ENDPOINTS.items():
        documented = "/c2d/v2" + path.replace(":did", "{did}")
        assert method.lower() in paths[documented], name
    required = _resolve(document()["components"]["schemas"]["NodeDiscovery"])["properties"]["serviceEndpoints"]
    assert set(required["required"]) <= set(NODE_ENDPOINTS)


def test_every_operation_documents_the_error_shape():
    for path, item in document()["paths"].items():
        for method, op in item.items():
            for code, response in op["responses"].items():
                if int(code) < 400:
                    continue
                body = _resolve(response)["content"]["application/json"]["schema"]
                refs = json.dumps(body)
                assert "#/components/schemas/Error" in refs, (path, method, code)


def test_every_signed_operation_states_its_signed_text():
    doc = document()
    intro = doc["info"]["description"]
    for text in ("consumerAddress + dataset.documentId + nonce", "consumerAddress + jobId + documentId + nonce",
                 "consumerAddress + jobId + index + nonce", "strictly greater"):
        assert text in intro
    compute = doc["paths"]["/api/services/compute"]
    assert "consumerAddress + dataset.documentId + nonce" in compute["post"]["description"]
    for method in ("get", "put", "delete"):
        assert "consumerAddress + jobId + documentId + nonce" in compute[method]["description"]
    assert "consumerAddress + jobId + index + nonce" in \
        doc["paths"]["/api/services/computeResult"]["get"]["description"]


def test_status_object_documents_every_spec_field():
    status = document()["components"]["schemas"]["Status"]
    spec_fields = ("owner documentId jobId dateCreated dateFinished status statusText algorithmLogUrl resultsUrls "
                   "resultsDid agreementId inputDID algoDID environment stopreq removed results "
                   "terminationDetails error").split()
    extras = {"statusHistory", "restartedFrom", "usage"}  # runnerd's additions beyond SPEC §2 (usage: #15)
    assert set(status["required"]) == set(spec_fields) | extras == set(status["properties"])
    nullable = {k for k, v in status["properties"].items() if _resolve(v).get("nullable")}
    assert nullable == {"dateFinished", "algorithmLogUrl", "terminationDetails", "error", "restartedFrom", "usage"}


# -- as the daemon serves it ----------------------------------------------------------------------


async def test_served_document_is_the_yaml_file(inprocess):
    """In-process (tests/inprocess.py): the document is the app's, whatever runs the containers."""
    r = await inprocess.http.get("/openapi.json")
    conform(r)
    assert r.headers["content-type"].startswith("application/json")
    served = r.json()
    assert served == json.loads(json.dumps(document()))
    assert served["info"]["version"] == __version__
    assert (await inprocess.http.get("/openapi.json")).content == r.content  # loaded once, stable


WRITES = """
import json, os
os.makedirs("/data/outputs/sub", exist_ok=True)
open("/data/outputs/result.txt", "w").write("0123456789" * 10)
json.dump({"ok": True}, open("/data/outputs/sub/more.json", "w"))
print("hello from the algorithm")
"""


@pytest.mark.docker
def test_real_responses_validate_against_the_document(shared_daemon):
    url = shared_daemon.url
    did = dataset(shared_daemon.assets)
    client = shared_daemon.client()
    stranger = shared_daemon.client()
    api = f"{url}/api/services"

    conform(httpx.get(f"{url}/"))
    conform(httpx.get(f"{url}/health"))
    conform(httpx.get(f"{url}/metrics"))
    conform(httpx.get(f"{api}/nonce", params={"userAddress": client.address}))
    conform(httpx.get(f"{api}/computeEnvironments"))
    conform(httpx.get(f"{api}/computeEnvironments", params={"chainId": "8996"}))
    conform(httpx.get(f"{api}/computeEnvironments", params={"chainId": "1"}))

    body = {**client.signed(did), "environment": "ocean-compute", "algorithm": raw(WRITES),
            "dataset": {"documentId": did, "serviceId": "compute", "transferTxId": "0x" + secrets.token_hex(32)}}
    started = conform(httpx.post(f"{api}/compute", json=body)).json()
    assert started[0]["status"] == 1 and started[0]["dateFinished"] is None
    job_id = started[0]["jobId"]
    try:
        job = wait_done(client, job_id)
    finally:
        wait_done(client, job_id)
    assert job["status"] == 70, job

    status = conform(httpx.get(f"{api}/compute", params={**client.signed(job_id, ""), "jobId": job_id})).json()
    assert status[0]["dateFinished"] is not None and status[0]["terminationDetails"]["exitCode"] == 0
    conform(httpx.get(f"{api}/compute", params=client.signed("", "")))
    by_type = {r["type"]: r for r in job["results"]}
    assert {"output", "algorithmLog"} <= set(by_type)
    out = next(r for r in job["results"] if r["filename"].endswith("result.txt"))
    whole = conform(httpx.get(f"{api}/computeResult",
                              params={**client.signed(job_id, str(out["index"])), "jobId": job_id,
                                      "index": str(out["index"])}))
    assert whole.content == b"0123456789" * 10
    assert whole.headers["Content-Disposition"] == f"attachment;filename={out['filename'].split('/')[-1]}"
    part = conform(httpx.get(f"{api}/computeResult", headers={"Range": "bytes=10-19"},
                             params={**client.signed(job_id, str(out["index"])), "jobId": job_id,
                                     "index": str(out["index"])}))
    assert part.status_code == 206 and part.content == b"0123456789"
    assert part.headers["Content-Range"] == "bytes 10-19/100"
    conform(httpx.get(job["algorithmLogUrl"]))
    for link in job["resultsUrls"]:
        conform(httpx.get(link))
    logs = conform(httpx.get(f"{api}/computeLogs", params={**client.signed(job_id, ""), "jobId": job_id}))
    assert "hello from the algorithm" in logs.text

    # failures of every signed operation, in the one error shape
    conform(httpx.get(f"{api}/compute", params={"consumerAddress": client.address}))  # 400 no nonce
    conform(httpx.get(f"{api}/compute", params={**stranger.signed(job_id, ""), "jobId": job_id}))  # 404
    conform(httpx.put(f"{api}/compute", params={**stranger.signed(job_id, ""), "jobId": job_id}))  # 404
    conform(httpx.delete(f"{api}/compute", params={**stranger.signed(job_id, ""), "jobId": job_id}))  # 404
    conform(httpx.get(f"{api}/computeResult", params={"jobId": job_id, "index": "0", "expires": "1",
                                                      "token": "0" * 40}))  # 401
    conform(httpx.get(f"{api}/computeLogs", params={**stranger.signed(job_id, ""), "jobId": job_id}))  # 404
    conform(httpx.post(f"{api}/compute", json={**body, "nonce": "1"}))  # 401 stale nonce
    conform(httpx.get(f"{api}/nonce"))  # 400
    conform(httpx.get(f"{api}/computeEnvironments", params={"chainId": "x"}))  # 400

    stopped = conform(httpx.put(f"{api}/compute", json={**client.signed(job_id, ""), "jobId": job_id})).json()
    assert stopped[0]["status"] == 70  # already finished: stop changes nothing
    deleted = conform(httpx.delete(f"{api}/compute", params={**client.signed(job_id, ""), "jobId": job_id})).json()
    assert deleted[0]["status"] == 8 and deleted[0]["results"] == []
    conform(httpx.get(f"{api}/compute", params={**client.signed(job_id, ""), "jobId": job_id}))  # 404 now
