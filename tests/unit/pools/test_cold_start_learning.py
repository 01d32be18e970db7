"""The real cost of a cold start (#20, part 2): each endpoint's start latency learned per path from
its measured starts, decayed by time, replacing the prior in the adaptive policy's H; the pool
feeding it under a fake clock; the simulator's per-path latencies."""
import asyncio

import pytest

from gateway.clock import FakeClock
from gateway.domain import VariantSpec
from gateway.pools import simulate
from gateway.pools.admission import HostBudget
from gateway.pools.manager import PoolManager
from gateway.pools.policy import AdaptivePolicy
from gateway.pools.traffic import HIST_HALF_LIFE_S, Traffic
from tests.fakes import FakeBackend, FakeSandbox


def test_a_paths_latency_is_a_mean_in_which_older_starts_count_less():
    t = Traffic()
    assert t.start_ms() is None
    t.started("zygote", 40.0, 0.0)
    t.started("model-zygote", 10.0, 1.0)
    assert t.last_path == "model-zygote" and t.start_ms() == 10.0 and t.start_ms("zygote") == 40.0
    t.started("model-zygote", 30.0, 1.0 + HIST_HALF_LIFE_S)      # the first now counts half
    assert t.start_ms() == pytest.approx((10.0 * 0.5 + 30.0) / 1.5)
    t.started("model-zygote", float("nan"), 2.0 + HIST_HALF_LIFE_S)   # not a measurement
    assert t.start_view()["expected_path"] == "model-zygote"
    for i in range(20):
        t.started(f"path-{i}", 1.0, 10_000.0 + i)
    assert len(t.starts) == 8                                   # bounded


def test_the_adaptive_policy_starts_from_the_prior_and_then_believes_the_measurements():
    p = AdaptivePolicy(cold_start_ms=1000)
    t = Traffic(memory_mb=2048)
    assert p.harm_s(t) == pytest.approx(2400 * 1.0 / 2)         # the prior: 1 s at 2 GB
    assert p.belief(t)["cold_start_from"].startswith("prior")
    t.started("model-zygote", 20.0, 1.0)
    assert p.harm_s(t) == pytest.approx(2400 * 0.02 / 2)        # 24 s
    assert p.belief(t) == {"cold_start": {"by_path_ms": {"model-zygote": 20.0}, "expected_path": "model-zygote"},
                           "cold_start_ms": 20.0, "cold_start_from": "measured starts on path model-zygote",
                           "break_even_s": 24.0}


    def keep_alive(learned: bool) -> float:
        """The keep-alive of an endpoint with no idle times yet: break even at H."""
        traffic = Traffic(memory_mb=2048)
        if learned:
            traffic.started("model-zygote", 20.0, 0.0)
        traffic.arrive(0.0)
        return p.plan(traffic, traffic.depart(0.5), 0.5).expire_at - 0.5
    assert keep_alive(learned=False) == pytest.approx(1200.0)
    assert keep_alive(learned=True) == pytest.approx(24.0)


class TimedSandbox(FakeSandbox):
    def __init__(self, spec, listeners):
        super().__init__(spec, listeners)
        self.facts.path, self.facts.start_ms = "zygote", 35.0


class TimedBackend(FakeBackend):
    async def start(self, spec):
        sb = TimedSandbox(spec, self.listeners)
        self.started.append(sb)
        return sb


def test_a_pool_teaches_its_policy_what_its_starts_take_and_describe_shows_it(tmp_path):
    async def go():
        clock = FakeClock()
        backend = TimedBackend()
        manager = PoolManager(backend, HostBudget(8192), clock, tmp_path, policy=AdaptivePolicy(1000))
        backend.listeners.append(manager.on_sandbox_event)
        await manager.configure("ep", [VariantSpec(memory_mb=1024)])
        pool = manager.pool("ep", "AllTraffic")
        lease = await pool.acquire()
        assert lease.cold
        await pool.release(lease)
        belief = pool.snapshot(measure=False)["policy"]
        assert belief["cold_start_ms"] == 35.0 and belief["break_even_s"] == pytest.approx(2400 * 0.035)
        assert belief["name"] == "adaptive"
        idle = pool.idle[0]
        assert idle.expire_at == pytest.approx(clock.now() + 2400 * 0.035)
    asyncio.run(go())


def test_the_simulator_takes_the_model_zygote_path_while_the_endpoint_keeps_its_model_zygote():
    by_path = {"model": 10.0, "base": 40.0, "fresh": 1000.0}
    # no keep-alive: each sandbox goes after its request, and the model zygote with it (as live)
    rows = [(0.0, "a", 0.1, 1024), (100.0, "a", 0.1, 1024), (5000.0, "a", 0.1, 1024)]
    r = simulate.simulate(rows, simulate.parse("none"), 1000.0, by_path)
    assert r["cold_starts"] == 3 and r["cold_start_delay_s"] == pytest.approx(3 * 0.040)
    # sandboxes started while the first is alive fork from the model zygote
    rows = [(0.0, "a", 10.0, 1024), (1.0, "a", 1.0, 1024), (2.0, "a", 5.0, 1024)]
    r = simulate.simulate(rows, simulate.parse("fixed:600"), 1000.0, by_path)
    assert r["cold_starts"] == 3 and r["cold_start_delay_s"] == pytest.approx(0.040 + 0.010 + 0.010)
    r = simulate.simulate(rows, simulate.parse("none"), 250.0)
    assert r["cold_start_delay_s"] == pytest.approx(3 * 0.25) and r["cold_start_ms_by_path"] is None
    assert simulate.parse_by_path("model=10, fresh=900") == {"model": 10.0, "fresh": 900.0}
    for bad in ("model", "gpu=3", "base=-1", "model=x", ""):
        with pytest.raises(ValueError, match="cold-start-ms-by-path"):
            simulate.parse_by_path(bad)


def test_the_simulators_zygote_level_books_what_model_zygotes_hold_while_kept():
    # fixed:600: a sandbox from 0.04 until 600.14 after its request; the zygote made at 0 goes with it;
    # a new one at 5000 (a start on the base path again) is held until the horizon
    rows = [(0.0, "a", 0.1, 1024), (5000.0, "a", 0.1, 1024)]
    r = simulate.simulate(rows, simulate.parse("fixed:600"), 1000.0, {"model": 10.0, "base": 40.0}, zygote_mb=512)
    assert r["cold_start_delay_s"] == pytest.approx(0.080)
    assert r["zygote_gb_s"] == pytest.approx(0.5 * 600.14 + 0.5 * 0.14, rel=1e-6)
    assert r["reserved_idle_gb_s"] == pytest.approx(r["idle_gb_s"] + r["zygote_gb_s"])
    assert simulate.simulate(rows, simulate.parse("none"), 1000.0, {"base": 40.0})["zygote_gb_s"] == 0


class ZygoteBackend(FakeBackend):
    """Reports one model zygote for the bundle of the endpoint "ep", holding 48 MB."""

    def __init__(self):
        super().__init__()
        self.models = []

    def snapshot(self) -> dict:
        return {"models": self.models}


def test_model_zygotes_are_metered_per_endpoint_at_what_they_hold(tmp_path):
    from gateway.metering.idle import IdleMeter
    from gateway.store.rollup import SUMS

    async def go():
        clock = FakeClock()
        backend = ZygoteBackend()
        manager = PoolManager(backend, HostBudget(8192), clock, tmp_path, idle_meter=IdleMeter(clock))
        spec = VariantSpec(memory_mb=2048, bundle_dir=str(tmp_path / "ep" / "v1"))
        await manager.configure("ep", [spec])
        backend.models = [{"bundle": spec.bundle_dir, "memory_mb": 2048, "alive": True, "own_memory_mb": 48}]
        manager.book_zygotes(clock.now())               # first seen: booked from now on
        clock.advance(10.0)
        manager.book_zygotes(clock.now())
        backend.models[0]["alive"] = False              # closed: nothing more
        clock.advance(10.0)
        manager.book_zygotes(clock.now())
        rows = manager.idle_meter.take()
        assert [k[1:] for k in rows] == [("ep", "AllTraffic", 2048)]
        assert sum(v[SUMS.index("zygote_mb_ms")] for v in rows.values()) == 48 * 10_000
        assert sum(v[SUMS.index("idle_ms")] for v in rows.values()) == 0
    asyncio.run(go())


# --- keep a sandbox, keep only the model zygote, or keep neither -------------------------------

def test_the_model_zygote_is_kept_after_the_sandbox_while_a_return_is_likely_enough():
    p = AdaptivePolicy(cold_start_ms=1000)
    t = Traffic(memory_mb=1024)
    t.started("zygote", 20.0, 0.0)
    t.started("model-zygote", 6.0, 0.0)
    h_model, h_base = p.path_harms(t)
    assert (h_model, h_base) == (pytest.approx(2400 * 0.006), pytest.approx(2400 * 0.020))
    z = 16 / 1024
    assert p.zygote_keep(t, None, 10.0) == pytest.approx(min(1800, (h_base - h_model) / z))   # nothing learnt
    t.arrive(0.0)
    for i in range(20):                                  # returns every 300 s: beyond the sandbox's keep-alive
        t.depart(300.0 * i + 1)
        t.arrive(300.0 * (i + 1))
    kz = p.zygote_keep(t, t.hist[1], p.keep_alive(t.hist[1], p.harm_s(t)))
    assert 299 <= kz + p.keep_alive(t.hist[1], p.harm_s(t)) <= 400      # just past the return
    t.zygote_mb = 1e9                                    # a zygote as large as it gets: not worth keeping
    assert p.zygote_keep(t, t.hist[1], 0.0) == 0.0


def test_unmeasured_model_zygote_starts_are_a_share_of_base_ones_and_no_saving_keeps_nothing():
    p = AdaptivePolicy(cold_start_ms=1000)
    t = Traffic()
    assert p.path_harms(t) == (pytest.approx(2400 * 0.32), pytest.approx(2400.0))          # the prior
    t.started("model-zygote", 300.0, 0.0)               # a model-zygote start no faster than a base one's
    t.started("zygote", 300.0, 0.0)
    assert p.zygote_keep(t, None, 0.0) == 0.0           # nothing to save: let it go with the sandbox


def test_an_empty_pool_keeps_its_model_zygote_until_the_plan_says_then_lets_it_go_once(tmp_path):
    from gateway.metering.provisioned import ProvisionedMeter
    from gateway.pools.scaler import Scaler

    class Releasing(TimedBackend):
        def __init__(self):
            super().__init__()
            self.released = []

        async def release_bundle(self, bundle_dir):
            self.released.append(bundle_dir)

    class Meter:
        async def record_provisioned(self, recs):
            pass

        async def record_idle(self, deltas):
            pass

    async def go():
        clock = FakeClock()
        backend = Releasing()
        manager = PoolManager(backend, HostBudget(8192), clock, tmp_path, policy=AdaptivePolicy(1000))
        backend.listeners.append(manager.on_sandbox_event)
        scaler = Scaler(manager, Meter(), clock, 1.0, 60.0, ProvisionedMeter(clock))
        await manager.configure("ep", [VariantSpec(memory_mb=1024, bundle_dir="/b/ep/v1")])
        pool = manager.pool("ep", "AllTraffic")
        lease = await pool.acquire()
        await pool.release(lease)
        keep_sandbox = pool.idle[0].expire_at - clock.now()
        keep_zygote = pool.zygote_until - clock.now()
        assert 0 < keep_sandbox < keep_zygote <= keep_sandbox + 1800
        clock.advance(keep_sandbox + 0.5)
        await scaler.tick()
        assert pool.empty and backend.released == []               # the sandbox went, the zygote stays
        clock.advance(keep_zygote - keep_sandbox)
        await scaler.tick()
        await scaler.tick()
        assert backend.released == ["/b/ep/v1"]                      # then it goes, once
    asyncio.run(go())
