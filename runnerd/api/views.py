"""Job → the status object of SPEC §2 (one shape for every endpoint)."""

from __future__ import annotations

import dataclasses
from typing import Any, Callable
from urllib.parse import urlencode

from runnerd.domain import Job, JobStatus, ResultType
from runnerd.identity import NodeIdentity


def _date(value: float | None) -> str | None:
    return None if value is None else f"{value:.6f}"


class StatusView:
    def __init__(self, identity: NodeIdentity, ttl: int, public_url: str = "",
                 live_usage: Callable[[str], dict[str, Any] | None] = lambda job_id: None):
        self.identity = identity
        self.live_usage = live_usage  # a running job's latest usage reading (engine/usage.py)
        self.ttl = ttl
        self.public_url = public_url.rstrip("/")

    def result_url(self, base: str, job_id: str, index: int) -> str:
        expires, token = self.identity.mint(job_id, index, self.ttl)
        query = urlencode({"jobId": job_id, "index": index, "expires": expires, "token": token})
        return f"{self.public_url or base}/api/services/computeResult?{query}"

    def render(self, job: Job, base: str, status: JobStatus | None = None, urls: bool = True) -> dict[str, Any]:
        """`urls=False` for unsigned status reads: the capability URLs would let anyone who saw the
        request (an owner's address, or a jobId that travelled in a URL) download the results."""
        code = status if status is not None else job.status
        if not job.terminal:  # SPEC: [] until publishing ends, then fixed
            job = dataclasses.replace(job, results=[])
        results = [r.public(i) for i, r in enumerate(job.results)]
        log_index = next((i for i, r in enumerate(job.results) if r.type == ResultType.ALGORITHM_LOG), None)
        if not urls:
            log_index = None
        return {
            "owner": job.owner,
            "documentId": job.document_id,
            "jobId": job.job_id,
            "dateCreated": _date(job.date_created),
            "dateFinished": _date(job.date_finished),
            "status": int(code),
            "statusText": code.text,
            "algorithmLogUrl": self.result_url(base, job.job_id, log_index) if log_index is not None else None,
            "resultsUrls": [self.result_url(base, job.job_id, i) for i, r in enumerate(job.results)
                            if r.type == ResultType.OUTPUT and urls],
            "resultsDid": "",
            "agreementId": job.agreement_id,
            "inputDID": job.input_dids,
            "algoDID": job.algo_did,
            "environment": job.environment,
            "stopreq": job.stopreq,
            "removed": job.removed,
            "results": results,
            "terminationDetails": job.termination,
            "error": job.error,
            # runnerd's own additions: the job this one re-runs (a restart), and when each status
            # was reached (`runnerd submit --wait`)
            "restartedFrom": job.restarted_from,
            "statusHistory": [{"status": s, "statusText": JobStatus(s).text, "date": _date(t)}
                              for s, t in job.history],
            # live while the algorithm runs, the final figures once it ended (#15)
            "usage": (None if job.terminal else self.live_usage(job.job_id)) or job.usage,
        }
