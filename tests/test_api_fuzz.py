"""Fuzz every operation of the OpenAPI document with schemathesis against a real daemon over HTTP.

The document is loaded from the daemon itself (GET /openapi.json). Each operation gets schema-valid
(positive) and schema-violating (negative) requests; two thirds of the positive ones carry a valid
signature and a fresh nonce for a fuzzing key, so the fuzz reaches past authentication into the
start-time policy and job lookups. Every answer must be documented (status, media type, headers,
body schema), be in the one error shape when it is a 4xx, and never be a 5xx; the daemon must be
healthy afterwards.

The target daemon has an empty catalog, so no start can ever create a job: nothing is left
running. Hypothesis runs derandomized (a fixed seed): failures reproduce exactly.
"""

from __future__ import annotations

import itertools
import secrets
import time
from typing import Any

import httpx
import pytest
import schemathesis
from eth_account import Account
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from runnerd import signing
from tests.helpers import Daemon, base_config
from tests.test_openapi import TRACEBACK, assert_error_shape, document

pytestmark = pytest.mark.docker

MAX_EXAMPLES = 50  # per operation and generation mode
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_headers_conformance,
          response_schema_conformance]
OPERATIONS = [(method.upper(), path) for path, item in document()["paths"].items() for method in item]
KEY = "0x" + secrets.token_hex(32)
ADDRESS = Account.from_key(KEY).address
_nonces = itertools.count(time.time_ns())
_turn = itertools.count()


@pytest.fixture(scope="module")
def fuzz_daemon(tmp_path_factory):
    daemon = Daemon(tmp_path_factory.mktemp("fuzz"), base_config(environments=[
        {"id": "ocean-compute", "nCPU": 1, "ramGB": 0.5, "diskGB": 0.1, "maxJobs": 1, "maxJobDuration": 30},
    ])).start()
    daemon.assets.mkdir(parents=True, exist_ok=True)  # and it stays empty: no start can succeed
    yield daemon
    daemon.stop()
    assert daemon.job_ids() == [], "a fuzzed request created a job"
    assert daemon.leftover_containers() == []


@pytest.fixture(scope="module")
def fuzz_schema(fuzz_daemon):
    return schemathesis.openapi.from_url(f"{fuzz_daemon.url}/openapi.json")


def _text(value: Any) -> str | None:
    """The exact text runnerd signs for a parameter, or None when it would be refused anyway."""
    if value is None or value == "":
        return ""
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        return None
    return str(value)


def _sign(method: str, path: str, case: schemathesis.Case) -> None:
    """Give the case a valid signature and a fresh nonce, as a real client would."""
    if case.query:
        params = case.query
    elif isinstance(case.body, dict):
        params = case.body
    elif method == "GET" or case.body is None:
        case.query = params = {}
    else:
        return
    if path.startswith(NODE):
        _sign_node(method, path.removeprefix(NODE), params)
        return
    if path == "/api/services/compute" and method == "POST":
        params["environment"] = "ocean-compute"  # a real client names a real one: on to the policy checks
        dataset = params.get("dataset")
        parts = [_text(dataset.get("documentId"))] if isinstance(dataset, dict) else [None]
    elif path == "/api/services/compute":
        parts = [_text(params.get("jobId")), _text(params.get("documentId"))]
    elif path == "/api/services/computeResult":
        parts = [_text(params.get("jobId")), _text(params.get("index"))]
    elif path == "/api/services/computeLogs":
        parts = [_text(params.get("jobId")), ""]
    else:
        return
    if any(p is None for p in parts):
        return
    nonce = str(next(_nonces))
    params.update(consumerAddress=ADDRESS, nonce=nonce, signature=signing.sign(KEY, [ADDRESS, *parts], nonce))


NODE = "/c2d/v2"
# ocean-node's dialect: the command each route's signature ends in (address + nonce + command)
NODE_COMMANDS = {
    ("POST", "/api/services/freeCompute"): "freeStartCompute", ("POST", "/api/services/compute"): "startCompute",
    ("PUT", "/api/services/compute"): "stopCompute", ("DELETE", "/api/services/compute"): "deleteCompute",
    ("GET", "/api/services/computeResult"): "getComputeResult",
    ("GET", "/api/services/computeStreamableLogs"): "getComputeStreamableLogs",
    ("POST", "/api/services/auth/token"): "createAuthToken", ("POST", "/api/services/auth/token/invalidate"): "",
}


def _sign_node(method: str, path: str, params: dict) -> None:
    command = NODE_COMMANDS.get((method, path))
    if command is None:
        return
    if method == "POST" and path in ("/api/services/freeCompute", "/api/services/compute"):
        params["environment"] = "ocean-compute"  # a real one: on to the policy checks
    name = "address" if "/auth/" in path else "consumerAddress"
    nonce = str(next(_nonces))
    params.update({name: ADDRESS, "nonce": nonce, "signature": signing.sign(KEY, [ADDRESS, nonce, command], "")})


def _fuzz(fuzz_daemon, fuzz_schema, method: str, path: str, mode: GenerationMode) -> None:
    operation = fuzz_schema[path][method]

    @settings(max_examples=MAX_EXAMPLES, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))
    @given(case=operation.as_strategy(generation_mode=mode))
    def run(case: schemathesis.Case) -> None:
        if mode is GenerationMode.POSITIVE and next(_turn) % 3:
            _sign(method, path, case)
        response = case.call_and_validate(base_url=fuzz_daemon.url, checks=CHECKS, timeout=30)
        assert response.status_code < 500, response.text
        if response.status_code >= 400:
            headers = [(k, v) for k, values in response.headers.items() for v in values]
            assert_error_shape(httpx.Response(response.status_code, headers=headers, content=response.content))
        assert not TRACEBACK.search(response.text[:100_000])

    run()


def _has_inputs(method: str, path: str) -> bool:
    op = document()["paths"][path][method.lower()]
    return bool(op.get("parameters") or op.get("requestBody"))


# Negative data needs something to violate: operations without parameters get positive cases only.
CASES = [(mode, m, p) for m, p in OPERATIONS for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
         if mode is GenerationMode.POSITIVE or _has_inputs(m, p)]


@pytest.mark.parametrize("mode, method, path", CASES, ids=[f"{mode.value}-{m} {p}" for mode, m, p in CASES])
def test_fuzz_operation(fuzz_daemon, fuzz_schema, mode, method, path):
    _fuzz(fuzz_daemon, fuzz_schema, method, path, mode)
    assert httpx.get(f"{fuzz_daemon.url}/health").status_code == 200


def test_daemon_is_healthy_after_fuzzing(fuzz_daemon):
    """Runs last in this module: the process is alive, healthy, and logged no internal error."""
    assert fuzz_daemon.proc is not None and fuzz_daemon.proc.poll() is None
    assert httpx.get(f"{fuzz_daemon.url}/health").json()["status"] == "ok"
    assert httpx.get(f"{fuzz_daemon.url}/api/services/nonce", params={"userAddress": ADDRESS}).json()["nonce"] > 0
    log = fuzz_daemon.log()
    assert "internal error" not in log and "Traceback" not in log, log[-3000:]
