"""The HTML page of a ``slimserve load`` report: inline SVG charts of the once-a-second series
and the summary tables, self-contained (no scripts, no fetches), every user string escaped."""
from __future__ import annotations

import json
import math
from pathlib import Path

from gateway.load.report import THROTTLE, describe_pattern, fmt_ms
from gateway.reportkit.html import CSS as _CSS
from gateway.reportkit.html import Scale, linear_ticks, log_ticks
from gateway.reportkit.html import esc as _e
from gateway.reportkit.html import fmt_tick as _fmt_tick
from gateway.reportkit.html import nice_step as _nice_step
from gateway.reportkit.html import table as _table


def svg_chart(title: str, n: int, *, lines: list[dict], bars: dict | None = None, left_label: str = "",
              right_label: str | None = None, log_left: bool = False, tips: list[str] | None = None,
              whole: bool = False, width: int = 860, height: int = 280) -> str:
    """An inline SVG chart over seconds 0..n: ``bars`` (name, values, color) as columns on the
    right axis (or the left one when ``right_label`` is None), and ``lines`` (name, values,
    color, optional dash, optional step) on the left axis.  None values leave gaps; ``tips``
    (one per second) become hover titles on the columns; ``whole``: both axes count things."""
    ml, mr, mt, mb = 64, 64 if right_label else 24, 34, 38
    x0, x1, y0, y1 = ml, width - mr, mt, height - mb
    n = max(n, 1)

    def X(t: float) -> float:
        return x0 + (x1 - x0) * t / n

    line_vals = [v for ln in lines for v in ln["values"] if v is not None]
    bar_vals = [v for v in (bars or {}).get("values", []) if v is not None]
    left_vals = line_vals + ([] if right_label else bar_vals)
    if log_left:
        pos = [v for v in left_vals if v > 0]
        lticks = log_ticks(min(pos), max(pos)) if pos else [1.0, 10.0]
    else:
        lticks = linear_ticks(max(left_vals) if left_vals else 1.0, whole=whole)
    left = Scale(lticks, log_left, y0, y1)
    right = Scale(linear_ticks(max(bar_vals) if bar_vals else 1.0, whole=whole), False, y0, y1) if right_label else None
    out = [f'<svg class="chart" viewBox="0 0 {width} {height}" width="{width}" height="{height}" role="img"'
           f' aria-label="{_e(title)}" font-family="sans-serif" font-size="11">',
           f"<title>{_e(title)}</title>",
           f'<rect x="{x0}" y="{y0}" width="{x1 - x0}" height="{y1 - y0}" fill="#fff" stroke="#ccc"/>']
    for t in lticks:
        y = left(t)
        out.append(f'<line x1="{x0}" y1="{y:.1f}" x2="{x1}" y2="{y:.1f}" stroke="#eee"/>')
        out.append(f'<text x="{x0 - 6}" y="{y + 4:.1f}" text-anchor="end" fill="#444">{_e(_fmt_tick(t))}</text>')
    if right is not None:
        for t in right.ticks:
            y = right(t)
            out.append(f'<text x="{x1 + 6}" y="{y + 4:.1f}" fill="#888">{_e(_fmt_tick(t))}</text>')
    xstep = max(1, math.ceil(_nice_step(n, 10)))        # the series has a row a second: whole seconds
    k = 0
    while k * xstep <= n + 1e-9:
        x = X(k * xstep)
        out.append(f'<line x1="{x:.1f}" y1="{y1}" x2="{x:.1f}" y2="{y1 + 4}" stroke="#888"/>')
        out.append(f'<text x="{x:.1f}" y="{y1 + 16}" text-anchor="middle" fill="#444">'
                   f'{_e(_fmt_tick(k * xstep))}</text>')
        k += 1
    out.append(f'<text x="{(x0 + x1) / 2:.1f}" y="{height - 4}" text-anchor="middle" fill="#444">seconds</text>')
    out.append(f'<text transform="translate(14 {(y0 + y1) / 2:.1f}) rotate(-90)" text-anchor="middle"'
               f' fill="#444">{_e(left_label)}</text>')
    if right_label:
        out.append(f'<text transform="translate({width - 10} {(y0 + y1) / 2:.1f}) rotate(90)" text-anchor="middle"'
                   f' fill="#888">{_e(right_label)}</text>')
    if bars:
        scale = right or left
        for i, v in enumerate(bars["values"][:n]):
            if v is None:
                continue
            top = scale(v)
            w = max(X(i + 1) - X(i) - (1 if n <= 200 else 0), 0.5)
            tip = f"<title>{_e(tips[i])}</title>" if tips and i < len(tips) else ""
            out.append(f'<rect x="{X(i):.1f}" y="{top:.1f}" width="{w:.2f}" height="{max(y1 - top, 0):.1f}"'
                       f' fill="{_e(bars["color"])}" fill-opacity="0.35">{tip}</rect>')
    for ln in lines:
        segs, cur = [], []
        for i, v in enumerate(ln["values"][:n]):
            if v is None or (log_left and v <= 0):
                if cur:
                    segs.append(cur)
                cur = []
                continue
            y = left(v)
            if ln.get("step"):
                cur += [(X(i), y), (X(i + 1), y)]
            else:
                cur.append((X(i + 0.5), y))
        if cur:
            segs.append(cur)
        dash = f' stroke-dasharray="{_e(ln["dash"])}"' if ln.get("dash") else ""
        for seg in segs:
            if len(seg) == 1:
                out.append(f'<circle cx="{seg[0][0]:.1f}" cy="{seg[0][1]:.1f}" r="2.5" fill="{_e(ln["color"])}"/>')
                continue
            d = "M" + " L".join(f"{x:.1f},{y:.1f}" for x, y in seg)
            out.append(f'<path d="{d}" fill="none" stroke="{_e(ln["color"])}" stroke-width="1.8"{dash}/>')
    lx = x0
    for item in ([bars] if bars else []) + lines:
        out.append(f'<rect x="{lx}" y="{10}" width="12" height="10" fill="{_e(item["color"])}"'
                   + (' fill-opacity="0.35"' if item is bars else "") + "/>")
        out.append(f'<text x="{lx + 16}" y="{19}" fill="#222">{_e(item["name"])}</text>')
        lx += 24 + 7 * len(str(item["name"]))
    out.append("</svg>")
    return "\n".join(out)


def _money(v) -> str | None:
    return None if v is None else f"{v:.7f}"


def render_html(doc: dict) -> str:
    """One self-contained page: no scripts, no external fonts, styles or images."""
    s, c, series = doc["summary"], doc["config"], doc["series"]
    n = len(series)
    lat, u, cost, w = s["latency_ms"], s["usage"], s["cost"], s["warm_sandboxes"]
    offered = [r["offered"] for r in series]
    tips = [f"t={r['t']} s: offered {r['offered']}, ok {r['ok']}, p50 {fmt_ms(r['p50_ms'])} ms,"
            f" p99 {fmt_ms(r['p99_ms'])} ms,"
            f" throttled {r['throttled']}, errors {r['errors']}, cold starts {r['cold_starts']},"
            f" warm {'-' if r['warm'] is None else r['warm']}" for r in series]
    bars = {"name": "offered req/s", "values": offered, "color": "#7a7a7a"}
    charts = [
        svg_chart("Latency (ok requests) against offered load", n, bars=bars, right_label="offered req/s",
                  left_label="latency ms (log)", log_left=True, tips=tips,
                  lines=[{"name": "p50 latency", "values": [r["p50_ms"] for r in series], "color": "#1f6fd1"},
                         {"name": "p99 latency", "values": [r["p99_ms"] for r in series], "color": "#d1361f"}]),
        svg_chart("Warm sandboxes against offered load", n, bars=bars, right_label="offered req/s",
                  left_label="sandboxes", tips=tips, whole=True,
                  lines=[{"name": "warm (idle + busy)", "values": [r["warm"] for r in series], "color": "#198a3c",
                          "step": True},
                         {"name": "starting", "values": [r["starting"] for r in series], "color": "#e08a00",
                          "step": True, "dash": "4 3"}]),
        svg_chart("Completions, throttles and errors", n, bars=bars, left_label="requests per second", tips=tips,
                  lines=[{"name": "ok", "values": [r["ok"] for r in series], "color": "#1f6fd1"},
                         {"name": "throttled", "values": [r["throttled"] for r in series], "color": "#e08a00"},
                         {"name": "other errors", "values": [r["errors"] for r in series], "color": "#d1361f"},
                         {"name": "dropped by client cap", "values": [r["dropped"] for r in series],
                          "color": "#555", "dash": "2 3"}]),
    ]
    summary_rows = [
        ("pattern", describe_pattern(c)),
        ("gateway", c.get("url")),
        ("planned requests", s["planned"]), ("sent", s["sent"]),
        ("dropped by client cap", s["dropped_client_cap"]), ("client cap (in flight)", c.get("concurrency")),
        ("completed (HTTP response)", s["completed"]), ("without response", s["no_response"]),
        ("ok", s["ok"]), ("throttled (ThrottlingException)", s["throttled"]), ("other errors", s["errors"]),
        ("elapsed s", s["elapsed_s"]), ("offered req/s", s["offered_rps"]),
        ("ok throughput req/s", s["throughput_rps"]),
        ("latency p50 ms", lat["p50"]), ("latency p90 ms", lat["p90"]), ("latency p99 ms", lat["p99"]),
        ("latency max ms", lat["max"]),
        ("cold starts", s["cold_starts"]), ("cold-start latency p50 ms", s["cold_start_latency_ms"]["p50"]),
        ("warm sandboxes max", w["max"]), ("warm sandboxes at the end", w["last"]),
        ("GB-s billed", u["gb_s"]), ("usage records matched", u["matched_records"]),
        ("GB-s billed in the window (all clients)", u["window_gb_s"]),
        ("price per GB-s (USD)", _money(cost["price_per_gb_s"])), ("cost USD", _money(cost["usd"])),
        ("price note", cost["note"]),
        ("client lag p99 ms", s["client_lag_ms"]["p99"]),
    ]
    err_rows = [(THROTTLE, s["throttled"])] + list(s["errors_by_kind"].items())
    series_rows = [(r["t"], r["offered"], r["sent"], r["dropped"], r["completed"], r["ok"], r["throttled"],
                    r["errors"], r["cold_starts"], r["p50_ms"], r["p99_ms"], r["warm"], r["starting"]) for r in series]
    title = f"slimserve load: {describe_pattern(c)}"
    parts = [
        "<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{_e(title)}</title>", f"<style>{_CSS}</style>", "</head>", "<body>",
        f"<h1>{_e(title)}</h1>",
    ]
    if doc["run"].get("interrupted"):
        parts.append(f'<p class="warn">Interrupted after {_e(doc["run"]["elapsed_s"])} s:'
                     f' {_e(s["not_sent_interrupted"])} planned requests were not sent.</p>')
    parts += ["<h2>Summary</h2>", _table(summary_rows), "<h2>Charts</h2>"]
    parts += [f"<figure>{ch}</figure>" for ch in charts]
    parts += ["<h2>Errors by kind</h2>", _table(err_rows, ("kind", "requests")),
              "<h2>Per second</h2>",
              "<details><summary>table (latency and cold starts by the second a request was sent;"
              " completions and errors by the second it finished)</summary>",
              _table(series_rows, ("t", "offered", "sent", "dropped", "completed", "ok", "throttled", "errors",
                                   "cold starts", "p50 ms", "p99 ms", "warm", "starting")),
              "</details>", "<h2>Settings</h2>",
              _table([(k, json.dumps(v) if isinstance(v, (dict, list)) else v) for k, v in sorted(c.items())]),
              "</body>", "</html>"]
    return "\n".join(parts) + "\n"


def write(doc: dict, out_dir: Path) -> list[Path]:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    js, page = out_dir / "load.json", out_dir / "report.html"
    js.write_text(json.dumps(doc, indent=1) + "\n")
    page.write_text(render_html(doc), encoding="utf-8")
    return [js, page]
