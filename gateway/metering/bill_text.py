"""Bills as text: an aligned table, CSV, and usage export.  (HTML: ``billhtml``.)"""
from __future__ import annotations

import csv
import io

from gateway.metering.billing import ROW_FIELDS

TABLE_FIELDS = ("invocations", "billed_ms", "gb_s", "cold_starts", "provisioned_gb_s", "data_in_bytes",
                "data_out_bytes", "idle_gb_s", "zygote_gb_s", "cost")


def cell(key: str, v, cost_digits: int = 7) -> str:
    """A bill figure as text: money to ``cost_digits`` places, other fractions to 3, counts grouped."""
    if isinstance(v, float):
        return f"{v:,.{cost_digits}f}" if key.endswith("cost") else f"{v:,.3f}"
    if isinstance(v, int):
        return f"{v:,}"
    return str(v)


def table(doc: dict) -> str:
    heads = ["group"] + list(TABLE_FIELDS)
    body = [[r["group"]] + [cell(k, r[k]) for k in TABLE_FIELDS] for r in doc["rows"]]
    total = ["TOTAL"] + [cell(k, doc["total"][k]) for k in TABLE_FIELDS]
    widths = [max(len(h), *(len(row[i]) for row in body + [total])) for i, h in enumerate(heads)]
    line = lambda cells: "  ".join(c.ljust(w) if i == 0 else c.rjust(w)  # noqa: E731
                                   for i, (c, w) in enumerate(zip(cells, widths, strict=True)))
    out = [line([h.upper() for h in heads])] + [line(r) for r in body] + [line(total)]
    jobs = (doc.get("transform_jobs") or {}).get("rows") or []
    if jobs:
        out.append("")
        out.append(f"{'TRANSFORM JOB':<32}  {'INSTANCE TYPE':<14}  {'COUNT':>5}  {'SECONDS':>12}  {'COST':>14}")
        for r in jobs:
            out.append(f"{r['job']:<32}  {r['instance_type']:<14}  {r['instance_count']:>5}  "
                       f"{cell('seconds', float(r['seconds'])):>12}  {cell('cost', float(r['cost'])):>14}")
    out.append(f"cost in {doc['currency']} from {doc['prices']}"
               + (f" - {doc['prices_note']}" if doc["prices_note"] else ""))
    return "\n".join(out) + "\n"


def rows_csv(doc: dict) -> str:
    buf = io.StringIO()
    cols = ["group"] + list(doc["by"]) + list(ROW_FIELDS)
    w = csv.writer(buf)
    w.writerow(cols)
    for r in doc["rows"]:
        w.writerow([r.get(c, "") for c in cols])
    return buf.getvalue()


def records_csv(records: list[dict], header: bool = True) -> str:
    """Raw usage records as CSV, one per line, columns in ledger order (``header=False``:
    a later page of the same export)."""
    buf = io.StringIO()
    if records:
        w = csv.DictWriter(buf, fieldnames=list(records[0]))
        if header:
            w.writeheader()
        w.writerows(records)
    return buf.getvalue()
