"""Prometheus metrics (the standard client library), fed by the engine's hooks (runnerd/hooks.py) and the API's
request middleware; job counts by status are read from the store at scrape time."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client import CONTENT_TYPE_LATEST as CONTENT_TYPE_LATEST  # re-exported for the API

from runnerd.domain import Job, JobStatus, StepKind
from runnerd.hooks import Hooks

_FAST = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
_SLOW = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.jobs = Gauge("runnerd_jobs", "Jobs in the database by environment and status", ["environment", "status"],
                          registry=r)
        self.queue = Gauge("runnerd_queue_length", "Jobs waiting at status 1", ["environment"], registry=r)
        self.running = Gauge("runnerd_running_jobs", "Jobs holding a slot", ["environment"], registry=r)
        self.finished = Counter("runnerd_jobs_finished_total", "Jobs that reached a terminal status",
                                ["environment", "status"], registry=r)
        self.transitions = Counter("runnerd_job_transitions_total", "Status changes", ["status"], registry=r)
        self.step_seconds = Histogram("runnerd_step_duration_seconds", "Wall time of each step", ["step"],
                                      buckets=_SLOW, registry=r)
        self.container_start = Histogram("runnerd_container_start_seconds",
                                         "From create request to a started container", buckets=_FAST, registry=r)
        self.requests = Histogram("runnerd_api_request_seconds", "API latency", ["method", "route", "code"],
                                  buckets=_FAST, registry=r)
        self.connections = Gauge("runnerd_api_connections", "Open client connections", registry=r)
        self.refused = Counter("runnerd_api_refused_total", "Connections or requests refused before any handler "
                               "(reason: connections, header_timeout, malformed)", ["reason"], registry=r)
        self.docker_errors = Counter("runnerd_docker_errors_total", "Docker calls that failed (daemon down, 5xx)",
                                     registry=r)
        self.docker_up = Gauge("runnerd_docker_up", "1 when Docker answers", registry=r)
        # #15 live usage, per environment only (never per owner or job: labels stay few and nobody's
        # activity can be told from them)
        self.usage_cpu = Counter("runnerd_job_cpu_seconds_total", "CPU time used by algorithms", ["environment"],
                                 registry=r)
        self.usage_memory = Gauge("runnerd_job_memory_bytes", "Memory (working set) of running algorithms, summed",
                                  ["environment"], registry=r)
        self.usage_net = Counter("runnerd_job_network_bytes_total", "Network bytes of algorithms that have a network",
                                 ["environment", "direction"], registry=r)

    def hooks(self) -> Hooks:
        def status(job: Job, old: JobStatus) -> None:
            self.transitions.labels(str(int(job.status))).inc()
            if job.status.terminal:
                self.finished.labels(job.environment, str(int(job.status))).inc()

        def step(kind: StepKind, seconds: float) -> None:
            self.step_seconds.labels(kind.value).observe(seconds)

        def docker(up: bool) -> None:
            self.docker_up.set(1 if up else 0)
            if not up:
                self.docker_errors.inc()

        return Hooks(status=status, step=step, docker=docker, container_start=self.container_start.observe)

    def usage(self, environment: str, old, new) -> None:
        """The usage collector's hook (engine/usage.py): add what changed since the last reading."""
        self.usage_cpu.labels(environment).inc(max(0.0, new.cpu_seconds - old.cpu_seconds))
        self.usage_memory.labels(environment).inc(new.memory_bytes - old.memory_bytes)
        for direction, before, after in (("in", old.net_rx_bytes, new.net_rx_bytes),
                                         ("out", old.net_tx_bytes, new.net_tx_bytes)):
            if after is not None:
                self.usage_net.labels(environment, direction).inc(max(0, after - (before or 0)))

    def render(self, counts: dict[tuple[str, int], int], running: dict[str, int]) -> bytes:
        self.jobs.clear()
        self.queue.clear()
        for (env, status), n in counts.items():
            self.jobs.labels(env, str(status)).set(n)
        for env in {e for e, _ in counts} | set(running):
            self.queue.labels(env).set(counts.get((env, int(JobStatus.QUEUED)), 0))
        for env, n in running.items():
            self.running.labels(env).set(n)
        return generate_latest(self.registry)
