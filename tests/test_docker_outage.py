"""Docker going away (issue #10 item 15) and a job tree no cleanup can recurse through (item 9).

DockerRuntime: every way of not reaching Docker (socket missing, connection refused, reset
mid-call, a 5xx, the API-version fetch of a client built during the outage) is
RuntimeUnavailable, the one error the engine waits out. Then the real daemon behind
tests/dockerproxy.py, cut and restored: a queued job waits in the queue and a provisioning job
survives. (The system dockerd is never touched: only the proxy in front of it goes away.)
"""

from __future__ import annotations

import http.server
import json
import os
import socket
import socketserver
import threading
import time

import httpx
import pytest

from runnerd.containers.docker_runtime import DockerRuntime
from runnerd.containers.runtime import ContainerSpec
from runnerd.errors import RuntimeUnavailable
from tests.dockerproxy import DockerProxy
from tests.helpers import dataset, docker_containers, raw, wait_done

SPEC = ContainerSpec(name="runnerd-outage-test", image="busybox:none", command=["true"], labels={}, user="1:1")


def _calls(runtime: DockerRuntime, tmp_path) -> dict:
    log = str(tmp_path / "copied.log")
    return {
        "ping": lambda: runtime.ping(),
        "has_image": lambda: runtime.has_image("busybox:none"),
        "image_volumes": lambda: runtime.image_volumes("busybox:none"),
        "pull": lambda: runtime.pull("busybox:none"),
        "create": lambda: runtime.create(SPEC),
        "start": lambda: runtime.start("abc"),
        "wait": lambda: runtime.wait("abc"),
        "inspect": lambda: runtime.inspect("abc"),
        "stop": lambda: runtime.stop("abc", 1),
        "remove": lambda: runtime.remove("abc"),
        "copy_logs": lambda: runtime.copy_logs("abc", log, 100, follow=False),
        "list_owned": lambda: runtime.list_owned(),
        "ensure_network": lambda: runtime.ensure_network("runnerd-outage-test"),
    }


METHODS = [
    "ping", "has_image", "image_volumes", "pull", "create", "start", "wait", "inspect", "stop", "remove",
    "copy_logs", "list_owned", "ensure_network"]


@pytest.mark.parametrize("method", METHODS)
async def test_every_call_with_the_docker_socket_missing_is_an_outage(tmp_path, method):
    runtime = DockerRuntime(timeout=5, base_url=f"unix://{tmp_path}/nonexistent/docker.sock")
    try:
        with pytest.raises(RuntimeUnavailable):
            await _calls(runtime, tmp_path)[method]()
    finally:
        await runtime.close()


class _Handler(http.server.BaseHTTPRequestHandler):
    """A dockerd that answers its version, then fails every other call the server's way."""

    protocol_version = "HTTP/1.0"  # one request per connection: nothing left to parse

    def log_message(self, *args) -> None:
        pass

    def _answer(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if self.path.endswith("/version"):
            body = json.dumps({"ApiVersion": "1.41", "Version": "fake"}).encode()
            self.send_response(200)
        elif self.server.mode == "reset":  # type: ignore[attr-defined]
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
            self.connection.close()  # RST mid-call: the client sees the connection reset
            return
        else:
            body = json.dumps({"message": "the daemon is restarting"}).encode()
            self.send_response(503 if self.server.mode == "503" else 500)  # type: ignore[attr-defined]
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = do_DELETE = _answer


class _FakeDockerd(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True

    def __init__(self, path: str, mode: str):
        self.mode = mode
        super().__init__(path, _Handler)


# (A pull answered with a 5xx is left out: that is the registry's answer relayed by dockerd, and
# the image is missing rather than Docker: ImageMissing, status 32.)
@pytest.mark.parametrize("method,mode", [
    (method, mode) for mode in ("refused", "reset", "500", "503")
    for method in ("create", "start", "wait", "inspect", "copy_logs", "pull", "list_owned")
    if not (method == "pull" and mode in ("500", "503"))])
async def test_refused_reset_and_server_errors_are_outages(tmp_path, mode, method):
    path = str(tmp_path / "docker.sock")
    server = None
    if mode == "refused":  # the socket file is there, nobody listens (a dockerd that died)
        dead = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        dead.bind(path)
        dead.close()
    else:
        server = _FakeDockerd(path, mode)
        threading.Thread(target=server.serve_forever, daemon=True).start()
    runtime = DockerRuntime(timeout=5, base_url=f"unix://{path}")
    try:
        if mode != "refused":
            await runtime.ping()  # the client is built while Docker answers; the next call fails
        with pytest.raises(RuntimeUnavailable):
            await _calls(runtime, tmp_path)[method]()
    finally:
        await runtime.close()
        if server is not None:
            server.shutdown()
            server.server_close()


# ------------------------------------------------------------------------------ the real daemon

SLEEPER = "import time\nprint('working', flush=True)\ntime.sleep({seconds})\nopen('/data/outputs/o', 'w').write('o')"


def _docker_down_seen(daemon) -> None:
    deadline = time.time() + 30
    while httpx.get(f"{daemon.url}/health").json().get("docker") != "down" and time.time() < deadline:
        time.sleep(0.1)


@pytest.mark.docker
def test_job_queued_while_docker_is_away_waits_in_the_queue_and_completes(make_daemon, tmp_path, monkeypatch):
    proxy = DockerProxy(str(tmp_path / "docker.sock"))
    monkeypatch.setenv("DOCKER_HOST", proxy.docker_host)
    daemon = make_daemon(dockerOutageSeconds=2, environments=[
        {"id": "one", "nCPU": 1, "ramGB": 0.5, "diskGB": 0.1, "maxJobs": 1, "maxJobDuration": 120}])
    client = daemon.client()
    did = dataset(daemon.assets)
    running = client.start(did, raw(SLEEPER.format(seconds=60)), "one")["jobId"]
    wait_done(client, running, 90, {40}, poll=0.05)
    queued = client.start(did, raw("print('queued one')"), "one")["jobId"]
    assert client.job(queued)["status"] == 1
    proxy.down(refuse=True)
    first = wait_done(client, running, timeout=120)  # past dockerOutageSeconds: its slot is free
    assert first["status"] == 76, first
    _docker_down_seen(daemon)
    # The first job's end freed its slot and woke the scheduler: its pass is logged (the first
    # such line: before that end no pass ran while Docker was away), and it left the job queued.
    deadline = time.time() + 30
    while "admission waits for Docker" not in daemon.log() and time.time() < deadline:
        time.sleep(0.1)
    assert "admission waits for Docker" in daemon.log()
    assert client.job(queued)["status"] == 1, client.job(queued)
    proxy.up()
    job = wait_done(client, queued, timeout=120)
    assert job["status"] == 70, (job, daemon.log()[-3000:])
    assert "internal error" not in daemon.log()
    deadline = time.time() + 30  # the first job's container, left while Docker was away, is swept
    while docker_containers(f"runnerd.job={running}") and time.time() < deadline:
        time.sleep(0.5)
    assert docker_containers(f"runnerd.job={running}") == []
    proxy.down()


@pytest.mark.docker
def test_docker_away_while_a_job_provisions_the_job_completes(make_daemon, tmp_path, monkeypatch):
    proxy = DockerProxy(str(tmp_path / "docker.sock"))
    monkeypatch.setenv("DOCKER_HOST", proxy.docker_host)
    daemon = make_daemon(dockerOutageSeconds=120)
    client = daemon.client()
    job_id = client.start(dataset(daemon.assets), raw("print('after the outage')"), "ocean-compute")["jobId"]
    wait_done(client, job_id, 90, {20, 30, 40}, poll=0.05)  # cut as early in its life as the poll allows
    proxy.down()
    _docker_down_seen(daemon)
    deadline = time.time() + 30  # until the job's step meets the outage (and retries), not a guess
    while "Docker unavailable" not in daemon.log() and time.time() < deadline:
        time.sleep(0.1)
    assert "Docker unavailable" in daemon.log()
    proxy.up()
    job = wait_done(client, job_id, timeout=120)
    assert job["status"] == 70, (job, daemon.log()[-3000:])
    assert "internal error" not in daemon.log()
    proxy.down()


DEEP_TREE = """
import os
os.chdir('/data/outputs')
for level in range(6000):
    if level % 1000 == 0:
        os.symlink('/etc', 'link')
    os.mkdir('d')
    os.chdir('d')
open('bottom', 'w').write('deep')
print('built', flush=True)
"""


@pytest.mark.docker
def test_a_6000_deep_tree_ends_the_job_and_delete_answers(make_daemon):
    daemon = make_daemon(environments=[{"id": "soft", "nCPU": 1, "ramGB": 0.5, "diskGB": 0.1, "diskQuota": "none",
                                        "maxJobs": 1, "maxJobDuration": 120}])
    client = daemon.client()
    job_id = client.start(dataset(daemon.assets), raw(DEEP_TREE), "soft")["jobId"]
    job = wait_done(client, job_id, timeout=180)
    assert job["status"] == 70, (job, daemon.log()[-3000:])
    folder = daemon.data_dir / "jobs" / job_id
    assert not (folder / "fs").exists()  # the tree went with the job's filesystem
    answer = client.delete(job_id)
    assert [(j["jobId"], j["status"]) for j in answer] == [(job_id, 8)]
    assert not folder.exists()
    assert os.path.isdir("/etc")  # (links were unlinked, never followed)
    # the environment takes jobs as before
    again = client.start(dataset(daemon.assets), raw("print(1)"), "soft")["jobId"]
    assert wait_done(client, again)["status"] == 70
