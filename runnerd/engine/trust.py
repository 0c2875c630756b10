"""What #15 adds to a job's run, in one place, so the runner makes one small call at each point:
the input digests (downloads from the provision report, local files through the hash cache),
the egress guard's file for the filter, live usage of the algorithm, the image it really ran and,
when the job is published, its signed attestation.

Consumers see labels only (`dataset <did> file <i>`): no host path reaches a statement, a guard
verdict or an error.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any

from runnerd import __version__, egress, layout, provenance
from runnerd.config import Environment, Settings
from runnerd.containers.runtime import ContainerRuntime
from runnerd.containers.spec import GUARD_FILE, image_reference
from runnerd.domain import JobStatus, LocalFile, PlannedJob, RawCode, ResultFile, ResultType, StepKind, StepState
from runnerd.engine.hashcache import HashCache, hash_file
from runnerd.engine.publisher import read_report
from runnerd.engine.usage import Hook, JobUsage, UsageCollector
from runnerd.errors import ImageMissing, RuntimeUnavailable
from runnerd.identity import NodeIdentity
from runnerd.layout import JobPaths, did_dir
from runnerd.provenance import Digest, InputDigest, ResultDigest
from runnerd.store import JobStore

log = logging.getLogger("runnerd.provenance")
ATTESTATION = "attestation.json"  # in the job's logs/ folder: runnerd's own file, like the logs
IMAGE = "image.json"  # in the job's folder: the image its algorithm's container runs (never published)


def _digest(entry: Any, size_key: str) -> Digest | None:
    try:
        return Digest(str(entry["sha256"]), int(entry[size_key]))
    except (KeyError, TypeError, ValueError):
        return None


def _ms(history: list[tuple[int, float]], start: int, ends: tuple[int, ...]) -> int | None:
    at = {status: when for status, when in history}
    end = next((at[e] for e in ends if e in at), None)
    return None if start not in at or end is None else int(round((end - at[start]) * 1000))


class Trust:
    def __init__(self, settings: Settings, store: JobStore, runtime: ContainerRuntime,
                 identity: NodeIdentity | None, data_dir: Path | None, usage_hook: Hook | None = None):
        self.settings = settings
        self.store = store
        self.runtime = runtime
        self.identity = identity
        self.cache = HashCache(data_dir)
        self.usage = UsageCollector(runtime, settings.usageInterval, usage_hook)
        self._hashing: dict[str, asyncio.Future[Any]] = {}
        self._images: dict[str, asyncio.Future[dict[str, Any] | None]] = {}

    @classmethod
    def off(cls, settings: Settings, store: JobStore, runtime: ContainerRuntime) -> Trust:
        """No provenance and no usage (a runner built without a node identity: tests of the engine)."""
        trust = cls(settings, store, runtime, None, None)
        trust.usage.interval = 0
        return trust

    @property
    def provenance(self) -> bool:
        return self.settings.provenance and self.identity is not None

    def _needs_digests(self, job: PlannedJob) -> bool:
        return self.provenance or any(i.guard for i in job.plan.inputs)

    # -- input digests ---------------------------------------------------------------------------

    def prefetch(self, job: PlannedJob, paths: JobPaths) -> None:
        """Start hashing the job's local files now (cached: only a new version of a file is read),
        so a big dataset's first hashing runs beside the job, not after its algorithm."""
        if not self._needs_digests(job):
            return
        files = [paths.pinned_input(i, n) for i, item in enumerate(job.plan.inputs)
                 for n, f in enumerate(item.files) if isinstance(f, LocalFile)]
        if isinstance(job.plan.algorithm.code, LocalFile):
            files.append(paths.pinned_algorithm)
        if files:
            task = asyncio.ensure_future(asyncio.gather(*(self.cache.digest(f) for f in files)))
            self._hashing[job.job_id] = task
            task.add_done_callback(lambda _t: self._hashing.pop(job.job_id, None))

    async def input_digests(self, job: PlannedJob, paths: JobPaths) -> list[InputDigest]:
        report = read_report(paths.provision_report) or {}
        downloaded = {f.get("dest"): f for f in report.get("files") or () if isinstance(f, dict)}
        out = []
        for i, item in enumerate(job.plan.inputs):
            for n, f in enumerate(item.files):
                if isinstance(f, LocalFile):
                    out.append(InputDigest(item.did, n, "local", await self.cache.digest(paths.pinned_input(i, n))))
                else:
                    entry = downloaded.get(f"{layout.INPUTS}/{did_dir(item.did)}/{n}")
                    out.append(InputDigest(item.did, n, "download", _digest(entry, "bytes")))
        return out

    async def _code_digest(self, job: PlannedJob, paths: JobPaths) -> Digest | None:
        code = job.plan.algorithm.code
        if isinstance(code, RawCode):
            data = code.text.encode("utf-8")
            return Digest(hashlib.sha256(data).hexdigest(), len(data))
        if isinstance(code, LocalFile):
            return await self.cache.digest(paths.pinned_algorithm)
        report = read_report(paths.provision_report) or {}
        files = [f for f in report.get("files") or () if isinstance(f, dict)]
        entry = next((f for f in files if f.get("dest") == layout.ALGORITHM), None)
        return _digest(entry, "bytes")

    # -- the egress guard ------------------------------------------------------------------------

    async def write_guard(self, job: PlannedJob, paths: JobPaths) -> None:
        """Before the filter starts: the digests and budgets its egress guard checks against (the
        filter refuses to publish anything when this file is missing)."""
        if not any(i.guard for i in job.plan.inputs):
            return
        digests = await self.input_digests(job, paths)
        guarded, k = [], 0
        for item in job.plan.inputs:
            mine = digests[k:k + len(item.files)]
            k += len(item.files)
            guarded.append(egress.GuardedInput(item.did, egress.EgressGuard.from_public(item.guard),
                                               tuple(d.digest for d in mine)))
        try:
            guard: dict[str, Any] = egress.filter_guard(guarded) or {"inputs": {}, "budgets": []}
        except egress.GuardUnavailable as exc:
            guard = {"unavailable": str(exc)}
        target = paths.results / GUARD_FILE
        await asyncio.to_thread(_write_json, target, guard)

    # -- usage and the image ---------------------------------------------------------------------

    async def _algorithm_container(self, job_id: str) -> str | None:
        rec = (await self.store.steps(job_id)).get(StepKind.ALGORITHM)
        return rec.container_id if rec is not None and rec.state == StepState.RUNNING else None

    def follow(self, job: PlannedJob, paths: JobPaths) -> None:
        """While the algorithm runs: read its usage (its container is found once it started) and,
        beside it, which image its container was created from (off the critical path)."""
        self.usage.watch(job.job_id, job.environment, disk=paths.fs, before=JobUsage.from_public(job.usage),
                         find=lambda: self._algorithm_container(job.job_id))
        if self.provenance and not (paths.root / IMAGE).exists():  # known already, after a restart
            self._images[job.job_id] = asyncio.ensure_future(self._image_of(job.job_id, paths))

    async def finish(self, job: PlannedJob) -> dict[str, Any]:
        """The columns to store once the algorithm ended: its final usage (its image is in its file)."""
        final = self.usage.unwatch(job.job_id)
        task = self._images.pop(job.job_id, None)
        if task is not None:
            await task
        return {"usage": final.public() if final is not None else job.usage}

    def current(self, job_id: str) -> dict[str, Any] | None:
        live = self.usage.current(job_id)
        return None if live is None else live.public()

    async def _image_of(self, job_id: str, paths: JobPaths) -> None:
        """Note {id, repoDigests} of the image the algorithm's (created) container runs, what Docker
        really runs whatever a tag names now, in the job's folder (runnerd's own file, read when
        the attestation is made; it outlives a restart). Never raises."""
        try:
            rec = (await self.store.steps(job_id)).get(StepKind.ALGORITHM)
            image_id = await self.runtime.container_image(rec.container_id) if rec and rec.container_id else None
            if not image_id:
                return
            _, repo = await self.runtime.image_digests(image_id)
            await asyncio.to_thread(_write_json, paths.root / IMAGE, {"id": image_id, "repoDigests": sorted(repo)})
        except (ImageMissing, RuntimeUnavailable, OSError) as exc:
            log.warning("job %s: cannot tell which image its algorithm runs: %s", job_id, exc)

    # -- the attestation -------------------------------------------------------------------------

    async def attest(self, job: PlannedJob, env: Environment, paths: JobPaths, results: list[ResultFile],
                     finished: float) -> list[ResultFile]:
        """Sign and write the job's attestation (before the job's filesystem goes): the results
        with it as their last entry. Never raises: a job must end even if it cannot be made."""
        made = await self._attestation(job, env, paths, results, finished)
        return results + ([made] if made else [])

    async def _attestation(self, job: PlannedJob, env: Environment, paths: JobPaths, results: list[ResultFile],
                           finished: float) -> ResultFile | None:
        if not self.provenance or self.identity is None:
            return None
        try:
            document = await self._document(job, env, paths, results, finished)
            data = provenance.to_bytes(document)
            target = paths.logs / ATTESTATION
            await asyncio.to_thread(_write_bytes, target, data)
        except Exception:  # the job still ends, without its attestation; the log says why
            log.exception("job %s: its attestation could not be made", job.job_id)
            return None
        return ResultFile(ATTESTATION, len(data), ResultType.ATTESTATION, f"logs/{ATTESTATION}")

    async def _document(self, job: PlannedJob, env: Environment, paths: JobPaths, results: list[ResultFile],
                        finished: float) -> dict[str, Any]:
        assert self.identity is not None
        status = job.ending or JobStatus.COMPLETED
        report = read_report(paths.results_report) or {}
        copied = {f.get("path"): f for f in report.get("files") or () if isinstance(f, dict)}
        digests = []
        for index, r in enumerate(results):
            d = _digest(copied.get(r.filename), "size") if r.type == ResultType.OUTPUT else None
            if d is None:  # a log (runnerd's own file), or an output the filter did not hash
                _, d = await asyncio.to_thread(hash_file, paths.root / r.path)
            if d is None:
                raise OSError(f"result {r.filename} changed while it was hashed")
            digests.append(ResultDigest(index, r.filename, r.type.value, d))
        algo = job.plan.algorithm
        c = algo.container
        reference = job.images.algorithm if job.images else image_reference(c.image, c.tag, c.checksum)
        image = read_report(paths.root / IMAGE) or {}
        slot = job.slot
        limits = {"nanoCPUs": int(round(env.nCPU * 1e9)), "ramBytes": env.ram_bytes, "diskBytes": env.disk_bytes,
                  "maxJobDurationMs": int(round(env.maxJobDuration * 1000)), "maxOutputFiles": env.maxOutputFiles,
                  "nGPU": env.nGPU, "gpus": list(slot.gpus) if slot else [], "cpuset": slot.cpuset if slot else None,
                  "network": job.plan.network}
        timings = {name: ms for name, ms in (("provision", _ms(job.history, 20, (30,))),
                                             ("algorithm", _ms(job.history, 40, (50, 60))),
                                             ("filter", _ms(job.history, 50, (60,))),
                                             ("total", _ms(job.history, 1, (60,)))) if ms is not None}
        usage = JobUsage.from_public(job.usage)
        facts = provenance.JobFacts(
            job_id=job.job_id, owner=job.owner, environment=job.environment, agreement_id=job.agreement_id,
            status=int(status), status_text=status.text, date_created=f"{job.date_created:.6f}",
            date_finished=f"{finished:.6f}", limits=limits, termination=job.termination, error=job.error,
            timings_ms=timings, usage=usage.canonical() if usage else None, guard=self._verdict(job, report))
        algorithm = provenance.AlgorithmFacts(
            did=algo.did, code_type="raw" if isinstance(algo.code, RawCode) else
            "file" if isinstance(algo.code, LocalFile) else "url", code=await self._code_digest(job, paths),
            entrypoint=c.entrypoint, image=reference, image_id=str(image.get("id") or ""),
            repo_digests=tuple(image.get("repoDigests") or ()))
        statement = provenance.build_statement(facts, algorithm, await self.input_digests(job, paths), digests,
                                               __version__)
        return provenance.sign_statement(statement, self.identity.private_key, self.identity.address)

    @staticmethod
    def _verdict(job: PlannedJob, report: dict[str, Any]) -> dict[str, Any] | None:
        guards = [{"did": i.did, **i.guard} for i in job.plan.inputs if i.guard]
        if not guards:
            return None
        if report.get("guard"):
            verdict, reason = "breached", str(report.get("error") or "")[:2000]
        elif report.get("ok"):
            verdict, reason = "passed", None
        else:  # the filter did not run or failed for another reason: nothing was published
            verdict, reason = "not applied", None
        return {"guards": guards, "verdict": verdict, "reason": reason}


def _write_json(path: Path, value: Any) -> None:
    _write_bytes(path, json.dumps(value).encode())


def _write_bytes(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(data)
    os.chmod(tmp, 0o644)  # the filter (jobUser) reads the guard file
    os.replace(tmp, path)
