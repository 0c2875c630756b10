"""The three-node Swarm lab of scripts/swarm_lab.sh as a session fixture (#17).

It is built once per pytest session, only when RUNNERD_TEST_SWARM=1 (it starts three dockerd, needs
root and `ip netns`), and torn down at the end of the session, also when a test failed. Tests talk
to the nodes through their unix sockets; the only addresses in the lab are its own /24.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "swarm_lab.sh"
ENABLED = os.environ.get("RUNNERD_TEST_SWARM") == "1"
LAB_DIR = Path(os.environ.get("RDLAB_DIR", "/tmp/rdlab"))
LAB_NET = os.environ.get("RDLAB_NET", "10.231.0")
NODES = (1, 2, 3)
UP_TIMEOUT = 300  # the first `up` also saves the images from the system dockerd


def skip_reason(env_flag: bool = True) -> str | None:
    """Why the lab cannot run here, or None. `env_flag`: the tests run it only when asked
    (RUNNERD_TEST_SWARM=1); bench/swarm.py is asked by being run."""
    if env_flag and not ENABLED:
        return "the Swarm lab runs only with RUNNERD_TEST_SWARM=1 (three extra dockerd, root, ip netns)"
    if os.geteuid() != 0:
        return "the Swarm lab needs root (network namespaces, dockerd)"
    for tool in ("ip", "nsenter", "unshare", "dockerd", "docker"):
        if shutil.which(tool) is None:
            return f"the Swarm lab needs {tool}"
    return None


def script(*args: str, timeout: float = UP_TIMEOUT) -> subprocess.CompletedProcess:
    env = {**os.environ, "RDLAB_DIR": str(LAB_DIR), "RDLAB_NET": LAB_NET}
    return subprocess.run(["bash", str(SCRIPT), *args], env=env, capture_output=True, text=True, timeout=timeout)


@dataclass
class Lab:
    root: Path
    net: str
    up_seconds: float = 0.0

    @property
    def host_address(self) -> str:
        """The host's own address on the lab bridge."""
        return f"{self.net}.1"

    def address(self, node: int) -> str:
        return f"{self.net}.1{node}"

    def socket(self, node: int) -> Path:
        return self.root / f"n{node}" / "docker.sock"

    def url(self, node: int = 1) -> str:
        """The Docker API URL of a node (node 1 is the manager)."""
        return f"unix://{self.socket(node)}"

    def hostname(self, node: int) -> str:
        return f"rdlab-n{node}"

    def docker(self, node: int, *args: str, check: bool = True, timeout: float = 120) -> str:
        proc = subprocess.run(["docker", "--host", self.url(node), *args], capture_output=True, text=True,
                              timeout=timeout)
        if check and proc.returncode != 0:
            raise AssertionError(f"docker {' '.join(args)} on node {node}: {proc.stderr.strip()}")
        return proc.stdout

    def node_id(self, node: int) -> str:
        return self.docker(1, "node", "inspect", "--format", "{{.ID}}", self.hostname(node)).strip()

    def up(self) -> None:
        started = time.monotonic()
        proc = script("up")
        if proc.returncode != 0:
            script("down", timeout=120)
            raise AssertionError(f"swarm_lab.sh up failed ({proc.returncode}): {proc.stderr[-2000:]}")
        self.up_seconds = time.monotonic() - started

    def restart(self, node: int) -> None:
        """Kill a node's dockerd and all it runs, start it again: it rejoins on its own."""
        proc = script("restart", str(node), timeout=180)
        assert proc.returncode == 0, proc.stderr

    def down(self) -> None:
        proc = script("down", timeout=120)
        assert proc.returncode == 0, proc.stderr


@pytest.fixture(scope="session")
def swarm_lab():
    reason = skip_reason()
    if reason:
        pytest.skip(reason)
    lab = Lab(LAB_DIR, LAB_NET)
    lab.up()
    try:
        yield lab
    finally:
        lab.down()
