"""The CLI against a server that is not honest (issue #10 item 13): terminal escapes in names and
errors, a jobId that is a path, result names that climb out of the results folder, hide, or
collide. A tiny local HTTP server plays the daemon; the real `python -m runnerd` talks to it."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import pytest

JOB = "0123456789abcdef0123456789abcdef"
EVIL = "\x1b]0;owned\x07\x1b[2J\x1b[1A\r\x9b31m\u202e"  # OSC title, CSI clear/up, CR, C1 CSI, RTL override
UNSAFE = ("\x1b", "\x07", "\r", "\x9b", "\u202e")
RESULTS = [
    f"{EVIL}evil.txt", "../../escape.txt", "/tmp/abs-escape.txt", ".bashrc", "a/../../../up.txt",
    "dup.txt", "dup.txt", "DUP.txt", "sub\\..\\..\\win.txt", "nested/note.txt", "..", "",
]


def status(job_id: str = JOB, **extra) -> dict:
    results = [{"index": i, "filename": name, "filesize": 2, "type": "output"} for i, name in enumerate(RESULTS)]
    results.append({"index": len(results), "filename": f"../{EVIL}log", "filesize": 2, "type": "../algorithmLog"})
    return {"jobId": job_id, "status": 70, "statusText": f"Job completed{EVIL}", "environment": f"env{EVIL}",
            "dateCreated": "1.0", "error": f"boom{EVIL}", "results": results,
            "statusHistory": [{"status": 70, "statusText": f"done{EVIL}", "date": "2.0"}], **extra}


class Hostile(BaseHTTPRequestHandler):
    job: dict = {}
    start_status = 200

    def log_message(self, *args) -> None:  # quiet
        pass

    def _send(self, code: int, body: bytes, kind: str = "application/json") -> None:
        self.send_response(code)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        url = urlparse(self.path)
        query = parse_qs(url.query)
        if url.path == "/api/services/nonce":
            self._send(200, b'{"nonce": "0"}')
        elif url.path == "/api/services/computeEnvironments":
            self._send(200, json.dumps([{"id": f"env{EVIL}", "desc": f"free{EVIL}", "cpuNumber": 1, "ramGB": 1,
                                         "diskGB": 1, "gpuNumber": 0, "currentJobs": 0, "maxJobs": 1,
                                         "queuedJobs": f"{EVIL}", "maxJobDuration": 60}]).encode())
        elif url.path == "/api/services/compute":
            self._send(200, json.dumps([self.job]).encode())
        elif url.path == "/api/services/computeResult":
            self._send(200, f"r{query['index'][0]}".encode(), "application/octet-stream")
        else:
            self._send(404, json.dumps({"error": f"no{EVIL}", "code": "not_found"}).encode())

    def do_PUT(self) -> None:  # stop (and delete) answer with the job list
        self._send(200, json.dumps([self.job]).encode())

    do_DELETE = do_PUT

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        if self.start_status != 200:
            self._send(self.start_status, json.dumps({"error": f"refused{EVIL}", "code": "x"}).encode())
        else:
            self._send(200, json.dumps([self.job]).encode())


@pytest.fixture
def server():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Hostile)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()
    Hostile.job, Hostile.start_status = {}, 200


def cli(server, cwd: Path, *args) -> subprocess.CompletedProcess:
    env = {**os.environ, "RUNNERD_PRIVATE_KEY": "0x" + secrets.token_hex(32),
           "RUNNERD_URL": f"http://127.0.0.1:{server.server_address[1]}"}
    return subprocess.run([sys.executable, "-m", "runnerd", *args], capture_output=True, text=True, env=env,
                          cwd=cwd, timeout=60)


def _assert_printable(proc: subprocess.CompletedProcess) -> None:
    for stream in (proc.stdout, proc.stderr):
        assert not any(ch in stream for ch in UNSAFE), repr(stream)


def _workdir(tmp_path: Path) -> Path:
    work = tmp_path / "a" / "b" / "work"
    work.mkdir(parents=True)
    return work


def _all_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


def test_saved_result_names_stay_in_the_folder_unique_and_printable(server, tmp_path):
    Hostile.job = status()
    work = _workdir(tmp_path)
    proc = cli(server, work, "get", JOB, "--quiet")
    assert proc.returncode == 0, (proc.stdout, proc.stderr)
    _assert_printable(proc)
    folder = work / "runnerd-results" / JOB
    saved = _all_files(tmp_path)
    assert all(folder in p.parents for p in saved), saved  # nothing outside the job's folder
    assert len(saved) == len(RESULTS) + 1  # every result saved, none overwritten by another
    assert sorted(p.read_text() for p in saved) == sorted(f"r{i}" for i in range(len(RESULTS) + 1))
    for path in saved:
        rel = path.relative_to(folder)
        assert all(not part.startswith(".") and not any(ch in part for ch in UNSAFE) and "\\" not in part
                   for part in rel.parts), rel
    assert (folder / "nested" / "note.txt").read_text() == "r9"  # a plain nested output keeps its path
    assert sorted(proc.stdout.split()) == sorted(str(p.relative_to(work)) for p in saved)


@pytest.mark.parametrize("job_id", ["../../escaped", "ABSOLUTE", "..", f"{JOB[:-1]}{EVIL}"])
def test_a_job_id_that_is_not_one_never_names_a_folder(server, tmp_path, job_id):
    if job_id == "ABSOLUTE":
        job_id = str(tmp_path / "escaped-abs")
    Hostile.job = status(job_id)
    work = _workdir(tmp_path)
    for args in (("get", JOB), ("submit", "--dataset", "did:op:" + "0" * 64, "--algo-file", __file__,
                                "--env", "e", "--wait")):
        proc = cli(server, work, *args)
        assert proc.returncode != 0, (args, proc.stdout, proc.stderr)
        assert "invalid jobId" in proc.stderr and "Traceback" not in proc.stderr
        _assert_printable(proc)
    assert _all_files(tmp_path) == [] and not (tmp_path / "a" / "escaped").exists()
    assert not (tmp_path / "escaped-abs").exists()


def test_printed_server_texts_carry_no_terminal_controls(server, tmp_path):
    Hostile.job = status()
    work = _workdir(tmp_path)
    for args in (("status", JOB), ("stop", JOB), ("envs",)):
        proc = cli(server, work, *args)
        assert proc.returncode == 0, (args, proc.stdout, proc.stderr)
        _assert_printable(proc)
        assert "\\x1b]0;owned\\x07" in proc.stdout  # shown, escaped, not obeyed
    Hostile.start_status = 400
    proc = cli(server, work, "submit", "--dataset", "did:op:" + "0" * 64, "--algo-file", __file__, "--env", "e")
    assert proc.returncode == 1 and "refused" in proc.stderr
    _assert_printable(proc)
