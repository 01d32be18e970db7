"""The report of a ``slimserve load`` run: a summary, a once-a-second series, text, JSON and HTML.

Everything here is a pure function of plain data (the JSON document the run
writes as load.json), so a report can be rebuilt from a saved load.json:

    doc = json.load(open("out/load.json")); Path("r.html").write_text(report_html.render_html(doc))

(``gateway.load.report_html`` draws the page and writes both files.)

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

import math
from collections import Counter

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
def fmt_ms(v) -> str:
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
    lines.append(f"latency (ok)  p50 {fmt_ms(lat['p50'])} ms  p90 {fmt_ms(lat['p90'])} ms  p99 {fmt_ms(lat['p99'])} ms"
                 f"  max {fmt_ms(lat['max'])} ms")
    if s["cold_starts"] is None:
        lines.append("cold starts   unknown (no admin token)")
    else:
        cl = s["cold_start_latency_ms"]
        latency = f" (latency p50 {fmt_ms(cl['p50'])} ms, max {fmt_ms(cl['max'])} ms)" if cl["p50"] is not None else ""
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
    lines.append(f"client lag    p99 {fmt_ms(lg['p99'])} ms, max {fmt_ms(lg['max'])} ms behind schedule"
                 + (" (the client fell behind: the offered load was lower than planned)"
                    if (lg["p99"] or 0) > LAG_WARN_MS else ""))
    series = doc["series"]
    if len(series) <= max_rows:
        lines.append("")
        lines.append("   t  offered  sent  drop  done    ok  thr  err  cold   p50 ms   p99 ms  warm")
        for r in series:
            lines.append(f"{r['t']:4d}  {r['offered']:7d}  {r['sent']:4d}  {r['dropped']:4d}  {r['completed']:4d}"
                         f"  {r['ok']:4d}  {r['throttled']:3d}  {r['errors']:3d}  {r['cold_starts']:4d}"
                         f"  {fmt_ms(r['p50_ms']):>7}  {fmt_ms(r['p99_ms']):>7}"
                         f"  {'-' if r['warm'] is None else r['warm']:>4}")
    else:
        lines.append(f"({len(series)} seconds of series: see --format json or --out)")
    return "\n".join(lines)


def progress_line(w: dict) -> str:
    """One line from LoadRun.window()."""
    warm = "-" if w.get("warm") is None else str(w["warm"])
    return (f"{w['elapsed_s']:6.1f}/{w['planned_s']:.0f}s  offered {w['offered_rps']:6.1f}/s"
            f"  ok {w['throughput_rps']:6.1f}/s  p50 {fmt_ms(w['p50_ms']):>6} ms  p99 {fmt_ms(w['p99_ms']):>6} ms"
            f"  errors {w['errors']}  throttled {w['throttled']}  dropped {w['dropped']}"
            f"  in flight {w['in_flight']}  warm {warm}")
