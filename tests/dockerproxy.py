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
        self._pipes: list[threading.Thread] = []
        self._listener: socket.socket | None = None
        self._acceptor = threading.Thread()
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
        self._acceptor = threading.Thread(target=self._accept, args=(listener,), daemon=True)
        self._acceptor.start()

    def down(self, refuse: bool = False) -> None:
        """Cut every open connection (waits included), like a dying dockerd; then the socket is
        gone (FileNotFoundError), or with `refuse` it stays but nobody listens (ECONNREFUSED).

        Why the order: a socket is closed only after every thread using it has returned. Closing
        one under a thread blocked in accept() or recv() frees its descriptor number for the next
        socket the test process opens (an HTTP test server, say), and the thread's next call then
        acts on that one: it once stole a test server's connection and sent it to Docker (a 404
        from Docker for a route the server had, then a server shutdown() that never returned)."""
        listener, self._listener = self._listener, None
        if listener is not None:
            try:
                listener.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept() (EINVAL)
            except OSError:
                pass
            self._acceptor.join(10)
            listener.close()
        if not refuse and os.path.exists(self.path):
            os.unlink(self.path)
        with self._lock:
            conns, pipes = self._conns, self._pipes
            self._conns, self._pipes = [], []
        for conn in conns:
            try:
                conn.shutdown(socket.SHUT_RDWR)  # wakes both pipes' recv()
            except OSError:
                pass
        for pipe in pipes:
            pipe.join(10)
        for conn in conns:
            conn.close()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            upstream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                upstream.connect(self.upstream)
            except OSError:
                client.close()
                upstream.close()
                continue
            pipes = [threading.Thread(target=self._pipe, args=(a, b), daemon=True)
                     for a, b in ((client, upstream), (upstream, client))]
            with self._lock:
                self._conns += [client, upstream]
                self._pipes += pipes
            for pipe in pipes:
                pipe.start()

    def _pipe(self, src: socket.socket, dst: socket.socket) -> None:
        """Copy one way until either side ends; never closes a socket (down() does, after joining)."""
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
