"""Shared fixtures. Docker tests need a daemon and the locally built images (.ci/run makes both);
without them they are skipped, unless RUNNERD_REQUIRE_DOCKER=1 (CI) turns that into a failure."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.helpers import BUSYBOX_IMAGE, PY_IMAGE, Daemon, base_config
from tests.swarm_lab import swarm_lab  # noqa: F401 - one session fixture for every module (#17)


def _docker_ready() -> str | None:
    if shutil.which("docker") is None:
        return "no docker client"
    if subprocess.run(["docker", "info"], capture_output=True).returncode != 0:
        return "no Docker daemon answers"
    for image in (PY_IMAGE, BUSYBOX_IMAGE):
        if subprocess.run(["docker", "image", "inspect", image], capture_output=True).returncode != 0:
            return f"test image {image} is missing (bash scripts/images.sh python|busybox {image})"
    return None


def pytest_collection_modifyitems(config, items):
    problem = _docker_ready()
    if problem is None:
        return
    if os.environ.get("RUNNERD_REQUIRE_DOCKER") == "1":
        raise pytest.UsageError(f"Docker tests cannot run: {problem}")
    for item in items:
        if "docker" in item.keywords:
            item.add_marker(pytest.mark.skip(reason=problem))


@pytest.fixture(scope="session")
def shared_daemon(tmp_path_factory):
    """One daemon for the tests that only need a default configuration."""
    config = base_config(environments=[
        {"id": "ocean-compute", "nCPU": 1, "ramGB": 0.5, "diskGB": 0.1, "maxJobs": 2, "maxJobDuration": 120},
        {"id": "small", "nCPU": 0.5, "ramGB": 0.25, "diskGB": 0.05, "maxJobs": 1, "maxJobDuration": 60},
    ])
    daemon = Daemon(tmp_path_factory.mktemp("shared"), config).start()
    yield daemon
    daemon.stop()
    _no_leftovers(daemon)


@pytest.fixture
def make_daemon(tmp_path):
    """Start daemons with a custom configuration; all are stopped at the end of the test."""
    started: list[Daemon] = []

    def make(start: bool = True, **overrides) -> Daemon:
        daemon = Daemon(tmp_path / f"d{len(started)}", base_config(**overrides))
        started.append(daemon)
        return daemon.start() if start else daemon

    yield make
    for daemon in started:
        daemon.stop()
    for daemon in started:
        _no_leftovers(daemon)


def _no_leftovers(daemon: Daemon) -> None:
    """Once its jobs are done, a daemon must have removed every container it created."""
    left = daemon.leftover_containers()
    if left:
        subprocess.run(["docker", "rm", "-f", *left], capture_output=True)
        pytest.fail(f"{len(left)} container(s) of this daemon's jobs were left behind", pytrace=False)


@pytest.fixture
def tmp_assets(tmp_path) -> Path:
    path = tmp_path / "assets"
    path.mkdir()
    return path


@pytest.fixture
def http_server():
    """A file server on the docker bridge address, so the provision container can reach it.
    (Only ever this machine: loopback or docker0.)"""
    from tests.netutil import BridgeServer

    server = BridgeServer()
    yield server
    server.close()


@pytest.fixture
def fake_clock():
    """A clock the test advances (tests/fakes.py FakeClock); the engine rigs run on it when asked."""
    from tests.fakes import FakeClock

    return FakeClock()


@pytest.fixture
async def inprocess(tmp_path, aiohttp_client):
    """The daemon in this test's event loop, on the FakeRuntime and a FakeClock, behind aiohttp's
    test client: API tests that need no container need no Docker (tests/inprocess.py)."""
    from contextlib import AsyncExitStack

    from tests.inprocess import start

    async with AsyncExitStack() as stack:
        yield await start(stack, tmp_path, aiohttp_client)
