"""Never lose a job (issue #4): kill -9 mid-step, containers removed behind our back, Docker
unreachable, stop, delete and expiry — all against a real daemon process and real Docker."""

from __future__ import annotations

import sqlite3
import time

import httpx
import pytest

from tests.dockerproxy import DockerProxy
from runnerd.client import ApiError
from tests.helpers import Daemon, dataset, docker_containers, raw, result_of, wait_done

pytestmark = pytest.mark.docker

SLEEPER = """
import time
print("working", flush=True)
time.sleep({seconds})
open("/data/outputs/out.txt", "w").write("done")
print("finished", flush=True)
"""
MANY_OUTPUTS = """
import os
for i in range(1500):
    with open(f"/data/outputs/part-{i:04}.bin", "wb") as f:
        f.write(os.urandom(16 * 1024))
print("wrote 1500 files")
"""
READ_INPUT = ("import json, os\nd = json.loads(os.environ['DIDS'])[0]\n"
              "print('input:', open(f'/data/inputs/{d}/0').read())")


def _wait_for(client, job_id: str, status: int, timeout: float = 60) -> dict:
    deadline = time.time() + timeout
    while time.time() < deadline:
        job = client.job(job_id)
        if job["status"] == status:
            return job
        if job["status"] > status and job["status"] not in (7,):
            raise AssertionError(f"job {job_id} passed status {status}: {job}")
        time.sleep(0.03)
    raise TimeoutError(f"job {job_id} never reached {status}")


def test_kill_9_in_every_step_then_restart_finishes_every_job(make_daemon, http_server):
    http_server.files["/slow.csv"] = b"x,y\n7,8\n"
    http_server.delay = 8
    daemon = make_daemon(provisionAllow=[http_server.host], environments=[
        {"id": "ocean-compute", "nCPU": 0.5, "ramGB": 0.25, "diskGB": 0.1, "maxJobs": 4, "maxOutputFiles": 5000},
    ])
    client = daemon.client()
    local = dataset(daemon.assets)
    remote = dataset(daemon.assets, url=http_server.url("/slow.csv"))
    in_provision = client.start(remote, raw(READ_INPUT), "ocean-compute")["jobId"]
    in_algorithm = client.start(local, raw(SLEEPER.format(seconds=8)), "ocean-compute")["jobId"]
    _wait_for(client, in_provision, 20)
    _wait_for(client, in_algorithm, 40)
    in_filter = client.start(local, raw(MANY_OUTPUTS), "ocean-compute")["jobId"]
    _wait_for(client, in_filter, 50)
    assert client.job(in_provision)["status"] == 20 and client.job(in_algorithm)["status"] == 40

    daemon.kill()  # SIGKILL: no cleanup of any kind
    daemon.start()

    job = wait_done(client, in_provision, timeout=120)
    assert job["status"] == 70, job
    assert "input: x,y" in result_of(client, job, "algorithmLog").decode()
    job = wait_done(client, in_algorithm, timeout=120)
    assert job["status"] == 70, job
    assert result_of(client, job, "output", "out.txt") == b"done"
    log = result_of(client, job, "algorithmLog").decode()
    assert log.count("working") == 1 and "finished" in log  # re-attached, not re-run
    job = wait_done(client, in_filter, timeout=120)
    assert job["status"] == 70, job
    outputs = [r for r in job["results"] if r["type"] == "output"]
    assert len(outputs) == 1500 and all(r["filesize"] == 16 * 1024 for r in outputs)
    assert client.job(in_filter)["jobId"] == in_filter
    assert docker_containers(f"runnerd.job={in_algorithm}") == []


def test_kill_9_right_after_a_skipped_provision_then_restart_finishes_the_job(make_daemon):
    """A local-data raw-code job runs no provision container (#13): killed as soon as it reports
    30 (while its algorithm's container is being created, or just started), it still finishes."""
    daemon = make_daemon()
    client = daemon.client()
    job_id = client.start(dataset(daemon.assets), raw(SLEEPER.format(seconds=1)), "ocean-compute")["jobId"]
    deadline = time.time() + 60
    while client.job(job_id)["status"] < 30 and time.time() < deadline:
        time.sleep(0.005)
    daemon.kill()  # SIGKILL: no cleanup of any kind
    daemon.start()
    job = wait_done(client, job_id, timeout=120)
    assert job["status"] == 70, (job, daemon.log()[-3000:])
    assert [h["status"] for h in job["statusHistory"]] == [1, 10, 20, 30, 40, 50, 60, 70]
    assert result_of(client, job, "output", "out.txt") == b"done"
    assert "local file, mounted read-only" in result_of(client, job, "configurationLog").decode()
    assert docker_containers(f"runnerd.job={job_id}") == []


def test_algorithm_container_removed_behind_our_back_ends_at_76(make_daemon):
    daemon = make_daemon()
    client = daemon.client()
    job_id = client.start(dataset(daemon.assets), raw(SLEEPER.format(seconds=30)), "ocean-compute")["jobId"]
    _wait_for(client, job_id, 40)
    name = f"runnerd-{job_id}-algorithm"
    deadline = time.time() + 30
    while not docker_containers(f"runnerd.job={job_id}") and time.time() < deadline:
        time.sleep(0.05)
    import subprocess

    subprocess.run(["docker", "rm", "-f", name], check=True, capture_output=True)
    job = wait_done(client, job_id)
    assert job["status"] == 76 and job["statusText"] == "Job interrupted", job
    assert "removed outside runnerd" in job["error"]
    assert job["terminationDetails"]["reason"] == "lost"
    assert float(job["dateFinished"]) > 0


def test_docker_unreachable_mid_job_then_back(make_daemon, tmp_path, monkeypatch):
    proxy = DockerProxy(str(tmp_path / "docker.sock"))
    monkeypatch.setenv("DOCKER_HOST", proxy.docker_host)
    daemon = make_daemon(dockerOutageSeconds=120)
    client = daemon.client()
    job_id = client.start(dataset(daemon.assets), raw(SLEEPER.format(seconds=4)), "ocean-compute")["jobId"]
    _wait_for(client, job_id, 40)
    proxy.down()
    deadline = time.time() + 30
    while httpx.get(f"{daemon.url}/health").status_code == 200 and time.time() < deadline:
        time.sleep(0.2)
    health = httpx.get(f"{daemon.url}/health")
    assert health.status_code == 503 and health.json()["docker"] == "down"
    assert client.job(job_id)["status"] == 40  # status is still served from the store
    with pytest.raises(ApiError) as refused:  # a start (signed, valid) waits for Docker: refused for now
        client.start(dataset(daemon.assets), raw("print(1)"), "ocean-compute")
    assert refused.value.status == 503 and refused.value.body["code"] == "docker_unavailable"
    # the running job's wait broke with the connection, and its step is riding the outage out
    deadline = time.time() + 30
    while "Docker unavailable" not in daemon.log() and time.time() < deadline:
        time.sleep(0.2)
    assert "Docker unavailable" in daemon.log()
    proxy.up()
    job = wait_done(client, job_id, timeout=120)
    assert job["status"] == 70, (job, daemon.log()[-3000:])
    assert result_of(client, job, "output", "out.txt") == b"done"
    assert httpx.get(f"{daemon.url}/health").status_code == 200
    assert daemon.proc.poll() is None  # it never crashed
    proxy.down()


def test_stop_keeps_logs_and_partial_outputs(make_daemon):
    daemon = make_daemon()
    client = daemon.client()
    code = ("import time\nopen('/data/outputs/partial.txt', 'w').write('half')\nprint('ready', flush=True)\n"
            "time.sleep(60)")
    job_id = client.start(dataset(daemon.assets), raw(code), "ocean-compute")["jobId"]
    _wait_for(client, job_id, 40)
    deadline = time.time() + 30
    while time.time() < deadline:
        with client.log_stream(job_id, follow=False) as r:
            if b"ready" in r.read():
                break
        time.sleep(0.1)
    answer = client.stop(job_id)[0]
    assert answer["stopreq"] == 1
    job = wait_done(client, job_id)
    assert job["status"] == 7 and job["statusText"] == "Job stopped", job
    assert job["terminationDetails"]["reason"] == "stopped"
    assert result_of(client, job, "output", "partial.txt") == b"half"
    assert "ready" in result_of(client, job, "algorithmLog").decode()
    # stopping a finished job changes nothing
    again = client.stop(job_id)[0]
    assert again["status"] == 7 and again["dateFinished"] == job["dateFinished"]


def test_delete_leaves_no_file_container_or_row(make_daemon):
    daemon = make_daemon()
    client = daemon.client()
    did = dataset(daemon.assets)
    finished = wait_done(client, client.start(did, raw("print(1)"), "ocean-compute")["jobId"])["jobId"]
    running = client.start(did, raw(SLEEPER.format(seconds=60)), "ocean-compute")["jobId"]
    _wait_for(client, running, 40)
    for job_id in (finished, running):
        answer = client.delete(job_id)
        assert [j["status"] for j in answer] == [8] and answer[0]["statusText"] == "Job deleted successfully"
        with pytest.raises(ApiError) as gone:
            client.job(job_id)
        assert gone.value.status == 404
        assert not (daemon.data_dir / "jobs" / job_id).exists()
        assert docker_containers(f"runnerd.job={job_id}") == []
    with sqlite3.connect(daemon.data_dir / "runnerd.db") as db:
        assert db.execute("SELECT COUNT(*) FROM jobs").fetchone()[0] == 0
        assert db.execute("SELECT COUNT(*) FROM steps").fetchone()[0] == 0


def test_expired_results_are_swept_and_status_says_removed(make_daemon):
    daemon = make_daemon(sweepIntervalSeconds=1, environments=[
        {"id": "ocean-compute", "nCPU": 0.5, "ramGB": 0.25, "diskGB": 0.05, "storageExpiry": 1},
    ])
    client = daemon.client()
    job = wait_done(client, client.start(dataset(daemon.assets), raw("open('/data/outputs/r.txt','w').write('r')"),
                                         "ocean-compute")["jobId"])
    assert job["status"] == 70 and job["removed"] == 0 and job["results"]
    deadline = time.time() + 30
    while client.job(job["jobId"])["removed"] == 0 and time.time() < deadline:
        time.sleep(0.2)
    swept = client.job(job["jobId"])
    assert swept["removed"] == 1 and swept["results"] == [] and swept["status"] == 70
    assert not (daemon.data_dir / "jobs" / job["jobId"]).exists()
    with pytest.raises(ApiError) as gone:
        client.result(job["jobId"], 0)
    assert gone.value.status == 404


def test_sigterm_leaves_running_jobs_alone_and_restart_reattaches(make_daemon):
    daemon: Daemon = make_daemon()
    client = daemon.client()
    job_id = client.start(dataset(daemon.assets), raw(SLEEPER.format(seconds=5)), "ocean-compute")["jobId"]
    _wait_for(client, job_id, 40)
    assert daemon.stop() == 0  # SIGTERM: a clean exit, promptly, although the job still runs
    assert docker_containers(f"runnerd.job={job_id}"), "the algorithm container must survive the daemon"
    daemon.start()
    job = wait_done(client, job_id)
    assert job["status"] == 70 and result_of(client, job, "output", "out.txt") == b"done"


def test_jobs_of_an_environment_removed_from_the_config_end_at_76(make_daemon):
    daemon = make_daemon(environments=[
        {"id": "keep", "nCPU": 0.5, "ramGB": 0.25, "diskGB": 0.05, "maxJobs": 1},
        {"id": "gone", "nCPU": 0.5, "ramGB": 0.25, "diskGB": 0.05, "maxJobs": 1},
    ])
    client = daemon.client()
    did = dataset(daemon.assets)
    running = client.start(did, raw(SLEEPER.format(seconds=60)), "gone")["jobId"]
    _wait_for(client, running, 40)
    queued = client.start(did, raw("print(1)"), "gone")["jobId"]
    assert client.job(queued)["status"] == 1
    daemon.stop()  # the running container carries on without the daemon
    daemon.config["environments"] = daemon.config["environments"][:1]
    daemon.start()
    for job_id in (running, queued):
        job = wait_done(client, job_id)
        assert job["status"] == 76 and "no longer exists" in job["error"] and job["dateFinished"], job
    assert docker_containers(f"runnerd.job={running}") == []


def test_jobs_wait_while_free_disk_is_below_the_floor(make_daemon):
    """diskFloorGB: new jobs wait in the queue instead of failing half-way (here the floor is
    beyond any disk, so the job can only wait; it is then stopped)."""
    daemon = make_daemon(diskFloorGB=10**6)
    client = daemon.client()
    job_id = client.start(dataset(daemon.assets), raw("print(1)"), "ocean-compute")["jobId"]
    for _ in range(10):  # the scheduler runs right after the submit and re-checks every 5 s
        assert client.job(job_id)["status"] == 1
        time.sleep(0.2)
    assert "below the floor" in daemon.log()
    assert httpx.get(f"{daemon.url}/health").status_code == 200
    env = client.environments()[0]
    assert env["queuedJobs"] == 1 and env["currentJobs"] == 0
    assert client.stop(job_id)[0]["status"] == 7
