"""The SQLite database: one writer connection behind a lock, one reader connection (WAL).

aiosqlite runs each connection on its own thread. A transaction on the writer spans several
awaits, so every write takes `_write_lock`: otherwise another coroutine's statement would slip
into (and roll back with) someone else's transaction. Reads use their own connection and only
ever see committed data.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
from collections.abc import AsyncIterator, Iterable
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

import aiosqlite

from runnerd.store.migrations import LATEST, MIGRATIONS, OUTSIDE_TRANSACTION

WRITER_SYNCHRONOUS = "FULL"


def decimal_gt(a: str | None, b: str | None) -> int:
    """SQL function nonce_gt(a, b): decimal a > b (nonces are stored as exact text)."""
    try:
        return int(Decimal(a or "0") > Decimal(b or "0"))
    except InvalidOperation:
        return 0


class Database:
    def __init__(self, writer: aiosqlite.Connection, reader: aiosqlite.Connection, lookup: sqlite3.Connection):
        self._writer = writer
        self._reader = reader
        # Point lookups by primary key take microseconds in SQLite; done on the event loop they
        # cost less than the thread hand-off aiosqlite needs (measured: bench/api_load.py).
        self._lookup = lookup
        self._write_lock = asyncio.Lock()

    @classmethod
    async def open(cls, path: str | Path) -> "Database":
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        # Private: it holds every owner's jobs. SQLite gives -wal/-shm the main file's mode.
        os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o600))
        os.chmod(path, 0o600)
        writer = await aiosqlite.connect(path, isolation_level=None)
        try:
            await writer.execute("PRAGMA journal_mode=WAL")
            # FULL: each commit fsyncs the WAL before COMMIT returns. With NORMAL a power loss could
            # roll back commits an answer was already given for: claimed nonces (a replay window),
            # accepted jobs, stops. Nonce claims are group-committed, so they share that fsync.
            await writer.execute(f"PRAGMA synchronous={WRITER_SYNCHRONOUS}")
            await writer.execute("PRAGMA foreign_keys=ON")
            await writer.execute("PRAGMA busy_timeout=5000")
            await writer.create_function("nonce_gt", 2, decimal_gt, deterministic=True)
            await _migrate(writer)
            reader = await aiosqlite.connect(path, isolation_level=None)
        except BaseException:
            await writer.close()
            raise
        await reader.execute("PRAGMA busy_timeout=5000")
        await reader.execute("PRAGMA query_only=ON")
        reader.row_factory = sqlite3.Row
        writer.row_factory = sqlite3.Row
        lookup = sqlite3.connect(path, isolation_level=None)
        lookup.execute("PRAGMA busy_timeout=5000")
        lookup.execute("PRAGMA query_only=ON")
        lookup.row_factory = sqlite3.Row
        return cls(writer, reader, lookup)

    async def close(self) -> None:
        self._lookup.close()
        await self._reader.close()
        await self._writer.close()

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[aiosqlite.Connection]:
        """BEGIN IMMEDIATE … COMMIT on the writer; rolls back on any exception."""
        async with self._write_lock:
            await self._writer.execute("BEGIN IMMEDIATE")
            try:
                yield self._writer
            except BaseException:
                await self._writer.execute("ROLLBACK")
                raise
            await self._writer.execute("COMMIT")

    async def write(self, sql: str, params: Iterable[Any] = ()) -> int:
        """One auto-committed statement; returns the number of rows it changed."""
        async with self._write_lock:
            cursor = await self._writer.execute(sql, tuple(params))
            return cursor.rowcount

    async def fetchone(self, sql: str, params: Iterable[Any] = ()) -> sqlite3.Row | None:
        async with self._reader.execute(sql, tuple(params)) as cursor:
            return await cursor.fetchone()

    def lookup(self, sql: str, params: Iterable[Any] = ()) -> list[sqlite3.Row]:
        """A small indexed read, synchronously on the calling (event loop) thread. Only for
        queries bounded to a few rows by a primary or unique key."""
        return self._lookup.execute(sql, tuple(params)).fetchall()

    async def fetchall(self, sql: str, params: Iterable[Any] = ()) -> list[sqlite3.Row]:
        async with self._reader.execute(sql, tuple(params)) as cursor:
            return list(await cursor.fetchall())

    async def reclaim(self) -> int:
        """Give the pages freed by deleted rows back to the file system (incremental auto_vacuum),
        then checkpoint the WAL into the main file and truncate both. Returns the file's pages."""
        async with self._write_lock:
            # Each step of this pragma frees one page and Python's execute() steps it only once;
            # executescript (sqlite3_exec) runs it to the end.
            await self._writer.executescript("PRAGMA incremental_vacuum;")
            async with self._writer.execute("PRAGMA wal_checkpoint(TRUNCATE)") as cursor:
                await cursor.fetchall()
            async with self._writer.execute("PRAGMA page_count") as cursor:
                (pages,) = await cursor.fetchone()  # type: ignore[misc]
        return int(pages)

    async def ping(self) -> None:
        await self.fetchone("SELECT 1")


async def _migrate(conn: aiosqlite.Connection) -> None:
    async with conn.execute("PRAGMA user_version") as cursor:
        (version,) = await cursor.fetchone()  # type: ignore[misc]
    if version > LATEST:
        raise RuntimeError(f"database schema {version} is newer than this runnerd ({LATEST}); upgrade runnerd")
    for number, (_name, sql) in enumerate(MIGRATIONS[version:], start=version + 1):
        if sql.startswith(OUTSIDE_TRANSACTION):  # e.g. VACUUM; each statement is safe to repeat
            for statement in _statements(sql):
                async with conn.execute(statement) as cursor:
                    await cursor.fetchall()
            await conn.execute(f"PRAGMA user_version={number}")
            continue
        await conn.execute("BEGIN IMMEDIATE")
        try:
            for statement in _statements(sql):
                await conn.execute(statement)
            await conn.execute(f"PRAGMA user_version={number}")
        except BaseException:
            await conn.execute("ROLLBACK")
            raise
        await conn.execute("COMMIT")


def _statements(script: str) -> list[str]:
    """Split a migration script into statements (executescript would commit on its own)."""
    out, buf = [], []
    for line in script.splitlines():
        buf.append(line)
        if sqlite3.complete_statement("\n".join(buf)):
            out.append("\n".join(buf).strip())
            buf = []
    return [s for s in out if s.strip(" ;\n")]
