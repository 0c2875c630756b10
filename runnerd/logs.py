"""Logging: one line per event, `key=value` after the message, job id on every job line.

The job a line is about comes from `JOB`, a context variable the runner sets for the whole run
of a job: the tasks it creates and its `asyncio.to_thread` calls inherit it (the Docker SDK's
thread pool does not, and logs nothing of its own below warning), so a line logged while a job
runs says `job=` whatever its text. A line logged elsewhere about a job (admission, the sweeper,
the API) names it in its text (`job <id>: ...`), which is read as before. Under systemd
(JOURNAL_STREAM set) the timestamp is left to journald."""

from __future__ import annotations

import contextlib
import contextvars
import logging
import os
import re
import sys
from typing import Iterator

JOB: contextvars.ContextVar[str | None] = contextvars.ContextVar("runnerd_job", default=None)
_JOB = re.compile(r"\bjob ([0-9a-f]{32})\b")


class LineFormatter(logging.Formatter):
    def __init__(self, timestamps: bool):
        super().__init__()
        self.timestamps = timestamps

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage().replace("\n", " | ")
        fields = [f"level={record.levelname.lower()}", f"logger={record.name}"]
        # Formatted as it is logged (a plain StreamHandler), so JOB is still the caller's context.
        job = getattr(record, "job", None) or JOB.get() or (m.group(1) if (m := _JOB.search(message)) else None)
        if job:
            fields.append(f"job={job}")
        line = f"{message} " + " ".join(fields)
        if record.exc_info:
            line += " | " + self.formatException(record.exc_info).replace("\n", " | ")
        if self.timestamps:
            line = f"{self.formatTime(record, '%Y-%m-%dT%H:%M:%S')} {line}"
        return line


def configure(level: str = "info") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(LineFormatter(timestamps="JOURNAL_STREAM" not in os.environ))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(getattr(logging, level.upper(), logging.INFO))
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    logging.getLogger("urllib3").setLevel(logging.WARNING)
    logging.getLogger("docker").setLevel(logging.WARNING)


@contextlib.contextmanager
def about_job(job_id: str) -> Iterator[None]:
    """Every line logged inside (and in the tasks and to_thread calls started inside) says `job=job_id`."""
    token = JOB.set(job_id)
    try:
        yield
    finally:
        JOB.reset(token)
