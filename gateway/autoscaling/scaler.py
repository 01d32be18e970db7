"""The loop that applies target tracking to instance variants: every ``interval_s`` (and at once
when an asynchronous backlog finds no instance), read each registered target's signals, ask
``policy.decide`` for a count, and set it through the endpoint service -- the same change as
UpdateEndpointWeightsAndCapacities, so DescribeEndpoint shows the Desired count at once and
the Current count as the sandboxes start or stop.

Signals: invocations of the last minute per variant (fed by the meter, one timestamp per usage
record) and the asynchronous backlog (from the async workers' last look at the queue).
Scaling activities are remembered in memory: a restart starts the cooldowns afresh.
"""
from __future__ import annotations

import asyncio
import logging
from collections import deque

from gateway.autoscaling import policy as tt
from gateway.autoscaling.targets import Registry, parse_tracking

log = logging.getLogger("slimserve.autoscaling")
WINDOW_S = 60.0               # SageMakerVariantInvocationsPerInstance: invocations per instance per minute
INTERVAL_S = 10.0


class AutoScaler:
    def __init__(self, registry: Registry, endpoints, clock, backlog_of, interval_s: float = INTERVAL_S,
                 on_scaled=lambda: None):
        self.registry = registry
        self.endpoints = endpoints        # serving.endpoints.EndpointService: reads specs, applies counts
        self.clock = clock
        self.backlog_of = backlog_of      # endpoint -> requests queued or running (0 for synchronous ones)
        self.interval_s = interval_s
        self.on_scaled = on_scaled        # told after a count changed (the async workers claim at once)
        self._seen: dict[tuple[str, str], deque[float]] = {}
        self._activity: dict[str, tuple[float | None, float | None]] = {}    # rid -> (last out, last in)
        self._wake = asyncio.Event()

    def observe(self, rec) -> None:
        """A meter listener: one invocation of (endpoint, variant) now.  Kept only for variants with
        a scalable target, and only for the last minute (a timestamp per invocation in it)."""
        if f"endpoint/{rec.endpoint}/variant/{rec.variant}" not in self.registry.targets:
            return
        key = (rec.endpoint, rec.variant)
        q = self._seen.get(key)
        if q is None:
            q = self._seen[key] = deque()
        now = self.clock.now()
        q.append(now)
        while q[0] < now - WINDOW_S:
            q.popleft()

    def wake(self) -> None:
        self._wake.set()

    def _per_minute(self, endpoint: str, variant: str, now: float) -> float:
        q = self._seen.get((endpoint, variant))
        if not q:
            return 0.0
        while q and q[0] < now - WINDOW_S:
            q.popleft()
        return len(q) * 60.0 / WINDOW_S

    async def run(self) -> None:
        while True:
            try:
                await self.step()
            except Exception:  # noqa: BLE001 - next round
                log.exception("autoscaling round failed")
            try:
                await asyncio.wait_for(self._wake.wait(), self.interval_s)
            except asyncio.TimeoutError:
                pass
            self._wake.clear()

    async def step(self) -> dict[str, int]:
        """One round over every target; returns the counts it changed (resource id -> count).  A
        target that fails (its endpoint changing under it) is left for the next round; the others go on."""
        changed = {}
        for rid, doc in list(self.registry.targets.items()):
            try:
                new = await self._step_one(rid, doc)
            except Exception:  # noqa: BLE001 - one target must not stop the others
                log.exception("autoscaling %s failed this round", rid)
                continue
            if new is not None:
                changed[rid] = new
        if changed:
            self.on_scaled()
        return changed

    async def _step_one(self, rid: str, doc: dict) -> int | None:
        now = self.clock.now()
        _, endpoint, _, variant = rid.split("/")
        spec = self.endpoints.specs.get(endpoint)
        v = spec.variant(variant) if spec is not None else None
        if v is None or not v.instance_type or self.endpoints.busy(endpoint):
            return None                   # gone, serverless, or being changed: not now
        # MinCapacity 0 was allowed because the endpoint was asynchronous; one recreated under the
        # same name as a synchronous endpoint keeps an instance whatever the target says.
        floor = doc["MinCapacity"] if self.registry.is_async(endpoint) else max(1, doc["MinCapacity"])
        out_at, in_at = self._activity.get(rid, (None, None))
        target = tt.Target(floor, max(floor, doc["MaxCapacity"]), v.provisioned, out_at, in_at)
        new = tt.bounded(target)
        if new is None:
            suspended = doc.get("SuspendedState") or {}
            policies = [parse_tracking(p["TargetTrackingScalingPolicyConfiguration"])
                        for p in self.registry.policies.get(rid, {}).values()]
            signals = tt.Signals(self._per_minute(endpoint, variant, now), self.backlog_of(endpoint))
            new = tt.decide(policies, signals, target, now)
            if new is not None and ((new > v.provisioned and suspended.get("DynamicScalingOutSuspended"))
                                    or (new < v.provisioned and suspended.get("DynamicScalingInSuspended"))):
                new = None
        if new is None or new == v.provisioned:
            return None
        await self.endpoints.set_variants(endpoint, {variant: {"provisioned": new, "max_concurrency": new}})
        log.info("autoscaling: %s from %d to %d instances", rid, v.provisioned, new)
        self._activity[rid] = (now, in_at) if new > v.provisioned else (out_at, now)
        return new
