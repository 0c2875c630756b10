"""Issue #10 items 1 and 4, through a real daemon and the real provision container.

1. The operator's dataset URLs (host, path, query) and every redirect target stay out of what the
   consumer gets (configurationLog, the job's `error`, the whole status object); the daemon's own
   log carries them, at warning for a failure, with the job id.
4. provisionAllow covers the operator's DDO URLs only: a consumer's algorithm.meta.url to the same
   allow-listed server is refused before anything is sent to it.

Network: the servers listen on this machine's docker0 address (reachable from the job network);
every redirect points at another local address. Nothing else is ever contacted.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from tests.helpers import PY_IMAGE, dataset, raw, result_of, wait_done
from tests.netutil import docker_bridge_ip

pytestmark = pytest.mark.docker


class RouteServer:
    """An HTTP server on docker0: path -> (status, headers, body); records every path asked for."""

    def __init__(self):
        self.host = docker_bridge_ip()
        self.routes: dict[str, tuple[int, dict, bytes]] = {}
        self.paths: list[str] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                server.paths.append(self.path)
                status, headers, body = server.routes.get(self.path.split("?", 1)[0], (404, {}, b""))
                self.send_response(status)
                for key, value in {**headers, "Content-Length": str(len(body))}.items():
                    self.send_header(key, value)
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer((self.host, 0), Handler)
        self.port = self.httpd.server_address[1]
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def url(self, path: str) -> str:
        return f"http://{self.host}:{self.port}{path}"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def servers():
    a, b = RouteServer(), RouteServer()
    yield a, b
    a.close()
    b.close()


def _visible(client, job: dict) -> str:
    """Everything the consumer gets for a job: the status object and the configuration log."""
    return json.dumps(job) + result_of(client, job, "configurationLog").decode(errors="replace")


def _daemon_lines(daemon, job_id: str, level: str) -> str:
    return "\n".join(line for line in daemon.log().splitlines()
                     if f"job={job_id}" in line and f"level={level}" in line)


def test_the_consumer_never_sees_the_operators_urls(make_daemon, servers):
    a, b = servers
    # A succeeding download through a redirect to another local server, and a failing one.
    a.routes["/zq-ops-path-a1/data.csv"] = (302, {"Location": b.url("/zq-hop-b2/final.csv?sig=zqsig")}, b"")
    b.routes["/zq-hop-b2/final.csv"] = (200, {}, b"a,b\n1,2\n")
    # A redirect to an address nobody allow-listed (the container's own loopback): refused unsent.
    a.routes["/zq-ops-bounce-e5/data.csv"] = (302, {"Location": "http://127.0.0.1:9/zq-hop-refused-f6"}, b"")
    daemon = make_daemon(provisionAllow=[a.host])
    ok = dataset(daemon.assets, url=a.url("/zq-ops-path-a1/data.csv?token=zqtoken"))
    gone = dataset(daemon.assets, url=a.url("/zq-ops-gone-c3/missing.csv"))
    bounced = dataset(daemon.assets, url=a.url("/zq-ops-bounce-e5/data.csv"))
    client = daemon.client()

    job = wait_done(client, client.start(ok, raw("print(1)"), "ocean-compute",
                                         additional=[{"documentId": gone, "serviceId": "compute"}])["jobId"])
    assert job["status"] == 31, job
    assert "/zq-hop-b2/final.csv?sig=zqsig" in b.paths  # the redirect really was followed
    seen = _visible(client, job)
    for secret in ("zq", a.host, f":{a.port}", f":{b.port}", "http://", "missing.csv", "final.csv"):
        assert secret not in seen, secret
    assert f"fetching dataset {ok} file 0" in seen and "redirected" in seen and "done: 8 bytes" in seen
    assert job["error"] == f"dataset {gone} file 0: HTTP 404"
    # The operator's log has what the consumer does not: the URLs (never the query) and the target.
    warned = _daemon_lines(daemon, job["jobId"], "warning")
    assert a.url("/zq-ops-gone-c3/missing.csv") in warned and "HTTP 404" in warned, daemon.log()
    assert b.url("/zq-hop-b2/final.csv") in _daemon_lines(daemon, job["jobId"], "info")
    assert "zqtoken" not in daemon.log() and "zqsig" not in daemon.log()

    job = wait_done(client, client.start(bounced, raw("print(1)"), "ocean-compute")["jobId"])
    assert job["status"] == 31, job
    seen = _visible(client, job)
    for secret in ("zq", a.host, "127.0.0.1", f":{a.port}", ":9/", "http://"):
        assert secret not in seen, secret
    assert job["error"] == f"dataset {bounced} file 0: redirect refused: address not allowed"
    warned = _daemon_lines(daemon, job["jobId"], "warning")
    assert "http://127.0.0.1:9/zq-hop-refused-f6" in warned and "loopback" in warned, daemon.log()


def test_provision_allow_does_not_cover_the_consumers_url(make_daemon, servers):
    a, _ = servers
    a.routes["/zq-ddo/data.csv"] = (200, {}, b"a,b\n5,6\n")
    a.routes["/zq-lan-secret/algo.py"] = (200, {}, b"print('read from the LAN')\n")
    daemon = make_daemon(provisionAllow=[a.host])
    did = dataset(daemon.assets, url=a.url("/zq-ddo/data.csv"))
    client = daemon.client()
    repo, _, tag = PY_IMAGE.rpartition(":")
    consumer_url = {"meta": {"url": a.url("/zq-lan-secret/algo.py"),
                             "container": {"image": repo, "tag": tag, "entrypoint": "python3 $ALGO"}}}
    job = wait_done(client, client.start(did, consumer_url, "ocean-compute")["jobId"])
    assert job["status"] == 32, job
    assert job["error"] == "algorithm: address not allowed"
    assert a.paths == ["/zq-ddo/data.csv"]  # the operator's dataset was fetched, the consumer's URL never
    assert "zq" not in _visible(client, job)
    warned = _daemon_lines(daemon, job["jobId"], "warning")
    assert a.url("/zq-lan-secret/algo.py") in warned and "provisionAllow does not apply" in warned

    # The same DDO dataset with a raw algorithm runs: the allow-list itself still works.
    job = wait_done(client, client.start(did, raw("import json, os\nd = json.loads(os.environ['DIDS'])[0]\n"
                                                  "print(open(f'/data/inputs/{d}/0').read())"),
                                         "ocean-compute")["jobId"])
    assert job["status"] == 70, job
    assert "5,6" in result_of(client, job, "algorithmLog").decode()
