"""The clairvoyant keep-alive bound (benchmarks/keepalive_bound.py) is only worth quoting
if it really bounds its family: check its pieces by hand and against fixed keep-alives."""
import pytest

from benchmarks import keepalive_bound as kb
from benchmarks import tracegen
from gateway.pools.policy import FixedKeepAlive
from gateway.pools.simulate import simulate


def test_best_keep_alive_by_hand():
    its = [10.0, 20.0, 1000.0]
    # 1 GB: k=0 costs 3 lam; k=10: 30 + 2 lam; k=20: 50 + lam; k=1000: 1030.
    assert kb.best_keep_alive(its, 1.0, lam=5.0) == 0.0          # 15 < 40 < 55 < 1030
    assert kb.best_keep_alive(its, 1.0, lam=100.0) == 20.0       # 150 < 300, 230, 1030
    assert kb.best_keep_alive(its, 1.0, lam=5000.0) == 1000.0    # 1030 < 5050
    assert kb.best_keep_alive(its, 2.0, lam=100.0) == 20.0       # 100 + 100 beats 2060 and 300
    assert kb.best_keep_alive([], 1.0, lam=100.0) == 0.0


def test_a_tail_costs_idle_and_catches_nothing():
    # One IT of 10 s and a level that went idle 1,000 s before the end and was never needed:
    # keeping 10 s catches the IT but also holds the tail 10 s.
    assert kb.best_keep_alive([10.0], 1.0, lam=15.0) == 10.0                  # 10 < 15
    assert kb.best_keep_alive([10.0], 1.0, lam=15.0, tails=[1000.0]) == 0.0   # 10 + 10 > 15
    assert kb.best_keep_alive([10.0], 1.0, lam=25.0, tails=[1000.0]) == 10.0  # 20 < 25


def test_idle_needed_is_the_highest_supporting_line():
    pts = [{"cold": 1.0, "idle": 0.2, "lam_ratio": 0.4}, {"cold": 0.5, "idle": 0.45, "lam_ratio": 0.6},
           {"cold": 0.0, "idle": 1.0, "lam_ratio": 1.5}]
    assert kb.idle_needed(pts, 0.75) == pytest.approx(0.3)     # lines: 0.3, 0.3, -0.125
    assert kb.idle_needed(pts, 0.25) == pytest.approx(0.625)   # lines: 0.5, 0.6, 0.625
    assert kb.idle_needed(pts, 1.5) == pytest.approx(0.0)
    assert kb.idle_needed(pts[:1], 1.0) == pytest.approx(0.2)
    assert kb.idle_needed([], 0.5) is None


def test_fixed_keep_alives_lie_on_or_above_the_clairvoyant_frontier():
    rows = list(tracegen.generate(hours=4, endpoints=30, seed=11))
    base, points = kb.frontier(rows, kb.LAMS)
    # The frontier runs from many cold starts and little idle to few and much.
    assert points[0]["cold"] > points[-1]["cold"] and points[0]["idle"] < points[-1]["idle"]
    checked = 0
    for seconds in (60, 300, 600, 1800, 3600):
        r = simulate(iter(rows), FixedKeepAlive(float(seconds)))
        cold = r["cold_starts"] / base["cold_starts"]
        need = kb.idle_needed(points, cold)
        if need is None:
            continue
        checked += 1
        # fixed:S belongs to the family (timers count as perfect in the bound), so it
        # cannot hold less idle memory than the frontier for as few cold starts.
        assert r["idle_gb_s"] / base["idle_gb_s"] >= need - 0.02, seconds
    assert checked >= 3


def test_per_endpoint_choice_picks_the_cheaper_run_for_each_endpoint():
    rows = list(tracegen.generate(hours=2, endpoints=12, seed=3))
    base = simulate(iter(rows), FixedKeepAlive(600.0))
    none = simulate(iter(rows), kb.parse("none"))
    only = kb.per_endpoint_choice(rows, base, [1000.0], ["fixed:600"])[0]
    assert (only["cold"], only["idle"]) == (1.0, 1.0)
    cheap, dear = kb.per_endpoint_choice(rows, base, [1e-9, 1e12], ["none", "fixed:600"])
    # Cold starts nearly free: every endpoint is better off with no keep-alive (unless the
    # p75 bar makes it keep one).
    assert cheap["idle"] <= 1.0 and cheap["cold"] >= 1.0
    assert cheap["cold"] <= none["cold_starts"] / base["cold_starts"]
    # Nearly priceless: fixed:600 wherever it has fewer cold starts, no keep-alive where they tie.
    fixed, bare = base["by_endpoint"], none["by_endpoint"]
    idle = sum(bare[n]["idle_gb_s"] if bare[n]["cold_starts"] == fixed[n]["cold_starts"] else fixed[n]["idle_gb_s"]
               for n in fixed)
    assert dear["cold"] == 1.0
    assert dear["idle"] == pytest.approx(idle / base["idle_gb_s"])
