"""The multi-model pool on fake sandboxes (memory accounted by the fake), a fake source and a
fake clock: least-recently-used unloads, stale versions, a disabled cache, a model past its tier."""
import asyncio

import pytest

from gateway import errors
from gateway.clock import FakeClock
from gateway.config import Settings
from gateway.domain import VariantSpec
from gateway.multimodel.source import Archive, Version
from gateway.pools.admission import HostBudget
from gateway.pools.manager import PoolManager
from gateway.pools.policy import FixedKeepAlive
from runtime.sandbox import OUT_OF_MEMORY, LoadResult, State, oom_message
from tests.fakes import FakeBackend, FakeSandbox

MB = 1 << 20
BASE = 50 * MB                  # what a fake sandbox holds with no model


class ModelSandbox(FakeSandbox):
    """Holds what it is told to load; a model's size is its archive's text (MB); "OOM" dies."""

    def __init__(self, spec, listeners):
        super().__init__(spec, listeners)
        self.models: dict[str, int] = {}
        self.unloaded: list[str] = []

    def memory_bytes(self) -> int:
        return BASE + sum(self.models.values())

    async def load_model(self, key, kind, archive, timeout_s):
        self._move(State.BUSY)
        if archive == b"OOM":
            self._mark_dead("out of memory")
            return LoadResult(False, error_kind=OUT_OF_MEMORY, message=oom_message(1024, while_loading=True))
        self.models[key] = int(archive) * MB
        self._move(State.IDLE)
        return LoadResult(True, load_ms=1.0, memory_bytes=int(archive) * MB)

    async def unload_model(self, key, timeout_s):
        self.models.pop(key, None)
        self.unloaded.append(key)
        return True


class ModelBackend(FakeBackend):
    async def start(self, spec):
        sb = ModelSandbox(spec, self.listeners)
        self.started.append(sb)
        return sb


class FakeSource:
    url = "s3://fake/"

    def __init__(self):
        self.objects: dict[str, tuple[str, int]] = {}       # target -> (tag, size in MB, or -1: OOM)

    async def version(self, target):
        if target not in self.objects:
            raise errors.Invalid(f"Could not find target model {target}")
        tag, _ = self.objects[target]
        return Version(target, tag, f"m{abs(hash((target, tag))):x}"[:20], f"s3://fake/{target}", False)


class FakeArchives:
    def __init__(self, source):
        self.source = source

    async def prepared(self, source, v, limits, code, program):
        size = self.source.objects[v.target][1]
        return Archive(v.key, "pickle", b"OOM" if size < 0 else str(size).encode(), 0.0)


class FakeModels:
    def __init__(self):
        self.settings = Settings(model_load_wait_s=5.0)
        self.src = FakeSource()
        self.archives = FakeArchives(self.src)

    def source(self, spec, clock):
        return self.src


def run(coro):
    return asyncio.run(coro)


async def make_pool(tmp_path, cache=True, max_concurrency=4):
    backend, models = ModelBackend(), FakeModels()
    manager = PoolManager(backend, HostBudget(100_000), FakeClock(), tmp_path, policy=FixedKeepAlive(600),
                          multi_models=models)
    backend.listeners.append(manager.on_sandbox_event)
    spec = VariantSpec(memory_mb=1024, max_concurrency=max_concurrency, bundle_kind="multi-model",
                       bundle_dir=str(tmp_path), model_prefix="s3://fake/", model_cache=cache)
    await manager.configure("mme", [spec])
    return manager.pool("mme", "AllTraffic"), models.src, backend


async def call(pool, target):
    lease = await pool.acquire(target=target)
    try:
        return lease.sandbox, lease.model
    finally:
        await pool.release(lease)


def test_a_full_sandbox_unloads_its_least_recently_used_model_first(tmp_path):
    async def go():
        pool, src, backend = await make_pool(tmp_path)
        src.objects = {"a.pkl": ("1", 300), "b.pkl": ("1", 300), "c.pkl": ("1", 300)}
        sb, _ = await call(pool, "a.pkl")
        await call(pool, "b.pkl")
        pool.manager.clock.advance(1)
        await call(pool, "b.pkl")                       # a is now the least recently used
        sb3, _ = await call(pool, "c.pkl")              # 50 + 900 MB is past 1024 - 102 MB of headroom ...
        assert sb3 is sb and len(backend.started) == 1
        assert [pool.held[sb.id].models[k].target for k in sb.models] == ["b.pkl", "c.pkl"]
        assert len(sb.unloaded) == 1                    # ... so a went
        assert pool.stats.hits == 1 and pool.stats.loads == 3 and pool.stats.unloads == 1
    run(go())


def test_a_new_version_is_loaded_and_the_old_one_unloaded(tmp_path):
    async def go():
        pool, src, _ = await make_pool(tmp_path)
        src.objects = {"a.pkl": ("v1", 10)}
        sb, old = await call(pool, "a.pkl")
        src.objects = {"a.pkl": ("v2", 10)}
        sb2, new = await call(pool, "a.pkl")
        assert new != old
        for _ in range(5):
            await asyncio.sleep(0)                       # the sweep of stale versions runs
        assert old not in sb.models and new in sb2.models
        src.objects = {}
        with pytest.raises(errors.Invalid, match="a.pkl"):
            await call(pool, "a.pkl")
        for _ in range(5):
            await asyncio.sleep(0)
        assert not sb2.models and pool.admission.in_flight == 0
    run(go())


def test_with_the_cache_disabled_each_model_goes_after_its_call(tmp_path):
    async def go():
        pool, src, _ = await make_pool(tmp_path, cache=False)
        src.objects = {"a.pkl": ("1", 10)}
        sb, key = await call(pool, "a.pkl")
        assert not sb.models and sb.unloaded == [key] and pool.loaded() == []
    run(go())


def test_a_model_past_its_tier_is_tried_alone_once_then_refused_without_a_load(tmp_path):
    async def go():
        pool, src, backend = await make_pool(tmp_path)
        src.objects = {"small.pkl": ("1", 10), "hog.pkl": ("1", -1)}
        first, _ = await call(pool, "small.pkl")
        for _ in range(2):                              # beside small.pkl, then alone in a new sandbox
            with pytest.raises(errors.ModelFailed, match="exceeded its memory tier"):
                await call(pool, "hog.pkl")
        started = len(backend.started)
        with pytest.raises(errors.ModelFailed, match="exceeded its memory tier"):
            await call(pool, "hog.pkl")
        assert len(backend.started) == started         # refused: no sandbox spent on it
        sb, _ = await call(pool, "small.pkl")          # the rest serves (reloaded where it died)
        assert sb.alive and not first.alive and pool.admission.in_flight == 0
    run(go())


def test_a_request_without_a_target_or_with_a_bad_one_is_refused(tmp_path):
    async def go():
        pool, src, _ = await make_pool(tmp_path)
        with pytest.raises(errors.Invalid, match="multi-model endpoint"):
            await pool.acquire(target=None)
        with pytest.raises(errors.Invalid, match="inside"):
            await pool.acquire(target="../x.pkl")
        assert pool.admission.in_flight == 0
    run(go())
