"""``slimserve simulate``: replay an invocation trace through a warm-pool policy on a virtual clock.

Trace: CSV (or .csv.gz) with header ``endpoint,start_s,duration_ms,memory_mb``,
one invocation a row, sorted by start.  Semantics, fixed so that numbers
compare across implementations:

* a sandbox serves one invocation at a time;
* a request takes the most recently used idle sandbox of its endpoint;
* with no idle (or pre-warmed and ready) sandbox it is a cold start, delayed by
  the cold-start latency;
* a sandbox is reaped the moment its keep-alive runs out;
* a pre-warmed sandbox starts (cold-start latency) so as to be ready at the
  policy's pre-warm time, and is reaped at the window's end unless used; a
  timer's repeat windows (``Plan.prewarm_repeats``) open only while no request
  has come since the plan.

Reported: ``invocations``, ``cold_starts``, ``cold_start_pct``, ``cold_start_delay_s`` (seconds
requests waited for cold starts), with per-path latencies ``zygote_gb_s`` (model zygotes' memory x
time: the zygote level) and ``reserved_idle_gb_s`` (idle sandboxes at their tier plus zygotes),
``endpoint_cold_start_pct_p75`` (75th percentile, linear interpolation, of
each endpoint's cold-start percentage), ``idle_gb_s`` (memory x time of
sandboxes alive and not serving, starting pre-warms included, up to the end of
the trace's last invocation) and ``billed_gb_s`` (memory x run time).
"""
from __future__ import annotations

import csv
import gzip
import heapq
import io
import math
import time
from pathlib import Path

from gateway.pools.policy import parse
from gateway.pools.traffic import Traffic
from gateway.reportkit.stats import percentile

ARRIVE, END, EXPIRE, PREWARM, READY = range(5)


class _Sandbox:
    __slots__ = ("idle_since", "epoch", "idle")

    def __init__(self, t: float):
        self.idle_since = t
        self.epoch = 0
        self.idle = False


class _Endpoint:
    __slots__ = ("mem_gb", "stack", "traffic", "invocations", "cold", "idle_gb_s", "alive", "zygote_until",
                 "cold_s_total", "zygote_since", "zygote_gb_s", "keep_zygote")

    def __init__(self, memory_mb: int, name: str = ""):
        self.mem_gb = memory_mb / 1024.0
        self.stack: list[_Sandbox] = []         # idle sandboxes, most recently used last
        self.traffic = Traffic(memory_mb, name)
        self.invocations = 0
        self.cold = 0
        self.idle_gb_s = 0.0
        self.alive = 0                          # sandboxes starting, idle or busy
        self.zygote_until: float | None = None  # its model zygote is kept until then (by-path latencies)
        self.cold_s_total = 0.0                 # seconds requests waited for cold starts
        self.zygote_since: float | None = None  # its model zygote was made then (and is kept)
        self.zygote_gb_s = 0.0                  # memory x time its model zygotes held
        self.keep_zygote: float | None = None   # the last plan's: keep the zygote until then with no sandbox


def read_trace(path: str | Path):
    """Rows of (start_s, endpoint, duration_s, memory_mb), as stored (sorted by start)."""
    path = Path(path)
    raw = gzip.open(path, "rt", newline="") if path.suffix == ".gz" else open(path, newline="")
    with raw as fh:
        reader = csv.reader(fh)
        header = next(reader)
        want = ["endpoint", "start_s", "duration_ms", "memory_mb"]
        if [h.strip() for h in header] != want:
            raise ValueError(f"{path}: header must be {','.join(want)}, not {','.join(header)}")
        last = float("-inf")
        for n, row in enumerate(reader, start=2):
            try:
                ep, start, dur, mem = row[0], float(row[1]), float(row[2]), int(row[3])
            except (ValueError, IndexError):
                raise ValueError(f"{path}:{n}: malformed row {row!r}") from None
            if not (0 <= start < math.inf and 0 <= dur < math.inf and mem > 0):      # nan fails these too
                raise ValueError(f"{path}:{n}: start_s and duration_ms must be finite numbers >= 0 and "
                                 f"memory_mb > 0, not {row!r}")
            if start < last:
                raise ValueError(f"{path}:{n}: rows must be sorted by start_s ({start} after {last})")
            last = start
            yield start, ep, dur / 1000.0, mem


MODEL_ZYGOTE_IDLE_S = 1800.0     # a model zygote not forked from this long is closed (ZygoteConfig.model_idle_s)
ZYGOTE_MB = 16.0                 # what a model zygote holds: a small scikit-learn model's measured PSS (13-14 MB)
PATHS = ("model", "base", "fresh")
LIVE_PATHS = {"model": "model-zygote", "base": "zygote"}     # what the backend calls them (start facts)


def parse_by_path(text: str) -> dict[str, float]:
    """``model=10,base=40,fresh=1000`` -> {path: ms}; ValueError naming what is wrong."""
    out: dict[str, float] = {}
    for part in (p.strip() for p in (text or "").split(",") if p.strip()):
        name, sep, value = part.partition("=")
        try:
            ms = float(value)
        except ValueError:
            ms = -1.0
        if not sep or name not in PATHS or not ms >= 0:
            raise ValueError(f"--cold-start-ms-by-path takes PATH=MS pairs (paths: {', '.join(PATHS)}), "
                             f"not {part!r}")
        out[name] = ms
    if not out:
        raise ValueError("--cold-start-ms-by-path needs at least one PATH=MS")
    return out


def simulate(rows, policy, cold_start_ms: float = 1000.0, by_path: dict[str, float] | None = None,
             zygote_mb: float = ZYGOTE_MB) -> dict:
    """``by_path`` ({"model", "base", "fresh"} -> ms): each start takes the model-zygote path while
    its endpoint's model zygote is kept, else the base zygote's, else a fresh interpreter's,
    whichever of these are given.  As live, a model zygote is made at a start and kept while the
    endpoint has a sandbox (a pool that went cold releases it) and for at most
    ``MODEL_ZYGOTE_IDLE_S`` after its last start; without it every start takes ``cold_start_ms``.
    The policy learns each endpoint's start latencies from the starts it sees, as it does live.  With a "model" path,
    each model zygote holds ``zygote_mb`` while it is kept (``zygote_gb_s``)."""
    cold_s = cold_start_ms / 1000.0
    zygote_gb = zygote_mb / 1024.0
    eps: dict[str, _Endpoint] = {}
    heap: list = []
    seq = 0
    billed_gb_s = 0.0
    horizon = 0.0
    pending = [0]                  # invocations still running

    def push(t, kind, a=None, b=None, c=None):
        nonlocal seq
        seq += 1
        heapq.heappush(heap, (t, seq, kind, a, b, c))

    def start_sandbox(ep: _Endpoint, t: float) -> float:
        """A sandbox of ``ep`` starts at ``t``: its latency in seconds, which the policy learns."""
        if by_path is None:
            path, ms = "fixed", cold_start_ms
        else:
            zygote = ep.zygote_until is not None and t < ep.zygote_until
            path = next((p for p in (("model",) if zygote else ()) + ("base", "fresh") if p in by_path),
                        next(iter(by_path)))
            ms = by_path[path]
            if "model" in by_path:           # the zygote level: one is made at a start (see gone)
                if ep.zygote_since is not None and not zygote:
                    ep.zygote_gb_s += (ep.zygote_until - ep.zygote_since) * zygote_gb      # closed back then
                    ep.zygote_since = None
                if ep.zygote_since is None:
                    ep.zygote_since = t
            ep.zygote_until = t + MODEL_ZYGOTE_IDLE_S
        ep.traffic.started(LIVE_PATHS.get(path, path), ms, t)
        return ms / 1000.0

    def gone(ep: _Endpoint, t: float) -> None:
        """A sandbox of ``ep`` is gone; with none left, its model zygote goes too (as live: a pool
        that went cold releases its bundle's model zygote), or at the plan's ``zygote_until``."""
        ep.alive -= 1
        if ep.alive == 0 and ep.zygote_since is not None:
            keep = ep.keep_zygote if ep.keep_zygote is not None and ep.keep_zygote > t else t
            ep.zygote_until = min(keep, ep.zygote_until)
            if ep.zygote_until <= t:
                ep.zygote_gb_s += max(0.0, ep.zygote_until - ep.zygote_since) * zygote_gb
                ep.zygote_since, ep.zygote_until = None, None

    def expected_s(ep: _Endpoint) -> float:
        ms = ep.traffic.start_ms()
        return cold_s if ms is None else ms / 1000.0

    def take_idle(ep: _Endpoint, t: float) -> bool:
        while ep.stack:
            sb = ep.stack.pop()
            if sb.idle:
                sb.idle = False
                sb.epoch += 1
                ep.idle_gb_s += (t - sb.idle_since) * ep.mem_gb
                return True
        return False

    def handle(t, _seq, kind, a, b, c):
        nonlocal horizon
        if kind == END:                      # a: endpoint, b: sandbox
            ep = a
            pending[0] -= 1
            horizon = max(horizon, t)
            level = ep.traffic.depart(t)
            plan = policy.plan(ep.traffic, level, t)
            ep.keep_zygote = plan.zygote_until
            if plan.prewarm_at is not None:
                lead = expected_s(ep)
                for start, until, unless in plan.windows(t):
                    push(max(t, start - lead), PREWARM, ep, until, unless)
            if plan.expire_at > t:
                sb = b
                sb.idle, sb.idle_since = True, t
                ep.stack.append(sb)
                push(plan.expire_at, EXPIRE, ep, sb, sb.epoch)
            else:
                gone(ep, t)
        elif kind == EXPIRE:                 # a: endpoint, b: sandbox, c: epoch
            sb = b
            if sb.idle and sb.epoch == c:
                sb.idle = False
                a.idle_gb_s += (t - sb.idle_since) * a.mem_gb
                a.stack.remove(sb)
                gone(a, t)
        elif kind == PREWARM:                # a: endpoint, b: until, c: unless a request came after then
            if c is not None and a.traffic.last_arrival is not None and a.traffic.last_arrival > c:
                return
            sb = _Sandbox(t)                 # alive (starting) from now: its memory counts as idle
            a.alive += 1
            push(t + start_sandbox(a, t), READY, a, sb, b)
        elif kind == READY:                  # a: endpoint, b: sandbox, c: until
            if c > t:
                b.idle = True
                a.stack.append(b)
                push(c, EXPIRE, a, b, b.epoch)
            else:
                a.idle_gb_s += (t - b.idle_since) * a.mem_gb
                gone(a, t)

    invocations = 0
    for start, name, dur, mem in rows:
        while heap and heap[0][0] <= start:
            handle(*heapq.heappop(heap))
        ep = eps.get(name)
        if ep is None:
            ep = eps[name] = _Endpoint(mem, name)
        invocations += 1
        ep.invocations += 1
        ep.traffic.arrive(start)
        billed_gb_s += dur * ep.mem_gb
        extra, keep_s = policy.scale_out(ep.traffic, start, ep.alive)
        for _ in range(extra):
            push(start, PREWARM, ep, start + keep_s)
        if ep.stack and take_idle(ep, start):
            sb = _Sandbox(start)           # the sandbox taken; a new handle is as good (idle time is booked)
            run_at = start
        else:
            ep.cold += 1
            ep.alive += 1
            sb = _Sandbox(start)
            wait = start_sandbox(ep, start)
            ep.cold_s_total += wait
            run_at = start + wait
        pending[0] += 1
        push(run_at + dur, END, ep, sb)
    while heap and pending[0]:                   # until the last invocation has ended
        handle(*heapq.heappop(heap))
    # Books close at the horizon: idle sandboxes, and pre-warms already starting, count until then.
    for ep in eps.values():
        ep.idle_gb_s += sum(max(0.0, horizon - sb.idle_since) for sb in ep.stack) * ep.mem_gb
    for _t, _, kind, a, b, _c in heap:
        if kind == READY:
            a.idle_gb_s += max(0.0, horizon - b.idle_since) * a.mem_gb
    for ep in eps.values():                      # model zygotes kept at the horizon count until then
        if ep.zygote_since is not None:
            ep.zygote_gb_s += max(0.0, min(ep.zygote_until, horizon) - ep.zygote_since) * zygote_gb
    idle_gb_s = sum(e.idle_gb_s for e in eps.values())
    zygote_gb_s = sum(e.zygote_gb_s for e in eps.values())
    cold = sum(e.cold for e in eps.values())
    per_ep = [100.0 * e.cold / e.invocations for e in eps.values() if e.invocations]
    return {
        "policy": policy.name,
        "cold_start_ms": cold_start_ms,
        "endpoints": len(eps),
        "invocations": invocations,
        "cold_starts": cold,
        "cold_start_pct": round(100.0 * cold / invocations, 4) if invocations else 0.0,
        "endpoint_cold_start_pct_p75": round(percentile(per_ep, 75), 4) if per_ep else 0.0,
        "idle_gb_s": round(idle_gb_s, 3),
        "billed_gb_s": round(billed_gb_s, 3),
        "cold_start_delay_s": round(sum(e.cold_s_total for e in eps.values()), 3),
        "cold_start_ms_by_path": dict(by_path) if by_path else None,
        "zygote_gb_s": round(zygote_gb_s, 3),
        "reserved_idle_gb_s": round(idle_gb_s + zygote_gb_s, 3),
        "by_endpoint": {name: {"invocations": e.invocations, "cold_starts": e.cold,
                               "idle_gb_s": round(e.idle_gb_s, 3), "zygote_gb_s": round(e.zygote_gb_s, 3)}
                        for name, e in eps.items()},
    }


def run(trace: str | Path, policy_spec: str, cold_start_ms: float = 1000.0,
        by_path: dict[str, float] | None = None, zygote_mb: float = ZYGOTE_MB) -> dict:
    t0 = time.perf_counter()
    result = simulate(read_trace(trace), parse(policy_spec, cold_start_ms), cold_start_ms, by_path, zygote_mb)
    result["trace"] = str(trace)
    result["sim_seconds"] = round(time.perf_counter() - t0, 3)
    return result


def format_table(results: list[dict]) -> str:
    zygotes = any(r.get("zygote_gb_s") for r in results)
    cols = ["policy", "invocations", "cold_starts", "cold_start_pct", "endpoint_cold_start_pct_p75",
            "idle_gb_s"] + (["zygote_gb_s", "reserved_idle_gb_s"] if zygotes else []) + [
            "billed_gb_s", "cold_start_delay_s", "sim_seconds"]
    base = next((r for r in results if r["policy"] == "fixed:600"), None)
    out = io.StringIO()
    heads = ["policy", "invocations", "cold", "cold %", "ep cold % p75", "idle GB-s"] + (
        ["zygote GB-s", "reserved GB-s"] if zygotes else []) + ["billed GB-s", "cold delay s", "sim s"]
    if base:
        heads += ["cold/fixed", "p75/fixed", "idle/fixed"]
    out.write("  ".join(f"{h:>13}" for h in heads) + "\n")
    for r in results:
        cells = [f"{r[c]:>13}" if isinstance(r[c], str) else f"{r[c]:>13,.2f}" if isinstance(r[c], float)
                 else f"{r[c]:>13,}" for c in cols]
        if base:
            for key in ("cold_starts", "endpoint_cold_start_pct_p75", "idle_gb_s"):
                cells.append(f"{(r[key] / base[key] if base[key] else float('nan')):>13.2f}")
        out.write("  ".join(cells) + "\n")
    return out.getvalue()
