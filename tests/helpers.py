"""Test helpers: a real daemon process, DDO writers and polling. No fakes of runnerd itself."""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import yaml

from runnerd.catalog import did_for
from runnerd.client import Client

PY_IMAGE = os.environ.get("RUNNERD_TEST_PYTHON_IMAGE", "runnerd-test-python:latest")
BUSYBOX_IMAGE = os.environ.get("RUNNERD_TEST_BUSYBOX_IMAGE", "runnerd-test-busybox:latest")
TERMINAL = {7, 31, 32, 70, 71, 72, 73, 74, 75, 76}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# What the test daemons let a raw algorithm run (rawAlgorithmImages): the locally built images.
TEST_RAW_IMAGES = sorted({"runnerd-*", PY_IMAGE.rpartition(":")[0], BUSYBOX_IMAGE.rpartition(":")[0]})


def base_config(**overrides: Any) -> dict[str, Any]:
    config: dict[str, Any] = {
        "helperImage": PY_IMAGE,
        "imagePull": "never",
        "orphanGraceSeconds": 0,
        "stopGraceSeconds": 1,
        "sweepIntervalSeconds": 3600,
        "diskFloorGB": 0,
        "environments": [
            {"id": "ocean-compute", "nCPU": 1, "ramGB": 0.5, "diskGB": 0.1, "maxJobs": 2, "maxJobDuration": 120},
        ],
    }
    config.update(overrides)
    for env in config["environments"]:  # a test that sets its own list keeps it
        env.setdefault("rawAlgorithmImages", TEST_RAW_IMAGES)
    return config


@dataclass
class Daemon:
    root: Path
    config: dict[str, Any]
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen | None = None
    host: str = "127.0.0.1"  # where it listens (the Swarm lab's workers reach it on the lab bridge)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def assets(self) -> Path:
        return self.root / "assets"

    @property
    def log_path(self) -> Path:
        return self.root / "daemon.log"

    def start(self, wait: bool = True) -> "Daemon":
        self.root.mkdir(parents=True, exist_ok=True)
        (self.root / "environments.yaml").write_text(yaml.safe_dump(self.config))
        argv = [sys.executable, "-m", "runnerd", "serve", "--config", str(self.root / "environments.yaml"),
                "--data-dir", str(self.data_dir), "--assets", str(self.assets), "--port", str(self.port),
                "--host", self.host]
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        if wait:
            self.wait_healthy()
        return self

    def wait_healthy(self, timeout: float = 60) -> None:
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"daemon exited with {self.proc.returncode}:\n{self.log()}")
            try:
                if httpx.get(f"{self.url}/health", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise TimeoutError(f"daemon not healthy after {timeout}s:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int | None:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()

    def job_ids(self) -> list[str]:
        db = self.data_dir / "runnerd.db"
        if not db.exists():
            return []
        with sqlite3.connect(db) as conn:
            return [r[0] for r in conn.execute("SELECT job_id FROM jobs")]

    def leftover_containers(self) -> list[str]:
        """Containers of this daemon's jobs that still exist (there should be none once it is idle)."""
        ids = set(self.job_ids())
        out = subprocess.run(["docker", "ps", "-a", "--filter", "label=runnerd.job", "--format",
                              '{{.ID}} {{.Label "runnerd.job"}}'], capture_output=True, text=True)
        return [line.split()[0] for line in out.stdout.splitlines() if line.split()[-1] in ids]

    def purge(self) -> None:
        """After stop(): remove whatever this daemon's jobs still hold (containers labelled with its
        instance, quota mounts under its folder), so its folder can be deleted (benchmarks)."""
        key_file = self.data_dir / "node.key"
        if key_file.exists():
            from eth_account import Account

            instance = Account.from_key(key_file.read_text().strip()).address.lower()
            ids = subprocess.run(["docker", "ps", "-aq", "--filter", f"label=runnerd.instance={instance}"],
                                 capture_output=True, text=True).stdout.split()
            if ids:
                subprocess.run(["docker", "rm", "-f", *ids], capture_output=True)
        with open("/proc/self/mounts") as f:
            mounts = [line.split()[1] for line in f if line.split()[1].startswith(str(self.root))]
        for mount in sorted(mounts, reverse=True):
            subprocess.run(["umount", "-l", mount], capture_output=True)

    def kill(self) -> None:
        self.stop(signal.SIGKILL)

    def restart(self) -> "Daemon":
        self.stop()
        return self.start()

    def client(self, key: str | None = None) -> Client:
        return Client(self.url, key or "0x" + secrets.token_hex(32))


def write_ddo(assets: Path, ddo: dict[str, Any]) -> str:
    assets.mkdir(parents=True, exist_ok=True)
    path = assets / f"{ddo['id'].removeprefix('did:op:')}.json"
    path.write_text(json.dumps(ddo))
    return ddo["id"]


def dataset(assets: Path, content: bytes | None = b"a,b\n1,2\n3,4\n", *, url: str | None = None,
            allow_raw: bool = True, network: bool = False, trusted: list[dict] | None = None,
            publishers: list[str] | None = None, name: str | None = None, files: list[dict] | None = None,
            service_type: str = "compute") -> str:
    """Register a dataset DDO (a local file under the assets dir, or a URL) and return its DID."""
    name = name or secrets.token_hex(6)
    if files is None:
        if url is not None:
            files = [{"type": "url", "url": url}]
        else:
            (assets / "files").mkdir(parents=True, exist_ok=True)
            (assets / "files" / name).write_bytes(content or b"")
            files = [{"type": "file", "path": f"files/{name}"}]
    did = did_for("dataset", name)
    service: dict[str, Any] = {"id": "compute", "type": service_type, "files": files}
    if service_type == "compute":
        service["compute"] = {"allowRawAlgorithm": allow_raw, "allowNetworkAccess": network,
                              "publisherTrustedAlgorithms": trusted or [],
                              "publisherTrustedAlgorithmPublishers": publishers or []}
    return write_ddo(assets, {"id": did, "metadata": {"type": "dataset", "name": name}, "nft": {"owner": ""},
                              "services": [service]})


def algorithm_asset(assets: Path, code: str, *, owner: str = "", image: str = PY_IMAGE,
                    entrypoint: str = "python3 $ALGO", name: str | None = None) -> str:
    name = name or secrets.token_hex(6)
    (assets / "files").mkdir(parents=True, exist_ok=True)
    (assets / "files" / f"{name}.py").write_text(code)
    repo, _, tag = image.rpartition(":")
    did = did_for("algorithm", name)
    return write_ddo(assets, {
        "id": did, "nft": {"owner": owner},
        "metadata": {"type": "algorithm", "name": name, "algorithm": {
            "container": {"entrypoint": entrypoint, "image": repo, "tag": tag, "checksum": ""}}},
        "services": [{"id": "access", "type": "access", "files": [{"type": "file", "path": f"files/{name}.py"}]}],
    })


def raw(code: str, image: str = PY_IMAGE, entrypoint: str = "python3 $ALGO", checksum: str = "") -> dict[str, Any]:
    repo, _, tag = image.rpartition(":")
    return {"meta": {"rawcode": code, "container": {"image": repo, "tag": tag, "entrypoint": entrypoint,
                                                    "checksum": checksum}}}


def wait_done(client: Client, job_id: str, timeout: float = 120, statuses: set[int] | None = None,
              poll: float = 0.2) -> dict[str, Any]:
    """Poll (every `poll` seconds) until the job reaches a terminal status (or one of `statuses`)."""
    wanted = statuses or TERMINAL
    deadline = time.time() + timeout
    job: dict[str, Any] = {}
    while time.time() < deadline:
        job = client.job(job_id)
        if job["status"] in wanted:
            return job
        time.sleep(poll)
    raise TimeoutError(f"job {job_id} still at {job.get('status')} after {timeout}s: {job}")


def result_of(client: Client, job: dict[str, Any], type_: str, filename: str | None = None) -> bytes:
    for r in job["results"]:
        if r["type"] == type_ and (filename is None or r["filename"] == filename):
            return client.result(job["jobId"], r["index"])
    raise KeyError(f"no {type_} {filename or ''} in {job['results']}")


def docker_containers(label: str) -> list[str]:
    out = subprocess.run(["docker", "ps", "-aq", "--filter", f"label={label}"], capture_output=True, text=True)
    return out.stdout.split()
