"""A small client for runnerd's (Ocean Provider compatible) API, used by the CLI, the benchmarks
and the tests. It signs exactly like ocean.py: keccak(text + nonce), EIP-191, nonce = last + 1."""

from __future__ import annotations

import math
import os
import secrets
import threading
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import httpx

from runnerd import signing

DEFAULT_URL = "http://127.0.0.1:8031"
API = "/api/services"


class ApiError(Exception):
    def __init__(self, status: int, body: Any):
        self.status, self.body = status, body
        message = body.get("error") if isinstance(body, dict) else body
        super().__init__(f"HTTP {status}: {message}")


def default_key_file() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return Path(base) / "runnerd" / "client.key"


def load_key(key: str | None = None, key_file: str | os.PathLike[str] | None = None,
             create: bool = True) -> str:
    """The signing key, first found of: `key`, `key_file`, $RUNNERD_PRIVATE_KEY, $RUNNERD_KEY_FILE,
    ~/.config/runnerd/client.key (created, mode 0600, when `create`)."""
    if key:
        return key.strip()
    if key_file:
        return Path(key_file).read_text().strip()
    if os.environ.get("RUNNERD_PRIVATE_KEY"):
        return os.environ["RUNNERD_PRIVATE_KEY"].strip()
    path = Path(os.environ.get("RUNNERD_KEY_FILE") or default_key_file())
    if path.exists():
        return path.read_text().strip()
    if not create:
        raise FileNotFoundError(f"no signing key: set RUNNERD_PRIVATE_KEY or create {path}")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write("0x" + secrets.token_hex(32) + "\n")
    return path.read_text().strip()


class Client:
    def __init__(self, url: str = DEFAULT_URL, private_key: str | None = None, timeout: float = 60):
        self.url = url.rstrip("/")
        self.key = private_key or load_key()
        self.address = signing.address_of(self.key)
        self.http = httpx.Client(base_url=self.url, timeout=timeout)
        self._nonce: int | None = None
        self._lock = threading.Lock()

    def close(self) -> None:
        self.http.close()

    # -- plumbing -----------------------------------------------------------------------------

    def _json(self, response: httpx.Response) -> Any:
        try:
            body = response.json()
        except ValueError:
            body = response.text
        if response.status_code >= 400:
            raise ApiError(response.status_code, body)
        return body

    def next_nonce(self) -> str:
        """ocean.py's rule (stored + 1), fetched once and then counted locally."""
        with self._lock:
            if self._nonce is None:
                stored = self._json(self.http.get(f"{API}/nonce", params={"userAddress": self.address}))["nonce"]
                self._nonce = int(math.ceil(float(stored)))
            self._nonce += 1
            return str(self._nonce)

    def refresh_nonce(self) -> None:
        """Fetch the stored nonce again for the next signed request: after a long wait (`submit
        --wait`) another process signing with the same key (`runnerd stop` in another shell) may
        have used the nonces this client would count to."""
        with self._lock:
            self._nonce = None

    def reserve_nonces(self, n: int) -> int:
        """The first of n consecutive nonces set aside for requests signed elsewhere."""
        first = int(self.next_nonce())
        with self._lock:
            self._nonce = first + n - 1
        return first

    def signed(self, *parts: str) -> dict[str, str]:
        nonce = self.next_nonce()
        return {"consumerAddress": self.address, "nonce": nonce,
                "signature": signing.sign(self.key, [self.address, *parts], nonce)}

    def own(self, action: str, *parts: str) -> dict[str, str]:
        """Signed over runnerd's own text for `action` (`runnerd:<action>:` + address + parts +
        nonce): the daemon accepts it for that action only, so no signature this client makes
        for reading a status or a log can be replayed as a stop or a delete."""
        nonce = self.next_nonce()
        return {"consumerAddress": self.address, "nonce": nonce,
                "signature": signing.sign(self.key, signing.own_text(action, [self.address, *parts]), nonce)}

    # -- API ----------------------------------------------------------------------------------

    def info(self) -> dict[str, Any]:
        return self._json(self.http.get("/"))

    def environments(self) -> list[dict[str, Any]]:
        return self._json(self.http.get(f"{API}/computeEnvironments"))

    def start(self, dataset: str, algorithm: dict[str, Any], environment: str, *, service_id: str = "compute",
              transfer_tx: str | None = None, additional: list[dict[str, Any]] | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {
            **self.signed(dataset),
            "environment": environment,
            "dataset": {"documentId": dataset, "serviceId": service_id,
                        "transferTxId": transfer_tx or "0x" + secrets.token_hex(32)},
            "algorithm": algorithm,
        }
        if additional:
            body["additionalDatasets"] = additional
        return self._json(self.http.post(f"{API}/compute", json=body))[0]

    def status(self, job_id: str = "", document_id: str = "", signed: bool = True) -> list[dict[str, Any]]:
        """`signed=False` (with a job_id): no signature and no nonce, and no capability URLs in the
        answer (results are then fetched with a signature)."""
        auth = self.own("computeStatus", job_id, document_id) if signed or not job_id else {
            "consumerAddress": self.address}
        params = {**auth, "jobId": job_id, "documentId": document_id}
        return self._json(self.http.get(f"{API}/compute", params={k: v for k, v in params.items() if v}))

    def job(self, job_id: str, signed: bool = True) -> dict[str, Any]:
        return self.status(job_id, signed=signed)[0]

    def restart(self, job_id: str) -> dict[str, Any]:
        """Run a stopped or failed job again, as a new job (its `restartedFrom` is `job_id`)."""
        return self._json(self.http.post(f"{API}/compute", json={**self.own("computeRestart", job_id),
                                                                   "jobId": job_id}))[0]

    def stop(self, job_id: str = "", document_id: str = "") -> list[dict[str, Any]]:
        params = {**self.own("computeStop", job_id, document_id), "jobId": job_id, "documentId": document_id}
        return self._json(self.http.put(f"{API}/compute", params={k: v for k, v in params.items() if v}))

    def delete(self, job_id: str = "", document_id: str = "") -> list[dict[str, Any]]:
        params = {**self.own("computeDelete", job_id, document_id), "jobId": job_id, "documentId": document_id}
        return self._json(self.http.delete(f"{API}/compute", params={k: v for k, v in params.items() if v}))

    def result_stream(self, job_id: str, index: int) -> AbstractContextManager[httpx.Response]:
        """A context manager streaming one result: `with client.result_stream(j, 0) as r: …`."""
        params = {**self.signed(job_id, str(index)), "jobId": job_id, "index": str(index)}
        return self.http.stream("GET", f"{API}/computeResult", params=params)

    def result(self, job_id: str, index: int) -> bytes:
        with self.result_stream(job_id, index) as response:
            response.read()
            if response.status_code >= 400:
                self._json(response)
            return response.content

    def log_stream(self, job_id: str, follow: bool = True):
        """Stream the algorithm's log live (GET /api/services/computeLogs)."""
        params = {**self.own("computeLogs", job_id), "jobId": job_id, "follow": "1" if follow else "0"}
        return self.http.stream("GET", f"{API}/computeLogs", params=params, timeout=None)
