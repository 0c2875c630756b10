"""`outputs.tar`: a job's published output files as one tar, entries under `outputs/`, the way
ocean-node serves a job's outputs (Docker's getArchive of /data/outputs).

The tar is never written to disk: its layout (each member's header, then the file's bytes padded
to 512) is computed from the published files, so its size is known before a byte is sent, and any
byte range of it can be served (Content-Length, Range/206) by streaming only the files it covers.
Headers carry fixed owner, mode and the job's finish time, so the same job always gives the same
bytes: a download resumed with Range continues the same file.
"""

from __future__ import annotations

import os
import stat
import tarfile
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web

from runnerd.api.results import check_range
from runnerd.domain import ResultFile
from runnerd.errors import NotFound

BLOCK = 512
_CHUNK = 256 * 1024


def _header(name: str, size: int, mtime: int, directory: bool = False) -> bytes:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.uid, info.gid = (0 if directory else size), mtime, 0, 0
    info.mode, info.type = (0o755, tarfile.DIRTYPE) if directory else (0o644, tarfile.REGTYPE)
    info.uname = info.gname = ""
    return info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")


def _padded(size: int) -> int:
    return -(-size // BLOCK) * BLOCK


@dataclass(frozen=True)
class _Part:
    offset: int  # where this part starts in the tar
    header: bytes
    path: Path | None  # the file whose bytes follow the header (None: a directory entry)
    size: int

    @property
    def end(self) -> int:
        return self.offset + len(self.header) + _padded(self.size)


def _layout(outputs: list[ResultFile], root: Path | None, mtime: int) -> tuple[list[_Part], int]:
    parts, offset = [], 0
    head = _header("outputs/", 0, mtime, directory=True)
    parts.append(_Part(0, head, None, 0))
    offset += len(head)
    for r in outputs:
        name = "outputs/" + r.filename
        part = _Part(offset, _header(name, r.filesize, mtime), root / r.path if root else None, r.filesize)
        parts.append(part)
        offset = part.end
    return parts, offset + 2 * BLOCK  # two zero blocks end the archive


def tar_size(outputs: list[ResultFile]) -> int:
    return _layout(outputs, None, 0)[1]


# The last few layouts served: laying out 1000 long names (maxOutputFiles) takes ~50 ms, and a
# token holder can ask for `Range: bytes=0-0` as often as it likes. A layout depends only on the
# published list and the finish time (the files are checked against it each time they are sent).
_LAYOUTS: dict[tuple[str, int, int], tuple[list[_Part], int]] = {}
_LAYOUTS_KEPT = 8
_LAYOUT_KEPT_BYTES = 2 * 1024 * 1024  # of headers: 1000 long names take ~1.5 MB; larger ones are not kept


def layout(outputs: list[ResultFile], root: Path, mtime: int) -> tuple[list[_Part], int]:
    key = (str(root), len(outputs), mtime)
    found = _LAYOUTS.pop(key, None) or _layout(outputs, root, mtime)
    if sum(len(part.header) for part in found[0]) <= _LAYOUT_KEPT_BYTES:
        if len(_LAYOUTS) >= _LAYOUTS_KEPT:
            del _LAYOUTS[next(iter(_LAYOUTS))]  # the least recently served
        _LAYOUTS[key] = found
    return found


def _check_files(parts: list[_Part], root: Path) -> None:
    """Each output is still the regular file of the size it was published with, inside the job."""
    real_root = os.path.realpath(root) + os.sep
    for part in parts:
        if part.path is None:
            continue
        try:
            st = os.lstat(part.path)
        except OSError:
            raise NotFound("the job's outputs are no longer on disk", "not_found", "index") from None
        if (not stat.S_ISREG(st.st_mode) or st.st_size != part.size
                or not os.path.realpath(part.path).startswith(real_root)):
            raise NotFound("the job's outputs are not as they were published", "not_found", "index")


def _range(request: web.Request, size: int) -> tuple[int, int] | None:
    """(start, end exclusive) of a satisfiable Range, None without one; 416 otherwise."""
    if "Range" not in request.headers:
        return None
    check_range(request, size)  # refuses the malformed and the unsatisfiable in the error shape
    wanted = request.http_range
    start, stop = wanted.start, wanted.stop
    if start is None:
        return 0, size
    if start < 0:  # bytes=-N: the last N
        return max(0, size + start), size
    return start, size if stop is None else min(stop, size)


async def serve_outputs_tar(request: web.Request, outputs: list[ResultFile], root: Path,
                            mtime: int) -> web.StreamResponse:
    parts, size = layout(outputs, root, mtime)
    wanted = _range(request, size)
    start, stop = wanted if wanted is not None else (0, size)
    _check_files([p for p in parts if p.offset < stop and p.end > start], root)  # those whose bytes are sent
    headers = {"Content-Type": "application/octet-stream", "Accept-Ranges": "bytes",
               "Content-Disposition": "attachment;filename=outputs.tar",
               "Access-Control-Expose-Headers": "Content-Disposition, Content-Range"}
    response = web.StreamResponse(status=206 if wanted is not None else 200, headers=headers)
    if wanted is not None:
        response.headers["Content-Range"] = f"bytes {start}-{stop - 1}/{size}"
    response.content_length = stop - start
    await response.prepare(request)
    if request.method != "HEAD":
        for piece in _pieces(parts, size, start, stop):
            await response.write(piece)
    await response.write_eof()
    return response


def _pieces(parts: list[_Part], size: int, start: int, stop: int):
    """The bytes [start, stop) of the tar, in chunks; file bytes are read as they are sent."""
    pos = start
    for part in parts:
        if part.end <= pos:
            continue
        if part.offset >= stop:
            break
        data_at = part.offset + len(part.header)
        if pos < data_at:  # in the header
            piece = part.header[pos - part.offset: min(stop, data_at) - part.offset]
            yield piece
            pos += len(piece)
        if pos >= stop or part.path is None:
            continue
        file_end = data_at + part.size
        if pos < file_end:
            with open(part.path, "rb", opener=_no_follow) as f:
                f.seek(pos - data_at)
                while pos < min(stop, file_end):
                    chunk = f.read(min(_CHUNK, min(stop, file_end) - pos))
                    if not chunk:  # shrank since it was checked: keep the declared layout
                        chunk = b"\0" * (min(stop, file_end) - pos)
                    yield chunk
                    pos += len(chunk)
        pad_end = min(stop, part.end)
        if pos < pad_end:
            yield b"\0" * (pad_end - pos)
            pos = pad_end
    if pos < stop:  # the closing zero blocks
        yield b"\0" * (stop - pos)


def _no_follow(path: str, flags: int) -> int:
    return os.open(path, flags | os.O_NOFOLLOW)

