"""A tiny HTTP server bound to this machine's docker0 address, recording the paths it was asked for."""

from __future__ import annotations

import json
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from runnerd.containers.runtime import JOB_NETWORK


def docker_bridge_ip() -> str:
    """The host's address on Docker's default bridge (docker0), where containers reach the host."""
    out = subprocess.run(["ip", "-j", "-4", "addr", "show", "docker0"], capture_output=True, text=True)
    try:
        return json.loads(out.stdout)[0]["addr_info"][0]["local"]
    except (ValueError, IndexError, KeyError):
        raise RuntimeError(f"cannot find the docker0 address: {out.stderr or out.stdout}") from None


def ensure_job_network() -> None:
    """runnerd's job network, made as the daemon makes it at start, for containers run by hand."""
    if subprocess.run(["docker", "network", "inspect", JOB_NETWORK], capture_output=True).returncode != 0:
        subprocess.run(["docker", "network", "create", "--driver", "bridge", "--label", "runnerd.network=jobs",
                        "-o", "com.docker.network.bridge.enable_icc=false", JOB_NETWORK], capture_output=True)


class BridgeServer:
    def __init__(self, host: str | None = None):
        self.host = host or docker_bridge_ip()
        self.files: dict[str, bytes] = {}
        self.paths: list[str] = []
        self.delay = 0.0  # seconds to wait before answering (to catch a job mid-provisioning)
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                server.paths.append(self.path)
                time.sleep(server.delay)
                body = server.files.get(self.path)
                if body is None:
                    self.send_response(404)
                    self.end_headers()
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer((self.host, 0), Handler)
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def url(self, path: str) -> str:
        return f"http://{self.host}:{self.port}{path}"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

