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

from gateway.domain import PROVISIONED_FIELDS, USAGE_FIELDS, EndpointSpec, ProvisionedRecord, QueuedRequest, UsageRecord
from gateway.store import ledger, queue_sql, rollup, transform_sql

_ROLLUP_TABLE = """
CREATE TABLE IF NOT EXISTS rollup_hourly (
    hour INTEGER NOT NULL,
    endpoint TEXT NOT NULL,
    variant TEXT NOT NULL,
    memory_mb INTEGER NOT NULL,
    invocations INTEGER NOT NULL DEFAULT 0,
    billed_ms INTEGER NOT NULL DEFAULT 0,
    cold_starts INTEGER NOT NULL DEFAULT 0,
    errors INTEGER NOT NULL DEFAULT 0,
    bytes_in INTEGER NOT NULL DEFAULT 0,
    bytes_out INTEGER NOT NULL DEFAULT 0,
    provisioned_ms INTEGER NOT NULL DEFAULT 0,
    idle_ms INTEGER NOT NULL DEFAULT 0,
    target_model TEXT NOT NULL DEFAULT '',
    zygote_mb_ms INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (hour, endpoint, variant, memory_mb, target_model)
) WITHOUT ROWID;
"""

SCHEMA = """
CREATE TABLE IF NOT EXISTS endpoints (
    name TEXT PRIMARY KEY,
    spec TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS ledger_meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS sm_resources (
    kind TEXT NOT NULL,
    name TEXT NOT NULL,
    doc TEXT NOT NULL,
    PRIMARY KEY (kind, name)
);
CREATE TABLE IF NOT EXISTS retired_endpoints (
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
    init_detail TEXT,
    backlog_ms REAL NOT NULL DEFAULT 0,
    target_model TEXT
);
CREATE INDEX IF NOT EXISTS usage_endpoint_start ON usage (endpoint, start);
CREATE INDEX IF NOT EXISTS usage_start ON usage (start);
""" + _ROLLUP_TABLE + """
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
CREATE INDEX IF NOT EXISTS provisioned_start ON provisioned_usage (start);
"""


def connect(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("PRAGMA busy_timeout=5000")
    conn.executescript(SCHEMA)
    conn.executescript(queue_sql.SCHEMA)
    conn.executescript(transform_sql.SCHEMA)
    _add_missing_columns(conn)
    _key_rollups_by_target(conn)
    _build_missing_rollups(conn)
    return conn


def _key_rollups_by_target(conn: sqlite3.Connection) -> None:
    """Roll-ups written before multi-model endpoints gain target_model ('') in their key: the
    table is rebuilt once (SQLite cannot change a primary key in place), in one transaction."""
    have = {row[1] for row in conn.execute("PRAGMA table_info(rollup_hourly)")}
    if "target_model" in have:
        if "zygote_mb_ms" not in have:          # keyed already, from before model zygotes were metered
            conn.execute("ALTER TABLE rollup_hourly ADD COLUMN zygote_mb_ms INTEGER NOT NULL DEFAULT 0")
        return
    sums = ", ".join(c for c in rollup.SUMS if c in have)
    conn.execute("BEGIN IMMEDIATE")
    try:
        conn.execute("ALTER TABLE rollup_hourly RENAME TO rollup_hourly_v1")
        conn.execute(_ROLLUP_TABLE)
        conn.execute(f"INSERT INTO rollup_hourly (hour, endpoint, variant, memory_mb, target_model, {sums}) "
                     f"SELECT hour, endpoint, variant, memory_mb, '', {sums} FROM rollup_hourly_v1")
        conn.execute("DROP TABLE rollup_hourly_v1")
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise


def _build_missing_rollups(conn: sqlite3.Connection) -> None:
    """A ledger from before roll-ups existed gets them, derived from its raw records."""
    if conn.execute("SELECT 1 FROM rollup_hourly LIMIT 1").fetchone() is None and \
            conn.execute("SELECT 1 FROM usage LIMIT 1").fetchone() is not None:
        conn.execute("BEGIN IMMEDIATE")
        for sql in rollup.REBUILD_SQL:
            conn.execute(sql)
        deltas = rollup.provisioned_deltas(
            ProvisionedRecord(*row)
            for row in conn.execute(f"SELECT {', '.join(PROVISIONED_FIELDS)} FROM provisioned_usage"))
        conn.executemany(rollup.UPSERT_SQL, rollup.rows(deltas))
        conn.execute("COMMIT")


def _add_missing_columns(conn: sqlite3.Connection) -> None:
    """Ledgers written by an older version gain the newer (nullable) columns."""
    have = {row[1] for row in conn.execute("PRAGMA table_info(usage)")}
    for col, decl in (("start_path", "TEXT"), ("init_detail", "TEXT"), ("backlog_ms", "REAL NOT NULL DEFAULT 0"),
                      ("target_model", "TEXT")):
        if col not in have:
            conn.execute(f"ALTER TABLE usage ADD COLUMN {col} {decl}")


class Store:
    def __init__(self, path: Path):
        self.path = Path(path)
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="slimserve-store")
        self._conn: sqlite3.Connection | None = None
        self._read_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="slimserve-reports")
        self._reader: sqlite3.Connection | None = None

    async def open(self) -> None:
        self._conn = await self._run(connect, self.path)

    async def close(self) -> None:
        if self._reader is not None:
            await asyncio.get_running_loop().run_in_executor(self._read_pool, self._reader.close)
            self._reader = None
        self._read_pool.shutdown(wait=True)
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
        await self._run(self._delete_endpoint, name)

    def _delete_endpoint(self, name: str) -> None:
        """Gone from service, but its last spec stays for the bills (tags group its costs)."""
        conn = self._conn
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("INSERT OR REPLACE INTO retired_endpoints SELECT name, spec FROM endpoints WHERE name = ?",
                     (name,))
        conn.execute("DELETE FROM endpoints WHERE name = ?", (name,))
        conn.execute("COMMIT")

    async def load_endpoints(self) -> list[EndpointSpec]:
        rows = await self._run(lambda: self._conn.execute("SELECT spec FROM endpoints ORDER BY name").fetchall())
        return [EndpointSpec.from_dict(json.loads(r[0])) for r in rows]

    # --- SageMaker control-plane resources (models, endpoint configs, endpoint records) ---
    async def put_resource(self, kind: str, name: str, doc: dict) -> None:
        await self._run(self._conn.execute,
                        "INSERT INTO sm_resources (kind, name, doc) VALUES (?, ?, ?) "
                        "ON CONFLICT(kind, name) DO UPDATE SET doc = excluded.doc", (kind, name, json.dumps(doc)))

    async def delete_resource(self, kind: str, name: str) -> None:
        await self._run(self._conn.execute, "DELETE FROM sm_resources WHERE kind = ? AND name = ?", (kind, name))

    async def load_resources(self) -> list[tuple[str, str, dict]]:
        rows = await self._run(lambda: self._conn.execute("SELECT kind, name, doc FROM sm_resources").fetchall())
        return [(k, n, json.loads(d)) for k, n, d in rows]

    # --- the asynchronous-inference queue (``queue_sql``) -------------------------------
    async def enqueue_async(self, req: QueuedRequest) -> None:
        """Durable when it returns (the 202 is sent after it)."""
        await self._run(queue_sql.enqueue, self._conn, req)

    async def claim_async(self, endpoint: str, owner: str, now: float, lease_s: float,
                          limit: int) -> list[QueuedRequest]:
        return await self._run(queue_sql.claim, self._conn, endpoint, owner, now, lease_s, limit)

    async def renew_async(self, ids: list[str], owner: str, until: float) -> set[str]:
        return await self._run(queue_sql.renew, self._conn, ids, owner, until)

    async def finish_async(self, rid: str, owner: str | None, state: str, now: float,
                           error: str | None = None) -> bool:
        return await self._run(queue_sql.finish, self._conn, rid, owner, state, now, error)

    async def retry_async(self, rid: str, owner: str, not_before: float, error: str, refund: bool = False) -> bool:
        return await self._run(queue_sql.retry_later, self._conn, rid, owner, not_before, error, refund)

    async def release_async_owner(self, owner_prefix: str, keep_owner: str) -> int:
        return await self._run(queue_sql.release_owner, self._conn, owner_prefix, keep_owner)

    async def expired_async(self, now: float, limit: int = 1000) -> list[QueuedRequest]:
        return await self._run(queue_sql.expired, self._conn, now, limit)

    async def open_async(self, endpoint: str, limit: int = 1000) -> list[QueuedRequest]:
        return await self._run(queue_sql.open_requests, self._conn, endpoint, limit)

    async def get_async(self, rid: str) -> QueuedRequest | None:
        return await self._run(queue_sql.get, self._conn, rid)

    async def async_backlog(self) -> dict[str, tuple[int, int, float | None]]:
        return await self._run(queue_sql.backlog, self._conn)

    async def prune_async(self, before: float) -> int:
        return await self._run(queue_sql.prune, self._conn, before)

    # --- transform jobs (``transform_sql``) ----------------------------------------------
    async def insert_transform_job(self, name: str, doc: dict, now: float) -> bool:
        return await self._run(transform_sql.insert_job, self._conn, name, doc, now)

    async def set_transform_doc(self, name: str, doc: dict) -> None:
        await self._run(transform_sql.set_doc, self._conn, name, doc)

    async def get_transform_job(self, name: str) -> dict | None:
        return await self._run(transform_sql.get_job, self._conn, name)

    async def list_transform_jobs(self) -> list[dict]:
        return await self._run(transform_sql.list_jobs, self._conn)

    async def set_transform_status(self, name: str, status: str, now: float, reason: str | None = None,
                                   only_from: tuple[str, ...] = ()) -> bool:
        return await self._run(transform_sql.set_status, self._conn, name, status, now, reason, only_from)

    async def mark_transform_started(self, name: str, now: float) -> None:
        await self._run(transform_sql.mark_started, self._conn, name, now)

    async def write_transform_plan(self, name: str, objects: list[tuple[str, str, int | None]]) -> None:
        await self._run(transform_sql.write_plan, self._conn, name, objects)

    async def transform_objects(self, name: str) -> list[dict]:
        return await self._run(transform_sql.objects, self._conn, name)

    async def finish_transform_object(self, name: str, seq: int, state: str, records: int, out_bytes: int,
                                      now: float, error: str | None = None) -> None:
        await self._run(transform_sql.finish_object, self._conn, name, seq, state, records, out_bytes, now, error)

    async def transform_progress(self, name: str) -> dict:
        return await self._run(transform_sql.progress, self._conn, name)

    async def add_transform_usage(self, name: str, instance_type: str, instances: int, start: float,
                                  end: float) -> int:
        return await self._run(transform_sql.add_usage, self._conn, name, instance_type, instances, start, end)

    async def transform_usage(self, since: float | None, until: float | None) -> list[dict]:
        return await self._read(lambda conn: transform_sql.usage(conn, since, until))

    # --- usage ------------------------------------------------------------
    async def insert_usage(self, records: list[UsageRecord]) -> None:
        await self._run(self._insert, "usage", USAGE_FIELDS, records, rollup.usage_deltas(records))

    async def insert_provisioned(self, records: list[ProvisionedRecord]) -> None:
        await self._run(self._insert, "provisioned_usage", PROVISIONED_FIELDS, records,
                        rollup.provisioned_deltas(records))

    async def add_idle(self, deltas: dict) -> None:
        """Idle sandbox-ms per hour (from the idle meter): roll-ups only, no raw rows."""
        if deltas:
            await self._run(self._insert, None, (), (), deltas)

    def _insert(self, table: str | None, cols, records, deltas: dict) -> None:
        """``records`` and their roll-up ``deltas`` in one transaction: one fsync, all or nothing."""
        rows = [tuple(_cell(getattr(r, c)) for c in cols) for r in records]
        conn = self._conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            if rows:
                conn.executemany(
                    f"INSERT INTO {table} ({', '.join(cols)}) VALUES ({', '.join('?' for _ in cols)})", rows)
            conn.executemany(rollup.UPSERT_SQL, rollup.rows(deltas))
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    async def prune_usage(self, before: float, batch: int = 20_000) -> int:
        """Drop raw records older than the hour boundary ``before`` (their roll-ups stay, so
        bills of those hours are unchanged); in small transactions, so commits of new
        records wait at most one batch.  Returns the number of records dropped."""
        before = rollup.hour_of(before)
        gone = 0
        while True:
            n = await self._run(self._prune_batch, before, batch)
            gone += n
            if n < batch:
                return gone

    def _prune_batch(self, before: float, batch: int) -> int:
        conn = self._conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            n = conn.execute("DELETE FROM usage WHERE seq IN (SELECT seq FROM usage WHERE start < ? LIMIT ?)",
                             (before, batch)).rowcount
            conn.execute("DELETE FROM provisioned_usage WHERE end <= ?", (before,))
            conn.execute("INSERT INTO ledger_meta (key, value) VALUES ('raw_kept_from', ?) ON CONFLICT(key) "
                         "DO UPDATE SET value = MAX(CAST(value AS REAL), excluded.value)", (str(before),))
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
        return n

    async def read_bills(self, since: float | None, until: float | None, dim_sets: list[list[str]]):
        """The ledger's sums for each grouping in ``dim_sets``, and the endpoints' tags (``ledger``)."""
        return await self._read(lambda conn: ledger.read_bills(conn, since, until, dim_sets))

    async def hour_span(self, since: float | None, until: float | None) -> tuple[float | None, float | None]:
        return await self._read(lambda conn: ledger.hour_span(conn, since, until))

    async def _read(self, fn):
        """Reports run on a reader connection of their own (WAL: readers never block the
        writer), so a long report cannot hold up the commit of a usage record."""
        def call():
            if self._reader is None:
                self._reader = sqlite3.connect(str(self.path), check_same_thread=False)
                self._reader.execute("PRAGMA query_only=1")
            return fn(self._reader)
        return await asyncio.get_running_loop().run_in_executor(self._read_pool, call)

    async def query_usage(self, endpoint: str | None = None, since: float | None = None,
                          until: float | None = None, limit: int | None = None) -> list[dict]:
        return await self._read(lambda conn: self._query(conn, "usage", USAGE_FIELDS, endpoint, since, until, limit))

    async def usage_page(self, kind: str = "invocation", endpoint: str | None = None, since: float | None = None,
                         until: float | None = None, after: int = 0, size: int = 5000) -> list[dict]:
        """Up to ``size`` records after cursor ``after``, oldest first, each with its ``seq``
        (the next cursor): an export reads the ledger a page at a time, never all at once."""
        table, cols = ("provisioned_usage", PROVISIONED_FIELDS) if kind == "provisioned" else ("usage", USAGE_FIELDS)
        return await self._read(lambda conn: self._query(conn, table, ["seq"] + cols, endpoint, since, until,
                                                        None, after=after, size=size))

    async def query_provisioned(self, endpoint: str | None = None, since: float | None = None,
                                until: float | None = None, limit: int | None = None) -> list[dict]:
        return await self._read(
            lambda conn: self._query(conn, "provisioned_usage", PROVISIONED_FIELDS, endpoint, since, until, limit))

    @staticmethod
    def _query(conn, table, cols, endpoint, since, until, limit, after: int | None = None,
               size: int | None = None) -> list[dict]:
        where, args = [], []
        # Paging by seq walks the table in seq order from the cursor; the unary + keeps SQLite
        # off the (endpoint, start) index, whose rows it would have to sort again on every page.
        plus = "+" if after is not None else ""
        if after is not None:
            where.append("seq > ?")
            args.append(after)
        if endpoint:
            where.append(f"{plus}endpoint = ?")
            args.append(endpoint)
        if since is not None:
            where.append(f"{plus}start >= ?")
            args.append(since)
        if until is not None:
            where.append(f"{plus}start < ?")
            args.append(until)
        sql = f"SELECT {', '.join(cols)} FROM {table}"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY seq"
        if size:
            sql += f" LIMIT {int(size)}"
        elif limit:
            sql = f"SELECT * FROM ({sql} DESC LIMIT {int(limit)}) ORDER BY start"
        out = []
        for row in conn.execute(sql, args):
            d = dict(zip(cols, row, strict=True))
            if "cold_start" in d:
                d["cold_start"] = bool(d["cold_start"])
            out.append(d)
        return out


def _cell(value):
    """A record's field as SQLite stores it: mappings (a cold start's phases) as sorted JSON."""
    return json.dumps(value, sort_keys=True) if isinstance(value, dict) else value
