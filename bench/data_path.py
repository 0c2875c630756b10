"""Data path: streaming a large result through computeResult and provisioning a large dataset
(local file and HTTP URL), in MB/s and peak daemon memory, against cat/curl of the same bytes.

    .venv/bin/python bench/data_path.py --mib 1024
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from common import dataset, parser, progress, start_daemon, stop_daemon, table, write_json
from tests.netutil import docker_bridge_ip


class RssSampler:
    """Peak resident memory of a process, sampled every 20 ms."""

    def __init__(self, pid: int):
        self.pid, self.peak, self._stop = pid, 0, threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _rss(self) -> int:
        with open(f"/proc/{self.pid}/status") as f:
            return next(int(l.split()[1]) * 1024 for l in f if l.startswith("VmRSS"))

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._rss())
            time.sleep(0.02)

    def __enter__(self) -> "RssSampler":
        self.before = self._rss()
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self.thread.join()


def timed(argv: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - started


def busybox_httpd_seconds(path: Path) -> float | None:
    """The same file over HTTP from a small C server with sendfile, fetched by the same curl:
    what loopback HTTP itself costs on this machine."""
    if shutil.which("busybox") is None:
        return None
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen(["busybox", "httpd", "-f", "-p", f"127.0.0.1:{port}", "-h", str(path.parent)])
    try:
        for _ in range(50):
            if subprocess.run(["curl", "-sf", "-o", "/dev/null", "-r", "0-0", f"http://127.0.0.1:{port}/{path.name}"]
                              ).returncode == 0:
                break
            time.sleep(0.1)
        return timed(["curl", "-sf", "-o", "/dev/null", f"http://127.0.0.1:{port}/{path.name}"])
    finally:
        server.terminate()
        server.wait()


def step_seconds(daemon, job: dict, kind: str) -> float:
    """How long the step's container ran; for a provision step that runs no container (nothing to
    download: local files are bind-mounted), the time from 20 to 30 in the job's history."""
    import sqlite3

    with sqlite3.connect(daemon.data_dir / "runnerd.db") as db:
        row = db.execute("SELECT started_at, finished_at FROM steps WHERE job_id=? AND kind=?",
                         (job["jobId"], kind)).fetchone()
    if row is not None:
        return row[1] - row[0]
    reached = {step["status"]: float(step["date"]) for step in job.get("statusHistory") or []}
    return reached[30] - reached[20]


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--mib", type=int, default=1024, help="size of the result and the dataset (MiB)")
    args = p.parse_args()
    size = args.mib * 1024 * 1024
    mb = size / 1e6
    work = Path(tempfile.mkdtemp(prefix="runnerd-bench-data-"))
    big = work / "big.bin"
    with open(big, "wb") as f:  # real bytes, not a sparse file
        block = os.urandom(1024 * 1024)
        for _ in range(args.mib):
            f.write(block)
    os.chmod(big, 0o644)
    os.chmod(work, 0o755)
    rows, out = [], {}
    disk_gb = args.mib * 2.5 / 1024 + 0.1
    daemon = start_daemon([{"id": "bench", "nCPU": 1, "ramGB": 0.5, "diskGB": disk_gb, "maxJobs": 1}],
                          provisionAllow=[docker_bridge_ip()], maxDownloadGB=disk_gb, assetRoots=[str(work)])
    server = ThreadingHTTPServer((docker_bridge_ip(), 0), lambda *a: SimpleHTTPRequestHandler(*a, directory=str(work)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://{docker_bridge_ip()}:{server.server_address[1]}/big.bin"
    try:
        client = daemon.client()
        repo, _, tag = args.image.rpartition(":")
        meta = lambda code: {"meta": {"rawcode": code, "container": {  # noqa: E731
            "image": repo, "tag": tag, "entrypoint": "python3 $ALGO"}}}

        # 1. a large result: the algorithm writes it, the owner streams it back
        writer = (f"import os\nb = os.urandom(1 << 20)\nwith open('/data/outputs/big.bin', 'wb') as f:\n"
                  f"    for _ in range({args.mib}):\n        f.write(b)\n")
        did = dataset(daemon.assets, b"x\n")
        job_id = client.start(did, meta(writer), "bench")["jobId"]
        while (job := client.job(job_id))["status"] < 70:
            time.sleep(0.2)
        assert job["status"] == 70, job
        result = daemon.data_dir / "jobs" / job_id / "results" / "outputs" / "big.bin"
        link = job["resultsUrls"][0]
        timed(["cat", str(result)])  # page cache warm for all
        cat = timed(["cat", str(result)])
        pipe = timed(["sh", "-c", f"cat '{result}' | cat > /dev/null"])
        c_server = busybox_httpd_seconds(result)
        with RssSampler(daemon.proc.pid) as rss:
            ours = timed(["curl", "-sf", "-o", "/dev/null", link])
        rows.append(["stream result: cat > /dev/null (baseline)", mb / cat, 1.0, "-"])
        rows.append(["stream result: cat | cat (to another process)", mb / pipe, cat / pipe, "-"])
        if c_server:
            rows.append(["stream result: busybox httpd + curl (C server)", mb / c_server, cat / c_server, "-"])
        rows.append(["stream result: computeResult + curl", mb / ours, cat / ours,
                     f"+{(rss.peak - rss.before) / 1e6:.1f}"])
        out["result"] = {"cat_MBps": mb / cat, "pipe_MBps": mb / pipe,
                         "busybox_httpd_MBps": mb / c_server if c_server else None, "runnerd_MBps": mb / ours,
                         "ratio": cat / ours, "daemon_rss_growth_MB": (rss.peak - rss.before) / 1e6}
        client.delete(job_id)

        # 2. provisioning: a local file (bind-mounted, never copied) and an HTTP URL (downloaded)
        reader = "import json, os\nd = json.loads(os.environ['DIDS'])[0]\nprint(os.path.getsize(f'/data/inputs/{d}/0'))"
        local = dataset(daemon.assets, files=[{"type": "file", "path": str(big)}])
        remote = dataset(daemon.assets, url=url)
        curl = timed(["curl", "-sf", "-o", "/dev/null", url])
        rows.append(["download: curl (baseline)", mb / curl, 1.0, "-"])
        for name, did in (("local file", local), ("HTTP URL", remote)):
            with RssSampler(daemon.proc.pid) as rss:
                job_id = client.start(did, meta(reader), "bench")["jobId"]
                while (job := client.job(job_id))["status"] < 70:
                    time.sleep(0.1)
            assert job["status"] == 70, job
            seconds = step_seconds(daemon, job, "provision")
            rows.append([f"provision {name}", mb / seconds, (curl / seconds) if name == "HTTP URL" else "-",
                         f"+{(rss.peak - rss.before) / 1e6:.1f}"])
            out[f"provision_{name.split()[0].lower()}"] = {"seconds": seconds, "MBps": mb / seconds,
                                                          "daemon_rss_growth_MB": (rss.peak - rss.before) / 1e6}
            client.delete(job_id)
        out["curl_MBps"] = mb / curl
    finally:
        server.shutdown()
        stop_daemon(daemon)
        shutil.rmtree(work, ignore_errors=True)
    print(table(f"Data path, {args.mib} MiB", ["what", "MB/s", "ratio", "daemon RSS MB"], rows))
    write_json(args.json, {"bench": "data_path", "mib": args.mib, **out})


if __name__ == "__main__":
    progress("data path bench")
    main()
