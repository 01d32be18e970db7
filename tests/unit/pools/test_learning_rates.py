"""What the adaptive policy learns to reach the keep-alive frontier (#20, part 1): a timer's tick grid
from its arrivals, a Poisson endpoint's exponential tail, and bursts told from a steady stream's
noise; and the live pool opening a skipped tick's window again under a fake clock."""
import asyncio
import math
import random

import pytest

from gateway.clock import FakeClock
from gateway.domain import VariantSpec
from gateway.pools.admission import HostBudget
from gateway.pools.manager import PoolManager
from gateway.pools.policy import AdaptivePolicy, Plan
from gateway.pools.ticks import fit_ticks
from gateway.pools.traffic import HIST_BINS, Traffic, _bin
from tests.fakes import FakeBackend

# --- ticks --------------------------------------------------------------------------------------


def test_a_jittered_timer_that_skips_ticks_fits_a_grid_and_predicts_the_next_tick():
    rng = random.Random(1)
    arrivals = [100.0 + 60.0 * n + rng.uniform(-1.0, 1.0) for n in range(40) if n % 7 != 3]
    fit = fit_ticks(arrivals)
    assert fit is not None
    assert fit.period == pytest.approx(60.0, abs=0.2)
    last_tick = round((arrivals[-1] - 100.0) / 60.0)
    assert fit.next_at == pytest.approx(100.0 + 60.0 * (last_tick + 1), abs=1.5)
    assert -2.0 <= fit.early <= 0.0 <= fit.late <= 2.0
    assert 0.0 < fit.skipped < 0.3                             # two of the last 16 ticks were skipped


def test_streams_that_are_not_timers_fit_no_grid():
    rng = random.Random(2)
    t, poisson = 0.0, []
    for _ in range(40):
        t += rng.expovariate(1 / 60.0)
        poisson.append(t)
    assert fit_ticks(poisson) is None
    assert fit_ticks([0.0, 60.0, 120.0]) is None                 # too few to say
    assert fit_ticks([60.0 * n for n in range(20)], min_period=60.0) is None   # too fast to let go between ticks
    assert fit_ticks([0.0, 10.0, 20.0, 30.0, 40.0, 500.0, 510.0]) is None      # a pause is no skipped tick


def test_the_policy_prewarms_a_timer_once_its_windows_have_been_hitting():
    p = AdaptivePolicy(1000)
    t = Traffic(memory_mb=2048)
    plans = []
    for n in range(120):
        t.arrive(30.0 * n)
        plans.append(p.plan(t, t.depart(30.0 * n + 0.5), 30.0 * n + 0.5))
    last = plans[-1]
    assert last.expire_at == pytest.approx(30.0 * 119 + 0.5)                    # let go at once ...
    assert last.prewarm_at < 30.0 * 120 < last.prewarm_until                     # ... back for the next tick
    assert last.prewarm_until - last.prewarm_at < 5.0
    assert last.prewarm_every == pytest.approx(30.0) and last.prewarm_repeats == 2
    hits, n = t.memo["tick_score"]
    assert hits == pytest.approx(n) and n > 90                                   # every prediction was right (decayed)
    # the first plans keep the sandbox: a window not yet measured is a gamble at 1,200 s a miss
    assert plans[3].prewarm_every == 0.0 and plans[40].prewarm_every == 0.0


# --- a Poisson endpoint's tail --------------------------------------------------------------------


def _hist(its):
    h = [0.0] * HIST_BINS
    for it in its:
        h[_bin(it)] += 1.0
    return h


def test_a_poisson_endpoint_under_break_even_is_kept_past_the_longest_idle_time_it_has_seen():
    rng = random.Random(5)
    its = [rng.expovariate(1 / 100.0) for _ in range(60)]
    k = AdaptivePolicy.keep_alive(_hist(its), harm_s=600.0, samples=60)
    # without the tail the best k stops at the longest IT seen; the exponential tail goes on to
    # where the next IT is longer with a chance of 1/61^2 (about 2 * 100 s * ln 61 past the median)
    assert k > max(its) * 1.2
    assert math.exp(-(k - 100.0 * math.log(2)) / 100.0) < 0.01
    assert AdaptivePolicy.keep_alive(_hist(its), harm_s=600.0) <= 1.3 * max(its)        # no samples: as it was
    # a mean IT over break-even: a cold start each time is cheaper than waiting
    assert AdaptivePolicy.keep_alive(_hist([x * 20 for x in its]), harm_s=600.0, samples=60) < 200.0


def test_bursts_are_not_read_as_an_exponential_tail():
    # many ITs of a second within bursts, a few hours-long ones between them: the excess over the
    # median is far more spread than an exponential's, so it is read as it is
    its = [1.0] * 55 + [5000.0, 7000.0, 9000.0, 12000.0, 15000.0]
    hist = _hist(its)
    k, _ = AdaptivePolicy.keep_alive_cost(hist, harm_s=800.0, samples=60)
    assert k < 5.0


def test_the_histogram_remembers_at_least_32_idle_times_per_half_life():
    slow, fast = Traffic(), Traffic()
    for n in range(200):                       # one IT every 15 minutes: two days of them
        slow.arrive(900.0 * n + 10)
        slow.depart(900.0 * n + 11)
    for n in range(2000):                      # one every second
        fast.arrive(n * 1.0 + 0.5)
        fast.depart(n * 1.0 + 0.6)
    assert 32 / math.log(2) * 0.9 < slow.samples(1) < 32 / math.log(2) * 1.1     # by count, not by time
    assert fast.samples(1) > 1000                                                # an hour's worth, unhalved


# --- panics ---------------------------------------------------------------------------------------


def test_a_steady_streams_fluctuations_are_no_burst_but_a_burst_from_it_is():
    p = AdaptivePolicy(1000)
    steady = Traffic()
    for n in range(64):
        steady.arrive(100.0 + n * 1.0)                          # 1/s for a minute ...
    steady.arrive(163.6)                                        # ... and 2 in the last 2 s: noise
    assert not p.panics(steady, 164.0)
    for i in range(12):                                         # 12 within 0.3 s: a burst
        steady.arrive(164.0 + i * 0.025)
    assert p.panics(steady, 164.3)
    fresh = Traffic()
    for i in range(5):
        fresh.arrive(10.0 + i * 0.1)                            # a burst from nothing
    assert p.panics(fresh, 10.5)


# --- the live pool ----------------------------------------------------------------------------------


class Ticker(AdaptivePolicy):
    """Lets each sandbox go and asks for a window 100 s on, repeated twice a period of 100 s."""

    def plan(self, traffic, level, now):
        return Plan(expire_at=now, prewarm_at=now + 95, prewarm_until=now + 105, prewarm_every=100.0,
                    prewarm_repeats=2)


def test_a_live_pool_opens_a_skipped_ticks_window_again_but_not_after_a_request(tmp_path):
    async def go():
        clock = FakeClock()
        backend = FakeBackend()
        manager = PoolManager(backend, HostBudget(8192), clock, tmp_path, policy=Ticker(1000))
        await manager.configure("ep", [VariantSpec(memory_mb=1024)])
        pool = manager.pool("ep", "AllTraffic")

        async def opened(at: float) -> int:
            clock.advance(at - clock.now())
            n = pool.due_prewarms(clock.now())
            await asyncio.sleep(0)
            await asyncio.sleep(0)
            return n

        start = clock.now()
        lease = await pool.acquire()
        await pool.release(lease)
        assert [w[:2] for w in pool.prewarm_windows] == [(start + 95 + 100 * i, start + 105 + 100 * i)
                                                          for i in range(3)]
        assert await opened(start + 96) == 1                    # no tick came: the first window opens
        assert len(backend.started) == 2
        clock.advance(150 - 96)
        lease = await pool.acquire()                            # a request comes at 150 and takes it
        assert not lease.cold
        await pool.release(lease)                               # (its plan: windows from 245 on)
        assert await opened(start + 196) == 1                   # the repeat a period later is consumed ...
        assert len(backend.started) == 2                        # ... and opens nothing: a request came
        assert await opened(start + 246) == 1                   # the new plan's window does
        assert len(backend.started) == 3
    asyncio.run(go())
