"""The load engine with fake senders on an injected clock, and its statistics."""
from __future__ import annotations

import asyncio
import random

import numpy as np
import pytest

from gateway.clock import FakeClock
from gateway.load import driver as loaddriver
from gateway.load import report as loadreport
from gateway.load.driver import LoadRun, Outcome
from gateway.load.schedule import Arrival


def test_percentile_matches_numpy_linear_interpolation():
    rng = random.Random(1)
    for n in (1, 2, 3, 10, 101, 1000):
        values = [rng.lognormvariate(0, 1) for _ in range(n)]
        for q in (0, 1, 50, 90, 99, 99.9, 100):
            assert loadreport.percentile(values, q) == pytest.approx(float(np.percentile(values, q)))
    assert loadreport.percentile([3, 1, 2], 50) == 2
    with pytest.raises(ValueError):
        loadreport.percentile([], 50)


def test_error_kind_reads_header_then_body():
    assert loaddriver.error_kind(200, {}, b"x") is None
    hdr = {"x-amzn-ErrorType": "ThrottlingException:http://internal.amazon.com/coral/com.amazonaws.sagemaker/"}
    assert loaddriver.error_kind(429, hdr, b"{}") == "ThrottlingException"
    assert loaddriver.error_kind(400, {}, b'{"__type": "com.amazon.sagemaker#ValidationError"}') == "ValidationError"
    assert loaddriver.error_kind(424, {}, b'{"ErrorCode": "ModelError"}') == "ModelError"
    assert loaddriver.error_kind(502, {}, b"<html>bad gateway</html>") == "HTTP502"


def test_warm_counts_idle_and_busy_of_the_targets_only():
    described = [
        {"name": "a", "variants": [{"pool": {"states": {"idle": 2, "busy": 1, "starting": 1}}},
                                   {"pool": None}]},
        {"name": "b", "variants": [{"pool": {"states": {"idle": 5}}}]},
    ]
    assert loaddriver.warm_counts(described, {"a"}) == (3, 1)
    assert loaddriver.warm_counts(described, {"a", "b"}) == (8, 1)


# --- the engine, with fake senders ------------------------------------------------------------------
async def test_open_loop_with_a_client_cap_drops_instead_of_queueing():
    release = asyncio.Event()

    async def send(endpoint, body):
        await release.wait()
        return Outcome(200, None, f"id-{endpoint}")

    arrivals = [Arrival(i * 0.002, "ep") for i in range(20)]
    run = LoadRun(arrivals, send, concurrency=5)
    task = asyncio.create_task(run.run())
    while run.next_index < 20:
        await asyncio.sleep(0.005)
    assert run.in_flight == 5 and run.dropped == 15
    release.set()
    await task
    sent = [r for r in run.records if r.sent_s is not None]
    assert len(sent) == 5 and sum(r.dropped for r in run.records) == 15
    assert all(r.status == 200 and r.latency_s > 0 for r in sent)
    assert run.in_flight == 0 and len(run.completed) == 5


async def test_dispatch_follows_the_schedule_on_an_injected_clock():
    clock = FakeClock()
    seen = []

    async def send(endpoint, body):
        seen.append((endpoint, body))
        return Outcome(200, None)

    arrivals = [Arrival(4.0, "a"), Arrival(0.0, "a"), Arrival(1.5, "b", b"custom")]
    run = LoadRun(arrivals, send, clock=clock, default_body=b"dflt", duration_s=10.0)
    await run.run()
    assert seen == [("a", b"dflt"), ("b", b"custom"), ("a", b"dflt")]
    assert [r.sent_s for r in run.records] == [0.0, 1.5, 4.0]
    assert run.elapsed() == 10.0                    # the planned length, not just the last arrival


async def test_errors_timeouts_and_sender_bugs_are_recorded_per_request():
    async def send(endpoint, body):
        if endpoint == "thr":
            return Outcome(429, "ThrottlingException", "r1")
        if endpoint == "down":
            return Outcome(None, "ConnectionError")
        if endpoint == "bug":
            raise KeyError("oops")
        await asyncio.sleep(0.01)
        return Outcome(200, None, "r2")

    samples = iter([(1, 0), (2, 1), None])

    async def sample():
        return next(samples, (2, 0))

    ticks = []
    run = LoadRun([Arrival(0.0, n) for n in ("ok", "thr", "down", "bug")], send, sample=sample,
                  on_tick=lambda r: ticks.append(r.window()), tick_s=0.05, duration_s=0.12)
    await run.run()
    by = {r.endpoint: r for r in run.records}
    assert (by["thr"].status, by["thr"].error) == (429, "ThrottlingException")
    assert (by["down"].status, by["down"].error) == (None, "ConnectionError")
    assert by["bug"].error == "ClientError:KeyError"
    assert by["ok"].error is None and by["ok"].latency_s >= 0.01
    assert len(run.samples) >= 3 and run.samples[0].warm == 1
    w = ticks[-1]
    assert w["errors"] == 2 and w["throttled"] == 1 and w["sent"] == 4 and w["p50_ms"] >= 10
    assert "throttled 1" in loadreport.progress_line(w)


async def test_stop_ends_dispatch_and_keeps_what_was_sent():
    async def send(endpoint, body):
        await asyncio.sleep(0.05)
        return Outcome(200, None)

    run = LoadRun([Arrival(i * 0.01, "ep") for i in range(500)], send)
    task = asyncio.create_task(run.run())
    await asyncio.sleep(0.1)
    run.stop()
    await task
    sent = [r for r in run.records if r.sent_s is not None]
    assert 3 < len(sent) < 50 and all(r.status == 200 for r in sent)
    assert run.stopped and run.elapsed() < 1.0


# --- the report --------------------------------------------------------------------------------------
