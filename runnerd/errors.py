"""runnerd's error tree. Every error a client sees is one of these, rendered as
`{"error": "<human message>", "code": "<machine code>", "field": "<param>"?}` (SPEC §2)."""

from __future__ import annotations


class RunnerdError(Exception):
    """Base: an error with an HTTP status, a machine code and optionally the offending field."""

    http_status = 500
    default_code = "internal_error"

    def __init__(self, message: str, code: str | None = None, field: str | None = None,
                 headers: dict[str, str] | None = None):
        super().__init__(message)
        self.message = message
        self.code = code or self.default_code
        self.field = field
        self.headers = headers or {}

    def body(self) -> dict[str, str]:
        out = {"error": self.message, "code": self.code}
        if self.field:
            out["field"] = self.field
        return out


class BadRequest(RunnerdError):
    http_status = 400
    default_code = "invalid"


class PolicyRejected(BadRequest):
    """A start refused by the dataset's compute policy; `code` is Ocean's (no_raw_algo_allowed, …)."""


class Unauthorized(RunnerdError):
    http_status = 401
    default_code = "invalid_signature"


class Forbidden(RunnerdError):
    """A job-site token (#17) that is not valid for that job and step: one answer for a wrong
    token, an unknown job and a wrong step, so it tells nothing about which jobs exist."""

    http_status = 403
    default_code = "forbidden"


class NotFound(RunnerdError):
    """Unknown job, or a job that belongs to someone else: the two are indistinguishable on purpose."""

    http_status = 404
    default_code = "not_found"


class Conflict(RunnerdError):
    """A job-site transfer for a step the job is not at (#17)."""

    http_status = 409
    default_code = "step_not_running"


class Gone(RunnerdError):
    """A job-site transfer for a job that has ended (its plan was dropped, #17)."""

    http_status = 410
    default_code = "job_ended"


class PayloadTooLarge(RunnerdError):
    """A body over a cap that is counted as it arrives (a job-site upload, #17)."""

    http_status = 413
    default_code = "payload_too_large"


class RangeNotSatisfiable(RunnerdError):
    http_status = 416
    default_code = "range_not_satisfiable"


class TooManyRequests(RunnerdError):
    """A per-owner limit (jobs in flight, kept results, start rate): the message says which."""

    http_status = 429
    default_code = "owner_limit"


class Unavailable(RunnerdError):
    """Docker down, queue full, still starting: try again later."""

    http_status = 503
    default_code = "unavailable"


class RuntimeUnavailable(Exception):
    """The container runtime could not be reached or failed transiently; the call may be retried."""


class ContainerGone(Exception):
    """The container was removed behind runnerd's back (or never existed), or, on a cluster, the
    node it ran on is lost. `why`: the consumer-safe reason, where the runtime knows one."""

    def __init__(self, container_id: str, why: str | None = None):
        super().__init__(container_id)
        self.why = why


class ContainerRefused(Exception):
    """Docker refused a container spec (a 4xx on create): a configuration problem, not an outage."""


class ImageMissing(Exception):
    """An image is not present locally and may not (or could not) be pulled. The message is
    runnerd's own words; `detail` carries Docker's or a registry's, which only the daemon log
    may show (they can echo internal hosts and whatever a registry chose to answer)."""

    def __init__(self, message: str, detail: str = ""):
        super().__init__(message)
        self.detail = detail


class WorkspaceError(Exception):
    """A job's host-side directory or quota filesystem could not be prepared."""


class SiteLost(WorkspaceError):
    """A cluster job site no longer holds the job's /data (its node restarted): the job cannot go
    on. The message is the consumer's (no node name, no path)."""


class AssetUnavailable(WorkspaceError):
    """A local asset file is no longer as it was registered when its job starts. The message names
    the DID and file index only (the consumer sees it); the path is in the daemon's log."""
