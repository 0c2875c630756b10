"""The client as people expect it from `docker run`/`kubectl logs -f` and `docker ps` (#14):
`submit --wait` streams the algorithm's log live between the stages and explains a failure;
`status` is a table with filters, a detail view and --watch; `stop`/`delete` take several jobs
or --all (confirmed). Real daemon, real Docker, the CLI as a subprocess."""

from __future__ import annotations

import os
import re
import secrets
import signal
import subprocess
import sys
import time

import pytest

from runnerd.cli.client_cmds import DEFAULT_URL
from runnerd.client import DEFAULT_URL as CLIENT_DEFAULT_URL

pytestmark = pytest.mark.docker

IMAGE = os.environ.get("RUNNERD_TEST_PYTHON_IMAGE", "runnerd-test-python:latest")
LONG = "import time\nprint('started', flush=True)\ntime.sleep(60)\n"
QUICK = "print('hi')\n"


def cli(daemon, *args, env, timeout=120, **kwargs):
    full = {**os.environ, "RUNNERD_URL": daemon.url, **env}
    # stdin is not a terminal, as in a script (--all needs --yes there)
    return subprocess.run([sys.executable, "-m", "runnerd", *args], capture_output=True, text=True, env=full,
                          timeout=timeout, cwd=daemon.root, stdin=subprocess.DEVNULL, **kwargs)


def popen(daemon, *args, env):
    full = {**os.environ, "RUNNERD_URL": daemon.url, **env}
    return subprocess.Popen([sys.executable, "-m", "runnerd", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            stdin=subprocess.DEVNULL, text=True, env=full, cwd=daemon.root)


@pytest.fixture
def node(make_daemon, tmp_path):
    """A daemon with one slot (so a second job queues), a dataset, a key, and a way to submit."""
    daemon = make_daemon(environments=[{"id": "ocean-compute", "nCPU": 0.5, "ramGB": 0.25, "diskGB": 0.05,
                                        "maxJobs": 1}])
    csv = tmp_path / "data.csv"
    csv.write_text("a,b\n1,2\n")
    did = cli(daemon, "assets", "add", str(csv), "--allow-raw-algorithm", "--assets", str(daemon.assets),
              "--data-dir", str(daemon.data_dir), env={}).stdout.strip()
    env = {"RUNNERD_PRIVATE_KEY": "0x" + secrets.token_hex(32)}

    def submit(code: str, *extra: str) -> subprocess.CompletedProcess:
        path = tmp_path / f"algo-{secrets.token_hex(4)}.py"
        path.write_text(code)
        return cli(daemon, "submit", "--dataset", did, "--algo-file", str(path), "--image", IMAGE,
                   "--output", str(tmp_path / "out" / path.stem), *extra, env=env)

    return daemon, env, submit, did, tmp_path


def wait_for(daemon, env, job_id, text):
    deadline = time.time() + 120
    while time.time() < deadline:
        if text in cli(daemon, "status", job_id, env=env).stdout.splitlines()[1]:  # the `status:` line
            return
        time.sleep(0.3)
    raise AssertionError(f"job {job_id} never showed {text!r}")


def stage(lines, text):
    """Index of the stage line `[   1.23s]  40 Running algorithm` (not a heartbeat)."""
    return next(i for i, line in enumerate(lines) if re.fullmatch(rf"\[\s*[\d.]+s\]\s+\d+ {text}", line))


def test_the_cli_default_url_is_the_clients():
    assert DEFAULT_URL == CLIENT_DEFAULT_URL


def test_wait_streams_the_log_between_running_and_filtering_then_status_shows_the_job(node):
    daemon, env, submit, _, tmp = node
    code = "import time\nfor i in range(3):\n    print('step', i, flush=True)\n    time.sleep(0.3)\n" \
           "open('/data/outputs/result.json', 'w').write('{}')\n"
    proc = submit(code, "--wait")
    assert proc.returncode == 0, proc.stderr
    job_id = proc.stdout.strip()
    assert re.fullmatch(r"[0-9a-f]{32}", job_id)  # stdout is the id alone
    lines = proc.stderr.splitlines()
    between = [line for line in lines[stage(lines, "Running algorithm") + 1:stage(lines, "Filtering results")]
               if "(still running)" not in line]
    assert between == ["  | step 0", "  | step 1", "  | step 2"], proc.stderr

    detail = cli(daemon, "status", job_id, env=env).stdout
    assert f"job:            {job_id}" in detail and "status:         70 Job completed" in detail
    history = detail[detail.index("history:"):detail.index("results:")].splitlines()[1:]
    assert [re.sub(r"^\s+\S+\s+\+\s*[\d.]+s\s+", "", h) for h in history] == [
        "1 Warming up", "10 Job started", "20 Configuring volumes", "30 Provisioning success",
        "40 Running algorithm", "50 Filtering results", "60 Publishing results", "70 Job completed"]
    results = detail[detail.index("results:"):].splitlines()
    assert results[1].split() == ["INDEX", "TYPE", "NAME", "SIZE"]
    assert results[2].split() == ["0", "output", "result.json", "2", "B"]
    assert results[3].split()[:3] == ["1", "algorithmLog", "algorithm.log"]


def test_wait_shows_the_log_live_and_a_failure_says_why_and_what_next(node):
    daemon, env, submit, did, tmp = node
    (tmp / "long.py").write_text(LONG)
    follower = popen(daemon, "submit", "--dataset", did, "--algo-file", str(tmp / "long.py"), "--image", IMAGE,
                     "--wait", "--output", str(tmp / "long-out"), env=env)
    job_id = follower.stdout.readline().strip()
    for line in follower.stderr:  # live: the line is shown while the job still runs
        if line.rstrip("\n") == "  | started":
            break
    assert "40 Running algorithm" in cli(daemon, "status", job_id, env=env).stdout.splitlines()[1]
    assert cli(daemon, "stop", job_id, env=env).returncode == 0
    rest = follower.stderr.read()
    assert follower.wait(timeout=120) == 1
    assert f"job {job_id} ended at 7 Job stopped" in rest and "next: it was stopped" in rest

    failing = "import sys\nfor i in range(30):\n    print('line', i)\nsys.exit(3)\n"
    loud = submit(failing, "--wait")
    assert loud.returncode == 1 and "Traceback" not in loud.stderr
    assert "  | line 0" in loud.stderr and "  | line 29" in loud.stderr
    assert "ended at 71 Algorithm failed" in loud.stderr and "exited with code 3" in loud.stderr
    quiet = submit(failing, "--wait", "--quiet")
    assert quiet.returncode == 1
    tail = [line for line in quiet.stderr.splitlines() if line.startswith("  | ")]
    assert tail == [f"  | line {i}" for i in range(10, 30)], quiet.stderr  # the last 20 lines only
    assert "the last 20 lines of the algorithm's log" in quiet.stderr
    assert "ended at 71 Algorithm failed" in quiet.stderr
    assert "runnerd: next: your code exited with code 3" in quiet.stderr


def _rows(stdout):
    lines = stdout.splitlines()
    assert lines[0].split() == ["JOB", "STATUS", "ENV", "CREATED", "DURATION", "QUEUE"], stdout
    return {line.split()[0]: line for line in lines[1:]}


def test_status_table_filters_detail_watch_and_stop_delete_of_several(node):
    daemon, env, submit, _, _ = node
    running = submit(LONG).stdout.strip()
    wait_for(daemon, env, running, "40 Running algorithm")
    first, second = submit(QUICK).stdout.strip(), submit(QUICK).stdout.strip()

    rows = _rows(cli(daemon, "status", env=env).stdout)
    assert list(rows) == [running, first, second]  # oldest first
    cells = re.split(r"\s{2,}", rows[running])
    assert cells[1] == "40 Running algorithm" and cells[2] == "ocean-compute"
    assert re.fullmatch(r"\d+s ago", cells[3]) and re.fullmatch(r"[\d.]+s", cells[4]) and cells[5] == "-"
    queued = re.split(r"\s{2,}", rows[first])
    assert queued[1:3] == ["1 Warming up", "ocean-compute"] and queued[4:] == ["-", "1/2"]  # never ran: no duration
    assert re.split(r"\s{2,}", rows[second])[-1] == "2/2"
    assert list(_rows(cli(daemon, "status", "--status", "queued", env=env).stdout)) == [first, second]
    assert list(_rows(cli(daemon, "status", "--status", "running", env=env).stdout)) == [running]
    assert _rows(cli(daemon, "status", "--env", "elsewhere", env=env).stdout) == {}
    assert "queue:          1/2" in cli(daemon, "status", first, env=env).stdout

    interrupted = popen(daemon, "status", "--watch", env=env)
    assert interrupted.stdout.readline().split()[0] == "JOB"  # the first view is drawn
    interrupted.send_signal(signal.SIGINT)
    _, err = interrupted.communicate(timeout=60)
    assert interrupted.returncode == 130 and "Traceback" not in err

    stopped = cli(daemon, "stop", first, second, env=env)
    assert stopped.returncode == 0 and [line.split()[:3] for line in stopped.stdout.splitlines()] == [
        [first, "7", "Job"], [second, "7", "Job"]]
    watch = popen(daemon, "status", running, "--watch", env=env)
    assert cli(daemon, "stop", running, env=env).returncode == 0
    out, err = watch.communicate(timeout=120)
    assert watch.returncode == 0 and "Traceback" not in err  # ended by itself: the job is terminal
    assert "status:         7 Job stopped" in out.split("\n\n")[-2]  # the last view
    assert list(_rows(cli(daemon, "status", "--status", "finished", env=env).stdout)) == [running, first, second]
    assert _rows(cli(daemon, "status", "--status", "failed", env=env).stdout) == {}

    deleted = cli(daemon, "delete", first, second, env=env)
    assert deleted.returncode == 0 and deleted.stdout.count("Job deleted successfully") == 2
    assert list(_rows(cli(daemon, "status", env=env).stdout)) == [running]


def test_stop_and_delete_all_need_yes_off_a_terminal(node):
    daemon, env, submit, _, _ = node
    job_id = submit(LONG).stdout.strip()
    refused = cli(daemon, "stop", "--all", env=env)
    assert refused.returncode == 2 and "--yes" in refused.stderr and "nothing was stopped" in refused.stderr
    assert "7 Job stopped" not in cli(daemon, "status", job_id, env=env).stdout
    assert cli(daemon, "stop", "--all", "--yes", env=env).returncode == 0
    assert "status:         7 Job stopped" in cli(daemon, "status", job_id, env=env).stdout
    refused = cli(daemon, "delete", "--all", env=env)
    assert refused.returncode == 2 and "nothing was deleted" in refused.stderr
    assert list(_rows(cli(daemon, "status", env=env).stdout)) == [job_id]
    deleted = cli(daemon, "delete", "--all", "--yes", env=env)
    assert deleted.returncode == 0 and "Job deleted successfully" in deleted.stdout
    assert _rows(cli(daemon, "status", env=env).stdout) == {}
    kept = submit(QUICK).stdout.strip()
    partly = cli(daemon, "delete", job_id, kept, env=env)  # one is gone already: the other is still deleted
    assert partly.returncode == 1 and f"runnerd: {job_id}: HTTP 404" in partly.stderr
    assert "Traceback" not in partly.stderr
    assert kept in partly.stdout and "Job deleted successfully" in partly.stdout
    both = cli(daemon, "stop", job_id, "--all", env=env)
    assert both.returncode == 2 and "not both" in both.stderr


def test_wait_on_a_terminal_keeps_a_heartbeat_line_while_the_algorithm_is_silent(node):
    """On a terminal the heartbeat is one status line rewritten in place (\\r, erase line), wiped
    before the next log line; off a terminal (the tests above) there is never a \\r."""
    import pty

    daemon, env, _, did, tmp = node
    (tmp / "quiet.py").write_text("import time\nprint('a', flush=True)\ntime.sleep(3)\nprint('b', flush=True)\n")
    master, slave = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "runnerd", "submit", "--dataset", did, "--algo-file",
                             str(tmp / "quiet.py"), "--image", IMAGE, "--wait", "--output", str(tmp / "q")],
                            stdout=subprocess.PIPE, stderr=slave, stdin=subprocess.DEVNULL, cwd=daemon.root,
                            env={**os.environ, "RUNNERD_URL": daemon.url, **env})
    os.close(slave)
    seen = b""
    while True:
        try:
            chunk = os.read(master, 4096)
        except OSError:  # the terminal's other end closed: the command ended
            break
        if not chunk:
            break
        seen += chunk
    os.close(master)
    assert proc.wait(timeout=120) == 0
    screen = seen.decode().replace("\r\n", "\n")
    assert re.search(r"\r\x1b\[K\[\s*[\d.]+s\]  40 Running algorithm \(still running\)", screen), screen
    assert "\r\x1b[K  | b\n" in screen  # the status line is wiped before the next line
