"""The cluster's per-node placer (#17, engine/node_placer.py): runnerd keeps the accounting of each
node and gives a whole job one node; Swarm only executes. Pure: no Docker, no swarm."""

from __future__ import annotations

import asyncio
import logging

import pytest

from runnerd.config import parse_config
from runnerd.containers.spec import HELPER_MEMORY
from runnerd.domain import Slot
from runnerd.engine.node_placer import RESERVE_CPUS, RESERVE_RAM, NodePlacer, demand, unplaceable
from runnerd.engine.placement import Allocator, Placer
from tests.fakes import FakeClock

GB = 1024**3
SITE_URL = "http://10.231.0.1:8030"  # required with backend swarm; never reached here


def node(node_id: str, cpus: float = 4, gb: float = 8, swap: str | None = "off", **labels: str) -> dict:
    """A node as SwarmRuntime.nodes() lists it."""
    tags = {**({"runnerd.swap": swap} if swap is not None else {}), **labels}
    return {"id": node_id, "hostname": f"host-{node_id}", "cpus": cpus, "memory": int(gb * GB), "labels": tags}


def settings(**env):
    base = {"id": "env", "nCPU": 1, "ramGB": 1, "diskGB": 1, "diskQuota": "tmpfs", "maxJobs": 10}
    return parse_config({"backend": "swarm", "siteURL": SITE_URL, "environments": [{**base, **env}]})


def env_of(s):
    return s.environments[0]


def room(placer: NodePlacer) -> dict[str, tuple[float, int, int]]:
    return {r["id"]: (r["cpusFree"], r["memoryFree"], r["jobs"]) for r in placer.view()}


def test_both_placers_are_placers():
    """The scheduler is typed against the protocol; both kinds satisfy it (mypy checks the same)."""
    one: Placer = Allocator([0, 1])
    two: Placer = NodePlacer(settings(), [node("a")])
    assert one.retry_after is None and two.retry_after is None  # no source: only releases free room


def test_a_job_counts_its_ram_its_disk_and_one_helper_step():
    # on Swarm a job's outputs and logs are tmpfs volumes of diskGB each on its node
    # (engine/swarm_site.py), whatever its diskQuota
    for quota in ("tmpfs", "none"):
        assert demand(env_of(settings(ramGB=1, diskGB=0.5, diskQuota=quota))) == (1, int(2 * GB) + HELPER_MEMORY)


def test_a_node_fits_exactly_what_it_has_and_not_a_byte_more():
    s = settings(nCPU=1, ramGB=1, diskGB=1)
    need = 3 * GB + HELPER_MEMORY
    exact = NodePlacer(s, [{**node("a", cpus=8), "memory": 2 * need}])
    assert [exact.take(env_of(s)) is not None for _ in range(3)] == [True, True, False]  # RAM, not CPUs, is full
    short = NodePlacer(s, [{**node("a", cpus=8), "memory": need - 1}])
    assert short.take(env_of(s)) is None
    cpus = NodePlacer(settings(nCPU=0.3, ramGB=0.1, diskGB=0.1), [node("a", cpus=0.9)])
    assert [cpus.take(env_of(cpus.settings)) is not None for _ in range(4)] == [True, True, True, False]  # exact sums


def test_jobs_spread_most_free_cpu_then_most_free_ram_then_node_id():
    s = settings(nCPU=1, ramGB=1, diskGB=0.5)
    placer = NodePlacer(s, [node("c", cpus=4, gb=16), node("b", cpus=4, gb=8), node("a", cpus=4, gb=8),
                            node("d", cpus=2, gb=64)])
    order = [placer.take(env_of(s)).node for _ in range(7)]
    # equal CPUs: c has the most RAM; then a before b (equal RAM: the id); d only once it has the most free CPUs
    assert order == ["c", "a", "b", "c", "a", "b", "d"]
    slot = Slot(node="a", cpus=1, memory=demand(env_of(s))[1])
    assert placer.view()[0]["id"] == "a" and room(placer)["a"][2] == 2
    placer.release(slot)
    assert placer.take(env_of(s)).node == "a"  # a has the most free CPUs again (3; c and b 2, d 1)


def test_the_order_of_the_node_list_changes_nothing():
    s = settings(nCPU=0.5, ramGB=0.25, diskGB=0.1)
    nodes = [node("n3", cpus=2), node("n1", cpus=2), node("n2", cpus=3, gb=4)]
    one, two = NodePlacer(s, nodes), NodePlacer(s, list(reversed(nodes)))
    assert [one.take(env_of(s)) for _ in range(12)] == [two.take(env_of(s)) for _ in range(12)]


def test_only_nodes_labelled_swap_off_are_used():
    s = settings()
    placer = NodePlacer(s, [node("big", cpus=64, gb=256, swap=None), node("on", cpus=64, gb=256, swap="on"),
                            node("small", cpus=1, gb=4)])
    assert placer.take(env_of(s)).node == "small"
    assert placer.take(env_of(s)) is None  # the two big ones stay unused, whatever their room
    assert {r["id"]: r["problem"] is not None for r in placer.view()} == {"big": True, "on": True, "small": False}


def test_the_operators_reserve_is_left_to_the_node():
    s = settings(nCPU=1, ramGB=1, diskGB=1)
    need = demand(env_of(s))[1]
    placer = NodePlacer(s, [{**node("a", cpus=3, **{RESERVE_CPUS: "1", RESERVE_RAM: "1"}), "memory": 2 * need + GB}])
    assert room(placer)["a"] == (2.0, 2 * need, 0)
    assert [placer.take(env_of(s)) is not None for _ in range(3)] == [True, True, False]
    bad = NodePlacer(s, [node("a", **{RESERVE_CPUS: "lots"}), node("b", **{RESERVE_RAM: "-1"})])
    assert bad.take(env_of(s)) is None and all("is not a number" in r["problem"] for r in bad.view())


def test_gpus_are_never_placed():
    s = settings(nGPU=1, gpus=["GPU-0"])
    assert NodePlacer(s, [node("a")]).take(env_of(s)) is None
    assert "GPU" in unplaceable(s, [node("a")])[0]


def test_refresh_with_a_node_gone_a_new_one_and_a_resized_one_never_double_counts():
    s = settings(nCPU=1, ramGB=1, diskGB=1)
    need = demand(env_of(s))[1]
    placer = NodePlacer(s, [node("a", cpus=2, gb=16), node("b", cpus=2, gb=16)])
    slots = [placer.take(env_of(s)) for _ in range(4)]
    assert sorted(x.node for x in slots) == ["a", "a", "b", "b"] and placer.take(env_of(s)) is None
    placer.refresh([node("a", cpus=2, gb=16), node("b", cpus=2, gb=16)])  # the same list again
    assert room(placer) == {"a": (0.0, 16 * GB - 2 * need, 2), "b": (0.0, 16 * GB - 2 * need, 2)}

    # b leaves (its jobs stay held), a shrinks under its two jobs, c joins
    placer.refresh([node("a", cpus=1, gb=2), node("c", cpus=1, gb=16)])
    assert room(placer) == {"a": (0.0, 0, 2), "c": (1.0, 16 * GB, 0), "b": (0.0, 0, 2)}  # never negative
    assert [r["ready"] for r in placer.view()] == [True, True, False]
    assert placer.take(env_of(s)).node == "c" and placer.take(env_of(s)) is None

    on_a = [x for x in slots if x.node == "a"]
    on_b = [x for x in slots if x.node == "b"]
    placer.release(on_a[0])  # a: 1 CPU, 1 job left on it, still no room for a second
    assert room(placer)["a"] == (0.0, 0, 1) and placer.take(env_of(s)) is None
    placer.release(on_b[0])  # released after b left: its accounting shrinks, nothing goes negative
    assert room(placer)["b"] == (0.0, 0, 1)
    placer.refresh([node("a", cpus=2, gb=16), node("b", cpus=2, gb=16), node("c", cpus=1, gb=16)])  # b back
    assert room(placer)["b"] == (1.0, 16 * GB - need, 1) and room(placer)["a"] == (1.0, 16 * GB - need, 1)
    placer.release(on_b[1])
    placer.release(on_a[1])
    assert {k: v[2] for k, v in room(placer).items()} == {"a": 0, "b": 0, "c": 1}


def test_a_readopted_job_is_held_even_on_a_node_not_listed_yet_or_gone():
    s = settings(nCPU=2, ramGB=1, diskGB=1)
    placer = NodePlacer(s)  # a restarted daemon adopts before it first lists the nodes
    old = Slot(node="a", cpus=2, memory=3 * GB)  # admitted under an older, bigger configuration
    placer.hold(old)
    placer.hold(Slot(node="gone", cpus=1, memory=GB))
    placer.hold(Slot("0,1", ()))  # a slot of this host: nothing held on any node
    placer.refresh([node("a", cpus=4, gb=8)])
    assert room(placer) == {"a": (2.0, 5 * GB, 1), "gone": (0.0, 0, 1)}
    assert placer.take(env_of(s)).node == "a" and placer.take(env_of(s)) is None
    placer.release(old)
    assert room(placer)["a"][0] == 2.0


def test_releasing_what_is_not_held_changes_nothing():
    s = settings()
    placer = NodePlacer(s, [node("a", cpus=2)])
    slot = placer.take(env_of(s))
    before = room(placer)
    placer.release(Slot(node="a", cpus=1.5, memory=1))  # never held
    placer.release(Slot(node="elsewhere", cpus=1, memory=1))
    placer.release(Slot())
    assert room(placer) == before
    placer.release(slot)
    placer.release(slot)  # twice: the second is ignored
    assert room(placer) == {"a": (2.0, 8 * GB, 0)}


def test_unplaceable_names_the_numbers_and_the_fix():
    s = parse_config({"backend": "swarm", "siteURL": SITE_URL, "environments": [
        {"id": "fits", "nCPU": 1, "ramGB": 1, "diskGB": 1, "diskQuota": "tmpfs"},
        {"id": "huge", "nCPU": 8, "ramGB": 2, "diskGB": 1, "diskQuota": "tmpfs"},
        {"id": "fat", "nCPU": 1, "ramGB": 30, "diskGB": 1, "diskQuota": "none"}]})
    nodes = [node("a", cpus=4, gb=8), node("b", cpus=2, gb=16), node("x", cpus=64, gb=512, swap=None)]
    found = unplaceable(s, nodes)
    assert len(found) == 2 and found[0].startswith("environment huge: ") and found[1].startswith("environment fat: ")
    assert ("8 CPUs and 4.50 GB of RAM (ramGB 2 + 2 × diskGB 1: outputs and logs, tmpfs on the node, "
            "+ 0.5 GB for a helper step)") in found[0]
    assert "the most CPUs: host-a (a: 4 CPUs, 8.00 GB)" in found[0] and "the most RAM: host-b (b: 2 CPUs, 16.00 GB)" \
        in found[0]
    assert "1 more node(s) are not usable" in found[0] and "lower its nCPU, ramGB or diskGB" in found[0]
    assert "1 CPUs and 32.50 GB of RAM" in found[1]
    assert unplaceable(s, [node("a", cpus=64, gb=512)]) == []
    assert "no Ready swarm node" in unplaceable(s, [])[0]
    assert "none labelled runnerd.swap=off" in unplaceable(s, [node("x", swap=None)])[0]


def test_an_environment_that_never_fits_is_said_once(caplog):
    s = settings(nCPU=8)
    caplog.set_level(logging.INFO, logger="runnerd.placer")
    placer = NodePlacer(s, [node("a", cpus=4)])
    placer.refresh([node("a", cpus=4)])
    placer.refresh([node("a", cpus=4)])
    said = [r.getMessage() for r in caplog.records if "environment env:" in r.getMessage()]
    assert len(said) == 1 and "8 CPUs" in said[0]
    placer.refresh([node("a", cpus=8)])  # fits now: nothing more to say
    placer.refresh([node("a", cpus=4)])  # and again not: said again
    assert len([r for r in caplog.records if "environment env:" in r.getMessage()]) == 2


async def test_update_asks_the_source_at_most_every_few_seconds_and_survives_its_failures(caplog):
    clock = FakeClock()
    answers: list = [[node("a")], RuntimeError("manager away"), RuntimeError("still away"), [node("b")]]
    asked = []

    async def source():
        asked.append(clock.monotonic())
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    s = settings()
    placer = NodePlacer(s, source=source, clock=clock, every=5)
    assert placer.retry_after == 5 and placer.take(env_of(s)) is None  # nothing listed yet
    await placer.update()
    await placer.update()  # too soon: not asked again
    assert len(asked) == 1 and placer.take(env_of(s)).node == "a"
    caplog.set_level(logging.INFO, logger="runnerd.placer")
    for _ in range(2):
        await clock.advance(5)
        await placer.update()  # fails: the last list stays
    assert len(asked) == 3 and set(room(placer)) == {"a"}
    assert len([r for r in caplog.records if "cannot list the swarm's nodes" in r.getMessage()]) == 1
    await clock.advance(4.9)
    await placer.update()
    assert len(asked) == 3
    await clock.advance(0.1)
    await placer.update()
    assert set(room(placer)) == {"a", "b"} and room(placer)["a"][2] == 1  # a is gone, its job still held
    assert placer.take(env_of(s)).node == "b"


@pytest.mark.parametrize("text", ['{"cpuset": "0,1", "gpus": ["GPU-a"]}', '{"cpuset": null, "gpus": []}'])
def test_slot_rows_of_older_versions_load(text):
    slot = Slot.from_json(text)
    assert slot.node is None and slot.cpus == 0 and slot.memory == 0
    assert Slot.from_json(slot.to_json()) == slot
    assert "node" not in slot.to_json()  # a local slot keeps the row's old form


def test_a_node_slot_round_trips():
    slot = Slot(None, (), "nodeid123", 0.5, 3 * GB)
    assert Slot.from_json(slot.to_json()) == slot


async def test_a_source_that_hangs_holds_up_no_admission_pass(monkeypatch, caplog):
    from runnerd.engine import node_placer

    monkeypatch.setattr(node_placer, "NODE_LIST_TIMEOUT", 0.05)
    never = asyncio.Event()

    async def source():
        await never.wait()  # a manager that accepted the call and never answers
        return []

    s = settings()
    placer = NodePlacer(s, [node("a")], source=source)
    caplog.set_level(logging.WARNING, logger="runnerd.placer")
    await asyncio.wait_for(placer.update(), 5)  # a safety net, not a timing assertion
    assert placer.take(env_of(s)).node == "a"  # the last list stays
    assert any("TimeoutError" in r.getMessage() for r in caplog.records)


def test_what_the_log_says_as_nodes_come_change_and_go(caplog):
    caplog.set_level(logging.INFO, logger="runnerd.placer")
    s = settings()
    placer = NodePlacer(s, [node("a"), node("x", swap=None)])
    placer.take(env_of(s))
    placer.refresh([node("a", cpus=8), node("x", cpus=8, swap=None)])  # both resized; x still unusable
    placer.refresh([node("x", cpus=8)])  # a left with its job; x labelled now
    said = [r.getMessage() for r in caplog.records]
    assert said == ["swarm node host-a (a: 4 CPUs, 8.00 GB) is used for jobs",
                    "swarm node host-x: not labelled runnerd.swap=off, so runnerd places no job there (services "
                    "cannot turn swap off); on a node without swap: docker node update --label-add runnerd.swap=off x",
                    "swarm node host-a changed: now host-a (a: 8 CPUs, 8.00 GB)",
                    "swarm node host-x (x: 8 CPUs, 8.00 GB) is used for jobs",
                    "swarm node host-a (a: 8 CPUs, 8.00 GB) is no longer Ready; its 1 job(s) stay accounted until "
                    "they end"]
