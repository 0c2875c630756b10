"""The scheduler admits through the placer it is given (#17): on a cluster the NodePlacer spreads
jobs over the nodes and records each job's node in its row, a job no node has room for stays
queued until one has, and a restarted runnerd holds the re-adopted jobs' nodes. Driven through the
real Engine with the FakeRuntime (tests/test_runner_faults.py's rig): no Docker, no swarm. Last,
the Swarm job site puts all three steps of a job (and its holder) on the node of its slot."""

from __future__ import annotations

import asyncio

import pytest

from runnerd.catalog import Catalog
from runnerd.containers import spec as specs
from runnerd.domain import JobStatus, StepKind
from runnerd.engine.node_placer import NodePlacer
from runnerd.engine.placement import Allocator
from runnerd.engine.runner import Hooks
from runnerd.engine.service import Engine
from tests.fakes import Outcome
from tests.helpers import PY_IMAGE
from tests.test_runner_faults import ALGO, WAIT_LIMIT, rig  # noqa: F401 - rig is a fixture
# imported with this module, not inside a test: pytest rewrites a test module's asserts when it is
# first imported, and doing that mid-test tripped CPython 3.11's "AST constructor recursion depth
# mismatch" (seen running test_runner_faults, this file and test_recovery together; a full run
# imports test_swarm_site at collection and never hit it)
from tests.test_swarm_site import _job, _site

S = JobStatus
GB = 1024**3


def node(node_id: str, cpus: float = 1, gb: float = 4) -> dict:
    return {"id": node_id, "hostname": f"host-{node_id}", "cpus": cpus, "memory": int(gb * GB),
            "labels": {"runnerd.swap": "off"}}


async def end_algorithm(rig, job_id: str) -> None:
    """Let a job's algorithm (scripted to run until told) exit 0, once it runs (status 40 is
    written before its container starts)."""
    async def started():
        while True:
            found = [c for c in rig.fake.of_job(job_id) if c.spec.labels["runnerd.step"] == "algorithm"
                     and c.status == "running"]
            if found:
                return found[0]
            await asyncio.sleep(0.02)

    rig.fake.finish((await asyncio.wait_for(started(), WAIT_LIMIT)).id)


async def test_the_default_placer_is_this_hosts_allocator(rig):
    assert isinstance(rig.engine.scheduler.placer, Allocator)


@pytest.mark.parametrize("rig", [{"maxJobs": 4}], indirect=True)
async def test_jobs_spread_over_the_nodes_and_each_job_records_its_node(rig):
    placer = NodePlacer(rig.settings, [node("n1"), node("n2"), node("n3")])  # one job of 1 CPU fits each
    rig.engine.scheduler.placer = placer
    rig.fake.script(Outcome(duration=None), image=ALGO)
    jobs = [(await rig.submit()).job_id for _ in range(4)]
    for job_id in jobs[:3]:
        await rig.wait_for(job_id, {40})
    await rig.engine.scheduler.admit_once()
    assert (await rig.store.get(jobs[3])).status == S.QUEUED  # maxJobs allows it; no node has room
    nodes = {job_id: (await rig.store.get(job_id)).slot.node for job_id in jobs[:3]}
    assert sorted(nodes.values()) == ["n1", "n2", "n3"]
    assert [r["jobs"] for r in placer.view()] == [1, 1, 1]

    for job_id in jobs[:3]:
        await end_algorithm(rig, job_id)
    await rig.wait_for(jobs[3], {40})  # a release woke the scheduler: the fourth got a node
    nodes[jobs[3]] = (await rig.store.get(jobs[3])).slot.node
    await end_algorithm(rig, jobs[3])
    for job_id in jobs:
        assert (await rig.finished(job_id)).status == S.COMPLETED
    assert nodes[jobs[3]] in {"n1", "n2", "n3"}
    assert [r["jobs"] for r in placer.view()] == [0, 0, 0]


async def test_a_job_no_node_has_room_for_waits_until_a_node_joins(rig):
    placer = NodePlacer(rig.settings, [node("n1")])
    rig.engine.scheduler.placer = placer
    rig.fake.script(Outcome(duration=None), image=ALGO)
    first = (await rig.submit()).job_id
    await rig.wait_for(first, {40})
    second = (await rig.submit()).job_id
    await rig.engine.scheduler.admit_once()
    assert (await rig.store.get(second)).status == S.QUEUED
    placer.refresh([node("n1"), node("n2")])
    await rig.engine.scheduler.admit_once()
    assert (await rig.wait_for(second, {40})).slot.node == "n2"
    for job_id in (first, second):
        await end_algorithm(rig, job_id)
        assert (await rig.finished(job_id)).status == S.COMPLETED


async def test_the_scheduler_looks_at_the_cluster_again_while_a_job_does_not_fit(rig, fake_clock):
    listed: list[dict] = []  # the swarm's Ready nodes, as the runtime would list them

    async def nodes() -> list[dict]:
        return list(listed)

    rig.engine.scheduler.placer = NodePlacer(rig.settings, source=nodes, clock=fake_clock, every=7)
    job_id = (await rig.submit()).job_id
    await fake_clock.sleeping(7)  # no node yet: the scheduler will look again in 7 s
    await rig.engine.scheduler.admit_once()
    assert (await rig.store.get(job_id)).status == S.QUEUED
    listed.append(node("n1"))
    await fake_clock.advance(6.9)
    await rig.engine.scheduler.admit_once()
    assert (await rig.store.get(job_id)).status == S.QUEUED  # the node list is not asked more often
    await fake_clock.advance(0.1)
    job = await rig.finished(job_id)
    assert job.status == S.COMPLETED, job.error
    assert job.slot.node == "n1"


async def test_a_restarted_runnerd_holds_the_node_of_a_job_it_readopts(rig):
    rig.engine.scheduler.placer = NodePlacer(rig.settings, [node("n1"), node("n2", gb=8)])
    rig.fake.script(Outcome(duration=None), image=ALGO)
    job_id = (await rig.submit()).job_id
    assert (await rig.wait_for(job_id, {40})).slot.node == "n2"  # equal CPUs, more RAM
    await rig.engine.shutdown()
    # the new daemon's placer lists the nodes only later; n2 is gone from the swarm by then
    placer = NodePlacer(rig.settings)
    rig.engine = Engine(rig.settings, rig.store, rig.fake, Catalog(rig.assets), rig.data, Hooks(status=rig.statuses),
                        cores=[0, 1], clock=rig.clock, placer=placer)
    await rig.engine.start()
    assert job_id in rig.engine.scheduler.live
    placer.refresh([node("n1")])
    assert {r["id"]: (r["ready"], r["jobs"]) for r in placer.view()} == {"n1": (True, 0), "n2": (False, 1)}
    await end_algorithm(rig, job_id)
    job = await rig.finished(job_id)
    assert job.status == S.COMPLETED, job.error
    assert [r["id"] for r in placer.view()] == ["n1"]  # released: the gone node holds nothing any more


def test_the_swarm_site_runs_all_three_steps_and_the_holder_on_the_node_of_the_jobs_slot(tmp_path, monkeypatch):
    from dataclasses import replace

    from runnerd.engine import swarm_site

    agent = tmp_path / "site_agent.py"  # the helpers' agent script, whatever it holds (seeded, not run)
    agent.write_text("")
    monkeypatch.setattr(swarm_site, "AGENT", agent)
    asset = tmp_path / "asset.csv"
    asset.write_text("a,b\n")
    site = _site(tmp_path)
    settings, env = site.settings, site.settings.environments[0]
    slot = NodePlacer(settings, [node("n1"), node("n2", cpus=2)]).take(env)
    job = replace(_job(asset), slot=slot)  # the row as the runner loads it after admission
    paths = site.paths(job.job_id)
    local = {StepKind.PROVISION: specs.build_provision(job, settings, paths),
             StepKind.ALGORITHM: specs.build_algorithm(job, env, settings, paths, PY_IMAGE, slot),
             StepKind.FILTER: specs.build_filter(job, env, settings, paths)}
    assert {kind: site.step_spec(job, env, kind, s).node for kind, s in local.items()} == \
        {kind: "n2" for kind in StepKind}
    assert site.holder_spec(job, env).node == "n2"  # its /data volumes live there too


async def test_a_site_that_lost_the_job_s_data_ends_it_at_76_and_a_site_outage_is_waited_out(rig):
    """The runner and a cluster site (#17): a site whose node lost the job's volumes (SiteLost)
    ends the job at 76 with the site's consumer text, not as an internal error; a site whose
    manager is briefly unreachable (RuntimeUnavailable) is waited out like Docker."""
    from runnerd.errors import RuntimeUnavailable, SiteLost

    site = rig.engine.runner.workspace
    calls = {"n": 0}

    async def lost(job, env):
        raise SiteLost("the job's data on its cluster node was lost (the node or its Docker restarted)")

    site.ensure_mounted = lost
    rig.fake.script(Outcome(duration=0.05), image=ALGO)
    job = await rig.finished((await rig.submit()).job_id)
    assert job.status == S.INTERRUPTED
    assert job.error == "the job was interrupted: the job's data on its cluster node was lost (the node or its " \
        "Docker restarted)"

    async def flaky(job, env):
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeUnavailable("the manager is restarting")

    site.ensure_mounted = flaky
    job = await rig.finished((await rig.submit()).job_id)
    assert job.status == S.COMPLETED and calls["n"] >= 2, (job.error, calls)


async def test_a_cluster_step_whose_agent_could_not_reach_runnerd_runs_again_once(rig):
    """On a cluster site a helper step's agent exits 70 when runnerd's job-site routes stayed out
    of reach (runnerd restarting): the step did not run to its end, so it runs again, once. On this
    host's site a 70 is the step's own exit code and ends the job as before."""
    from runnerd.containers.site import TRANSFER_FAILED

    rig.fake.script(Outcome(exit_code=TRANSFER_FAILED), step="provision", times=1)
    local = await rig.finished((await rig.submit()).job_id)
    assert local.status == S.DATA_PROVISIONING_FAILED, local.error
    rig.engine.runner.workspace.remote = True  # as SwarmSite says of itself
    rig.fake.script(Outcome(exit_code=TRANSFER_FAILED), step="provision", times=1)
    rig.fake.script(Outcome(duration=0.05), image=ALGO)
    job = await rig.finished((await rig.submit()).job_id)
    assert job.status == S.COMPLETED, job.error
    assert [c.spec.labels["runnerd.step"] for c in rig.fake.of_job(job.job_id)].count("provision") == 2


async def test_on_a_cluster_a_lost_helper_step_is_not_run_again(rig):
    """On a cluster a step is lost with its node, and the job's volumes with it: rerun there, it
    would wait for a node that is down (up to helperStepTimeout). On this host it runs again."""
    rig.fake.script(Outcome(duration=None, vanish_after=0.05), step="provision", times=1)
    rig.fake.script(Outcome(duration=0.05), image=ALGO)
    here = await rig.finished((await rig.submit()).job_id)
    assert here.status == S.COMPLETED, here.error  # lost once, run again
    rig.engine.runner.workspace.remote = True
    rig.fake.script(Outcome(duration=None, vanish_after=0.05), step="provision", times=1)
    job = await rig.finished((await rig.submit()).job_id)
    assert job.status == S.INTERRUPTED, job.error
    assert [c.spec.labels["runnerd.step"] for c in rig.fake.of_job(job.job_id)].count("provision") == 1
