"""Warm pools: one per (endpoint, variant, bundle version); ``gateway.pools.manager``
owns them, the backend and the host memory budget.

A request takes the most recently used idle sandbox, or starts one (a cold
start).  Admission happens first: past the variant's MaxConcurrency the
request is throttled at once; a cold start that does not fit the host budget
evicts idle sandboxes of other endpoints (LRU first) or is throttled.

An update swaps in a new pool and drains the old one: its idle sandboxes go at
once, its busy ones finish their request and are then destroyed, so no
in-flight request is dropped.
"""
from __future__ import annotations

import asyncio
import logging
import uuid
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING

from gateway.domain import VariantSpec
from gateway.errors import NotReady, Throttled
from gateway.pools.admission import Candidate
from gateway.pools.policy import IdleSandbox, Plan
from gateway.pools.traffic import Traffic
from runtime.sandbox import EXITED, InvokeRequest, Sandbox, StartError, State

log = logging.getLogger("slimserve.pools")

if TYPE_CHECKING:
    from gateway.pools.manager import PoolManager

MAX_SAMPLE_BYTES = 64 * 1024     # larger requests are not kept as warm-up inputs


class Admission:
    """In-flight requests of one variant, shared by its pool generations."""

    def __init__(self, max_concurrency: int):
        self.max_concurrency = max_concurrency
        self.in_flight = 0


@dataclass(eq=False)
class Slot:
    """One live sandbox as its pool keeps it."""
    sandbox: Sandbox
    last_used: float = 0.0
    idle_since: float | None = None      # while idle: since when (its idle time is booked from then)
    expire_at: float | None = None       # while idle: when the policy lets it go


@dataclass
class Lease:
    sandbox: Sandbox
    pool: "VariantPool"
    cold: bool
    init_ms: float = 0.0
    model: str | None = None        # a multi-model sandbox: the key of the model loaded for this request


class VariantPool:
    MAX_PREWARM_WINDOWS = 32

    def __init__(self, manager: "PoolManager", endpoint: str, spec: VariantSpec, admission: Admission):
        self.manager = manager
        self.endpoint = endpoint
        self.spec = spec
        self.admission = admission
        self.slots: dict[str, Slot] = {}          # every live sandbox, by id
        self.idle: list[Slot] = []                # the idle ones, most recently used last
        self.starting = 0
        self.traffic = Traffic(spec.memory_mb, f"{endpoint}/{spec.name}")   # what the policy learns from
        # (from, until, unless): one sandbox warm then, unless a request came after ``unless``
        self.prewarm_windows: list[tuple[float, float, float | None]] = []
        self.prewarms_open = 0                    # pre-warms starting that no request has claimed yet
        self._claims: deque[asyncio.Future] = deque()   # requests waiting for one of them
        self.draining = False
        self.zygote_until: float | None = None   # once empty, its model zygote is kept until then (the plan's)
        self.zygote_released = True              # its bundle's model zygote was let go since its last start
        self.cold_starts = 0
        self.last_failure: str | None = None
        self._background: set[asyncio.Task] = set()

    @property
    def key(self) -> tuple[str, str]:
        return (self.endpoint, self.spec.name)

    @property
    def live_count(self) -> int:
        return len(self.slots)

    @property
    def empty(self) -> bool:
        """No sandbox is alive or on its way."""
        return not self.slots and not self.starting

    def held_mb(self) -> int:
        return self.spec.memory_mb * len(self.slots)

    def idle_sandboxes(self) -> list[Sandbox]:
        return [slot.sandbox for slot in self.idle]

    def idle_view(self) -> list[IdleSandbox]:
        return [IdleSandbox(slot.sandbox.id, slot.expire_at or 0.0) for slot in self.idle]

    def keep_floor(self) -> int:
        """Start what the provisioned floor is missing (counting starts on their way); how many."""
        missing = self.spec.provisioned - len(self.slots) - self.starting
        if missing > 0:
            self.prewarm(missing)
        return max(0, missing)

    def due_prewarms(self, now: float) -> int:
        """Pre-warm windows that have opened: each wants one sandbox now (and is consumed)."""
        due = [w for w in self.prewarm_windows if w[0] <= now]
        self.prewarm_windows = [w for w in self.prewarm_windows if w[0] > now]
        last = self.traffic.last_arrival
        for _, until, unless in due:
            if until > now and (unless is None or last is None or last <= unless):
                self.prewarm(1, until)
        return len(due)

    # --- the request path -------------------------------------------------
    async def acquire(self, sample: InvokeRequest | None = None, target: str | None = None) -> Lease:
        """A sandbox for one request; ``sample`` is that request, which a cold start
        may hand to the backend as a warm-up input for what it keeps warm.  ``target``: the
        model a multi-model pool loads (``gateway.multimodel.pool``); a single-model pool has one."""
        if self.draining:
            raise NotReady(f"endpoint {self.endpoint} is being updated or deleted; retry")
        adm = self.admission
        if adm.in_flight >= adm.max_concurrency:
            raise Throttled(
                f"endpoint {self.endpoint} variant {self.spec.name} is at its MaxConcurrency of {adm.max_concurrency}"
            )
        adm.in_flight += 1
        now = self.manager.clock.now()
        self.traffic.arrive(now)
        alive = len(self.slots) + self.starting
        extra, keep_s = self.manager.policy.scale_out(self.traffic, now, alive)
        extra = min(extra, adm.max_concurrency - alive - 1)     # never more sandboxes than can be used at once
        if extra > 0:
            self.prewarm(extra, now + keep_s)
        try:
            while self.idle:
                slot = self.idle.pop()
                self.idle_ended(slot, now)
                slot.expire_at = None
                if slot.sandbox.state is State.IDLE:
                    return Lease(slot.sandbox, self, cold=False)
            t0 = self.manager.clock.now()
            try:
                sb = await self._start_sandbox(sample)
            except Throttled:
                # No memory for a sandbox of its own: a pre-warm already starting will do.
                sb = await self._claim_prewarm() if self.prewarms_open > 0 else None
                if sb is None:
                    raise
            self.cold_starts += 1
            return Lease(sb, self, cold=True, init_ms=(self.manager.clock.now() - t0) * 1000.0)
        except BaseException:
            adm.in_flight -= 1
            raise

    async def release(self, lease: Lease) -> None:
        self.admission.in_flight -= 1
        sb = lease.sandbox
        now = self.manager.clock.now()
        slot = self.slots.get(sb.id)            # None: it died during the request and was forgotten
        if slot is not None:
            slot.last_used = now
        level = self.traffic.depart(now)
        plan: Plan = self.manager.policy.plan(self.traffic, level, now)
        if level == 1:                               # the last busy sandbox: once it goes, the model
            self.zygote_until = plan.zygote_until    # zygote is kept until then (None: with it)
        if plan.prewarm_at is not None:
            self.prewarm_windows.extend(plan.windows(now))
            del self.prewarm_windows[:-self.MAX_PREWARM_WINDOWS]      # bounded: the latest plans win
        if slot is not None and sb.state is State.IDLE and not self.draining:
            self.idle.append(slot)
            slot.idle_since = now
            slot.expire_at = plan.expire_at      # the scaler reaps it then (above the provisioned floor)
        elif sb.alive:
            await sb.destroy("pool drained")

    # --- sandbox lifecycle --------------------------------------------------
    async def _start_sandbox(self, sample: InvokeRequest | None = None, speculative: bool = False) -> Sandbox:
        mgr = self.manager
        sid = f"sb-{uuid.uuid4().hex[:12]}"
        self.starting += 1          # counted from now: a start waiting for memory is still on its way
        try:
            if not await mgr.make_room(self.endpoint, sid, self.spec.memory_mb, speculative):
                raise Throttled(
                    f"host memory budget ({mgr.budget.capacity_mb} MB) is full and no idle sandbox can be evicted"
                )
        except BaseException:
            self._start_ended()
            raise
        mgr.rotate_log(self.endpoint)
        spec = self.spec.sandbox_spec(sid, self.endpoint, str(mgr.log_path(self.endpoint)), vcpus=mgr.vcpus(self.spec),
                                      sample=sample if sample is not None and len(sample.body) <= MAX_SAMPLE_BYTES
                                      else None)
        mgr.owner[sid] = self
        try:
            sb = await mgr.backend.start(spec)
        except StartError as exc:
            mgr.budget.release(sid)
            mgr.owner.pop(sid, None)
            self.last_failure = exc.message
            raise
        except BaseException:
            mgr.budget.release(sid)
            mgr.owner.pop(sid, None)
            raise
        finally:
            self._start_ended()
        if not sb.alive:     # died between ready and here
            raise StartError(EXITED, sb.death_reason or "sandbox died after start")
        if sb.facts.start_ms is not None:       # what a cold start costs here: the policy's H learns it
            self.traffic.started(sb.facts.path or "unknown", sb.facts.start_ms, mgr.clock.now())
        self.zygote_released = False
        self.slots[sid] = Slot(sb)
        self.last_failure = None
        return sb

    def _start_ended(self) -> None:
        self.starting -= 1
        mgr = self.manager
        if self in mgr.retired and self.empty:
            mgr.retired.discard(self)           # a retired pool whose last start was cancelled

    def _idle_share(self) -> float:
        """The part of this pool's idle time that is the warm pool's, not the provisioned floor's:
        of n idle sandboxes in a pool of ``live`` with a floor of f, (live - f) at most are spare."""
        idle = sum(1 for slot in self.slots.values() if slot.idle_since is not None)
        spare = len(self.slots) - self.spec.provisioned
        return 0.0 if idle == 0 or spare <= 0 else min(1.0, spare / idle)

    def idle_ended(self, slot: Slot, now: float | None = None, share: float | None = None) -> None:
        """The sandbox stops being idle (taken, reaped, evicted, dead): book its idle time.
        Sandboxes that only hold the provisioned floor are the customer's, paid as provisioned time."""
        share = self._idle_share() if share is None else share
        since, slot.idle_since = slot.idle_since, None
        meter = self.manager.idle_meter
        if since is not None and meter is not None and share > 0:
            now = self.manager.clock.now() if now is None else now
            meter.book(self.endpoint, self.spec.name, self.spec.memory_mb, since, since + (now - since) * share)

    def cut_idle(self, now: float) -> None:
        """Book idle time so far of sandboxes still idle (a checkpoint)."""
        share = self._idle_share()
        for slot in self.slots.values():
            if slot.idle_since is not None:
                self.idle_ended(slot, now, share)
                slot.idle_since = now

    def forget(self, sb: Sandbox) -> None:
        """Called when a sandbox is destroyed, whoever destroyed it."""
        slot = self.slots.pop(sb.id, None)
        if slot is None:
            return
        self.idle_ended(slot)
        if slot in self.idle:
            self.idle.remove(slot)

    def take(self, slot: Slot) -> None:
        """This idle sandbox stops being idle (a caller has it now): its idle time is booked."""
        self.idle.remove(slot)
        self.idle_ended(slot)
        slot.expire_at = None

    def take_idle(self, ids: list[str]) -> list[Sandbox]:
        """Remove these idle sandboxes from the pool so no request can take them."""
        wanted = set(ids)
        taken = [slot for slot in self.idle if slot.sandbox.id in wanted]
        for slot in taken:
            self.take(slot)
        return [slot.sandbox for slot in taken]

    async def reap(self, ids: list[str], reason: str = "keep-alive expired") -> int:
        taken = self.take_idle(ids)
        for sb in taken:
            await sb.destroy(reason)
        return len(taken)

    def prewarm(self, count: int, until: float = float("inf")) -> None:
        """Start ``count`` sandboxes in the background and park them idle until ``until``."""
        for _ in range(count):
            self.prewarms_open += 1
            task = asyncio.get_running_loop().create_task(self._prewarm_one(until))
            self._background.add(task)
            task.add_done_callback(self._background.discard)

    async def _claim_prewarm(self) -> Sandbox | None:
        """Wait for a pre-warm already starting, when the host budget has no room for a
        sandbox of the request's own (None if the pre-warm failed too)."""
        self.prewarms_open -= 1
        fut: asyncio.Future = asyncio.get_running_loop().create_future()
        self._claims.append(fut)
        try:
            return await fut
        except asyncio.CancelledError:
            if fut in self._claims:             # nobody handed us one: the pre-warm is free again
                self._claims.remove(fut)
                self.prewarms_open += 1
            elif fut.done() and not fut.cancelled() and fut.result() is not None:
                self._park(fut.result(), float("inf"))
            raise

    def _hand_over(self, sb: Sandbox | None) -> bool:
        """Give a finished pre-warm (or its failure, None) to the oldest waiting request."""
        while self._claims:
            fut = self._claims.popleft()
            if not fut.done():
                fut.set_result(sb)
                return True
        self.prewarms_open = max(0, self.prewarms_open - 1)
        return False

    async def _prewarm_one(self, until: float) -> None:
        sb = None
        try:
            sb = await self._start_sandbox(speculative=until != float("inf"))   # the provisioned floor is not a guess
        except (StartError, Throttled) as exc:
            log.info("pre-warm of %s/%s not started: %s", self.endpoint, self.spec.name, exc)
        except asyncio.CancelledError:
            self._hand_over(None)
            raise
        except Exception:  # noqa: BLE001 - whatever broke, a request waiting for this pre-warm must hear
            log.exception("pre-warm of %s/%s failed", self.endpoint, self.spec.name)
        if sb is None or self.draining:
            self._hand_over(None)
            if sb is not None:
                await sb.destroy("pool drained")
            return
        if not self._hand_over(sb):
            self._park(sb, until)

    def _park(self, sb: Sandbox, until: float) -> None:
        slot = self.slots.get(sb.id)
        if slot is None:                        # died on its way here
            return
        now = self.manager.clock.now()
        self.idle.insert(0, slot)
        slot.idle_since, slot.expire_at, slot.last_used = now, until, now

    def zygote_due(self, now: float) -> bool:
        """Whether this pool, empty, should let its bundle's model zygote go now (once)."""
        return (self.empty and not self.zygote_released
                and (self.zygote_until is None or now >= self.zygote_until))

    def evictable(self) -> list[Candidate]:
        """Idle sandboxes beyond the provisioned floor, as eviction candidates."""
        spare = max(0, len(self.slots) - self.spec.provisioned)
        by_age = sorted(self.idle, key=lambda slot: slot.last_used)
        return [Candidate(slot.sandbox.id, self.endpoint, slot.last_used, self.spec.memory_mb)
                for slot in by_age[:spare]]

    async def drain(self) -> None:
        self.draining = True
        for task in list(self._background):
            task.cancel()
        while self._claims:                     # requests waiting for a pre-warm start their own (or fail)
            fut = self._claims.popleft()
            if not fut.done():
                fut.set_result(None)
        self.prewarms_open = 0
        idle, self.idle = self.idle, []
        for slot in idle:
            self.idle_ended(slot)
        for slot in idle:
            await slot.sandbox.destroy("pool drained")

    async def close(self) -> None:
        await self.drain()
        for slot in list(self.slots.values()):
            await slot.sandbox.destroy("gateway stopping")

    def snapshot(self, measure: bool = True) -> dict:
        """The pool as describe and the metrics show it; without ``measure`` each sandbox's
        ``memory_bytes`` is left None (reading it touches cgroup files: ``PoolManager.measured``)."""
        states: dict[str, int] = {}
        sandboxes = []
        now = self.manager.clock.now()
        for slot in self.slots.values():
            sb, expire = slot.sandbox, slot.expire_at
            states[sb.state.value] = states.get(sb.state.value, 0) + 1
            sandboxes.append({
                "expires_in_s": None if expire is None else round(expire - now, 3),
                "id": sb.id, "state": sb.state.value, "pid": sb.facts.pid,
                "start_path": sb.facts.path, "start_ms": sb.facts.start_ms,
                "load_ms": sb.facts.load_ms, "timings": sb.facts.timings,
                "protections": sb.facts.protections,
                "memory_bytes": sb.memory_bytes() if measure else None, "memory_cap_bytes": sb.spec.memory_mb << 20,
            })
        states["starting"] = self.starting
        return {
            "endpoint": self.endpoint, "variant": self.spec.name, "memory_mb": self.spec.memory_mb,
            "bundle_version": self.spec.bundle_version, "draining": self.draining,
            "vcpus": self.manager.vcpus(self.spec),
            "in_flight": self.admission.in_flight, "max_concurrency": self.admission.max_concurrency,
            "provisioned": self.spec.provisioned, "cold_starts": self.cold_starts,
            "states": states, "sandboxes": sandboxes, "last_failure": self.last_failure,
            "prewarm_windows": [(round(a - now, 3), round(b - now, 3)) for a, b, _ in self.prewarm_windows],
            "policy": dict(self.manager.policy.belief(self.traffic), name=self.manager.policy.name),
        }
