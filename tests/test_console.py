"""The web console (#14): the operator's page, in a real browser (Debian's chromium, headless,
driven by selenium), and its access rule over plain HTTP: tokenless only from loopback to a
loopback-bound daemon, elsewhere only with the operator token; never a job's code, custom data,
dataset location or result names."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.helpers import Daemon, base_config, dataset, raw, wait_done
from tests.netutil import docker_bridge_ip


ROOT = Path(__file__).resolve().parent.parent
SCREENSHOT = ROOT / "docs" / "images" / "console.png"
# Markers that must never reach the console: in the code, the custom data, the dataset's file name
# (its location in the catalog) and a result's name.
CODE_MARK, CUSTOM_MARK, DATA_MARK, RESULT_MARK = "codemark7f3a", "custommark51c2", "datamark9b7e", "resultmark44d0"
SECRET_JOB = f"""
import sys, time  # {CODE_MARK}
open("/data/outputs/{RESULT_MARK}.txt", "w").write("x")
time.sleep(float(sys.argv[1]) if len(sys.argv) > 1 else SLEEP)
"""


def _short(address: str) -> str:
    return f"{address[:6]}…{address[-4:]}"


def _secret_job(daemon: Daemon, sleep: float = 0):
    did = dataset(daemon.assets, name=DATA_MARK)
    algorithm = raw(SECRET_JOB.replace("SLEEP", str(sleep)))
    algorithm["algocustomdata"] = {"note": CUSTOM_MARK}
    client = daemon.client()
    return client, client.start(did, algorithm, "ocean-compute")["jobId"]


def _assert_nothing_private(text: str) -> None:
    for mark in (CODE_MARK, CUSTOM_MARK, DATA_MARK, RESULT_MARK):
        assert mark not in text, mark


# -- what the state says (no daemon) ------------------------------------------------------------


def test_state_counts_the_hour_and_shows_only_listed_fields():
    from runnerd.api.console_state import build_state
    from runnerd.config import parse_config
    from runnerd.domain import JobStatus
    from runnerd.store.console import ConsoleJob

    now = 10_000.0
    owner = "0x" + "ab" * 20

    def job(i, status, created, left=None, finished=None, error=None):
        history = [(1, created)] + ([(40, left)] if left else []) + ([(int(status), finished)] if finished else [])
        return ConsoleJob(f"j{i}", owner, "e", status, created, finished, error, tuple(history))

    jobs = [
        job(1, JobStatus.QUEUED, now - 150),                                   # queued the last 3 minutes
        job(2, JobStatus.RUNNING, now - 1000, left=now - 700),                 # queued 300 s, long ago
        job(3, JobStatus.COMPLETED, now - 500, left=now - 490, finished=now - 30),
        job(4, JobStatus.ALGORITHM_FAILED, now - 400, left=now - 399, finished=now - 90, error="exited with code 3"),
        job(5, JobStatus.COMPLETED, now - 9000, left=now - 8999, finished=now - 8000),  # before the hour
    ]
    settings = parse_config({"environments": [{"id": "e", "maxJobs": 2}]})
    state = build_state(settings, None, "0x" + "cd" * 20, jobs, False, now)
    charts = state["charts"]
    assert sum(charts["completed"]) == 1 and charts["completed"][-1] == 1
    assert sum(charts["failed"]) == 1 and charts["failed"][-2] == 1
    assert charts["queue"][-3:] == [1, 1, 1] and charts["queue"][-4] == 0  # job 1, at each minute's end
    assert charts["queue"][-17] == 1 and charts["queue"][-12] == 0  # job 2: queued until 700 s ago
    assert state["environments"][0]["queued"] == 1
    rows = {j["jobId"]: j for j in state["jobs"]}
    assert rows["j1"]["owner"] == "0xabab…abab"
    assert [j["jobId"] for j in state["failures"]] == ["j4"] and rows["j4"]["error"] == "exited with code 3"
    assert rows["j2"]["queuedSeconds"] == 300 and rows["j3"]["runSeconds"] == 460
    assert [j["jobId"] for j in state["jobs"]][:2] == ["j1", "j2"]  # in flight first


async def test_the_store_read_is_bounded_and_indexed(tmp_path):
    from runnerd.domain import Job, JobStatus
    from runnerd.store import Database
    from runnerd.store import console as query

    db = await Database.open(tmp_path / "runnerd.db")
    try:
        now = time.time()

        def job(i, status, created, finished=None):
            return Job(f"job{i:04}", "0x" + "ab" * 20, "did:op:x", "e", f"a{i}", "did:op:algo", ["did:op:x"],
                       status, created, finished)

        old = [job(i, JobStatus.COMPLETED, now - 9000 + i, now - 8000 + i) for i in range(300)]
        recent = [job(300 + i, JobStatus.ALGORITHM_FAILED, now - 5000, now - 600 + i) for i in range(3)]
        waiting = [job(400 + i, JobStatus.QUEUED, now - 7000 + i) for i in range(2)]  # older than the hour
        await db_store(db).import_jobs([*waiting, *recent, *old])
        jobs, cut = await db_store(db).console_jobs(now - 3600)
        ids = {j.job_id for j in jobs}
        assert not cut and len(ids) == 200 + 5  # the 200 newest rows, and what the hour's charts need
        assert {j.job_id for j in recent + waiting} <= ids
        assert [j.created for j in jobs] == sorted((j.created for j in jobs), reverse=True)
        jobs, cut = await query.console_jobs(db, now - 3600, recent=10, cap=4)
        assert cut and len(jobs) == 10 + 4  # the window's rows stop at the cap, and say so
        plan = [r[3] for r in await db.fetchall("EXPLAIN QUERY PLAN " + query.WINDOW_SQL, (0, 1))]
        assert not [step for step in plan if step.startswith("SCAN")], plan  # two index searches
        plan = [r[3] for r in await db.fetchall("EXPLAIN QUERY PLAN " + query.NEWEST_SQL, (1,))]
        assert plan == ["SCAN jobs"], plan  # in rowid order, stopping at the limit: no sort
    finally:
        await db.close()


def db_store(db):
    from runnerd.store import JobStore

    return JobStore(db)


# -- the access rule over plain HTTP --------------------------------------------------------------


class BridgeDaemon(Daemon):
    """A daemon listening on the docker bridge address: beyond loopback, but on this machine."""

    host: str = ""

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self, wait: bool = True) -> "Daemon":
        import yaml

        self.root.mkdir(parents=True, exist_ok=True)
        (self.root / "environments.yaml").write_text(yaml.safe_dump(self.config))
        argv = [sys.executable, "-m", "runnerd", "serve", "--config", str(self.root / "environments.yaml"),
                "--data-dir", str(self.data_dir), "--assets", str(self.assets), "--host", self.host,
                "--port", str(self.port)]
        self.proc = subprocess.Popen(argv, stdout=open(self.log_path, "ab"), stderr=subprocess.STDOUT,
                                     start_new_session=True)
        if wait:
            self.wait_healthy()
        return self


@pytest.fixture
def bridge_daemon(tmp_path):
    daemon = BridgeDaemon(tmp_path / "bridge", base_config())
    daemon.host = docker_bridge_ip()
    daemon.start()
    yield daemon
    daemon.stop()
    left = daemon.leftover_containers()
    if left:
        subprocess.run(["docker", "rm", "-f", *left], capture_output=True)
        pytest.fail(f"{len(left)} container(s) left behind", pytrace=False)


@pytest.mark.docker
def test_beyond_loopback_the_console_needs_the_operator_token(bridge_daemon):
    daemon = bridge_daemon
    token_file = daemon.data_dir / "console.token"
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
    token = token_file.read_text().strip()
    assert len(token) == 64 and int(token, 16) >= 0
    # the start log names the URL with its token, for the operator to open
    assert f"web console: {daemon.url}/console?token={token}" in daemon.log()
    state = f"{daemon.url}/console/api/state"
    for path in ("/console", "/console/console.js", "/console/api/state"):
        r = httpx.get(daemon.url + path)
        assert r.status_code == 401 and r.json()["code"] == "console_token", (path, r.text)
        assert set(r.json()) == {"error", "code"}
    assert httpx.get(state, params={"token": "0" * 64}).status_code == 401
    assert httpx.get(state, headers={"Authorization": f"Bearer {token[:-1]}"}).status_code == 401

    client, job_id = _secret_job(daemon)
    job = wait_done(client, job_id)
    assert job["status"] == 70, job
    assert any(r["filename"] == f"{RESULT_MARK}.txt" for r in job["results"])  # the marker is real

    r = httpx.get(state, headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 200
    assert "Access-Control-Allow-Origin" not in r.headers  # no other origin reads it
    assert r.headers["Cache-Control"] == "no-store"
    body = r.json()
    [row] = [j for j in body["jobs"] if j["jobId"] == job_id]
    assert set(row) == {"jobId", "owner", "environment", "status", "statusText", "terminal", "dateCreated",
                        "dateFinished", "queuedSeconds", "runSeconds", "error", "statusHistory"}
    assert row["owner"] == _short(client.address) and row["status"] == 70
    _assert_nothing_private(r.text)

    # ?token= once: a redirect that drops it from the address, and an HttpOnly SameSite cookie
    r = httpx.get(f"{daemon.url}/console", params={"token": token})
    assert r.status_code == 303 and r.headers["Location"] == "/console"
    cookie = r.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/console" in cookie
    with httpx.Client(cookies=r.cookies) as browser:
        page = browser.get(f"{daemon.url}/console")
        assert page.status_code == 200 and "text/html" in page.headers["content-type"]
        assert "frame-ancestors 'none'" in page.headers["Content-Security-Policy"]
        _assert_nothing_private(page.text + browser.get(state).text)
    # the rest of the API keeps answering every origin (Ocean browser clients)
    assert httpx.get(daemon.url + "/").headers["Access-Control-Allow-Origin"] == "*"


@pytest.mark.docker
def test_on_loopback_only_local_requests_need_no_token(shared_daemon):
    state = f"{shared_daemon.url}/console/api/state"
    r = httpx.get(state)
    assert r.status_code == 200, r.text
    assert "Access-Control-Allow-Origin" not in r.headers
    assert {e["id"] for e in r.json()["environments"]} == {"ocean-compute", "small"}
    assert "web console: http://127.0.0.1:" in shared_daemon.log()
    # a page of another site whose name resolves to 127.0.0.1 (DNS rebinding) sends its own Host;
    # a proxy on this host forwards someone else's request: neither is local
    for headers in ({"Host": "attacker.example"}, {"X-Forwarded-For": "203.0.113.9"},
                    {"Forwarded": "for=203.0.113.9"}):
        r = httpx.get(state, headers=headers)
        assert r.status_code == 401 and r.json()["code"] == "console_token", headers
    token = (shared_daemon.data_dir / "console.token").read_text().strip()
    assert httpx.get(state, headers={"Host": "attacker.example", "Authorization": f"Bearer {token}"}).status_code == 200
    # a preflight gets no CORS grant either
    pre = httpx.options(state, headers={"Origin": "http://attacker.example", "Access-Control-Request-Method": "GET"})
    assert "Access-Control-Allow-Origin" not in pre.headers


# -- in a real browser ------------------------------------------------------------------------------


def _browser():
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    problem = None
    try:
        from selenium import webdriver
    except ImportError:
        problem = "selenium is not installed (pip install -e .[test])"
    if problem is None and not (chromium and driver):
        problem = "chromium and chromedriver are not installed (apt-get install chromium chromium-driver)"
    if problem:
        if os.environ.get("RUNNERD_REQUIRE_BROWSER") == "1":
            pytest.fail(f"RUNNERD_REQUIRE_BROWSER=1 but {problem}")
        pytest.skip(problem)
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--window-size=1400,900", "--force-device-scale-factor=1"):
        options.add_argument(arg)
    return webdriver.Chrome(service=Service(driver), options=options)


def _wait(predicate, timeout: float = 90):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise TimeoutError("the page did not show it in time")


@pytest.mark.docker
def test_the_console_in_a_browser_follows_a_job_live(make_daemon):
    browser = _browser()
    # The page redraws every 2 s, so elements go stale: read text in one script call each time.
    read_row = "const r = document.querySelector(arguments[0]); return r && [...r.cells].map(c => c.innerText)"
    read_text = "const e = document.querySelector(arguments[0]); return e ? e.innerText : ''"
    client = job_id = None
    try:
        daemon = make_daemon(environments=[
            {"id": "ocean-compute", "nCPU": 1, "ramGB": 0.5, "diskGB": 0.1, "maxJobs": 2, "maxJobDuration": 120,
             "description": "default CPU jobs"},
            {"id": "small", "nCPU": 0.5, "ramGB": 0.25, "diskGB": 0.05, "maxJobs": 1, "maxJobDuration": 60}])
        did = dataset(daemon.assets)
        failer = daemon.client()
        failed = failer.start(did, raw("import sys\nprint('bad input')\nsys.exit(3)"), "small")["jobId"]
        wait_done(failer, failed)
        client, job_id = _secret_job(daemon, sleep=8)

        browser.get(f"{daemon.url}/console")
        row = f'#jobs tr[data-job-id="{job_id}"]'
        slots = '[data-env="ocean-compute"] .slots'

        def cells():
            return browser.execute_script(read_row, row)

        running = _wait(lambda: (c := cells()) and c[3].startswith("40") and c)
        assert running[1] == _short(client.address) and running[2] == "ocean-compute"
        assert running[3] == "40 Running algorithm"
        assert "1/2 running" in browser.execute_script(read_text, slots)
        reason = browser.execute_script(read_text, f'#failures tr[data-job-id="{failed}"] .reason')
        assert "exited with code 3" in reason
        # the docs' picture: a job running, a failure below, the hour's charts
        SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
        assert browser.save_screenshot(str(SCREENSHOT))
        # no reload: the page polls and shows the end
        _wait(lambda: (c := cells()) and c[3] == "70 Job completed")
        _wait(lambda: "0/2 running" in browser.execute_script(read_text, slots))
        assert "2 in the hour (1 failed)" in browser.execute_script(read_text, "#finished-total")
        _assert_nothing_private(browser.page_source)
    finally:
        browser.quit()
        if job_id:  # a failed assertion must not leave the sleeping job to the teardown
            wait_done(client, job_id)
