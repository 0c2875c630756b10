"""The vocabulary of runnerd: job statuses, steps, outcomes and the legal transitions between them.

No I/O and no imports from other runnerd modules but holdings.py (what a running job holds,
re-exported here): this is the file to read first.
"""

from __future__ import annotations

import enum
import json
from dataclasses import dataclass, field, fields
from typing import Any, Union

from runnerd.holdings import ResolvedImages as ResolvedImages
from runnerd.holdings import Slot as Slot


class JobStatus(enum.IntEnum):
    """Ocean's status codes (SPEC §2). Failures are > 70 so that Ocean pollers waiting for
    `status > 60` end; a failure is never reported as 70."""

    QUEUED = 1
    STARTED = 10
    CONFIGURING = 20
    PROVISIONED = 30
    DATA_PROVISIONING_FAILED = 31
    ALGORITHM_PROVISIONING_FAILED = 32
    RUNNING = 40
    FILTERING = 50
    PUBLISHING = 60
    COMPLETED = 70
    ALGORITHM_FAILED = 71
    TIMED_OUT = 72
    OUT_OF_MEMORY = 73
    OUTPUT_LIMITS_EXCEEDED = 74
    FILTERING_FAILED = 75
    INTERRUPTED = 76
    STOPPED = 7
    DELETED = 8  # only ever in a DELETE response; a deleted job has no row

    @property
    def text(self) -> str:
        return STATUS_TEXT[self]

    @property
    def terminal(self) -> bool:
        return self in TERMINAL


STATUS_TEXT: dict[JobStatus, str] = {
    JobStatus.QUEUED: "Warming up",
    JobStatus.STARTED: "Job started",
    JobStatus.CONFIGURING: "Configuring volumes",
    JobStatus.PROVISIONED: "Provisioning success",
    JobStatus.DATA_PROVISIONING_FAILED: "Data provisioning failed",
    JobStatus.ALGORITHM_PROVISIONING_FAILED: "Algorithm provisioning failed",
    JobStatus.RUNNING: "Running algorithm",
    JobStatus.FILTERING: "Filtering results",
    JobStatus.PUBLISHING: "Publishing results",
    JobStatus.COMPLETED: "Job completed",
    JobStatus.ALGORITHM_FAILED: "Algorithm failed",
    JobStatus.TIMED_OUT: "Algorithm timed out",
    JobStatus.OUT_OF_MEMORY: "Algorithm out of memory",
    JobStatus.OUTPUT_LIMITS_EXCEEDED: "Output limits exceeded",
    JobStatus.FILTERING_FAILED: "Results filtering failed",
    JobStatus.INTERRUPTED: "Job interrupted",
    JobStatus.STOPPED: "Job stopped",
    JobStatus.DELETED: "Job deleted successfully",
}

TERMINAL = frozenset(
    {
        JobStatus.DATA_PROVISIONING_FAILED,
        JobStatus.ALGORITHM_PROVISIONING_FAILED,
        JobStatus.COMPLETED,
        JobStatus.ALGORITHM_FAILED,
        JobStatus.TIMED_OUT,
        JobStatus.OUT_OF_MEMORY,
        JobStatus.OUTPUT_LIMITS_EXCEEDED,
        JobStatus.FILTERING_FAILED,
        JobStatus.INTERRUPTED,
        JobStatus.STOPPED,
    }
)

# The statuses a job can end in once its algorithm has run: they are decided after the algorithm
# step and applied when publishing ends.
_ENDINGS = TERMINAL - {JobStatus.DATA_PROVISIONING_FAILED, JobStatus.ALGORITHM_PROVISIONING_FAILED}
_SETUP_FAILURES = {JobStatus.DATA_PROVISIONING_FAILED, JobStatus.ALGORITHM_PROVISIONING_FAILED}
_ABORTS = {JobStatus.STOPPED, JobStatus.INTERRUPTED}

ALLOWED_TRANSITIONS: dict[JobStatus, frozenset[JobStatus]] = {
    JobStatus.QUEUED: frozenset({JobStatus.STARTED, JobStatus.STOPPED, JobStatus.INTERRUPTED}),
    JobStatus.STARTED: frozenset({JobStatus.CONFIGURING, *_ABORTS, *_SETUP_FAILURES}),
    JobStatus.CONFIGURING: frozenset({JobStatus.PROVISIONED, *_ABORTS, *_SETUP_FAILURES}),
    JobStatus.PROVISIONED: frozenset({JobStatus.RUNNING, *_ABORTS, *_SETUP_FAILURES}),
    JobStatus.RUNNING: frozenset({JobStatus.FILTERING, JobStatus.PUBLISHING, *_ABORTS}),
    JobStatus.FILTERING: frozenset({JobStatus.PUBLISHING, *_ABORTS}),
    JobStatus.PUBLISHING: frozenset(_ENDINGS),
    **{status: frozenset() for status in TERMINAL},
}


class IllegalTransition(Exception):
    """A status change the state machine does not allow (a bug, or a race that lost)."""

    def __init__(self, job_id: str, current: JobStatus, wanted: JobStatus):
        super().__init__(f"job {job_id}: illegal transition {int(current)} -> {int(wanted)}")
        self.job_id, self.current, self.wanted = job_id, current, wanted


def check_transition(job_id: str, current: JobStatus, wanted: JobStatus) -> None:
    if wanted not in ALLOWED_TRANSITIONS[current]:
        raise IllegalTransition(job_id, current, wanted)


class StepKind(str, enum.Enum):
    """The three containers of a job, in the order they run."""

    PROVISION = "provision"
    ALGORITHM = "algorithm"
    FILTER = "filter"


class StepState(str, enum.Enum):
    """One container's life, as recorded before each Docker action (rq-style string enum)."""

    CREATING = "creating"  # recorded before `create`; the container may or may not exist
    CREATED = "created"
    RUNNING = "running"  # recorded before `start`
    EXITED = "exited"  # exit result collected
    ABANDONED = "abandoned"  # its container vanished; the job cannot trust its result


class ResultType(str, enum.Enum):
    OUTPUT = "output"
    ALGORITHM_LOG = "algorithmLog"
    CONFIGURATION_LOG = "configurationLog"
    FILTERING_LOG = "filteringLog"
    ATTESTATION = "attestation"  # the signed provenance of the job (#15), always the last result


@dataclass(frozen=True)
class ExitResult:
    """How a container ended. A non-zero exit or an OOM kill is data, not an exception."""

    exit_code: int
    oom_killed: bool = False
    error: str | None = None  # Docker's own State.Error, if any; or PROBABLY_OOM


# The `error` of a 137 from a backend without an OOM flag (Swarm) that runnerd did not cause
PROBABLY_OOM = "killed by SIGKILL that runnerd did not send: probably out of memory (Swarm reports no OOM flag)"


@dataclass(frozen=True)
class ResultFile:
    """One entry of a job's `results` list; `path` is relative to the job's directory."""

    filename: str
    filesize: int
    type: ResultType
    path: str

    def public(self, index: int) -> dict[str, Any]:
        return {"index": index, "filename": self.filename, "filesize": self.filesize, "type": self.type.value}


@dataclass
class Job:
    """One compute job as stored, without its plan: what status reads, the API and the hooks see.
    The runner works on a `PlannedJob`; the two are different types so that a status row can
    never be mistaken for the job to run (its plan is not loaded, and is dropped once it ends)."""

    job_id: str
    owner: str
    document_id: str
    environment: str
    agreement_id: str
    algo_did: str
    input_dids: list[str]
    status: JobStatus = JobStatus.QUEUED
    date_created: float = 0.0
    date_finished: float | None = None
    date_started: float | None = None
    stopreq: int = 0
    removed: int = 0
    results: list[ResultFile] = field(default_factory=list)
    termination: dict[str, Any] | None = None
    error: str | None = None
    queue_seq: int = 0
    slot: Slot | None = None  # the cores and GPUs the scheduler gave it, while it runs
    images: ResolvedImages | None = None  # what the runner resolved its images to (set while configuring)
    ending: JobStatus | None = None  # decided once the algorithm ends, applied when publishing ends
    history: list[tuple[int, float]] = field(default_factory=list)  # (status, when it was reached)
    restarted_from: str | None = None  # the stopped/failed job this one re-runs
    request: dict[str, Any] | None = None  # what a restart re-runs intake from (written at insert only)
    terms: JobTerms = field(default_factory=lambda: JobTerms())  # what its start asked beyond the plan
    usage: dict[str, Any] | None = None  # final resource use, engine.usage.JobUsage.public() (#15)

    @property
    def terminal(self) -> bool:
        return self.status.terminal

    def with_plan(self, plan: JobPlan) -> PlannedJob:
        return PlannedJob(**{f.name: getattr(self, f.name) for f in fields(Job)}, plan=plan)


@dataclass
class PlannedJob(Job):
    """A job with the plan it runs (from intake, or loaded by the runner)."""

    plan: JobPlan = field(kw_only=True)


@dataclass(frozen=True)
class JobTerms:
    """What a start asked beyond inputs and algorithm (ocean-node's dialect #11, queue wait #15),
    within its environment's bounds (engine/service.py); stored with the job, never rewritten."""

    max_duration: float | None = None  # run time in seconds, at most the environment's maxJobDuration
    queue_max_wait: float | None = None  # seconds it may wait queued, then it ends (76, queue_expired)
    viewers: tuple[str, ...] = ()  # lower-cased addresses that may read it besides its owner
    metadata: dict[str, Any] | None = None  # the consumer's own, handed back as sent
    resources: tuple[tuple[str, float], ...] = ()  # (cpu|ram|disk|gpu, amount) granted


# stopreq values, as Ocean's operator uses them
STOPREQ_NONE, STOPREQ_USER, STOPREQ_TIMEOUT = 0, 1, 2


# -- the job plan: what intake decided, self-contained, so a job runs the same after a restart ---

@dataclass(frozen=True)
class LocalFile:
    """A file on this host (under the assets dir or an assetRoots entry): bind-mounted read-only
    from its pin (engine/pins.py), never copied."""

    path: str
    sha256: str | None = None  # the trusted checksum verified at submit: the pin must still match


@dataclass(frozen=True)
class RemoteFile:
    """A file the provision step downloads (the consumer sees its label, never the URL)."""

    url: str
    sha256: str | None = None
    origin: str | None = None  # "consumer": the consumer's own URL (algorithm.meta.url)


@dataclass(frozen=True)
class RawCode:
    """An algorithm sent as text (algorithm.meta.rawcode)."""

    text: str


AssetFile = Union[LocalFile, RemoteFile]
AlgorithmCode = Union[LocalFile, RemoteFile, RawCode]


@dataclass(frozen=True)
class InputPlan:
    did: str
    ddo: dict[str, Any]  # the public DDO, written to /data/ddos/<did>
    files: tuple[AssetFile, ...]
    userdata: Any = None
    guard: dict[str, Any] | None = None  # its egress guard, egress.EgressGuard.public() (#15)


@dataclass(frozen=True)
class AlgorithmContainer:
    entrypoint: str  # replaces the image's ENTRYPOINT; `$ALGO` is the algorithm's path
    image: str
    tag: str = ""
    checksum: str = ""  # sha256:<hex>, lower case, or ""


@dataclass(frozen=True)
class AlgorithmPlan:
    did: str | None  # None for a raw algorithm (algorithm.meta)
    ddo: dict[str, Any] | None
    code: AlgorithmCode
    container: AlgorithmContainer
    algocustomdata: Any = None  # written to /data/inputs/algoCustomData.json
    userdata: Any = None

    @property
    def consumer_code(self) -> bool:
        """Whether the code's URL is the consumer's (fetched under the strict public-only rule):
        when intake says so, or when no published algorithm stands behind it (plans stored
        before the marker existed)."""
        return isinstance(self.code, RemoteFile) and (self.code.origin == "consumer" or not self.did)


@dataclass(frozen=True)
class JobPlan:
    """The validated plan intake built: inputs with their files, the algorithm with its code and
    container, custom data, network consent and the job's secret. Stored as JSON (`to_json` and
    `from_json` are the only place that knows the stored form; rows of older versions load)."""

    inputs: tuple[InputPlan, ...]
    algorithm: AlgorithmPlan
    network: bool  # the environment and every input allow the algorithm the job network
    secret: str  # the algorithm's `secret` variable, random per job

    def to_json(self) -> str:
        algo = self.algorithm
        return json.dumps({
            "inputs": [{"did": i.did, "ddo": i.ddo, "files": [_file_out(f) for f in i.files],
                        "userdata": i.userdata, **({"guard": i.guard} if i.guard else {})} for i in self.inputs],
            "algorithm": {"did": algo.did, "ddo": algo.ddo, "code": _file_out(algo.code),
                          "entrypoint": algo.container.entrypoint, "image": algo.container.image,
                          "tag": algo.container.tag, "checksum": algo.container.checksum,
                          "algocustomdata": algo.algocustomdata, "userdata": algo.userdata},
            "network": self.network,
            "secret": self.secret,
        })

    @staticmethod
    def from_json(text: str) -> JobPlan:
        """Raises ValueError (or KeyError) on a plan that is not one (a dropped plan is `{}`)."""
        raw = json.loads(text)
        algo = raw["algorithm"]
        return JobPlan(
            inputs=tuple(InputPlan(i["did"], i.get("ddo") or {}, tuple(asset_file(f) for f in i["files"]),
                                   i.get("userdata"), i.get("guard")) for i in raw["inputs"]),
            algorithm=AlgorithmPlan(
                did=algo.get("did"), ddo=algo.get("ddo"), code=_file_in(algo["code"]),
                container=AlgorithmContainer(algo["entrypoint"], algo["image"], algo.get("tag") or "",
                                             algo.get("checksum") or ""),
                algocustomdata=algo.get("algocustomdata"), userdata=algo.get("userdata")),
            network=bool(raw.get("network", False)),
            secret=raw["secret"],
        )


def _file_out(f: AlgorithmCode) -> dict[str, Any]:
    if isinstance(f, RawCode):
        return {"type": "raw", "rawcode": f.text}
    if isinstance(f, LocalFile):
        return {"type": "file", "path": f.path, **({"sha256": f.sha256} if f.sha256 else {})}
    return {"type": "url", "url": f.url, "sha256": f.sha256, **({"origin": f.origin} if f.origin else {})}


def _file_in(raw: dict[str, Any]) -> AlgorithmCode:
    kind = raw["type"]
    if kind == "raw":
        return RawCode(raw["rawcode"])
    if kind == "file":
        return LocalFile(raw["path"], raw.get("sha256"))
    if kind == "url":
        return RemoteFile(raw["url"], raw.get("sha256"), raw.get("origin"))
    raise ValueError(f"unknown file type {kind!r}")


def asset_file(resolved: dict[str, Any]) -> AssetFile:
    """A DDO's file as the catalog resolved it ({type: file, path} or {type: url, url, sha256}), or
    as a stored plan has it, as a plan file."""
    f = _file_in(resolved)
    if isinstance(f, RawCode):
        raise ValueError("a DDO file cannot be raw code")
    return f


def file_dict(f: AlgorithmCode) -> dict[str, Any]:
    """The catalog's form of a plan file (catalog.sha256_of takes it)."""
    return _file_out(f)
