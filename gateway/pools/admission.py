"""Host memory admission: pure choices about which idle sandboxes to evict.

Every live sandbox reserves its full tier against the host budget (the tier is
what it may grow to, so that is what the host must be able to give).  When a
new sandbox would not fit, idle sandboxes of *other* endpoints are evicted,
least recently used first; if even that cannot make room, the request is
throttled rather than risking the host.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Candidate:
    sandbox_id: str
    endpoint: str
    last_used: float      # monotonic seconds
    memory_mb: int


def choose_evictions(candidates: list[Candidate], need_mb: int, free_mb: int,
                     requester: str) -> list[str] | None:
    """The fewest LRU-first evictions that free ``need_mb``; None if impossible."""
    if need_mb <= free_mb:
        return []
    chosen, freed = [], free_mb
    for c in sorted((c for c in candidates if c.endpoint != requester), key=lambda c: c.last_used):
        chosen.append(c.sandbox_id)
        freed += c.memory_mb
        if freed >= need_mb:
            return chosen
    return None


class HostBudget:
    """Reservations of host memory by sandbox id, in MB."""

    def __init__(self, capacity_mb: int):
        self.capacity_mb = capacity_mb
        self._held: dict[str, int] = {}

    @property
    def used_mb(self) -> int:
        return sum(self._held.values())

    @property
    def free_mb(self) -> int:
        return self.capacity_mb - self.used_mb

    def reserve(self, key: str, mb: int) -> bool:
        if mb > self.free_mb:
            return False
        self._held[key] = mb
        return True

    def release(self, key: str) -> None:
        self._held.pop(key, None)
