"""Where a job's files live, on the host and in its containers (pure path arithmetic, no I/O).

<data-dir>/jobs/<jobId>/
    disk.img          the quota filesystem's backing file (diskQuota: loop)
    fs/               the job's /data, on the quota filesystem: inputs/ ddos/ transformations/ outputs/ logs/
    provision/        written by the provision step: report.json
    results/          written by the filter step: outputs/… and report.json — what the owner can fetch
    logs/             written by runnerd: configuration.log, algorithm.log, filtering.log
    pinned/           the job's local asset files as runnerd opened them (hard links or binds of
                      those very inodes): <input#>-<file#>, algorithm. What the algorithm's binds
                      mount, so a mount source names no asset path (engine/pins.py)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

DATA = "/data"
INPUTS = "/data/inputs"
DDOS = "/data/ddos"
TRANSFORMATIONS = "/data/transformations"
ALGORITHM = "/data/transformations/algorithm"
OUTPUTS = "/data/outputs"
LOGS = "/data/logs"
STEP_DIR = "/runnerd"  # where provision/filter see their script and write their report
STEP_OUT = "/runnerd/out"
REPORT = "report.json"  # what the provision and filter steps write, beside their outputs
STEP_REPORT = f"{STEP_OUT}/{REPORT}"  # where, in their container (steps/*.py default to it: stdlib only)

FS_SUBDIRS = ("inputs", "ddos", "transformations", "outputs", "logs")


def did_dir(did: str) -> str:
    """Ocean's folder name for a DID: the DID without its `did:op:` prefix."""
    return did[len("did:op:"):] if did.startswith("did:op:") else did


@dataclass(frozen=True)
class JobPaths:
    root: Path

    @classmethod
    def for_job(cls, data_dir: Path, job_id: str) -> "JobPaths":
        return cls(Path(data_dir) / "jobs" / job_id)

    @property
    def disk_image(self) -> Path:
        return self.root / "disk.img"

    @property
    def fs(self) -> Path:
        return self.root / "fs"

    @property
    def provision_out(self) -> Path:
        return self.root / "provision"

    @property
    def provision_report(self) -> Path:
        return self.provision_out / REPORT

    @property
    def results(self) -> Path:
        return self.root / "results"

    @property
    def results_report(self) -> Path:
        return self.results / REPORT

    @property
    def result_outputs(self) -> Path:
        return self.root / "results" / "outputs"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def pinned(self) -> Path:
        return self.root / "pinned"

    def pinned_input(self, input_index: int, file_index: int) -> Path:
        return self.pinned / f"{input_index}-{file_index}"

    @property
    def pinned_algorithm(self) -> Path:
        return self.pinned / "algorithm"

    def log(self, name: str) -> Path:
        return self.logs / name
