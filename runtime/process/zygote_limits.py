"""Which model zygotes to close: a pure choice, so the limits can be read and tested alone.

A model zygote holds a bundle loaded in memory so that cold starts of that
bundle take milliseconds.  Kept for every bundle that ever had traffic, they
would grow with the number of endpoints; these limits keep them to the bundles
in use:

* one not forked from for ``idle_s`` seconds is closed (its endpoint went quiet;
  the next cold start forks from the base zygote and makes a new one);
* beyond ``max_count`` of them, or ``max_mb`` of their memory, the least
  recently used are closed first;
* once they are that many, a new one is made only for a bundle that has had more
  cold starts lately than the least recently used one it would displace (``admit``):
  with more bundles in use than the limit allows, the set stays put instead of
  loading a bundle, closing another, and loading that one back a moment later.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ModelZygote:
    key: tuple[str, int]      # (bundle dir, memory tier)
    last_used: float          # monotonic seconds: made, or last forked from
    memory_mb: int


def choose_closures(models: list[ModelZygote], now: float, max_count: int, max_mb: int,
                    idle_s: float) -> list[tuple[str, int]]:
    """Keys to close: every idle one, then least recently used until within both limits."""
    close = [m for m in models if now - m.last_used >= idle_s]
    kept = sorted((m for m in models if now - m.last_used < idle_s), key=lambda m: m.last_used)
    used = sum(m.memory_mb for m in kept)
    while kept and (len(kept) > max_count or used > max_mb):
        m = kept.pop(0)
        used -= m.memory_mb
        close.append(m)
    return [m.key for m in close]


def admit(cold_starts: float, full: bool, victim_cold_starts: float | None) -> bool:
    """Whether to make a model zygote for a bundle with ``cold_starts`` recent cold starts
    (a count that fades with time): always while there is room; when full, only to displace
    one with at least one cold start fewer (``None``: none can be displaced now).  The margin
    of one keeps bundles started equally often from displacing each other in turn."""
    if not full:
        return True
    return victim_cold_starts is not None and cold_starts >= victim_cold_starts + 1.0
