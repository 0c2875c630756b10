"""The vocabulary of runnerd: job statuses, steps, outcomes and the legal transitions between them.

No I/O and no imports from other runnerd modules: this is the file to read first.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any


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


@dataclass(frozen=True)
class ExitResult:
    """How a container ended. A non-zero exit or an OOM kill is data, not an exception."""

    exit_code: int
    oom_killed: bool = False
    error: str | None = None  # Docker's own State.Error, if any


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
    """One compute job as stored. `spec` is the validated, self-contained plan for running it."""

    job_id: str
    owner: str
    document_id: str
    environment: str
    agreement_id: str
    algo_did: str
    input_dids: list[str]
    spec: dict[str, Any]
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
    slot: dict[str, Any] | None = None  # resources held while running: cpus, gpus
    ending: JobStatus | None = None  # decided once the algorithm ends, applied when publishing ends
    history: list[tuple[int, float]] = field(default_factory=list)  # (status, when it was reached)
    restarted_from: str | None = None  # the stopped/failed job this one re-runs
    request: dict[str, Any] | None = None  # what a restart re-runs intake from (written at insert only)

    @property
    def terminal(self) -> bool:
        return self.status.terminal


# stopreq values, as Ocean's operator uses them
STOPREQ_NONE, STOPREQ_USER, STOPREQ_TIMEOUT = 0, 1, 2
