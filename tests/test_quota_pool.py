"""The pool of ready quota filesystems (issue #13): formatted off a job's critical path, each of its
environment's exact size, bounded, refilled after a take, and cleaned of anything a crash or a
changed configuration left behind."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pytest

from runnerd.config import load_config
from runnerd.engine.quota_pool import QuotaPool, env_folder_name
from tests.helpers import base_config, dataset, raw, wait_done

pytestmark = pytest.mark.skipif(shutil.which("mkfs.ext4") is None, reason="needs mkfs.ext4 (e2fsprogs)")

EXT4_MAGIC_AT, EXT4_MAGIC = 0x438, b"\x53\xef"


def environments(tmp_path: Path, *envs: dict):
    path = tmp_path / "environments.yaml"
    path.write_text(json.dumps(base_config(environments=list(envs))))
    return {env.id: env for env in load_config(path).environments}


def is_ext4(path: Path) -> bool:
    with open(path, "rb") as f:
        f.seek(EXT4_MAGIC_AT)
        return f.read(2) == EXT4_MAGIC


def wait_for(predicate, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "the pool did not get there"
        time.sleep(0.02)


@pytest.fixture
def pool(tmp_path):
    made = []

    def make(depth: int = 2) -> QuotaPool:
        made.append(QuotaPool(tmp_path / "quota-pool", depth))
        return made[-1]

    yield make
    for p in made:
        p.close()


def test_ready_images_are_formatted_sized_bounded_and_refilled_after_a_take(tmp_path, pool):
    envs = environments(tmp_path, {"id": "a", "diskGB": 0.05, "maxJobs": 4},
                        {"id": "one", "diskGB": 0.02, "maxJobs": 1})
    p = pool()
    p.start(envs.values())
    wait_for(lambda: p.ready_count(envs["a"]) == 2 and p.ready_count(envs["one"]) == 1)
    time.sleep(0.3)  # and no more than that: depth 2, never above maxJobs
    assert p.ready_count(envs["a"]) == 2 and p.ready_count(envs["one"]) == 1
    for image in (tmp_path / "quota-pool" / env_folder_name("a")).iterdir():
        assert image.stat().st_size == envs["a"].disk_bytes and is_ext4(image)
        assert image.stat().st_blocks * 512 < envs["a"].disk_bytes / 4  # sparse
    job = tmp_path / "job"
    job.mkdir()
    assert p.take(envs["a"], job / "disk.img") is True
    assert is_ext4(job / "disk.img") and (job / "disk.img").stat().st_size == envs["a"].disk_bytes
    wait_for(lambda: p.ready_count(envs["a"]) == 2)  # refilled in the background


def test_a_take_never_replaces_an_image_the_job_already_has(tmp_path, pool):
    envs = environments(tmp_path, {"id": "a", "diskGB": 0.02})
    p = pool()
    p.start(envs.values())
    wait_for(lambda: p.ready_count(envs["a"]) == 2)
    mine = tmp_path / "disk.img"
    mine.write_bytes(b"the job's own, already written to")
    assert p.take(envs["a"], mine) is False
    assert mine.read_bytes() == b"the job's own, already written to"


def test_an_empty_pool_or_another_quota_mode_answers_no(tmp_path, pool):
    envs = environments(tmp_path, {"id": "a", "diskGB": 0.02}, {"id": "t", "diskGB": 0.02, "diskQuota": "tmpfs"})
    p = pool(depth=0)  # nothing is ever prepared
    p.start(envs.values())
    assert p.take(envs["a"], tmp_path / "x.img") is False and not (tmp_path / "x.img").exists()
    q = pool()
    q.start([envs["t"]])
    assert q.take(envs["t"], tmp_path / "y.img") is False
    assert not (tmp_path / "quota-pool").exists() or not any((tmp_path / "quota-pool").iterdir())


def test_start_up_throws_away_what_it_cannot_trust(tmp_path, pool):
    old = environments(tmp_path, {"id": "a", "diskGB": 0.02}, {"id": "gone", "diskGB": 0.02})
    first = pool()
    first.start(old.values())
    wait_for(lambda: first.ready_count(old["a"]) == 2 and first.ready_count(old["gone"]) == 2)
    first.close()
    folder = tmp_path / "quota-pool" / env_folder_name("a")
    (folder / ".tmp-crashed").write_bytes(b"half formatted")  # a crash in the middle of a format
    (folder / f"{old['a'].disk_bytes}-truncated.img").write_bytes(b"short")  # right name, wrong size
    # Next start: "a" now has another diskGB and "gone" is no longer configured.
    new = environments(tmp_path, {"id": "a", "diskGB": 0.03})
    second = pool()
    second.start(new.values())
    assert not (tmp_path / "quota-pool" / env_folder_name("gone")).exists()
    assert not (folder / ".tmp-crashed").exists()
    wait_for(lambda: second.ready_count(new["a"]) == 2)
    second.close()
    sizes = {f.stat().st_size for f in folder.iterdir()}
    assert sizes == {new["a"].disk_bytes} and len(list(folder.iterdir())) == 2


EXT4_UUID_AT = 0x468  # s_uuid in the superblock (at 1024) + 0x68


def fs_uuid(path: Path) -> bytes:
    with open(path, "rb") as f:
        f.seek(EXT4_UUID_AT)
        return f.read(16)


@pytest.mark.docker
def test_a_job_mounts_a_filesystem_the_pool_formatted(make_daemon):
    """The daemon fills the pool at start; a job's disk.img is one of those images (same ext4
    UUID), and the pool is full again after it."""
    daemon = make_daemon(environments=[{"id": "e", "nCPU": 0.5, "ramGB": 0.25, "diskGB": 0.05, "maxJobs": 2}])
    folder = daemon.data_dir / "quota-pool" / env_folder_name("e")
    ready = lambda: sorted(folder.glob("*.img")) if folder.is_dir() else []  # noqa: E731
    wait_for(lambda: len(ready()) == 2)
    pooled = {fs_uuid(image) for image in ready()}
    client = daemon.client()
    job_id = client.start(dataset(daemon.assets), raw("import time\ntime.sleep(2)"), "e")["jobId"]
    wait_done(client, job_id, statuses={40})
    image = daemon.data_dir / "jobs" / job_id / "disk.img"
    assert fs_uuid(image) in pooled
    assert wait_done(client, job_id)["status"] == 70
    wait_for(lambda: len(ready()) == 2)
    assert not image.exists()
