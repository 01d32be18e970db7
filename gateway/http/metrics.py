"""Prometheus metrics.  Counters and histograms are fed by usage records (the
meter's listeners); gauges about sandboxes are read from pool snapshots at
scrape time, so they cannot drift from the pools themselves."""
from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, SummaryMetricFamily

from gateway.domain import UsageRecord

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


class Metrics:
    def __init__(self, manager=None, cache=None):
        self.manager = manager
        self.cache = cache                # the model cache (data.cache.ModelCache), or None
        r = self.registry = CollectorRegistry()
        self.invocations = Counter("slimserve_invocations", "Invocations by outcome",
                                   ["endpoint", "variant", "status"], registry=r)
        self.errors = Counter("slimserve_invocation_errors", "Failed invocations by kind",
                              ["endpoint", "variant", "kind"], registry=r)
        self.rejected = Counter("slimserve_rejected_requests", "Requests refused before routing",
                                ["code"], registry=r)
        self.cold_starts = Counter("slimserve_cold_starts", "Invocations that started a sandbox",
                                   ["endpoint", "variant"], registry=r)
        self.model_latency = Histogram("slimserve_model_latency_seconds", "Run time inside the sandbox",
                                       ["endpoint", "variant"], buckets=LATENCY_BUCKETS, registry=r)
        self.overhead_latency = Histogram("slimserve_overhead_latency_seconds",
                                          "Gateway time besides model run and cold start",
                                          ["endpoint", "variant"], buckets=LATENCY_BUCKETS, registry=r)
        self.model_setup = Histogram("slimserve_model_setup_seconds", "Cold start: sandbox start and model load",
                                     ["endpoint", "path"], buckets=LATENCY_BUCKETS, registry=r)
        self.setup_phase = Histogram("slimserve_cold_start_phase_seconds",
                                     "Cold start phases (fork, cgroup, netns, load, first predict) by start path",
                                     ["path", "phase"], buckets=LATENCY_BUCKETS, registry=r)
        self._pools: list[dict] | None = None
        r.register(_PoolCollector(self))
        if cache is not None:
            r.register(_CacheCollector(cache))

    def observe(self, rec: UsageRecord) -> None:
        self.invocations.labels(rec.endpoint, rec.variant, rec.status).inc()
        if rec.status != "ok":
            self.errors.labels(rec.endpoint, rec.variant, rec.error_kind or rec.status).inc()
        if rec.model_ms > 0:
            self.model_latency.labels(rec.endpoint, rec.variant).observe(rec.model_ms / 1000.0)
        self.overhead_latency.labels(rec.endpoint, rec.variant).observe(rec.overhead_ms / 1000.0)
        if rec.cold_start:
            path = rec.start_path or "unknown"
            self.cold_starts.labels(rec.endpoint, rec.variant).inc()
            self.model_setup.labels(rec.endpoint, path).observe(rec.init_ms / 1000.0)
            for phase, ms in (rec.init_detail or {}).items():
                if phase.endswith("_ms") and phase != "total_ms":
                    self.setup_phase.labels(path, phase[:-3]).observe(ms / 1000.0)

    def request_rejected(self, code: str) -> None:
        self.rejected.labels(code).inc()

    def render(self, pools: list[dict] | None = None) -> bytes:
        """The exposition text; ``pools`` is ``PoolManager.measured()`` (else measured here, on this thread)."""
        self._pools = pools
        try:
            return generate_latest(self.registry)
        finally:
            self._pools = None


class _PoolCollector:
    def __init__(self, metrics: Metrics):
        self.metrics = metrics

    def collect(self):
        sandboxes = GaugeMetricFamily("slimserve_sandboxes", "Live sandboxes by memory tier and state",
                                      labels=["tier_mb", "state"])
        used = GaugeMetricFamily("slimserve_sandbox_memory_bytes", "Memory held by an endpoint's sandboxes",
                                 labels=["endpoint", "variant"])
        cap = GaugeMetricFamily("slimserve_sandbox_memory_cap_bytes", "Sum of the caps of an endpoint's sandboxes",
                                labels=["endpoint", "variant"])
        budget = GaugeMetricFamily("slimserve_host_memory_budget_bytes", "Host memory budget and reserved part",
                                   labels=["kind"])
        mgr = self.metrics.manager
        if mgr is not None:
            counts: dict[tuple[str, str], int] = {}
            per_pool: dict[tuple[str, str], list[int]] = {}
            pools = self.metrics._pools
            for pool in mgr.snapshot() if pools is None else pools:
                tier = str(pool["memory_mb"])
                for state, n in pool["states"].items():
                    counts[(tier, state)] = counts.get((tier, state), 0) + n
                acc = per_pool.setdefault((pool["endpoint"], pool["variant"]), [0, 0])
                for sb in pool["sandboxes"]:
                    acc[0] += sb["memory_bytes"]
                    acc[1] += sb["memory_cap_bytes"]
            for (tier, state), n in sorted(counts.items()):
                sandboxes.add_metric([tier, state], n)
            for key, (u, c) in sorted(per_pool.items()):
                used.add_metric(list(key), u)
                cap.add_metric(list(key), c)
            budget.add_metric(["capacity"], mgr.budget.capacity_mb << 20)
            budget.add_metric(["reserved"], mgr.budget.used_mb << 20)
            yield from _multi_model_metrics(mgr.snapshot() if pools is None else pools)
        yield from (sandboxes, used, cap, budget)


# SageMaker's multi-model metrics (their names and units): (name, doc, stats count, stats sum)
_MULTI_MODEL_SUMMARIES = (
    ("slimserve_ModelCacheHit", "Requests whose model was loaded already (sum) of all (count): the average is the "
                                "hit ratio", "requests", "hits"),
    ("slimserve_ModelLoadingWaitTime_microseconds", "Time requests waited for their model to be downloaded and "
                                                    "loaded", "waits", "wait_us"),
    ("slimserve_ModelLoadingTime_microseconds", "Time a sandbox took to load a model", "loads", "load_us"),
    ("slimserve_ModelUnloadingTime_microseconds", "Time a sandbox took to unload a model", "unloads", "unload_us"),
    ("slimserve_ModelDownloadingTime_microseconds", "Time reading a model's data took", "downloads", "download_us"),
)


def _multi_model_metrics(pools: list[dict]):
    """Per endpoint and variant, summed over its pools (an update's old one while it drains)."""
    acc: dict[tuple[str, str], dict[str, float]] = {}
    for pool in pools:
        mm = pool.get("multi_model")
        if mm is None:
            continue
        a = acc.setdefault((pool["endpoint"], pool["variant"]), {"loaded": 0})
        a["loaded"] += mm["loaded_models"]
        for k, v in mm["stats"].items():
            a[k] = a.get(k, 0) + v
    loaded = GaugeMetricFamily("slimserve_LoadedModelCount", "Models loaded in a multi-model endpoint's sandboxes",
                               labels=["endpoint", "variant"])
    families = [SummaryMetricFamily(name, doc, labels=["endpoint", "variant"])
                for name, doc, _, _ in _MULTI_MODEL_SUMMARIES]
    for key, a in sorted(acc.items()):
        loaded.add_metric(list(key), a["loaded"])
        for fam, (_, _, count, total) in zip(families, _MULTI_MODEL_SUMMARIES, strict=True):
            fam.add_metric(list(key), count_value=a.get(count, 0), sum_value=a.get(total, 0.0))
    yield loaded
    yield from families


class _CacheCollector:
    """The model cache's counters and size, read from its snapshot at each scrape."""

    def __init__(self, cache):
        self.cache = cache

    def collect(self):
        snap = self.cache.snapshot()
        for name, key, doc in (("hits", "hits", "Model data found in the cache"),
                               ("downloads", "downloads", "Model data objects downloaded"),
                               ("downloaded_bytes", "downloaded_bytes", "Bytes of model data downloaded"),
                               ("evictions", "evictions", "Objects evicted, least recently used first")):
            c = CounterMetricFamily(f"slimserve_model_cache_{name}", doc)
            c.add_metric([], snap[key])
            yield c
        g = GaugeMetricFamily("slimserve_model_cache_bytes", "Model cache size and capacity", labels=["kind"])
        g.add_metric(["used"], snap["used_bytes"])
        g.add_metric(["capacity"], snap["capacity_bytes"])
        yield g
