"""runnerd provision step: download a job's datasets and algorithm into its /data volume.

Runs as `python3 /runnerd/provision.py` in a throwaway helper container (stdlib only, Python 3.9+);
plan JSON in $RUNNERD_PLAN (or the file named by argv[1], for tests):
    {"downloads": [{"kind": "dataset"|"algorithm", "url", "sha256": hex|"sha256:hex"|null, "dest"}],
     "allow": [host|IP|CIDR], "timeout": s, "retries": n, "maxBytes": n, "report": path}

The URLs come from whoever submitted the job: this is where runnerd makes requests for an untrusted
party. So, before connecting, it refuses hosts resolving to loopback, private, link-local, CGNAT or
other non-public addresses (the Docker host, the cloud metadata service, the LAN) unless the
operator allow-listed them (provisionAllow). It connects to exactly the address it checked (no
second DNS lookup to rebind), re-checks every redirect hop, caps sizes, verifies checksums and never
logs query strings or credentials found in URLs.

Writes a report JSON to plan.report; exits 0, or 31 (a dataset failed) / 32 (the algorithm failed).
"""

from __future__ import annotations

import hashlib
import http.client
import ipaddress
import json
import os
import socket
import ssl
import sys
import time
import traceback
from urllib.parse import quote, urljoin, urlsplit

EXIT = {"dataset": 31, "algorithm": 32}
MAX_REDIRECTS = 5
CHUNK = 1024 * 1024
DEFAULT_REPORT = "/runnerd/out/report.json"
HINT = " (add it to provisionAllow to permit)"

# Ranges a job must not reach unless allow-listed, with the words used to explain a refusal.
# Checked explicitly rather than via ipaddress.is_global, whose answers differ between Python versions.
_BLOCKED = [(ipaddress.ip_network(net), why) for net, why in [
    ("0.0.0.0/8", "unspecified"), ("127.0.0.0/8", "loopback"),
    ("169.254.0.0/16", "link-local"), ("10.0.0.0/8", "private"), ("172.16.0.0/12", "private"),
    ("192.168.0.0/16", "private"), ("100.64.0.0/10", "CGNAT (shared)"), ("224.0.0.0/4", "multicast"),
    ("255.255.255.255/32", "broadcast"), ("240.0.0.0/4", "reserved"),
    ("::/128", "unspecified"), ("::1/128", "loopback"), ("fe80::/10", "link-local"),
    ("fec0::/10", "site-local"), ("fc00::/7", "private (unique local)"), ("ff00::/8", "multicast"),
    ("64:ff9b:1::/48", "local-use NAT64"), ("100::/64", "discard-only"),
]]
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_V4COMPAT = ipaddress.ip_network("::/96")


class FetchError(Exception):
    """An expected failure. `transient` ones are worth retrying; `refused` ones were never attempted;
    `url` is the (redirect hop) URL it happened at."""

    def __init__(self, message: str, transient: bool = False, refused: bool = False, url: str = ""):
        super().__init__(message)
        self.transient, self.refused, self.url = transient, refused, url


def redact(url: str) -> str:
    """The URL without userinfo, query or fragment: those may carry tokens and must not be logged."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        if ":" in host:
            host = "[%s]" % host
        port = ":%d" % parts.port if parts.port is not None else ""
    except ValueError:
        return "<unparseable URL>"
    tail = "?…" if (parts.query or parts.fragment or url.rstrip().endswith(("?", "#"))) else ""
    return "%s://%s%s%s%s" % (parts.scheme, host, port, parts.path, tail)


def _embedded_v4(addr):
    """IPv4 addresses hidden inside an IPv6 one (mapped, NAT64, compat, 6to4, Teredo)."""
    if addr.version != 6:
        return []
    found = [addr.ipv4_mapped, addr.sixtofour]
    if addr in _NAT64 or (addr in _V4COMPAT and int(addr) > 1):
        found.append(ipaddress.IPv4Address(int(addr) & 0xFFFFFFFF))
    if addr.teredo:
        found.extend(addr.teredo)
    return [a for a in found if a is not None]


def _classify(addr) -> str | None:
    for net, why in _BLOCKED:
        if addr.version == net.version and addr in net:
            return why
    for inner in _embedded_v4(addr):
        why = _classify(inner)
        if why:
            return "IPv6 form of %s, %s %s" % (inner, _article(why), why)
    if addr.version == 4 and not addr.is_global:  # documentation, benchmarking, IETF protocol ranges
        return "special-purpose (non-public)"
    return None


def _article(word: str) -> str:
    return "an" if word[0] in "aeiouAEIOU" else "a"


def check_address(host: str, ip: str, allow: list) -> str | None:
    """Why fetching from `ip` (resolved from `host`) is refused, or None when it is permitted."""
    try:
        addr = ipaddress.ip_address(ip.split("%", 1)[0])  # drop an IPv6 zone such as %eth0
    except ValueError:
        return "%s is not an IP address" % ip
    candidates = [addr] + _embedded_v4(addr)
    wanted = host.lower().rstrip(".")
    for entry in allow or ():
        entry = str(entry).strip()
        try:
            net = ipaddress.ip_network(entry, strict=False)
        except ValueError:
            if entry.lower().rstrip(".") == wanted:  # an allow-listed host name covers all its IPs
                return None
            continue
        if any(c.version == net.version and c in net for c in candidates):
            return None
    why = _classify(addr)
    if why is None:
        return None
    return "%s is %s %s address%s" % (ip, _article(why), why, HINT)


def resolve_and_check(host: str, port: int, allow: list) -> list:
    """Resolve `host` once and return its IPs; FetchError if any of them is refused."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as e:
        # EAI_AGAIN is a temporary resolver failure; an unknown name will not appear by retrying.
        raise FetchError("cannot resolve %s: %s" % (host, e.strerror or e),
                         transient=e.errno == socket.EAI_AGAIN) from None
    ips = list(dict.fromkeys(info[4][0] for info in infos))  # unique, in resolver order
    for ip in ips:  # refuse when ANY address is bad: the connection could land on that one
        why = check_address(host, ip, allow)
        if why:
            raise FetchError(why, refused=True)
    if not ips:
        raise FetchError("cannot resolve %s: no addresses" % host)
    return ips


def _pinned_socket(ips: list, port: int, timeout: float) -> socket.socket:
    """Connect to one of the already-checked IPs; AI_NUMERICHOST guarantees no further DNS lookup."""
    last = None
    for ip in ips:
        for family, kind, proto, _, sockaddr in socket.getaddrinfo(
                ip, port, type=socket.SOCK_STREAM, flags=socket.AI_NUMERICHOST):
            sock = socket.socket(family, kind, proto)
            try:
                sock.settimeout(timeout)
                sock.connect(sockaddr)
                return sock
            except OSError as e:
                sock.close()
                last = e
    raise last or OSError("no address to connect to")


class _PinnedHTTP(http.client.HTTPConnection):
    """HTTP(S) to a fixed IP while Host header and TLS SNI/certificate checks use the URL's host."""

    def __init__(self, host, port, ips, timeout, tls=None):
        super().__init__(host, port, timeout=timeout)
        self.default_port = 443 if tls else 80  # so Host omits the port exactly when it is default
        self._ips, self._tls = ips, tls

    def connect(self):
        sock = _pinned_socket(self._ips, self.port, self.timeout)
        if self._tls:
            sock = self._tls.wrap_socket(sock, server_hostname=self.host)
        self.sock = sock


def _open(url: str, allow: list, timeout: float, tls):
    """GET `url`, following up to MAX_REDIRECTS redirects, each hop's address checked anew."""
    for _ in range(MAX_REDIRECTS + 1):
        try:
            parts = urlsplit(url)
            scheme, host, port = parts.scheme.lower(), parts.hostname, parts.port
        except ValueError as e:
            raise FetchError("invalid URL: %s" % e, url=url) from None
        if scheme not in ("http", "https"):
            raise FetchError("only http and https URLs are fetched", refused=True, url=url)
        if not host:
            raise FetchError("invalid URL: no host", url=url)
        port = port or (443 if scheme == "https" else 80)
        try:
            ips = resolve_and_check(host, port, allow)
        except FetchError as e:
            e.url = url
            raise
        # Userinfo is deliberately not turned into credentials: it would only ever be sent to the host.
        conn = _PinnedHTTP(host, port, ips, timeout, tls if scheme == "https" else None)
        target = (parts.path or "/") + ("?" + parts.query if parts.query else "")
        target = quote(target, safe="!#$%&'()*+,/:;=?@[]~")  # non-ASCII/space -> %XX, as browsers do
        try:
            conn.request("GET", target, headers={
                "User-Agent": "runnerd-provision", "Accept-Encoding": "identity", "Connection": "close"})
            resp = conn.getresponse()
        except BaseException:
            conn.close()
            raise
        location = resp.getheader("Location")
        if resp.status in (301, 302, 303, 307, 308) and location:
            conn.close()
            url = urljoin(url, location.strip())
            print("  redirected to %s" % redact(url), flush=True)
            continue
        return conn, resp
    raise FetchError("more than %d redirects" % MAX_REDIRECTS, url=url)


def _download(item: dict, plan: dict, tls) -> dict:
    """One attempt: stream the body to dest.part, check size and checksum, then rename to dest."""
    url, dest, max_bytes = item["url"], item["dest"], plan["maxBytes"]
    conn, resp = _open(url, plan["allow"], plan["timeout"], tls)
    part = dest + ".part"
    try:
        if resp.status == 429 or resp.status >= 500:
            raise FetchError("HTTP %d %s" % (resp.status, resp.reason), transient=True)
        if not (200 <= resp.status < 300) or resp.status == 206:
            raise FetchError("HTTP %d %s" % (resp.status, resp.reason))
        length = resp.getheader("Content-Length")
        if length and length.strip().isdigit() and int(length) > max_bytes:
            raise FetchError("size %s bytes exceeds the %d-byte limit" % (length.strip(), max_bytes))
        want = wanted_sha256(item)
        # Hash only when there is something to compare with: sha256 costs more CPU than the copy.
        digest, size, last_log = (hashlib.sha256() if want else None), 0, time.monotonic()
        view = memoryview(bytearray(CHUNK))  # one buffer for the whole download
        try:
            os.makedirs(os.path.dirname(dest) or "/", exist_ok=True)
            out = open(part, "wb")
        except OSError as e:
            raise FetchError("cannot write %s: %s" % (dest, e.strerror or e)) from None
        with out:
            while True:
                n = resp.readinto(view)
                if not n:
                    break
                size += n
                if size > max_bytes:  # also catches bodies without (or lying about) Content-Length
                    raise FetchError("download exceeds the %d-byte limit" % max_bytes)
                if digest is not None:
                    digest.update(view[:n])
                try:
                    out.write(view[:n])
                except OSError as e:  # disk full / quota: retrying will not help
                    raise FetchError("cannot write %s: %s" % (dest, e.strerror or e)) from None
                if time.monotonic() - last_log > 10:
                    print("  %d bytes so far" % size, flush=True)
                    last_log = time.monotonic()
        got = digest.hexdigest() if digest is not None else None
        if want and got != want:
            raise FetchError("sha256 mismatch: expected %s, got %s" % (want, got))
        os.replace(part, dest)
        if item["kind"] == "algorithm":
            os.chmod(dest, 0o755)  # the algorithm's entrypoint may execute it directly
        return {"dest": dest, "bytes": size, "sha256": got}
    finally:
        conn.close()
        if os.path.exists(part):
            os.unlink(part)  # never leave a partial or rejected file behind


def _attempt(item: dict, plan: dict, tls) -> dict:
    """_download, with library exceptions turned into FetchErrors that say whether to retry."""
    try:
        return _download(item, plan, tls)
    except ssl.SSLCertVerificationError as e:
        raise FetchError("TLS certificate rejected: %s" % e.verify_message) from None
    except (http.client.InvalidURL, UnicodeError):  # messages may quote the URL: leave them out
        raise FetchError("invalid URL") from None
    except (OSError, http.client.HTTPException) as e:  # resets, refusals, timeouts, truncated bodies
        raise FetchError("%s: %s" % (type(e).__name__, e), transient=True) from None


def fetch(item: dict, plan: dict, tls) -> dict:
    """Download with retries and exponential backoff, for transient failures only."""
    attempt = 0
    while True:
        try:
            return _attempt(item, plan, tls)
        except FetchError as e:
            if not e.transient or attempt >= plan["retries"]:
                where = redact(e.url or item["url"])
                if e.url and e.url != item["url"]:
                    where += " (redirected from %s)" % redact(item["url"])
                raise FetchError("%s %s: %s" % ("refused" if e.refused else "failed", where, e)) from None
            delay = 0.5 * 2 ** attempt
            attempt += 1
            print("  transient failure (%s); retry %d/%d in %.1fs" % (e, attempt, plan["retries"], delay),
                  flush=True)
            time.sleep(delay)


def wanted_sha256(item: dict) -> str | None:
    """The expected digest as lowercase hex (bare or `sha256:`-prefixed in the plan); ValueError if bad."""
    sha = item.get("sha256") or None  # "" means no checksum, like null
    if sha is None:
        return None
    hexpart = str(sha).lower()
    hexpart = hexpart[len("sha256:"):] if hexpart.startswith("sha256:") else hexpart
    if len(hexpart) != 64 or not all(c in "0123456789abcdef" for c in hexpart):
        raise ValueError("sha256 must be 64 hex digits, got %r" % str(sha)[:80])
    return hexpart


def plan_problem(plan) -> tuple | None:
    """(kind to blame, message) for a plan runnerd should never have written, else None."""
    if not isinstance(plan, dict) or not isinstance(plan.get("downloads", []), list):
        return "dataset", "malformed plan: must be an object with a downloads list"
    for key, least in (("timeout", 0.001), ("retries", 0), ("maxBytes", 0)):  # timeout 0: non-blocking
        value = plan.get(key, least)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < least:
            return "dataset", "malformed plan: %s must be a number >= %s" % (key, least)
    if not isinstance(plan.get("allow", []), list):
        return "dataset", "malformed plan: allow must be a list"
    for i, item in enumerate(plan.get("downloads", [])):
        if not (isinstance(item, dict) and item.get("kind") in EXIT and isinstance(item.get("url"), str)
                and isinstance(item.get("dest"), str) and os.path.isabs(item["dest"])):
            return "dataset", "malformed plan: downloads[%d] needs kind, url and an absolute dest" % i
        try:  # checked up front, so nothing is downloaded for a job that cannot succeed
            wanted_sha256(item)
        except ValueError as e:
            return item["kind"], "%s %s: %s" % (item["kind"], redact(item["url"]), e)
    return None


def write_report(path: str, report: dict) -> None:
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with open(path + ".tmp", "w") as f:
        json.dump(report, f)
    os.replace(path + ".tmp", path)  # runnerd never reads a half-written report


def main(argv: list) -> int:
    report_path, kind = DEFAULT_REPORT, "dataset"
    try:
        raw = open(argv[1]).read() if len(argv) > 1 else os.environ.get("RUNNERD_PLAN", "")
        plan = json.loads(raw)
        if isinstance(plan, dict) and isinstance(plan.get("report"), str):
            report_path = plan["report"]
        problem = plan_problem(plan)
    except (OSError, ValueError) as e:
        problem = "dataset", "malformed plan: %s" % e
    if problem:
        kind, msg = problem
        print(msg, flush=True)
        write_report(report_path, {"ok": False, "failed": kind, "error": msg})
        return EXIT[kind]
    plan = dict({"allow": [], "timeout": 60, "retries": 2, "maxBytes": 10 * 1024 ** 3}, **plan)
    downloads, done = plan.get("downloads", []), []
    tls = ssl.create_default_context()
    try:
        for n, item in enumerate(downloads, 1):
            kind = item["kind"]
            print("fetching %s %d/%d %s -> %s" % (kind, n, len(downloads), redact(item["url"]), item["dest"]),
                  flush=True)
            result = fetch(item, plan, tls)
            verified = " sha256 verified" if result["sha256"] else ""
            print("  done: %d bytes%s" % (result["bytes"], verified), flush=True)
            done.append(result)
    except FetchError as e:
        print("  %s" % e, flush=True)
        write_report(report_path, {"ok": False, "failed": kind, "error": str(e)})
        return EXIT[kind]
    except Exception as e:  # a bug: still report, so the job ends with the right status
        traceback.print_exc()
        write_report(report_path, {"ok": False, "failed": kind, "error": "internal error: %s" % type(e).__name__})
        return EXIT[kind]
    print("provisioned %d file(s)" % len(done), flush=True)
    write_report(report_path, {"ok": True, "files": done})
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
