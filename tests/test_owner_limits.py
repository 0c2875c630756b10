"""Issue #10 item 8 against a real daemon and real Docker: the results budget answers 429
`owner_limit` (while other owners still start), a finished job keeps no spec, and a sparse output
file is published without costing the host the blocks it does not hold. (maxJobsPerOwner and the
start rate, which need no container, run in-process: tests/test_api_inprocess.py.)"""

from __future__ import annotations

import secrets
import time
import sqlite3

import pytest

from runnerd.client import ApiError
from tests.helpers import dataset, raw, result_of, wait_done

pytestmark = pytest.mark.docker

ENV = {"id": "owners", "nCPU": 0.25, "ramGB": 0.25, "diskGB": 0.1, "maxJobs": 1, "maxQueue": 20,
       "maxJobDuration": 120}


def _refusal(call) -> ApiError:
    with pytest.raises(ApiError) as refused:
        call()
    return refused.value


def _db(daemon) -> sqlite3.Connection:
    return sqlite3.connect(f"file:{daemon.data_dir / 'runnerd.db'}?mode=ro", uri=True)


@pytest.fixture(scope="module")
def daemon(tmp_path_factory):
    from tests.helpers import Daemon, base_config

    # 0.0002 GB is ~210 KiB of kept results per owner.
    d = Daemon(tmp_path_factory.mktemp("owners"), base_config(
        environments=[ENV], maxJobsPerOwner=2, maxResultGBPerOwner=0.0002, startsPerMinutePerOwner=0)).start()
    yield d
    d.stop()
    assert d.leftover_containers() == []


WRITE_300K = "import os\nopen('/data/outputs/r.bin', 'wb').write(os.urandom(300 * 1024))"


def test_kept_results_over_the_budget_refuse_starts_until_deleted(daemon):
    did = dataset(daemon.assets)
    owner, other = daemon.client(), daemon.client()
    first = wait_done(owner, owner.start(did, raw(WRITE_300K), "owners")["jobId"])
    assert first["status"] == 70, first
    refused = _refusal(lambda: owner.start(did, raw("print(1)"), "owners"))
    assert refused.status == 429 and refused.body["code"] == "owner_limit"
    assert "maxResultGBPerOwner" in refused.body["error"] and "DELETE" in refused.body["error"]
    assert wait_done(other, other.start(did, raw("print(1)"), "owners")["jobId"])["status"] == 70
    owner.delete(first["jobId"])
    assert wait_done(owner, owner.start(did, raw("print(1)"), "owners")["jobId"])["status"] == 70


def test_a_finished_jobs_spec_leaves_the_database_and_its_results_stay(daemon):
    did = dataset(daemon.assets)
    client = daemon.client()
    marker = secrets.token_hex(16)
    code = f"# {marker}\nopen('/data/outputs/out.txt', 'w').write('kept')\n" + "#" * 100_000
    job = wait_done(client, client.start(did, raw(code), "owners")["jobId"])
    assert job["status"] == 70, job
    with _db(daemon) as db:
        (spec,) = db.execute("SELECT spec FROM jobs WHERE job_id = ?", (job["jobId"],)).fetchone()
    assert spec == "{}" and marker not in spec  # not kept for a week with the results
    assert client.job(job["jobId"])["status"] == 70 and job["removed"] == 0
    assert result_of(client, job, "output", "out.txt") == b"kept"


SPARSE = """
with open('/data/outputs/sparse.bin', 'wb') as f:
    f.write(b'start')
    f.seek(SIZE - 3)
    f.write(b'end')
"""


def _allocated(path) -> int:
    return path.stat().st_blocks * 512


def test_a_sparse_output_costs_the_host_only_its_data(daemon):
    """96 MiB apparent in a 0.1 GB quota: published as 96 MiB, holding a few KiB on the host, and
    charged to the owner's budget as such. One of 1 GiB is over diskGB: refused at 74."""
    did = dataset(daemon.assets)
    client = daemon.client()
    size = 96 * 1024 * 1024
    job = wait_done(client, client.start(did, raw(SPARSE.replace("SIZE", str(size))), "owners")["jobId"])
    assert job["status"] == 70, job
    published = daemon.data_dir / "jobs" / job["jobId"] / "results" / "outputs" / "sparse.bin"
    assert published.stat().st_size == size
    assert _allocated(published) < 1024 * 1024, _allocated(published)  # not 96 MiB of host disk
    entry = next(r for r in job["results"] if r["filename"] == "sparse.bin")
    assert entry["filesize"] == size
    params = {**client.signed(job["jobId"], str(entry["index"])), "jobId": job["jobId"],
              "index": str(entry["index"])}
    tail = client.http.get("/api/services/computeResult", params=params, headers={"Range": f"bytes={size - 8}-"})
    assert tail.status_code == 206 and tail.content == b"\0\0\0\0\0end"
    with _db(daemon) as db:
        (kept,) = db.execute("SELECT result_bytes FROM jobs WHERE job_id = ?", (job["jobId"],)).fetchone()
    assert 0 < kept < 1024 * 1024  # the budget is charged what the results occupy

    huge = wait_done(client, client.start(did, raw(SPARSE.replace("SIZE", str(1024**3))), "owners")["jobId"])
    assert huge["status"] == 74 and "outputs rejected" in huge["error"], huge
    assert not any(r["type"] == "output" for r in huge["results"])


def test_the_sweeper_deletes_rows_whose_results_expired_longer_ago_than_the_retention(make_daemon):
    daemon = make_daemon(environments=[{**ENV, "storageExpiry": 0}], sweepIntervalSeconds=1, jobRetentionSeconds=0)
    did = dataset(daemon.assets)
    client = daemon.client()
    job_id = client.start(did, raw("print(1)"), "owners")["jobId"]
    # No wait_done: the row may go within a second of the job's end. Only an ended job whose
    # results were removed is ever pruned.
    deadline = time.time() + 120
    while job_id in daemon.job_ids() and time.time() < deadline:
        time.sleep(0.5)
    assert job_id not in daemon.job_ids()  # expired, then pruned
    assert _refusal(lambda: client.job(job_id)).status == 404
