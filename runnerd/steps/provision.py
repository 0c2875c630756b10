"""runnerd provision step: download a job's datasets and algorithm into its /data volume.

Runs as `python3 /runnerd/provision.py` in a throwaway helper container (stdlib only, Python 3.9+);
plan JSON in $RUNNERD_PLAN (or the file named by argv[1], for tests):
    {"downloads": [{"kind": "dataset"|"algorithm", "label", "url", "sha256": hex|"sha256:hex"|null, "dest",
                    "allow": [host|IP|CIDR], "consumer": bool}], "timeout", "retries", "maxBytes", "report",
     "hash": bool}
With `hash`, every download's sha256 is computed as it streams (for the job's provenance) and
reported with its label, checksum or not.

Some URLs come from whoever submitted the job: here runnerd makes requests for an untrusted party.
So, before connecting, it refuses hosts resolving to loopback, private, link-local, CGNAT or other
non-public addresses (the Docker host, the cloud metadata service, the LAN) unless the download's
own `allow` covers them (provisionAllow, given to the operator's DDO URLs only). It connects to
exactly the address it checked (no second DNS lookup to rebind), re-checks every redirect hop, caps
sizes and verifies checksums. Its output is the consumer's configurationLog and the report's `error`
the job's error, so both name a download by its `label` only (`dataset <did> file <i>`) with a reason
from a fixed vocabulary: never a host, path, redirect target or raw exception text. Those go to the
report's `detail` (URLs without userinfo or query), which runnerd logs and never publishes.

Writes a report JSON to plan.report; exits 0, or 31 (a dataset failed) / 32 (the algorithm failed).
"""

from __future__ import annotations

import errno
import hashlib
import http.client
import json
import os
import socket
import ssl
import sys
import time
import traceback
from urllib.parse import quote, urljoin, urlsplit

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # netpolicy.py beside it, however it is run
from netpolicy import HINT, check_address

EXIT = {"dataset": 31, "algorithm": 32}
MAX_REDIRECTS = 5
CHUNK = 1024 * 1024
DEFAULT_REPORT = "/runnerd/out/report.json"
TOO_BIG = "larger than maxDownloadGB"


class FetchError(Exception):
    """An expected failure: `reason` consumer-safe, `detail` for the operator (hosts, paths). `transient`
    ones are worth retrying; `refused` ones were never attempted; `url`: the hop it happened at."""

    def __init__(self, reason: str, detail: str = "", transient=False, refused=False, url: str = ""):
        super().__init__(reason)
        self.reason, self.detail = reason, detail or reason
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


def resolve_and_check(host: str, port: int, allow: list) -> list:
    """Resolve `host` once and return its IPs; FetchError if any of them is refused."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as e:
        # EAI_AGAIN is a temporary resolver failure; an unknown name will not appear by retrying.
        raise FetchError("cannot resolve the host", "cannot resolve %s: %s" % (host, e.strerror or e),
                         transient=e.errno == socket.EAI_AGAIN) from None
    ips = list(dict.fromkeys(info[4][0] for info in infos))  # unique, in resolver order
    for ip in ips:  # refuse when ANY address is bad: the connection could land on that one
        why = check_address(host, ip, allow)
        if why:
            raise FetchError("address not allowed", why, refused=True)
    if not ips:
        raise FetchError("cannot resolve the host", "cannot resolve %s: no addresses" % host)
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


def _open(url: str, allow: list, timeout: float, tls, hops: list):
    """GET `url`, following up to MAX_REDIRECTS redirects, each hop's address checked anew (and
    appended, redacted, to `hops` for the operator's log)."""
    for _ in range(MAX_REDIRECTS + 1):
        try:
            parts = urlsplit(url)
            scheme, host, port = parts.scheme.lower(), parts.hostname, parts.port
        except ValueError as e:
            raise FetchError("invalid URL", "invalid URL: %s" % e, url=url) from None
        if scheme not in ("http", "https"):
            raise FetchError("only http and https URLs are fetched", refused=True, url=url)
        if not host:
            raise FetchError("invalid URL", "invalid URL: no host", url=url)
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
            hops.append(redact(url))
            print("  redirected", flush=True)  # where to is the operator's business only
            continue
        return conn, resp
    raise FetchError("too many redirects", "more than %d redirects" % MAX_REDIRECTS, url=url)


def _write_error(dest: str, e: OSError) -> FetchError:
    full = e.errno in (errno.ENOSPC, errno.EDQUOT)  # disk full / quota: retrying will not help
    return FetchError("no space left on the job's disk (diskGB)" if full else "cannot write the file",
                      "cannot write %s: %s" % (dest, e.strerror or e))


def _download(item: dict, plan: dict, tls, hops: list) -> dict:
    """One attempt: stream the body to dest.part, check size and checksum, then rename to dest."""
    url, dest, max_bytes = item["url"], item["dest"], plan["maxBytes"]
    conn, resp = _open(url, item.get("allow") or [], plan["timeout"], tls, hops)
    part = dest + ".part"
    try:
        # The status code only: the reason phrase is the server's own text.
        status = "HTTP %d %s" % (resp.status, resp.reason)
        if resp.status == 429 or resp.status >= 500:
            raise FetchError("HTTP %d" % resp.status, status, transient=True)
        if not (200 <= resp.status < 300) or resp.status == 206:
            raise FetchError("HTTP %d" % resp.status, status)
        length = resp.getheader("Content-Length")
        if length and length.strip().isdigit() and int(length) > max_bytes:
            raise FetchError(TOO_BIG, "size %s bytes exceeds the %d-byte limit" % (length.strip(), max_bytes))
        want = wanted_sha256(item)
        # Hash when there is something to compare with, or when the job's provenance records each
        # input's digest (plan `hash`): otherwise sha256 would cost more CPU than the copy.
        hashing = bool(want or plan.get("hash"))
        digest, size, last_log = (hashlib.sha256() if hashing else None), 0, time.monotonic()
        view = memoryview(bytearray(CHUNK))  # one buffer for the whole download
        try:
            os.makedirs(os.path.dirname(dest) or "/", exist_ok=True)
            out = open(part, "wb")
        except OSError as e:
            raise _write_error(dest, e) from None
        with out:
            while True:
                n = resp.readinto(view)
                if not n:
                    break
                size += n
                if size > max_bytes:  # also catches bodies without (or lying about) Content-Length
                    raise FetchError(TOO_BIG, "download exceeds the %d-byte limit" % max_bytes)
                if digest is not None:
                    digest.update(view[:n])
                try:
                    out.write(view[:n])
                except OSError as e:
                    raise _write_error(dest, e) from None
                if time.monotonic() - last_log > 10:
                    print("  %d bytes so far" % size, flush=True)
                    last_log = time.monotonic()
        got = digest.hexdigest() if digest is not None else None
        if want and got != want:
            raise FetchError("checksum mismatch", "sha256 mismatch: expected %s, got %s" % (want, got))
        os.replace(part, dest)
        if item["kind"] == "algorithm":
            os.chmod(dest, 0o755)  # the algorithm's entrypoint may execute it directly
        result = {"dest": dest, "bytes": size, "sha256": got}
        if plan.get("hash"):
            result["label"] = label_of(item)  # what the provenance names the input by
        return result
    finally:
        conn.close()
        if os.path.exists(part):
            os.unlink(part)  # never leave a partial or rejected file behind


# Library exceptions -> the consumer-safe reason (their messages may quote hosts, paths or URLs).
_NET_REASONS = [(ConnectionRefusedError, "connection refused"), (ConnectionError, "connection reset"),
                (socket.timeout, "timed out"), (TimeoutError, "timed out"),
                (http.client.HTTPException, "invalid or truncated HTTP response"), (ssl.SSLError, "TLS error")]
_UNREACHABLE: dict[object, str] = {errno.ENETUNREACH: "network unreachable", errno.EHOSTUNREACH: "host unreachable"}


def _attempt(item: dict, plan: dict, tls, hops: list) -> dict:
    """_download, with library exceptions turned into FetchErrors that say whether to retry."""
    try:
        return _download(item, plan, tls, hops)
    except ssl.SSLCertVerificationError as e:
        raise FetchError("TLS certificate rejected", "TLS certificate rejected: %s" % e.verify_message) from None
    except (http.client.InvalidURL, UnicodeError) as e:
        raise FetchError("invalid URL", "invalid URL: %s" % e) from None
    except (OSError, http.client.HTTPException) as e:  # resets, refusals, timeouts, truncated bodies
        reason = next((r for kind, r in _NET_REASONS if isinstance(e, kind)), None)
        reason = reason or _UNREACHABLE.get(getattr(e, "errno", None), "network error")
        raise FetchError(reason, "%s: %s" % (type(e).__name__, e), transient=True) from None


def fetch(item: dict, plan: dict, tls, record: dict | None = None) -> dict:
    """Download with retries and exponential backoff, for transient failures only. `record` (the
    operator's view of this download) gets the redirect chain and the raw error."""
    record = {} if record is None else record
    attempt = 0
    while True:
        hops = record["redirects"] = []
        try:
            return _attempt(item, plan, tls, hops)
        except FetchError as e:
            detail = e.detail.replace(HINT, " (provisionAllow does not apply to a consumer's URL)") \
                if item.get("consumer") else e.detail
            record["error"] = "%s: %s" % ("refused" if e.refused else "failed", detail)
            if e.url and e.url != item["url"]:
                record["error"] += " (at %s)" % redact(e.url)
            if not e.transient or attempt >= plan["retries"]:
                reason = "redirect refused: " + e.reason if e.refused and hops else e.reason
                raise FetchError(reason, record["error"], refused=e.refused) from None
            delay = 0.5 * 2 ** attempt
            attempt += 1
            print("  transient failure (%s); retry %d/%d in %.1fs" % (e.reason, attempt, plan["retries"], delay),
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


def label_of(item) -> str:
    """How the consumer-visible output names a download: runnerd's label, never the URL."""
    label = item.get("label") if isinstance(item, dict) else None
    return label if isinstance(label, str) and label else str(item.get("kind", "download"))


def plan_problem(plan) -> tuple | None:
    """(kind to blame, public message, operator detail) for a plan runnerd should never have written."""
    if not isinstance(plan, dict) or not isinstance(plan.get("downloads", []), list):
        return "dataset", "malformed plan: must be an object with a downloads list", ""
    for key, least in (("timeout", 0.001), ("retries", 0), ("maxBytes", 0)):  # timeout 0: non-blocking
        value = plan.get(key, least)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < least:
            return "dataset", "malformed plan: %s must be a number >= %s" % (key, least), ""
    if "allow" in plan:  # one list for all would hand the operator's allow-list to a consumer's URL
        return "dataset", "malformed plan: allow belongs to each download", ""
    for i, item in enumerate(plan.get("downloads", [])):
        if not (isinstance(item, dict) and item.get("kind") in EXIT and isinstance(item.get("url"), str)
                and isinstance(item.get("dest"), str) and os.path.isabs(item["dest"])
                and isinstance(item.get("label", ""), str) and isinstance(item.get("allow", []), list)):
            return "dataset", "malformed plan: downloads[%d] needs kind, url, an absolute dest, allow a list" % i, ""
        try:  # checked up front, so nothing is downloaded for a job that cannot succeed
            wanted_sha256(item)
        except ValueError as e:
            return (item["kind"], "%s: invalid sha256 checksum (must be 64 hex digits)" % label_of(item),
                    "%s %s: %s" % (label_of(item), redact(item["url"]), e))
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
        problem = "dataset", "malformed plan: not readable JSON", "malformed plan: %s" % e
    if problem:
        kind, msg, detail = problem
        print(msg, flush=True)
        write_report(report_path, {"ok": False, "failed": kind, "error": msg, "detail": [
            {"label": kind, "error": detail or msg}]})
        return EXIT[kind]
    plan = dict({"timeout": 60, "retries": 2, "maxBytes": 10 * 1024 ** 3}, **plan)
    downloads, done, detail = plan.get("downloads", []), [], []
    tls = ssl.create_default_context()
    try:
        for n, item in enumerate(downloads, 1):
            kind, label = item["kind"], label_of(item)
            record = {"label": label, "url": redact(item["url"])}  # the operator's view, never printed
            detail.append(record)
            print("fetching %s (%d/%d)" % (label, n, len(downloads)), flush=True)
            result = fetch(item, plan, tls, record)
            record.pop("error", None)  # a transient failure that a retry overcame
            verified = " sha256 verified" if item.get("sha256") else ""
            print("  done: %d bytes%s" % (result["bytes"], verified), flush=True)
            done.append(result)
    except Exception as e:  # FetchError, or a bug: still report, so the job ends with the right status
        if isinstance(e, FetchError):
            error = "%s: %s" % (label, e.reason)
        else:  # the traceback may quote a URL: the operator's detail gets it, not stdout/stderr
            error = "internal error: %s" % type(e).__name__
            detail.append({"label": kind, "error": "internal error: " + traceback.format_exc()})
        print("  %s" % error, flush=True)
        write_report(report_path, {"ok": False, "failed": kind, "error": error, "detail": detail})
        return EXIT[kind]
    print("provisioned %d file(s)" % len(done), flush=True)
    write_report(report_path, {"ok": True, "files": done, "detail": detail})
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
