"""SwarmRuntime (#17): the pure mapping of a ContainerSpec to a service and of tasks to a container
state (always run), and, on the three-node lab (RUNNERD_TEST_SWARM=1), that every limit the spec
asks for holds inside the container on the node it is pinned to."""

from __future__ import annotations

import uuid

import pytest

from runnerd.containers.runtime import LABEL_JOB, LABEL_STEP, ContainerSpec, Mount
from runnerd.containers.swarm_spec import (
    LABEL_EXIT,
    LABEL_STOPPED,
    PROBABLY_OOM,
    job_network,
    service_state,
    tmpfs_mount,
    to_service,
)
from runnerd.domain import ExitResult
from runnerd.errors import ContainerRefused
from tests.helpers import BUSYBOX_IMAGE, PY_IMAGE
from tests.swarm_lab import skip_reason

IMAGE_ID = "sha256:" + "ab" * 32


def spec(**kw) -> ContainerSpec:
    base = dict(name="runnerd-j1-algorithm", image=BUSYBOX_IMAGE, command=["sh", "-c", "true"],
                labels={LABEL_JOB: "j1", LABEL_STEP: "algorithm"}, user="65532:65532")
    return ContainerSpec(**{**base, **kw})


def test_a_spec_becomes_a_hardened_service_pinned_to_its_node():
    body = to_service(spec(entrypoint=["python3"], command=["/data/x.py"], env={"A": "1"}, memory_bytes=2**30,
                           nano_cpus=1_500_000_000, pids_limit=64, nofile=1024, shm_bytes=2**20, cap_add=("CHOWN",),
                           tmpfs={"/tmp": "rw,nosuid,nodev,size=16m,mode=1777"}, log_max_bytes=1000),
                      IMAGE_ID, "node-x", "net-1", {"l": "v"})
    c = body["ContainerSpec"]
    assert c["Image"] == IMAGE_ID  # by id: a worker never asks a registry for a tag
    assert (c["Command"], c["Args"], c["Env"], c["User"]) == (["python3"], ["/data/x.py"], ["A=1"], "65532:65532")
    assert c["ReadOnly"] is True and c["Init"] is True
    assert c["CapabilityDrop"] == ["ALL"] and c["CapabilityAdd"] == ["CHOWN"]
    assert c["Ulimits"] == [{"Name": "nofile", "Soft": 1024, "Hard": 1024}]
    assert {"Type": "tmpfs", "Target": "/tmp", "TmpfsOptions": {"Mode": 0o1777, "SizeBytes": 16 * 2**20}} in c["Mounts"]
    assert {"Type": "tmpfs", "Target": "/dev/shm", "TmpfsOptions": {"SizeBytes": 2**20}} in c["Mounts"]
    assert body["Resources"] == {"Limits": {"MemoryBytes": 2**30, "NanoCPUs": 1_500_000_000, "Pids": 64}}
    assert body["RestartPolicy"] == {"Condition": "none"}
    assert body["Placement"] == {"Constraints": ["node.id==node-x"]}
    assert body["Networks"] == [{"Target": "net-1"}]
    assert body["LogDriver"]["Options"] == {"max-size": "1000", "max-file": "1"}
    assert job_network(spec()) == "runnerd-job-j1"


@pytest.mark.parametrize("field, value, words", [
    ("cpuset", "0,1", "a cpuset"),
    ("gpu_device_ids", ("GPU-1",), "GPU devices"),
    ("runtime", "runsc", "an OCI runtime"),
    # no worker may mount a path of runnerd's host: a shared disk on one machine would hide every
    # data-movement bug, and a real worker does not have runnerd's files at all
    ("mounts", (Mount("/var/lib/runnerd/jobs/j1/fs", "/data"),), "host bind mounts"),
])
def test_what_swarm_cannot_do_is_refused_not_dropped(field, value, words):
    with pytest.raises(ContainerRefused, match=words):
        to_service(spec(**{field: value}), IMAGE_ID, "n", "net", {})


def test_tmpfs_options_keep_size_and_mode():
    assert tmpfs_mount("/x", "rw,size=2g") == {"Type": "tmpfs", "Target": "/x",
                                               "TmpfsOptions": {"Mode": 0o1777, "SizeBytes": 2 * 2**30}}
    assert tmpfs_mount("/y", "rw,mode=0700")["TmpfsOptions"] == {"Mode": 0o700}


def test_a_log_read_again_appends_only_what_is_new_and_keeps_the_cap(tmp_path):
    """How follow works on Swarm (a service's log stream does not end with its task): each read
    skips the bytes copied before; the cap counts the whole log."""
    from runnerd.containers.logcopy import copy_capped

    path = tmp_path / "algorithm.log"
    lines = [b"0123456789\n"] * 10
    first = copy_capped(iter(lines[:3]), str(path), 50)
    assert first == 33
    assert copy_capped(iter(lines), str(path), 50, skip=first) == 17
    assert path.read_bytes() == b"0123456789\n" * 4 + b"012345\n[runnerd: log cut at 50 bytes]\n"


def service(completions: int = 1, **labels: str) -> dict:
    return {"ID": "svc1", "Spec": {"Labels": labels, "Mode": {"ReplicatedJob": {"TotalCompletions": completions}}}}


def task(state: str, iteration: int = 1, node: str = "n2", code: int | None = None, err: str | None = None) -> dict:
    status: dict = {"State": state}
    if code is not None:
        status["ContainerStatus"] = {"ExitCode": code}
    if err:
        status["Err"] = err
    return {"NodeID": node, "JobIteration": {"Index": iteration}, "Status": status}


def test_task_states_map_to_container_states():
    assert service_state(service(0), []).status == "created"
    assert service_state(service(1), []).status == "running"  # started, not yet scheduled
    assert service_state(service(1), [task("preparing")]).status == "running"
    assert service_state(service(1), [task("complete", code=0)]).exit == ExitResult(0)
    failed = service_state(service(1), [task("failed", code=3, err="task: non-zero exit (3)")])
    assert failed.status == "exited" and failed.exit == ExitResult(3, False, None)
    # stopped by runnerd: the first iteration's task ended at SIGTERM; the pending one goes nowhere
    stopped = service_state(service(1, **{LABEL_STOPPED: "1"}),
                     [task("shutdown", 1, code=143), task("pending", 2, node="")])
    assert stopped.exit == ExitResult(143)
    # Swarm deletes the stopped task soon after: the exit code stop wrote on the service remains
    gone = service_state(service(1, **{LABEL_STOPPED: "1", LABEL_EXIT: "143"}), [task("pending", 2, node="")])
    assert gone.status == "exited" and gone.exit == ExitResult(143)
    # stopped while it was still being prepared: its "shutdown" with exit code 0 is no success
    early = service_state(service(1, **{LABEL_STOPPED: "1", LABEL_EXIT: "unstarted"}), [task("shutdown", 1, code=0)])
    assert early.exit.exit_code == 137 and "before it started" in early.exit.error
    never = service_state(service(1, **{LABEL_STOPPED: "1"}), [task("pending", 2, node="")])
    assert never.exit.exit_code == 137 and "before its exit was seen" in never.exit.error
    rejected = service_state(service(1), [task("rejected", err="No such image: x")])
    assert rejected.status == "dead" and rejected.exit.error == "No such image: x"
    # Swarm cannot tell an OOM kill: a SIGKILL runnerd did not send says "probably", never more
    killed = service_state(service(1), [task("failed", code=137, err="task: non-zero exit (137)")]).exit
    assert killed == ExitResult(137, False, PROBABLY_OOM)
    assert service_state(service(1, **{LABEL_STOPPED: "1"}), [task("shutdown", code=137)]).exit == ExitResult(137)


@pytest.mark.docker
@pytest.mark.skipif(skip_reason() is not None, reason=skip_reason() or "")
async def test_every_limit_of_the_spec_holds_on_the_node(swarm_lab, tmp_path):
    from runnerd.containers.swarm_runtime import SwarmRuntime

    lab = swarm_lab
    tag = uuid.uuid4().hex[:8]
    runtime = SwarmRuntime(node=lab.node_id(3), base_url=lab.url(1), timeout=30, instance=f"limits-{tag}")
    probe = "; ".join([
        "echo uid=$(id -u):$(id -g) nofile=$(ulimit -n)",
        "echo pids=$(cat /sys/fs/cgroup/pids/pids.max) mem=$(cat /sys/fs/cgroup/memory/memory.limit_in_bytes)",
        "echo quota=$(cat /sys/fs/cgroup/cpu/cpu.cfs_quota_us)/$(cat /sys/fs/cgroup/cpu/cpu.cfs_period_us)",
        "sed -n 's/^\\(CapEff\\|NoNewPrivs\\):[[:space:]]*/\\1=/p' /proc/self/status",
        "touch /rootfs-file 2>/dev/null && echo root=writable || echo root=read-only",
        "echo tmp=$(df -k /tmp | awk 'NR==2 {print $2}')",
    ])
    try:
        nodes = await runtime.nodes()
        assert sorted(n["hostname"] for n in nodes) == ["rdlab-n1", "rdlab-n2", "rdlab-n3"]
        cid = await runtime.create(spec(name=f"runnerd-limits-{tag}", command=["sh", "-c", probe],
                                        labels={LABEL_JOB: f"limits-{tag}", LABEL_STEP: "algorithm"},
                                        memory_bytes=64 * 2**20, nano_cpus=500_000_000, pids_limit=32, nofile=256,
                                        tmpfs={"/tmp": "rw,size=8m,mode=1777"}))
        await runtime.start(cid)
        assert await runtime.wait(cid, timeout=90) == ExitResult(0)
        log = tmp_path / "limits.log"
        await runtime.copy_logs(cid, str(log), 10_000, follow=False)
        out = log.read_text().split()
        assert {"uid=65532:65532", "nofile=256", "pids=32", f"mem={64 * 2**20}",
                "quota=50000/100000", "CapEff=0000000000000000", "NoNewPrivs=1", "root=read-only",
                "tmp=8192"} <= set(out), out
        assert lab.docker(1, "service", "ps", "--format", "{{.Node}}", cid).split() == ["rdlab-n3"]
        (owned,) = await runtime.list_owned()
        assert owned.id == cid and owned.status == "exited" and owned.job_id == f"limits-{tag}"
        await runtime.remove(cid)
        assert await runtime.inspect(cid) is None and await runtime.list_owned() == []
    finally:
        for c in await runtime.list_owned():
            await runtime.remove(c.id)
        await runtime.prune_networks()
        await runtime.close()


@pytest.mark.docker
@pytest.mark.skipif(skip_reason() is not None, reason=skip_reason() or "")
async def test_a_fresh_runtime_reattaches_and_an_oom_kill_is_reported_as_probable(swarm_lab):
    """What a restarted runnerd relies on: the services live in the managers' store, so a new
    runtime (same instance) lists them, and can wait on and stop what the old one started. And the
    OOM evidence: a memory hog ends at 137 with the "probably out of memory" text, no flag."""
    from runnerd.containers.swarm_runtime import SwarmRuntime

    lab = swarm_lab
    tag = uuid.uuid4().hex[:8]
    make = lambda: SwarmRuntime(node=lab.node_id(2), base_url=lab.url(1), timeout=30,  # noqa: E731
                                instance=f"reattach-{tag}")
    first, second = make(), make()
    labels = {LABEL_JOB: f"reattach-{tag}", LABEL_STEP: "algorithm"}
    try:
        sleeper = await first.create(spec(name=f"runnerd-sleep-{tag}", command=["sh", "-c", "sleep 60"], labels=labels))
        await first.start(sleeper)
        hog = await first.create(spec(name=f"runnerd-hog-{tag}", image=PY_IMAGE, labels=labels,
                                      command=["python3", "-c", "b = bytearray(512 * 1024 * 1024)"],
                                      memory_bytes=64 * 2**20))
        await first.start(hog)
        await first.close()  # runnerd goes away; the services do not
        owned = {c.id: c for c in await second.list_owned()}
        assert set(owned) == {sleeper, hog}
        assert await second.wait(hog, timeout=90) == ExitResult(137, False, PROBABLY_OOM)
        assert await second.wait(sleeper, timeout=0.5) is None
        assert (await second.inspect(sleeper)).status == "running"
        await second.stop(sleeper, grace=1)
        result = await second.wait(sleeper, timeout=60)
        assert result is not None and result.exit_code in (137, 143) and result.error is None  # runnerd's own stop
    finally:
        for c in await second.list_owned():
            await second.remove(c.id)
        await second.prune_networks()
        await second.close()


@pytest.mark.docker
@pytest.mark.skipif(skip_reason() is not None, reason=skip_reason() or "")
async def test_a_task_on_a_lost_node_is_gone_and_the_other_nodes_go_on(swarm_lab):
    """A worker's dockerd killed mid-job: Swarm keeps reporting the task "running" (jobs are not
    rescheduled), so the runtime reads the node's state and reports the task gone once the manager
    marks the node down (Swarm's heartbeat, about 10 s on the lab); a task on another node runs to
    its end. Node 3 is restarted afterwards and rejoins."""
    import os
    import signal
    import time

    from runnerd.containers.swarm_runtime import SwarmRuntime
    from runnerd.errors import ContainerGone
    from tests.swarm_lab import LAB_DIR

    lab = swarm_lab
    tag = uuid.uuid4().hex[:8]
    runtime = SwarmRuntime(node=lab.node_id(2), base_url=lab.url(1), timeout=30, instance=f"lost-{tag}")
    labels = {LABEL_JOB: f"lost-{tag}", LABEL_STEP: "algorithm"}
    try:
        doomed = await runtime.create(spec(name=f"runnerd-doomed-{tag}", command=["sh", "-c", "sleep 120"],
                                           labels=labels, node=lab.node_id(3)))
        fine = await runtime.create(spec(name=f"runnerd-fine-{tag}", command=["sh", "-c", "sleep 20; echo done"],
                                         labels={**labels, LABEL_JOB: f"fine-{tag}"}))
        for cid in (doomed, fine):
            await runtime.start(cid)
        while lab.docker(1, "service", "ps", "--format", "{{.CurrentState}}", doomed).split()[:1] != ["Running"]:
            time.sleep(0.2)
        os.kill(int((LAB_DIR / "n3" / "docker.pid").read_text()), signal.SIGKILL)
        killed = time.monotonic()
        with pytest.raises(ContainerGone):
            await runtime.wait(doomed, timeout=120)
        print(f"lost node noticed {time.monotonic() - killed:.1f}s after the kill")
        assert (await runtime.inspect(doomed)).exit.error.startswith("the node it ran on is down: rdlab-n3")
        assert await runtime.wait(fine, timeout=120) == ExitResult(0)
        # removed while its node is lost, the service is only moved nowhere (its task may still run
        # there): it stays until the node is back, as the sweeper finds it
        await runtime.remove(doomed)
        assert await runtime.inspect(doomed) is not None
    finally:
        lab.restart(3)
        for c in await runtime.list_owned():
            await runtime.remove(c.id)
        assert await runtime.list_owned() == []
        await runtime.prune_networks()
        await runtime.close()
    assert lab.docker(1, "node", "inspect", "--format", "{{.Status.State}}", "rdlab-n3").strip() == "ready"


@pytest.mark.docker
@pytest.mark.skipif(skip_reason() is not None, reason=skip_reason() or "")
async def test_a_node_not_labelled_swap_free_gets_no_step(swarm_lab):
    """no_swap on Swarm: services cannot set swap before API 1.52, so a node must be declared
    swap-free (label runnerd.swap=off); a step for any other node is refused, never weakened."""
    from runnerd.containers.swarm_runtime import SwarmRuntime

    lab = swarm_lab
    tag = uuid.uuid4().hex[:8]
    runtime = SwarmRuntime(node=lab.node_id(3), base_url=lab.url(1), timeout=30, instance=f"swap-{tag}")
    lab.docker(1, "node", "update", "--label-rm", "runnerd.swap", "rdlab-n3")
    try:
        with pytest.raises(ContainerRefused, match="not labelled runnerd.swap=off"):
            await runtime.create(spec(name=f"runnerd-swap-{tag}", labels={LABEL_JOB: f"swap-{tag}"}))
        assert await runtime.list_owned() == []
    finally:
        lab.docker(1, "node", "update", "--label-add", "runnerd.swap=off", "rdlab-n3")
        await runtime.prune_networks()
        await runtime.close()


def test_a_manager_named_by_swarm_manager_gets_the_environment_s_tls(tmp_path):
    """swarmManager: tcp://manager:2376 with DOCKER_TLS_VERIFY and DOCKER_CERT_PATH set talks TLS
    with the client certificate, as DOCKER_HOST would (a bare base_url ignored both)."""
    from runnerd.containers.docker_runtime import client_options

    for name in ("ca.pem", "cert.pem", "key.pem"):
        (tmp_path / name).write_text("-----BEGIN X-----\n")
    env = {"DOCKER_TLS_VERIFY": "1", "DOCKER_CERT_PATH": str(tmp_path), "DOCKER_HOST": "unix:///elsewhere.sock"}
    opts = client_options("tcp://manager:2376", env)
    import docker

    assert docker.APIClient(version="1.41", **opts).base_url == "https://manager:2376"  # builds, connects to nothing
    tls = opts["tls"]
    assert tls.verify and tls.ca_cert == str(tmp_path / "ca.pem")
    assert tls.cert == (str(tmp_path / "cert.pem"), str(tmp_path / "key.pem"))
    assert client_options("unix:///tmp/rdlab/n1/docker.sock", {})["base_url"] == "unix:///tmp/rdlab/n1/docker.sock"
    assert client_options(None, {"DOCKER_HOST": "unix:///x.sock"})["base_url"] == "unix:///x.sock"
    assert "tls" not in client_options("tcp://manager:2375", {})  # no TLS asked for: none invented
