"""Inputs end to end (real daemon, real Docker): every input a client lists is mounted, what is
mounted is the file runnerd pinned, and mount sources name no asset path (#10 items 3 and 6, #11)."""

from __future__ import annotations

import json
import secrets

import pytest

from runnerd.client import API
from tests.helpers import dataset, raw, result_of, wait_done

pytestmark = pytest.mark.docker

MOUNTINFO_AND_INPUTS = """
import json, os
print(open("/proc/self/mountinfo").read())
for did in json.loads(os.environ["DIDS"]):
    print("input", did, sorted(os.listdir(f"/data/inputs/{did}")), open(f"/data/inputs/{did}/0").read().strip())
"""


def _ref(did: str) -> dict:
    return {"documentId": did, "serviceId": "compute", "transferTxId": "0x" + secrets.token_hex(32)}


def test_a_datasets_list_runs_on_every_input_and_mountinfo_names_no_asset_path(shared_daemon):
    assets = shared_daemon.assets
    marker = "zq-distinctive-" + secrets.token_hex(4)  # a folder and a file name the consumer must never see
    (assets / marker).mkdir(parents=True)
    (assets / marker / f"{marker}.csv").write_text("first\n")
    a = dataset(assets, files=[{"type": "file", "path": f"{marker}/{marker}.csv"}])
    b = dataset(assets, b"second\n")
    client = shared_daemon.client()
    first = _ref(a)
    body = {**client.signed(a), "environment": "ocean-compute", "algorithm": raw(MOUNTINFO_AND_INPUTS),
            "dataset": first, "datasets": [first, _ref(b)]}  # what ocean.js >= 4 sends
    started = client._json(client.http.post(f"{API}/compute", json=body))[0]
    job = wait_done(client, started["jobId"])
    assert job["status"] == 70, job
    assert job["inputDID"] == [a, b]
    log = result_of(client, job, "algorithmLog").decode()
    for did, content in ((a, "first"), (b, "second")):
        assert f"input {did.removeprefix('did:op:')} ['0'] {content}" in log, log
    assert f"/data/inputs/{a.removeprefix('did:op:')}/0" in log  # mountinfo was printed
    assert marker not in log and str(assets) not in log, log
    assert not (shared_daemon.data_dir / "jobs" / job["jobId"] / "pinned").exists()  # pins go with the job


def test_a_file_swapped_for_a_symlink_while_the_job_queues_is_not_read(make_daemon, tmp_path):
    daemon = make_daemon(environments=[{"id": "one", "nCPU": 1, "ramGB": 0.5, "diskGB": 0.1, "maxJobs": 1,
                                        "maxJobDuration": 120}])
    client = daemon.client()
    blocker = client.start(dataset(daemon.assets), raw("import time\ntime.sleep(300)"), "one")
    wait_done(client, blocker["jobId"], statuses={40})
    secret = "HOST-SECRET-" + secrets.token_hex(8)
    outside = tmp_path / "host-only"
    outside.mkdir()
    (outside / "shadow").write_text(secret + "\n")
    did = dataset(daemon.assets, b"the original rows\n", name="victim.csv")
    reader = ("import json, os\nd = json.loads(os.environ['DIDS'])[0]\n"
              "print('read:', open(f'/data/inputs/{d}/0').read())")
    queued = client.start(did, raw(reader), "one")
    assert client.job(queued["jobId"])["status"] == 1
    victim = daemon.assets / "files" / "victim.csv"
    victim.unlink()
    victim.symlink_to(outside / "shadow")  # dockerd, as root, would follow it
    client.stop(blocker["jobId"])
    job = wait_done(client, queued["jobId"])
    seen = [result_of(client, job, r["type"], r["filename"]) for r in job["results"]]
    assert not any(secret.encode() in s for s in seen), job
    assert secret not in json.dumps(job)
    # the job fails cleanly: the consumer learns which input, not where it lives
    assert job["status"] == 31, job
    assert did in job["error"] and str(tmp_path) not in job["error"] and "victim" not in job["error"]
