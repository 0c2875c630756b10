"""Fair queueing (issue #7): per-environment slots, FIFO, every job finishes, currentJobs is right."""

from __future__ import annotations

import json

import pytest

from runnerd.client import ApiError
from tests.helpers import dataset, raw, result_of, wait_done

pytestmark = pytest.mark.docker

# Each job records when its algorithm ran; overlaps are computed from those records, so the test
# checks concurrency without timing anything itself.
STAMP = """
import json, time
start = time.time()
time.sleep(0.6)
json.dump({"start": start, "end": time.time()}, open("/data/outputs/span.json", "w"))
"""


def _max_overlap(spans: list[tuple[float, float]]) -> int:
    events = sorted([(s, 1) for s, _ in spans] + [(e, -1) for _, e in spans])
    current = peak = 0
    for _, delta in events:
        current += delta
        peak = max(peak, current)
    return peak


def test_jobs_run_at_most_max_jobs_at_a_time_in_order(make_daemon):
    daemon = make_daemon(environments=[
        {"id": "one", "nCPU": 0.25, "ramGB": 0.25, "diskGB": 0.02, "maxJobs": 1},
        {"id": "two", "nCPU": 0.25, "ramGB": 0.25, "diskGB": 0.02, "maxJobs": 2},
    ], maxJobsPerOwner=0)  # one client queues all 20 jobs (the per-owner cap: test_owner_limits.py)
    did = dataset(daemon.assets)
    client = daemon.client()
    submitted = {env: [client.start(did, raw(STAMP), env)["jobId"] for _ in range(10)] for env in ("one", "two")}
    envs = {e["id"]: e for e in client.environments()}
    assert envs["one"]["currentJobs"] <= 1 and envs["two"]["currentJobs"] <= 2
    assert envs["one"]["queuedJobs"] + envs["one"]["currentJobs"] >= 1

    for env, limit in (("one", 1), ("two", 2)):
        spans = []
        for job_id in submitted[env]:
            job = wait_done(client, job_id, timeout=240)
            assert job["status"] == 70, job
            span = json.loads(result_of(client, job, "output", "span.json"))
            spans.append((span["start"], span["end"]))
        assert _max_overlap(spans) <= limit
        starts = [s for s, _ in spans]
        if limit == 1:
            assert starts == sorted(starts)  # strictly FIFO with a single slot
        else:
            # with two slots, a job never starts before one submitted two places earlier
            assert all(starts[i] >= starts[i - 2] for i in range(2, len(starts)))
    envs = {e["id"]: e for e in client.environments()}
    assert envs["one"]["currentJobs"] == envs["two"]["currentJobs"] == 0
    assert envs["one"]["queuedJobs"] == envs["two"]["queuedJobs"] == 0


def test_queue_bound_answers_503_and_stopping_a_queued_job_frees_its_place(make_daemon):
    daemon = make_daemon(environments=[
        {"id": "tiny", "nCPU": 0.25, "ramGB": 0.25, "diskGB": 0.02, "maxJobs": 1, "maxQueue": 1},
    ])
    did = dataset(daemon.assets)
    client = daemon.client()
    running = client.start(did, raw("import time\ntime.sleep(3)"), "tiny")["jobId"]
    wait_done(client, running, statuses={10, 20, 30, 40})
    queued = client.start(did, raw("print(1)"), "tiny")["jobId"]
    with pytest.raises(ApiError) as refused:
        client.start(did, raw("print(1)"), "tiny")
    assert refused.value.status == 503 and refused.value.body["code"] == "queue_full"
    stopped = client.stop(queued)[0]
    assert stopped["status"] == 7 and stopped["stopreq"] == 1 and stopped["dateFinished"] is not None
    again = client.start(did, raw("print(1)"), "tiny")["jobId"]
    assert wait_done(client, running)["status"] == 70
    assert wait_done(client, again)["status"] == 70
