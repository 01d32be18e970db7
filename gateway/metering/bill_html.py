"""The bill as one self-contained HTML page: inline SVG charts, no scripts, nothing fetched.

Charts: cost over time stacked by endpoint; GB-s by memory tier (invocations,
provisioned, idle); cold starts against idle cost per endpoint (the trade the
warm-pool policy makes).  Then the requested grouping as a table with totals.
"""
from __future__ import annotations

import datetime as dt

from gateway.metering.bill_text import TABLE_FIELDS, cell
from gateway.reportkit.html import CSS, Scale, fmt_tick, linear_ticks
from gateway.reportkit.html import esc as e
from gateway.reportkit.html import table as html_table

PALETTE = ["#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1", "#ff9da7", "#9c755f"]
OTHER = "#bab0ac"
TOP_SERIES = 8


def _frame(title: str, width: int, height: int) -> list[str]:
    return [f'<svg class="chart" viewBox="0 0 {width} {height}" width="{width}" height="{height}" role="img"'
            f' aria-label="{e(title)}" font-family="sans-serif" font-size="11">', f"<title>{e(title)}</title>"]


def _legend(out: list[str], items: list[tuple[str, str]], x: float) -> None:
    for name, color in items:
        out.append(f'<rect x="{x:.0f}" y="10" width="12" height="10" fill="{e(color)}"/>')
        out.append(f'<text x="{x + 16:.0f}" y="19" fill="#222">{e(name)}</text>')
        x += 26 + 6.5 * len(name)


def _y_axis(out: list[str], scale: Scale, x0: float, x1: float, label: str, y0: float, y1: float) -> None:
    for t in scale.ticks:
        y = scale(t)
        out.append(f'<line x1="{x0}" y1="{y:.1f}" x2="{x1}" y2="{y:.1f}" stroke="#eee"/>')
        out.append(f'<text x="{x0 - 6}" y="{y + 4:.1f}" text-anchor="end" fill="#444">{e(fmt_tick(t))}</text>')
    out.append(f'<text transform="translate(14 {(y0 + y1) / 2:.1f}) rotate(-90)" text-anchor="middle"'
               f' fill="#444">{e(label)}</text>')


def stacked_bars(title: str, categories: list[str], series: list[tuple[str, list[float], str]], ylabel: str,
                 width: int = 900, height: int = 300) -> str:
    """Columns per category, one stacked segment per series (name, values, color)."""
    x0, x1, y0, y1 = 70, width - 20, 40, height - 60
    totals = [sum(vals[i] for _, vals, _ in series) for i in range(len(categories))]
    scale = Scale(linear_ticks(max(totals, default=0) or 1.0), False, y0, y1)
    out = _frame(title, width, height)
    out.append(f'<rect x="{x0}" y="{y0}" width="{x1 - x0}" height="{y1 - y0}" fill="#fff" stroke="#ccc"/>')
    _y_axis(out, scale, x0, x1, ylabel, y0, y1)
    n = max(len(categories), 1)
    slot = (x1 - x0) / n
    label_every = max(1, round(n / 12))
    for i, cat in enumerate(categories):
        x = x0 + i * slot
        bottom = 0.0
        for name, vals, color in series:
            v = vals[i]
            if v <= 0:
                continue
            top_px, bottom_px = scale(bottom + v), scale(bottom)
            out.append(f'<rect x="{x + slot * 0.1:.1f}" y="{top_px:.1f}" width="{slot * 0.8:.1f}"'
                       f' height="{max(bottom_px - top_px, 0.5):.1f}" fill="{e(color)}">'
                       f"<title>{e(cat)} {e(name)}: {v:,.6g}</title></rect>")
            bottom += v
        if i % label_every == 0:
            out.append(f'<text x="{x + slot / 2:.1f}" y="{y1 + 14}" text-anchor="middle" fill="#444">{e(cat)}</text>')
    _legend(out, [(name, color) for name, _, color in series], x0)
    out.append("</svg>")
    return "\n".join(out)


def scatter(title: str, points: list[tuple[str, float, float]], xlabel: str, ylabel: str,
            width: int = 900, height: int = 320) -> str:
    x0, x1, y0, y1 = 70, width - 30, 30, height - 44
    xs = Scale(linear_ticks(max((p[1] for p in points), default=0) or 1.0), False, x1, x0)  # maps to px, reversed
    ys = Scale(linear_ticks(max((p[2] for p in points), default=0) or 1.0), False, y0, y1)
    out = _frame(title, width, height)
    out.append(f'<rect x="{x0}" y="{y0}" width="{x1 - x0}" height="{y1 - y0}" fill="#fff" stroke="#ccc"/>')
    _y_axis(out, ys, x0, x1, ylabel, y0, y1)
    for t in xs.ticks:
        x = xs(t)
        out.append(f'<line x1="{x:.1f}" y1="{y0}" x2="{x:.1f}" y2="{y1}" stroke="#f3f3f3"/>')
        out.append(f'<text x="{x:.1f}" y="{y1 + 14}" text-anchor="middle" fill="#444">{e(fmt_tick(t))}</text>')
    out.append(f'<text x="{(x0 + x1) / 2:.1f}" y="{height - 6}" text-anchor="middle" fill="#444">{e(xlabel)}</text>')
    for i, (label, xv, yv) in enumerate(points):
        x, y = xs(xv), ys(yv)
        color = PALETTE[i % len(PALETTE)]
        out.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="5" fill="{color}" fill-opacity="0.8">'
                   f"<title>{e(label)}: idle {xv:,.6g}, cold starts {yv:,.0f}</title></circle>")
        out.append(f'<text x="{x + 7:.1f}" y="{y - 6:.1f}" fill="#333">{e(label)}</text>')
    out.append("</svg>")
    return "\n".join(out)


def _time_series(doc: dict) -> tuple[list[str], list[tuple[str, list[float], str]]]:
    step = doc["by"][0]
    cats = sorted({r[step] for r in doc["rows"]})
    cost_by_ep: dict[str, float] = {}
    for r in doc["rows"]:
        cost_by_ep[r["endpoint"]] = cost_by_ep.get(r["endpoint"], 0.0) + r["cost"]
    top = sorted(cost_by_ep, key=lambda k: -cost_by_ep[k])[:TOP_SERIES]
    index = {c: i for i, c in enumerate(cats)}
    series = {name: [0.0] * len(cats) for name in top}
    other = [0.0] * len(cats)
    for r in doc["rows"]:
        (series.get(r["endpoint"], other))[index[r[step]]] += r["cost"]
    out = [(name, vals, PALETTE[i % len(PALETTE)]) for i, (name, vals) in enumerate(series.items())]
    if any(other):
        out.append(("other", other, OTHER))
    return cats, out


def _when(t) -> str:
    if t is None:
        return "the beginning"
    return dt.datetime.fromtimestamp(t, dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def render(docs: dict[str, dict]) -> str:
    main, total = docs["main"], docs["main"]["total"]
    cur = main["currency"]
    cats, series = _time_series(docs["time_by_endpoint"])
    tiers = docs["tier"]["rows"]
    tier_chart = stacked_bars(
        "GB-s by memory tier", [f"{r['tier']} MB" for r in tiers],
        [("invocations", [r["gb_s"] for r in tiers], PALETTE[0]),
         ("provisioned", [r["provisioned_gb_s"] for r in tiers], PALETTE[4]),
         ("idle (warm pools)", [r["idle_gb_s"] for r in tiers], OTHER)], "GB-s", height=260)
    points = [(r["endpoint"], r["idle_cost"], r["cold_starts"]) for r in docs["endpoint"]["rows"]]
    head = ("group",) + TABLE_FIELDS + ("idle_cost",)
    rows = [tuple(cell(k, r[k], cost_digits=6) for k in head) for r in main["rows"]]
    rows.append(("TOTAL",) + tuple(cell(k, total[k], cost_digits=6) for k in head[1:]))
    until = "now" if main["until"] is None else _when(main["until"])
    summary = [
        ("period", f"{_when(main['since'])} to {until}"),
        ("invocations", f"{total['invocations']:,}"), ("cold starts", f"{total['cold_starts']:,}"),
        ("invocation GB-s", f"{total['gb_s']:,.3f}"), ("provisioned GB-s", f"{total['provisioned_gb_s']:,.3f}"),
        ("data in / out", f"{total['data_in_bytes']:,} / {total['data_out_bytes']:,} bytes"),
        ("cost", f"{total['cost']:,.6f} {cur}"),
        ("idle GB-s of warm pools (operator)",
         f"{total['idle_gb_s']:,.3f} ({total['idle_cost']:,.6f} {cur} at compute prices)"),
        ("model zygotes' GB-s (operator)", f"{total['zygote_gb_s']:,.3f}"),
    ]
    parts = [
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">', "<title>slimserve bill</title>",
        f"<style>{CSS}</style>", "</head><body>",
        "<h1>slimserve bill</h1>",
        html_table(summary),
        f'<p class="warn">{e(main["prices_note"])}</p>' if main["prices_note"] else "",
        f"<h2>Cost over time by endpoint ({e(cur)})</h2>",
        (stacked_bars("Cost over time, stacked by endpoint", cats, series, cur) if cats
         else "<p>No usage in this period.</p>"),
        "<h2>GB-s by memory tier</h2>", tier_chart,
        "<h2>Cold starts against idle cost</h2>",
        "<p>Each point is an endpoint: how much idle warm memory cost (at compute prices) against the cold "
        "starts its callers still saw. Warm pools buy fewer cold starts with idle memory.</p>",
        scatter("Cold starts against idle cost", points, f"idle cost ({cur})", "cold starts"),
        f"<h2>By {e(', '.join(main['by']))}</h2>",
        html_table(rows, head),
        f"<p>Prices from {e(main['prices'])}.</p>",
        "</body></html>",
    ]
    return "\n".join(p for p in parts if p)
