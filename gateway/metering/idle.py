"""What warm pools spend: memory-time of sandboxes alive and not serving, and of the model
zygotes kept for their endpoints (at what each holds, not its tier).

Pools report each idle interval as it ends (a request takes the sandbox, or it
is reaped or evicted); the scaler's checkpoint cuts intervals still open, so a
crash loses at most one checkpoint interval of this operator-side figure (the
customer's invocation records are never at risk: they are committed before a
response leaves).  Intervals become idle sandbox-ms per hour, written into the
usage roll-ups.
"""
from __future__ import annotations

from collections import defaultdict

from gateway.clock import Clock
from gateway.store.rollup import SUMS, split_by_hour

_IDLE = SUMS.index("idle_ms")
_ZYGOTE = SUMS.index("zygote_mb_ms")


class IdleMeter:
    def __init__(self, clock: Clock):
        self.clock = clock
        self._acc: dict[tuple, list[int]] = defaultdict(lambda: [0] * len(SUMS))

    def book(self, endpoint: str, variant: str, memory_mb: int, since: float, until: float) -> None:
        """An idle interval in monotonic seconds (the pools' clock)."""
        if until <= since:
            return
        to_wall = self.clock.wall() - self.clock.now()
        ms = int(round((until - since) * 1000.0))
        for hour, part in split_by_hour(since + to_wall, until + to_wall, ms):
            self._acc[(hour, endpoint, variant, memory_mb)][_IDLE] += part

    def book_zygote(self, endpoint: str, variant: str, memory_mb: int, held_mb: float, since: float,
                    until: float) -> None:
        """A model zygote of this variant held ``held_mb`` over [since, until) (monotonic seconds):
        booked as MB-ms beside the variant's idle time, the operator's side too."""
        if until <= since or held_mb <= 0:
            return
        to_wall = self.clock.wall() - self.clock.now()
        mb_ms = int(round((until - since) * 1000.0 * held_mb))
        for hour, part in split_by_hour(since + to_wall, until + to_wall, mb_ms):
            self._acc[(hour, endpoint, variant, memory_mb)][_ZYGOTE] += part

    def take(self) -> dict[tuple, list[int]]:
        out, self._acc = dict(self._acc), defaultdict(lambda: [0] * len(SUMS))
        return out
