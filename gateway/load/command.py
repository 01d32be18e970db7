"""``slimserve load``: drive a live gateway with a planned arrival pattern and report what happened.

Arrivals are open-loop: each request leaves at its planned offset whether or
not earlier ones have answered (a closed loop slows down exactly when the
gateway does, and so hides the queueing a load test is meant to show).
``--concurrency`` caps the requests in flight; an arrival that finds the cap
full is not sent and is counted as *dropped by the client cap*.

Patterns (offsets in seconds from the start of the run):

* ``constant`` -- ``--rate`` req/s for ``--duration`` s, evenly spaced;
* ``poisson``  -- the same mean rate with exponential inter-arrival times;
* ``burst``    -- a lunch spike: ``--base`` req/s for ``--before`` s, a linear
  ramp to ``--peak`` over ``--ramp`` s, ``--hold`` s at the peak, back down to
  the base over ``--ramp-down`` s, and ``--after`` s at the base (defaults:
  1 -> 50 req/s, 10 + 5 + 15 + 1 + 10 = 41 s, about 920 requests);
* ``trace``    -- the rows of a ``endpoint,start_s,duration_ms,memory_mb`` CSV
  (or .csv.gz) at their start times divided by ``--speedup``, counted from the
  first row.

``constant`` and ``burst`` place arrivals where the cumulative planned rate
crosses a whole number (deterministic); ``--arrivals poisson`` makes them a
Poisson process of the same rate instead (``poisson`` is ``constant`` with
Poisson arrivals).  Every schedule is a pure function of its parameters and
seed, so it can be tested without a gateway.

The default request body is ``[[5.1, 3.5, 1.4, 0.2]]`` as application/json:
one row of iris measurements, which the example iris model in examples/
answers and any echo-style model accepts.

Latency is measured by the client from the moment the request is handed to
the HTTP session to the end of the response body.  Cold starts, billed
milliseconds and memory come from the gateway's usage records, matched to the
requests by the ``x-amzn-RequestId`` response header (the gateway sends no
cold-start header), so they need the admin token; without it they are
reported as unknown.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import math
import random
import signal
import sys
from dataclasses import dataclass, field
from pathlib import Path

from gateway.clock import Clock
from gateway.load import report as loadreport
from gateway.load import report_html
from gateway.load.driver import (
    DEFAULT_BODY,
    GatewayUnreachable,
    HttpSender,
    LoadRun,
    warm_counts,
)
from gateway.load.schedule import (
    Arrival,
    BurstShape,
    UsageError,
    burst_offsets,
    profile_offsets,
    trace_arrivals,
)

DEFAULT_CONTENT_TYPE = "application/json"
EXAMPLE_PRICE_PER_GB_S = loadreport.EXAMPLE_PRICE_PER_GB_S
USAGE_SLACK_S = 60.0           # usage records are fetched this far around the run, then matched by request id

class Admin:
    """The admin calls a run makes, through the blocking Client in a thread."""

    def __init__(self, client):
        self.client = client

    async def endpoints(self) -> list[dict]:
        return await asyncio.to_thread(self.client.endpoints)

    async def usage(self, names: set[str], since: float, until: float) -> list[dict]:
        """Usage records of the endpoints ``names`` that started in [since, until)."""
        if len(names) > 8:                  # one query for all, rather than one per endpoint of a wide trace
            rows = await asyncio.to_thread(self.client.usage, since=since, until=until)
            return [r for r in rows if r.get("endpoint") in names]
        rows: list[dict] = []
        for name in sorted(names):
            rows += await asyncio.to_thread(self.client.usage, endpoint=name, since=since, until=until)
        return rows


# --- the command line -----------------------------------------------------------------------------
def add_arguments(p: argparse.ArgumentParser) -> None:
    """The flags of ``slimserve load``; ``p`` already has --url and --state-dir."""
    p.add_argument("endpoint", nargs="?", default=None, metavar="ENDPOINT",
                   help="gateway endpoint to invoke (omit with --map-endpoints)")
    p.add_argument("--pattern", choices=["constant", "poisson", "burst", "trace"], default=None,
                   help="arrival pattern (default constant, or trace when --trace is given)")
    g = p.add_argument_group("constant and poisson")
    g.add_argument("--rate", type=float, default=10.0, help="requests per second (default 10)")
    g.add_argument("--duration", type=float, default=None,
                   help="seconds of load (default 30; with --pattern trace: replay only this many seconds,"
                        " after the speed-up)")
    b = p.add_argument_group("burst (a lunch spike)")
    d = BurstShape()
    b.add_argument("--base", type=float, default=d.base, help=f"req/s before and after the spike (default {d.base:g})")
    b.add_argument("--peak", type=float, default=d.peak, help=f"req/s at the top (default {d.peak:g})")
    b.add_argument("--before", type=float, default=d.before_s, help=f"seconds at base first (default {d.before_s:g})")
    b.add_argument("--ramp", type=float, default=d.ramp_s, help=f"seconds from base to peak (default {d.ramp_s:g})")
    b.add_argument("--hold", type=float, default=d.hold_s, help=f"seconds at the peak (default {d.hold_s:g})")
    b.add_argument("--ramp-down", type=float, default=d.ramp_down_s,
                   help=f"seconds from peak back to base (default {d.ramp_down_s:g}; 0 = a step)")
    b.add_argument("--after", type=float, default=d.after_s, help=f"seconds at base last (default {d.after_s:g})")
    p.add_argument("--arrivals", choices=["even", "poisson"], default="even",
                   help="constant and burst: evenly spaced (default) or Poisson arrivals at the planned rate")
    p.add_argument("--seed", type=int, default=None, help="seed of Poisson arrivals (default: random, reported)")
    t = p.add_argument_group("trace")
    t.add_argument("--trace", default=None, metavar="FILE",
                   help="CSV or CSV.gz with header endpoint,start_s,duration_ms,memory_mb")
    t.add_argument("--speedup", type=float, default=1.0, help="replay the trace this many times faster (default 1)")
    t.add_argument("--map-endpoints", action="store_true",
                   help="send each trace row to the gateway endpoint named like its trace endpoint")
    t.add_argument("--trace-body", choices=["fixed", "duration"], default="fixed",
                   help="fixed: the --body for every row (default); duration: the row's duration in seconds as"
                        " a JSON number, for a model that sleeps that long")
    r = p.add_argument_group("requests")
    src = r.add_mutually_exclusive_group()
    src.add_argument("--body", default=None, help=f"request body (default {DEFAULT_BODY.decode()})")
    src.add_argument("--body-file", default=None, metavar="FILE", help="request body from a file")
    r.add_argument("--content-type", default=DEFAULT_CONTENT_TYPE, help="default application/json")
    r.add_argument("--accept", default=None, help="Accept header to send")
    r.add_argument("--concurrency", type=int, default=256,
                   help="at most this many requests in flight; arrivals beyond it are dropped, not sent (default 256)")
    r.add_argument("--timeout", type=float, default=120.0,
                   help="seconds before a request counts as Timeout (default 120)")
    o = p.add_argument_group("report")
    o.add_argument("--format", choices=["text", "json"], default="text", help="stdout report format")
    o.add_argument("--out", default=None, metavar="DIR", help="write DIR/load.json and DIR/report.html")
    o.add_argument("--price-per-gb-s", type=float, default=EXAMPLE_PRICE_PER_GB_S,
                   help=f"USD per GB-second billed (default {EXAMPLE_PRICE_PER_GB_S:.7f}, an example modelled on"
                        " SageMaker Serverless Inference in us-east-1)")
    o.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                   help="live progress line on stderr (default: when stderr is a terminal)")
    o.add_argument("--dry-run", action="store_true", help="print the planned arrivals per second and exit")


@dataclass
class Plan:
    arrivals: list[Arrival]
    body: bytes                     # the default request body
    targets: set[str]               # gateway endpoints the arrivals go to
    duration_s: float               # planned length of the arrival schedule
    config: dict = field(default_factory=dict)


def _positive(name: str, value: float, zero_ok: bool = False) -> None:
    if not math.isfinite(value) or value < 0 or (value == 0 and not zero_ok):
        raise UsageError(f"{name} must be {'>= 0' if zero_ok else '> 0'}, not {value:g}")


def build_plan(args) -> Plan:
    """The arrivals and the recorded settings of a run; reads --trace and --body-file."""
    pattern = args.pattern or ("trace" if args.trace else "constant")
    if args.trace and pattern != "trace":
        raise UsageError(f"--trace replays a trace: use it with --pattern trace, not {pattern}")
    if args.map_endpoints and pattern != "trace":
        raise UsageError("--map-endpoints only applies to --pattern trace")
    if args.map_endpoints and args.endpoint:
        raise UsageError("give ENDPOINT or --map-endpoints, not both")
    if not args.map_endpoints and not args.endpoint:
        raise UsageError("name the ENDPOINT to load (or, with a trace, pass --map-endpoints)")
    if args.concurrency < 1:
        raise UsageError(f"--concurrency must be >= 1, not {args.concurrency}")
    _positive("--timeout", args.timeout)
    _positive("--price-per-gb-s", args.price_per_gb_s, zero_ok=True)
    if args.body_file:
        body = Path(args.body_file).read_bytes()
    else:
        body = args.body.encode() if args.body is not None else DEFAULT_BODY
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(1 << 31)
    poisson = pattern == "poisson" or args.arrivals == "poisson"
    config = {"pattern": pattern, "endpoint": args.endpoint, "concurrency": args.concurrency,
              "timeout_s": args.timeout, "content_type": args.content_type, "body_bytes": len(body),
              "price_per_gb_s": args.price_per_gb_s, "arrivals": "poisson" if poisson else "even"}
    if poisson:
        config["seed"] = seed
    if pattern in ("constant", "poisson"):
        duration = 30.0 if args.duration is None else args.duration
        _positive("--rate", args.rate)
        _positive("--duration", duration)
        offsets = profile_offsets([(0.0, args.rate), (duration, args.rate)], poisson=poisson, seed=seed)
        config.update(rate=args.rate, duration_s=duration)
        arrivals = [Arrival(o, args.endpoint) for o in offsets]
    elif pattern == "burst":
        shape = BurstShape(args.base, args.peak, args.before, args.ramp, args.hold, args.ramp_down, args.after)
        for name, val in (("--base", shape.base), ("--peak", shape.peak), ("--before", shape.before_s),
                          ("--ramp", shape.ramp_s), ("--hold", shape.hold_s), ("--ramp-down", shape.ramp_down_s),
                          ("--after", shape.after_s)):
            _positive(name, val, zero_ok=True)
        duration = shape.knots()[-1][0]
        if duration <= 0:
            raise UsageError("the burst phases add up to 0 seconds")
        offsets = burst_offsets(shape, poisson=poisson, seed=seed)
        config.update(burst={"base": shape.base, "peak": shape.peak, "before_s": shape.before_s,
                             "ramp_s": shape.ramp_s, "hold_s": shape.hold_s, "ramp_down_s": shape.ramp_down_s,
                             "after_s": shape.after_s}, duration_s=duration,
                      phases=[{"name": n, "start_s": a, "end_s": z} for n, a, z in shape.phases()])
        arrivals = [Arrival(o, args.endpoint) for o in offsets]
    else:
        if not args.trace:
            raise UsageError("--pattern trace needs --trace FILE")
        _positive("--speedup", args.speedup)
        if args.duration is not None:
            _positive("--duration", args.duration)
        from gateway.pools.simulate import read_trace

        body_of = (lambda s: f"{s:.6g}".encode()) if args.trace_body == "duration" else None
        try:
            arrivals = trace_arrivals(read_trace(args.trace), speedup=args.speedup, endpoint=args.endpoint,
                                      limit_s=args.duration, body_of=body_of)
        except ValueError as exc:
            raise UsageError(str(exc)) from None
        if not arrivals:
            raise UsageError(f"{args.trace}: no rows to replay")
        duration = args.duration if args.duration is not None else arrivals[-1].offset
        config.update(trace=str(args.trace), speedup=args.speedup, map_endpoints=args.map_endpoints,
                      trace_body=args.trace_body, duration_s=duration)
        config.pop("arrivals", None)
    if not arrivals:
        raise UsageError("the pattern plans no requests: raise the rates or the duration")
    targets = {a.endpoint for a in arrivals}
    config["targets"] = sorted(targets)
    config["planned_requests"] = len(arrivals)
    return Plan(arrivals, body, targets, duration, config)


def _dry_run(plan: Plan, fmt: str) -> str:
    n = max(1, math.ceil(max(plan.duration_s, plan.arrivals[-1].offset if plan.arrivals else 0.0) - 1e-9))
    per_second = [0] * n
    for a in plan.arrivals:
        per_second[min(int(a.offset), n - 1)] += 1
    if fmt == "json":
        return json.dumps({"config": plan.config, "offered_per_second": per_second}, indent=1)
    lines = [f"{plan.config['planned_requests']} requests over {plan.duration_s:g} s to "
             f"{', '.join(plan.config['targets'])}", "second  requests"]
    lines += [f"{i:6d}  {c}" for i, c in enumerate(per_second)]
    return "\n".join(lines)


class Progress:
    """The live progress line: rewritten in place on a terminal, one line a second otherwise."""

    def __init__(self, stream, tty: bool):
        self.stream = stream
        self.tty = tty
        self.shown = False

    def __call__(self, run: LoadRun) -> None:
        line = loadreport.progress_line(run.window())
        if self.tty:
            self.stream.write("\r" + line + "\x1b[K")
        else:
            self.stream.write(line + "\n")
        self.stream.flush()
        self.shown = True

    def close(self) -> None:
        if self.tty and self.shown:
            self.stream.write("\n")
            self.stream.flush()


async def execute(plan: Plan, url: str, admin: Admin | None, *, content_type: str,
                  accept: str | None = None, concurrency: int, timeout_s: float, progress: Progress | None = None,
                  clock: Clock | None = None, install_signals: bool = False, access_key=None,
                  region: str = "us-east-1") -> tuple[LoadRun, list[dict] | None]:
    """Pre-flight, the run, then the usage records of the run (None without admin access)."""
    import aiohttp

    if admin is not None:
        try:
            described = await admin.endpoints()
        except Exception as exc:
            if getattr(exc, "code", None) == "Unauthorized":
                raise UsageError(f"the admin token was refused by {url}") from None
            raise
        known = {ep.get("name") for ep in described}
        missing = sorted(plan.targets - known)
        if missing:
            more = f" (and {len(missing) - 5} more)" if len(missing) > 5 else ""
            raise UsageError(f"no such endpoint at {url}: {', '.join(missing[:5])}{more}")

    if admin is None:
        await _ping(url)

    async def sample():
        return warm_counts(await admin.endpoints(), plan.targets)

    connector = aiohttp.TCPConnector(limit=concurrency, limit_per_host=0)
    timeout = aiohttp.ClientTimeout(total=timeout_s)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        run = LoadRun(plan.arrivals, HttpSender(session, url, content_type, accept, access_key, region),
                      default_body=plan.body,
                      concurrency=concurrency, clock=clock, sample=sample if admin is not None else None,
                      on_tick=progress, duration_s=plan.duration_s)
        loop = asyncio.get_running_loop()
        presses = [0]

        def interrupt():
            presses[0] += 1
            (run.stop if presses[0] == 1 else run.abort)()

        handled = False
        if install_signals:
            try:
                loop.add_signal_handler(signal.SIGINT, interrupt)
                handled = True
            except (NotImplementedError, RuntimeError, ValueError):
                pass
        try:
            await run.run()
        finally:
            if handled:
                loop.remove_signal_handler(signal.SIGINT)
            if progress is not None:
                progress.close()
    usage = None
    if admin is not None:
        try:
            usage = await admin.usage(plan.targets, run.wall0 - USAGE_SLACK_S, run.wall_end + USAGE_SLACK_S)
        except Exception as exc:  # noqa: BLE001 - the run happened; report it without usage
            print(f"slimserve load: usage records unavailable: {exc}", file=sys.stderr)
    return run, usage


async def _ping(url: str) -> None:
    """Refuse to start a run against a gateway that does not answer GET /ping."""
    import aiohttp

    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
            async with session.get(url.rstrip("/") + "/ping") as resp:
                if resp.status != 200:
                    raise GatewayUnreachable(f"{url}/ping answered HTTP {resp.status}")
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise GatewayUnreachable(f"cannot reach the gateway at {url}: {exc}") from None


def run_from_args(args) -> int:
    """``slimserve load``: 0 when the run completed (whatever the gateway answered), 1 when the
    gateway could not be reached, 2 for a usage error, 130 when interrupted."""
    from gateway.client import Client, ClientError

    try:
        plan = build_plan(args)
    except (UsageError, OSError) as exc:
        print(f"slimserve load: {exc}", file=sys.stderr)
        return 2
    if args.dry_run:
        print(_dry_run(plan, args.format))
        return 0
    client = Client(args.url, state_dir=args.state_dir, timeout=10.0)
    admin = Admin(client) if client.token else None
    if admin is None:
        print("slimserve load: no admin token (--state-dir or SLIMSERVE_TOKEN): endpoint check, warm sandboxes,"
              " cold starts and cost are not reported", file=sys.stderr)
    show = args.progress if args.progress is not None else sys.stderr.isatty()
    progress = Progress(sys.stderr, sys.stderr.isatty()) if show else None
    coro = execute(plan, client.url, admin, content_type=args.content_type,
                   accept=args.accept, concurrency=args.concurrency, timeout_s=args.timeout, progress=progress,
                   install_signals=True, access_key=client.access_key, region=client.region)
    try:
        run, usage = _run_async(coro)
    except UsageError as exc:
        print(f"slimserve load: {exc}", file=sys.stderr)
        return 2
    except (ClientError, GatewayUnreachable) as exc:
        print(f"slimserve load: {exc}", file=sys.stderr)
        return 1
    config = dict(plan.config, url=client.url)
    doc = loadreport.build(config, [r.to_dict() for r in run.records],
                           [(s.t, s.warm, s.starting) for s in run.samples], usage,
                           started_at=run.wall0, ended_at=run.wall_end, elapsed_s=run.elapsed(),
                           interrupted=run.stopped)
    if args.format == "json":
        print(json.dumps({k: v for k, v in doc.items() if k != "requests"}, indent=1))
    else:
        print(loadreport.format_text(doc))
    if args.out:
        try:
            paths = report_html.write(doc, Path(args.out))
        except OSError as exc:
            print(f"slimserve load: cannot write the report: {exc}", file=sys.stderr)
            return 1
        print("slimserve load: wrote " + ", ".join(map(str, paths)), file=sys.stderr)
    return 130 if run.stopped else 0


def _run_async(coro):
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    return uvloop.run(coro)
