"""Warm-pool policy: pure functions of an endpoint's recent history and the time.

No I/O and no clock reads here: the scaler builds a ``History`` snapshot, calls
``decide(history, now)``, and applies the ``Decision``.  The same code can run
against a virtual clock in a simulator or a unit test.

Times are in seconds on the gateway's monotonic clock.
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass


@dataclass(frozen=True)
class History:
    """What a policy may know about one variant's pool at one instant."""

    provisioned: int = 0                    # sandboxes that must stay warm, always
    arrivals: tuple[float, ...] = ()        # recent request arrival times, oldest first (bounded)
    last_arrival: float | None = None
    in_flight: int = 0


@dataclass(frozen=True)
class Decision:
    keep_alive_s: float       # an idle sandbox is reaped once idle this long ...
    min_warm: int             # ... unless that would leave fewer than this many alive
    target_warm: int          # start sandboxes until this many are alive (pre-warm)


@dataclass(frozen=True)
class FixedKeepAlive:
    """Keep every sandbox warm for a fixed window after its last request.

    The window counts from when each sandbox became idle; provisioned sandboxes
    are never reaped and are replaced when they die.
    """

    keep_alive_s: float = 600.0

    def decide(self, history: History, now: float) -> Decision:
        return Decision(keep_alive_s=self.keep_alive_s, min_warm=history.provisioned,
                        target_warm=history.provisioned)


@dataclass(frozen=True)
class IdleSandbox:
    sandbox_id: str
    idle_since: float


def select_reaps(idle: list[IdleSandbox], alive: int, decision: Decision, now: float) -> list[str]:
    """Idle sandboxes whose keep-alive has run out, longest-idle first, never
    taking the pool below ``decision.min_warm`` alive sandboxes."""
    spare = max(0, alive - decision.min_warm)
    expired = sorted((s for s in idle if now - s.idle_since >= decision.keep_alive_s),
                     key=lambda s: s.idle_since)
    return [s.sandbox_id for s in expired[:spare]]


def sandboxes_to_start(decision: Decision, alive: int, starting: int) -> int:
    return max(0, decision.target_warm - alive - starting)


class ArrivalLog:
    """Bounded per-variant record of arrivals, the raw material of ``History``."""

    def __init__(self, maxlen: int = 256):
        self.arrivals: deque[float] = deque(maxlen=maxlen)
        self.last: float | None = None

    def add(self, t: float) -> None:
        self.arrivals.append(t)
        self.last = t
