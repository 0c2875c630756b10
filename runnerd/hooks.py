"""What the engine announces while jobs run: status changes, step times, Docker going away and
coming back, container start latency. The engine calls these; metrics and the API's live-log
followers listen. It lives below both, so that an observer never imports the engine to hear it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from runnerd.domain import Job, JobStatus, StepKind


@dataclass
class Hooks:
    """One callback per event; each does nothing unless an observer sets it."""

    status: Callable[[Job, JobStatus], None] = lambda job, old: None
    step: Callable[[StepKind, float], None] = lambda kind, seconds: None
    docker: Callable[[bool], None] = lambda up: None
    container_start: Callable[[float], None] = lambda seconds: None
