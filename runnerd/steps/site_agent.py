"""runnerd site agent (#17): runs a provision or filter step on a node that shares no disk with runnerd.

Runs as `python3 /runnerd/site_agent.py` in the helper image (stdlib only, Python 3.9+; sitetar.py
beside it), as the job's user, with a read-only root and a small /tmp. Environment:

    RUNNERD_SITE_URL    runnerd's base URL as the node reaches it (http://10.231.0.1:8030)
    RUNNERD_SITE_TOKEN  this job's and step's token (never printed, not given to the step)
    RUNNERD_JOB         the job id
    RUNNERD_STEP        provision | filter
    RUNNERD_DATA_ROOT, RUNNERD_OUT_ROOT, RUNNERD_STEP_DIR
                        /data, /runnerd/out and /runnerd unless set (tests point them elsewhere)
    RUNNERD_SITE_RETRY_SECONDS
                        how long a transfer is retried (60 unless set)

It (1) GETs its seed and extracts it (`data/x` -> $RUNNERD_DATA_ROOT/x, `out/x` -> $RUNNERD_OUT_ROOT/x)
with sitetar.py's rules, (2) runs `python3 $RUNNERD_STEP_DIR/<step>.py` with the same environment
(less the token), its stdout and stderr passed through (they are the step's log), (3) PUTs a tar of
the out folder, streamed with chunked encoding (nothing is held whole in memory or /tmp), also when
the step failed (its report says why), and (4) exits with the step's exit code.

A transfer that fails the way a restarting runnerd makes it fail (connection refused or reset, a
timeout, a 5xx) is retried with backoff for RUNNERD_SITE_RETRY_SECONDS; then, or at once on a 4xx,
the agent exits 70 with one line on stderr. It names no address (that line is published), no path or
the token. SIGTERM goes to the step; a step stopped that way sends nothing back.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import stat
import subprocess
import sys
import time
from typing import Any, Dict, Iterator, Optional
from urllib.parse import quote, urlsplit

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # sitetar.py beside it, however it is run
try:
    import sitetar
except ImportError:  # shipped as two files: say which one is missing rather than a traceback
    sys.stderr.write("site agent: sitetar.py is missing beside site_agent.py\n")
    sys.exit(70)

EXIT_TRANSFER = 70
STEPS = ("provision", "filter")
TIMEOUT = 60.0  # one socket operation
_state: Dict[str, Any] = {"child": None, "stopped": False}


class Transient(Exception):
    """Worth retrying: runnerd may be restarting."""


class Refused(Exception):
    """runnerd said no (a 4xx): retrying cannot help."""


class LocalError(Exception):
    """Reading or writing this container's own files failed."""


def fail(text: str) -> None:
    sys.stderr.write("site agent: %s\n" % text)
    sys.stderr.flush()
    sys.exit(EXIT_TRANSFER)


class Site:
    def __init__(self, url: str, token: str, job: str, step: str):
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("RUNNERD_SITE_URL must be an http(s) URL")
        self.scheme, self.host, self.port = parts.scheme, parts.hostname, parts.port
        self.base = parts.path.rstrip("/") + "/site/v1/jobs/%s/%s" % (quote(job, safe=""), quote(step, safe=""))
        self.token = token

    def connect(self) -> http.client.HTTPConnection:
        cls = http.client.HTTPSConnection if self.scheme == "https" else http.client.HTTPConnection
        return cls(self.host, self.port, timeout=TIMEOUT)

    def headers(self) -> Dict[str, str]:
        return {"Authorization": "Bearer " + self.token, "User-Agent": "runnerd-site-agent"}

    def check(self, response: http.client.HTTPResponse, what: str) -> None:
        if response.status < 300:
            return
        try:
            body = json.loads(response.read(64 * 1024) or b"{}")
            detail = "%s: %s" % (body.get("code"), body.get("error"))
        except (ValueError, AttributeError, OSError, http.client.HTTPException):
            detail = response.reason
        text = "%s answered %d (%s)" % (what, response.status, sitetar.show(str(detail)))
        raise (Transient if response.status >= 500 else Refused)(text)

    def fetch(self, data_root: str, out_root: str) -> None:
        conn = self.connect()
        try:
            try:
                conn.request("GET", self.base + "/in", headers=self.headers())
                response = conn.getresponse()
            except (OSError, http.client.HTTPException) as exc:
                raise Transient("cannot reach runnerd (%s)" % type(exc).__name__) from None
            self.check(response, "the seed")
            try:
                sitetar.extract(_Network(response), {"data": data_root, "out": out_root}, keep_exec=True)
            except sitetar.TarTruncated:
                raise Transient("the seed arrived incomplete") from None
            except sitetar.TarRefused as exc:
                raise Refused("the seed was refused: %s" % exc) from None
            except OSError as exc:
                raise LocalError("cannot write the seed: %s" % (exc.strerror or exc)) from None
        finally:
            conn.close()

    def send(self, out_root: str) -> None:
        conn = self.connect()
        try:
            headers = dict(self.headers(), **{"Content-Type": "application/octet-stream"})
            try:
                conn.request("PUT", self.base + "/out", body=_guarded(out_tar(out_root)), headers=headers)
            except (OSError, http.client.HTTPException) as exc:
                response = _answer_anyway(conn)  # runnerd may have answered (a 413) and closed
                if response is None:
                    raise Transient("cannot send the outputs (%s)" % type(exc).__name__) from None
            else:
                try:
                    response = conn.getresponse()
                except (OSError, http.client.HTTPException) as exc:
                    raise Transient("no answer to the upload (%s)" % type(exc).__name__) from None
            self.check(response, "the upload")
        finally:
            conn.close()


class _Network:
    """The response as sitetar reads it: a failed read is the network's, so worth retrying."""

    def __init__(self, response: http.client.HTTPResponse):
        self.response = response

    def read(self, n: int) -> bytes:
        try:
            return self.response.read(n)
        except (OSError, http.client.HTTPException):
            raise sitetar.TarTruncated("the seed's connection broke") from None


def _answer_anyway(conn: http.client.HTTPConnection) -> Optional[http.client.HTTPResponse]:
    try:
        return conn.getresponse()
    except (OSError, http.client.HTTPException):
        return None


def _guarded(chunks: Iterator[bytes]) -> Iterator[bytes]:
    try:
        for chunk in chunks:
            yield chunk
    except OSError as exc:
        raise LocalError("cannot read the outputs: %s" % (exc.strerror or exc)) from None


def out_tar(root: str) -> Iterator[bytes]:
    """A tar of the out folder: its regular files (out/<path>) and its empty folders; the step
    makes nothing else, and anything else is left out with a line on stderr."""
    yield from _walk(root, "out", 0)
    yield sitetar.END


def _walk(folder: str, prefix: str, depth: int) -> Iterator[bytes]:
    with os.scandir(folder) as it:
        listing = sorted(it, key=lambda e: e.name)
    if not listing and depth:
        yield sitetar.header(prefix, is_dir=True)
    for entry in listing:
        name = "%s/%s" % (prefix, entry.name)
        mode = entry.stat(follow_symlinks=False).st_mode
        if stat.S_ISDIR(mode) and depth < sitetar.MAX_DEPTH:
            yield from _walk(entry.path, name, depth + 1)
        elif stat.S_ISREG(mode):
            fd, st = sitetar.open_regular(entry.path)
            yield sitetar.header(name, size=st.st_size)
            yield from sitetar.file_chunks(fd, st.st_size)
        else:
            sys.stderr.write("site agent: left out %s (not a regular file)\n" % sitetar.show(name))


def retrying(what: str, call: Any, budget: float) -> None:
    deadline, delay = time.monotonic() + budget, 0.5
    while True:
        try:
            return call()
        except Transient as exc:
            if time.monotonic() + delay > deadline:
                fail("%s failed for %.0f s, giving up: %s" % (what, budget, exc))
            time.sleep(delay)
            delay = min(delay * 2, 5.0)
        except Refused as exc:
            fail("%s refused: %s" % (what, exc))
        except LocalError as exc:
            fail("%s failed: %s" % (what, exc))


def _on_term(signum: int, _frame: Any) -> None:
    _state["stopped"] = True
    child = _state["child"]
    if child is None:
        sys.exit(128 + signum)
    child.send_signal(signum)


def run_step(step_dir: str, step: str) -> int:
    env = {k: v for k, v in os.environ.items() if k != "RUNNERD_SITE_TOKEN"}
    child = subprocess.Popen([sys.executable, os.path.join(step_dir, step + ".py")], env=env)
    _state["child"] = child
    code = child.wait()
    return 128 - code if code < 0 else code


def main() -> int:
    signal.signal(signal.SIGTERM, _on_term)
    env = os.environ
    missing = [k for k in ("RUNNERD_SITE_URL", "RUNNERD_SITE_TOKEN", "RUNNERD_JOB", "RUNNERD_STEP") if not env.get(k)]
    if missing:
        fail("missing %s in the environment" % ", ".join(missing))
    step = env["RUNNERD_STEP"]
    if step not in STEPS:
        fail("RUNNERD_STEP must be one of %s" % ", ".join(STEPS))
    try:
        site = Site(env["RUNNERD_SITE_URL"], env["RUNNERD_SITE_TOKEN"], env["RUNNERD_JOB"], step)
        budget = float(env.get("RUNNERD_SITE_RETRY_SECONDS") or 60)
    except ValueError as exc:
        fail(str(exc))
    data_root = env.get("RUNNERD_DATA_ROOT") or "/data"
    out_root = env.get("RUNNERD_OUT_ROOT") or "/runnerd/out"
    # its lines are the step's published log: "runnerd", never the address the node reaches it at
    retrying("fetching the %s seed from runnerd" % step, lambda: site.fetch(data_root, out_root), budget)
    code = run_step(env.get("RUNNERD_STEP_DIR") or "/runnerd", step)
    if _state["stopped"]:
        return code  # stopped by runnerd: nobody waits for its outputs
    retrying("sending the %s outputs to runnerd" % step, lambda: site.send(out_root), budget)
    return code


if __name__ == "__main__":
    sys.exit(main())
