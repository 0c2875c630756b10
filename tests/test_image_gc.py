"""Image hygiene (#15 item 4): runnerd's pulled images beyond imageCacheGB are removed least
recently used first, while images a job needs, images a container uses and the operator's own
images survive (real Docker, with images built here: no registry is reachable); and per-job
registry credentials reach the pull and nothing else."""

from __future__ import annotations

import subprocess
import uuid
from typing import Callable

import pytest

from runnerd.domain import JobStatus
from runnerd.engine.image_gc import ImageGC
from tests.fakes import FakeRuntime
from tests.helpers import BUSYBOX_IMAGE

GB = 1024 ** 3


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        self.now += 1
        return self.now


async def test_lru_within_the_budget_never_needed_ones_never_the_operators(tmp_path):
    fake = FakeRuntime(images={"operator:1"})
    for ref in ("a:1", "b:1", "c:1", "d:1"):
        fake.images.add(ref)
        fake.image_sizes[ref] = GB
        fake.digests[ref] = ("sha256:" + ref[0] * 64, ())
    fake.image_sizes["operator:1"] = 10 * GB
    needed = {"b:1"}

    async def need() -> set[str]:
        return set(needed)

    gc = ImageGC(fake, tmp_path, budget_bytes=2 * GB, needed=need, clock=Clock())
    for ref in ("a:1", "b:1", "c:1", "d:1"):
        await gc.pulled(ref, was_present=False)
    await gc.pulled("operator:1", was_present=True)  # `imagePull: always` re-pulled the operator's image
    gc.used("a:1")  # a is now the most recently used; b is the least, but a job needs it
    assert await gc.collect() == ["c:1", "d:1"]
    assert fake.images == {"operator:1", "a:1", "b:1"}
    # The record survives a restart: a new collector knows what runnerd pulled, and nothing else.
    again = ImageGC(fake, tmp_path, budget_bytes=2 * GB, needed=need)
    assert sorted(again.known()) == ["a:1", "b:1"]
    needed.clear()
    again.budget = GB
    assert await again.collect() == ["b:1"]  # a was used later


async def test_off_by_default_and_an_image_tagged_by_someone_else_is_theirs(tmp_path):
    fake = FakeRuntime(images={"x:1"})
    fake.image_sizes["x:1"] = GB
    fake.digests["x:1"] = ("sha256:" + "7" * 64, ())

    async def need() -> set[str]:
        return set()

    off = ImageGC(fake, tmp_path, budget_bytes=0, needed=need)
    await off.pulled("x:1", was_present=False)
    assert await off.collect() == [] and fake.images == {"x:1"}
    gc = ImageGC(fake, tmp_path, budget_bytes=1, needed=need)
    fake.images.add("mine:tagged-by-hand")
    fake.digests["mine:tagged-by-hand"] = fake.digests["x:1"]
    assert await gc.collect() == [] and "x:1" in fake.images
    assert "x:1" in gc.known()  # still runnerd's record: it goes once the other tag is gone
    fake.images.discard("mine:tagged-by-hand")
    assert await gc.collect() == ["x:1"]


def _build(tag: str, label: str) -> str:
    subprocess.run(["docker", "build", "-q", "-t", tag, "-"], input=f"FROM {BUSYBOX_IMAGE}\nLABEL h15={label}\n",
                   capture_output=True, text=True, check=True)
    return subprocess.run(["docker", "image", "inspect", "-f", "{{.Id}} {{.Size}}", tag], capture_output=True,
                          text=True, check=True).stdout.split()


@pytest.mark.docker
async def test_pulled_images_beyond_the_budget_go_while_those_in_use_survive(tmp_path):
    from runnerd.containers.docker_runtime import DockerRuntime

    run = uuid.uuid4().hex[:8]
    tags = {k: f"h15-gc-{run}-{k}:1" for k in "abcd"}
    container = f"h15-gc-{run}"
    runtime = DockerRuntime()
    try:
        size = 0
        for k, tag in tags.items():
            size = int(_build(tag, f"{run}-{k}")[1])
        # a: a container (a stopped one, even) still uses it; b: a queued job needs it.
        subprocess.run(["docker", "create", "--name", container, tags["a"], "true"], capture_output=True, check=True)

        async def need() -> set[str]:
            return {tags["b"], BUSYBOX_IMAGE}

        gc = ImageGC(runtime, tmp_path, budget_bytes=int(3.5 * size), needed=need, clock=Clock())
        for k in "abcd":  # recorded in this order: a least recently used, d most
            await gc.pulled(tags[k], was_present=False)
        await gc.pulled(BUSYBOX_IMAGE, was_present=True)  # the operator's: never recorded
        removed = await gc.collect()
        present = {k for k, tag in tags.items() if await runtime.has_image(tag)}
    finally:
        await runtime.close()
        subprocess.run(["docker", "rm", "-f", container], capture_output=True)
        subprocess.run(["docker", "rmi", *tags.values()], capture_output=True)
    assert removed == [tags["c"]]  # a refused by Docker (in use), b needed, c the next least recently used
    assert present == {"a", "b", "d"}
    assert subprocess.run(["docker", "image", "inspect", BUSYBOX_IMAGE], capture_output=True).returncode == 0


async def test_images_tells_the_collector_of_its_own_pulls_only_and_passes_a_jobs_credentials(tmp_path):
    from runnerd.engine import credentials
    from runnerd.engine.images import Images

    fake = FakeRuntime(images={"operator/own:1"}, pullable={"acme/private:1", "operator/own:1"})

    async def need() -> set[str]:
        return set()

    gc = ImageGC(fake, tmp_path, budget_bytes=GB, needed=need)
    images = Images(fake, "always")
    images.on_pulled, images.on_used = gc.pulled, gc.used
    auth = credentials.parse({"username": "bob", "password": "s3cret"})
    assert "s3cret" not in repr(auth)
    await images.resolve("acme/private", "1", "", auth=auth.header())
    await images.resolve("operator/own", "1", "")  # re-pulled (always), but it was there before
    assert sorted(gc.known()) == ["acme/private:1"]
    assert fake.pull_auths == [("acme/private:1", {"username": "bob", "password": "s3cret"}),
                               ("operator/own:1", None)]
    for bad in ({"username": "bob"}, {"user": "x", "password": "y"}, "bob:pw", {"identitytoken": 3}):
        with pytest.raises(ValueError):
            credentials.parse(bad)


@pytest.mark.docker
def test_registry_credentials_of_a_job_are_neither_in_its_row_nor_in_a_log(shared_daemon):
    import secrets

    from tests.helpers import dataset, raw, wait_done

    password, user = "pw-" + secrets.token_hex(12), "user-" + secrets.token_hex(6)
    did = dataset(shared_daemon.assets)
    client = shared_daemon.client()
    body = {**client.signed(did), "environment": "ocean-compute",
            "dataset": {"documentId": did, "serviceId": "compute", "transferTxId": "0x" + secrets.token_hex(32)},
            "algorithm": raw("print('ran')"), "dockerRegistryAuth": {"username": user, "password": password}}
    answer = client.http.post("/api/services/compute", json=body)
    assert answer.status_code == 200, answer.text
    job = wait_done(client, answer.json()[0]["jobId"])
    assert job["status"] == 70
    bad = {**body, **client.signed(did), "dockerRegistryAuth": {"username": user}}
    refused = client.http.post("/api/services/compute", json=bad)
    assert refused.status_code == 400 and refused.json()["field"] == "dockerRegistryAuth"
    stored = b"".join(p.read_bytes() for p in shared_daemon.data_dir.glob("runnerd.db*"))
    assert password.encode() not in stored and user.encode() not in stored
    assert password not in shared_daemon.log()
    for path in (shared_daemon.data_dir / "jobs" / job["jobId"]).rglob("*"):
        assert not path.is_file() or password.encode() not in path.read_bytes(), path


async def test_the_engine_collects_after_a_pull_and_keeps_what_queued_and_running_jobs_need(tmp_path):
    """Through the engine (fake Docker): image A, pulled for a job that has ended, goes once image
    B's pull passes the budget; then, with the budget at nothing, A (pulled again for a job that
    waits in the queue) and B (its job runs) both stay, and so does the helper image."""
    import asyncio
    import uuid

    from runnerd.catalog import Catalog
    from runnerd.config import parse_config
    from runnerd.engine.service import Engine
    from runnerd.store import Database, JobStore
    from tests.fakes import Outcome
    from tests.helpers import dataset, raw

    helper, a, b = "fake/helper:1", "fake/a:1", "fake/b:1"
    settings = parse_config({"helperImage": helper, "imagePull": "if-missing", "imageCacheGB": 1.5,
                             "diskFloorGB": 0, "sweepIntervalSeconds": 3600, "environments": [
                                 {"id": "env", "nCPU": 1, "ramGB": 0.25, "diskGB": 0.05, "diskQuota": "none",
                                  "maxJobs": 1, "rawAlgorithmImages": ["fake/*"]}]})
    (tmp_path / "data" / "jobs").mkdir(parents=True)
    db = await Database.open(tmp_path / "data" / "runnerd.db")
    store = JobStore(db)
    fake = FakeRuntime(images={helper}, pullable={a, b})
    for i, ref in enumerate((helper, a, b)):
        fake.digests[ref] = ("sha256:" + str(i) * 64, ())
        fake.image_sizes[ref] = GB
    fake.script(Outcome(duration=None), image=b)  # B's algorithm runs until the test ends it
    engine = Engine(settings, store, fake, Catalog(tmp_path / "assets"), tmp_path / "data", cores=[0, 1])
    await engine.start()
    did = dataset(tmp_path / "assets", b"x\n")

    async def run(image: str) -> str:
        job = await engine.submit({"environment": "env", "algorithm": raw("print(1)", image=image), "dataset": {
            "documentId": did, "serviceId": "compute", "transferTxId": "0x" + uuid.uuid4().hex}}, "0x" + "1" * 40)
        return job.job_id

    async def reaches(job_id: str, wanted: Callable[[JobStatus], bool]) -> None:
        async def poll() -> None:
            while not wanted((await store.get(job_id)).status):
                await asyncio.sleep(0.02)
        await asyncio.wait_for(poll(), 30)

    try:
        first = await run(a)
        await reaches(first, lambda s: s.terminal)
        assert a in fake.images  # 1 GB: within the budget
        running = await run(b)
        await reaches(running, lambda s: s == JobStatus.RUNNING)
        assert engine.image_gc.removed == [a] and fake.images == {helper, b}  # A: least recently used, unneeded
        fake.images.add(a)  # A is back (as if pulled for the next job), and runnerd's again
        await engine.image_gc.pulled(a, was_present=False)
        waiting = await run(a)  # queued: the only slot is B's
        engine.image_gc.budget = 1
        assert await engine.image_gc.collect() == []
        assert fake.images == {helper, a, b}  # A: a queued job needs it; B: its job runs
        fake.finish(next(c.id for c in fake.of_job(running) if c.spec.image == b))
        await reaches(waiting, lambda s: s.terminal)
    finally:
        await engine.shutdown()
        await fake.close()
        await db.close()
