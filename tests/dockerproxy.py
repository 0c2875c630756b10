"""A unix-socket proxy in front of the Docker socket that a test can cut and restore: Docker
"becomes unreachable" for one daemon under test, without disturbing anything else on the host."""

from __future__ import annotations

import os
import socket
import threading


class DockerProxy:
    def __init__(self, path: str, upstream: str = "/var/run/docker.sock", record: bool = False):
        """`record`: keep every byte that goes through, both ways, in `seen` (what a daemon asked)."""
        self.path, self.upstream = path, upstream
        self.record, self.seen = record, bytearray()
        self._conns: list[socket.socket] = []
        self._lock = threading.Lock()
        self._listener: socket.socket | None = None
        self.up()

    @property
    def docker_host(self) -> str:
        return f"unix://{self.path}"

    def up(self) -> None:
        if os.path.exists(self.path):
            os.unlink(self.path)
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(self.path)
        listener.listen(64)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def down(self, refuse: bool = False) -> None:
        """Cut every open connection (waits included), like a dying dockerd; then the socket is
        gone (FileNotFoundError), or with `refuse` it stays but nobody listens (ECONNREFUSED)."""
        if self._listener is not None:
            self._listener.close()
            self._listener = None
        if not refuse and os.path.exists(self.path):
            os.unlink(self.path)
        with self._lock:
            for conn in self._conns:
                try:
                    conn.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                conn.close()
            self._conns.clear()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            upstream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            upstream.connect(self.upstream)
            with self._lock:
                self._conns += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                if self.record:
                    self.seen += data
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
