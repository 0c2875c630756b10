"""The texts a job's `error` carries when the cause is internal.

A consumer must never read an operator's paths, mount or mkfs output, Docker's error bodies or a
Python exception: those go to the daemon's log, at error level, under a short reference that the
consumer's text carries too, so an operator can find the details (`grep <reference>`).
"""

from __future__ import annotations

import logging
import secrets

log = logging.getLogger("runnerd.reasons")


def internal(what: str, exc: BaseException | None = None, job_id: str | None = None,
             details: str | None = None, traceback: bool = False) -> str:
    """`what` (a fixed sentence runnerd wrote) plus a fresh reference; the exception and any
    `details` are logged under that reference, never returned."""
    reference = secrets.token_hex(6)
    cause = details or (f"{type(exc).__name__}: {exc}" if exc is not None else "")
    log.error("job %s: %s (reference %s): %s", job_id or "-", what, reference, cause,
              exc_info=exc if traceback and exc is not None else None)
    return f"{what} (reference {reference}; the daemon log has the details)"
