"""Target tracking, the pure part: from a metric, a target and the time since the last scaling
activity, the instance count a variant should have.  No clock is read here: ``now`` is given.

Target tracking keeps a metric near its target by scaling in proportion (Application Auto
Scaling's rule): with 2 instances at 150 invocations per instance against a target of 100, the
variant wants ceil(2 x 150 / 100) = 3.  At zero instances a per-instance metric has no value;
any backlog (HasBacklogWithoutCapacity) or any traffic then asks for enough instances to bring
it to the target, at least one.

Cooldowns, as Application Auto Scaling documents them: a scale-out waits ``scale_out_cooldown_s``
after the last scale-out; a scale-in waits ``scale_in_cooldown_s`` after the last scale-in and
after the last scale-out (capacity just added is not taken back at once).  With several policies
on one target the largest count wins a scale-out, and a scale-in happens only if every policy
wants one.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

INVOCATIONS_PER_INSTANCE = "SageMakerVariantInvocationsPerInstance"
BACKLOG_PER_INSTANCE = "ApproximateBacklogSizePerInstance"
METRICS = (INVOCATIONS_PER_INSTANCE, BACKLOG_PER_INSTANCE)
DEFAULT_COOLDOWN_S = 300.0            # SageMaker variants' default, for both directions


@dataclass(frozen=True)
class TargetTracking:
    metric: str                       # one of METRICS
    target: float                     # > 0
    scale_out_cooldown_s: float = DEFAULT_COOLDOWN_S
    scale_in_cooldown_s: float = DEFAULT_COOLDOWN_S
    disable_scale_in: bool = False


@dataclass(frozen=True)
class Target:
    """A scalable target as the policy sees it."""
    min_capacity: int
    max_capacity: int
    desired: int                      # the variant's instance count now
    last_scale_out: float | None = None
    last_scale_in: float | None = None


@dataclass(frozen=True)
class Signals:
    """What the metrics say now, for one variant (totals, not per instance)."""
    invocations_per_minute: float = 0.0
    backlog: int = 0


def per_instance(policy: TargetTracking, signals: Signals, instances: int) -> float | None:
    """The policy's metric for the variant (None: undefined, at zero instances)."""
    total = signals.invocations_per_minute if policy.metric == INVOCATIONS_PER_INSTANCE else float(signals.backlog)
    return total / instances if instances > 0 else None


def wanted(policy: TargetTracking, signals: Signals, target: Target) -> int:
    """The count this policy asks for, before bounds and cooldowns."""
    total = signals.invocations_per_minute if policy.metric == INVOCATIONS_PER_INSTANCE else float(signals.backlog)
    if target.desired == 0:               # no per-instance value: any traffic or backlog asks for one
        if total > 0:
            return max(1, math.ceil(total / policy.target))
        return 1 if signals.backlog > 0 else 0
    value = per_instance(policy, signals, target.desired) or 0.0
    # a hair under exact multiples is noise of float division, not a reason to add an instance
    return math.ceil(target.desired * value / policy.target - 1e-9)


def decide(policies: list[TargetTracking], signals: Signals, target: Target, now: float) -> int | None:
    """The new instance count, or None to leave it as it is."""
    if not policies:
        return None
    lo, hi = target.min_capacity, target.max_capacity
    asks = [min(hi, max(lo, wanted(p, signals, target))) for p in policies]
    out = max(asks)
    if out > target.desired:
        cooldown = max(p.scale_out_cooldown_s for p in policies)
        if target.last_scale_out is not None and now - target.last_scale_out < cooldown and target.desired > 0:
            return None               # (from zero, a backlog never waits: nothing serves it)
        return out
    if out < target.desired:
        if any(p.disable_scale_in for p in policies) or any(a >= target.desired for a in asks):
            return None
        cooldown = max(p.scale_in_cooldown_s for p in policies)
        last = max((t for t in (target.last_scale_in, target.last_scale_out) if t is not None), default=None)
        if last is not None and now - last < cooldown:
            return None
        return out
    return None


def bounded(target: Target) -> int | None:
    """A count outside [min, max] (after RegisterScalableTarget changed them) moves to the bound."""
    if target.desired < target.min_capacity:
        return target.min_capacity
    if target.desired > target.max_capacity:
        return target.max_capacity
    return None
