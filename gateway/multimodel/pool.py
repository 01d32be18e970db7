"""A multi-model variant's pool: sandboxes (capped at the variant's memory) that each hold
several models, loaded on demand.

A request names its target model; ``acquire`` leases a sandbox that has that model's current
version loaded (a cache hit), else prepares the model (``source``), places it (``placement``:
room, least-recently-used models unloaded first, or a new sandbox) and loads it there.  A
load that takes longer than ``model_load_wait_s`` answers ModelNotReady while it goes on;
requests for a model whose load is under way wait for that load rather than start another.
Sizes are measured after each load; a model that went past the tier alone is refused until
its data changes.  Everything else (admission, the warm-pool policy, idle time, the host
budget) is the single-model pool's.
"""
from __future__ import annotations

import asyncio
import hashlib
import logging
import os
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

from gateway import errors
from gateway.multimodel import placement, targets
from gateway.multimodel.source import Archive, Archives, ModelSource, Version, locate_prefix
from gateway.pools.pool import Lease, Slot, VariantPool
from gateway.serving.bundles import Limits
from runtime.sandbox import LOAD_FAILED, OUT_OF_MEMORY, Sandbox, State, oom_message

log = logging.getLogger("slimserve.multimodel")


@dataclass
class LoadedModel:
    key: str
    target: str
    tag: str
    bytes: int
    loaded_at: float
    last_used: float


@dataclass
class Held:
    """What one sandbox of the pool holds: its models (least recently used first) and its
    memory as last measured."""
    models: OrderedDict = field(default_factory=OrderedDict)
    used_bytes: int = 0


@dataclass
class Stats:
    """SageMaker's multi-model metrics, as sums and counts (times in microseconds)."""
    requests: int = 0
    hits: int = 0
    loads: int = 0
    load_us: float = 0.0
    waits: int = 0
    wait_us: float = 0.0
    downloads: int = 0
    download_us: float = 0.0
    unloads: int = 0
    unload_us: float = 0.0
    load_failures: int = 0


class _Detached(Exception):
    """A caller stopped waiting for a load that goes on (``error``: what the caller gets)."""

    def __init__(self, error: BaseException):
        super().__init__(str(error))
        self.error = error


class MultiModels:
    """What every multi-model pool of the gateway shares: the data plane, the prepared models
    on disk and the settings that bound a load."""

    def __init__(self, settings, plane, archives: Archives):
        self.settings, self.plane, self.archives = settings, plane, archives

    def check(self, spec) -> None:
        """Refuse now a prefix this gateway could never read (Invalid)."""
        locate_prefix(self.plane, spec.model_prefix)

    def source(self, spec, clock) -> ModelSource:
        # Prepared models differ by the shared code they were given: its content names them (a
        # re-created endpoint reuses the bundle directory's name, not its code).
        return ModelSource(self.plane, spec.model_prefix, clock, self.settings.multi_model_recheck_s,
                           salt=f"{_tree_digest(spec.bundle_dir)}:{spec.env.get('SAGEMAKER_PROGRAM', '')}:"
                                f"{self.settings.max_bundle_mb or spec.memory_mb}")


def _tree_digest(root: str) -> str:
    """A digest of a (small: code only) directory's file names and contents."""
    h = hashlib.sha256()
    for dirpath, dirnames, filenames in os.walk(root or "/nonexistent"):
        dirnames.sort()
        for name in sorted(filenames):
            path = os.path.join(dirpath, name)
            h.update(os.path.relpath(path, root).encode("utf-8", "surrogatepass") + b"\0")
            with open(path, "rb") as fh:
                h.update(hashlib.sha256(fh.read()).digest())
    return h.hexdigest()[:16]


class MultiModelPool(VariantPool):
    HOLDER_WAIT_S = 0.05           # a busy holder is waited for at most this long (a request takes a few ms)
    def __init__(self, manager, endpoint, spec, admission, models: MultiModels):
        super().__init__(manager, endpoint, spec, admission)
        self.models = models
        self.settings = models.settings
        self.source = models.source(spec, manager.clock)
        self.cap_bytes = spec.memory_mb << 20
        self.limits = Limits(max_bytes=int((self.settings.max_bundle_mb or spec.memory_mb) * (1 << 20)))
        code = Path(spec.bundle_dir) / "code" if spec.bundle_dir else None
        self.code = code if code is not None and code.is_dir() else None
        self.held: dict[str, Held] = {}                 # sandbox id -> what it holds
        self.sizes: dict[str, int] = {}                 # version key -> bytes it took when last loaded
        self.too_big: dict[str, str] = {}               # version key -> why it cannot be loaded at this tier
        self.stale: set[str] = set()                    # version keys replaced or deleted at their source
        self.stats = Stats()
        self._loads: dict[str, asyncio.Future] = {}     # version key -> its load under way
        self._waiting: dict[str, int] = {}              # version key -> requests waiting for a busy holder
        self._freed = asyncio.Event()                   # set (and replaced) whenever a sandbox goes idle

    # --- the request path -------------------------------------------------
    async def acquire(self, sample=None, target: str | None = None) -> Lease:
        if target is None:
            raise errors.Invalid(f"Endpoint {self.endpoint} is a multi-model endpoint: name the model to run "
                                 "in the X-Amzn-SageMaker-Target-Model header (TargetModel).")
        target = targets.check(target)
        if self.draining:
            raise errors.NotReady(f"endpoint {self.endpoint} is being updated or deleted; retry")
        adm = self.admission
        if adm.in_flight >= adm.max_concurrency:
            raise errors.Throttled(f"endpoint {self.endpoint} variant {self.spec.name} is at its MaxConcurrency "
                                   f"of {adm.max_concurrency}")
        adm.in_flight += 1
        now = self.manager.clock.now()
        self.traffic.arrive(now)
        self.stats.requests += 1
        try:
            return await self._lease_for(target, now)
        except _Detached as exc:       # its load goes on and keeps this request's place until it lands
            raise exc.error from None
        except BaseException:
            adm.in_flight -= 1
            raise

    async def _lease_for(self, target: str, t0: float) -> Lease:
        clock = self.manager.clock
        deadline = t0 + self.settings.model_load_wait_s
        while True:
            try:
                version = await self.source.version(target)
            except errors.Invalid:
                self._retire_target(target, None)
                raise
            self._retire_target(target, version.key)
            if version.key in self.too_big:
                raise errors.ModelFailed(OUT_OF_MEMORY, self.too_big[version.key], 500)
            slot = self._idle_holder(version.key)
            if slot is None and self._waiting.get(version.key, 0) < self._busy_holders(version.key):
                slot = await self._wait_for_holder(version.key)
            if slot is not None:
                self.stats.hits += 1
                return Lease(slot.sandbox, self, cold=False, model=version.key)
            left = deadline - clock.now()
            under_way = self._loads.get(version.key)
            if under_way is not None:             # someone is loading it: wait for that, then look again
                try:
                    await asyncio.wait_for(asyncio.shield(under_way), max(0.0, left))
                except asyncio.TimeoutError:
                    raise self._not_ready(target) from None
                except Exception:  # noqa: BLE001 - that load's own caller got its error; try ours
                    pass
                continue
            task = asyncio.ensure_future(self._load(version))
            self._loads[version.key] = task
            task.add_done_callback(lambda _t, k=version.key: self._loads.pop(k, None))
            try:
                slot, cold, init_ms = await asyncio.wait_for(asyncio.shield(task), max(0.0, left))
            except (asyncio.TimeoutError, asyncio.CancelledError) as exc:
                task.add_done_callback(self._park_late)   # it lands in an idle sandbox for the next request
                raise _Detached(exc if isinstance(exc, asyncio.CancelledError) else self._not_ready(target)) \
                    from None
            self.stats.waits += 1
            self.stats.wait_us += (clock.now() - t0) * 1e6
            return Lease(slot.sandbox, self, cold=cold, init_ms=init_ms, model=version.key)

    def _not_ready(self, target: str) -> errors.NotReady:
        return errors.NotReady(f"Model {target} is still being downloaded or loaded into endpoint {self.endpoint} "
                               f"after {self.settings.model_load_wait_s:g} s; the load goes on: retry shortly.")

    def _busy_holders(self, key: str) -> int:
        return sum(1 for sid, held in self.held.items()
                   if key in held.models and sid in self.slots and self.slots[sid] not in self.idle)

    async def _wait_for_holder(self, key: str) -> Slot | None:
        """Every sandbox that holds ``key`` is busy, and fewer requests wait for them than there
        are: wait (at most ``HOLDER_WAIT_S``) for one rather than load the model again elsewhere.
        A model whose requests queue up past its holders gets loaded into another sandbox."""
        clock = self.manager.clock
        until = clock.now() + self.HOLDER_WAIT_S
        self._waiting[key] = self._waiting.get(key, 0) + 1
        try:
            while (left := until - clock.now()) > 0:
                freed = self._freed
                try:
                    await asyncio.wait_for(freed.wait(), left)
                except asyncio.TimeoutError:
                    return None
                slot = self._idle_holder(key)
                if slot is not None:
                    return slot
            return None
        finally:
            self._waiting[key] -= 1
            if not self._waiting[key]:
                del self._waiting[key]

    def _tell_freed(self) -> None:
        freed, self._freed = self._freed, asyncio.Event()
        freed.set()

    def _idle_holder(self, key: str) -> Slot | None:
        holders = [s for s in self.idle if s.sandbox.state is State.IDLE and key in self._held(s.sandbox.id).models]
        if not holders:
            return None
        slot = max(holders, key=lambda s: self._held(s.sandbox.id).models[key].last_used)
        self.take(slot)
        return slot

    def _held(self, sid: str) -> Held:
        held = self.held.get(sid)
        if held is None:
            held = self.held[sid] = Held()
        return held

    async def release(self, lease: Lease) -> None:
        sb, key = lease.sandbox, lease.model
        held = self.held.get(sb.id)
        if held is not None and key in held.models:
            held.models[key].last_used = self.manager.clock.now()
            held.models.move_to_end(key)
            if not self.spec.model_cache and sb.state is State.IDLE:      # ModelCacheSetting: Disabled
                await self._unload(sb, held, key)
            if sb.state is State.IDLE:
                held.used_bytes = await asyncio.to_thread(sb.memory_bytes)
        await super().release(lease)
        self._tell_freed()

    # --- loading ----------------------------------------------------------
    async def _load(self, version: Version) -> tuple[Slot, bool, float]:
        """Prepare ``version``, place it, load it: (the slot, now out of the idle list, whether a
        sandbox was started for it, ms the start and load took)."""
        clock = self.manager.clock
        try:
            archive = await self.models.archives.prepared(    # the shared code carries its entry shim already
                self.source, version, self.limits, self.code,
                None if self.code is not None else self.spec.env.get("SAGEMAKER_PROGRAM"))
        except errors.BundleRejected as exc:
            self.stats.load_failures += 1
            raise errors.ModelFailed(LOAD_FAILED, f"Target model {version.target} cannot be loaded: {exc.message}",
                                     500) from None
        if archive.download_ms > 0:
            self.stats.downloads += 1
            self.stats.download_us += archive.download_ms * 1000.0
        t0 = clock.now()
        need = placement.estimate(len(archive.data), self.sizes.get(version.key))
        choice = self._choose(version.key, need)
        if choice.sandbox_id is None and self.slots:
            # Every sandbox is busy: one that frees up within what a start would take is better
            # than a new one, which would start empty (and be let go with what it loaded).
            until = clock.now() + self._start_s()
            while choice.sandbox_id is None and (left := until - clock.now()) > 0:
                freed = self._freed
                try:
                    await asyncio.wait_for(freed.wait(), left)
                except asyncio.TimeoutError:
                    break
                choice = self._choose(version.key, need)
        cold = choice.sandbox_id is None
        if cold:
            try:
                sb = await self._start_sandbox()
            except errors.Throttled:
                # No memory for a sandbox of its own: a pre-warm already starting will do.
                sb = await self._claim_prewarm() if self.prewarms_open > 0 else None
                if sb is None:
                    raise
            self.cold_starts += 1
            slot = self.slots[sb.id]
        else:
            slot = self.slots[choice.sandbox_id]
            self.take(slot)
        try:
            if choice.hit:                        # another load put it here meanwhile
                return slot, cold, (clock.now() - t0) * 1000.0
            held = self._held(slot.sandbox.id)
            for k in [k for k in held.models if k in self.stale] + list(choice.evict):
                if k in held.models and slot.sandbox.state is State.IDLE:
                    await self._unload(slot.sandbox, held, k)
            await self._load_into(slot.sandbox, held, version, archive)
        except BaseException:
            self._give_back(slot)
            raise
        return slot, cold, (clock.now() - t0) * 1000.0

    def _choose(self, key: str, need: int) -> placement.Choice:
        return placement.choose([self._view(s) for s in self.idle if s.sandbox.state is State.IDLE], key, need)

    def _start_s(self) -> float:
        """What starting a sandbox of this pool takes: its sandboxes' own start times (median)."""
        starts = sorted(s.sandbox.facts.start_ms for s in self.slots.values() if s.sandbox.facts.start_ms)
        return starts[len(starts) // 2] / 1000.0 if starts else 0.0

    async def _load_into(self, sb: Sandbox, held: Held, version: Version, archive: Archive) -> None:
        had_others = bool(held.models)
        res = await sb.load_model(version.key, archive.kind, archive.data, self.settings.start_timeout_s)
        if res.ok:
            now = self.manager.clock.now()
            held.models[version.key] = LoadedModel(version.key, version.target, version.tag, res.memory_bytes,
                                                   now, now)
            held.used_bytes = await asyncio.to_thread(sb.memory_bytes)
            self.sizes[version.key] = res.memory_bytes
            self.stats.loads += 1
            self.stats.load_us += res.load_ms * 1000.0
            await self._shed(sb, held, keep=version.key)
            if len(self.sizes) > 100_000:
                for k in list(self.sizes)[:10_000]:
                    del self.sizes[k]
            return
        self.stats.load_failures += 1
        if res.error_kind == OUT_OF_MEMORY:
            if had_others:                        # next time alone in a sandbox: it may fit there
                self.sizes[version.key] = self.cap_bytes
            else:
                self.too_big[version.key] = oom_message(self.spec.memory_mb, while_loading=True)
                if len(self.too_big) > 10_000:            # bounded: the oldest verdicts go first
                    del self.too_big[next(iter(self.too_big))]
            raise errors.ModelFailed(OUT_OF_MEMORY, oom_message(self.spec.memory_mb, while_loading=True), 500)
        raise errors.ModelFailed(res.error_kind or LOAD_FAILED,
                                 f"Target model {version.target} failed to load: {res.message}", 500)

    async def _shed(self, sb: Sandbox, held: Held, keep: str) -> None:
        """A load placed by an estimate may leave the sandbox past its headroom once measured:
        its least recently used other models go until it is not."""
        limit = self.cap_bytes - placement.headroom_for(self.cap_bytes)
        while held.used_bytes > limit and sb.state is State.IDLE:
            victim = next((k for k in held.models if k != keep), None)
            if victim is None:
                return
            await self._unload(sb, held, victim)

    async def _unload(self, sb: Sandbox, held: Held, key: str) -> None:
        clock = self.manager.clock
        t0 = clock.now()
        held.models.pop(key, None)
        await sb.unload_model(key, self.settings.start_timeout_s)
        self.stats.unloads += 1
        self.stats.unload_us += (clock.now() - t0) * 1e6
        if sb.state is State.IDLE:
            held.used_bytes = await asyncio.to_thread(sb.memory_bytes)

    def _view(self, slot: Slot) -> placement.SandboxView:
        held = self._held(slot.sandbox.id)
        models = tuple(placement.Loaded(m.key, float("-inf") if m.key in self.stale else m.last_used, m.bytes)
                       for m in held.models.values())
        return placement.SandboxView(slot.sandbox.id, self.cap_bytes, held.used_bytes, models)

    def _give_back(self, slot: Slot) -> None:
        """A slot taken for a load goes back to the idle list (if its sandbox lives)."""
        sb = slot.sandbox
        if sb.id in self.slots and sb.state is State.IDLE and not self.draining and slot not in self.idle:
            now = self.manager.clock.now()
            slot.idle_since, slot.last_used = now, now
            slot.expire_at = self.manager.policy.plan(self.traffic, 0, now).expire_at
            self.idle.append(slot)
            self._tell_freed()
        elif sb.alive and self.draining:
            asyncio.get_running_loop().create_task(sb.destroy("pool drained"))

    def _park_late(self, task: asyncio.Future) -> None:
        """A load whose caller stopped waiting: its sandbox, model loaded, goes back to idle, and
        the place in MaxConcurrency it held is free (so detached loads cannot pile up past it)."""
        self.admission.in_flight -= 1
        if task.cancelled() or task.exception() is not None:
            return
        slot, _cold, _ms = task.result()
        self._give_back(slot)

    # --- versions that went away ---------------------------------------------
    def _retire_target(self, target: str, current: str | None) -> None:
        """Loaded versions of ``target`` other than ``current`` (None: it is gone) are stale: they
        are unloaded from idle sandboxes now, and first to go from busy ones."""
        found = False
        for held in self.held.values():
            for m in held.models.values():
                if m.target == target and m.key != current and m.key not in self.stale:
                    self.stale.add(m.key)
                    found = True
        if found:
            task = asyncio.get_running_loop().create_task(self._sweep_stale())
            self._background.add(task)
            task.add_done_callback(self._background.discard)

    async def _sweep_stale(self) -> None:
        for slot in [s for s in self.idle if s.sandbox.state is State.IDLE]:
            held = self._held(slot.sandbox.id)
            doomed = [k for k in held.models if k in self.stale]
            if not doomed or slot not in self.idle:
                continue
            self.take(slot)
            try:
                for k in doomed:
                    if slot.sandbox.state is State.IDLE:
                        await self._unload(slot.sandbox, held, k)
            finally:
                self._give_back(slot)
        live = {k for h in self.held.values() for k in h.models}
        self.stale &= live

    # --- lifecycle and views ------------------------------------------------
    def forget(self, sb: Sandbox) -> None:
        self.held.pop(sb.id, None)
        super().forget(sb)

    def loaded(self) -> list[dict]:
        """Every model loaded now: target, version, which sandboxes hold it, bytes, last use."""
        now, wall = self.manager.clock.now(), self.manager.clock.wall()
        by_key: dict[str, dict] = {}
        for sid, held in self.held.items():
            for m in held.models.values():
                doc = by_key.setdefault(m.key, {
                    "target_model": m.target, "version": m.tag, "stale": m.key in self.stale,
                    "sandboxes": [], "memory_bytes": 0, "loaded_at": wall - (now - m.loaded_at),
                    "last_used": wall - (now - m.last_used)})
                doc["sandboxes"].append(sid)
                doc["memory_bytes"] += m.bytes
                doc["loaded_at"] = min(doc["loaded_at"], wall - (now - m.loaded_at))
                doc["last_used"] = max(doc["last_used"], wall - (now - m.last_used))
        return sorted(by_key.values(), key=lambda d: d["target_model"])

    def snapshot(self, measure: bool = True) -> dict:
        doc = super().snapshot(measure)
        for sb in doc["sandboxes"]:
            held = self.held.get(sb["id"])
            sb["models"] = [m.target for m in held.models.values()] if held else []
        doc["multi_model"] = {
            "prefix": self.source.url, "cache": self.spec.model_cache,
            "loaded_models": sum(len(h.models) for h in self.held.values()),
            "stats": dict(vars(self.stats)),
        }
        return doc
