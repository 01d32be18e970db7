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
import re
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from gateway.config import MEMORY_TIERS_MB
from gateway.errors import Invalid
from gateway.store.ledger import SUM_INDEX, Base

DEFAULT_PRICES = Path(__file__).with_name("prices.json")
GROUPINGS = ("endpoint", "variant", "tier", "hour", "day", "target_model")
ROW_FIELDS = ("invocations", "billed_ms", "gb_s", "cold_starts", "errors", "provisioned_gb_s",
              "data_in_bytes", "data_out_bytes", "idle_gb_s", "zygote_gb_s", "compute_cost", "data_cost",
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
    instance_per_hour: dict[str, float] = field(default_factory=dict)    # instance type -> price per hour

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
                instance_per_hour={str(k): float(v) for k, v in (raw.get("instance_per_hour") or {}).items()},
            )
        except FileNotFoundError:
            raise BillingError(f"price table {path} not found") from None
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise BillingError(f"price table {path} is malformed ({type(exc).__name__}: {exc}); it needs "
                               "compute_per_gb_s {{MB: price}}, data_per_gb and provisioned_per_gb_s") from None
        if any(v < 0 for v in prices.compute_per_gb_s.values()) or prices.data_per_gb < 0 \
                or prices.provisioned_per_gb_s < 0 or any(v < 0 for v in prices.instance_per_hour.values()):
            raise BillingError(f"price table {path} has a negative price")
        return prices

    def instance_hour(self, instance_type: str) -> float:
        """An instance's price per hour: the table's ``instance_per_hour``, else (a price file
        from before that section, or a type it leaves out) the instance's memory at the
        provisioned-concurrency price."""
        if instance_type in self.instance_per_hour:
            return self.instance_per_hour[instance_type]
        from gateway.sagemaker.instances import instance_memory_mb

        return instance_memory_mb(instance_type) / 1024.0 * self.provisioned_per_gb_s * 3600.0

    def compute(self, memory_mb: int) -> float:
        """The price of a GB-s of invocation time at a serverless memory size.  Any other size is an
        instance variant's, whose instances are paid for by the hour (their provisioned time), not
        per invocation: 0."""
        if memory_mb in self.compute_per_gb_s:
            return self.compute_per_gb_s[memory_mb]
        if memory_mb not in MEMORY_TIERS_MB:
            return 0.0
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
            raise BillingError(f"cannot group by {d!r}: use endpoint, variant, tier, tag:KEY, hour, day or "
                               "target_model "
                               "(comma-separated for more than one)")
    return dims


# --- grouping and pricing ----------------------------------------------------------------
def _dim_value(dim: str, bucket: int, ep: str, var: str, mb: int, target: str, tags: dict) -> str | int:
    if dim == "target_model":     # single-model endpoints' calls, and idle and provisioned time: no one model's
        return target or "(none)"
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
    gb_s = values[SUM_INDEX["billed_ms"]] / 1000.0 * gb
    prov_gb_s = values[SUM_INDEX["provisioned_ms"]] / 1000.0 * gb
    data_gb = (values[SUM_INDEX["bytes_in"]] + values[SUM_INDEX["bytes_out"]]) / 1024 ** 3
    compute_cost = gb_s * prices.compute(mb)
    data_cost = data_gb * prices.data_per_gb
    prov_cost = prov_gb_s * prices.provisioned_per_gb_s
    return {
        "invocations": values[SUM_INDEX["invocations"]], "billed_ms": values[SUM_INDEX["billed_ms"]], "gb_s": gb_s,
        "cold_starts": values[SUM_INDEX["cold_starts"]], "errors": values[SUM_INDEX["errors"]],
        "provisioned_gb_s": prov_gb_s,
        "data_in_bytes": values[SUM_INDEX["bytes_in"]], "data_out_bytes": values[SUM_INDEX["bytes_out"]],
        "idle_gb_s": values[SUM_INDEX["idle_ms"]] / 1000.0 * gb,
        "zygote_gb_s": values[SUM_INDEX["zygote_mb_ms"]] / 1000.0 / 1024.0,    # at what they hold, not the tier
        "compute_cost": compute_cost, "data_cost": data_cost, "provisioned_cost": prov_cost,
        "cost": compute_cost + data_cost + prov_cost,
        # the operator's side: idle memory priced as if it had served (not part of the customer's cost)
        "idle_cost": values[SUM_INDEX["idle_ms"]] / 1000.0 * gb * prices.compute(mb),
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
    for (bucket, ep, var, mb, target), values in base.sums.items():
        fig = priced(values, mb, prices)
        key = tuple(_dim_value(d, bucket, ep, var, mb, target, tags) for d in by)
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


def priced_bill(base: Base, tags: dict[str, dict[str, str]], since: float | None, until: float | None,
                by: list[str], prices: Prices) -> dict:
    """The bill grouped ``by`` from the ledger's sums over [since, until)."""
    doc = report(base, by, prices, tags)
    doc["since"], doc["until"] = since, until
    return doc


def views(by: list[str], span: tuple[float | None, float | None]) -> dict[str, list[str]]:
    """The groupings a bill's HTML page shows: the one asked for, cost over time by endpoint (by
    day when the ledger spans more than four days, else by hour), by tier and by endpoint."""
    lo, hi = span
    step = "day" if lo is not None and hi - lo > 4 * 86400 else "hour"
    return {"main": by, "time_by_endpoint": [step, "endpoint"], "tier": ["tier"], "endpoint": ["endpoint"]}


def transform_bill(usage: list[dict], prices: Prices) -> dict:
    """Transform jobs' own rows: each job's instance time (instances x wall time) and its cost
    at the instance type's hourly price."""
    rows = []
    for u in usage:
        seconds = u["billed_ms"] / 1000.0
        rows.append({"job": u["job"], "instance_type": u["instance_type"], "instance_count": u["instance_count"],
                     "seconds": round(seconds, 3), "cost": round(seconds / 3600.0 * prices.instance_hour(
                         u["instance_type"]), 9)})
    return {"rows": rows, "seconds": round(sum(r["seconds"] for r in rows), 3),
            "cost": round(sum(r["cost"] for r in rows), 9)}


async def bill(store, since: float | None, until: float | None, by: list[str], prices: Prices) -> dict:
    """The bill, read from any ``Store``: the invocation ledger grouped ``by``, and transform jobs."""
    (base,), tags = await store.read_bills(since, until, [by])
    doc = priced_bill(base, tags, since, until, by, prices)
    doc["transform_jobs"] = transform_bill(await store.transform_usage(since, until), prices)
    return doc


async def bill_set(store, since: float | None, until: float | None, by: list[str],
                   prices: Prices) -> dict[str, dict]:
    """The requested bill and the groupings its HTML page charts."""
    wanted = views(by, await store.hour_span(since, until))
    bases, tags = await store.read_bills(since, until, list(wanted.values()))
    return {name: priced_bill(base, tags, since, until, dims, prices)
            for (name, dims), base in zip(wanted.items(), bases, strict=True)}
