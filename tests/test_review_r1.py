"""Findings of the adversarial review of the #10 fixes (r1), over real HTTP to a real daemon.
(The replays of a used computeResult signature run in-process: tests/test_api_inprocess.py.)"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from tests.helpers import dataset, raw
from tests.test_client_compat import Js


@pytest.mark.docker
def test_a_replayed_nonce_free_stop_answers_without_capability_urls(shared_daemon):
    """ocean.js >= 3.3.3 stops with `consumerAddress + jobId` signed and no nonce: whoever saw that
    request can send it again at any time. Its answer must not hand out the results' links."""
    js = Js(shared_daemon.url)
    did = dataset(shared_daemon.assets)
    job_id = js.start(did, "open('/data/outputs/secret.txt', 'w').write('the data')\n")["jobId"]
    try:
        assert js.wait(job_id)["status"] == 70
        body = {"signature": js.sign(js.address + job_id, ""), "consumerAddress": js.address,
                "nonce": str(js.stored() + 1), "jobId": job_id}
        stopped = js.http.put("/api/services/compute", json=body)  # the owner's own (late) stop
        assert stopped.status_code == 200, stopped.text
        replayed = httpx.put(f"{shared_daemon.url}/api/services/compute", json=body, timeout=60)
        assert replayed.status_code == 200, replayed.text
        job = replayed.json()[0]
        assert job["results"] and job["resultsUrls"] == [] and job["algorithmLogUrl"] is None
    finally:
        js.http.request("DELETE", "/api/services/compute", json={
            "consumerAddress": js.address, "jobId": job_id,
            "signature": js.sign(js.address + job_id, str(js.stored() + 1))})


@pytest.mark.docker
def test_what_a_job_was_started_with_leaves_its_row_when_its_results_expire(make_daemon):
    """The restart record (raw code, custom data: up to maxRequestBytes) is kept so that a stopped
    or failed job can be restarted, but not for the row's whole retention: start-then-stop loops
    would otherwise fill the database for storageExpiry + jobRetentionSeconds."""
    daemon = make_daemon(environments=[{"id": "ocean-compute", "nCPU": 0.25, "ramGB": 0.25, "diskGB": 0.05,
                                        "storageExpiry": 0}], sweepIntervalSeconds=1)
    client = daemon.client()
    code = "print(1)\n#" + "x" * 200_000
    job_id = client.start(dataset(daemon.assets), raw(code), "ocean-compute")["jobId"]
    deadline = time.time() + 120
    while client.job(job_id, signed=False)["removed"] != 1:
        assert time.time() < deadline, "the job's results never expired"
        time.sleep(0.5)
    with sqlite3.connect(f"file:{daemon.data_dir / 'runnerd.db'}?mode=ro", uri=True) as db:
        (request,) = db.execute("SELECT request FROM jobs WHERE job_id = ?", (job_id,)).fetchone()
    assert request is None  # the sweep that removed its results dropped it


async def test_a_tag_restricted_image_entry_does_not_admit_another_image_of_the_repository_by_digest():
    """With a checksum Docker runs `image@digest` and ignores the tag, so an entry such as
    `acme/runtime:public-*` admits a digest only when it is the image that tag names here (a
    trusted algorithm's image of the same repository, whose DDO publishes its checksum, must not
    run as raw code)."""
    from runnerd.engine.images import Images
    from runnerd.errors import ImageMissing
    from tests.fakes import FakeRuntime

    public, secret, image_id = ("sha256:" + c * 64 for c in "abc")
    fake = FakeRuntime(images={"acme/runtime:public-1", f"acme/runtime@{public}", f"acme/runtime@{secret}", image_id})
    fake.digests["acme/runtime:public-1"] = (image_id, (public,))
    allowed = ("acme/runtime:public-*",)
    images = Images(fake, "never")
    with pytest.raises(ImageMissing, match="not that image's"):
        await images.resolve("acme/runtime", "public-1", secret, allowed)
    assert await images.resolve("acme/runtime", "public-1", public, allowed) == f"acme/runtime@{public}"
    assert await images.resolve("acme/runtime", "public-1", image_id, allowed) == image_id  # a local build's id
    with pytest.raises(ImageMissing):  # a tag the entry does not allow, whatever the digest
        await images.resolve("acme/runtime", "private", public, allowed)
    # an entry that allows every tag of the repository (or the digest itself) needs no such check
    assert await images.resolve("acme/runtime", "x", secret, ("acme/runtime",)) == f"acme/runtime@{secret}"
    assert await images.resolve("acme/runtime", "x", secret, (secret,)) == f"acme/runtime@{secret}"


@pytest.mark.skipif(os.geteuid() != 0, reason="bind mounts need root")
def test_a_pin_bound_from_another_mount_of_the_same_filesystem_is_unmounted(tmp_path, tmp_assets):
    """linkat answers EXDEV across two mounts of one filesystem too (an assets folder that is a bind
    mount, as in containers and many systemd setups): the pin is then a bind mount whose st_dev is
    its folder's. unpin must still unmount it, or the job's folder can never be removed."""
    from runnerd.catalog import Catalog
    from runnerd.config import parse_config
    from runnerd.engine.intake import Intake
    from runnerd.engine.pins import pin_all, unpin
    from runnerd.layout import JobPaths
    from tests.helpers import TEST_RAW_IMAGES

    paths = JobPaths.for_job(tmp_path / "data", "a" * 32)
    paths.root.mkdir(parents=True)
    source, other = tmp_path / "src", tmp_path / "other-mount"
    source.mkdir()
    other.mkdir()
    subprocess.run(["mount", "--bind", str(source), str(other)], check=True)
    try:
        (other / "rows.csv").write_text("same disk, other mount\n")
        os.chmod(other / "rows.csv", 0o644)
        did = dataset(tmp_assets, files=[{"type": "file", "path": str(other / "rows.csv")}])
        settings = parse_config({"environments": [{"id": "env", "rawAlgorithmImages": TEST_RAW_IMAGES}],
                                 "assetRoots": [str(other)]})
        job = Intake(settings, Catalog(tmp_assets, (other,))).build({
            "environment": "env", "algorithm": raw("print(1)"),
            "dataset": {"documentId": did, "serviceId": "compute", "transferTxId": "0x1"}}, "0x" + "1" * 40)
        pin_all(job, paths, 65532, 65532)
        pin = paths.pinned_input(0, 0)
        assert pin.read_text() == "same disk, other mount\n"
        unpin(paths)
        assert str(pin) not in Path("/proc/self/mounts").read_text()
        assert not paths.pinned.exists()
    finally:
        subprocess.run(["umount", str(paths.pinned_input(0, 0))], capture_output=True)
        subprocess.run(["umount", str(other)], capture_output=True)



async def test_used_result_suffixes_go_with_their_job(tmp_path):
    from runnerd.store import Database, JobStore
    from tests.test_store import make_job

    db = await Database.open(tmp_path / "runnerd.db")
    try:
        store = JobStore(db)
        job = make_job()
        await store.insert(job, max_queue=10)
        await store.spend_suffix(job.job_id, "15")
        await store.spend_suffix(job.job_id, "15")  # the same one twice is no error
        assert store.suffix_spent(job.job_id, "15") and not store.suffix_spent(job.job_id, "16")
        await store.delete(job.job_id)
        assert not store.suffix_spent(job.job_id, "15")
    finally:
        await db.close()
