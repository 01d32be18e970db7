"""Billing reports from the usage ledger: what each endpoint, variant, tier, tag or hour costs.

Reports read hourly roll-ups (see ``rollup``) for the whole hours of a period
and raw records only for the partial hours at its edges, so a month of ten
million invocations is a few thousand roll-up rows, not a scan.  Every grouping
is a sum over the same base rows, hence every grouping has the same totals.

Figures per row:
  invocations, billed_ms, gb_s (billed ms x memory), cold_starts, errors,
  provisioned_gb_s (wall time of provisioned concurrency x memory),
  data_in_bytes, data_out_bytes, and the price table's cost; on the operator's
  side idle_gb_s: memory-time of warm sandboxes that served nothing (what the
  warm-pool policy spends; not billed to the customer) and idle_cost, that
  memory-time at the compute price.  Idle time of sandboxes that hold a
  provisioned-concurrency floor is not idle_gb_s: the customer pays for it.

Idle time is kept per hour only, so a period that starts or ends inside an
hour gets that hour's idle time pro rata; everything else is exact, except in
hours whose raw records a retention limit has pruned (``serve
--usage-retention-days``): there a partial hour is its roll-up pro rata too.
"""
from __future__ import annotations

import datetime as dt
import json
import math
import re
import sqlite3
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from gateway.errors import Invalid
from gateway.store.rollup import HOUR, SUMS, hour_of

DEFAULT_PRICES = Path(__file__).with_name("prices.json")
GROUPINGS = ("endpoint", "variant", "tier", "hour", "day")
ROW_FIELDS = ("invocations", "billed_ms", "gb_s", "cold_starts", "errors", "provisioned_gb_s",
              "data_in_bytes", "data_out_bytes", "idle_gb_s", "compute_cost", "data_cost",
              "provisioned_cost", "cost", "idle_cost")


class BillingError(Invalid):
    """A bad period, grouping or price table: the user's to fix."""


@dataclass(frozen=True)
class Prices:
    currency: str
    compute_per_gb_s: dict[int, float]       # memory size (MB) -> price of one GB-s of invocation time
    data_per_gb: float                       # per GB processed, in and out
    provisioned_per_gb_s: float
    note: str = ""
    source: str = ""

    @classmethod
    def load(cls, path: str | Path | None = None) -> "Prices":
        path = Path(path) if path else DEFAULT_PRICES
        try:
            raw = json.loads(path.read_text())
            prices = cls(
                currency=str(raw.get("currency", "USD")),
                compute_per_gb_s={int(k): float(v) for k, v in raw["compute_per_gb_s"].items()},
                data_per_gb=float(raw["data_per_gb"]),
                provisioned_per_gb_s=float(raw["provisioned_per_gb_s"]),
                note=str(raw.get("note", "")), source=str(path),
            )
        except FileNotFoundError:
            raise BillingError(f"price table {path} not found") from None
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise BillingError(f"price table {path} is malformed ({type(exc).__name__}: {exc}); it needs "
                               "compute_per_gb_s {{MB: price}}, data_per_gb and provisioned_per_gb_s") from None
        if any(v < 0 for v in prices.compute_per_gb_s.values()) or prices.data_per_gb < 0 \
                or prices.provisioned_per_gb_s < 0:
            raise BillingError(f"price table {path} has a negative price")
        return prices

    def compute(self, memory_mb: int) -> float:
        if memory_mb in self.compute_per_gb_s:
            return self.compute_per_gb_s[memory_mb]
        raise BillingError(f"price table {self.source} has no compute price for {memory_mb} MB")


# --- periods -----------------------------------------------------------------------
_RELATIVE = re.compile(r"^-?(\d+(?:\.\d+)?)([smhdw])$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_time(text: str | None, now: float) -> float | None:
    """Unix seconds, ISO 8601 (UTC unless it says otherwise), or an age such as 24h, 7d, 30m."""
    if text is None or text == "":
        return None
    text = text.strip()
    m = _RELATIVE.match(text)
    if m:
        return now - float(m.group(1)) * _UNITS[m.group(2)]
    try:
        return float(text)
    except ValueError:
        pass
    try:
        t = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise BillingError(f"cannot read time {text!r}: use ISO 8601 (2026-11-27T10:00Z), Unix seconds, "
                           "or an age such as 24h or 7d") from None
    if t.tzinfo is None:
        t = t.replace(tzinfo=dt.timezone.utc)
    return t.timestamp()


def parse_by(text: str) -> list[str]:
    dims = [d.strip() for d in (text or "endpoint").split(",") if d.strip()]
    for d in dims:
        if d not in GROUPINGS and not (d.startswith("tag:") and len(d) > 4):
            raise BillingError(f"cannot group by {d!r}: use endpoint, variant, tier, tag:KEY, hour or day "
                               "(comma-separated for more than one)")
    return dims


# --- base rows: (bucket, endpoint, variant, memory_mb) -> sums ---------------------------
@dataclass(frozen=True)
class Shape:
    """How finely a report needs the ledger: SQL sums to this, Python prices the result.
    Memory size is always kept (prices depend on it); endpoint and variant only when a
    grouping needs them; time in buckets of an hour, a day, or the whole period (0)."""

    endpoint: bool
    variant: bool
    bucket: int

    @classmethod
    def for_dims(cls, by: list[str]) -> "Shape":
        return cls(endpoint=any(d in ("endpoint", "variant") or d.startswith("tag:") for d in by),
                   variant="variant" in by,
                   bucket=HOUR if "hour" in by else 86400 if "day" in by else 0)

    def of_hour(self, hour: int) -> int:
        return hour - hour % self.bucket if self.bucket else 0

    def keys(self, hour_expr: str) -> str:
        bucket = f"({hour_expr}) - ({hour_expr}) % {self.bucket}" if self.bucket else "0"
        return ", ".join([bucket, "endpoint" if self.endpoint else "''", "variant" if self.variant else "''",
                          "memory_mb"])


@dataclass
class Base:
    sums: dict[tuple, list[float]] = field(default_factory=lambda: defaultdict(lambda: [0.0] * len(SUMS)))

    def add(self, key: tuple, values) -> None:
        acc = self.sums[key]
        for i, v in enumerate(values):
            acc[i] += v


_I = {name: i for i, name in enumerate(SUMS)}
_SUM_SQL = ", ".join(f"SUM({c})" for c in SUMS)


def read_base(conn: sqlite3.Connection, since: float | None, until: float | None, shape: Shape) -> Base:
    """Sums per (bucket, endpoint, variant, memory_mb) over [since, until)."""
    base = Base()
    lo = since if since is not None else float("-inf")
    hi = until if until is not None else float("inf")
    if lo >= hi:
        return base
    full_lo = lo if math.isinf(lo) else math.ceil(lo / HOUR) * HOUR
    full_hi = hi if math.isinf(hi) else hour_of(hi)
    if full_lo < full_hi:
        sql = (f"SELECT {shape.keys('hour')}, {_SUM_SQL} FROM rollup_hourly WHERE hour >= ? AND hour < ? "
               "GROUP BY 1, 2, 3, 4")
        for row in conn.execute(sql, (max(full_lo, -1e18), min(full_hi, 1e18))):
            base.add(tuple(row[:4]), row[4:])
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
    idle time pro rata from the hour's roll-up (and everything pro rata where the raw
    records of that hour have been pruned)."""
    bucket = shape.of_hour(hour_of(a))
    ep_col = "endpoint" if shape.endpoint else "''"
    var_col = "variant" if shape.variant else "''"
    if b <= raw_kept_from(conn):
        frac = (b - a) / HOUR
        for row in conn.execute(f"SELECT {ep_col}, {var_col}, memory_mb, {_SUM_SQL} FROM rollup_hourly "
                                "WHERE hour = ? GROUP BY 1, 2, 3", (hour_of(a),)):
            base.add((bucket,) + tuple(row[:3]), [v * frac for v in row[3:]])
        return
    for ep, var, mb, n, billed, cold, err, b_in, b_out in conn.execute(
            f"SELECT {ep_col}, {var_col}, memory_mb, COUNT(*), SUM(billed_ms), SUM(cold_start), SUM(status != 'ok'), "
            "SUM(bytes_in), SUM(bytes_out) FROM usage WHERE start >= ? AND start < ? GROUP BY 1, 2, 3", (a, b)):
        vals = [0.0] * len(SUMS)
        vals[_I["invocations"]], vals[_I["billed_ms"]], vals[_I["cold_starts"]] = n, billed, cold
        vals[_I["errors"]], vals[_I["bytes_in"]], vals[_I["bytes_out"]] = err, b_in, b_out
        base.add((bucket, ep, var, mb), vals)
    for ep, var, mb, start, end, ms in conn.execute(
            f"SELECT {ep_col}, {var_col}, memory_mb, start, end, billed_ms FROM provisioned_usage "
            "WHERE start < ? AND end > ? AND start >= ?", (b, a, a - 2 * HOUR)):
        span = end - start
        share = 1.0 if span <= 0 else max(0.0, min(end, b) - max(start, a)) / span
        vals = [0.0] * len(SUMS)
        vals[_I["provisioned_ms"]] = ms * share
        base.add((bucket, ep, var, mb), vals)
    frac = (b - a) / HOUR
    for ep, var, mb, idle in conn.execute(
            f"SELECT {ep_col}, {var_col}, memory_mb, SUM(idle_ms) FROM rollup_hourly WHERE hour = ? AND idle_ms > 0 "
            "GROUP BY 1, 2, 3", (hour_of(a),)):
        vals = [0.0] * len(SUMS)
        vals[_I["idle_ms"]] = idle * frac
        base.add((bucket, ep, var, mb), vals)


def endpoint_tags(conn: sqlite3.Connection) -> dict[str, dict[str, str]]:
    """Tags of live endpoints, and the last tags of deleted ones (so their cost keeps its team)."""
    tags: dict[str, dict[str, str]] = {}
    for table in ("retired_endpoints", "endpoints"):
        for name, spec in conn.execute(f"SELECT name, spec FROM {table}"):
            tags[name] = json.loads(spec).get("tags") or {}
    return tags


# --- grouping and pricing ----------------------------------------------------------------
def _dim_value(dim: str, bucket: int, ep: str, var: str, mb: int, tags: dict) -> str | int:
    if dim == "endpoint":
        return ep
    if dim == "variant":
        return f"{ep}/{var}"
    if dim == "tier":
        return mb
    if dim == "hour":
        return dt.datetime.fromtimestamp(bucket, dt.timezone.utc).strftime("%Y-%m-%dT%H:00Z")
    if dim == "day":
        return dt.datetime.fromtimestamp(bucket, dt.timezone.utc).strftime("%Y-%m-%d")
    return tags.get(ep, {}).get(dim[4:], "(untagged)")        # tag:KEY


def priced(values, mb: int, prices: Prices) -> dict[str, float]:
    gb = mb / 1024.0
    gb_s = values[_I["billed_ms"]] / 1000.0 * gb
    prov_gb_s = values[_I["provisioned_ms"]] / 1000.0 * gb
    data_gb = (values[_I["bytes_in"]] + values[_I["bytes_out"]]) / 1024 ** 3
    compute_cost = gb_s * prices.compute(mb)
    data_cost = data_gb * prices.data_per_gb
    prov_cost = prov_gb_s * prices.provisioned_per_gb_s
    return {
        "invocations": values[_I["invocations"]], "billed_ms": values[_I["billed_ms"]], "gb_s": gb_s,
        "cold_starts": values[_I["cold_starts"]], "errors": values[_I["errors"]], "provisioned_gb_s": prov_gb_s,
        "data_in_bytes": values[_I["bytes_in"]], "data_out_bytes": values[_I["bytes_out"]],
        "idle_gb_s": values[_I["idle_ms"]] / 1000.0 * gb,
        "compute_cost": compute_cost, "data_cost": data_cost, "provisioned_cost": prov_cost,
        "cost": compute_cost + data_cost + prov_cost,
        # the operator's side: idle memory priced as if it had served (not part of the customer's cost)
        "idle_cost": values[_I["idle_ms"]] / 1000.0 * gb * prices.compute(mb),
    }


def _finish(acc: dict[str, float]) -> dict:
    out = {}
    for k in ROW_FIELDS:
        v = acc.get(k, 0.0)
        if k in ("invocations", "billed_ms", "cold_starts", "errors", "data_in_bytes", "data_out_bytes"):
            out[k] = int(round(v))
        elif k.endswith("cost"):
            out[k] = round(v, 9)
        else:
            out[k] = round(v, 6)
    return out


def report(base: Base, by: list[str], prices: Prices, tags: dict[str, dict[str, str]]) -> dict:
    groups: dict[tuple, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    total: dict[str, float] = defaultdict(float)
    for (bucket, ep, var, mb), values in base.sums.items():
        fig = priced(values, mb, prices)
        key = tuple(_dim_value(d, bucket, ep, var, mb, tags) for d in by)
        acc = groups[key]
        for k, v in fig.items():
            acc[k] += v
            total[k] += v
    rows = []
    for key in sorted(groups, key=lambda k: tuple(str(x) if not isinstance(x, int) else f"{x:012d}" for x in k)):
        row = {"group": " / ".join(str(x) for x in key)}
        row.update(dict(zip(by, key, strict=True)))
        row.update(_finish(groups[key]))
        rows.append(row)
    return {"by": by, "currency": prices.currency, "prices": prices.source, "prices_note": prices.note,
            "rows": rows, "total": _finish(total)}


def bill(conn: sqlite3.Connection, since: float | None, until: float | None, by: list[str], prices: Prices) -> dict:
    doc = report(read_base(conn, since, until, Shape.for_dims(by)), by, prices, endpoint_tags(conn))
    doc["since"], doc["until"] = since, until
    return doc


def bill_set(conn: sqlite3.Connection, since: float | None, until: float | None, by: list[str],
             prices: Prices) -> dict[str, dict]:
    """The requested bill and the groupings its HTML page charts."""
    tags = endpoint_tags(conn)
    span = conn.execute("SELECT MIN(hour), MAX(hour) FROM rollup_hourly WHERE hour >= ? AND hour < ?",
                        (hour_of(since) if since is not None else -1e18,
                         until if until is not None else 1e18)).fetchone()
    step = "day" if span[0] is not None and span[1] - span[0] > 4 * 86400 else "hour"

    def one(dims: list[str]) -> dict:
        doc = report(read_base(conn, since, until, Shape.for_dims(dims)), dims, prices, tags)
        doc["since"], doc["until"] = since, until
        return doc

    return {"main": one(by), "time_by_endpoint": one([step, "endpoint"]), "tier": one(["tier"]),
            "endpoint": one(["endpoint"])}
