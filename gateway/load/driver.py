"""The load generator's engine: open-loop arrivals sent over HTTP with a cap on what is in
flight, a record per request, periodic samples of warm sandboxes, and a rolling window for
the progress line.  ``gateway.load.command`` is the ``slimserve load`` command around it.

Arrivals are open-loop: each request leaves at its planned offset whether or
not earlier ones have answered (a closed loop slows down exactly when the
gateway does, and so hides the queueing a load test is meant to show).
``concurrency`` caps the requests in flight; an arrival that finds the cap
full is not sent and is counted as *dropped by the client cap*.

Latency is measured by the client from the moment the request is handed to
the HTTP session to the end of the response body.
"""
from __future__ import annotations

import asyncio
import bisect
import json
import urllib.parse
from dataclasses import dataclass
from typing import Awaitable, Callable, Iterable

from gateway.clock import Clock
from gateway.load import report as loadreport
from gateway.load.schedule import Arrival

DEFAULT_BODY = b"[[5.1, 3.5, 1.4, 0.2]]"
PROGRESS_WINDOW_S = 5.0        # the progress line's rates and percentiles cover this many seconds

class GatewayUnreachable(Exception):
    """No gateway answers at --url: one line on stderr, exit 1."""


# --- one request ----------------------------------------------------------------------------
@dataclass
class Outcome:
    status: int | None            # HTTP status; None when no response arrived
    error: str | None             # None for 2xx, else the error kind (see error_kind)
    request_id: str | None = None


def error_kind(status: int, headers, body: bytes) -> str | None:
    """The error kind of a runtime response: None for 2xx, else the SageMaker error code.

    The code is the ``x-amzn-ErrorType`` header up to its colon (rest-json), else the
    body's ``__type`` after any ``#`` (JSON 1.1), ``ErrorCode``, ``code`` or ``error``,
    else ``HTTP<status>``.
    """
    if 200 <= status < 300:
        return None
    hdr = (headers.get("x-amzn-ErrorType") or "").split(":")[0].strip()
    if hdr:
        return hdr
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        doc = None
    if isinstance(doc, dict):
        for key in ("__type", "ErrorCode", "code", "Code", "error"):
            val = doc.get(key)
            if isinstance(val, str) and val:
                return val.rsplit("#", 1)[-1]
    return f"HTTP{status}"


Sender = Callable[[str, bytes], Awaitable[Outcome]]


class HttpSender:
    """POSTs invocations with one aiohttp session; never raises for HTTP or network failures."""

    def __init__(self, session, url: str, content_type: str, accept: str | None = None, access_key=None,
                 region: str = "us-east-1"):
        self.session = session
        self.url = url.rstrip("/")
        self.headers = {"Content-Type": content_type}
        if accept:
            self.headers["Accept"] = accept
        self.access_key, self.region = access_key, region      # each request signed (SigV4) when given

    async def __call__(self, endpoint: str, body: bytes) -> Outcome:
        import aiohttp

        from gateway.sagemaker.sigv4 import sign_url

        url = f"{self.url}/endpoints/{urllib.parse.quote(endpoint, safe='')}/invocations"
        headers = sign_url("POST", url, body, self.access_key, self.region, self.headers)
        try:
            async with self.session.post(url, data=body, headers=headers) as resp:
                data = await resp.read()
                return Outcome(resp.status, error_kind(resp.status, resp.headers, data),
                               resp.headers.get("x-amzn-RequestId"))
        except TimeoutError:
            return Outcome(None, "Timeout")
        except aiohttp.ClientError:
            return Outcome(None, "ConnectionError")


# --- the run ----------------------------------------------------------------------------------
@dataclass
class RequestRecord:
    seq: int
    endpoint: str
    scheduled_s: float
    sent_s: float | None = None     # None: not sent (dropped, or the run was interrupted first)
    latency_s: float | None = None
    status: int | None = None
    error: str | None = None
    request_id: str | None = None
    dropped: bool = False           # by the client's --concurrency cap

    def done_at(self) -> float:
        return self.sent_s + self.latency_s

    def to_dict(self) -> dict:
        return {
            "seq": self.seq, "endpoint": self.endpoint, "scheduled_s": round(self.scheduled_s, 6),
            "sent_s": None if self.sent_s is None else round(self.sent_s, 6),
            "latency_ms": None if self.latency_s is None else round(self.latency_s * 1000.0, 3),
            "status": self.status, "error": self.error, "request_id": self.request_id, "dropped": self.dropped,
        }


@dataclass
class Sample:
    t: float                       # seconds from the start of the run
    warm: int | None               # idle + busy sandboxes of the target endpoints; None: unknown
    starting: int | None = None


Sampler = Callable[[], Awaitable[tuple[int, int] | None]]


class LoadRun:
    """Sends ``arrivals`` open-loop through ``send``, at most ``concurrency`` at once, over
    at least ``duration_s`` seconds (the planned length, which may end after the last arrival).

    ``sample`` (optional) returns (warm, starting) sandboxes; it and ``on_tick`` are
    called about every ``tick_s`` seconds.  ``stop()`` ends the dispatch early and lets
    in-flight requests finish; ``abort()`` cancels them too.  Nothing starts before
    ``run()``.
    """

    def __init__(self, arrivals: list[Arrival], send: Sender, *, default_body: bytes = DEFAULT_BODY,
                 concurrency: int | None = None, clock: Clock | None = None, sample: Sampler | None = None,
                 on_tick: Callable[["LoadRun"], None] | None = None, tick_s: float = 1.0,
                 duration_s: float | None = None):
        self.arrivals = sorted(arrivals, key=lambda a: a.offset)
        self.offsets = [a.offset for a in self.arrivals]
        self.send = send
        self.default_body = default_body
        self.concurrency = concurrency
        self.clock = clock or Clock()
        self.sample = sample
        self.on_tick = on_tick
        self.tick_s = tick_s
        last = self.arrivals[-1].offset if self.arrivals else 0.0
        self.duration_s = max(duration_s or 0.0, last)   # the run lasts at least this long unless stopped
        self.records = [RequestRecord(i, a.endpoint, a.offset) for i, a in enumerate(self.arrivals)]
        self.completed: list[RequestRecord] = []     # in completion order
        self.samples: list[Sample] = []
        self.in_flight = 0
        self.next_index = 0                          # arrivals before this one were sent or dropped
        self.dropped = 0
        self.errors = 0                              # completed with an error other than a throttle
        self.throttled = 0
        self.stopped = False
        self.t0 = self.wall0 = self.wall_end = 0.0
        self.elapsed_end: float | None = None
        self._tasks: set[asyncio.Task] = set()
        self._dispatcher: asyncio.Task | None = None

    def elapsed(self) -> float:
        return self.clock.now() - self.t0 if self.elapsed_end is None else self.elapsed_end

    async def run(self) -> None:
        self.t0 = self.clock.now()
        self.wall0 = self.clock.wall()
        ticker = asyncio.create_task(self._tick()) if (self.sample or self.on_tick) else None
        self._dispatcher = asyncio.create_task(self._dispatch())
        try:
            try:
                await self._dispatcher
            except asyncio.CancelledError:
                if not self.stopped:
                    raise
            if self._tasks:
                await asyncio.gather(*list(self._tasks), return_exceptions=True)
        finally:
            self.elapsed_end = self.clock.now() - self.t0
            self.wall_end = self.clock.wall()
            if ticker is not None:
                ticker.cancel()
                await asyncio.gather(ticker, return_exceptions=True)
        if self.sample is not None:
            await self._take_sample()

    def stop(self) -> None:
        self.stopped = True
        if self._dispatcher is not None:
            self._dispatcher.cancel()

    def abort(self) -> None:
        self.stop()
        for task in list(self._tasks):
            task.cancel()

    async def _dispatch(self) -> None:
        for i, arrival in enumerate(self.arrivals):
            delay = self.t0 + arrival.offset - self.clock.now()
            if delay > 0:
                await self.clock.sleep(delay)
            self.next_index = i + 1
            rec = self.records[i]
            if self.concurrency is not None and self.in_flight >= self.concurrency:
                rec.dropped = True
                self.dropped += 1
                continue
            self.in_flight += 1
            rec.sent_s = self.clock.now() - self.t0
            task = asyncio.create_task(self._one(rec, arrival.body if arrival.body is not None else self.default_body))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        rest = self.t0 + self.duration_s - self.clock.now()
        if rest > 0:
            await self.clock.sleep(rest)

    async def _one(self, rec: RequestRecord, body: bytes) -> None:
        try:
            out = await self.send(rec.endpoint, body)
        except asyncio.CancelledError:
            out = Outcome(None, "Cancelled")
        except Exception as exc:  # noqa: BLE001 - a sender bug is recorded against its request, not fatal
            out = Outcome(None, f"ClientError:{type(exc).__name__}")
        rec.latency_s = self.clock.now() - self.t0 - rec.sent_s
        rec.status, rec.error, rec.request_id = out.status, out.error, out.request_id
        if rec.error == loadreport.THROTTLE:
            self.throttled += 1
        elif rec.error is not None:
            self.errors += 1
        self.in_flight -= 1
        self.completed.append(rec)

    async def _tick(self) -> None:
        k = 0
        while True:
            if self.sample is not None:
                await self._take_sample()
            if self.on_tick is not None:
                self.on_tick(self)
            k += 1
            await self.clock.sleep(max(0.0, self.t0 + k * self.tick_s - self.clock.now()))

    async def _take_sample(self) -> None:
        try:
            got = await self.sample()
        except Exception:  # noqa: BLE001 - a failed poll is a gap in the series, not a failed run
            got = None
        t = self.clock.now() - self.t0
        self.samples.append(Sample(t, *got) if got is not None else Sample(t, None, None))

    def window(self, seconds: float = PROGRESS_WINDOW_S) -> dict:
        """Rolling figures over the last ``seconds`` for the progress line."""
        now = self.elapsed()
        span = max(min(seconds, now), 1e-9)
        lo = now - span
        offered = bisect.bisect_right(self.offsets, now) - bisect.bisect_left(self.offsets, lo)
        lat, ok = [], 0
        for rec in reversed(self.completed):
            if rec.done_at() < lo:
                break
            if rec.error is None:
                ok += 1
                lat.append(rec.latency_s * 1000.0)
        last = self.samples[-1] if self.samples else None
        return {
            "elapsed_s": now, "planned_s": self.duration_s,
            "offered_rps": offered / span, "throughput_rps": ok / span,
            "p50_ms": loadreport.percentile(lat, 50) if lat else None,
            "p99_ms": loadreport.percentile(lat, 99) if lat else None,
            "sent": self.next_index - self.dropped, "errors": self.errors, "throttled": self.throttled,
            "dropped": self.dropped, "in_flight": self.in_flight,
            "warm": last.warm if last else None,
        }


# --- the admin side: pre-flight, warm sandboxes, usage -----------------------------------------
def warm_counts(described: Iterable[dict], names: set[str]) -> tuple[int, int]:
    """(warm, starting) sandboxes of the endpoints ``names`` in admin describe documents;
    warm counts idle and busy sandboxes."""
    warm = starting = 0
    for ep in described:
        if ep.get("name") not in names:
            continue
        for v in ep.get("variants", []):
            states = (v.get("pool") or {}).get("states", {})
            warm += int(states.get("idle", 0)) + int(states.get("busy", 0))
            starting += int(states.get("starting", 0))
    return warm, starting
