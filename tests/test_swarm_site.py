"""The JobSite seam (#17): today's Workspace is its local implementation, verb for verb (same names,
parameters and async-ness), so a cluster site can replace it without the engine changing."""

from __future__ import annotations

import inspect

import pytest

from runnerd.containers.site import JobSite
from runnerd.engine.workspace import Workspace


def _verbs(cls: type) -> dict[str, object]:
    return {name: fn for name, fn in vars(cls).items() if callable(fn) and not name.startswith("_")}


@pytest.mark.parametrize("site", ["Workspace", "SwarmSite"])
def test_each_site_implements_every_verb_of_the_job_site(site):
    from runnerd.engine.swarm_site import SwarmSite

    cls = {"Workspace": Workspace, "SwarmSite": SwarmSite}[site]
    wanted = _verbs(JobSite)
    assert {"paths", "prepare", "release_fs", "remove", "disk_full", "step_spec"} <= set(wanted)
    assert isinstance(cls.remote, bool)
    for name, proto in wanted.items():
        local = getattr(cls, name, None)
        assert local is not None, f"{site} lacks {name}"
        assert inspect.iscoroutinefunction(local) == inspect.iscoroutinefunction(proto), name
        assert list(inspect.signature(local).parameters) == list(inspect.signature(proto).parameters), name


# -- the Swarm job site (engine/swarm_site.py) ----------------------------------------------------

import asyncio  # noqa: E402
import uuid  # noqa: E402
from pathlib import Path  # noqa: E402


from runnerd.config import parse_config  # noqa: E402
from runnerd.containers import spec as specs  # noqa: E402
from runnerd.containers.runtime import JOB_NETWORK, LABEL_JOB, LABEL_STEP, ContainerSpec, Mount  # noqa: E402
from runnerd.domain import (  # noqa: E402
    AlgorithmContainer,
    AlgorithmPlan,
    InputPlan,
    JobPlan,
    LocalFile,
    PlannedJob,
    RawCode,
    RemoteFile,
    Slot,
    StepKind,
)
from runnerd.engine.swarm_site import PARTS, SwarmSite, holder_name, volume_name  # noqa: E402
from runnerd.errors import WorkspaceError  # noqa: E402
from tests.helpers import BUSYBOX_IMAGE, PY_IMAGE  # noqa: E402
from tests.swarm_lab import skip_reason  # noqa: E402

DID = "did:op:" + "cd" * 32


def _settings(**extra):
    return parse_config({"environments": [{"id": "e", "diskGB": 0.05, "diskQuota": "tmpfs"}],
                         "helperImage": PY_IMAGE, "maxDownloadGB": 0.01, "backend": "swarm",
                         "siteURL": "http://10.231.0.1:8030", **extra})


def _job(asset: Path) -> PlannedJob:
    algorithm = AlgorithmPlan(None, None, RawCode("print('hi')"), AlgorithmContainer("python3 $ALGO", PY_IMAGE))
    inputs = (InputPlan(DID, {"id": DID}, (LocalFile(str(asset)), RemoteFile("https://example.invalid/x"))),)
    return PlannedJob(job_id=uuid.uuid4().hex, owner="0x" + "aa" * 20, document_id=DID, environment="e",
                      agreement_id="0x" + uuid.uuid4().hex, algo_did="raw", input_dids=[DID],
                      plan=JobPlan(inputs, algorithm, network=False, secret="s3cr3t"), date_created=1.0)


class _NoRuntime:
    async def create(self, spec): raise AssertionError("not in a pure test")
    async def start(self, cid): raise AssertionError
    async def remove(self, cid): raise AssertionError
    async def task_state(self, cid): return None


def _site(tmp_path, runtime=None, **extra) -> SwarmSite:
    return SwarmSite(tmp_path / "data", _settings(**extra), runtime or _NoRuntime(),
                     lambda job_id, step: f"token-{step.value}", "http://10.231.0.1:8030/")


def test_step_specs_on_a_node_mount_no_host_path_and_keep_each_step_s_access(tmp_path):
    """The local specs (containers/spec.py) as the node's: every host bind becomes its node-side
    counterpart (a volume per /data part, the out folder a tmpfs, scripts as configs), the
    algorithm still sees inputs, DDOs and code read-only and writes outputs and logs, and the two
    helper steps run under the agent with a token for their own step."""
    asset = tmp_path / "asset.csv"
    asset.write_text("a,b\n")
    site, job = _site(tmp_path), _job(asset)
    settings, env = site.settings, site.settings.environments[0]
    paths = site.paths(job.job_id)
    local = {
        StepKind.PROVISION: specs.build_provision(job, settings, paths),
        StepKind.ALGORITHM: specs.build_algorithm(job, env, settings, paths, PY_IMAGE, Slot()),
        StepKind.FILTER: specs.build_filter(job, env, settings, paths),
    }
    remote = {kind: site.step_spec(job, env, kind, s) for kind, s in local.items()}
    for kind, s in remote.items():
        assert s.mounts == (), kind
        assert str(tmp_path) not in repr(s), f"{kind}: a host path reached the node's spec"
        assert all(v.name.startswith(f"rd-{job.job_id}-") for v in s.volumes)
    algo = {v.target: v for v in remote[StepKind.ALGORITHM].volumes}
    assert set(algo) == {f"/data/{p}" for p in PARTS}
    assert [t for t, v in algo.items() if not v.read_only] == ["/data/outputs", "/data/logs"]
    assert algo["/data/outputs"].size_bytes == env.disk_bytes
    assert remote[StepKind.ALGORITHM].network == "none" and remote[StepKind.ALGORITHM].files == ()
    provision = remote[StepKind.PROVISION]
    assert {v.target for v in provision.volumes if not v.read_only} == {f"/data/{p}" for p in PARTS}
    assert provision.command == ["python3", "/runnerd/site_agent.py"] and provision.network == JOB_NETWORK
    assert {f.target for f in provision.files} == {"/runnerd/provision.py", "/runnerd/netpolicy.py",
                                                   "/runnerd/site_agent.py", "/runnerd/sitetar.py"}
    assert provision.env["RUNNERD_SITE_TOKEN"] == "token-provision"
    assert provision.env["RUNNERD_SITE_URL"] == "http://10.231.0.1:8030"
    filt = remote[StepKind.FILTER]
    assert [(v.target, v.read_only) for v in filt.volumes] == [("/data/outputs", True)]
    assert filt.tmpfs["/runnerd/out"].endswith(f"size={env.disk_bytes + 1024 * 1024},mode=1777")
    assert filt.env["RUNNERD_SITE_TOKEN"] == "token-filter" and filt.network == JOB_NETWORK
    # a tmpfs page is charged to its writer: each limit also holds what the step may write there
    assert remote[StepKind.ALGORITHM].memory_bytes == env.ram_bytes + 2 * env.disk_bytes
    assert filt.memory_bytes == specs.HELPER_MEMORY + env.disk_bytes + 1024 * 1024
    assert provision.memory_bytes > specs.HELPER_MEMORY + 2 * int(settings.maxDownloadGB * 1024**3)


def test_a_host_mount_without_a_node_side_counterpart_is_refused(tmp_path):
    site, job = _site(tmp_path), _job(tmp_path / "a")
    env = site.settings.environments[0]
    stray = ContainerSpec(name="x", image=PY_IMAGE, command=[], labels={}, user="1000:1000",
                          mounts=(Mount("/etc", "/data/etc"),))
    with pytest.raises(WorkspaceError, match="no node-side counterpart"):
        site.step_spec(job, env, StepKind.ALGORITHM, stray)


def _mounts_on_node(lab, node: int) -> list[str]:
    ids = lab.docker(node, "ps", "-aq").split()
    if not ids:
        return []
    out = lab.docker(node, "inspect", "--format", "{{range .Mounts}}{{.Type}}:{{.Source}} {{end}}", *ids)
    return out.split()


@pytest.mark.docker
@pytest.mark.skipif(skip_reason() is not None, reason=skip_reason() or "")
async def test_the_holder_keeps_a_job_s_volumes_between_steps_and_its_removal_wipes_them(swarm_lab, tmp_path):
    """On the lab: the job's volumes live on its node only while the holder runs. What a first
    step writes is there for the next (a tmpfs volume would be unmounted, its bytes gone, between
    two containers otherwise); the algorithm cannot write its inputs; after release_fs a new
    container on that node finds the volume empty. No container on any node mounts a path of
    runnerd's data dir (on one machine a shared disk would hide every data-movement bug)."""
    from runnerd.containers.swarm_runtime import SwarmRuntime

    lab = swarm_lab
    tag = uuid.uuid4().hex[:8]
    runtime = SwarmRuntime(node=lab.node_id(2), base_url=lab.url(1), timeout=30, instance=f"site-{tag}")
    asset = tmp_path / "asset.csv"
    asset.write_text("a,b\n")
    job = _job(asset)
    site = _site(tmp_path, runtime, jobUser="1000:1000")
    env = site.settings.environments[0]

    def step(kind: str, command: str, parts: tuple[str, ...], read_only: bool) -> ContainerSpec:
        return ContainerSpec(name=f"runnerd-{job.job_id}-{kind}", image=BUSYBOX_IMAGE, command=["sh", "-c", command],
                             labels={LABEL_JOB: job.job_id, LABEL_STEP: kind}, user="1000:1000",
                             volumes=site.volumes(job, env, parts, read_only=read_only), memory_bytes=64 * 2**20)

    async def run(s: ContainerSpec) -> int:
        cid = await runtime.create(s)
        await runtime.start(cid)
        result = await runtime.wait(cid, timeout=120)
        await runtime.remove(cid)
        assert result is not None, s.name
        return result.exit_code

    try:
        await site.prepare(job, env)
        assert await runtime.task_state(holder_name(job.job_id)) == "running"
        assert lab.docker(2, "volume", "ls", "-q", "--filter", f"name={volume_name(job.job_id, 'inputs')}").split()
        assert await run(step("provision", "echo 42 > /data/inputs/x", ("inputs",), False)) == 0
        read_only = step("algorithm", "test \"$(cat /data/inputs/x)\" = 42 && ! touch /data/inputs/z", ("inputs",),
                         True)
        assert await run(read_only) == 0
        for node in (1, 2, 3):
            assert not [m for m in _mounts_on_node(lab, node) if str(tmp_path) in m], node
        await site.ensure_mounted(job, env)
        assert await site.release_fs(job.job_id)
        for _ in range(300):  # the holder goes beside the job's end, not before release_fs returns
            if await runtime.task_state(holder_name(job.job_id)) is None:
                break
            await asyncio.sleep(0.2)
        assert await runtime.task_state(holder_name(job.job_id)) is None
        with pytest.raises(WorkspaceError, match="data on its cluster node was lost"):
            await site.ensure_mounted(job, env)
        later = step("later", "test ! -e /data/inputs/x", ("inputs",), True)
        assert await run(later) == 0
    finally:
        for c in await runtime.list_owned():
            await runtime.remove(c.id)
        await asyncio.sleep(0)
        await runtime.prune_networks()
        await runtime.close()
        lab.docker(2, "volume", "prune", "-f", check=False)
