"""Live resource usage (#15 item 2), below the daemon: the cgroup reader on real Docker (CPU moves
while a CPU-bound container runs, peak memory within 10 % of what it allocated), Docker's stats as
the fallback, and the collector's one-reader-for-all rounds against the fake runtime. The daemon's
`usage` in status, /metrics and the CLI: tests/test_usage_e2e.py."""

from __future__ import annotations

import asyncio
import subprocess
import time
import uuid

import pytest

from runnerd.containers import cgroups
from runnerd.containers.docker_runtime import DockerRuntime
from runnerd.containers.runtime import ContainerSpec, ContainerUsage
from runnerd.engine.usage import JobUsage, UsageCollector
from tests.fakes import FakeRuntime, Outcome
from tests.helpers import PY_IMAGE

MIB = 1024 * 1024
ALLOCATE = 300  # MiB the test algorithm touches

HOG = f"""
import time
block = bytearray({ALLOCATE} * 1024 * 1024)
for i in range(0, len(block), 4096):
    block[i] = 1          # touch every page: resident, not just reserved
t = time.time()
while time.time() - t < 8:
    pass                  # CPU-bound
"""


def _run(name: str, code: str, network: str = "none") -> str:
    return subprocess.run(["docker", "run", "-d", "--name", name, "--label", "runnerd.test=h15-usage",
                           "--network", network, "--memory", "1g", PY_IMAGE, "python3", "-c", code],
                          capture_output=True, text=True, check=True).stdout.strip()


@pytest.mark.docker
def test_cpu_moves_and_peak_memory_is_what_the_algorithm_allocated():
    name = f"h15-usage-{uuid.uuid4().hex[:8]}"
    cid = _run(name, HOG)
    runtime = DockerRuntime()

    async def go() -> list[ContainerUsage]:
        readings = []
        try:
            for _ in range(40):
                got = (await runtime.usage([cid])).get(cid)
                if got is not None:
                    readings.append(got)
                if len(readings) >= 2 and readings[-1].cpu_seconds - readings[0].cpu_seconds > 1.0:
                    break
                await asyncio.sleep(0.5)
        finally:
            await runtime.close()
        return readings

    try:
        readings = asyncio.run(go())
    finally:
        subprocess.run(["docker", "rm", "-f", name], capture_output=True)
    assert len(readings) >= 2
    assert readings[-1].cpu_seconds > readings[0].cpu_seconds + 1.0  # it moved, by more than a second of CPU
    usage = JobUsage()
    for r in readings:
        usage = usage.merge(r, time.time())
    assert abs(usage.memory_peak_bytes - ALLOCATE * MIB) <= 0.10 * ALLOCATE * MIB, usage
    assert readings[-1].pids >= 1 and readings[-1].net_rx_bytes is None  # network none: nothing to count


@pytest.mark.docker
def test_network_bytes_where_the_network_is_on_and_the_docker_stats_fallback(monkeypatch):
    name = f"h15-usage-{uuid.uuid4().hex[:8]}"
    cid = _run(name, "import time; time.sleep(20)", network="bridge")
    runtime = DockerRuntime()

    async def go():
        try:
            direct = (await runtime.usage([cid]))[cid]
            monkeypatch.setattr(cgroups, "read", lambda *a, **k: None)  # as where no cgroup is found
            fallback = (await runtime.usage([cid]))[cid]
            gone = await runtime.usage(["0" * 64])
        finally:
            await runtime.close()
        return direct, fallback, gone

    try:
        direct, fallback, gone = asyncio.run(go())
    finally:
        subprocess.run(["docker", "rm", "-f", name], capture_output=True)
    assert direct.net_rx_bytes is not None and fallback.net_rx_bytes is not None
    assert fallback.memory_bytes > 0 and fallback.cpu_seconds >= 0
    assert gone == {}


def _spec(job: str) -> ContainerSpec:
    return ContainerSpec(name=f"runnerd-{job}-algorithm", image="algo:1", command=["run"],
                         labels={"runnerd.job": job, "runnerd.step": "algorithm"}, user="1:1")


async def test_one_reader_reads_every_running_job_in_one_call_at_a_bounded_rate():
    fake = FakeRuntime(images={"algo:1"}, default=Outcome(duration=None))
    ids = []
    for job in ("a", "b", "c"):
        cid = await fake.create(_spec(job))
        await fake.start(cid)
        ids.append(cid)
    seen: list[tuple[str, int]] = []
    collector = UsageCollector(fake, interval=0.2, hook=lambda env, old, new: seen.append((env, new.samples)))
    for job, cid in zip("abc", ids):
        collector.watch(job, "env-" + job, cid)
    collector.start()
    try:
        await asyncio.sleep(1.0)
    finally:
        await collector.close()
    rounds = fake.calls["usage"]
    assert rounds == collector.rounds and 2 <= rounds <= 8  # ~5 in 1 s at 0.2 s: never one per job
    assert {env for env, _ in seen} == {"env-a", "env-b", "env-c"}  # environments only, never an owner
    final = collector.unwatch("a")
    assert final is not None and final.samples == rounds and final.memory_peak_bytes == 64 * MIB
    assert collector.unwatch("a") is None and collector.current("b") is not None


async def test_collection_off_reads_nothing():
    fake = FakeRuntime(images={"algo:1"}, default=Outcome(duration=None))
    collector = UsageCollector(fake, interval=0)
    collector.watch("a", "env", "cid")
    collector.start()
    await asyncio.sleep(0.1)
    assert fake.calls["usage"] == 0 and collector.unwatch("a") is None


def test_usage_round_trips_through_its_public_form_and_is_canonical():
    from runnerd import provenance

    u = JobUsage(cpu_seconds=1.23456, memory_bytes=5, memory_peak_bytes=9, pids=2, pids_peak=3, disk_bytes=100,
                 disk_quota_bytes=1000, samples=4, updated=1764300000.5)
    assert JobUsage.from_public(u.public()) == JobUsage(**{**u.__dict__, "cpu_seconds": 1.235})
    provenance.canonical(u.canonical())  # integers only
    assert u.canonical()["cpuMillis"] == 1235


async def test_metrics_are_per_environment_and_memory_goes_back_when_a_job_ends():
    from runnerd.metrics import Metrics

    fake = FakeRuntime(images={"algo:1"}, default=Outcome(duration=None))
    cid = await fake.create(_spec("a"))
    await fake.start(cid)
    metrics = Metrics()
    collector = UsageCollector(fake, interval=1, hook=metrics.usage)
    collector.watch("a", "gpu-env", cid)
    await collector.sample()
    text = metrics.render({}, {}).decode()
    assert 'runnerd_job_memory_bytes{environment="gpu-env"} 6.7108864e+07' in text
    assert 'runnerd_job_cpu_seconds_total{environment="gpu-env"}' in text
    assert "owner" not in text and "0x" not in text
    collector.unwatch("a")
    assert 'runnerd_job_memory_bytes{environment="gpu-env"} 0.0' in metrics.render({}, {}).decode()


async def test_a_job_whose_container_is_gone_is_let_go_after_some_rounds():
    fake = FakeRuntime(images={"algo:1"}, default=Outcome(duration=None))
    cid = await fake.create(_spec("a"))
    await fake.start(cid)
    collector = UsageCollector(fake, interval=1)
    collector.watch("a", "env", cid)
    await collector.sample()
    fake.vanish(cid)
    for _ in range(29):
        await collector.sample()
    assert collector.current("a") is not None  # a few silent rounds: still watched
    await collector.sample()
    assert collector.current("a") is None and collector.unwatch("a") is None
