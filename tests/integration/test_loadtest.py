"""``slimserve load``: schedules, statistics and the report as pure functions, the engine with
fake senders, and short runs against a real gateway."""
from __future__ import annotations

import argparse
import asyncio
import csv
import gzip
import json
import math
import os
import random
import re
import statistics
import subprocess
import sys
from html.parser import HTMLParser
from itertools import pairwise

import numpy as np
import pytest

from gateway.clock import FakeClock
from gateway.load import driver as loadtest
from gateway.load import report as loadreport
from gateway.load import schedule as loadschedule
from gateway.load.driver import Arrival, BurstShape, LoadRun, Outcome
from tests import models
from tests.helpers import ROOT


def parser() -> argparse.ArgumentParser:
    """What the CLI builds for ``slimserve load``: --url and --state-dir, then ours."""
    p = argparse.ArgumentParser(prog="slimserve load")
    p.add_argument("--url", default=None)
    p.add_argument("--state-dir", default=None)
    loadtest.add_arguments(p)
    return p


def plan(*argv):
    return loadtest.build_plan(parser().parse_args(list(argv)))


def per_second(offsets, n):
    counts = [0] * n
    for o in offsets:
        counts[int(o)] += 1
    return counts


# --- schedules ------------------------------------------------------------------------------
def test_constant_is_evenly_spaced_at_the_rate():
    offs = loadtest.constant_offsets(10.0, 3.0)
    assert len(offs) == 30
    assert offs[0] == 0.0
    assert all(b - a == pytest.approx(0.1) for a, b in pairwise(offs))
    assert offs[-1] == pytest.approx(2.9)
    assert len(loadtest.constant_offsets(2.5, 3.0)) == 8        # ceil(7.5): arrivals at k / 2.5 < 3 s


def test_poisson_rate_and_spread_within_statistical_bounds():
    rate, duration = 20.0, 200.0
    offs = loadtest.poisson_offsets(rate, duration, seed=7)
    expected = rate * duration
    assert abs(len(offs) - expected) < 4 * math.sqrt(expected)   # 4 sigma of Poisson(4000)
    assert offs == sorted(offs) and 0 <= offs[0] and offs[-1] < duration
    gaps = np.diff(offs)
    assert gaps.mean() == pytest.approx(1 / rate, rel=0.06)
    assert gaps.std() / gaps.mean() == pytest.approx(1.0, abs=0.08)   # exponential gaps: CV 1
    counts = per_second(offs, int(duration))
    assert statistics.pvariance(counts) / statistics.mean(counts) == pytest.approx(1.0, abs=0.3)   # Poisson counts
    assert loadtest.poisson_offsets(rate, 5, seed=7) == loadtest.poisson_offsets(rate, 5, seed=7)
    assert loadtest.poisson_offsets(rate, 5, seed=7) != loadtest.poisson_offsets(rate, 5, seed=8)


def test_mean_rate_over_many_seeds_is_unbiased():
    counts = [len(loadtest.poisson_offsets(5.0, 10.0, seed=s)) for s in range(300)]
    assert statistics.mean(counts) == pytest.approx(50.0, abs=4 * math.sqrt(50 / 300))


def test_linear_ramp_inverts_the_cumulative_rate():
    # rate t over 10 s: Λ(t) = t²/2, so arrival k is at sqrt(2k)
    offs = loadtest.profile_offsets([(0.0, 0.0), (10.0, 10.0)])
    assert len(offs) == 50
    assert offs == pytest.approx([math.sqrt(2 * k) for k in range(50)])
    # a step (zero-length segment) and a silent gap
    offs = loadtest.profile_offsets([(0, 2), (1, 2), (1, 0), (3, 0), (3, 4), (4, 4)])
    assert offs == pytest.approx([0, 0.5, 3.0, 3.25, 3.5, 3.75])


def test_default_burst_is_a_lunch_spike_of_sensible_length():
    shape = BurstShape()
    offs = loadtest.burst_offsets(shape)
    knots = shape.knots()
    assert 30 <= knots[-1][0] <= 60
    assert len(offs) == math.ceil(loadschedule.profile_total(knots))
    phases = {name: (a, z) for name, a, z in shape.phases()}
    counts = per_second(offs, math.ceil(knots[-1][0]))
    before = counts[: int(phases["before"][1])]
    hold = counts[int(phases["hold"][0]): int(phases["hold"][1])]
    ramp = counts[int(phases["ramp"][0]): int(phases["ramp"][1])]
    after = counts[math.ceil(phases["after"][0]):]
    assert before == [1] * len(before)                          # base 1 req/s
    assert all(c == 50 for c in hold)                           # peak 50 req/s
    assert ramp == sorted(ramp) and ramp[0] < 10 < 40 < ramp[-1]   # climbs within a few seconds
    assert after == [1] * len(after)                            # back to base
    assert sum(hold) == pytest.approx(shape.peak * shape.hold_s, abs=1)


def test_burst_phases_are_configurable_and_poisson_burst_keeps_the_shape():
    shape = BurstShape(base=0, peak=200, before_s=2, ramp_s=1, hold_s=10, ramp_down_s=0, after_s=2)
    offs = loadtest.burst_offsets(shape, poisson=True, seed=3)
    counts = per_second(offs, 15)
    assert counts[:2] == [0, 0] and counts[13:] == [0, 0]
    hold = counts[3:13]
    assert abs(sum(hold) - 2000) < 4 * math.sqrt(2000)
    assert all(abs(c - 200) < 5 * math.sqrt(200) for c in hold)


def write_trace(path, rows):
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "wt", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["endpoint", "start_s", "duration_ms", "memory_mb"])
        w.writerows(rows)
    return path


def test_trace_replay_speedup_and_endpoint_mapping(tmp_path):
    from gateway.pools.simulate import read_trace

    path = write_trace(tmp_path / "t.csv.gz", [("a", 1000.0, 250, 1024), ("b", 1002.0, 40, 2048),
                                                ("a", 1010.0, 1500, 1024), ("c", 1030.0, 10, 1024)])
    mapped = loadtest.trace_arrivals(read_trace(path), speedup=4.0, body_of=lambda s: f"{s:g}".encode())
    assert [(a.offset, a.endpoint, a.body) for a in mapped] == [
        (0.0, "a", b"0.25"), (0.5, "b", b"0.04"), (2.5, "a", b"1.5"), (7.5, "c", b"0.01")]
    single = loadtest.trace_arrivals(read_trace(path), speedup=0.5, endpoint="gw", limit_s=30)
    assert [(a.offset, a.endpoint, a.body) for a in single] == [(0.0, "gw", None), (4.0, "gw", None),
                                                                (20.0, "gw", None)]
    p = plan("--trace", str(path), "--map-endpoints", "--speedup", "2")
    assert p.config["pattern"] == "trace" and p.targets == {"a", "b", "c"} and p.duration_s == 15.0
    with pytest.raises(ValueError):
        loadtest.trace_arrivals([], speedup=0)


def test_plan_errors_are_usage_errors(tmp_path, capsys):
    bad = [
        [],                                                     # no endpoint
        ["ep", "--rate", "0"],
        ["ep", "--pattern", "burst", "--trace", "x.csv"],
        ["ep", "--map-endpoints"],
        ["ep", "--pattern", "trace"],
        ["ep", "--pattern", "burst", "--hold", "-1"],
        ["ep", "--concurrency", "0"],
    ]
    for argv in bad:
        with pytest.raises(loadtest.UsageError):
            plan(*argv)
    assert loadtest.run_from_args(parser().parse_args(["ep", "--trace", str(tmp_path / "missing.csv")])) == 2
    assert loadtest.run_from_args(parser().parse_args(["ep", "--body-file", str(tmp_path / "nope")])) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 2 and all(line.startswith("slimserve load: ") for line in err.splitlines())


def test_dry_run_prints_the_plan(capsys):
    args = parser().parse_args(["ep", "--pattern", "burst", "--dry-run", "--format", "json"])
    assert loadtest.run_from_args(args) == 0
    doc = json.loads(capsys.readouterr().out)
    assert sum(doc["offered_per_second"]) == doc["config"]["planned_requests"] == 923
    assert doc["config"]["burst"]["peak"] == 50


# --- statistics and small pure helpers ------------------------------------------------------------
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
    assert loadtest.error_kind(200, {}, b"x") is None
    hdr = {"x-amzn-ErrorType": "ThrottlingException:http://internal.amazon.com/coral/com.amazonaws.sagemaker/"}
    assert loadtest.error_kind(429, hdr, b"{}") == "ThrottlingException"
    assert loadtest.error_kind(400, {}, b'{"__type": "com.amazon.sagemaker#ValidationError"}') == "ValidationError"
    assert loadtest.error_kind(424, {}, b'{"ErrorCode": "ModelError"}') == "ModelError"
    assert loadtest.error_kind(502, {}, b"<html>bad gateway</html>") == "HTTP502"


def test_warm_counts_idle_and_busy_of_the_targets_only():
    described = [
        {"name": "a", "variants": [{"pool": {"states": {"idle": 2, "busy": 1, "starting": 1}}},
                                   {"pool": None}]},
        {"name": "b", "variants": [{"pool": {"states": {"idle": 5}}}]},
    ]
    assert loadtest.warm_counts(described, {"a"}) == (3, 1)
    assert loadtest.warm_counts(described, {"a", "b"}) == (8, 1)


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
def synthetic_doc(endpoint="ep"):
    reqs, usage = [], []
    for i in range(40):
        t = i * 0.1
        r = {"seq": i, "endpoint": endpoint, "scheduled_s": t, "sent_s": t + 0.001, "latency_ms": 10.0 + i,
             "status": 200, "error": None, "request_id": f"r{i}", "dropped": False}
        if i % 10 == 3:
            r.update(status=429, error="ThrottlingException", latency_ms=1.0)
        if i == 7:
            r.update(status=424, error="ModelError")
        if i == 8:
            r.update(status=None, error="ConnectionError", request_id=None)
        if i == 9:
            r.update(sent_s=None, latency_ms=None, status=None, request_id=None, dropped=True)
        reqs.append(r)
        if r["request_id"]:
            usage.append({"request_id": r["request_id"], "start": 1000.0 + t, "billed_ms": 100 if not r["error"] else 0,
                          "memory_mb": 2048, "cold_start": i == 0})
    usage.append({"request_id": "someone-else", "start": 1001.0, "billed_ms": 1000, "memory_mb": 1024,
                  "cold_start": False})
    config = {"pattern": "constant", "rate": 10.0, "duration_s": 4.0, "targets": [endpoint], "concurrency": 8,
              "price_per_gb_s": loadtest.EXAMPLE_PRICE_PER_GB_S, "url": "http://127.0.0.1:1"}
    samples = [(0.0, 0, 0), (1.01, 1, 1), (2.02, None, None), (3.0, 2, 0)]
    return loadreport.build(config, reqs, samples, usage, started_at=1000.0, ended_at=1004.5, elapsed_s=4.2)


def test_summary_counts_every_request_once_and_bills_this_run():
    s = synthetic_doc()["summary"]
    assert s["planned"] == 40 and s["sent"] == 39 and s["dropped_client_cap"] == 1
    assert s["completed"] == 38 and s["no_response"] == 1
    assert s["throttled"] == 4 and s["errors_by_kind"] == {"ConnectionError": 1, "ModelError": 1}
    assert s["ok"] == 40 - 1 - 4 - 2 == s["completed"] - s["throttled"] - 1
    assert s["cold_starts"] == 1
    ok_lat = [10.0 + i for i in range(40) if i % 10 != 3 and i not in (7, 8, 9)]
    assert s["latency_ms"]["p50"] == pytest.approx(loadreport.percentile(ok_lat, 50))
    assert s["latency_ms"]["max"] == 49.0
    assert s["usage"]["gb_s"] == pytest.approx(33 * 0.1 * 2)            # 33 ok requests x 100 ms x 2 GB
    assert s["usage"]["window_gb_s"] == pytest.approx(33 * 0.2 + 1.0)    # plus the other client's record
    assert s["cost"]["usd"] == pytest.approx(6.6 * 0.00002)
    assert s["warm_sandboxes"] == {"max": 2, "last": 2}


def test_series_is_one_row_a_second():
    series = synthetic_doc()["series"]
    assert [r["t"] for r in series] == [0, 1, 2, 3, 4]
    assert sum(r["offered"] for r in series) == 40 and series[0]["offered"] == 10
    assert series[0]["throttled"] == 1 and series[0]["dropped"] == 1 and series[0]["cold_starts"] == 1
    assert sum(r["ok"] for r in series) == 33 and sum(r["errors"] for r in series) == 2
    assert [r["warm"] for r in series] == [0, 1, 1, 2, 2]                 # a failed poll carries the last value
    assert series[4]["p50_ms"] is None


def test_text_report_names_the_figures():
    text = loadreport.format_text(synthetic_doc())
    for needle in ("40 planned, 39 sent, 1 dropped", "throttled     4 (ThrottlingException)",
                   "ConnectionError 1, ModelError 1", "cold starts   1", "GB-s", "(example price)"):
        assert needle in text
    assert len([ln for ln in text.splitlines() if re.match(r"^\s+\d+\s+\d+", ln)]) == 5


class TagBalance(HTMLParser):
    VOID = {"meta", "br", "img", "input", "link", "hr", "rect", "line", "path", "circle"}

    def __init__(self):
        super().__init__()
        self.stack, self.errors, self.refs = [], [], []

    def handle_starttag(self, tag, attrs):
        self.refs += [v for k, v in attrs if k in ("src", "href", "xlink:href") and v]
        if tag not in self.VOID:
            self.stack.append(tag)

    def handle_startendtag(self, tag, attrs):
        self.refs += [v for k, v in attrs if k in ("src", "href", "xlink:href") and v]

    def handle_endtag(self, tag):
        if tag in self.VOID:
            return
        if not self.stack or self.stack.pop() != tag:
            self.errors.append(tag)


def test_html_is_self_contained_and_escapes_user_strings(tmp_path):
    evil = '<script>alert(1)</script>"><img src="https://evil.example/x.png">'
    doc = synthetic_doc(endpoint=evil)
    doc["summary"]["errors_by_kind"]['<a href="http://x">k</a>'] = 1
    page = loadreport.render_html(doc)
    assert page.startswith("<!DOCTYPE html>")
    assert page.count("<svg") == 3 and page.count("</svg>") == 3
    assert "<script" not in page.lower() and "<img" not in page.lower() and "<a " not in page
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", page, re.I)
    assert not re.search(r"@import|url\(", page)
    assert html_escaped(evil) in page
    checker = TagBalance()
    checker.feed(page)
    assert checker.errors == [] and checker.stack == [] and checker.refs == []
    paths = loadreport.write(doc, tmp_path / "out")
    assert [p.name for p in paths] == ["load.json", "report.html"]
    again = json.loads(paths[0].read_text())
    assert again["summary"] == json.loads(json.dumps(doc["summary"]))
    assert loadreport.render_html(again) == paths[1].read_text()


def html_escaped(s):
    import html

    return html.escape(s, quote=True)


def test_chart_ticks_are_round():
    assert loadreport.linear_ticks(47) == [0, 10, 20, 30, 40, 50]
    assert loadreport.linear_ticks(0) == [0, 0.2, 0.4, 0.6, 0.8, 1.0]
    assert loadreport.log_ticks(3, 800) == [1, 10, 100, 1000]
    assert loadreport.log_ticks(12, 300) == [10, 20, 50, 100, 200, 500, 1000]


# --- against a real gateway ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def endpoints(gateway):
    c = gateway.client()
    c.deploy("lt-echo", models.echo, memory_mb=1024)
    c.deploy("lt-sleep", models.sleeps, memory_mb=2048, max_concurrency=2)
    c.deploy("lt-slow", models.sleeps, memory_mb=1024)
    return gateway


def live_args(gw, *argv):
    return parser().parse_args(["--url", gw.url, "--state-dir", str(gw.state_dir), "--no-progress", *argv])


def test_burst_against_a_real_gateway(endpoints, tmp_path, capsys):
    out = tmp_path / "burst"
    args = live_args(endpoints, "lt-echo", "--pattern", "burst", "--base", "2", "--peak", "12", "--before", "1",
                     "--ramp", "1", "--hold", "1.5", "--ramp-down", "0", "--after", "1",
                     "--body", '{"x": [1, 2]}', "--out", str(out), "--format", "json")
    assert loadtest.run_from_args(args) == 0
    printed = json.loads(capsys.readouterr().out)
    doc = json.loads((out / "load.json").read_text())
    s = doc["summary"]
    assert printed["summary"] == s
    assert s["planned"] == doc["config"]["planned_requests"] == 2 + 7 + 18 + 2
    assert s["sent"] + s["dropped_client_cap"] + s["not_sent_interrupted"] == s["planned"]
    assert s["sent"] == s["planned"] and s["completed"] == s["sent"] and s["no_response"] == 0
    assert s["errors"] == 0 and s["errors_by_kind"] == {}
    assert s["ok"] + s["throttled"] == s["completed"]
    assert s["latency_ms"]["p50"] > 0 and s["latency_ms"]["max"] >= s["latency_ms"]["p99"] > 0
    assert s["warm_sandboxes"]["max"] >= 1
    assert s["usage"]["matched_records"] == s["sent"]
    assert s["usage"]["gb_s"] > 0 and s["cost"]["usd"] > 0
    assert s["cold_starts"] is not None
    assert len(doc["requests"]) == s["planned"] and all(r["cold_start"] is not None for r in doc["requests"])
    assert [r["t"] for r in doc["series"]] == list(range(len(doc["series"])))
    assert sum(r["offered"] for r in doc["series"]) == s["planned"]
    assert max(r["offered"] for r in doc["series"]) == 12
    page = (out / "report.html").read_text()
    assert page.count("<svg") == 3 and "lt-echo" in page
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", page, re.I)


def test_trace_replay_counts_throttles_apart_from_errors(endpoints, tmp_path, capsys):
    trace = write_trace(tmp_path / "t.csv", [("lt-sleep", 50.0 + i * 0.01, 400, 2048) for i in range(5)]
                        + [("lt-echo", 50.2, 1, 1024), ("lt-echo", 51.0, 1, 1024)])
    args = live_args(endpoints, "--trace", str(trace), "--map-endpoints", "--trace-body", "duration",
                     "--speedup", "2")
    assert loadtest.run_from_args(args) == 0
    text = capsys.readouterr().out
    assert "7 planned, 7 sent, 0 dropped" in text
    m = re.search(r"completed\s+7: (\d+) ok, (\d+) throttled, 0 other errors", text)
    assert m and int(m.group(2)) >= 1 and int(m.group(1)) + int(m.group(2)) == 7   # MaxConcurrency 2
    assert re.search(r"latency \(ok\)\s+p50 \S+ ms", text)


def test_unknown_endpoint_is_a_one_line_error(endpoints, capsys):
    assert loadtest.run_from_args(live_args(endpoints, "lt-no-such", "--duration", "1")) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "lt-no-such" in err[0]


def test_the_slimserve_command(endpoints, tmp_path):
    from gateway.cli.main import build_parser

    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    if "load" not in sub.choices:
        pytest.skip("`slimserve load` is not wired into gateway/cli.py yet")
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.run([sys.executable, "-m", "gateway.cli", "load", "lt-echo", "--url", endpoints.url,
                           "--state-dir", str(endpoints.state_dir), "--rate", "4", "--duration", "1",
                           "--format", "json", "--out", str(tmp_path / "cli")],
                          capture_output=True, text=True, env=env, cwd=ROOT, timeout=60)
    assert proc.returncode == 0, proc.stderr
    s = json.loads(proc.stdout)["summary"]
    assert s["sent"] == s["ok"] == 4
    assert (tmp_path / "cli" / "report.html").exists()


def test_client_timeouts_are_their_own_kind(endpoints, tmp_path):
    out = tmp_path / "slow"
    args = live_args(endpoints, "lt-slow", "--rate", "2", "--duration", "1", "--body", "1.5", "--timeout", "0.3",
                     "--out", str(out))
    assert loadtest.run_from_args(args) == 0
    s = json.loads((out / "load.json").read_text())["summary"]
    assert s["sent"] == 2 and s["completed"] == 0 and s["no_response"] == 2
    assert s["errors_by_kind"] == {"Timeout": 2} and s["ok"] == 0 and s["latency_ms"]["p50"] is None
