"""Asynchronous inference's metrics, under the names SageMaker publishes them by (CloudWatch's
``AWS/SageMaker`` namespace), prefixed ``slimserve_async_``:

- gauges per endpoint, read at scrape time from the workers' last look at the queue:
  ApproximateBacklogSize, ApproximateBacklogSizePerInstance, ApproximateAgeOfOldestRequest
  (seconds), HasBacklogWithoutCapacity (1 while requests wait and no instance runs);
- per endpoint and variant, fed as requests end: TimeInBacklog and TotalProcessingTime
  (histograms, seconds), InvocationsProcesssed (SageMaker's spelling) and InvocationFailures;
- per endpoint: ExpiredRequests (dropped at their RequestTTLSeconds);
- slimserve_async_notifications_total{result}: SNS / HTTP notifications sent, failed, dropped, refused.
"""
from __future__ import annotations

from prometheus_client import Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

BACKLOG_BUCKETS = (0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 900, 1800, 3600, 7200, 21600)
P = "slimserve_async_"


class AsyncMetrics:
    def __init__(self, registry, workers):
        self.workers = workers
        self.time_in_backlog = Histogram(P + "TimeInBacklog_seconds", "Time a request waited in the queue",
                                         ["endpoint", "variant"], buckets=BACKLOG_BUCKETS, registry=registry)
        self.total_time = Histogram(P + "TotalProcessingTime_seconds",
                                    "From the request's receipt to its output (or error) written",
                                    ["endpoint", "variant"], buckets=BACKLOG_BUCKETS, registry=registry)
        self.processed = Counter(P + "InvocationsProcesssed", "Requests whose output was written",
                                 ["endpoint", "variant"], registry=registry)
        self.failures = Counter(P + "InvocationFailures", "Requests that ended on the failure path",
                                ["endpoint", "variant"], registry=registry)
        registry.register(_BacklogCollector(workers))

    def ended(self, endpoint: str, variant: str | None, ok: bool, backlog_s: float, total_s: float) -> None:
        v = variant or "-"
        (self.processed if ok else self.failures).labels(endpoint, v).inc()
        self.time_in_backlog.labels(endpoint, v).observe(max(0.0, backlog_s))
        self.total_time.labels(endpoint, v).observe(max(0.0, total_s))


class _BacklogCollector:
    def __init__(self, workers):
        self.workers = workers

    def collect(self):
        size = GaugeMetricFamily(P + "ApproximateBacklogSize", "Requests queued or running", labels=["endpoint"])
        per = GaugeMetricFamily(P + "ApproximateBacklogSizePerInstance", "Backlog over the instances running",
                                labels=["endpoint"])
        age = GaugeMetricFamily(P + "ApproximateAgeOfOldestRequest", "Seconds the oldest queued request has waited",
                                labels=["endpoint"])
        none = GaugeMetricFamily(P + "HasBacklogWithoutCapacity", "1 while requests wait and no instance runs",
                                 labels=["endpoint"])
        expired = CounterMetricFamily(P + "ExpiredRequests", "Requests dropped at their RequestTTLSeconds",
                                      labels=["endpoint"])
        for g in self.workers.gauges():
            e = [g["endpoint"]]
            size.add_metric(e, g["backlog"])
            per.add_metric(e, g["backlog_per_instance"])
            age.add_metric(e, g["oldest_age_s"])
            none.add_metric(e, 1 if g["without_capacity"] else 0)
        for endpoint, n in sorted(self.workers.queue.counters.expired.items()):
            expired.add_metric([endpoint], n)
        sent = CounterMetricFamily("slimserve_async_notifications", "Notifications by result (sent, failed after "
                                   "retries, dropped with the queue full, refused: host not allowed)",
                                   labels=["result"])
        if self.workers.notifier is not None:
            for result, n in sorted(self.workers.notifier.counts.items()):
                sent.add_metric([result], n)
        yield from (size, per, age, none, expired, sent)
