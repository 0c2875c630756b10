"""Job → the ocean-node `ComputeJob` object, with runnerd's outcomes mapped onto ocean-node's codes.

The two dialects give some numbers opposite meanings: ocean-node's 71 is "Job settling" (a normal
end) where runnerd's is "Algorithm failed", and ocean-node reports a non-zero exit, a timeout, an
out-of-memory kill and a stop as 70 with `terminationDetails`. So this view never emits 71, says
how a job ended in `terminationDetails`, and keeps runnerd's own code and text beside ocean-node's
(`runnerdStatus`, `runnerdStatusText`): nothing of runnerd's outcome is lost in the mapping.
"""

from __future__ import annotations

from typing import Any

from runnerd.api.node.tarview import tar_size
from runnerd.domain import Job, JobStatus, ResultFile, ResultType

# ocean-node's C2DStatusText, exactly (the trailing space of 40 included)
NODE_TEXT = {
    0: "Job started", 1: "Job queued", 2: "Job expired in queue", 10: "Pulling algorithm image",
    11: "Pulling algorithm image failed", 20: "Configuring volumes", 30: "Provisioning data",
    31: "Data provisioning failed", 32: "Algorithm provisioning failed", 40: "Running algorithm ",
    41: "Failed to run algorithm", 42: "Error: disk quota exceeded", 50: "Filtering results",
    60: "Publishing results", 62: "Failed to upload results to storage", 70: "Job finished",
}
S = JobStatus
NODE_CODE = {
    S.QUEUED: 1, S.STARTED: 10, S.CONFIGURING: 20, S.PROVISIONED: 30,
    S.DATA_PROVISIONING_FAILED: 31, S.ALGORITHM_PROVISIONING_FAILED: 32, S.RUNNING: 40, S.FILTERING: 50,
    S.PUBLISHING: 60, S.COMPLETED: 70,
    # ocean-node ends a run at 70 whatever its exit code; terminationDetails says how it ended
    S.ALGORITHM_FAILED: 70, S.TIMED_OUT: 70, S.OUT_OF_MEMORY: 70, S.STOPPED: 70,
    S.OUTPUT_LIMITS_EXCEEDED: 42,  # outputs over the environment's limits: ocean-node's disk quota
    S.FILTERING_FAILED: 62,  # the results could not be taken out of the job
    S.INTERRUPTED: 41,  # the run was lost (container gone, environment removed): it did not run to an end
}
# terminationDetails.reason of a queued job whose queueMaxWaitTime ran out (engine/scheduler.py)
QUEUE_EXPIRED_REASON = "queue_expired"


def node_code(job: Job) -> int:
    if job.termination and job.termination.get("reason") == QUEUE_EXPIRED_REASON:
        return 2
    return NODE_CODE.get(job.status, 70 if job.terminal else 0)


def _date(value: float | None) -> str | None:
    return None if value is None else f"{value:.3f}"


# The result entries this dialect lists, in ocean-node's order: the logs, then the outputs as one
# `outputs.tar` (entries under `outputs/`), then runnerd's filtering log and the job's attestation
# (#15). Indices are this list's.
OUTPUTS_TAR = "outputs.tar"
# outputs.tar's size by (jobId, number of outputs). Laying out the tar costs about 50 ms for
# maxOutputFiles (1000) long names, and every status answer lists the size: unsigned reads by
# jobId and token listings cost a client nothing, so without this a few per second would hold
# the event loop. A job's outputs do not change once it has ended (only then are they listed).
_TAR_SIZES: dict[tuple[str, int], int] = {}
_TAR_SIZES_KEPT = 4096


def _tar_size(job: Job, outputs: list[ResultFile]) -> int:
    key = (job.job_id, len(outputs))
    size = _TAR_SIZES.get(key)
    if size is None:
        if len(_TAR_SIZES) >= _TAR_SIZES_KEPT:
            del _TAR_SIZES[next(iter(_TAR_SIZES))]  # the oldest entry
        size = _TAR_SIZES[key] = tar_size(outputs)
    return size


def node_results(job: Job) -> list[dict[str, Any]]:
    """[{filename, filesize, type, index, source}], `source` being the runnerd result index of a
    log (None for the tar). Empty until the job has ended, as in the other dialect."""
    if not job.terminal:
        return []
    by_type = {r.type: i for i, r in enumerate(job.results)}
    entries: list[dict[str, Any]] = []
    for kind in (ResultType.CONFIGURATION_LOG, ResultType.ALGORITHM_LOG):
        if kind in by_type:
            r = job.results[by_type[kind]]
            entries.append({"filename": r.filename, "filesize": r.filesize, "type": kind.value,
                            "source": by_type[kind]})
    outputs = [r for r in job.results if r.type == ResultType.OUTPUT]
    if outputs or job.status in (S.COMPLETED, S.ALGORITHM_FAILED, S.TIMED_OUT, S.OUT_OF_MEMORY, S.STOPPED):
        entries.append({"filename": OUTPUTS_TAR, "filesize": _tar_size(job, outputs), "type": "output", "source": None})
    for kind in (ResultType.FILTERING_LOG, ResultType.ATTESTATION):  # runnerd's own, last (#15)
        if kind in by_type:
            r = job.results[by_type[kind]]
            entries.append({"filename": r.filename, "filesize": r.filesize, "type": kind.value,
                            "source": by_type[kind]})
    for i, entry in enumerate(entries):
        entry["index"] = i
    return entries


def render(job: Job) -> dict[str, Any]:
    """ocean-node's public ComputeJob fields (omitDBComputeFieldsFromComputeJob) plus runnerd's code."""
    code = node_code(job)
    terms = job.terms
    details = dict(job.termination or {})
    termination = None
    if job.terminal:
        termination = {"exitCode": details.get("exitCode"), "OOMKilled": bool(details.get("oomKilled")),
                       "reason": details.get("reason") or ("stopped" if job.status == S.STOPPED else None)}
    started, finished = job.date_started, job.date_finished
    return {
        "owner": job.owner,
        "did": job.document_id,
        "jobId": job.job_id,
        "dateCreated": _date(job.date_created),
        "dateFinished": _date(finished),
        "status": code,
        "statusText": NODE_TEXT.get(code, job.status.text),
        "results": [{k: v for k, v in r.items() if k != "source"} for r in node_results(job)],
        "inputDID": job.input_dids,
        "algoDID": job.algo_did,
        "agreementId": job.agreement_id,
        "environment": job.environment,
        "resources": [{"id": rid, "amount": amount} for rid, amount in terms.resources],
        "isFree": True,
        "payment": None,
        "metadata": terms.metadata,
        "additionalViewers": list(terms.viewers),
        "terminationDetails": termination,
        "algoDuration": round(finished - started, 3) if started is not None and finished is not None else 0,
        "maxJobDuration": terms.max_duration,
        "queueMaxWaitTime": terms.queue_max_wait or 0,
        "stopRequested": bool(job.stopreq),
        "expireTimestamp": None,
        # runnerd's own outcome, unmapped (its codes are those of the Provider-v2 dialect)
        "runnerdStatus": int(job.status),
        "runnerdStatusText": job.status.text,
        "error": job.error,
    }
