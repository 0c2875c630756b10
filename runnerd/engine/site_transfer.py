"""The engine's side of the job-site transfer (#17): who may fetch a step's seed and push its out
folder, when, and within which caps. The routes (runnerd/api/site.py) only move bytes.

A request names a job, a step (provision or filter) and a token (engine/site_tokens.py). A wrong
token, an unknown job and a wrong step are one answer (403), so nothing can be learnt about which
jobs exist. With a good token: a job that has ended is 410; a job that is not at that step is 409
(provision runs while the job is configuring, 20; the filter while it is filtering, 50), so a step
that is late or replayed cannot rewrite what has been published.
"""

from __future__ import annotations

import asyncio
import errno
import logging
from collections.abc import Generator
from dataclasses import dataclass
from pathlib import Path

from runnerd.config import Settings
from runnerd.domain import JobStatus, PlannedJob, StepKind
from runnerd.engine import site_archive
from runnerd.engine.site_archive import Entry, SeedNotReady
from runnerd.engine.site_tokens import TOKEN_STEPS, SiteTokens
from runnerd.engine.site_upload import Caps, Upload, UploadRefused, UploadTooLarge
from runnerd.errors import BadRequest, Conflict, Forbidden, Gone, PayloadTooLarge, Unavailable
from runnerd.layout import JobPaths
from runnerd.steps import sitetar
from runnerd.store import JobStore

log = logging.getLogger("runnerd.site")

MiB = 1024 * 1024
STEP_STATUS = {StepKind.PROVISION: JobStatus.CONFIGURING, StepKind.FILTER: JobStatus.FILTERING}
PROVISION_CAPS = Caps(16 * MiB, 64)  # its out folder holds its report only (steps/provision.py)
FILTER_SLACK = Caps(MiB, 16)  # beyond the outputs' own caps: headers, the report, guard.json
DENIED = "this token is not valid for this job and step"


@dataclass(frozen=True)
class Seed:
    entries: list[Entry]
    length: int  # the exact size of the stream

    def chunks(self) -> Generator[bytes, None, None]:
        """The tar stream (blocking reads: iterate it in a thread)."""
        return site_archive.stream(self.entries)


@dataclass(frozen=True)
class Incoming:
    """One upload under way: the spool (site_upload.Upload) and whose it is."""

    job_id: str
    step: StepKind
    upload: Upload


def caps(job: PlannedJob, step: StepKind, settings: Settings) -> Caps:
    """What one step may send back: provision its report; the filter what it may publish."""
    if step == StepKind.PROVISION:
        return PROVISION_CAPS
    env = settings.environment(job.environment)
    if env is None:
        raise Conflict(f"the environment of job {job.job_id} no longer exists", "step_not_running")
    entries = env.maxOutputFiles + FILTER_SLACK.entries
    # The cap is on the stream: each entry may also cost a header, a long-name header with its name
    # and the padding of both (sitetar.MAX_NAME), or outputs within diskGB in many files would not fit.
    framing = entries * (3 * sitetar.BLOCK + sitetar.MAX_NAME)
    return Caps(env.disk_bytes + FILTER_SLACK.bytes + framing, entries)


class SiteTransfer:
    def __init__(self, settings: Settings, store: JobStore, data_dir: Path):
        self.settings = settings
        self.store = store
        self.data_dir = Path(data_dir)
        self.tokens = SiteTokens(self.data_dir)
        self._installs: dict[tuple[str, StepKind], tuple[asyncio.Lock, int]] = {}

    def token(self, job_id: str, step: StepKind) -> str:
        """The token a step of the job is started with (RUNNERD_SITE_TOKEN)."""
        return self.tokens.token(job_id, step)

    async def _authorised(self, job_id: str, step: str, token: str) -> tuple[PlannedJob, StepKind]:
        kind = next((k for k in TOKEN_STEPS if k.value == step), None)
        if kind is None or not token or not self.tokens.valid(job_id, kind, token):
            raise Forbidden(DENIED)
        job = await self.store.get(job_id)
        if job is None:  # a valid token of a deleted job
            raise Forbidden(DENIED)
        if job.status.terminal:
            raise Gone(f"job {job_id} has ended ({int(job.status)}, {job.status.text}); its transfers are closed")
        if job.status != STEP_STATUS[kind]:
            raise Conflict(f"job {job_id} is not at its {kind.value} step (it is at {int(job.status)}, "
                           f"{job.status.text})")
        planned = await self.store.planned(job_id)
        if planned is None:
            raise Gone(f"job {job_id} has ended; its transfers are closed")
        return planned, kind

    async def seed(self, job_id: str, step: str, token: str) -> Seed:
        """What the step is sent (engine/site_archive.py), listed before its first byte."""
        job, kind = await self._authorised(job_id, step, token)
        paths = JobPaths.for_job(self.data_dir, job_id)
        try:
            entries = await asyncio.to_thread(site_archive.seed_entries, job, paths, kind)
        except SeedNotReady as exc:
            log.info("job %s: %s seed not ready: %s", job_id, kind.value, exc)
            raise Unavailable(f"the files of job {job_id} for its {kind.value} step are not ready yet; retry",
                              "site_not_ready") from None
        seed = Seed(entries, site_archive.length(entries))
        log.info("job %s: sending the %s step its seed (%d entries, %d bytes)", job_id, kind.value, len(entries),
                 seed.length)
        return seed

    async def receiver(self, job_id: str, step: str, token: str, declared: int | None) -> Incoming:
        """An upload of the step's out folder, ready for the body (`declared`: its Content-Length)."""
        job, kind = await self._authorised(job_id, step, token)
        limit = caps(job, kind, self.settings)
        if declared is not None and declared > limit.bytes:
            raise PayloadTooLarge(f"the upload is larger than the {kind.value} step may send ({limit.bytes} bytes)")
        paths = JobPaths.for_job(self.data_dir, job_id)
        target = paths.provision_out if kind == StepKind.PROVISION else paths.results
        return Incoming(job_id, kind, await asyncio.to_thread(Upload, target, limit))

    async def write(self, incoming: Incoming, chunk: bytes) -> None:
        try:
            await asyncio.to_thread(incoming.upload.write, chunk)
        except UploadTooLarge:
            raise PayloadTooLarge(f"the upload is larger than the {incoming.step.value} step may send "
                                  f"({incoming.upload.caps.bytes} bytes)") from None

    async def install(self, incoming: Incoming) -> dict[str, int]:
        """Extract and swap in (one install of a job's step at a time); the answer's body."""
        upload = incoming.upload
        key = (incoming.job_id, incoming.step)
        lock, users = self._installs.get(key) or (asyncio.Lock(), 0)
        self._installs[key] = (lock, users + 1)
        try:
            async with lock:
                entries, size = await asyncio.to_thread(upload.install)
        except UploadRefused as exc:
            log.warning("job %s: refused the %s step's upload: %s", incoming.job_id, incoming.step.value, exc)
            raise BadRequest(f"the upload was refused: {exc}", "invalid_archive") from None
        except OSError as exc:  # a name the filesystem refuses is the sender's; a full disk is ours
            log.error("job %s: could not store the %s step's upload: %s", incoming.job_id, incoming.step.value, exc)
            if exc.errno in (errno.ENAMETOOLONG, errno.EINVAL, errno.EILSEQ):
                raise BadRequest("the upload was refused: a name this filesystem cannot hold",
                                 "invalid_archive") from None
            raise Unavailable("runnerd could not store the upload now; try again", "site_not_ready") from None
        finally:
            lock, users = self._installs[key]
            if users == 1:
                del self._installs[key]
            else:
                self._installs[key] = (lock, users - 1)
        log.info("job %s: the %s step sent back %d entries, %d bytes", incoming.job_id, incoming.step.value,
                 entries, size)
        return {"entries": entries, "bytes": size}

    async def discard(self, incoming: Incoming) -> None:
        await asyncio.to_thread(incoming.upload.discard)
