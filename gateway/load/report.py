"""The report of a ``slimserve load`` run: a summary, a once-a-second series, text, JSON and HTML.

Everything here is a pure function of plain data (the JSON document the run
writes as load.json), so a report can be rebuilt from a saved load.json:

    doc = json.load(open("out/load.json")); Path("r.html").write_text(render_html(doc))

Conventions:

* latency percentiles cover successful (2xx) requests only: a throttled request
  answers in a millisecond and would make an overloaded endpoint look fast;
* a per-second row counts arrivals, sends, latency percentiles and cold starts by
  the second the request was *planned/sent* in (so latency lines up with the load
  that caused it), and completions, errors and throttles by the second they
  *finished* in;
* "warm" sandboxes are idle + busy ones of the target endpoints (starting ones
  are counted apart), sampled from the admin API about once a second;
* GB-s billed is the sum of billed_ms x memory_mb / 1024 / 1000 over the usage
  records of this run's requests (matched by request id); ``window_gb_s`` is
  the same over every usage record of the target endpoints between the run's
  start and end, other clients' requests included.
"""
from __future__ import annotations

import json
import math
from collections import Counter
from pathlib import Path

from gateway.reportkit.html import CSS as _CSS
from gateway.reportkit.html import Scale, linear_ticks, log_ticks
from gateway.reportkit.html import esc as _e
from gateway.reportkit.html import fmt_tick as _fmt_tick
from gateway.reportkit.html import nice_step as _nice_step
from gateway.reportkit.html import table as _table
from gateway.reportkit.stats import percentile

THROTTLE = "ThrottlingException"
NO_RESPONSE = ("ConnectionError", "Timeout", "Cancelled")
# SageMaker Serverless Inference's published on-demand compute price in us-east-1,
# USD per GB-second: an example only; pass your own with --price-per-gb-s.
EXAMPLE_PRICE_PER_GB_S = 0.0000200
LAG_WARN_MS = 100.0     # p99 dispatch lag above this: the client, not the gateway, shaped the load
EXAMPLE_NOTE = "an example price, modelled on SageMaker Serverless Inference in us-east-1"


def _pct(values, q):
    return round(percentile(values, q), 3) if values else None


def gb_s(billed_ms: float, memory_mb: float) -> float:
    return billed_ms * memory_mb / 1024.0 / 1000.0


# --- building the document ---------------------------------------------------------------------
def attach_usage(requests: list[dict], usage: list[dict] | None) -> int:
    """Set cold_start, billed_ms and memory_mb on each request from its usage record (by
    request id; None when there is none).  Returns the number matched."""
    by_id = {u["request_id"]: u for u in usage or [] if u.get("request_id")}
    matched = 0
    for r in requests:
        u = by_id.get(r.get("request_id")) if r.get("request_id") else None
        r["cold_start"] = bool(u["cold_start"]) if u else None
        r["billed_ms"] = u["billed_ms"] if u else None
        r["memory_mb"] = u["memory_mb"] if u else None
        matched += u is not None
    return matched


def build(config: dict, requests: list[dict], samples: list[tuple], usage: list[dict] | None, *,
          started_at: float, ended_at: float, elapsed_s: float, interrupted: bool = False) -> dict:
    """The load.json document: config, run, summary, series and requests.

    ``requests`` are per-request dicts (seq, endpoint, scheduled_s, sent_s, latency_ms,
    status, error, request_id, dropped); ``samples`` are (t_s, warm, starting) tuples;
    ``usage`` the gateway's usage records around the run (None: not available).
    """
    requests = [dict(r) for r in requests]
    matched = attach_usage(requests, usage)
    run = {"started_at": started_at, "ended_at": ended_at, "elapsed_s": round(elapsed_s, 3),
           "interrupted": interrupted}
    span = elapsed_s if interrupted else max(config.get("duration_s") or 0.0, elapsed_s)
    n = max(1, math.ceil(span - 1e-9))
    series = per_second(requests, samples, n)
    summary = summarize(config, requests, series, usage, matched, started_at, ended_at, elapsed_s)
    return {"version": 1, "config": config, "run": run, "summary": summary, "series": series,
            "requests": requests}


def summarize(config: dict, requests: list[dict], series: list[dict], usage: list[dict] | None, matched: int,
              started_at: float, ended_at: float, elapsed_s: float) -> dict:
    sent = [r for r in requests if r["sent_s"] is not None]
    dropped = sum(1 for r in requests if r["dropped"])
    answered = [r for r in sent if r["status"] is not None]
    ok = [r for r in sent if r["error"] is None and r["latency_ms"] is not None]
    throttled = sum(1 for r in sent if r["error"] == THROTTLE)
    kinds = Counter(r["error"] for r in sent if r["error"] is not None and r["error"] != THROTTLE)
    lat = [r["latency_ms"] for r in ok]
    lag = [(r["sent_s"] - r["scheduled_s"]) * 1000.0 for r in sent]
    planned_s = config.get("duration_s") or 0.0
    known = usage is not None
    cold = [r for r in sent if r.get("cold_start")]
    cold_lat = [r["latency_ms"] for r in cold if r["error"] is None]
    ids = {r["request_id"] for r in sent if r["request_id"]}
    mine = [u for u in (usage or []) if u.get("request_id") in ids]
    window = [u for u in (usage or []) if started_at <= u["start"] <= ended_at]
    run_gb_s = sum(gb_s(u["billed_ms"], u["memory_mb"]) for u in (mine if mine else window))
    warm = [s["warm"] for s in series if s["warm"] is not None]
    price = config.get("price_per_gb_s")
    return {
        "planned": len(requests),
        "sent": len(sent),
        "dropped_client_cap": dropped,
        "not_sent_interrupted": len(requests) - len(sent) - dropped,
        "completed": len(answered),
        "no_response": len(sent) - len(answered),
        "ok": len(ok),
        "throttled": throttled,
        "errors": sum(kinds.values()),
        "errors_by_kind": dict(sorted(kinds.items())),
        "elapsed_s": round(elapsed_s, 3),
        "offered_rps": round(len(requests) / planned_s, 3) if planned_s > 0 else None,
        "throughput_rps": round(len(ok) / elapsed_s, 3) if elapsed_s > 0 else None,
        "latency_ms": {"p50": _pct(lat, 50), "p90": _pct(lat, 90), "p99": _pct(lat, 99),
                       "max": round(max(lat), 3) if lat else None,
                       "mean": round(sum(lat) / len(lat), 3) if lat else None},
        "cold_starts": len(cold) if known else None,
        "cold_start_latency_ms": {"p50": _pct(cold_lat, 50), "max": round(max(cold_lat), 3) if cold_lat else None},
        "warm_sandboxes": {"max": max(warm) if warm else None, "last": warm[-1] if warm else None},
        "client_lag_ms": {"p50": _pct(lag, 50), "p99": _pct(lag, 99), "max": round(max(lag), 3) if lag else None},
        "usage": {
            "available": known, "matched_records": matched,
            "billed_ms": sum(u["billed_ms"] for u in mine) if known else None,
            "gb_s": round(run_gb_s, 6) if known else None,
            "gb_s_source": ("request ids" if mine else "time window") if known else None,
            "window_records": len(window) if known else None,
            "window_gb_s": round(sum(gb_s(u["billed_ms"], u["memory_mb"]) for u in window), 6) if known else None,
        },
        "cost": {
            "price_per_gb_s": price,
            "usd": round(run_gb_s * price, 9) if known and price is not None else None,
            "note": EXAMPLE_NOTE if price == EXAMPLE_PRICE_PER_GB_S else "price given on the command line",
        },
    }


def per_second(requests: list[dict], samples: list[tuple], n: int) -> list[dict]:
    """One row per second 0..n-1 (see the module doc for which second a request counts in)."""
    rows = [{"t": i, "offered": 0, "sent": 0, "dropped": 0, "completed": 0, "ok": 0, "errors": 0,
             "throttled": 0, "cold_starts": 0, "p50_ms": None, "p99_ms": None, "warm": None, "starting": None}
            for i in range(n)]
    lat: list[list[float]] = [[] for _ in range(n)]

    def sec(t: float) -> int:
        return min(max(int(math.floor(t)), 0), n - 1)

    for r in requests:
        if r["scheduled_s"] < n:                 # arrivals planned after an interrupt are left out
            rows[sec(r["scheduled_s"])]["offered"] += 1
            rows[sec(r["scheduled_s"])]["dropped"] += bool(r["dropped"])
        if r["sent_s"] is None:
            continue
        s = sec(r["sent_s"])
        rows[s]["sent"] += 1
        if r.get("cold_start"):
            rows[s]["cold_starts"] += 1
        if r["latency_ms"] is None:
            continue
        d = rows[sec(r["sent_s"] + r["latency_ms"] / 1000.0)]
        if r["status"] is not None:
            d["completed"] += 1
        if r["error"] is None:
            d["ok"] += 1
            lat[s].append(r["latency_ms"])
        elif r["error"] == THROTTLE:
            d["throttled"] += 1
        else:
            d["errors"] += 1
    for i, values in enumerate(lat):
        rows[i]["p50_ms"], rows[i]["p99_ms"] = _pct(values, 50), _pct(values, 99)
    seen: dict[int, list[tuple]] = {}
    for t, warm, starting in samples:
        seen.setdefault(sec(t), []).append((warm, starting))
    last = (None, None)
    for i in range(n):
        got = [x for x in seen.get(i, []) if x[0] is not None]
        if got:
            last = (max(w for w, _ in got), max((s or 0) for _, s in got))
        rows[i]["warm"], rows[i]["starting"] = last
    return rows


# --- text ----------------------------------------------------------------------------------------
def _ms(v) -> str:
    if v is None:
        return "-"
    return f"{v:.2f}" if v < 10 else f"{v:.1f}" if v < 100 else f"{v:.0f}"


def describe_pattern(config: dict) -> str:
    p = config.get("pattern")
    if p in ("constant", "poisson"):
        how = " (Poisson arrivals)" if config.get("arrivals") == "poisson" and p == "constant" else ""
        text = f"{p} {config['rate']:g} req/s for {config['duration_s']:g} s{how}"
    elif p == "burst":
        b = config["burst"]
        text = (f"burst {b['base']:g} -> {b['peak']:g} req/s: {b['before_s']:g} s base, {b['ramp_s']:g} s ramp,"
                f" {b['hold_s']:g} s hold, {b['ramp_down_s']:g} s down, {b['after_s']:g} s base")
        if config.get("arrivals") == "poisson":
            text += " (Poisson arrivals)"
    elif p == "trace":
        text = f"trace {config['trace']} at {config['speedup']:g}x ({config['duration_s']:g} s)"
    else:
        text = str(p)
    targets = config.get("targets") or []
    shown = ", ".join(targets[:3]) + (f" and {len(targets) - 3} more" if len(targets) > 3 else "")
    return f"{text} -> {shown}"


def format_text(doc: dict, max_rows: int = 180) -> str:
    s, c = doc["summary"], doc["config"]
    lat, u, cost = s["latency_ms"], s["usage"], s["cost"]
    lines = [f"slimserve load: {describe_pattern(c)}" + (f" at {c['url']}" if c.get("url") else "")]
    if doc["run"].get("interrupted"):
        lines.append(f"INTERRUPTED after {doc['run']['elapsed_s']:.1f} s: {s['not_sent_interrupted']} planned requests"
                     " were not sent")
    lines.append(f"requests      {s['planned']} planned, {s['sent']} sent, {s['dropped_client_cap']} dropped by the"
                 f" client cap ({c.get('concurrency')})"
                 + (f", {s['not_sent_interrupted']} not sent" if s["not_sent_interrupted"] else ""))
    lines.append(f"completed     {s['completed']}: {s['ok']} ok, {s['throttled']} throttled, {s['errors']} other"
                 f" errors; {s['no_response']} without a response")
    off = f"{s['offered_rps']:.2f}" if s["offered_rps"] is not None else "-"
    thr = f"{s['throughput_rps']:.2f}" if s["throughput_rps"] is not None else "-"
    lines.append(f"throughput    {thr} ok req/s (offered {off} req/s) over {s['elapsed_s']:.1f} s")
    lines.append(f"latency (ok)  p50 {_ms(lat['p50'])} ms  p90 {_ms(lat['p90'])} ms  p99 {_ms(lat['p99'])} ms"
                 f"  max {_ms(lat['max'])} ms")
    if s["cold_starts"] is None:
        lines.append("cold starts   unknown (no admin token)")
    else:
        cl = s["cold_start_latency_ms"]
        latency = f" (latency p50 {_ms(cl['p50'])} ms, max {_ms(cl['max'])} ms)" if cl["p50"] is not None else ""
        lines.append(f"cold starts   {s['cold_starts']}{latency}")
    lines.append(f"throttled     {s['throttled']} ({THROTTLE})")
    errs = ", ".join(f"{k} {v}" for k, v in s["errors_by_kind"].items()) or "none"
    lines.append(f"other errors  {errs}")
    w = s["warm_sandboxes"]
    lines.append(f"warm          max {w['max'] if w['max'] is not None else '-'} sandboxes,"
                 f" {w['last'] if w['last'] is not None else '-'} at the end")
    if u["available"]:
        money = (f" = ${cost['usd']:.7f} at ${cost['price_per_gb_s']:.7f}/GB-s"
                 + (" (example price)" if cost["note"] == EXAMPLE_NOTE else "")
                 if cost["usd"] is not None else "")
        lines.append(f"billed        {u['gb_s']:.4f} GB-s ({u['matched_records']} usage records){money}")
    else:
        lines.append("billed        unknown (no admin token)")
    lg = s["client_lag_ms"]
    lines.append(f"client lag    p99 {_ms(lg['p99'])} ms, max {_ms(lg['max'])} ms behind schedule"
                 + (" (the client fell behind: the offered load was lower than planned)"
                    if (lg["p99"] or 0) > LAG_WARN_MS else ""))
    series = doc["series"]
    if len(series) <= max_rows:
        lines.append("")
        lines.append("   t  offered  sent  drop  done    ok  thr  err  cold   p50 ms   p99 ms  warm")
        for r in series:
            lines.append(f"{r['t']:4d}  {r['offered']:7d}  {r['sent']:4d}  {r['dropped']:4d}  {r['completed']:4d}"
                         f"  {r['ok']:4d}  {r['throttled']:3d}  {r['errors']:3d}  {r['cold_starts']:4d}"
                         f"  {_ms(r['p50_ms']):>7}  {_ms(r['p99_ms']):>7}"
                         f"  {'-' if r['warm'] is None else r['warm']:>4}")
    else:
        lines.append(f"({len(series)} seconds of series: see --format json or --out)")
    return "\n".join(lines)


def progress_line(w: dict) -> str:
    """One line from LoadRun.window()."""
    warm = "-" if w.get("warm") is None else str(w["warm"])
    return (f"{w['elapsed_s']:6.1f}/{w['planned_s']:.0f}s  offered {w['offered_rps']:6.1f}/s"
            f"  ok {w['throughput_rps']:6.1f}/s  p50 {_ms(w['p50_ms']):>6} ms  p99 {_ms(w['p99_ms']):>6} ms"
            f"  errors {w['errors']}  throttled {w['throttled']}  dropped {w['dropped']}"
            f"  in flight {w['in_flight']}  warm {warm}")


# --- files ----------------------------------------------------------------------------------------
def write(doc: dict, out_dir: Path) -> list[Path]:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    js, page = out_dir / "load.json", out_dir / "report.html"
    js.write_text(json.dumps(doc, indent=1) + "\n")
    page.write_text(render_html(doc), encoding="utf-8")
    return [js, page]


# --- HTML and SVG ------------------------------------------------------------------------------------
def svg_chart(title: str, n: int, *, lines: list[dict], bars: dict | None = None, left_label: str = "",
              right_label: str | None = None, log_left: bool = False, tips: list[str] | None = None,
              width: int = 860, height: int = 280) -> str:
    """An inline SVG chart over seconds 0..n: ``bars`` (name, values, color) as columns on the
    right axis (or the left one when ``right_label`` is None), and ``lines`` (name, values,
    color, optional dash, optional step) on the left axis.  None values leave gaps; ``tips``
    (one per second) become hover titles on the columns."""
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
        lticks = linear_ticks(max(left_vals) if left_vals else 1.0)
    left = Scale(lticks, log_left, y0, y1)
    right = Scale(linear_ticks(max(bar_vals) if bar_vals else 1.0), False, y0, y1) if right_label else None
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
    xstep = _nice_step(n, 10)
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
    tips = [f"t={r['t']} s: offered {r['offered']}, ok {r['ok']}, p50 {_ms(r['p50_ms'])} ms, p99 {_ms(r['p99_ms'])} ms,"
            f" throttled {r['throttled']}, errors {r['errors']}, cold starts {r['cold_starts']},"
            f" warm {'-' if r['warm'] is None else r['warm']}" for r in series]
    bars = {"name": "offered req/s", "values": offered, "color": "#7a7a7a"}
    charts = [
        svg_chart("Latency (ok requests) against offered load", n, bars=bars, right_label="offered req/s",
                  left_label="latency ms (log)", log_left=True, tips=tips,
                  lines=[{"name": "p50 latency", "values": [r["p50_ms"] for r in series], "color": "#1f6fd1"},
                         {"name": "p99 latency", "values": [r["p99_ms"] for r in series], "color": "#d1361f"}]),
        svg_chart("Warm sandboxes against offered load", n, bars=bars, right_label="offered req/s",
                  left_label="sandboxes", tips=tips,
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
