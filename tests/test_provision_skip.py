"""Only the work a job needs (issue #13): a job whose inputs are local files and whose code is raw
(or a local file) has nothing to download, so no provision container runs; the statuses, the
configurationLog and crash recovery stay what a client expects. Real daemon, real Docker."""

from __future__ import annotations

import json
import subprocess
import time

import pytest

from tests.helpers import dataset, raw, result_of, wait_done

pytestmark = pytest.mark.docker

HELLO = "print('hello from the algorithm')"


def created_steps(job_id: str, since: float) -> list[str]:
    """The runnerd.step label of every container Docker created for the job since `since`: Docker's
    own record, so a container created and removed quickly is seen too."""
    out = subprocess.run(["docker", "events", "--since", f"{since:.3f}", "--until", f"{time.time() + 1:.3f}",
                          "--filter", "type=container", "--filter", "event=create",
                          "--filter", f"label=runnerd.job={job_id}", "--format", "{{json .Actor.Attributes}}"],
                         capture_output=True, text=True, timeout=60, check=True)
    return sorted(json.loads(line).get("runnerd.step", "?") for line in out.stdout.splitlines() if line.strip())


def statuses(job: dict) -> list[int]:
    return [h["status"] for h in job["statusHistory"]]


def test_local_data_raw_code_job_runs_no_provision_container(shared_daemon):
    client = shared_daemon.client()
    did = dataset(shared_daemon.assets, b"a,b\n1,2\n")
    since = time.time() - 1
    job = wait_done(client, client.start(did, raw(HELLO), "ocean-compute")["jobId"])
    assert job["status"] == 70, job
    assert statuses(job) == [1, 10, 20, 30, 40, 50, 60, 70]
    assert all(h["date"] for h in job["statusHistory"])
    assert created_steps(job["jobId"], since) == ["algorithm", "filter"]
    log = result_of(client, job, "configurationLog").decode()
    assert f"dataset {did} file 0: local file, mounted read-only" in log
    assert f"algorithm: raw code, {len(HELLO)} bytes" in log
    assert str(shared_daemon.root) not in log and str(shared_daemon.assets) not in log and "/" not in \
        log.replace(did, "")  # labels only: no host path, no URL
    assert "hello from the algorithm" in result_of(client, job, "algorithmLog").decode()


def test_url_dataset_job_still_runs_the_provision_container(make_daemon, http_server):
    http_server.files["/data.csv"] = b"x,y\n7,8\n"
    daemon = make_daemon(provisionAllow=[http_server.host])
    client = daemon.client()
    did = dataset(daemon.assets, url=http_server.url("/data.csv"))
    since = time.time() - 1
    code = "import json, os\nd = json.loads(os.environ['DIDS'])[0]\nprint('input:', open(f'/data/inputs/{d}/0').read())"
    job = wait_done(client, client.start(did, raw(code), "ocean-compute")["jobId"])
    assert job["status"] == 70, job
    assert statuses(job) == [1, 10, 20, 30, 40, 50, 60, 70]
    assert created_steps(job["jobId"], since) == ["algorithm", "filter", "provision"]
    assert f"fetching dataset {did} file 0" in result_of(client, job, "configurationLog").decode()
    assert "input: x,y" in result_of(client, job, "algorithmLog").decode()
