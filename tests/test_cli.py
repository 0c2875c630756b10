"""The operator and consumer command line, run as a new user would (issue #5): assets add →
submit --wait (live stages, results downloaded) → status/logs -f/get/stop/delete, and --json."""

from __future__ import annotations

import json
import os
import re
import secrets
import subprocess
import sys
import threading
import time

import pytest

pytestmark = pytest.mark.docker

ALGO = """
import json, os, time
rows = open(f"/data/inputs/{json.loads(os.environ['DIDS'])[0]}/0").read().splitlines()
for i in range(3):
    print("tick", i, flush=True)
    time.sleep(0.5)
json.dump({"rows": len(rows)}, open("/data/outputs/result.json", "w"))
os.makedirs("/data/outputs/nested", exist_ok=True)
open("/data/outputs/nested/note.txt", "w").write("deep")
"""


def runnerd(daemon, *args, env=None, check=True, timeout=120):
    full_env = {**os.environ, "RUNNERD_URL": daemon.url, **(env or {})}
    proc = subprocess.run([sys.executable, "-m", "runnerd", *args], capture_output=True, text=True, env=full_env,
                          timeout=timeout, cwd=daemon.root)
    if check:
        assert proc.returncode == 0, (proc.returncode, proc.stdout, proc.stderr)
    return proc


@pytest.fixture
def user(make_daemon, tmp_path):
    """A daemon, a registered CSV (via the CLI) and a consumer with a key in the environment."""
    daemon = make_daemon(environments=[{"id": "ocean-compute", "nCPU": 0.5, "ramGB": 0.25, "diskGB": 0.05}])
    csv = tmp_path / "data.csv"
    csv.write_text("a,b\n1,2\n3,4\n")
    add = runnerd(daemon, "assets", "add", str(csv), "--allow-raw-algorithm", "--assets", str(daemon.assets),
                  "--data-dir", str(daemon.data_dir))
    did = add.stdout.strip()
    assert did.startswith("did:op:") and "registered dataset" in add.stderr
    (tmp_path / "algo.py").write_text(ALGO)
    env = {"RUNNERD_PRIVATE_KEY": "0x" + secrets.token_hex(32)}
    return daemon, did, env, tmp_path


def test_assets_list_shows_what_was_added_and_reports_bad_ddos(user):
    daemon, did, _, _ = user
    (daemon.assets / "broken.json").write_text("{not json")
    listed = runnerd(daemon, "assets", "list", "--assets", str(daemon.assets), "--data-dir", str(daemon.data_dir))
    assert did in listed.stdout and "dataset" in listed.stdout
    assert "broken.json" in listed.stderr


def test_submit_wait_shows_stages_and_downloads_results(user):
    daemon, did, env, tmp = user
    out = tmp / "results"
    proc = runnerd(daemon, "submit", "--dataset", did, "--algo-file", str(tmp / "algo.py"), "--image",
                   os.environ.get("RUNNERD_TEST_PYTHON_IMAGE", "runnerd-test-python:latest"), "--wait",
                   "--output", str(out), env=env)
    job_id = proc.stdout.strip()
    assert len(job_id) == 32
    stages = [line for line in proc.stderr.splitlines() if line.startswith("[") and "(still " not in line]
    expected = ["Warming up", "Job started", "Configuring volumes", "Provisioning success", "Running algorithm",
                "Filtering results", "Publishing results", "Job completed"]
    assert [re.sub(r"^\[.*?\]\s+\d+ ", "", s) for s in stages] == expected, proc.stderr  # every stage, in order
    seconds = [float(s[1:s.index("s]")]) for s in stages]
    assert seconds == sorted(seconds)  # each stage with the time it was reached
    assert json.loads((out / "result.json").read_text()) == {"rows": 3}
    assert (out / "nested" / "note.txt").read_text() == "deep"
    assert "tick 2" in (out / "algorithmLog-algorithm.log").read_text()

    status = runnerd(daemon, "status", job_id, env=env)
    assert job_id in status.stdout and "Job completed" in status.stdout
    as_json = json.loads(runnerd(daemon, "status", job_id, "--json", env=env).stdout)
    assert as_json[0]["status"] == 70
    got = runnerd(daemon, "get", job_id, "--index", "0", "--output", str(tmp / "again"), "--quiet", env=env)
    assert got.stdout.strip().endswith("nested/note.txt")  # outputs are listed by path
    deleted = runnerd(daemon, "delete", job_id, env=env)
    assert "Job deleted successfully" in deleted.stdout
    gone = runnerd(daemon, "status", job_id, env=env, check=False)
    assert gone.returncode == 1 and "404" in gone.stderr and "Traceback" not in gone.stderr


def test_logs_follow_streams_while_the_job_runs(user):
    daemon, did, env, tmp = user
    slow = "import time\nfor i in range(6):\n    print('line', i, flush=True)\n    time.sleep(0.5)\n"
    (tmp / "slow.py").write_text(slow)
    job_id = runnerd(daemon, "submit", "--dataset", did, "--algo-file", str(tmp / "slow.py"), "--image",
                     os.environ.get("RUNNERD_TEST_PYTHON_IMAGE", "runnerd-test-python:latest"), env=env).stdout.strip()
    full_env = {**os.environ, "RUNNERD_URL": daemon.url, **env}
    follower = subprocess.Popen([sys.executable, "-m", "runnerd", "logs", "-f", job_id], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, env=full_env)
    arrivals: list[tuple[float, str]] = []

    def read():
        for line in follower.stdout:
            arrivals.append((time.monotonic(), line.strip()))

    reader = threading.Thread(target=read)
    reader.start()
    assert follower.wait(timeout=120) == 0, follower.stderr.read()
    reader.join()
    lines = [text for _, text in arrivals]
    assert lines == [f"line {i}" for i in range(6)]
    # streamed, not fetched at the end: the first line arrived well before the last one
    assert arrivals[-1][0] - arrivals[0][0] > 1.0


def test_stop_from_the_cli_keeps_logs(user):
    daemon, did, env, tmp = user
    (tmp / "long.py").write_text("import time\nprint('started', flush=True)\ntime.sleep(60)\n")
    job_id = runnerd(daemon, "submit", "--dataset", did, "--algo-file", str(tmp / "long.py"), "--image",
                     os.environ.get("RUNNERD_TEST_PYTHON_IMAGE", "runnerd-test-python:latest"), env=env).stdout.strip()
    deadline = time.time() + 60
    while "Running algorithm" not in runnerd(daemon, "status", job_id, env=env).stdout and time.time() < deadline:
        time.sleep(0.2)
    early = runnerd(daemon, "get", job_id, "--output", str(tmp / "early"), env=env, check=False)
    assert early.returncode == 1 and "has not finished" in early.stderr and not (tmp / "early").exists()
    runnerd(daemon, "stop", job_id, env=env)
    while "Job stopped" not in runnerd(daemon, "status", job_id, env=env).stdout and time.time() < deadline:
        time.sleep(0.2)
    logs = runnerd(daemon, "logs", job_id, env=env)
    assert "started" in logs.stdout
    missing = runnerd(daemon, "get", job_id, "--index", "9", env=env, check=False)
    assert missing.returncode == 2 and "has no result 9" in missing.stderr and "Traceback" not in missing.stderr


def test_client_errors_say_how_to_fix_them(user):
    daemon, _, env, _ = user
    down = runnerd(daemon, "status", "--url", "http://127.0.0.1:9", env=env, check=False)
    assert down.returncode == 3 and "runnerd serve" in down.stderr and "Traceback" not in down.stderr
    bad = runnerd(daemon, "submit", "--dataset", "did:op:" + "0" * 64, "--algo-file", __file__, env=env, check=False)
    assert bad.returncode == 1 and "not in this node's catalog" in bad.stderr and "Traceback" not in bad.stderr


def test_json_means_stdout_is_one_json_document(user):
    """--json everywhere (#14): stdout parses as JSON with nothing before or after it (jq-able)."""
    daemon, did, env, tmp = user
    image = os.environ.get("RUNNERD_TEST_PYTHON_IMAGE", "runnerd-test-python:latest")
    done = json.loads(runnerd(daemon, "submit", "--dataset", did, "--algo-file", str(tmp / "algo.py"), "--image",
                              image, "--wait", "--json", "--output", str(tmp / "r1"), env=env).stdout)
    assert done["status"] == 70 and any(p.endswith("result.json") for p in done["saved"])
    job_id = done["jobId"]
    saved = json.loads(runnerd(daemon, "get", job_id, "--json", "--output", str(tmp / "r2"), env=env).stdout)
    assert sorted(saved) == sorted(p.replace("/r1/", "/r2/") for p in done["saved"])
    logs = json.loads(runnerd(daemon, "logs", job_id, "--json", env=env).stdout)
    assert logs["jobId"] == job_id and "tick 2" in logs["log"]
    both = runnerd(daemon, "logs", job_id, "-f", "--json", env=env, check=False)
    assert both.returncode == 2 and both.stdout == "" and "do not go together" in both.stderr
    queued = json.loads(runnerd(daemon, "submit", "--dataset", did, "--algo-file", str(tmp / "algo.py"), "--image",
                                image, "--json", env=env).stdout)
    stopped = json.loads(runnerd(daemon, "stop", queued["jobId"], "--json", env=env).stdout)
    assert [j["jobId"] for j in stopped] == [queued["jobId"]]
    deleted = json.loads(runnerd(daemon, "delete", queued["jobId"], "--json", env=env).stdout)
    assert [j["status"] for j in deleted] == [8]
