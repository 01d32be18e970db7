"""``slimserve load``'s schedules and plans, as pure functions."""
from __future__ import annotations

import json
import math
import statistics
from itertools import pairwise

import numpy as np
import pytest

from gateway.load import command as loadtest
from gateway.load import schedule as loadschedule
from gateway.load.schedule import BurstShape
from tests.helpers import load_parser, write_trace


def plan(*argv):
    return loadtest.build_plan(load_parser().parse_args(list(argv)))


def per_second(offsets, n):
    counts = [0] * n
    for o in offsets:
        counts[int(o)] += 1
    return counts


# --- schedules ------------------------------------------------------------------------------
def test_constant_is_evenly_spaced_at_the_rate():
    offs = loadschedule.constant_offsets(10.0, 3.0)
    assert len(offs) == 30
    assert offs[0] == 0.0
    assert all(b - a == pytest.approx(0.1) for a, b in pairwise(offs))
    assert offs[-1] == pytest.approx(2.9)
    assert len(loadschedule.constant_offsets(2.5, 3.0)) == 8        # ceil(7.5): arrivals at k / 2.5 < 3 s


def test_poisson_rate_and_spread_within_statistical_bounds():
    rate, duration = 20.0, 200.0
    offs = loadschedule.poisson_offsets(rate, duration, seed=7)
    expected = rate * duration
    assert abs(len(offs) - expected) < 4 * math.sqrt(expected)   # 4 sigma of Poisson(4000)
    assert offs == sorted(offs) and 0 <= offs[0] and offs[-1] < duration
    gaps = np.diff(offs)
    assert gaps.mean() == pytest.approx(1 / rate, rel=0.06)
    assert gaps.std() / gaps.mean() == pytest.approx(1.0, abs=0.08)   # exponential gaps: CV 1
    counts = per_second(offs, int(duration))
    assert statistics.pvariance(counts) / statistics.mean(counts) == pytest.approx(1.0, abs=0.3)   # Poisson counts
    assert loadschedule.poisson_offsets(rate, 5, seed=7) == loadschedule.poisson_offsets(rate, 5, seed=7)
    assert loadschedule.poisson_offsets(rate, 5, seed=7) != loadschedule.poisson_offsets(rate, 5, seed=8)


def test_mean_rate_over_many_seeds_is_unbiased():
    counts = [len(loadschedule.poisson_offsets(5.0, 10.0, seed=s)) for s in range(300)]
    assert statistics.mean(counts) == pytest.approx(50.0, abs=4 * math.sqrt(50 / 300))


def test_linear_ramp_inverts_the_cumulative_rate():
    # rate t over 10 s: Λ(t) = t²/2, so arrival k is at sqrt(2k)
    offs = loadschedule.profile_offsets([(0.0, 0.0), (10.0, 10.0)])
    assert len(offs) == 50
    assert offs == pytest.approx([math.sqrt(2 * k) for k in range(50)])
    # a step (zero-length segment) and a silent gap
    offs = loadschedule.profile_offsets([(0, 2), (1, 2), (1, 0), (3, 0), (3, 4), (4, 4)])
    assert offs == pytest.approx([0, 0.5, 3.0, 3.25, 3.5, 3.75])


def test_default_burst_is_a_lunch_spike_of_sensible_length():
    shape = BurstShape()
    offs = loadschedule.burst_offsets(shape)
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
    offs = loadschedule.burst_offsets(shape, poisson=True, seed=3)
    counts = per_second(offs, 15)
    assert counts[:2] == [0, 0] and counts[13:] == [0, 0]
    hold = counts[3:13]
    assert abs(sum(hold) - 2000) < 4 * math.sqrt(2000)
    assert all(abs(c - 200) < 5 * math.sqrt(200) for c in hold)


def test_trace_replay_speedup_and_endpoint_mapping(tmp_path):
    from gateway.pools.simulate import read_trace

    path = write_trace(tmp_path / "t.csv.gz", [("a", 1000.0, 250, 1024), ("b", 1002.0, 40, 2048),
                                                ("a", 1010.0, 1500, 1024), ("c", 1030.0, 10, 1024)])
    mapped = loadschedule.trace_arrivals(read_trace(path), speedup=4.0, body_of=lambda s: f"{s:g}".encode())
    assert [(a.offset, a.endpoint, a.body) for a in mapped] == [
        (0.0, "a", b"0.25"), (0.5, "b", b"0.04"), (2.5, "a", b"1.5"), (7.5, "c", b"0.01")]
    single = loadschedule.trace_arrivals(read_trace(path), speedup=0.5, endpoint="gw", limit_s=30)
    assert [(a.offset, a.endpoint, a.body) for a in single] == [(0.0, "gw", None), (4.0, "gw", None),
                                                                (20.0, "gw", None)]
    p = plan("--trace", str(path), "--map-endpoints", "--speedup", "2")
    assert p.config["pattern"] == "trace" and p.targets == {"a", "b", "c"} and p.duration_s == 15.0
    with pytest.raises(ValueError):
        loadschedule.trace_arrivals([], speedup=0)


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
        with pytest.raises(loadschedule.UsageError):
            plan(*argv)
    assert loadtest.run_from_args(load_parser().parse_args(["ep", "--trace", str(tmp_path / "missing.csv")])) == 2
    assert loadtest.run_from_args(load_parser().parse_args(["ep", "--body-file", str(tmp_path / "nope")])) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 2 and all(line.startswith("slimserve load: ") for line in err.splitlines())


def test_dry_run_prints_the_plan(capsys):
    args = load_parser().parse_args(["ep", "--pattern", "burst", "--dry-run", "--format", "json"])
    assert loadtest.run_from_args(args) == 0
    doc = json.loads(capsys.readouterr().out)
    assert sum(doc["offered_per_second"]) == doc["config"]["planned_requests"] == 923
    assert doc["config"]["burst"]["peak"] == 50


# --- statistics and small pure helpers ------------------------------------------------------------
