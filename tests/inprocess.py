"""The whole daemon in the test's own event loop: runnerd.daemon.open_daemon with the FakeRuntime
(tests/fakes.py) and a FakeClock, runnerd.api.app.create_app, served by aiohttp's TestServer and
reached with its TestClient (pytest-aiohttp's `aiohttp_client`). No Docker and no process.

What it does not have is the daemon's own transport (runnerd/api/transport.py: connection and
request-head limits, the parser's refusals in the error shape) and its signal handling: the tests
of those stay over real HTTP to a real daemon.

`Http.request` takes httpx's keyword arguments and returns an httpx.Response, so a test moved here
keeps its assertions, tests/test_openapi.py's `conform` and `assert_error_shape` included.
"""

from __future__ import annotations

import asyncio
import datetime
import math
import secrets
import shutil
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from aiohttp import web
from aiohttp.test_utils import TestClient
from eth_account import Account
from yarl import URL

from runnerd import layout
from runnerd.api.app import create_app
from runnerd.api.keys import READY
from runnerd.config import parse_config
from runnerd.containers.runtime import LABEL_STEP
from runnerd.daemon import Daemon, open_daemon
from tests.fakes import FakeClock, FakeContainer, FakeRuntime, Outcome
from tests.helpers import BUSYBOX_IMAGE, PY_IMAGE, base_config
from tests.test_api_conformance import ocean_signature
from tests.test_openapi import conform

ENDED = {7, *range(61, 100)}
_DROPPED = {"content-encoding", "transfer-encoding"}  # the body below is already decoded


class Http:
    """httpx-style requests to an in-process app (TestClient), answers as httpx.Response."""

    def __init__(self, client: TestClient):
        self.client = client

    async def request(self, method: str, url: str | httpx.URL, **kwargs: Any) -> httpx.Response:
        # httpx builds the request exactly as it would send it (query encoding, JSON, headers)
        sent = httpx.Request(method, httpx.URL("http://in-process").join(url), **kwargs)
        headers = {k: v for k, v in sent.headers.items() if k.lower() not in ("host", "content-length")}
        if "headers" in kwargs and any(k.lower() == "host" for k in kwargs["headers"]):
            headers["Host"] = sent.headers["host"]
        target = URL(sent.url.raw_path.decode("ascii"), encoded=True)
        async with self.client.request(method, target, data=sent.content or None, headers=headers,
                                       allow_redirects=False) as answer:
            body = await answer.read()
            raw = [(k, v) for k, v in answer.headers.items() if k.lower() not in _DROPPED]
        response = httpx.Response(answer.status, headers=raw, content=body, request=sent)
        response.elapsed = datetime.timedelta(0)  # schemathesis reads it; httpx sets it only when it sent
        return response

    async def get(self, url: str | httpx.URL, **kwargs: Any) -> httpx.Response:
        return await self.request("GET", url, **kwargs)

    async def post(self, url: str | httpx.URL, **kwargs: Any) -> httpx.Response:
        return await self.request("POST", url, **kwargs)

    async def options(self, url: str | httpx.URL, **kwargs: Any) -> httpx.Response:
        return await self.request("OPTIONS", url, **kwargs)


@dataclass
class InProcess:
    daemon: Daemon
    app: web.Application
    http: Http
    fake: FakeRuntime
    clock: FakeClock

    @property
    def assets(self) -> Path:
        return self.daemon.assets_dir

    @property
    def data_dir(self) -> Path:
        return self.daemon.data_dir


def default_config() -> dict[str, Any]:
    """The shared daemon's environments (tests/conftest.py), without the quota filesystem."""
    return base_config(environments=[
        {"id": "ocean-compute", "nCPU": 1, "ramGB": 0.5, "diskGB": 0.1, "maxJobs": 2, "maxJobDuration": 120,
         "diskQuota": "none"},
        {"id": "small", "nCPU": 0.5, "ramGB": 0.25, "diskGB": 0.05, "maxJobs": 1, "maxJobDuration": 60,
         "diskQuota": "none"},
    ])


async def start(stack: AsyncExitStack, root: Path, aiohttp_client, config: dict[str, Any] | None = None
                ) -> InProcess:
    """Open a daemon on the fakes under `root` and serve its app; `stack` closes both."""
    settings = parse_config(config or default_config())
    fake = FakeRuntime(images={PY_IMAGE, BUSYBOX_IMAGE})
    fake.script(Outcome(on_start=publish_outputs), step="filter")
    clock = FakeClock()
    daemon = await stack.enter_async_context(open_daemon(settings, root / "data", root / "assets", fake, clock))
    app = create_app(settings, daemon.engine, daemon.store, daemon.identity, daemon.data_dir, daemon.metrics,
                     host="127.0.0.1")
    client = await aiohttp_client(app)
    stack.push_async_callback(client.close)  # before the daemon closes (the stack unwinds in reverse)
    await daemon.engine.start()
    app[READY]["ready"] = True
    return InProcess(daemon, app, Http(client), fake, clock)


# -- what the fake's containers leave behind ------------------------------------------------------


def _mount(c: FakeContainer, target: str) -> Path:
    (source,) = [m.source for m in c.spec.mounts if m.target == target]
    return Path(source)


def writes_outputs(files: dict[str, str]):
    """An algorithm's on_start: write `files` into its /data/outputs, as a real one would."""
    def on_start(_: FakeRuntime, c: FakeContainer) -> None:
        for name, text in files.items():
            (_mount(c, layout.OUTPUTS) / name).write_text(text)
    return on_start


def publish_outputs(_: FakeRuntime, c: FakeContainer) -> None:
    """The filter's on_start: copy what the algorithm wrote to the results (steps/filter.py does
    it with its checks and limits; the fake copies plainly)."""
    if c.spec.labels.get(LABEL_STEP) != "filter":
        return
    shutil.copytree(_mount(c, layout.OUTPUTS), _mount(c, layout.STEP_OUT) / "outputs", dirs_exist_ok=True)


# -- an Ocean client over the in-process app --------------------------------------------------------


class AsyncOceanStyle:
    """tests/test_api_conformance.py's OceanStyle (a client written only from SPEC §2), async,
    over `Http`. The same methods, the same signing, the same OpenAPI check of every answer."""

    def __init__(self, http: Http, key: str | None = None):
        self.key = key or "0x" + secrets.token_hex(32)
        self.address = Account.from_key(self.key).address
        self.http = http
        self.endpoints: dict[str, list[str]] = {}
        self.chain_ids: list[int] = []

    async def discover(self) -> "AsyncOceanStyle":
        info = (await self.http.get("/")).json()
        assert "providerAddresses" in info, "not a provider"
        self.endpoints, self.chain_ids = info["serviceEndpoints"], info["chainIds"]
        return self

    def sign(self, message: str, nonce: Any, style: str = "py") -> str:
        return ocean_signature(self.key, message, nonce, style)

    async def call(self, name: str, **kwargs: Any) -> httpx.Response:
        method, path = self.endpoints[name]
        return conform(await self.http.request(method, path, **kwargs))

    async def stored_nonce(self) -> Any:
        return (await self.call("nonce", params={"userAddress": self.address})).json()["nonce"]

    async def next_nonce(self) -> int:
        return int(math.ceil(float(await self.stored_nonce()))) + 1

    async def start_body(self, did: str, algorithm: dict, environment: str = "ocean-compute", nonce: Any = None,
                         **dataset_extra: Any) -> dict[str, Any]:
        nonce = str(await self.next_nonce()) if nonce is None else nonce
        return {
            "consumerAddress": self.address, "nonce": nonce, "environment": environment,
            "signature": self.sign(f"{self.address}{did}", nonce, "js"),
            "dataset": {"documentId": did, "serviceId": "compute", "transferTxId": "0x" + secrets.token_hex(32),
                        **dataset_extra},
            "algorithm": algorithm, "additionalInputs": [],
        }

    async def start(self, did: str, algorithm: dict, environment: str = "ocean-compute", **extra: Any) -> dict:
        r = await self.call("computeStart", json=await self.start_body(did, algorithm, environment, **extra))
        assert r.status_code == 200, r.text
        body = r.json()
        assert isinstance(body, list) and len(body) == 1
        return body[0]

    async def job_params(self, job_id: str = "", did: str = "", nonce: Any = None, style: str = "py") -> dict:
        nonce = await self.next_nonce() if nonce is None else nonce
        params = {"consumerAddress": self.address, "nonce": str(nonce) if style == "js" else nonce,
                  "signature": self.sign(f"{self.address}{job_id}{did}", nonce, style)}
        if job_id:
            params["jobId"] = job_id
        if did:
            params["documentId"] = did
        return params

    async def status(self, job_id: str = "", did: str = "", **kw: Any) -> httpx.Response:
        return await self.call("computeStatus", params=await self.job_params(job_id, did, **kw))

    async def job(self, job_id: str) -> dict:
        r = await self.status(job_id)
        assert r.status_code == 200, r.text
        return r.json()[0]

    async def wait(self, job_id: str, timeout: float = 30) -> dict:
        """Until the job has ended (SPEC §2: 7, or 61 and above). `timeout` is a safety net against
        a hang, not a timing assertion."""
        async def ended() -> dict:
            while (job := await self.job(job_id))["status"] not in ENDED:
                await asyncio.sleep(0.02)
            return job
        return await asyncio.wait_for(ended(), timeout)

    async def result(self, job_id: str, index: int, **kw: Any) -> httpx.Response:
        nonce = await self.next_nonce()
        return await self.call("computeResult", params={
            "consumerAddress": self.address, "jobId": job_id, "index": index, "nonce": nonce,
            "signature": self.sign(f"{self.address}{job_id}{index}", nonce, "py")}, **kw)

    async def stop_py(self, job_id: str) -> httpx.Response:
        return await self.call("computeStop", params=await self.job_params(job_id))

    async def stop_js(self, job_id: str, did: str) -> httpx.Response:
        return await self.call("computeStop", json=await self.job_params(job_id, did, style="js"))

    async def delete_py(self, job_id: str) -> httpx.Response:
        return await self.call("computeDelete", params=await self.job_params(job_id))

    async def delete_js(self, job_id: str, did: str) -> httpx.Response:
        return await self.call("computeDelete", json=await self.job_params(job_id, did, style="js"))

    async def environments(self, **params: Any) -> Any:
        r = await self.call("computeEnvironments", params=params)
        assert r.status_code == 200, r.text
        return r.json()
