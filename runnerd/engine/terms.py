"""A job's own terms (domain.JobTerms) against its environment: bounded when it is started, and
applied to the environment it runs in (the scheduler's cores, the runner's limits).

Environments stay the unit of configuration and of slots; a job's terms can only ask for less
than its environment gives (a shorter run, a shorter queue wait, fewer CPUs), never for more.
"""

from __future__ import annotations

from dataclasses import replace

from runnerd.config import Environment
from runnerd.domain import JobTerms


def bounded(terms: JobTerms, env: Environment) -> JobTerms:
    """The job's terms within its environment's: a run time of at most maxJobDuration, a queue wait
    of at most queueMaxWaitTime (which is also the wait of a job that asks for none), at most
    nCPU CPUs (the rest of the resources are the environment's slot, fixed)."""
    wait = terms.queue_max_wait or None
    if env.queueMaxWaitTime:
        wait = min(wait, env.queueMaxWaitTime) if wait else env.queueMaxWaitTime
    run = min(terms.max_duration, env.maxJobDuration) if terms.max_duration else None
    resources = tuple((rid, min(amount, env.nCPU) if rid == "cpu" else amount) for rid, amount in terms.resources)
    return replace(terms, queue_max_wait=wait, max_duration=run, resources=resources)


def applied(env: Environment, terms: JobTerms) -> Environment:
    """The environment as this job runs in it: its own run time and CPU count where it asked for
    less (the scheduler pins that many cores, the container gets that CPU quota)."""
    cpus = dict(terms.resources).get("cpu") or env.nCPU
    duration = terms.max_duration or env.maxJobDuration
    if cpus >= env.nCPU and duration >= env.maxJobDuration:
        return env
    return replace(env, nCPU=min(cpus, env.nCPU), maxJobDuration=min(duration, env.maxJobDuration))
