"""The provision and filter step scripts, run as the helper container runs them (no Docker needed).

Network rule for this file: nothing is ever sent anywhere but this machine's loopback. Refusals of
other addresses are proved with the pure check_address(); refusals of loopback ones by asserting a
loopback test server received no request.
"""

from __future__ import annotations

import ast
import hashlib
import importlib.util
import json
import os
import shutil
import socket
import ssl
import stat
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

STEPS = Path(__file__).resolve().parent.parent / "runnerd" / "steps"
PROVISION = STEPS / "provision.py"
FILTER = STEPS / "filter.py"
NETPOLICY = STEPS / "netpolicy.py"


def _load(path: Path):
    spec = importlib.util.spec_from_file_location("runnerd_step_" + path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


prov = _load(PROVISION)


def run_step(script: Path, plan: dict, tmp_path: Path, env: dict | None = None, via_env: bool = False):
    """Run a step script as a subprocess; returns (exit code, report dict or None, stdout)."""
    plan.setdefault("report", str(tmp_path / "out" / "report.json"))
    plan_file = tmp_path / "plan.json"
    plan_file.write_text(json.dumps(plan))
    full_env = {k: v for k, v in os.environ.items() if k != "RUNNERD_PLAN"}
    full_env.update(env or {})
    argv = [sys.executable, str(script)]
    if via_env:
        full_env["RUNNERD_PLAN"] = json.dumps(plan)
    else:
        argv.append(str(plan_file))
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=60, env=full_env)
    report_path = Path(plan["report"])
    report = json.loads(report_path.read_text()) if report_path.exists() else None
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc.returncode, report, proc.stdout


# ---------------------------------------------------------------- test HTTP server (loopback only)

class Server:
    """A loopback HTTP server in a thread. routes: path -> list of responses served in turn (the last
    repeats); a response is (status, headers, body) with body bytes; headers may omit Content-Length
    when "close" is set, for a close-delimited body of unknown length."""

    def __init__(self, host: str = "127.0.0.1", tls: ssl.SSLContext | None = None):
        self.routes: dict[str, list] = {}
        self.requests: list[dict] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self):
                path = self.path.split("?", 1)[0]
                server.requests.append({"path": self.path, "headers": dict(self.headers)})
                answers = server.routes.get(path) or [(404, {}, b"not found")]
                n = sum(1 for r in server.requests if r["path"].split("?", 1)[0] == path)
                status, headers, body = answers[min(n, len(answers)) - 1]
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                if "close" in headers or "Content-Length" not in headers:
                    if "close" not in headers:
                        self.send_header("Content-Length", str(len(body)))
                    self.send_header("Connection", "close")
                self.end_headers()
                self.wfile.write(body)
                self.close_connection = True

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer((host, 0), Handler)
        if tls:
            self.httpd.socket = tls.wrap_socket(self.httpd.socket, server_side=True,
                                                do_handshake_on_connect=False)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.base = "%s://%s:%d" % ("https" if tls else "http", host, self.port)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def route(self, path: str, *answers):
        self.routes[path] = list(answers)

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    s = Server()
    yield s
    s.close()


def ok(body: bytes, **headers):
    return (200, dict(headers), body)


def plan_for(*downloads, allow=("127.0.0.1",), **extra):
    """A plan whose downloads (unless they say otherwise) may reach `allow`."""
    plan = {"downloads": [{"allow": list(allow), **d} for d in downloads], "timeout": 10, "retries": 2,
            "maxBytes": 1024 * 1024}
    plan.update(extra)
    return plan


def private(report) -> str:
    """The operator-only part of a report (runnerd logs it, never publishes it)."""
    return json.dumps(report.get("detail"))


# ---------------------------------------------------------------- check_address (pure, no packets)

@pytest.mark.parametrize("ip, words", [
    ("127.0.0.1", "loopback"), ("127.9.9.9", "loopback"), ("::1", "loopback"),
    ("10.1.2.3", "private"), ("172.17.0.1", "private"), ("172.31.255.255", "private"),
    ("192.168.1.1", "private"), ("169.254.169.254", "link-local"), ("fe80::1", "link-local"),
    ("fe80::1%eth0", "link-local"), ("fd00:ec2::254", "private"), ("fc00::1", "private"),
    ("100.64.0.1", "CGNAT"), ("0.0.0.0", "unspecified"), ("::", "unspecified"),
    ("224.0.0.1", "multicast"), ("ff02::1", "multicast"), ("255.255.255.255", "broadcast"),
    ("240.0.0.1", "reserved"), ("192.0.2.10", "non-public"),
    ("::ffff:127.0.0.1", "loopback"), ("::ffff:169.254.169.254", "link-local"),
    ("::ffff:10.0.0.1", "private"), ("64:ff9b::a9fe:a9fe", "link-local"),  # NAT64 of the metadata IP
    ("64:ff9b:1::1", "NAT64"), ("::127.0.0.1", "loopback"), ("2002:7f00:1::1", "loopback"),
])
def test_check_address_refuses_non_public(ip, words):
    why = prov.check_address("example.com", ip, [])
    assert why and words in why and ip in why
    assert "provisionAllow" in why


@pytest.mark.parametrize("ip", ["127.0.0.1", "::1", "10.1.2.3", "172.17.0.1", "192.168.1.1",
                                "169.254.169.254", "fe80::1", "fd00:ec2::254", "100.64.0.1", "0.0.0.0",
                                "::ffff:127.0.0.1"])
def test_check_address_allows_exact_ip(ip):
    assert prov.check_address("h.example", ip, [ip]) is None


@pytest.mark.parametrize("ip, cidr", [
    ("127.0.0.1", "127.0.0.0/8"), ("10.1.2.3", "10.0.0.0/8"), ("172.17.0.1", "172.16.0.0/12"),
    ("192.168.1.1", "192.168.0.0/16"), ("169.254.169.254", "169.254.0.0/16"), ("fe80::1", "fe80::/10"),
    ("fd00:ec2::254", "fd00::/8"), ("100.64.0.1", "100.64.0.0/10"), ("::1", "::1/128"),
    ("::ffff:127.0.0.1", "127.0.0.0/8"),  # the IPv4 allow entry covers the mapped form too
    ("10.1.2.3", "10.1.2.0/8"),  # host bits set: accepted like config.py does (strict=False)
])
def test_check_address_allows_cidr(ip, cidr):
    assert prov.check_address("h.example", ip, [cidr]) is None


def test_check_address_allow_by_host_name():
    assert prov.check_address("files.internal", "10.0.0.5", ["Files.Internal"]) is None
    assert prov.check_address("files.internal.", "10.0.0.5", ["files.internal"]) is None
    assert prov.check_address("other.internal", "10.0.0.5", ["files.internal"])  # name must match
    assert prov.check_address("files.internal", "10.0.0.5", ["10.1.0.0/16", "::1"])  # no coverage


@pytest.mark.parametrize("ip", ["93.184.216.34", "8.8.8.8", "2606:2800:220:1:248:1893:25c8:1946",
                                "::ffff:93.184.216.34", "172.32.0.1", "100.128.0.1"])
def test_check_address_allows_public(ip):
    # Pure function: nothing is resolved or connected to.
    assert prov.check_address("example.com", ip, []) is None


def test_resolve_and_check_literal_and_any_address_rule(monkeypatch):
    with pytest.raises(prov.FetchError, match="^address not allowed$") as refused:
        prov.resolve_and_check("127.0.0.1", 80, [])
    assert "127.0.0.1 is a loopback address" in refused.value.detail  # for the operator only
    assert prov.resolve_and_check("127.0.0.1", 80, ["127.0.0.1"]) == ["127.0.0.1"]

    # A name resolving to a public AND a private address is refused (no DNS: getaddrinfo is faked).
    def fake(host, port, *a, **k):
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (ip, port)) for ip in ("93.184.216.34", "10.0.0.1")]
    monkeypatch.setattr(prov.socket, "getaddrinfo", fake)
    with pytest.raises(prov.FetchError) as refused:
        prov.resolve_and_check("mixed.example", 80, [])
    assert "10.0.0.1 is a private address" in refused.value.detail
    assert prov.resolve_and_check("mixed.example", 80, ["mixed.example"]) == ["93.184.216.34", "10.0.0.1"]


def test_connects_to_the_checked_ip_without_a_second_lookup(server, tmp_path, monkeypatch):
    """DNS-rebinding safety, in-process: the name is resolved exactly once; the connection goes to
    that IP while the Host header keeps the name. getaddrinfo is faked for the name (no DNS)."""
    server.route("/f", ok(b"pinned"))
    real, lookups = socket.getaddrinfo, []

    def fake(host, port, *args, **kwargs):
        if host == "rebind.test":
            lookups.append(host)
            ip = "127.0.0.1" if len(lookups) == 1 else "127.0.0.3"  # a rebound answer (still loopback)
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (ip, port))]
        assert kwargs.get("flags", 0) & socket.AI_NUMERICHOST, "unexpected non-numeric lookup"
        return real(host, port, *args, **kwargs)
    monkeypatch.setattr(prov.socket, "getaddrinfo", fake)
    item = {"kind": "dataset", "url": "http://rebind.test:%d/f" % server.port, "dest": str(tmp_path / "d"),
            "allow": ["rebind.test"]}
    plan = {"timeout": 10, "retries": 0, "maxBytes": 100}
    result = prov.fetch(item, plan, ssl.create_default_context())
    assert result["bytes"] == 6 and (tmp_path / "d").read_bytes() == b"pinned"
    assert lookups == ["rebind.test"]
    assert server.requests[0]["headers"]["Host"] == "rebind.test:%d" % server.port


@pytest.mark.parametrize("allow, followed", [([], False), (["127.0.0.1"], True)], ids=["consumer", "operator"])
def test_each_redirect_hop_gets_the_downloads_own_allow_list(server, tmp_path, monkeypatch, allow, followed):
    """A consumer's URL (empty allow) on a public host that redirects to a LAN address is refused at
    that hop, though the operator allow-listed the address for its own downloads (#10 item 4).
    No packet leaves loopback: the public name is faked, and so is the connection to its address."""
    other = Server()
    other.route("/lan", ok(b"lan secret"))
    server.route("/r", (302, {"Location": other.base + "/lan"}, b""))
    public, real_getaddrinfo, real_pinned = "93.184.216.34", socket.getaddrinfo, prov._pinned_socket

    def fake_getaddrinfo(host, port, *args, **kwargs):
        if host == "public.example":
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (public, port))]
        return real_getaddrinfo(host, port, *args, **kwargs)

    def pinned(ips, port, timeout):  # "the public host" is the first loopback server
        assert ips in ([public], ["127.0.0.1"]), ips
        return real_pinned(["127.0.0.1"], server.port if ips == [public] else port, timeout)
    monkeypatch.setattr(prov.socket, "getaddrinfo", fake_getaddrinfo)
    monkeypatch.setattr(prov, "_pinned_socket", pinned)
    item = {"kind": "algorithm", "url": "http://public.example/r", "dest": str(tmp_path / "a"), "allow": allow}
    record = {}
    try:
        if followed:
            assert prov.fetch(item, {"timeout": 10, "retries": 0, "maxBytes": 100}, None, record)["bytes"] == 10
            assert other.requests and (tmp_path / "a").read_bytes() == b"lan secret"
        else:
            with pytest.raises(prov.FetchError, match="^redirect refused: address not allowed$"):
                prov.fetch(item, {"timeout": 10, "retries": 0, "maxBytes": 100}, None, record)
            assert other.requests == [] and not (tmp_path / "a").exists()
            assert "127.0.0.1 is a loopback address" in record["error"]
        assert len(server.requests) == 1 and record["redirects"] == [other.base + "/lan"]
    finally:
        other.close()


def test_redact_hides_credentials_and_query():
    assert prov.redact("https://user:pw@Host.example:8443/p/a?token=s#f") == "https://host.example:8443/p/a?…"
    assert prov.redact("http://[::1]:80/x") == "http://[::1]:80/x"
    assert prov.redact("http://h/x") == "http://h/x"


def test_scripts_are_python39_stdlib_only():
    for script in (PROVISION, FILTER, NETPOLICY):
        tree = ast.parse(script.read_text(), feature_version=(3, 9))
        names = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        names |= {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
        assert names <= set(sys.stdlib_module_names) | {"__future__", "netpolicy"}, names


# ---------------------------------------------------------------- provision end to end (loopback)

def test_download_lands_with_right_bytes_and_sha(server, tmp_path):
    data = os.urandom(300_000)
    algo = b"#!/bin/sh\necho hi\n"
    server.route("/data.csv", ok(data))
    server.route("/algo", ok(algo))
    dest = tmp_path / "data" / "inputs" / "abc" / "0"
    alg_dest = tmp_path / "data" / "transformations" / "algorithm"
    sha = hashlib.sha256(data).hexdigest()
    plan = plan_for(
        {"kind": "dataset", "label": "dataset did:op:abc file 0", "url": server.base + "/data.csv",
         "sha256": "SHA256:" + sha.upper(), "dest": str(dest)},
        {"kind": "algorithm", "label": "algorithm", "url": server.base + "/algo", "sha256": None,
         "dest": str(alg_dest)})
    rc, report, out = run_step(PROVISION, plan, tmp_path)
    assert rc == 0, out
    assert dest.read_bytes() == data and alg_dest.read_bytes() == algo
    assert stat.S_IMODE(alg_dest.stat().st_mode) == 0o755
    assert report == {"ok": True, "files": [
        {"dest": str(dest), "bytes": len(data), "sha256": sha},
        {"dest": str(alg_dest), "bytes": len(algo), "sha256": None}],  # hashed only when checked
        "detail": [{"label": "dataset did:op:abc file 0", "url": server.base + "/data.csv", "redirects": []},
                   {"label": "algorithm", "url": server.base + "/algo", "redirects": []}]}
    assert "fetching dataset did:op:abc file 0 (1/2)" in out and "fetching algorithm (2/2)" in out
    assert str(server.port) not in out and "/data.csv" not in out  # the URL is the operator's
    assert "done: %d bytes sha256 verified" % len(data) in out
    assert server.requests[0]["headers"]["Host"] == "127.0.0.1:%d" % server.port
    assert not list(dest.parent.glob("*.part"))


def test_plan_from_env_and_empty_downloads(tmp_path):
    rc, report, _ = run_step(PROVISION, {"downloads": []}, tmp_path, via_env=True)
    assert rc == 0 and report == {"ok": True, "files": [], "detail": []}


def test_loopback_refused_without_allow_and_no_request_sent(server, tmp_path):
    server.route("/x", ok(b"secret"))
    dest = tmp_path / "d"
    plan = plan_for({"kind": "dataset", "label": "dataset did:op:ab file 0", "url": server.base + "/x",
                     "dest": str(dest)}, allow=())
    rc, report, out = run_step(PROVISION, plan, tmp_path)
    assert rc == 31
    assert report["ok"] is False and report["failed"] == "dataset"
    assert report["error"] == "dataset did:op:ab file 0: address not allowed"
    assert report["detail"][0]["error"] == ("refused: 127.0.0.1 is a loopback address "
                                            "(add it to provisionAllow to permit)")
    assert report["detail"][0]["url"] == server.base + "/x"
    assert server.requests == []
    assert not dest.exists()
    assert "Traceback" not in out


def test_404_fails_without_retries(server, tmp_path):
    plan = plan_for({"kind": "dataset", "url": server.base + "/missing", "dest": str(tmp_path / "d")})
    rc, report, _ = run_step(PROVISION, plan, tmp_path)
    assert rc == 31 and "HTTP 404" in report["error"]
    assert len(server.requests) == 1


def test_5xx_is_retried_then_succeeds(server, tmp_path):
    server.route("/flaky", (503, {}, b"busy"), ok(b"payload"))
    plan = plan_for({"kind": "dataset", "url": server.base + "/flaky", "dest": str(tmp_path / "d")})
    rc, report, out = run_step(PROVISION, plan, tmp_path)
    assert rc == 0, out
    assert (tmp_path / "d").read_bytes() == b"payload"
    assert len(server.requests) == 2 and "retry 1/2" in out


def test_5xx_gives_up_after_retries(server, tmp_path):
    server.route("/down", (500, {}, b"boom"))
    plan = plan_for({"kind": "dataset", "url": server.base + "/down", "dest": str(tmp_path / "d")}, retries=1)
    rc, report, _ = run_step(PROVISION, plan, tmp_path)
    assert rc == 31 and "HTTP 500" in report["error"]
    assert len(server.requests) == 2


def test_connection_refused_is_transient(tmp_path):
    with socket.socket() as s:  # a loopback port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    plan = plan_for({"kind": "dataset", "url": "http://127.0.0.1:%d/x" % port, "dest": str(tmp_path / "d")},
                    retries=1)
    rc, report, out = run_step(PROVISION, plan, tmp_path)
    assert rc == 31 and report["error"] == "dataset: connection refused" and "retry 1/1" in out
    assert "ConnectionRefusedError" in private(report) and str(port) not in out + report["error"]


def test_sha256_mismatch(server, tmp_path):
    server.route("/f", ok(b"actual"))
    dest = tmp_path / "d"
    plan = plan_for({"kind": "dataset", "url": server.base + "/f", "sha256": "0" * 64, "dest": str(dest)})
    rc, report, _ = run_step(PROVISION, plan, tmp_path)
    assert rc == 31 and report["error"] == "dataset: checksum mismatch" and "sha256 mismatch" in private(report)
    assert not dest.exists() and not (tmp_path / "d.part").exists()
    assert len(server.requests) == 1  # not retried


@pytest.mark.parametrize("headers", [{}, {"close": "1"}], ids=["content-length", "no-length"])
def test_max_bytes_exceeded(server, tmp_path, headers):
    server.route("/big", (200, headers, b"x" * 5000))
    dest = tmp_path / "d"
    plan = plan_for({"kind": "dataset", "url": server.base + "/big", "dest": str(dest)}, maxBytes=4096)
    rc, report, _ = run_step(PROVISION, plan, tmp_path)
    assert rc == 31 and report["error"] == "dataset: larger than maxDownloadGB"
    assert "4096-byte limit" in private(report)
    assert not dest.exists() and not (tmp_path / "d.part").exists()
    assert len(server.requests) == 1


def test_algorithm_failure_exits_32(server, tmp_path):
    server.route("/data", ok(b"rows"))
    plan = plan_for({"kind": "dataset", "url": server.base + "/data", "dest": str(tmp_path / "in")},
                    {"kind": "algorithm", "url": server.base + "/gone", "dest": str(tmp_path / "algo")})
    rc, report, _ = run_step(PROVISION, plan, tmp_path)
    assert rc == 32 and report["failed"] == "algorithm" and "HTTP 404" in report["error"]


def test_allowed_redirect_is_followed(server, tmp_path):
    server.route("/r", (302, {"Location": "/final"}, b""))
    server.route("/final", ok(b"here"))
    plan = plan_for({"kind": "dataset", "url": server.base + "/r", "dest": str(tmp_path / "d")})
    rc, report, out = run_step(PROVISION, plan, tmp_path)
    assert rc == 0 and (tmp_path / "d").read_bytes() == b"here"
    assert "redirected" in out and "/final" not in out
    assert report["detail"][0]["redirects"] == [server.base + "/final"]


def test_redirect_to_loopback_not_allowed_is_refused(server, tmp_path):
    try:  # a second loopback address (Linux routes all of 127/8 to lo)
        other = Server("127.0.0.2")
    except OSError:
        other = None
    target = (other.base if other else "http://127.0.0.2:9") + "/secret?token=abc"
    try:
        server.route("/r", (302, {"Location": target}, b""))
        plan = plan_for({"kind": "dataset", "url": server.base + "/r", "dest": str(tmp_path / "d")})
        rc, report, out = run_step(PROVISION, plan, tmp_path)
        assert rc == 31
        assert report["error"] == "dataset: redirect refused: address not allowed"
        assert "127.0.0.2" not in out + report["error"] and "secret" not in out + report["error"]
        record = report["detail"][0]
        assert record["url"] == server.base + "/r"
        assert record["redirects"] == [target.split("?")[0] + "?…"]
        assert "127.0.0.2 is a loopback address" in record["error"]
        assert "abc" not in out and "abc" not in json.dumps(report)
        if other:
            assert other.requests == []
    finally:
        if other:
            other.close()


def test_redirect_loop_is_capped(server, tmp_path):
    server.route("/loop", (302, {"Location": "/loop"}, b""))
    plan = plan_for({"kind": "dataset", "url": server.base + "/loop", "dest": str(tmp_path / "d")})
    rc, report, _ = run_step(PROVISION, plan, tmp_path)
    assert rc == 31 and report["error"] == "dataset: too many redirects"
    assert "more than 5 redirects" in private(report)
    assert len(server.requests) == 6


def test_query_and_userinfo_never_logged(server, tmp_path):
    url = "http://user:hunter2@127.0.0.1:%d/missing?token=TOPSECRET" % server.port
    plan = plan_for({"kind": "dataset", "url": url, "dest": str(tmp_path / "d")})
    rc, report, out = run_step(PROVISION, plan, tmp_path)
    assert rc == 31
    assert server.requests[0]["path"] == "/missing?token=TOPSECRET"  # still sent to the server
    for text in (out, json.dumps(report)):
        assert "TOPSECRET" not in text and "hunter2" not in text
    assert report["error"] == "dataset: HTTP 404"
    assert report["detail"][0]["url"] == "http://127.0.0.1:%d/missing?…" % server.port


@pytest.mark.parametrize("url", ["file:///etc/passwd", "ftp://127.0.0.1/x", "gopher://127.0.0.1/"])
def test_non_http_schemes_refused(tmp_path, url):
    plan = plan_for({"kind": "dataset", "url": url, "dest": str(tmp_path / "d")})
    rc, report, _ = run_step(PROVISION, plan, tmp_path)
    assert rc == 31 and report["error"] == "dataset: only http and https URLs are fetched"
    assert report["detail"][0]["error"].startswith("refused")


@pytest.mark.parametrize("plan", [
    {"downloads": "nope"},
    {"downloads": [{"kind": "model", "url": "http://x/", "dest": "/d"}]},
    {"downloads": [{"kind": "dataset", "url": "http://x/", "dest": "relative"}]},
    {"downloads": [], "retries": "many"},
    {"downloads": [], "allow": ["127.0.0.1"]},  # allow-lists are per download, never plan-wide
    {"downloads": [{"kind": "dataset", "url": "http://x/", "dest": "/d", "allow": "10.0.0.0/8"}]},
])
def test_malformed_plan(tmp_path, plan):
    rc, report, _ = run_step(PROVISION, plan, tmp_path)
    assert rc == 31 and report["ok"] is False and report["failed"] == "dataset"
    assert "malformed plan" in report["error"]


def test_unencodable_host_is_a_clean_failure(tmp_path):
    # The IDNA encoding fails inside socket.getaddrinfo before any resolver is asked: no packet.
    url = "http://%s.example/x?t=1" % ("\u00e4" * 70)
    plan = plan_for({"kind": "dataset", "url": url, "dest": str(tmp_path / "d")})
    rc, report, out = run_step(PROVISION, plan, tmp_path)
    assert rc == 31 and "invalid URL" in report["error"] and "t=1" not in out


def test_zero_timeout_is_malformed(tmp_path):
    rc, report, _ = run_step(PROVISION, {"downloads": [], "timeout": 0}, tmp_path)
    assert rc == 31 and "timeout" in report["error"]


def test_malformed_plan_not_json(tmp_path):
    (tmp_path / "out").mkdir()
    proc = subprocess.run([sys.executable, str(PROVISION)], capture_output=True, text=True, timeout=30,
                          env={**os.environ, "RUNNERD_PLAN": "{not json"}, cwd=tmp_path)
    assert proc.returncode == 31 and "Traceback" not in proc.stderr + proc.stdout


def test_bad_algorithm_checksum_fails_before_any_download(server, tmp_path):
    server.route("/data", ok(b"rows"))
    plan = plan_for({"kind": "dataset", "url": server.base + "/data", "dest": str(tmp_path / "in")},
                    {"kind": "algorithm", "url": server.base + "/a", "sha256": "md5:abc", "dest": str(tmp_path / "a")})
    rc, report, _ = run_step(PROVISION, plan, tmp_path)
    assert rc == 32 and report["failed"] == "algorithm" and "64 hex digits" in report["error"]
    assert server.requests == []


@pytest.fixture
def tls_files(tmp_path):
    if not shutil.which("openssl"):
        pytest.skip("openssl CLI not available")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-keyout", str(key), "-out", str(cert), "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1"], check=True, capture_output=True)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(str(cert), str(key))
    s = Server(tls=ctx)
    yield s, cert
    s.close()


def test_https_verifies_certificate_of_original_host(tls_files, tmp_path):
    server, cert = tls_files
    server.route("/f", ok(b"over tls"))
    dest = tmp_path / "d"
    plan = plan_for({"kind": "dataset", "url": server.base + "/f", "dest": str(dest)})
    rc, report, _ = run_step(PROVISION, plan, tmp_path)  # self-signed: not trusted by default
    assert rc == 31 and "certificate" in report["error"] and not dest.exists()
    rc, report, out = run_step(PROVISION, plan, tmp_path, env={"SSL_CERT_FILE": str(cert)})
    assert rc == 0, (out, report)
    assert dest.read_bytes() == b"over tls"


# ---------------------------------------------------------------- filter

def filter_plan(tmp_path, **extra):
    plan = {"src": str(tmp_path / "src"), "dest": str(tmp_path / "out" / "outputs"), "maxFiles": 100,
            "maxBytes": 10 * 1024 * 1024}
    plan.update(extra)
    return plan


def test_filter_copies_nested_tree(tmp_path):
    src = tmp_path / "src"
    (src / "sub" / "deep").mkdir(parents=True)
    (src / "a.csv").write_bytes(b"1,2,3\n")
    (src / "sub" / "b.txt").write_bytes(b"hello")
    (src / "sub" / "deep" / "c.bin").write_bytes(os.urandom(3 * 1024 * 1024 + 5))
    (src / "sub" / "deep" / "c.bin").chmod(0o700)
    (src / "emptydir").mkdir()
    rc, report, out = run_step(FILTER, filter_plan(tmp_path), tmp_path)
    assert rc == 0, out
    dest = tmp_path / "out" / "outputs"
    assert report == {"ok": True, "skipped": [], "files": [
        {"path": "a.csv", "size": 6}, {"path": "sub/b.txt", "size": 5},
        {"path": "sub/deep/c.bin", "size": 3 * 1024 * 1024 + 5}]}
    for rel in ("a.csv", "sub/b.txt", "sub/deep/c.bin"):
        assert (dest / rel).read_bytes() == (src / rel).read_bytes()
        assert stat.S_IMODE((dest / rel).stat().st_mode) == 0o644
    assert not (dest / "emptydir").exists()  # only directories holding files are recreated
    assert "copied sub/b.txt (5 bytes)" in out


def test_filter_skips_symlinks_and_special_files(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_text("host secret")
    (src / "passwd").symlink_to("/etc/passwd")
    (src / "linkdir").symlink_to(outside, target_is_directory=True)
    (src / "dangling").symlink_to(tmp_path / "nowhere")
    os.mkfifo(src / "pipe")
    (src / "real.txt").write_text("ok")
    sock_path = src / "s.sock"
    sock = None
    if len(str(sock_path)) < 100:
        sock = socket.socket(socket.AF_UNIX)
        sock.bind(str(sock_path))
    try:
        rc, report, out = run_step(FILTER, filter_plan(tmp_path), tmp_path)  # 60 s timeout: no hang
    finally:
        if sock:
            sock.close()
    assert rc == 0, out
    dest = tmp_path / "out" / "outputs"
    assert sorted(p.name for p in dest.iterdir()) == ["real.txt"]
    assert report["files"] == [{"path": "real.txt", "size": 2}]
    expected = ["dangling: symlink", "linkdir: symlink", "passwd: symlink", "pipe: fifo"]
    if sock:
        expected.append("s.sock: socket")
    assert report["skipped"] == sorted(expected)
    assert "skipped pipe (fifo)" in out


def test_filter_too_many_files(tmp_path):
    src = tmp_path / "src"
    (src / "d").mkdir(parents=True)
    for i in range(4):
        (src / "d" / str(i)).write_text("x")
    dest = tmp_path / "out" / "outputs"
    rc, report, out = run_step(FILTER, filter_plan(tmp_path, maxFiles=3), tmp_path)
    assert rc == 3
    assert report == {"ok": False, "reason": "limits", "error": "outputs hold more than 3 files"}
    assert list(dest.iterdir()) == []


def test_filter_too_many_bytes(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "a").write_bytes(b"x" * 1000)
    (src / "b").write_bytes(b"x" * 1000)
    dest = tmp_path / "out" / "outputs"
    rc, report, _ = run_step(FILTER, filter_plan(tmp_path, maxBytes=1500), tmp_path)
    assert rc == 3 and report["reason"] == "limits" and report["error"] == "outputs exceed 1.5 KiB"
    assert list(dest.iterdir()) == []


def test_filter_gib_wording():
    flt = _load(FILTER)
    assert flt.human(5368709120) == "5.0 GiB" and flt.human(12) == "12 bytes"


@pytest.mark.parametrize("make", [lambda src: src.mkdir(), lambda src: None], ids=["empty", "missing"])
def test_filter_empty_or_missing_src(tmp_path, make):
    make(tmp_path / "src")
    rc, report, _ = run_step(FILTER, filter_plan(tmp_path), tmp_path, via_env=True)
    assert rc == 0 and report == {"ok": True, "files": [], "skipped": []}


def test_filter_clears_stale_dest_and_escapes_names(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "evil\nforged line").write_text("x")
    dest = tmp_path / "out" / "outputs"
    (dest / "old").mkdir(parents=True)
    (dest / "old" / "stale.txt").write_text("from an interrupted run")
    rc, report, out = run_step(FILTER, filter_plan(tmp_path), tmp_path)
    assert rc == 0
    assert [p.name for p in dest.iterdir()] == ["evil\nforged line"]
    assert report["files"] == [{"path": "evil\nforged line", "size": 1}]
    assert "\nforged line" not in out and "copied evil\\nforged line (1 bytes)" in out


def test_filter_skips_too_deep_trees(tmp_path):
    flt = _load(FILTER)
    deep = tmp_path / "src" / Path(*["d"] * (flt.MAX_DEPTH + 1))
    deep.mkdir(parents=True)
    (deep / "f").write_text("x")
    (tmp_path / "src" / "top").write_text("y")
    rc, report, _ = run_step(FILTER, filter_plan(tmp_path), tmp_path)
    assert rc == 0 and report["files"] == [{"path": "top", "size": 1}]
    assert report["skipped"] == ["/".join(["d"] * (flt.MAX_DEPTH + 1)) + ": nested deeper than 64 levels"]


def test_filter_malformed_plan(tmp_path):
    rc, report, _ = run_step(FILTER, {"dest": str(tmp_path / "o")}, tmp_path)
    assert rc == 1 and report["ok"] is False and report["reason"] == "error"


def _allocated(path: Path) -> int:
    return path.stat().st_blocks * 512


def test_filter_copies_holes_as_holes(tmp_path):
    """Issue #10 item 8: a sparse output costs the algorithm almost nothing in its quota; copied
    densely it became diskGB of host disk. Only data extents are written: the copy is as sparse."""
    src = tmp_path / "src"
    src.mkdir()
    sparse = src / "sparse.bin"
    with open(sparse, "wb") as f:
        f.write(b"head")
        f.seek(40 * 1024 * 1024)
        f.write(b"middle")
        f.truncate(80 * 1024 * 1024)  # a trailing hole too
    if _allocated(sparse) > 1024 * 1024:
        pytest.skip("this file system does not keep holes")
    rc, report, out = run_step(FILTER, filter_plan(tmp_path, maxBytes=100 * 1024 * 1024), tmp_path)
    assert rc == 0, out
    copy = tmp_path / "out" / "outputs" / "sparse.bin"
    assert report["files"] == [{"path": "sparse.bin", "size": 80 * 1024 * 1024}]
    assert copy.stat().st_size == 80 * 1024 * 1024
    assert _allocated(copy) <= 1024 * 1024, _allocated(copy)  # not 80 MiB
    with open(copy, "rb") as f:
        assert f.read(4) == b"head"
        f.seek(40 * 1024 * 1024)
        assert f.read(6) == b"middle"
        f.seek(80 * 1024 * 1024 - 3)
        assert f.read() == b"\0\0\0"


def test_filter_counts_a_sparse_file_by_its_apparent_size(tmp_path):
    """What the owner downloads is the apparent size: a hole does not get past maxBytes."""
    src = tmp_path / "src"
    src.mkdir()
    with open(src / "huge.bin", "wb") as f:
        f.truncate(1024**3)
    rc, report, _ = run_step(FILTER, filter_plan(tmp_path, maxBytes=1024 * 1024), tmp_path)
    assert rc == 3 and report["reason"] == "limits", report
    assert list((tmp_path / "out" / "outputs").iterdir()) == []
