"""The asynchronous-inference queue in SQL: a request is a row, and a claim is a lease.

A claim takes the oldest runnable rows of an endpoint (queued and due, or running under a
lease that ran out) and leases them to one owner until a deadline, in one statement, so two
workers never hold the same row at once; the owner renews the lease while the request runs.
Finishing is conditional on still holding the lease: a worker whose lease was taken over
cannot overwrite what the new holder decides.  Every function runs on the store's thread."""
from __future__ import annotations

import sqlite3

from gateway.domain import QUEUE_FIELDS, QueuedRequest

SCHEMA = """
CREATE TABLE IF NOT EXISTS async_requests (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    endpoint TEXT NOT NULL,
    inference_id TEXT NOT NULL,
    received REAL NOT NULL,
    expires REAL NOT NULL,
    timeout_s REAL NOT NULL,
    output_location TEXT NOT NULL,
    failure_location TEXT NOT NULL,
    input_location TEXT,
    body BLOB,
    content_type TEXT,
    accept TEXT,
    custom_attributes TEXT,
    state TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    not_before REAL NOT NULL DEFAULT 0,
    lease_owner TEXT,
    lease_until REAL,
    finished REAL,
    error TEXT
);
CREATE INDEX IF NOT EXISTS async_open ON async_requests (endpoint, state, seq) WHERE state IN ('queued', 'running');
CREATE INDEX IF NOT EXISTS async_finished ON async_requests (finished) WHERE finished IS NOT NULL;
"""

COLS = ", ".join(QUEUE_FIELDS)
# Lists of many requests leave the inline bodies (up to 128 KB each) in the table.
LIST_COLS = ", ".join("NULL" if f == "body" else f for f in QUEUE_FIELDS)
OPEN = "state IN ('queued', 'running')"


def _rows(cur) -> list[QueuedRequest]:
    return [QueuedRequest(*row) for row in cur]


def enqueue(conn: sqlite3.Connection, req: QueuedRequest) -> None:
    conn.execute(f"INSERT INTO async_requests ({COLS}) VALUES ({', '.join('?' for _ in QUEUE_FIELDS)})",
                 tuple(getattr(req, f) for f in QUEUE_FIELDS))


def claim(conn: sqlite3.Connection, endpoint: str, owner: str, now: float, lease_s: float,
          limit: int) -> list[QueuedRequest]:
    """Up to ``limit`` runnable requests of ``endpoint``, oldest first, leased to ``owner``: queued
    and due, or running under someone else's lease that ran out (``owner``'s own are still its
    to run: taking them again would run a request twice in one process)."""
    if limit <= 0:
        return []
    return _rows(conn.execute(
        f"UPDATE async_requests SET state = 'running', lease_owner = ?, lease_until = ?, attempts = attempts + 1 "
        f"WHERE seq IN (SELECT seq FROM async_requests WHERE endpoint = ? AND "
        f"((state = 'queued' AND not_before <= ?) OR (state = 'running' AND lease_until < ? AND lease_owner != ?)) "
        f"ORDER BY seq LIMIT ?) RETURNING {COLS}",
        (owner, now + lease_s, endpoint, now, now, owner, limit)))


def renew(conn: sqlite3.Connection, ids: list[str], owner: str, until: float) -> set[str]:
    """Extend ``owner``'s leases of ``ids``; the ids it still held (a missing one was taken over)."""
    if not ids:
        return set()
    marks = ", ".join("?" for _ in ids)
    return {row[0] for row in conn.execute(
        f"UPDATE async_requests SET lease_until = ? WHERE state = 'running' AND lease_owner = ? "
        f"AND id IN ({marks}) RETURNING id", (until, owner, *ids))}


def finish(conn: sqlite3.Connection, rid: str, owner: str | None, state: str, now: float,
           error: str | None = None) -> bool:
    """done | failed | expired, if ``owner`` still holds it (``None``: whoever does, for requests
    ended without running: DeleteEndpoint, expiry).  The inline body is dropped: it was used."""
    cond = "lease_owner = ? AND state = 'running'" if owner is not None else OPEN
    args = (state, now, error, rid) + ((owner,) if owner is not None else ())
    return conn.execute(f"UPDATE async_requests SET state = ?, finished = ?, error = ?, body = NULL, "
                        f"lease_owner = NULL, lease_until = NULL WHERE id = ? AND {cond}", args).rowcount == 1


def retry_later(conn: sqlite3.Connection, rid: str, owner: str, not_before: float, error: str,
                refund: bool) -> bool:
    """Back to the queue until ``not_before`` (storage was down); ``refund``: the attempt did not
    count (it never reached a sandbox: no capacity)."""
    return conn.execute(
        "UPDATE async_requests SET state = 'queued', not_before = ?, error = ?, lease_owner = NULL, "
        "lease_until = NULL, attempts = attempts - ? WHERE id = ? AND lease_owner = ? AND state = 'running'",
        (not_before, error, 1 if refund else 0, rid, owner)).rowcount == 1


def release_owner(conn: sqlite3.Connection, owner_prefix: str, keep_owner: str) -> int:
    """Requests leased by an earlier run of this node (``owner_prefix``, not ``keep_owner``): that
    process is gone (killed), so they are queued again now rather than when their leases run out."""
    return conn.execute(
        "UPDATE async_requests SET state = 'queued', lease_owner = NULL, lease_until = NULL "
        "WHERE state = 'running' AND lease_owner LIKE ? ESCAPE '\\' AND lease_owner != ?",
        (_like_prefix(owner_prefix), keep_owner)).rowcount


def _like_prefix(prefix: str) -> str:
    return prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


def expired(conn: sqlite3.Connection, now: float, limit: int = 1000) -> list[QueuedRequest]:
    """Queued requests whose time to live ran out before they started."""
    return _rows(conn.execute(f"SELECT {LIST_COLS} FROM async_requests WHERE state = 'queued' AND expires < ? "
                              f"ORDER BY seq LIMIT ?", (now, limit)))


def open_requests(conn: sqlite3.Connection, endpoint: str, limit: int = 1000) -> list[QueuedRequest]:
    return _rows(conn.execute(f"SELECT {LIST_COLS} FROM async_requests WHERE endpoint = ? AND {OPEN} "
                              f"ORDER BY seq LIMIT ?", (endpoint, limit)))


def get(conn: sqlite3.Connection, rid: str) -> QueuedRequest | None:
    rows = _rows(conn.execute(f"SELECT {COLS} FROM async_requests WHERE id = ?", (rid,)))
    return rows[0] if rows else None


def backlog(conn: sqlite3.Connection) -> dict[str, tuple[int, int, float | None]]:
    """Per endpoint with open requests: (queued, running, oldest queued request's receipt time)."""
    out = {}
    for endpoint, queued, running, oldest in conn.execute(
            f"SELECT endpoint, SUM(state = 'queued'), SUM(state = 'running'), "
            f"MIN(CASE WHEN state = 'queued' THEN received END) FROM async_requests WHERE {OPEN} "
            f"GROUP BY endpoint"):
        out[endpoint] = (int(queued or 0), int(running or 0), oldest)
    return out


def prune(conn: sqlite3.Connection, before: float) -> int:
    """Finished requests older than ``before`` (their outputs are in S3; the rows were the record)."""
    return conn.execute("DELETE FROM async_requests WHERE finished IS NOT NULL AND finished < ?",
                        (before,)).rowcount
