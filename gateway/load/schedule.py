"""Arrival schedules for ``slimserve load``: pure functions of their parameters and seed.

Each returns offsets in seconds from the start of a run.  A profile is a list of
knots (seconds, planned req/s) with the rate linear between them; arrivals fall
where the cumulative planned count crosses a whole number, or, with
``poisson=True``, form a Poisson process of the same rate.
"""
from __future__ import annotations

import math
import random
from dataclasses import dataclass
from itertools import pairwise
from typing import Callable, Iterable

Knot = tuple[float, float]     # (seconds from start, planned req/s); the rate is linear between knots


class UsageError(Exception):
    """A mistake in the command line or its inputs: one line on stderr, exit 2."""


@dataclass(frozen=True)
class BurstShape:
    base: float = 1.0          # req/s before and after the spike
    peak: float = 50.0         # req/s at the top
    before_s: float = 10.0     # at the base rate, before the ramp
    ramp_s: float = 5.0        # base -> peak, linearly
    hold_s: float = 15.0       # at the peak
    ramp_down_s: float = 1.0   # peak -> base, linearly (0: a step down)
    after_s: float = 10.0      # at the base rate, after the spike

    def knots(self) -> list[Knot]:
        pts = [(0.0, self.base)]
        t = 0.0
        for length, rate in ((self.before_s, self.base), (self.ramp_s, self.peak), (self.hold_s, self.peak),
                             (self.ramp_down_s, self.base), (self.after_s, self.base)):
            t += length
            pts.append((t, rate))
        return pts

    def phases(self) -> list[tuple[str, float, float]]:
        """(name, start_s, end_s) of each phase."""
        out, t = [], 0.0
        for name, length in (("before", self.before_s), ("ramp", self.ramp_s), ("hold", self.hold_s),
                             ("ramp_down", self.ramp_down_s), ("after", self.after_s)):
            out.append((name, t, t + length))
            t += length
        return out


def _validate_knots(knots: list[Knot]) -> None:
    if len(knots) < 2:
        raise ValueError("a rate profile needs at least two knots")
    for (t0, _r0), (t1, _r1) in pairwise(knots):
        if t1 < t0:
            raise ValueError("rate profile knots must be in time order")
    if any(r < 0 or not math.isfinite(r) for _, r in knots):
        raise ValueError("rates must be finite and >= 0")


def profile_total(knots: list[Knot]) -> float:
    """Planned arrivals over the whole profile: the integral of the rate."""
    return sum((r0 + r1) / 2.0 * (t1 - t0) for (t0, r0), (t1, r1) in pairwise(knots))


def profile_offsets(knots: list[Knot], *, poisson: bool = False, seed: int | None = None) -> list[float]:
    """Arrival offsets (seconds, ascending) of a piecewise-linear rate profile.

    Even arrivals are the times where the cumulative rate Λ(t) reaches 0, 1, 2, ...
    (so ``[(0, 10), (3, 10)]`` gives 30 arrivals at 0.0, 0.1, ..., 2.9).  Poisson
    arrivals are the same inversion applied to partial sums of Exp(1) draws (time
    rescaling of a unit-rate Poisson process), reproducible for a given ``seed``.
    """
    _validate_knots(knots)
    total = profile_total(knots)
    if poisson:
        rng = random.Random(seed)
        targets, y = [], rng.expovariate(1.0)
        while y < total:
            targets.append(y)
            y += rng.expovariate(1.0)
    else:
        targets = list(range(math.ceil(total - 1e-9)))
    return _invert(knots, targets)


def _invert(knots: list[Knot], targets: list[float]) -> list[float]:
    """The times at which Λ reaches each of the ascending ``targets``."""
    out: list[float] = []
    segs = list(pairwise(knots))
    i, acc = 0, 0.0                              # acc = Λ at the start of segment i
    for y in targets:
        while i + 1 < len(segs):
            (t0, r0), (t1, r1) = segs[i]
            area = (r0 + r1) / 2.0 * (t1 - t0)
            if y < acc + area:
                break
            acc += area
            i += 1
        (t0, r0), (t1, r1) = segs[i]
        length, d = t1 - t0, y - acc
        if length <= 0 or d <= 0:
            u = 0.0
        else:
            # r0*u + a*u^2 = d with a = (r1 - r0) / (2 L): the numerically stable root
            a = (r1 - r0) / (2.0 * length)
            den = r0 + math.sqrt(max(0.0, r0 * r0 + 4.0 * a * d))
            u = 2.0 * d / den if den > 0 else length
        out.append(t0 + min(max(u, 0.0), length))
    return out


def constant_offsets(rate: float, duration_s: float) -> list[float]:
    return profile_offsets([(0.0, rate), (duration_s, rate)])


def poisson_offsets(rate: float, duration_s: float, seed: int | None) -> list[float]:
    return profile_offsets([(0.0, rate), (duration_s, rate)], poisson=True, seed=seed)


def burst_offsets(shape: BurstShape, *, poisson: bool = False, seed: int | None = None) -> list[float]:
    return profile_offsets(shape.knots(), poisson=poisson, seed=seed)


@dataclass(frozen=True)
class Arrival:
    offset: float                 # seconds from the start of the run
    endpoint: str                 # gateway endpoint to invoke
    body: bytes | None = None     # None: the run's default body


def trace_arrivals(rows: Iterable[tuple[float, str, float, int]], *, speedup: float = 1.0,
                   endpoint: str | None = None, limit_s: float | None = None,
                   body_of: Callable[[float], bytes | None] | None = None) -> list[Arrival]:
    """Arrivals replaying trace rows ``(start_s, endpoint, duration_s, memory_mb)`` sorted by start.

    Offsets are ``(start_s - first start_s) / speedup``.  ``endpoint`` sends every row
    to that gateway endpoint; None sends each row to the gateway endpoint of the same
    name.  ``limit_s`` drops rows past that offset (after the speed-up); ``body_of``
    makes a row's body from its duration in seconds.
    """
    if speedup <= 0:
        raise ValueError("speedup must be > 0")
    out: list[Arrival] = []
    first = None
    for start, name, duration_s, _memory_mb in rows:
        if first is None:
            first = start
        offset = (start - first) / speedup
        if limit_s is not None and offset >= limit_s:
            break
        out.append(Arrival(offset, endpoint or name, body_of(duration_s) if body_of else None))
    return out
