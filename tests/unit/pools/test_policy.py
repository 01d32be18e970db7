"""Pure policy and admission functions, and the scaler applying them under a fake clock."""
import asyncio

import pytest

from gateway.clock import FakeClock
from gateway.domain import VariantSpec
from gateway.errors import Throttled
from gateway.metering.provisioned import ProvisionedMeter
from gateway.pools.admission import Candidate, HostBudget, choose_evictions
from gateway.pools.manager import PoolManager
from gateway.pools.policy import FixedKeepAlive, IdleSandbox, NoKeepAlive, Plan, select_reaps
from gateway.pools.scaler import Scaler
from gateway.pools.traffic import Traffic
from tests.fakes import FakeBackend


def test_fixed_keep_alive_plans_a_fixed_window():
    p = FixedKeepAlive(600)
    t = Traffic()
    t.arrive(0.0)
    assert p.plan(t, t.depart(1.0), 1.0) == Plan(expire_at=601.0)
    assert NoKeepAlive().plan(t, 1, 5.0) == Plan(expire_at=5.0)


def test_select_reaps_due_earliest_first_and_respects_floor():
    idle = [IdleSandbox("a", 600.0), IdleSandbox("b", 700.0), IdleSandbox("c", 1100.0)]
    assert select_reaps(idle, 3, 0, 599.0) == []
    assert select_reaps(idle, 3, 0, 600.0) == ["a"]
    assert select_reaps(idle, 3, 0, 1100.0) == ["a", "b", "c"]
    assert select_reaps(idle, 3, 2, 1100.0) == ["a"]
    assert select_reaps(idle, 5, 2, 1100.0) == ["a", "b", "c"]   # 2 busy stay


def test_choose_evictions_lru_other_endpoints_only():
    cands = [Candidate("a1", "a", 10.0, 1024), Candidate("b1", "b", 5.0, 2048), Candidate("c1", "c", 1.0, 1024)]
    assert choose_evictions(cands, 1024, 1024, "x") == []
    assert choose_evictions(cands, 1024, 0, "x") == ["c1"]
    assert choose_evictions(cands, 2048, 0, "x") == ["c1", "b1"]
    assert choose_evictions(cands, 2048, 0, "c") == ["b1"]           # never its own endpoint
    assert choose_evictions(cands, 8192, 0, "x") is None


def test_host_budget_reservations():
    b = HostBudget(2048)
    assert b.reserve("x", 1024) and b.reserve("y", 1024)
    assert not b.reserve("z", 1)
    b.release("x")
    b.release("x")                       # idempotent
    assert b.free_mb == 1024


@pytest.fixture
def rig(tmp_path):
    clock = FakeClock()
    backend = FakeBackend()
    prov = ProvisionedMeter(clock)
    manager = PoolManager(backend, HostBudget(4096), clock, tmp_path, prov.change, FixedKeepAlive(600))
    backend.listeners.append(manager.on_sandbox_event)

    class Meter:
        records = []

        async def record_provisioned(self, recs):
            self.records.extend(recs)

    meter = Meter()
    scaler = Scaler(manager, meter, clock, interval_s=5, checkpoint_s=60, provisioned=prov)
    return clock, backend, manager, scaler, meter


def _variant(**kw):
    return VariantSpec(**{"memory_mb": 1024, "bundle_kind": "pickle", "bundle_dir": "/x", "bundle_version": 1, **kw})


async def test_reaper_reaps_after_keep_alive_under_fake_clock(rig):
    clock, backend, manager, scaler, _ = rig
    await manager.configure("ep", [_variant()])
    pool = manager.pool("ep", "AllTraffic")
    lease = await pool.acquire()
    assert lease.cold
    await pool.release(lease)
    clock.advance(599)
    await scaler.tick()
    assert pool.live_count == 1
    lease = await pool.acquire()          # warm, and its idle clock restarts
    assert not lease.cold
    await pool.release(lease)
    clock.advance(599)
    await scaler.tick()
    assert pool.live_count == 1
    clock.advance(1)
    await scaler.tick()
    assert pool.live_count == 0 and scaler.reaped == 1
    assert backend.started[0].state.value == "dead"


async def test_provisioned_floor_is_kept_warm_and_replaced(rig):
    clock, backend, manager, scaler, meter = rig
    await manager.configure("ep", [_variant(provisioned=2)])
    pool = manager.pool("ep", "AllTraffic")
    await scaler.tick()
    await _settle()
    assert pool.live_count == 2 and len(pool.idle_sandboxes()) == 2
    clock.advance(10_000)
    await scaler.tick()
    await _settle()
    assert pool.live_count == 2                      # never reaped below the floor
    await pool.idle_sandboxes()[0].destroy("crashed")           # one dies: the next tick replaces it
    assert pool.live_count == 1
    await scaler.tick()
    await _settle()
    assert pool.live_count == 2
    # wall time is metered: two sandboxes for the 10,000 s that passed
    assert sum(r.billed_ms for r in meter.records) == 2 * 10_000 * 1000


async def test_max_concurrency_throttles_and_frees(rig):
    _, _, manager, _, _ = rig
    await manager.configure("ep", [_variant(max_concurrency=2)])
    pool = manager.pool("ep", "AllTraffic")
    a, b = await pool.acquire(), await pool.acquire()
    with pytest.raises(Throttled):
        await pool.acquire()
    await pool.release(a)
    c = await pool.acquire()
    assert not c.cold and c.sandbox is a.sandbox      # most recently used idle sandbox
    await pool.release(b)
    await pool.release(c)


async def test_update_drains_old_generation_without_dropping_in_flight(rig):
    _, backend, manager, _, _ = rig
    await manager.configure("ep", [_variant()])
    old = manager.pool("ep", "AllTraffic")
    idle = await old.acquire()
    busy = await old.acquire()
    await old.release(idle)
    await manager.configure("ep", [_variant(bundle_version=2)])
    new = manager.pool("ep", "AllTraffic")
    assert new is not old and old.draining
    assert not idle.sandbox.alive              # idle sandboxes of the old bundle go at once
    assert busy.sandbox.alive                  # the busy one finishes its request ...
    await old.release(busy)
    assert not busy.sandbox.alive              # ... and then goes
    assert old not in manager.retired
    # a settings-only change keeps warm sandboxes
    lease = await new.acquire()
    await new.release(lease)
    await manager.configure("ep", [_variant(bundle_version=2, max_concurrency=5)])
    assert manager.pool("ep", "AllTraffic") is new and lease.sandbox.alive
    assert new.admission.max_concurrency == 5


async def test_budget_eviction_through_the_manager(rig):
    _, _, manager, _, _ = rig
    manager.budget.capacity_mb = 2048
    for name in ("a", "b", "c"):
        await manager.configure(name, [_variant()])
    leases = {}
    for name in ("a", "b"):
        leases[name] = await manager.pool(name, "AllTraffic").acquire()
        await manager.pool(name, "AllTraffic").release(leases[name])
    lease_c = await manager.pool("c", "AllTraffic").acquire()
    assert not leases["a"].sandbox.alive and leases["b"].sandbox.alive
    assert manager.budget.used_mb == 2048
    await manager.pool("c", "AllTraffic").release(lease_c)


async def _settle():
    import asyncio

    for _ in range(5):
        await asyncio.sleep(0)


async def test_a_request_waiting_for_a_prewarm_is_answered_when_it_breaks(tmp_path):
    """Budget full, so the request waits for a pre-warm; the backend then fails in a way
    nobody planned for: the request must get an answer, and its concurrency slot back."""
    from gateway.errors import Throttled

    class Exploding(FakeBackend):
        async def start(self, spec):
            await asyncio.sleep(0.05)
            raise RuntimeError("engine went away")

    clock, backend = FakeClock(), Exploding()
    manager = PoolManager(backend, HostBudget(1024), clock, tmp_path, None, FixedKeepAlive(600))
    backend.listeners.append(manager.on_sandbox_event)
    await manager.configure("ep", [_variant()])
    pool = manager.pool("ep", "AllTraffic")
    pool.prewarm(1)                                  # a pre-warm takes the only room ...
    await asyncio.sleep(0)
    with pytest.raises(Throttled):                   # ... so the request waits for it, and is told
        await asyncio.wait_for(pool.acquire(), 2.0)
    assert pool.admission.in_flight == 0 and pool.prewarms_open == 0


async def test_idle_of_the_provisioned_floor_is_not_the_pools_cost(rig, tmp_path):
    from gateway.metering.idle import IdleMeter
    from gateway.store.rollup import SUMS

    clock, backend, manager, scaler, _ = rig
    manager.idle_meter = IdleMeter(clock)
    await manager.configure("ep", [_variant(provisioned=2, max_concurrency=5)])
    pool = manager.pool("ep", "AllTraffic")
    leases = [await pool.acquire() for _ in range(3)]          # two from the floor's pre-warms, one more
    for lease in leases:
        await pool.release(lease)
    clock.advance(3600)
    pool.cut_idle(clock.now())
    idle_ms = sum(v[SUMS.index("idle_ms")] for v in manager.idle_meter.take().values())
    assert idle_ms == pytest.approx(3600 * 1000, rel=0.01)     # one spare sandbox-hour, not three


def test_sandbox_logs_rotate_before_they_fill_the_disk(tmp_path):
    manager = PoolManager(FakeBackend(), HostBudget(1024), FakeClock(), tmp_path, None, FixedKeepAlive(600))
    manager.LOG_ROTATE_BYTES = 100
    log = manager.log_path("ep")
    log.write_bytes(b"x" * 50)
    manager.rotate_log("ep")
    assert log.exists() and not log.with_name("ep.log.1").exists()
    log.write_bytes(b"y" * 150)
    manager.rotate_log("ep")
    assert not log.exists() and log.with_name("ep.log.1").read_bytes() == b"y" * 150
