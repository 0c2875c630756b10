"""GET /metrics parses with Prometheus' own text parser and its counters move as jobs run (#5)."""

from __future__ import annotations

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.helpers import dataset, raw, wait_done

pytestmark = pytest.mark.docker


def scrape(daemon) -> dict[tuple[str, tuple], float]:
    r = httpx.get(f"{daemon.url}/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    samples = {}
    for family in text_string_to_metric_families(r.text):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return samples


def value(samples, name, **labels) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_metrics_move_as_jobs_run(make_daemon):
    daemon = make_daemon()
    before = scrape(daemon)
    assert value(before, "runnerd_docker_up") == 1.0
    client = daemon.client()
    did = dataset(daemon.assets)
    ok = wait_done(client, client.start(did, raw("print(1)"), "ocean-compute")["jobId"])
    failed = wait_done(client, client.start(did, raw("raise SystemExit(2)"), "ocean-compute")["jobId"])
    assert (ok["status"], failed["status"]) == (70, 71)
    after = scrape(daemon)
    env = "ocean-compute"
    assert value(after, "runnerd_jobs_finished_total", environment=env, status="70") == 1
    assert value(after, "runnerd_jobs_finished_total", environment=env, status="71") == 1
    assert value(after, "runnerd_jobs", environment=env, status="70") == 1
    assert value(after, "runnerd_queue_length", environment=env) == 0
    assert value(after, "runnerd_running_jobs", environment=env) == 0
    for step in ("provision", "algorithm", "filter"):
        assert value(after, "runnerd_step_duration_seconds_count", step=step) == 2
    # local data and raw code: the provision step runs without a container (#13), two per job
    assert value(after, "runnerd_container_start_seconds_count") >= 4
    started = value(after, "runnerd_job_transitions_total", status="40")
    assert started == 2
    route = "/api/services/compute"
    posts = value(after, "runnerd_api_request_seconds_count", method="POST", route=route, code="200")
    assert posts == 2
    assert value(after, "runnerd_api_request_seconds_count", method="GET", route=route, code="200") >= 2
    # a refused request is counted under its own code
    httpx.post(f"{daemon.url}{route}", json={})
    again = scrape(daemon)
    assert value(again, "runnerd_api_request_seconds_count", method="POST", route=route, code="400") == 1


def test_log_lines_are_one_event_each_with_the_job_id(make_daemon):
    """Structured lines for journald: `message level=… logger=… job=…`, one per event."""
    daemon = make_daemon()
    client = daemon.client()
    job = wait_done(client, client.start(dataset(daemon.assets), raw("print(1)"), "ocean-compute")["jobId"])
    lines = [line for line in daemon.log().splitlines() if job["jobId"] in line]
    assert len(lines) >= 8  # queued, admitted, and every status change
    for line in lines:
        assert f"job={job['jobId']}" in line and " level=" in line and " logger=runnerd." in line
    assert any("70 Job completed" in line for line in lines)
