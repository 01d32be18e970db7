"""The ledger's reads for bills, in SQL: sums per (bucket, endpoint, variant, memory size, target
model) over
a period, whole hours from the hourly roll-ups and the partial hours at its edges from raw
records (pro rata from the roll-up where raw records were pruned), plus endpoint tags.
``gateway.metering.billing`` prices what these return and runs no SQL of its own."""
from __future__ import annotations

import json
import math
import sqlite3
from collections import defaultdict
from dataclasses import dataclass, field

from gateway.store.rollup import HOUR, SUMS, hour_of


@dataclass(frozen=True)
class Shape:
    """How finely a report needs the ledger: SQL sums to this, Python prices the result.
    Memory size is always kept (prices depend on it); endpoint and variant only when a
    grouping needs them; time in buckets of an hour, a day, or the whole period (0)."""

    endpoint: bool
    variant: bool
    bucket: int
    target: bool = False

    @classmethod
    def for_dims(cls, by: list[str]) -> "Shape":
        return cls(endpoint=any(d in ("endpoint", "variant") or d.startswith("tag:") for d in by),
                   variant="variant" in by,
                   bucket=HOUR if "hour" in by else 86400 if "day" in by else 0,
                   target="target_model" in by)

    def of_hour(self, hour: int) -> int:
        return hour - hour % self.bucket if self.bucket else 0

    def columns(self, target_expr: str = "target_model") -> str:
        """endpoint, variant, memory_mb, target model: the columns a grouping keeps ('' for the rest)."""
        return ", ".join(["endpoint" if self.endpoint else "''", "variant" if self.variant else "''", "memory_mb",
                          target_expr if self.target else "''"])

    def keys(self, hour_expr: str) -> str:
        bucket = f"({hour_expr}) - ({hour_expr}) % {self.bucket}" if self.bucket else "0"
        return ", ".join([bucket, self.columns()])


@dataclass
class Base:
    sums: dict[tuple, list[float]] = field(default_factory=lambda: defaultdict(lambda: [0.0] * len(SUMS)))

    def add(self, key: tuple, values) -> None:
        acc = self.sums[key]
        for i, v in enumerate(values):
            acc[i] += v


SUM_INDEX = {name: i for i, name in enumerate(SUMS)}
_SUM_SQL = ", ".join(f"SUM({c})" for c in SUMS)


def read_base(conn: sqlite3.Connection, since: float | None, until: float | None, shape: Shape) -> Base:
    """Sums per (bucket, endpoint, variant, memory_mb, target_model) over [since, until)."""
    base = Base()
    lo = since if since is not None else float("-inf")
    hi = until if until is not None else float("inf")
    if lo >= hi:
        return base
    full_lo = lo if math.isinf(lo) else math.ceil(lo / HOUR) * HOUR
    full_hi = hi if math.isinf(hi) else hour_of(hi)
    if full_lo < full_hi:
        sql = (f"SELECT {shape.keys('hour')}, {_SUM_SQL} FROM rollup_hourly WHERE hour >= ? AND hour < ? "
               "GROUP BY 1, 2, 3, 4, 5")
        for row in conn.execute(sql, (max(full_lo, -1e18), min(full_hi, 1e18))):
            base.add(tuple(row[:5]), row[5:])
        edges = [(lo, full_lo), (full_hi, hi)]
    else:
        edges = [(lo, hi)]
    for a, b in edges:
        if b > a:
            _add_partial(conn, base, a, b, shape)
    return base


def raw_kept_from(conn: sqlite3.Connection) -> float:
    """Raw records start here (an hour boundary); older ones were pruned (roll-ups remain)."""
    row = conn.execute("SELECT value FROM ledger_meta WHERE key = 'raw_kept_from'").fetchone()
    return float(row[0]) if row else float("-inf")


def _add_partial(conn: sqlite3.Connection, base: Base, a: float, b: float, shape: Shape) -> None:
    """[a, b) lies within one hour: invocations and provisioned time from raw records,
    idle and model-zygote time pro rata from the hour's roll-up (and everything pro rata where the raw
    records of that hour have been pruned)."""
    bucket = shape.of_hour(hour_of(a))
    cols = shape.columns()
    usage_cols, provisioned_cols = shape.columns("COALESCE(target_model, '')"), shape.columns("''")
    if b <= raw_kept_from(conn):
        frac = (b - a) / HOUR
        for row in conn.execute(f"SELECT {cols}, {_SUM_SQL} FROM rollup_hourly WHERE hour = ? GROUP BY 1, 2, 3, 4",
                                (hour_of(a),)):
            base.add((bucket,) + tuple(row[:4]), [v * frac for v in row[4:]])
        return
    for ep, var, mb, target, n, billed, cold, err, b_in, b_out in conn.execute(
            f"SELECT {usage_cols}, COUNT(*), SUM(billed_ms), SUM(cold_start), "
            "SUM(status != 'ok'), SUM(bytes_in), SUM(bytes_out) FROM usage WHERE start >= ? AND start < ? "
            "GROUP BY 1, 2, 3, 4", (a, b)):
        vals = [0.0] * len(SUMS)
        vals[SUM_INDEX["invocations"]], vals[SUM_INDEX["billed_ms"]], vals[SUM_INDEX["cold_starts"]] = n, billed, cold
        vals[SUM_INDEX["errors"]], vals[SUM_INDEX["bytes_in"]], vals[SUM_INDEX["bytes_out"]] = err, b_in, b_out
        base.add((bucket, ep, var, mb, target), vals)
    for ep, var, mb, _target, start, end, ms in conn.execute(
            f"SELECT {provisioned_cols}, start, end, billed_ms FROM provisioned_usage "
            "WHERE start < ? AND end > ? AND start >= ?", (b, a, a - 2 * HOUR)):
        span = end - start
        share = 1.0 if span <= 0 else max(0.0, min(end, b) - max(start, a)) / span
        vals = [0.0] * len(SUMS)
        vals[SUM_INDEX["provisioned_ms"]] = ms * share
        base.add((bucket, ep, var, mb, ""), vals)
    frac = (b - a) / HOUR
    for ep, var, mb, target, idle, zygote in conn.execute(
            f"SELECT {cols}, SUM(idle_ms), SUM(zygote_mb_ms) FROM rollup_hourly WHERE hour = ? "
            "AND (idle_ms > 0 OR zygote_mb_ms > 0) GROUP BY 1, 2, 3, 4", (hour_of(a),)):
        vals = [0.0] * len(SUMS)
        vals[SUM_INDEX["idle_ms"]] = idle * frac
        vals[SUM_INDEX["zygote_mb_ms"]] = zygote * frac
        base.add((bucket, ep, var, mb, target), vals)


def endpoint_tags(conn: sqlite3.Connection) -> dict[str, dict[str, str]]:
    """Tags of live endpoints, and the last tags of deleted ones (so their cost keeps its team)."""
    tags: dict[str, dict[str, str]] = {}
    for table in ("retired_endpoints", "endpoints"):
        for name, spec in conn.execute(f"SELECT name, spec FROM {table}"):
            tags[name] = json.loads(spec).get("tags") or {}
    return tags


def hour_span(conn: sqlite3.Connection, since: float | None, until: float | None) -> tuple[float | None, float | None]:
    """The first and last hour with roll-ups in [since, until) (None, None for none)."""
    lo, hi = conn.execute("SELECT MIN(hour), MAX(hour) FROM rollup_hourly WHERE hour >= ? AND hour < ?",
                          (hour_of(since) if since is not None else -1e18,
                           until if until is not None else 1e18)).fetchone()
    return lo, hi


def read_bills(conn: sqlite3.Connection, since: float | None, until: float | None,
               dim_sets: list[list[str]]) -> tuple[list[Base], dict[str, dict[str, str]]]:
    """One read for several groupings: the sums each needs, and the endpoints' tags."""
    return [read_base(conn, since, until, Shape.for_dims(d)) for d in dim_sets], endpoint_tags(conn)
