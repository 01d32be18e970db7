"""Bills at scale: a month of usage records, written through the ledger's own insert path
(raw rows and hourly roll-ups in one transaction per batch), then reports timed beside a
raw-scan GROUP BY over the same ledger, measured in the same run.

    .venv/bin/python benchmarks/bill_bench.py                    # 10 million records (a few minutes)
    .venv/bin/python benchmarks/bill_bench.py --records 1000000  # quicker

Prints: insert rate, ledger bytes per million records (and per year at this rate), and for
each grouping the report time, the raw-scan time and their ratio; it checks that both give
the same totals.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gateway.domain import USAGE_FIELDS, UsageRecord  # noqa: E402
from gateway.metering import billing  # noqa: E402
from gateway.store import ledger, rollup  # noqa: E402
from gateway.store.sqlite import Store, connect  # noqa: E402

TIERS = (1024, 2048, 3072, 4096, 5120, 6144)
TEAMS = ("fraud", "search", "vision", "chat", "ads", "risk")


def generate(conn_store: Store, records: int, endpoints: int, days: float, batch: int, seed: int) -> float:
    rng = random.Random(seed)
    eps = [(f"ep-{i:04d}", rng.choice(TIERS)) for i in range(endpoints)]
    weights = [rng.paretovariate(1.2) for _ in eps]        # a few endpoints carry most traffic
    start0 = 1_790_000_000.0 - 1_790_000_000.0 % 86400
    span = days * 86400
    step = span / records
    t0 = time.perf_counter()
    done = 0
    while done < records:
        n = min(batch, records - done)
        picks = rng.choices(eps, weights, k=n)
        recs = []
        for i, (ep, mb) in enumerate(picks):
            ms = rng.lognormvariate(3.0, 1.2)
            recs.append(UsageRecord(
                request_id=f"{done + i:x}", endpoint=ep, variant="AllTraffic", memory_mb=mb,
                start=start0 + (done + i) * step, billed_ms=UsageRecord.bill(ms), model_ms=ms, overhead_ms=0.4,
                cold_start=rng.random() < 0.01, init_ms=0.0, status="ok", bytes_in=rng.randint(50, 4000),
                bytes_out=rng.randint(20, 400)))
        conn_store._insert("usage", USAGE_FIELDS, recs, rollup.usage_deltas(recs))
        done += n
        rate = done / (time.perf_counter() - t0)
        print(f"\r  wrote {done:,} records ({rate:,.0f}/s)", end="", file=sys.stderr, flush=True)
    print(file=sys.stderr)
    return time.perf_counter() - t0


def raw_scan(conn, since: float, until: float, by: str) -> dict:
    """The baseline: the same figures straight from raw rows."""
    key = {"endpoint": "endpoint", "tier": "memory_mb",
           "day": "CAST(start / 86400 AS INTEGER)"}[by]
    rows = conn.execute(f"SELECT {key}, COUNT(*), SUM(billed_ms), SUM(billed_ms * memory_mb), SUM(cold_start), "
                        f"SUM(bytes_in), SUM(bytes_out) FROM usage WHERE start >= ? AND start < ? GROUP BY 1",
                        (since, until)).fetchall()
    return {"invocations": sum(r[1] for r in rows), "billed_ms": sum(r[2] for r in rows),
            "gb_s": sum(r[3] for r in rows) / 1024 / 1000, "groups": len(rows)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--records", type=int, default=10_000_000)
    ap.add_argument("--endpoints", type=int, default=1000)
    ap.add_argument("--days", type=float, default=30.0)
    ap.add_argument("--batch", type=int, default=20_000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--db", type=Path, default=None, help="keep the ledger here (default: a temp dir)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    tmp = tempfile.mkdtemp(prefix="slimserve-bill-bench-")
    path = args.db or Path(tmp) / "ledger.db"
    store = Store(path)
    store._conn = connect(path)
    conn = store._conn
    for ep in range(args.endpoints):
        conn.execute("INSERT OR REPLACE INTO endpoints VALUES (?, ?)",
                     (f"ep-{ep:04d}", json.dumps({"tags": {"team": TEAMS[ep % len(TEAMS)]}})))
    print(f"generating {args.records:,} usage records over {args.days:g} days for {args.endpoints} endpoints",
          file=sys.stderr)
    insert_s = generate(store, args.records, args.endpoints, args.days, args.batch, args.seed)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    size = os.path.getsize(path)
    rollup_rows = conn.execute("SELECT COUNT(*) FROM rollup_hourly").fetchone()[0]

    first, last = conn.execute("SELECT MIN(start), MAX(start) FROM usage").fetchone()
    since, until = first + 1234.5, last - 987.25                 # edges inside hours: the partial-hour path
    prices = billing.Prices.load()
    reader = __import__("sqlite3").connect(str(path))
    results = []
    for by in ("endpoint", "tier", "day", "tag:team", "hour", "tier,endpoint"):
        t = time.perf_counter()
        dims = billing.parse_by(by)
        (base,), tags = ledger.read_bills(reader, since, until, [dims])
        doc = billing.priced_bill(base, tags, since, until, dims, prices)
        report_s = time.perf_counter() - t
        base_by = by if by in ("endpoint", "tier", "day") else None
        scan_s = scan = None
        if base_by:
            t = time.perf_counter()
            scan = raw_scan(reader, since, until, base_by)
            scan_s = time.perf_counter() - t
            assert scan["invocations"] == doc["total"]["invocations"], (scan, doc["total"])
            assert scan["billed_ms"] == doc["total"]["billed_ms"]
            assert abs(scan["gb_s"] - doc["total"]["gb_s"]) < 1e-6 * max(1.0, scan["gb_s"])
        results.append({"by": by, "rows": len(doc["rows"]), "report_s": round(report_s, 3),
                        "raw_scan_s": None if scan_s is None else round(scan_s, 3),
                        "speedup": None if scan_s is None else round(scan_s / report_s, 1)})

    per_million = size / (args.records / 1e6)
    yearly = per_million * args.records / 1e6 * 365 / args.days
    summary = {"records": args.records, "endpoints": args.endpoints, "days": args.days,
               "insert_s": round(insert_s, 1), "insert_per_s": round(args.records / insert_s),
               "ledger_bytes": size, "bytes_per_million_records": round(per_million),
               "rollup_rows": rollup_rows, "ledger_gb_per_year_at_this_rate": round(yearly / 1e9, 2),
               "reports": results}
    if args.json:
        print(json.dumps(summary, indent=1))
    else:
        print(f"records {args.records:,} in {insert_s:.1f} s "
              f"({args.records / insert_s:,.0f}/s through the ledger's insert path)")
        print(f"ledger {size / 1e6:,.1f} MB = {per_million / 1e6:,.1f} MB per million records; "
              f"{rollup_rows:,} roll-up rows; a year at this rate: {yearly / 1e9:,.1f} GB")
        print(f"{'report by':16} {'rows':>7} {'report s':>9} {'raw scan s':>11} {'scan/report':>12}")
        for r in results:
            scan = "-" if r["raw_scan_s"] is None else f"{r['raw_scan_s']:.3f}"
            ratio = "-" if r["speedup"] is None else f"{r['speedup']:.1f}x"
            print(f"{r['by']:16} {r['rows']:>7} {r['report_s']:>9.3f} {scan:>11} {ratio:>12}")
    if args.db is None:
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
