"""Where a multi-model endpoint's request runs: pure choices over what each idle sandbox holds.

1. An idle sandbox that has the model loaded (the most recently used of them): a cache hit.
2. Else an idle sandbox it fits in without unloading anything: the fullest that fits (best fit,
   so that large holes stay for large models).
3. Else an idle sandbox where it fits once least-recently-used models are unloaded: the one
   whose victims were used longest ago.
4. Else (no idle sandbox, or none could ever hold it) a new sandbox.

Sizes are measured (what a sandbox's cap counts more after a load); a model not loaded before
is placed by an estimate and measured when it lands.  ``headroom`` is kept free in every sandbox
for the requests it runs.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Loaded:
    key: str
    last_used: float
    bytes: int


@dataclass(frozen=True)
class SandboxView:
    sandbox_id: str
    cap_bytes: int
    used_bytes: int                   # measured: the sandbox's memory now
    models: tuple[Loaded, ...]        # what it has loaded

    def free(self, headroom: int) -> int:
        return self.cap_bytes - headroom - self.used_bytes

    def holds(self, key: str) -> bool:
        return any(m.key == key for m in self.models)


@dataclass(frozen=True)
class Choice:
    sandbox_id: str | None            # None: start a new sandbox
    hit: bool = False
    evict: tuple[str, ...] = ()       # unload these first, least recently used first


def headroom_for(cap_bytes: int) -> int:
    """Memory left free in a sandbox for requests: a tenth of its cap, at least 64 MB."""
    return max(64 << 20, cap_bytes // 10)


def choose(idle: list[SandboxView], key: str, need: int) -> Choice:
    holders = [v for v in idle if v.holds(key)]
    if holders:
        best = max(holders, key=lambda v: next(m.last_used for m in v.models if m.key == key))
        return Choice(best.sandbox_id, hit=True)
    fitting = [v for v in idle if v.free(headroom_for(v.cap_bytes)) >= need]
    if fitting:
        best = min(fitting, key=lambda v: v.free(headroom_for(v.cap_bytes)))
        return Choice(best.sandbox_id)
    options = []
    for v in idle:
        room, victims = v.free(headroom_for(v.cap_bytes)), []
        for m in sorted(v.models, key=lambda m: m.last_used):
            if room >= need:
                break
            victims.append(m)
            room += m.bytes
        if room >= need:
            options.append((max(m.last_used for m in victims), len(victims), v.sandbox_id, victims))
    if options:
        _, _, sid, victims = min(options)
        return Choice(sid, evict=tuple(m.key for m in victims))
    return Choice(None)


def estimate(archive_bytes: int, measured: int | None) -> int:
    """What a model is expected to take before it is loaded: its last measured size, else twice
    its archive (a pickle unpickles to about its size; the factor leaves room for the copies a
    load makes on the way).  Only placement uses it; the model's size is then measured."""
    return measured if measured is not None else 2 * archive_bytes
