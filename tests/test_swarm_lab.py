"""The three-node Swarm lab itself (#17): three dockerd of their own, a swarm of three Ready nodes, a
replicated-job service that runs on the node it is pinned to, a per-job internal network with no
route out (proved from inside the container, towards the lab's own addresses only), and a `down`
that cleans up after a crash mid-setup. Runs only with RUNNERD_TEST_SWARM=1."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from tests.helpers import BUSYBOX_IMAGE
from tests.swarm_lab import LAB_DIR, NODES, SCRIPT, skip_reason

pytestmark = [pytest.mark.docker, pytest.mark.skipif(skip_reason() is not None, reason=skip_reason() or "")]

PROBE_END = "probe-end"


def wait_task(lab, service: str, timeout: float = 90) -> dict:
    """The one task of a replicated-job service once it reached a final state."""
    deadline = time.monotonic() + timeout
    while True:
        rows = [json.loads(line) for line in lab.docker(1, "service", "ps", "--no-trunc", "--format",
                                                        "{{json .}}", service).splitlines() if line]
        ids = [r["ID"] for r in rows]
        if ids:
            task = json.loads(lab.docker(1, "inspect", "--type", "task", ids[0]))[0]
            if task["Status"]["State"] in ("complete", "failed", "rejected", "shutdown", "orphaned"):
                return task
        assert time.monotonic() < deadline, f"{service} did not finish: {rows}"
        time.sleep(0.2)


def test_three_nodes_of_their_own_are_ready(swarm_lab):
    rows = swarm_lab.docker(1, "node", "ls", "--format", "{{.Hostname}} {{.Status}} {{.Availability}}").split("\n")
    assert sorted(r for r in rows if r) == [f"rdlab-n{n} Ready Active" for n in NODES]
    system = json.loads(subprocess.run(["docker", "info", "--format", "{{json .}}"], capture_output=True,
                                       text=True, check=True).stdout)
    infos = [json.loads(swarm_lab.docker(n, "info", "--format", "{{json .}}")) for n in NODES]
    # three daemons, none of them the system's, each with its own data root and a cgroup driver
    # the system one shares (cgroup paths are kept apart by each node's --cgroup-parent, below)
    assert len({i["ID"] for i in infos} | {system["ID"]}) == 4
    assert [i["DockerRootDir"] for i in infos] == [str(LAB_DIR / f"n{n}" / "data") for n in NODES]
    assert {i["CgroupDriver"] for i in infos} == {system["CgroupDriver"]}
    assert all(i["Swarm"]["LocalNodeState"] == "active" for i in infos)
    # this machine has no swap, so the lab declares every node swap-free (the runtime requires it)
    labels = swarm_lab.docker(1, "node", "ls", "-q").split()
    assert [swarm_lab.docker(1, "node", "inspect", "--format", '{{index .Spec.Labels "runnerd.swap"}}', n).strip()
            for n in labels] == ["off"] * 3
    for n, info in zip(NODES, infos):  # the images came from `docker load`, with the system's ids
        assert info["Name"] == f"rdlab-n{n}"
        image_id = swarm_lab.docker(n, "image", "inspect", "--format", "{{.Id}}", BUSYBOX_IMAGE).strip()
        assert image_id == subprocess.run(["docker", "image", "inspect", "--format", "{{.Id}}", BUSYBOX_IMAGE],
                                          capture_output=True, text=True, check=True).stdout.strip()


def test_a_replicated_job_pinned_to_node_2_runs_there_with_no_route_out(swarm_lab):
    lab = swarm_lab
    tag = uuid.uuid4().hex[:8]
    network, service = f"rdlab-job-{tag}", f"rdlab-probe-{tag}"
    # Only the lab's own addresses are ever a target: the host's end of the bridge, node 1 (the
    # manager) and node 3, from a container on node 2.
    targets = [lab.host_address, lab.address(1), lab.address(3)]
    probe = "; ".join([
        "echo host=$(hostname)",
        "ip -o addr show | while read -r _ dev fam addr _; do echo \"if=$dev $fam $addr\"; done",
        "ip route | sed 's/^/route=/'",
        "sed -n 's/^[0-9]*:pids:/cgroup=/p' /proc/self/cgroup",
        *[f"nc -w 2 {t} 2377 </dev/null >/dev/null 2>&1; echo connect={t}:$?" for t in targets],
        f"echo {PROBE_END}",
    ])
    lab.docker(1, "network", "create", "--driver", "overlay", "--internal", "--label", "rdlab.test=1", network)
    try:
        lab.docker(1, "service", "create", "--detach", "--no-resolve-image", "--name", service,
                   "--mode", "replicated-job", "--restart-condition", "none",
                   "--constraint", f"node.id=={lab.node_id(2)}", "--network", network,
                   "--hostname", "{{.Node.Hostname}}", "--label", "rdlab.test=1",
                   BUSYBOX_IMAGE, "sh", "-c", probe)
        task = wait_task(lab, service)
        assert task["Status"]["State"] == "complete", task["Status"]
        assert task["NodeID"] == lab.node_id(2)
        out = lab.docker(1, "service", "logs", "--raw", service)
        for _ in range(50):  # the manager gathers the logs from the worker: they may trail the task
            if PROBE_END in out:
                break
            time.sleep(0.2)
            out = lab.docker(1, "service", "logs", "--raw", service)
        lines = out.split("\n")
        assert "host=rdlab-n2" in lines
        # interfaces: loopback and the job network's one, nothing else (no docker_gwbridge, no lab0)
        ifaces = {line.split()[0][3:] for line in lines if line.startswith("if=") and " inet " in line}
        assert ifaces == {"lo", "eth0"}, out
        (overlay,) = [line.split()[2] for line in lines if line.startswith("if=eth0 inet ")]
        assert overlay.startswith("10.232."), overlay  # the swarm's overlay pool, not the lab /24
        routes = [line[len("route="):] for line in lines if line.startswith("route=")]
        assert routes and not [r for r in routes if r.startswith("default")], routes
        assert all(r.startswith("10.232.") for r in routes), routes
        assert [line for line in lines if line.startswith("cgroup=")] \
            and all(line.startswith("cgroup=/rdlab-n2/") for line in lines if line.startswith("cgroup="))
        connects = {line.split("=")[1].split(":")[0]: line.rsplit(":", 1)[1] for line in lines
                    if line.startswith("connect=")}
        assert set(connects) == set(targets) and "0" not in connects.values(), out
    finally:
        lab.docker(1, "service", "rm", service, check=False)
        for _ in range(50):  # the network is in use until the task's container is gone
            lab.docker(1, "network", "rm", network, check=False, timeout=30)
            if not lab.docker(1, "network", "ls", "-q", "--filter", f"name={network}").strip():
                break
            time.sleep(0.2)


def _read(path: Path) -> str:
    try:
        return path.read_text().strip()
    except OSError:
        return ""


def _lab_leftovers() -> list[str]:
    found = []
    netns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    found += [f"netns {line.split()[0]}" for line in netns.splitlines() if line.startswith("rdlab-")]
    if subprocess.run(["ip", "link", "show", "rdlab-h"], capture_output=True).returncode == 0:
        found.append("link rdlab-h")
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            if str(LAB_DIR) + "/" in cmdline:
                found.append(f"process {proc.name}: {cmdline[:80]}")
    found += [f"cgroup {p}" for p in Path("/sys/fs/cgroup").glob("*/rdlab-n*")]
    if LAB_DIR.exists():
        found.append(f"folder {LAB_DIR}")
    return found


def test_down_cleans_up_after_a_crash_mid_setup_and_up_again_works(swarm_lab):
    """Kill `up` and every dockerd with SIGKILL once the daemons run (stale pid files, no swarm
    yet), then `down` must leave nothing of the lab; `up` after that builds a working lab again
    (the session's later tests use it)."""
    env = {**os.environ, "RDLAB_DIR": str(LAB_DIR)}
    up = subprocess.Popen(["bash", str(SCRIPT), "up"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                          start_new_session=True)
    pidfiles = [LAB_DIR / f"n{n}" / "docker.pid" for n in NODES]
    old = {p: _read(p) for p in pidfiles}  # the session's lab, which `up` tears down first
    try:
        deadline = time.monotonic() + 120
        while not all(_read(p) not in ("", old[p]) for p in pidfiles):
            assert up.poll() is None, up.stderr.read().decode() if up.stderr else up.returncode
            assert time.monotonic() < deadline, "the dockerds did not start"
            time.sleep(0.1)
    finally:
        os.killpg(up.pid, signal.SIGKILL)
        up.wait()
    for pidfile in pidfiles:
        try:
            os.kill(int(pidfile.read_text()), signal.SIGKILL)
        except (ProcessLookupError, ValueError):
            pass
    assert _lab_leftovers(), "the crash left nothing: the test proves nothing"
    down = subprocess.run(["bash", str(SCRIPT), "down"], env=env, capture_output=True, text=True, timeout=120)
    assert down.returncode == 0, down.stderr
    assert _lab_leftovers() == []
    swarm_lab.up()
    assert "Ready" in swarm_lab.docker(1, "node", "ls")
