"""Hourly roll-ups of the usage ledger, so that a bill over a month reads hours, not rows.

One roll-up row per (hour, endpoint, variant, memory_mb, target_model) sums what billing
needs: invocations, billed ms, cold starts, errors, bytes in and out,
provisioned sandbox-ms, idle sandbox-ms and model zygotes' MB-ms.  The store writes a batch's deltas
in the same transaction as its raw records, so roll-ups and ledger can never
disagree; ``REBUILD_SQL`` derives them from raw records for ledgers written
before roll-ups existed.  Pure functions: records in, deltas out.
"""
from __future__ import annotations

from collections import defaultdict
from typing import Iterable

HOUR = 3600
KEY = ("hour", "endpoint", "variant", "memory_mb", "target_model")   # target_model: '' unless multi-model
SUMS = ("invocations", "billed_ms", "cold_starts", "errors", "bytes_in", "bytes_out", "provisioned_ms", "idle_ms",
        "zygote_mb_ms")        # zygote_mb_ms: model zygotes' memory (their own MB, not the tier) x time
COLUMNS = KEY + SUMS

UPSERT_SQL = (
    f"INSERT INTO rollup_hourly ({', '.join(COLUMNS)}) VALUES ({', '.join('?' for _ in COLUMNS)}) "
    f"ON CONFLICT ({', '.join(KEY)}) DO UPDATE SET "
    + ", ".join(f"{c} = {c} + excluded.{c}" for c in SUMS)
)

REBUILD_SQL = [
    "DELETE FROM rollup_hourly",
    f"""INSERT INTO rollup_hourly ({', '.join(KEY)}, invocations, billed_ms, cold_starts, errors, bytes_in, bytes_out)
        SELECT CAST(start / {HOUR} AS INTEGER) * {HOUR}, endpoint, variant, memory_mb, COALESCE(target_model, ''),
               COUNT(*), SUM(billed_ms), SUM(cold_start), SUM(status != 'ok'), SUM(bytes_in), SUM(bytes_out)
        FROM usage GROUP BY 1, 2, 3, 4, 5""",
]


def hour_of(t: float) -> int:
    return int(t // HOUR) * HOUR


def _zero() -> list[int]:
    return [0] * len(SUMS)


def usage_deltas(records: Iterable) -> dict[tuple, list[int]]:
    """Invocation records (UsageRecord-like) -> {key: sums}."""
    out: dict[tuple, list[int]] = defaultdict(_zero)
    for r in records:
        d = out[(hour_of(r.start), r.endpoint, r.variant, r.memory_mb, r.target_model or "")]
        d[0] += 1
        d[1] += r.billed_ms
        d[2] += 1 if r.cold_start else 0
        d[3] += 0 if r.status == "ok" else 1
        d[4] += r.bytes_in
        d[5] += r.bytes_out
    return out


def split_by_hour(start: float, end: float, total_ms: int) -> list[tuple[int, int]]:
    """Share ``total_ms`` of the interval [start, end) among the hours it covers, in
    proportion to the overlap, in whole ms that add up to exactly ``total_ms``."""
    if end <= start:
        return [(hour_of(start), total_ms)] if total_ms else []
    pieces = []
    h = hour_of(start)
    while h < end:
        overlap = min(end, h + HOUR) - max(start, h)
        if overlap > 0:
            pieces.append((h, overlap))
        h += HOUR
    span = end - start
    out, given = [], 0
    for i, (h, overlap) in enumerate(pieces):
        ms = total_ms - given if i == len(pieces) - 1 else int(round(total_ms * overlap / span))
        given += ms
        out.append((h, ms))
    return out


def provisioned_deltas(records: Iterable) -> dict[tuple, list[int]]:
    out: dict[tuple, list[int]] = defaultdict(_zero)
    for r in records:
        for h, ms in split_by_hour(r.start, r.end, r.billed_ms):
            out[(h, r.endpoint, r.variant, r.memory_mb)][6] += ms
    return out


def rows(deltas: dict[tuple, list[int]]) -> list[tuple]:
    """Upsert rows; a key of (hour, endpoint, variant, memory_mb) -- idle and provisioned time,
    which belong to no target model -- gets target_model ''."""
    return [key + ("",) * (len(KEY) - len(key)) + tuple(sums) for key, sums in deltas.items()]
