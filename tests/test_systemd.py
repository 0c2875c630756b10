"""The systemd unit (systemd/runnerd.service) and the daemon's side of the notify protocol.

`systemd-analyze verify` checks the unit as systemd would load it. The notify tests bind a real
AF_UNIX datagram socket, start a real daemon with NOTIFY_SOCKET pointing at it (as systemd does
for Type=notify) and read what it sends.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import pytest

UNIT = Path(__file__).resolve().parents[1] / "systemd" / "runnerd.service"
SHIPPED_EXEC = ("ExecStart=/usr/local/bin/runnerd serve --config /etc/runnerd/environments.yaml "
                "--data-dir /var/lib/runnerd")
# Directives that give the service a private mount namespace: a job's quota mount made by runnerd
# would then be invisible to dockerd.
MOUNT_NAMESPACE_DIRECTIVES = (
    "ProtectSystem", "ProtectHome", "PrivateTmp", "PrivateDevices", "PrivateMounts", "ReadWritePaths",
    "ReadOnlyPaths", "InaccessiblePaths", "ExecPaths", "NoExecPaths", "TemporaryFileSystem", "BindPaths",
    "BindReadOnlyPaths", "ProtectKernelTunables", "ProtectKernelModules", "ProtectKernelLogs",
    "ProtectControlGroups", "ProtectProc", "ProcSubset", "MountFlags", "RootDirectory", "RootImage",
    "PrivateNetwork", "PrivateUsers", "PrivateIPC", "ReadWriteDirectories", "ReadOnlyDirectories",
    "InaccessibleDirectories", "DynamicUser", "LogsDirectory", "RuntimeDirectoryPreserve",
)


def parse_unit(text: str) -> dict[str, dict[str, list[str]]]:
    """{section: {key: [values]}} of the active (uncommented) lines."""
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], {})
            continue
        key, _, value = line.partition("=")
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


def words(values: list[str]) -> list[str]:
    return [w for v in values for w in v.split()]


def systemd_analyze() -> str:
    path = shutil.which("systemd-analyze")
    if path is None:
        message = "systemd-analyze is not installed (apt-get install systemd)"
        if os.environ.get("RUNNERD_REQUIRE_DOCKER") == "1":
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    return path


def verify(unit_text: str, folder: Path) -> tuple[subprocess.CompletedProcess, list[str]]:
    """Run `systemd-analyze verify` on a copy; also return its complaints about that unit (it may
    mention other units, e.g. docker.service, and exits 0 on unknown keys)."""
    copy = folder / "runnerd.service"
    copy.write_text(unit_text)
    proc = subprocess.run([systemd_analyze(), "verify", str(copy)], capture_output=True, text=True, timeout=120)
    output = proc.stdout + proc.stderr
    return proc, [line for line in output.splitlines() if "runnerd.service" in line]


def installed_copy() -> str:
    """The shipped unit with ExecStart pointing at this checkout's runnerd (verify checks that the
    binary exists)."""
    runnerd = Path(sys.executable).parent / "runnerd"
    assert runnerd.is_file(), f"{runnerd} missing: install runnerd into this venv (scripts/install.sh --dev)"
    text = UNIT.read_text()
    assert SHIPPED_EXEC in text
    return text.replace("ExecStart=/usr/local/bin/runnerd ", f"ExecStart={runnerd} ")


def test_unit_passes_systemd_analyze_verify(tmp_path):
    proc, complaints = verify(installed_copy(), tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert complaints == [], "\n".join(complaints)


def test_verify_would_catch_a_bad_unit(tmp_path):
    """The check above is not vacuous: an unknown directive and a missing binary are reported."""
    _, complaints = verify(installed_copy().replace("[Service]\n", "[Service]\nProtectNothing=yes\n"), tmp_path)
    assert any("ProtectNothing" in line for line in complaints), complaints
    proc, _ = verify(UNIT.read_text().replace("/usr/local/bin/runnerd", "/nonexistent/runnerd"), tmp_path)
    assert proc.returncode != 0


def test_shipped_unit_fields():
    unit = parse_unit(UNIT.read_text())
    u, s = unit["Unit"], unit["Service"]
    assert s["Type"] == ["notify"]
    assert s["NotifyAccess"] == ["main"]
    assert "docker.service" in words(u["Requires"]) and "docker.service" in words(u["After"])
    assert "network-online.target" in words(u["Wants"]) and "network-online.target" in words(u["After"])
    assert s["StateDirectory"] == ["runnerd"]
    assert s["ExecStart"] == [SHIPPED_EXEC.removeprefix("ExecStart=")]
    assert s["Restart"] == ["on-failure"] and s["RestartSec"] == ["2"] and s["TimeoutStopSec"] == ["30"]
    assert s["KillMode"][0] in ("mixed", "process")
    assert "WatchdogSec" not in s and re.search(r"^#WatchdogSec=30$", UNIT.read_text(), re.M)
    for key in ("NoNewPrivileges", "LockPersonality", "RestrictRealtime", "RestrictSUIDSGID"):
        assert s[key] == ["yes"], key
    assert s["SystemCallArchitectures"] == ["native"]
    assert set(words(s["RestrictAddressFamilies"])) >= {"AF_UNIX", "AF_INET", "AF_INET6"}
    assert unit["Install"]["WantedBy"] == ["multi-user.target"]
    namespaced = [k for section in unit.values() for k in section if k in MOUNT_NAMESPACE_DIRECTIVES]
    assert namespaced == [], f"private mount namespace: job mounts would be hidden from dockerd: {namespaced}"


# -- the notify protocol against a real daemon ------------------------------------------------

class NotifyListener:
    """An AF_UNIX datagram socket like the one systemd creates for a Type=notify service."""

    def __init__(self, folder: Path, abstract: bool):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        if abstract:
            name = f"runnerd-test-{secrets.token_hex(8)}"
            self.sock.bind("\0" + name)
            self.address = "@" + name
        else:
            path = folder / "notify.sock"
            if len(str(path)) > 100:  # sun_path is 108 bytes
                path = Path(tempfile.mkdtemp(prefix="rn-")) / "notify.sock"
            self.sock.bind(str(path))
            self.address = str(path)
        self.sock.settimeout(0.5)
        self.received: list[dict[str, str]] = []

    def wait_for(self, key: str, daemon, count: int = 1, bound: float = 90) -> list[dict[str, str]]:
        """Datagrams until `count` of them carry `key`; fails if the daemon exits first."""
        deadline = time.monotonic() + bound
        while sum(key in m for m in self.received) < count:
            try:
                data = self.sock.recv(4096)
            except socket.timeout:
                if daemon.proc.poll() is not None and key != "STOPPING":
                    pytest.fail(f"daemon exited before sending {key}:\n{daemon.log()}")
                if time.monotonic() > deadline:
                    pytest.fail(f"no {key} after {bound}s; got {self.received}\n{daemon.log()}")
                continue
            self.received.append(dict(line.split("=", 1) for line in data.decode().splitlines() if "=" in line))
        return self.received

    def close(self) -> None:
        self.sock.close()


@pytest.fixture(params=["path", "abstract"])
def listener(request, tmp_path, monkeypatch):
    listener = NotifyListener(tmp_path, abstract=request.param == "abstract")
    # The daemon subprocess inherits this process's environment, as it would systemd's.
    monkeypatch.setenv("NOTIFY_SOCKET", listener.address)
    monkeypatch.delenv("WATCHDOG_USEC", raising=False)
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    yield listener
    listener.close()


@pytest.mark.docker
def test_ready_only_when_serving_then_stopping_on_sigterm(make_daemon, listener):
    daemon = make_daemon(start=False)
    daemon.start(wait=False)
    messages = listener.wait_for("READY", daemon)
    assert messages[-1]["READY"] == "1"
    # READY=1 is sent after recovery, so /health already answers 200 at this moment
    health = httpx.get(f"{daemon.url}/health", timeout=10)
    assert health.status_code == 200 and health.json()["status"] == "ok"
    assert not any("STOPPING" in m for m in messages)
    assert daemon.stop() == 0
    messages = listener.wait_for("STOPPING", daemon)
    assert messages[-1]["STOPPING"] == "1"
    assert [i for i, m in enumerate(messages) if "READY" in m] == [0]  # READY once, first


@pytest.mark.docker
def test_watchdog_pings_repeat_when_systemd_asks(make_daemon, listener, monkeypatch):
    monkeypatch.setenv("WATCHDOG_USEC", "200000")  # no WATCHDOG_PID: the pings are for whoever runs
    daemon = make_daemon(start=False)
    daemon.start(wait=False)
    messages = listener.wait_for("WATCHDOG", daemon, count=3)
    assert all(m["WATCHDOG"] == "1" for m in messages if "WATCHDOG" in m)
    first_ping = next(i for i, m in enumerate(messages) if "WATCHDOG" in m)
    assert any("READY" in m for m in messages[:first_ping])  # pings start once the daemon is ready
    assert daemon.stop() == 0
    listener.wait_for("STOPPING", daemon)
