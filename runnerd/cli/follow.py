"""`runnerd submit --wait`: follow a job through its stages, stream the algorithm's log live under
them (as `docker run` and `kubectl logs -f` do), keep a heartbeat while nothing happens, and on a
failure say why and what to do next.

Everything goes to stderr: stdout of `submit` is the job id alone (`JOB=$(runnerd submit …)`).
Log lines are prefixed with `  | ` so that they never read as runnerd's own lines, and each is
made printable first (the log is the algorithm's output, and the algorithm may not be yours)."""

from __future__ import annotations

import collections
import queue
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from runnerd.cli import safe
from runnerd.cli.common import COMPLETED, QUEUED, RUNNING, TERMINAL, S, date
from runnerd.cli.safe import text
from runnerd.cli.usage_view import usage_text

if TYPE_CHECKING:
    from runnerd.client import Client

LOG_PREFIX = "  | "
TAIL_LINES = 20
BEAT_PLAIN, BEAT_TTY = 10.0, 1.0  # off a terminal a line every 10 s of silence; on one a status line
MAX_LINE = 64 * 1024  # a log "line" without a newline is cut here, so memory stays bounded


class Reporter:
    """Lines on stderr, and a heartbeat: on a terminal one status line rewritten in place (wiped
    before the next real line), off a terminal a plain line now and then, never a bar."""

    def __init__(self, silent: bool) -> None:
        self.silent = silent
        self.tty = sys.stderr.isatty()
        self.interval = BEAT_TTY if self.tty else BEAT_PLAIN
        self.pending = False
        self.last = time.monotonic()

    def say(self, line: str) -> None:
        if self.silent:
            return
        if self.pending:
            sys.stderr.write("\r\x1b[K")
            self.pending = False
        print(line, file=sys.stderr, flush=True)
        self.last = time.monotonic()

    def due(self) -> float:
        """Seconds until the next heartbeat is due."""
        return max(0.05, self.interval - (time.monotonic() - self.last))

    def beat(self, created: float, job: dict[str, Any]) -> None:
        if self.silent or time.monotonic() - self.last < self.interval:
            return
        still = "still queued" if job.get("status") == QUEUED else "still running"
        used = usage_text(job.get("usage"))
        beat = (f"[{max(0.0, time.time() - created):6.1f}s] {text(job.get('status')):>3} "
                f"{text(job.get('statusText'))} ({still}){' · ' + used if used else ''}")
        if self.tty:
            sys.stderr.write("\r\x1b[K" + beat)
            sys.stderr.flush()
            self.pending = True
        else:
            print(beat, file=sys.stderr, flush=True)
        self.last = time.monotonic()


def _history(job: dict[str, Any]) -> list[dict[str, Any]]:
    return job.get("statusHistory") or [{"status": job.get("status"), "statusText": job.get("statusText"),
                                         "date": job.get("dateCreated")}]


def wait(client: "Client", job: dict[str, Any], silent: bool = False, logs: bool = True) -> tuple[dict[str, Any], bool]:
    """Follow a job until it is terminal, printing each stage with the time it was reached (the
    daemon records them, so a stage shorter than the poll interval is still shown, with its real
    time). With `logs`, the algorithm's log is streamed once the job reaches 40, before any later
    stage is printed. Returns the final job and whether its log was streamed."""
    job_id = safe.job_id(job.get("jobId"))
    created = date(job.get("dateCreated"))
    out = Reporter(silent)
    shown, delay, streamed = 0, 0.1, False
    while True:
        history = _history(job)
        while shown < len(history):
            step = history[shown]
            shown += 1
            out.say(f"[{date(step.get('date')) - created:6.2f}s] {text(step.get('status')):>3} "
                    f"{text(step.get('statusText'))}")
            if logs and not silent and step.get("status") == RUNNING and not streamed:
                streamed = _stream(client, job_id, out, created, job)
                job = client.job(job_id, signed=False)
                history = _history(job)
        if job.get("status") in TERMINAL:
            client.refresh_nonce()  # the next requests are signed; others may have signed meanwhile
            used = usage_text(job.get("usage"))
            if used:
                out.say(f"usage: {used}")
            return job, streamed
        time.sleep(min(delay, out.due()))
        delay = min(delay * 1.5, 1.0)
        out.beat(created, job)
        job = client.job(job_id, signed=False)  # no signature to leak while polling; results listed


def _stream(client: "Client", job_id: str, out: Reporter, created: float, job: dict[str, Any]) -> bool:
    """Print the live log until the daemon ends it (when the job is terminal). A reader thread
    feeds a queue so that the heartbeat goes on while the algorithm is silent."""
    lines: queue.Queue[tuple[str, Any]] = queue.Queue()

    def read() -> None:
        try:
            with client.log_stream(job_id, follow=True) as response:
                if response.status_code >= 400:
                    response.read()
                    body = response.json() if response.headers.get("content-type", "").startswith(
                        "application/json") else {}
                    lines.put(("error", f"HTTP {response.status_code}: {body.get('error', '')}"))
                    return
                buffer = b""
                for chunk in response.iter_raw():
                    buffer += chunk
                    *complete, buffer = buffer.split(b"\n")
                    for piece in complete:
                        lines.put(("line", piece))
                    while len(buffer) > MAX_LINE:
                        lines.put(("line", buffer[:MAX_LINE]))
                        buffer = buffer[MAX_LINE:]
                if buffer:
                    lines.put(("line", buffer))
        except Exception as exc:  # noqa: BLE001 - reported below as one line, never a traceback
            lines.put(("error", str(exc) or type(exc).__name__))
        finally:
            lines.put(("end", None))

    threading.Thread(target=read, name="runnerd-log", daemon=True).start()
    while True:
        try:
            kind, value = lines.get(timeout=out.due())
        except queue.Empty:
            if time.monotonic() - out.last >= out.interval:  # a beat is due: with the live usage
                try:
                    job = client.job(job_id, signed=False)
                except Exception:  # noqa: BLE001 - the heartbeat goes on with what it had
                    pass
            out.beat(created, job)
            continue
        if kind == "line":
            out.say(LOG_PREFIX + text(value.decode("utf-8", "replace").rstrip("\r")))
        elif kind == "error":
            out.say(f"runnerd: cannot follow the algorithm's log ({text(value)}); `runnerd logs {job_id}` "
                    "prints it")
            return False
        else:
            return True


_NEXT: dict[object, str] = {  # what to do after each failure (JobStatus is an int: the API's numbers look it up)
    S.DATA_PROVISIONING_FAILED:
        "a dataset could not be fetched, so your code never ran: the configuration log (saved in {folder}) "
        "says why; tell the dataset's provider if the reason is on their side",
    S.ALGORITHM_PROVISIONING_FAILED:
        "your image could not be used, so your code never ran: check --image and --checksum (each "
        "environment runs only the images its operator allows, `runnerd envs`)",
    S.ALGORITHM_FAILED: "your code exited with code {exit_code}: fix it and submit again; the whole log is in {folder} "
        "(`runnerd logs {job}`)",
    S.TIMED_OUT: "it ran longer than the environment's time limit (`runnerd envs` shows each one's max): make it "
        "faster, or submit to an environment with a longer limit (--env)",
    S.OUT_OF_MEMORY: "it used more memory than the environment's ramGB (`runnerd envs`): use less, or submit to an "
        "environment with more (--env)",
    S.OUTPUT_LIMITS_EXCEEDED:
        "it filled its disk, or wrote more output files or bytes than the environment allows: write fewer "
        "or smaller files to /data/outputs, or submit to an environment with more diskGB (--env)",
    S.FILTERING_FAILED:
        "the node's filter step failed, not your code: submit again, and tell the node's operator if it "
        "happens again",
    S.INTERRUPTED: "the job was interrupted on the node's side, not by your code: submit again",
    S.STOPPED: "it was stopped: submit again if you want its results",
}


def explain_failure(client: "Client", job: dict[str, Any], folder: Path, streamed: bool,
                    saved: list[Path]) -> None:
    """After a job that did not complete: the end of its log (unless it was just streamed), the
    reason, and the next step."""
    job_id = safe.job_id(job.get("jobId"))
    ran = any(step.get("status") == RUNNING for step in _history(job))
    if ran and not streamed:
        tail = _tail(client, job_id, saved)
        if tail:
            print(f"runnerd: the last {len(tail)} lines of the algorithm's log:", file=sys.stderr)
            for piece in tail:
                print(LOG_PREFIX + text(piece), file=sys.stderr)
    status = job.get("status")
    given = job.get("terminationDetails")
    details: dict[str, Any] = given if isinstance(given, dict) else {}
    reason = text(job.get("error")) if job.get("error") else "no reason given"
    print(f"runnerd: job {job_id} ended at {text(status)} {text(job.get('statusText'))}: {reason}", file=sys.stderr)
    hint = _NEXT.get(status, "see `runnerd status {job}` and `runnerd logs {job}`") if status != COMPLETED else ""
    if hint:
        print("runnerd: next: " + hint.format(folder=text(folder), job=job_id,
                                              exit_code=text(details.get("exitCode"))), file=sys.stderr)


def _tail(client: "Client", job_id: str, saved: list[Path]) -> list[str]:
    """The last lines of the algorithm's log: from the copy --wait saved, else from the daemon."""
    data = b""
    local = [p for p in saved if p.name.startswith("algorithmLog-")]
    try:
        if local:
            data = local[0].read_bytes()
        else:
            with client.log_stream(job_id, follow=False) as response:
                data = response.read() if response.status_code < 400 else b""
    except Exception:  # noqa: BLE001 - the tail is a courtesy; the reason and next step still follow
        return []
    lines = data.decode("utf-8", "replace").splitlines()
    return list(collections.deque(lines, maxlen=TAIL_LINES))
