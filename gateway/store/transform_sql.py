"""Transform jobs in SQL: a job's row, its plan (one row per input object, in order) and its
instance time.  The plan is written once, before the first object is read; an object's row
turns ``done`` only after its output object is complete in storage, so a job resumed after a
crash starts again at its first object that is not done and writes exactly one output per
input.  Every function runs on the store's thread."""
from __future__ import annotations

import json
import sqlite3

SCHEMA = """
CREATE TABLE IF NOT EXISTS transform_jobs (
    name TEXT PRIMARY KEY,
    doc TEXT NOT NULL,
    status TEXT NOT NULL,
    failure_reason TEXT,
    created REAL NOT NULL,
    modified REAL NOT NULL,
    started REAL,
    ended REAL,
    planned INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS transform_objects (
    job TEXT NOT NULL,
    seq INTEGER NOT NULL,
    url TEXT NOT NULL,
    rel TEXT NOT NULL,
    size INTEGER,
    state TEXT NOT NULL DEFAULT 'pending',
    records INTEGER NOT NULL DEFAULT 0,
    out_bytes INTEGER NOT NULL DEFAULT 0,
    finished REAL,
    error TEXT,
    PRIMARY KEY (job, seq)
);
CREATE TABLE IF NOT EXISTS transform_usage (
    job TEXT NOT NULL,
    instance_type TEXT NOT NULL,
    instances INTEGER NOT NULL,
    start REAL NOT NULL,
    end REAL NOT NULL,
    billed_ms INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS transform_usage_start ON transform_usage (start);
"""

JOB_COLS = "name, doc, status, failure_reason, created, modified, started, ended, planned"
OBJECT_COLS = "seq, url, rel, size, state, records, out_bytes, error"


def _job(row) -> dict:
    name, doc, status, reason, created, modified, started, ended, planned = row
    return {"name": name, "doc": json.loads(doc), "status": status, "failure_reason": reason, "created": created,
            "modified": modified, "started": started, "ended": ended, "planned": bool(planned)}


def insert_job(conn: sqlite3.Connection, name: str, doc: dict, now: float) -> bool:
    """False if a job of that name exists already (names are unique for ever, as on AWS)."""
    try:
        conn.execute("INSERT INTO transform_jobs (name, doc, status, created, modified) VALUES (?, ?, ?, ?, ?)",
                     (name, json.dumps(doc), "InProgress", now, now))
    except sqlite3.IntegrityError:
        return False
    return True


def set_doc(conn: sqlite3.Connection, name: str, doc: dict) -> None:
    conn.execute("UPDATE transform_jobs SET doc = ? WHERE name = ?", (json.dumps(doc), name))


def get_job(conn: sqlite3.Connection, name: str) -> dict | None:
    row = conn.execute(f"SELECT {JOB_COLS} FROM transform_jobs WHERE name = ?", (name,)).fetchone()
    return _job(row) if row else None


def list_jobs(conn: sqlite3.Connection) -> list[dict]:
    return [_job(r) for r in conn.execute(f"SELECT {JOB_COLS} FROM transform_jobs")]


def set_status(conn: sqlite3.Connection, name: str, status: str, now: float, reason: str | None = None,
               only_from: tuple[str, ...] = ()) -> bool:
    """Move a job to ``status`` (from one of ``only_from``, when given); Completed, Failed and
    Stopped stamp its end, InProgress its start (the first time)."""
    sets = "status = ?, modified = ?, failure_reason = COALESCE(?, failure_reason)"
    if status in ("Completed", "Failed", "Stopped"):
        sets += ", ended = ?"
        args = [status, now, reason, now]
    else:
        args = [status, now, reason]
    where = "name = ?"
    args.append(name)
    if only_from:
        where += f" AND status IN ({', '.join('?' for _ in only_from)})"
        args.extend(only_from)
    return conn.execute(f"UPDATE transform_jobs SET {sets} WHERE {where}", args).rowcount == 1


def mark_started(conn: sqlite3.Connection, name: str, now: float) -> None:
    conn.execute("UPDATE transform_jobs SET started = COALESCE(started, ?), modified = ? WHERE name = ?",
                 (now, now, name))


def write_plan(conn: sqlite3.Connection, name: str, objects: list[tuple[str, str, int | None]]) -> None:
    """The job's input objects (url, relative name, size), in the order they are processed: once."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        if conn.execute("SELECT planned FROM transform_jobs WHERE name = ?", (name,)).fetchone()[0]:
            conn.execute("ROLLBACK")
            return
        conn.executemany("INSERT INTO transform_objects (job, seq, url, rel, size) VALUES (?, ?, ?, ?, ?)",
                         [(name, i, url, rel, size) for i, (url, rel, size) in enumerate(objects)])
        conn.execute("UPDATE transform_jobs SET planned = 1 WHERE name = ?", (name,))
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise


def objects(conn: sqlite3.Connection, name: str) -> list[dict]:
    return [dict(zip(OBJECT_COLS.split(", "), r, strict=True)) for r in conn.execute(
        f"SELECT {OBJECT_COLS} FROM transform_objects WHERE job = ? ORDER BY seq", (name,))]


def finish_object(conn: sqlite3.Connection, name: str, seq: int, state: str, records: int, out_bytes: int,
                  now: float, error: str | None = None) -> None:
    conn.execute("UPDATE transform_objects SET state = ?, records = ?, out_bytes = ?, finished = ?, error = ? "
                 "WHERE job = ? AND seq = ?", (state, records, out_bytes, now, error, name, seq))


def progress(conn: sqlite3.Connection, name: str) -> dict:
    total, done, failed, records, size, done_size = conn.execute(
        "SELECT COUNT(*), SUM(state = 'done'), SUM(state = 'failed'), SUM(records), SUM(size), "
        "SUM(CASE WHEN state = 'done' THEN size END) FROM transform_objects WHERE job = ?", (name,)).fetchone()
    return {"objects": total or 0, "objects_done": int(done or 0), "objects_failed": int(failed or 0),
            "records_done": int(records or 0), "bytes": int(size or 0), "bytes_done": int(done_size or 0)}


def add_usage(conn: sqlite3.Connection, name: str, instance_type: str, instances: int, start: float,
              end: float) -> int:
    ms = int(round((end - start) * 1000.0)) * instances
    if ms > 0:
        conn.execute("INSERT INTO transform_usage (job, instance_type, instances, start, end, billed_ms) "
                     "VALUES (?, ?, ?, ?, ?, ?)", (name, instance_type, instances, start, end, ms))
    return ms


def usage(conn: sqlite3.Connection, since: float | None, until: float | None) -> list[dict]:
    """Instance time per job whose intervals start in [since, until)."""
    rows = conn.execute(
        "SELECT job, instance_type, MAX(instances), SUM(billed_ms), MIN(start), MAX(end) FROM transform_usage "
        "WHERE start >= ? AND start < ? GROUP BY job, instance_type ORDER BY MIN(start)",
        (since if since is not None else float("-inf"), until if until is not None else float("inf")))
    return [{"job": j, "instance_type": t, "instance_count": n, "billed_ms": int(ms), "start": s, "end": e}
            for j, t, n, ms, s, e in rows]
