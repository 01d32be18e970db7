"""The pool manager: owns every variant's warm pool, the backend and the host memory
budget; swaps pools in on an endpoint change and drains the old ones; makes room for a
cold start by evicting other endpoints' idle sandboxes (``admission.choose_evictions``).
"""
from __future__ import annotations

import asyncio
import os
import uuid
from pathlib import Path

from gateway.clock import Clock
from gateway.domain import VariantSpec
from gateway.errors import Throttled
from gateway.pools.admission import HostBudget, choose_evictions
from gateway.pools.cpu import variant_vcpus
from gateway.pools.pool import Admission, VariantPool
from runtime.sandbox import Backend, Sandbox


class PoolManager:
    RELEASE_WAIT_S = 10.0      # how long a start waits for memory that draining pools are giving back
    def __init__(self, backend: Backend, budget: HostBudget, clock: Clock, logs_dir: Path,
                 on_provisioned=None, policy=None, idle_meter=None, cpu_per_gb: float = 0.0,
                 host_cores: int | None = None, multi_models=None):
        from gateway.pools.policy import FixedKeepAlive

        self.multi_models = multi_models             # what multi-model pools share (gateway.multimodel.pool)
        self.cpu_per_gb = cpu_per_gb                 # vCPUs per GB of a tier (0: no CPU quotas)
        self.host_cores = host_cores or os.cpu_count() or 1
        self.policy = policy or FixedKeepAlive()
        self.idle_meter = idle_meter                 # books the idle time of warm sandboxes (IdleMeter)
        self.backend = backend
        self.budget = budget
        self.clock = clock
        self.logs_dir = Path(logs_dir)
        self.current: dict[tuple[str, str], VariantPool] = {}
        self.retired: set[VariantPool] = set()
        self.owner: dict[str, VariantPool] = {}      # sandbox id -> pool, for lifecycle events
        self._released = asyncio.Event()            # set whenever a sandbox's memory goes back to the budget
        self._zygotes_seen: dict[tuple[str, int], float] = {}   # model zygote (bundle, tier) -> last booked
        # told (key, count, memory_mb) whenever a variant's provisioned concurrency starts, changes or ends
        self.on_provisioned = on_provisioned or (lambda key, count, mb: None)

    LOG_ROTATE_BYTES = 16 << 20

    def log_path(self, endpoint: str) -> Path:
        return self.logs_dir / f"{endpoint}.log"

    def rotate_log(self, endpoint: str) -> None:
        """Past 16 MB an endpoint's sandbox log moves to ``.log.1`` (one kept), so a chatty
        model cannot fill the disk; sandboxes already writing keep their open file."""
        path = self.log_path(endpoint)
        try:
            if path.stat().st_size > self.LOG_ROTATE_BYTES:
                os.replace(path, path.with_name(path.name + ".1"))
        except FileNotFoundError:
            pass

    def on_sandbox_event(self, event: str, sb: Sandbox) -> None:
        if event != "destroyed":
            return
        self.budget.release(sb.id)
        self._released.set()
        pool = self.owner.pop(sb.id, None)
        if pool is not None:
            pool.forget(sb)
            if pool in self.retired and pool.empty:
                self.retired.discard(pool)

    def pool(self, endpoint: str, variant: str) -> VariantPool | None:
        return self.current.get((endpoint, variant))

    def pools(self) -> list[VariantPool]:
        return list(self.current.values())

    async def configure(self, endpoint: str, variants: list[VariantSpec]) -> None:
        """Make the pools of ``endpoint`` match ``variants``; changed pools drain."""
        wanted = {v.name: v for v in variants}
        for key in [k for k in self.current if k[0] == endpoint and k[1] not in wanted]:
            await self._retire(self.current.pop(key))
        for name, spec in wanted.items():
            old = self.current.get((endpoint, name))
            if old is not None and old.spec == spec:
                continue
            if old is None or (old.spec.provisioned, old.spec.memory_mb) != (spec.provisioned, spec.memory_mb):
                self.on_provisioned((endpoint, name), spec.provisioned, spec.memory_mb)
            admission = old.admission if old is not None else Admission(spec.max_concurrency)
            admission.max_concurrency = spec.max_concurrency
            if old is not None and old.spec.same_sandboxes(spec):
                old.spec = spec            # only counts or weights changed: keep the warm sandboxes
                continue
            self.current[(endpoint, name)] = self._new_pool(endpoint, spec, admission)
            if old is not None:
                await self._retire(old)

    def _new_pool(self, endpoint: str, spec: VariantSpec, admission: Admission) -> VariantPool:
        if spec.multi_model:
            from gateway.multimodel.pool import MultiModelPool

            return MultiModelPool(self, endpoint, spec, admission, self.multi_models)
        return VariantPool(self, endpoint, spec, admission)

    async def remove(self, endpoint: str) -> None:
        for key in [k for k in self.current if k[0] == endpoint]:
            await self._retire(self.current.pop(key))

    async def _retire(self, pool: VariantPool) -> None:
        if self.current.get(pool.key) is None:
            self.on_provisioned(pool.key, 0, pool.spec.memory_mb)
        self.retired.add(pool)
        await pool.drain()
        if not any(p.spec.bundle_dir == pool.spec.bundle_dir for p in self.current.values()):
            await self.backend.release_bundle(pool.spec.bundle_dir)
        if pool.empty:
            self.retired.discard(pool)

    async def make_room(self, requester: str, key: str, mb: int, speculative: bool = False) -> bool:
        """Reserve ``mb`` for sandbox ``key``, evicting other endpoints' idle sandboxes if needed.
        A speculative start (a pre-warm) never evicts and always leaves room for one more
        sandbox of its size, so that guessing ahead can never throttle a real request."""
        if speculative:
            return self.budget.free_mb >= 2 * mb and self.budget.reserve(key, mb)
        deadline = self.clock.now() + self.RELEASE_WAIT_S
        while True:
            if await self._make_room_now(requester, key, mb):
                return True
            # Memory already on its way back (pools being drained after an update or delete) is
            # waited for, briefly; anything else is full, and the caller throttles at once.
            freeing = sum(p.held_mb() for p in self.retired)
            left = deadline - self.clock.now()
            if left <= 0 or self.budget.free_mb + freeing < mb:
                return False
            self._released.clear()
            try:
                await asyncio.wait_for(self._released.wait(), left)
            except asyncio.TimeoutError:
                return False

    async def _make_room_now(self, requester: str, key: str, mb: int) -> bool:
        if self.budget.reserve(key, mb):
            return True
        candidates = [c for p in self.current.values() for c in p.evictable()]
        victims = choose_evictions(candidates, mb, self.budget.free_mb, requester)
        if victims is None:
            return False
        by_pool: dict[VariantPool, list[str]] = {}
        for c in candidates:
            if c.sandbox_id in victims:
                by_pool.setdefault(self.owner[c.sandbox_id], []).append(c.sandbox_id)
        doomed = [sb for pool, ids in by_pool.items() for sb in pool.take_idle(ids)]
        for sb in doomed:          # release now, synchronously, so nobody else takes the room
            self.budget.release(sb.id)
        ok = self.budget.reserve(key, mb)
        for sb in doomed:
            await sb.destroy("evicted for host memory")
        return ok

    def book_zygotes(self, now: float) -> None:
        """Model zygotes' memory-time, per endpoint (operator's side, beside idle time): each one
        alive now is booked at what it holds since it was last seen (a call every scaler tick),
        to the variant whose bundle it keeps."""
        seen, self._zygotes_seen = self._zygotes_seen, {}
        if self.idle_meter is None:
            return
        for m in self.backend.snapshot().get("models") or []:
            if not m.get("alive"):
                continue
            key = (m["bundle"], m["memory_mb"])
            self._zygotes_seen[key] = now
            pool = next((p for p in [*self.current.values(), *self.retired]
                         if (p.spec.bundle_dir, p.spec.memory_mb) == key), None)
            if pool is None:
                continue
            own_mb = float(m.get("own_memory_mb") or 0)
            pool.traffic.zygote_mb = own_mb or None                   # what its policy weighs
            if key in seen:
                self.idle_meter.book_zygote(pool.endpoint, pool.spec.name, pool.spec.memory_mb, own_mb,
                                            seen[key], now)

    def vcpus(self, variant: VariantSpec) -> float:
        """The CPU quota of this variant's sandboxes (0: none)."""
        return variant_vcpus(variant, self.cpu_per_gb, self.host_cores)

    async def trial_load(self, endpoint: str, variant: VariantSpec) -> None:
        """Load ``variant``'s bundle once in a real sandbox at its tier, then stop it (a deploy's
        check).  Raises the backend's StartError, or Throttled when the budget has no room now."""
        sid = f"sb-check-{uuid.uuid4().hex[:8]}"
        if not await self.make_room(endpoint, sid, variant.memory_mb):
            raise Throttled(f"the host memory budget has no room to check a {variant.memory_mb} MB bundle now")
        try:
            sb = await self.backend.start(variant.sandbox_spec(sid, endpoint, str(self.log_path(endpoint)),
                                                               check_only=True, vcpus=self.vcpus(variant)))
        finally:
            self.budget.release(sid)
        await sb.destroy("bundle check done")

    async def close(self) -> None:
        for pool in list(self.current.values()) + list(self.retired):
            await pool.close()
        self.current.clear()
        self.retired.clear()

    def snapshot(self, measure: bool = True) -> list[dict]:
        return [p.snapshot(measure) for p in [*self.current.values(), *self.retired]]

    async def measured(self) -> list[dict]:
        """``snapshot()`` with each sandbox's memory read in a thread (cgroup files and /proc: not
        work for the event loop on every metrics scrape).  The pools are read on the loop."""
        pools = [*self.current.values(), *self.retired]
        docs = [p.snapshot(measure=False) for p in pools]
        pairs = [(d, p.slots[d["id"]].sandbox) for p, doc in zip(pools, docs, strict=True)
                 for d in doc["sandboxes"]]

        def measure() -> None:
            for d, sb in pairs:
                d["memory_bytes"] = sb.memory_bytes()
        await asyncio.to_thread(measure)
        return docs

