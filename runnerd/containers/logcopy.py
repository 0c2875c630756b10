"""Copying a container's log stream to a file with a cap: shared by the Docker and Swarm runtimes."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any


def copy_capped(stream: Any, path: str, limit: int, skip: int = 0) -> int:
    """Append a log stream's chunks to `path`, at most `limit` bytes, then a marker line; closes it;
    returns the bytes appended. With `skip`, the stream's first `skip` bytes were appended before
    (the Swarm runtime re-reads a log to follow it) and count against the limit."""
    written, done = 0, skip
    try:
        with open(path, "ab") as out:
            for chunk in stream:
                if skip:
                    chunk, skip = chunk[skip:], max(0, skip - len(chunk))
                    if not chunk:
                        continue
                room = limit - done - written
                if len(chunk) > room:
                    out.write(chunk[:room])
                    out.write(f"\n[runnerd: log cut at {limit} bytes]\n".encode())
                    written += room
                    break  # closing the stream stops Docker sending; the container runs on
                out.write(chunk)
                out.flush()  # so a live `logs -f` reader sees it now
                written += len(chunk)
    finally:
        close = getattr(stream, "close", None)
        if close:
            close()
    return written


class WithoutStreamErrors:
    """A service's log stream without the manager's own complaints. Once a stop has moved the
    service to a constraint no node meets, the manager adds "Error grabbing logs: … task … has
    not been scheduled" to every read, and that line is not the algorithm's output."""

    PREFIX = b"Error grabbing logs: "

    def __init__(self, stream: Any):
        self.stream = stream

    def __iter__(self) -> Iterator[bytes]:
        for chunk in self.stream:
            if not chunk.startswith(self.PREFIX):
                yield chunk

    def close(self) -> None:
        close = getattr(self.stream, "close", None)
        if close:
            close()
