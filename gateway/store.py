"""SQLite state: endpoints and the usage ledger.  Nothing else writes the file.

WAL mode with ``synchronous=FULL``: a commit is on disk (WAL fsynced) before
``insert_usage`` returns, which is what lets the meter promise that a response
never leaves before its usage record is durable.  All calls run on one
dedicated thread that owns the connection, so the event loop never blocks on
disk and SQLite never sees two writers from this process.
"""
from __future__ import annotations

import asyncio
import json
import sqlite3
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from .model import PROVISIONED_FIELDS, USAGE_FIELDS, EndpointSpec, ProvisionedRecord, UsageRecord

SCHEMA = """
CREATE TABLE IF NOT EXISTS endpoints (
    name TEXT PRIMARY KEY,
    spec TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS usage (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    request_id TEXT NOT NULL UNIQUE,
    endpoint TEXT NOT NULL,
    variant TEXT NOT NULL,
    memory_mb INTEGER NOT NULL,
    start REAL NOT NULL,
    billed_ms INTEGER NOT NULL,
    model_ms REAL NOT NULL,
    overhead_ms REAL NOT NULL,
    cold_start INTEGER NOT NULL,
    init_ms REAL NOT NULL,
    status TEXT NOT NULL,
    error_kind TEXT,
    bytes_in INTEGER NOT NULL DEFAULT 0,
    bytes_out INTEGER NOT NULL DEFAULT 0,
    sandbox_id TEXT,
    start_path TEXT,
    init_detail TEXT
);
CREATE INDEX IF NOT EXISTS usage_endpoint_start ON usage (endpoint, start);
CREATE TABLE IF NOT EXISTS provisioned_usage (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    endpoint TEXT NOT NULL,
    variant TEXT NOT NULL,
    memory_mb INTEGER NOT NULL,
    start REAL NOT NULL,
    end REAL NOT NULL,
    sandboxes INTEGER NOT NULL,
    billed_ms INTEGER NOT NULL
);
"""


def connect(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("PRAGMA busy_timeout=5000")
    conn.executescript(SCHEMA)
    _add_missing_columns(conn)
    return conn


def _add_missing_columns(conn: sqlite3.Connection) -> None:
    """Ledgers written by an older version gain the newer (nullable) columns."""
    have = {row[1] for row in conn.execute("PRAGMA table_info(usage)")}
    for col in ("start_path", "init_detail"):
        if col not in have:
            conn.execute(f"ALTER TABLE usage ADD COLUMN {col} TEXT")


class Store:
    def __init__(self, path: Path):
        self.path = Path(path)
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="slimserve-store")
        self._conn: sqlite3.Connection | None = None

    async def open(self) -> None:
        self._conn = await self._run(connect, self.path)

    async def close(self) -> None:
        if self._conn is not None:
            await self._run(self._conn.close)
            self._conn = None
        self._pool.shutdown(wait=True)

    async def _run(self, fn, *args):
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    # --- endpoints --------------------------------------------------------
    async def put_endpoint(self, spec: EndpointSpec) -> None:
        await self._run(self._put_endpoint, spec)

    def _put_endpoint(self, spec: EndpointSpec) -> None:
        self._conn.execute(
            "INSERT INTO endpoints (name, spec) VALUES (?, ?) ON CONFLICT(name) DO UPDATE SET spec = excluded.spec",
            (spec.name, json.dumps(spec.to_dict())),
        )

    async def delete_endpoint(self, name: str) -> None:
        await self._run(self._conn.execute, "DELETE FROM endpoints WHERE name = ?", (name,))

    async def load_endpoints(self) -> list[EndpointSpec]:
        rows = await self._run(lambda: self._conn.execute("SELECT spec FROM endpoints ORDER BY name").fetchall())
        return [EndpointSpec.from_dict(json.loads(r[0])) for r in rows]

    # --- usage ------------------------------------------------------------
    async def insert_usage(self, records: list[UsageRecord]) -> None:
        await self._run(self._insert, "usage", USAGE_FIELDS, records)

    async def insert_provisioned(self, records: list[ProvisionedRecord]) -> None:
        await self._run(self._insert, "provisioned_usage", PROVISIONED_FIELDS, records)

    def _insert(self, table: str, cols: list[str], records) -> None:
        """All of ``records`` in one transaction: one fsync, all or nothing."""
        sql = f"INSERT INTO {table} ({', '.join(cols)}) VALUES ({', '.join('?' for _ in cols)})"
        rows = [tuple(getattr(r, c) for c in cols) for r in records]
        conn = self._conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.executemany(sql, rows)
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    async def query_usage(self, endpoint: str | None = None, since: float | None = None,
                          until: float | None = None, limit: int | None = None) -> list[dict]:
        return await self._run(self._query, "usage", USAGE_FIELDS, endpoint, since, until, limit)

    async def query_provisioned(self, endpoint: str | None = None, since: float | None = None,
                                until: float | None = None, limit: int | None = None) -> list[dict]:
        return await self._run(self._query, "provisioned_usage", PROVISIONED_FIELDS, endpoint, since, until, limit)

    def _query(self, table, cols, endpoint, since, until, limit) -> list[dict]:
        where, args = [], []
        if endpoint:
            where.append("endpoint = ?")
            args.append(endpoint)
        if since is not None:
            where.append("start >= ?")
            args.append(since)
        if until is not None:
            where.append("start < ?")
            args.append(until)
        sql = f"SELECT {', '.join(cols)} FROM {table}"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY seq"
        if limit:
            sql = f"SELECT * FROM ({sql} DESC LIMIT {int(limit)}) ORDER BY start"
        out = []
        for row in self._conn.execute(sql, args):
            d = dict(zip(cols, row))
            if "cold_start" in d:
                d["cold_start"] = bool(d["cold_start"])
            out.append(d)
        return out
