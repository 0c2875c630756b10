"""One contract for the ContainerRuntime protocol, run against the in-memory FakeRuntime, the real
DockerRuntime and, with RUNNERD_TEST_SWARM=1, the SwarmRuntime on the three-node lab (#17): whatever the
engine relies on, all must do. A test that needs a capability some backend lacks declares it
(`rt.require`) and is skipped there with the backend's reason, so the gaps show in the summary.
Every container (or service) a test creates is removed at the end (unique names and a per-test label)."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from runnerd.containers.capabilities import LOCAL_DOCKER, Capability
from runnerd.containers.runtime import LABEL_INSTANCE, LABEL_JOB, LABEL_STEP, ContainerSpec
from runnerd.domain import ExitResult
from runnerd.errors import ContainerGone, ImageMissing
from tests.fakes import FakeRuntime, Outcome
from tests.helpers import BUSYBOX_IMAGE, PY_IMAGE
from tests.swarm_lab import skip_reason as swarm_skip_reason

MISSING_IMAGE = "runnerd-test-no-such-image:missing"
CUT_MARKER = "[runnerd: log cut at {} bytes]"


@dataclass(frozen=True)
class Program:
    """The same behaviour, as a busybox command for Docker and as a scripted outcome for the fake."""

    argv: list[str]
    outcome: Outcome
    key: str  # a piece of the command that identifies it (how the fake recognises it)


EXIT3 = Program(["sh", "-c", "echo hi; echo oops 1>&2; exit 3"], Outcome(exit_code=3, logs="hi\noops\n"), "exit 3")
SLEEP = Program(["sh", "-c", "sleep 30"], Outcome(duration=None), "sleep 30")
CHATTY = Program(["sh", "-c", "for i in 1 2 3 4 5 6 7 8 9 10; do echo 0123456789; done"],
                 Outcome(logs="0123456789\n" * 10), "for i in")
SLOW_ECHO = Program(["sh", "-c", "echo start; sleep 1; echo end"], Outcome(logs="start\nend\n", duration=0.3),
                    "echo start")
PROGRAMS = (EXIT3, SLEEP, CHATTY, SLOW_ECHO)


@dataclass
class Harness:
    kind: str
    runtime: object
    tag: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    ids: list[str] = field(default_factory=list)
    lab: object = None  # the Swarm lab, for the swarm kind

    def require(self, capability: Capability, fake: bool = True) -> None:
        """Skip, with the backend's own reason, where the backend lacks what this test needs
        (`fake=False`: the fake cannot show it at all, e.g. real network interfaces)."""
        if self.kind == "fake" and not fake:
            pytest.skip(f"fake lacks {capability.value}: it runs no process")
        caps = getattr(self.runtime, "capabilities", LOCAL_DOCKER)
        if capability not in caps:
            pytest.skip(f"{caps.backend} lacks {capability.value}: {caps.why_not[capability]}")

    def spec(self, program: Program, suffix: str = "c", *, labelled: bool = True,
             image: str = BUSYBOX_IMAGE) -> ContainerSpec:
        labels = {"runnerd.contract": self.tag}
        if labelled:
            labels.update({LABEL_JOB: f"contract-{self.tag}", LABEL_STEP: "algorithm"})
        return ContainerSpec(name=f"runnerd-contract-{self.tag}-{suffix}", image=image, command=list(program.argv),
                             labels=labels, user="1000:1000")

    async def create(self, spec: ContainerSpec) -> str:
        cid = await self.runtime.create(spec)
        self.ids.append(cid)
        return cid

    async def run(self, program: Program, suffix: str = "c") -> str:
        cid = await self.create(self.spec(program, suffix))
        await self.runtime.start(cid)
        return cid

    async def cleanup(self) -> None:
        for cid in self.ids:
            await self.runtime.remove(cid)
        if self.kind == "swarm":
            left = self.lab.docker(1, "service", "ls", "-q", "--filter", f"label=runnerd.contract={self.tag}").split()
            if left:
                self.lab.docker(1, "service", "rm", *left, check=False)
                pytest.fail(f"{len(left)} contract service(s) survived remove()")
            await self.runtime.prune_networks()
        elif self.kind == "docker":
            out = subprocess.run(["docker", "ps", "-aq", "--filter", f"label=runnerd.contract={self.tag}"],
                                 capture_output=True, text=True)
            left = out.stdout.split()
            if left:
                subprocess.run(["docker", "rm", "-f", *left], capture_output=True)
                pytest.fail(f"{len(left)} contract container(s) survived remove()")
        else:
            assert not [c for c in self.runtime.containers.values()
                        if c.spec.labels.get("runnerd.contract") == self.tag]


def make_runtime(kind: str, instance: str, lab=None):
    if kind == "fake":
        runtime = FakeRuntime(images={BUSYBOX_IMAGE}, instance=instance)
        for program in PROGRAMS:
            runtime.script(program.outcome, command=program.key)
        return runtime
    if kind == "swarm":
        from runnerd.containers.swarm_runtime import SwarmRuntime

        # every step on node 2: a worker, not the manager the runtime talks to
        return SwarmRuntime(node=lab.node_id(2), base_url=lab.url(1), timeout=30, instance=instance)
    from runnerd.containers.docker_runtime import DockerRuntime

    return DockerRuntime(timeout=30, instance=instance)


@pytest.fixture(params=[pytest.param("fake", id="fake"),
                        pytest.param("docker", id="docker", marks=pytest.mark.docker),
                        pytest.param("swarm", id="swarm", marks=[pytest.mark.docker, pytest.mark.skipif(
                            swarm_skip_reason() is not None, reason=swarm_skip_reason() or "")])])
async def rt(request):
    tag = uuid.uuid4().hex[:12]
    lab = request.getfixturevalue("swarm_lab") if request.param == "swarm" else None
    # an instance of its own, as each daemon has: list_owned then sees this test's containers only
    runtime = make_runtime(request.param, f"contract-{tag}", lab)
    harness = Harness(request.param, runtime, tag, lab=lab)
    try:
        yield harness
    finally:
        try:
            await harness.cleanup()
        finally:
            await runtime.close()


async def test_ping_answers_a_version(rt):
    version = await rt.runtime.ping()
    assert isinstance(version, str) and version


async def test_create_returns_an_id_and_the_same_name_replaces_the_first(rt):
    first = await rt.create(rt.spec(EXIT3, "same"))
    assert isinstance(first, str) and len(first) >= 12
    state = await rt.runtime.inspect(first)
    assert state is not None and state.status == "created" and state.exit is None
    second = await rt.create(rt.spec(EXIT3, "same"))
    assert second != first
    assert await rt.runtime.inspect(first) is None  # replaced, not left behind
    assert (await rt.runtime.inspect(second)).status == "created"


async def test_start_and_wait_return_the_exit_code(rt):
    cid = await rt.run(EXIT3)
    result = await rt.runtime.wait(cid)
    assert isinstance(result, ExitResult)
    assert result.exit_code == 3 and result.oom_killed is False
    # waiting again on an exited container answers at once, the same
    assert await rt.runtime.wait(cid, timeout=10) == result


async def test_wait_with_timeout_returns_none_while_running_and_stop_ends_it(rt):
    cid = await rt.run(SLEEP)
    assert await rt.runtime.wait(cid, timeout=0.5) is None
    state = await rt.runtime.inspect(cid)
    assert state is not None and state.status == "running" and state.exit is None
    await rt.runtime.stop(cid, grace=1)
    result = await rt.runtime.wait(cid, timeout=30)
    assert result is not None and result.exit_code in (137, 143) and not result.oom_killed
    state = await rt.runtime.inspect(cid)
    assert state.status == "exited" and state.exit == result


async def test_inspect_none_for_missing_and_exit_once_exited(rt):
    assert await rt.runtime.inspect("0" * 64) is None
    cid = await rt.run(EXIT3)
    await rt.runtime.wait(cid)
    state = await rt.runtime.inspect(cid)
    assert state is not None and state.status == "exited"
    assert state.exit is not None and state.exit.exit_code == 3
    assert cid.startswith(state.id) or state.id.startswith(cid)
    await rt.runtime.remove(cid)
    assert await rt.runtime.inspect(cid) is None


async def test_stop_and_remove_are_idempotent_on_missing_containers(rt):
    missing = "f" * 64
    await rt.runtime.stop(missing, grace=0)
    await rt.runtime.remove(missing)
    cid = await rt.run(EXIT3)
    await rt.runtime.wait(cid)
    await rt.runtime.stop(cid, grace=0)  # already exited: nothing to do
    assert (await rt.runtime.inspect(cid)).exit.exit_code == 3  # stop did not change how it ended
    await rt.runtime.remove(cid)
    await rt.runtime.remove(cid)
    await rt.runtime.stop(cid, grace=0)
    assert await rt.runtime.inspect(cid) is None


async def test_a_missing_container_is_gone_for_start_wait_and_logs(rt, tmp_path):
    missing = "e" * 64
    with pytest.raises(ContainerGone):
        await rt.runtime.start(missing)
    with pytest.raises(ContainerGone):
        await rt.runtime.wait(missing, timeout=5)
    with pytest.raises(ContainerGone):
        await rt.runtime.copy_logs(missing, str(tmp_path / "log"), 1000, follow=False)


async def test_copy_logs_writes_stdout_and_stderr(rt, tmp_path):
    cid = await rt.run(EXIT3)
    await rt.runtime.wait(cid)
    path = tmp_path / "algorithm.log"
    path.write_bytes(b"earlier\n")  # copy_logs appends
    written = await rt.runtime.copy_logs(cid, str(path), 10_000, follow=False)
    text = path.read_text()
    assert text.startswith("earlier\n")
    assert "hi\n" in text and "oops\n" in text
    assert written == len("hi\noops\n") == path.stat().st_size - len("earlier\n")
    assert "log cut" not in text


async def test_copy_logs_honours_the_byte_limit_with_a_cut_marker(rt, tmp_path):
    cid = await rt.run(CHATTY)
    await rt.runtime.wait(cid)
    path = tmp_path / "algorithm.log"
    written = await rt.runtime.copy_logs(cid, str(path), 15, follow=False)
    assert written == 15
    text = path.read_text()
    assert text.startswith("0123456789\n0123")
    assert CUT_MARKER.format(15) in text
    assert text.count("0123456789") == 1 and len(text) < 15 + 60
    # a limit that is not reached leaves no marker
    full = tmp_path / "full.log"
    assert await rt.runtime.copy_logs(cid, str(full), 110, follow=False) == 110
    assert full.read_text() == "0123456789\n" * 10


async def test_copy_logs_follow_returns_when_the_container_exits(rt, tmp_path):
    cid = await rt.run(SLOW_ECHO)
    path = tmp_path / "follow.log"
    written = await rt.runtime.copy_logs(cid, str(path), 10_000, follow=True)
    assert path.read_text() == "start\nend\n" and written == len("start\nend\n")
    result = await rt.runtime.wait(cid, timeout=30)
    assert result is not None and result.exit_code == 0


async def test_copy_logs_follow_copies_while_the_container_runs(rt, tmp_path):
    """A live log (computeLogs follow) needs the lines as they come, not at the end. No timing: the
    program prints, then sleeps until it is stopped."""
    import asyncio

    if rt.kind == "fake":
        pytest.skip("the fake writes a container's logs when it ends")
    cid = await rt.run(Program(["sh", "-c", "echo start; sleep 60; echo end"], Outcome(), "echo start; sleep 60"))
    path = tmp_path / "live.log"
    follow = asyncio.create_task(rt.runtime.copy_logs(cid, str(path), 10_000, follow=True))
    try:
        for _ in range(600):  # a hang guard only
            if path.exists() and "start" in path.read_text():
                break
            await asyncio.sleep(0.1)
        assert path.read_text() == "start\n" and not follow.done()
        await rt.runtime.stop(cid, grace=1)
        assert await asyncio.wait_for(follow, 120) == len("start\n")
        assert path.read_text() == "start\n"
    finally:
        follow.cancel()


async def test_list_owned_lists_only_containers_with_the_job_label(rt):
    owned_id = await rt.create(rt.spec(EXIT3, "owned"))
    other_id = await rt.create(rt.spec(EXIT3, "foreign", labelled=False))
    owned = await rt.runtime.list_owned()
    ids = {c.id for c in owned}
    assert owned_id in ids
    assert other_id not in ids
    (mine,) = [c for c in owned if c.id == owned_id]
    assert mine.job_id == f"contract-{rt.tag}" and mine.step == "algorithm"
    assert mine.name == f"runnerd-contract-{rt.tag}-owned"
    assert mine.status == "created" and mine.created > 0
    assert {c.job_id for c in owned} == {f"contract-{rt.tag}"}  # nothing of other daemons
    await rt.runtime.remove(owned_id)
    assert owned_id not in {c.id for c in await rt.runtime.list_owned()}


async def test_list_owned_is_scoped_to_the_runtimes_instance(rt):
    """Two daemons sharing one Docker never list (and so never reap) each other's containers."""
    mine = await rt.create(rt.spec(EXIT3, "mine"))
    if rt.kind == "fake":
        other = rt.runtime.sibling(f"other-{rt.tag}")
        unscoped = rt.runtime.sibling("")
    else:
        other = make_runtime(rt.kind, f"other-{rt.tag}", rt.lab)
        unscoped = make_runtime(rt.kind, "", rt.lab)
    try:
        theirs = await other.create(rt.spec(EXIT3, "theirs"))
        rt.ids.append(theirs)
        assert mine in {c.id for c in await rt.runtime.list_owned()}
        assert theirs not in {c.id for c in await rt.runtime.list_owned()}
        assert {c.id for c in await other.list_owned()} >= {theirs}
        assert mine not in {c.id for c in await other.list_owned()}
        # a runtime without an instance lists every runnerd container
        assert {mine, theirs} <= {c.id for c in await unscoped.list_owned()}
    finally:
        if rt.kind != "fake":
            await other.close()
            await unscoped.close()


async def test_the_instance_label_is_added_to_every_container(rt):
    cid = await rt.create(rt.spec(EXIT3, "labelled"))
    if rt.kind == "fake":
        labels = rt.runtime.containers[cid].spec.labels
    elif rt.kind == "swarm":
        labels = json.loads(rt.lab.docker(1, "service", "inspect", "--format", "{{json .Spec.Labels}}", cid))
    else:
        out = subprocess.run(["docker", "inspect", "--format", "{{json .Config.Labels}}", cid],
                             capture_output=True, text=True, check=True)
        labels = json.loads(out.stdout)
    assert labels[LABEL_INSTANCE] == f"contract-{rt.tag}"
    assert labels[LABEL_JOB] == f"contract-{rt.tag}" and labels[LABEL_STEP] == "algorithm"


async def test_a_missing_image_raises_image_missing(rt):
    assert not await rt.runtime.has_image(MISSING_IMAGE)
    assert await rt.runtime.has_image(BUSYBOX_IMAGE)
    with pytest.raises(ImageMissing):
        await rt.runtime.image_digests(MISSING_IMAGE)
    image_id, _ = await rt.runtime.image_digests(BUSYBOX_IMAGE)
    assert image_id.startswith("sha256:")
    if not hasattr(rt.runtime, "containers"):  # the real one: Docker's own id
        out = subprocess.run(["docker", "image", "inspect", "--format", "{{.Id}}", BUSYBOX_IMAGE],
                             capture_output=True, text=True, check=True)
        assert image_id == out.stdout.strip()
    with pytest.raises(ImageMissing):
        await rt.create(rt.spec(EXIT3, "noimage", image=MISSING_IMAGE))
    owned = await rt.runtime.list_owned()
    assert not [c for c in owned if c.name == f"runnerd-contract-{rt.tag}-noimage"]


async def test_an_algorithm_without_network_reaches_no_address(rt, tmp_path):
    """no_route_out: no default route, and a connect to this machine's own addresses fails (the
    docker bridge's on one host, the lab's host and manager addresses on the swarm)."""
    rt.require(Capability.NO_ROUTE_OUT, fake=False)
    targets = [rt.lab.host_address, rt.lab.address(1)] if rt.kind == "swarm" else ["172.17.0.1", "127.0.0.1"]
    probe = Program(["sh", "-c", "ip route | sed 's/^/route=/'; " + "; ".join(
        f"nc -w 2 {t} 2375 </dev/null >/dev/null 2>&1; echo connect={t}:$?" for t in targets)],
        Outcome(), "ip route")
    cid = await rt.run(probe)
    assert (await rt.runtime.wait(cid, timeout=60)).exit_code == 0
    path = tmp_path / "probe.log"
    await rt.runtime.copy_logs(cid, str(path), 10_000, follow=False)
    lines = path.read_text().splitlines()
    assert not [line for line in lines if line.startswith("route=default")], lines
    connects = [line for line in lines if line.startswith("connect=")]
    assert len(connects) == len(targets) and all(not line.endswith(":0") for line in connects), lines


async def test_network_none_leaves_only_loopback(rt, tmp_path):
    rt.require(Capability.NETWORK_NONE, fake=False)
    cid = await rt.run(Program(["sh", "-c", "ls /sys/class/net"], Outcome(), "ls /sys"))
    await rt.runtime.wait(cid, timeout=60)
    path = tmp_path / "net.log"
    await rt.runtime.copy_logs(cid, str(path), 10_000, follow=False)
    assert path.read_text().split() == ["lo"]


async def test_an_oom_kill_is_reported_as_one(rt):
    rt.require(Capability.OOM_FLAG, fake=False)
    greedy = Program(["python3", "-c", "b = bytearray(512 * 1024 * 1024); print(len(b))"], Outcome(), "bytearray")
    spec = dataclasses.replace(rt.spec(greedy, image=PY_IMAGE), memory_bytes=64 * 1024 * 1024)
    cid = await rt.create(spec)
    await rt.runtime.start(cid)
    result = await rt.runtime.wait(cid, timeout=60)
    assert result is not None and result.exit_code == 137 and result.oom_killed is True


@pytest.mark.docker
async def test_docker_refusing_a_spec_is_not_reported_as_an_outage():
    from runnerd.containers.docker_runtime import DockerRuntime
    from runnerd.errors import ContainerRefused, RuntimeUnavailable

    tag = uuid.uuid4().hex[:12]
    harness = Harness("docker", DockerRuntime(timeout=30, instance=f"contract-{tag}"), tag)
    spec = harness.spec(EXIT3, "tiny")
    tiny = dataclasses.replace(spec, memory_bytes=4 * 1024 * 1024)  # Docker's minimum is 6 MB
    try:
        with pytest.raises(ContainerRefused) as info:
            await harness.create(tiny)
        assert not isinstance(info.value, RuntimeUnavailable), info.value
    finally:
        await harness.cleanup()
        await harness.runtime.close()


def test_fake_runtime_implements_every_protocol_method():
    from runnerd.containers.runtime import ContainerRuntime

    wanted = {name for name in vars(ContainerRuntime) if not name.startswith("_")}
    assert wanted <= set(dir(FakeRuntime))
    assert Path(__file__).with_name("fakes.py").is_file()


# ------------------------------------------------------------------------------ the fake's fault switches


async def test_fake_fail_raises_runtime_unavailable_n_times():
    from runnerd.errors import RuntimeUnavailable

    fake = FakeRuntime(images={BUSYBOX_IMAGE})
    spec = Harness("fake", fake).spec(EXIT3)
    fake.fail("create", 2)
    for _ in range(2):
        with pytest.raises(RuntimeUnavailable):
            await fake.create(spec)
    assert fake.containers == {}
    cid = await fake.create(spec)
    fake.fail("create", 1, after=True)  # Docker made it, the answer was lost
    with pytest.raises(RuntimeUnavailable):
        await fake.create(spec)
    assert cid not in fake.containers and len(fake.containers) == 1  # the lost one replaced the first
    fake.fail("*", 1)
    with pytest.raises(RuntimeUnavailable):
        await fake.ping()
    assert await fake.ping()
    assert fake.calls["create"] == 4 and fake.calls["ping"] == 2


async def test_fake_outage_breaks_waits_in_progress_and_every_call():
    import asyncio

    from runnerd.errors import RuntimeUnavailable

    fake = FakeRuntime(images={BUSYBOX_IMAGE}, default=Outcome(duration=None))
    cid = await fake.create(Harness("fake", fake).spec(SLEEP))
    await fake.start(cid)
    waiter = asyncio.create_task(fake.wait(cid))
    await asyncio.sleep(0)
    fake.go_down()
    with pytest.raises(RuntimeUnavailable):
        await waiter
    with pytest.raises(RuntimeUnavailable):
        await fake.inspect(cid)
    fake.up()
    assert (await fake.inspect(cid)).status == "running"  # the container itself kept running
    fake.vanish(cid)
    assert await fake.inspect(cid) is None and fake.vanished == [cid] and fake.removed == []


@pytest.mark.docker
async def test_a_stalled_registry_ends_a_pull_within_its_timeout():
    """docker-py pulls without any timeout; runnerd's pull gives up when the registry goes silent.
    The 'registry' is a listener on this machine that accepts and never answers."""
    import asyncio
    import socket

    from runnerd.containers.docker_runtime import DockerRuntime

    tarpit = socket.socket()
    tarpit.bind(("127.0.0.1", 0))
    tarpit.listen(16)
    runtime = DockerRuntime(timeout=10, pull_timeout=3)
    try:
        with pytest.raises(ImageMissing, match="no progress for 3s"):
            await asyncio.wait_for(runtime.pull(f"127.0.0.1:{tarpit.getsockname()[1]}/stuck:1"), 60)
    finally:
        tarpit.close()
        await runtime.close()
