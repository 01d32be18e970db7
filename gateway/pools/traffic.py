"""What an endpoint's warm-pool policy learns from: a bounded record of its demand.

Levels.  When the number of in-flight requests drops from L to L-1, a sandbox
goes idle "at level L"; it is needed again when demand next reaches L.  The
time between the two is that level's *idle time* (IT).  Level 1 is the classic
idle time of a function (last request done -> next request); higher levels are
the extra sandboxes a burst or a daily peak needs.  ITs are properties of the
demand, not of the policy, so they can be learned while any policy runs.
Each level keeps its last ``SAMPLES`` ITs: bounded state per endpoint.

A pool (live) or the simulator feeds ``Traffic`` with arrivals and completions; it reads
no clock (times are passed in, in seconds).
"""
from __future__ import annotations

import math
from collections import deque
from itertools import pairwise

LEVELS = 8          # levels tracked separately; deeper ones share the last
SAMPLES = 16        # most recent idle times remembered per level (periodicity)
BINS_PER_DECADE = 10
HIST_MIN_S = 0.1
HIST_BINS = 68      # 0.1 s .. about a week, ratio 10^(1/10) a bin; longer ITs fall in the last
HIST_HALF_LIFE_S = 3600.0  # an idle time observed this long ago counts half as much ...
HIST_HALF_LIFE_ITS = 32    # ... unless fewer idle times than this have come since
EPISODE_GAP_S = 60.0      # idle longer than this ends an episode of activity
EPISODES = 8              # episodes remembered (peak concurrency, duration)
RECENT_ARRIVALS = 64      # arrival times remembered, for the panic window
START_PATHS = 8           # start paths whose latency is learned, at most
_EDGES = [HIST_MIN_S * 10 ** (i / BINS_PER_DECADE) for i in range(HIST_BINS + 1)]
_MIDS = [math.sqrt(a * b) for a, b in pairwise(_EDGES)]


def _bin(it: float) -> int:
    if it <= HIST_MIN_S:
        return 0
    return min(HIST_BINS - 1, int(math.log10(it / HIST_MIN_S) * BINS_PER_DECADE))


class Traffic:
    """Bounded record of one endpoint's demand: in-flight count and per-level idle times."""

    __slots__ = ("in_flight", "its", "hist", "weight", "seen", "drops", "arrivals", "last_arrival", "fresh",
                 "app_drop", "memo", "episode_start", "episode_peak", "peaks", "durations", "new_episode",
                 "memory_gb", "recent", "name", "starts", "last_path", "zygote_mb")

    def __init__(self, memory_mb: int = 1024, name: str = "") -> None:
        self.name = name                          # the endpoint's, for diagnostics and offline analysis
        self.memory_gb = memory_mb / 1024.0
        self.in_flight = 0
        self.its = [deque(maxlen=SAMPLES) for _ in range(LEVELS + 1)]   # index = level (0 unused)
        self.hist: list[list[float] | None] = [None] * (LEVELS + 1)      # decayed long-term IT histograms
        self.weight = [0.0] * (LEVELS + 1)        # per slot: log2 of the weight a new IT gets
        self.seen = [0.0] * (LEVELS + 1)          # per slot: when its last IT was observed
        self.episode_start: float | None = None
        self.episode_peak = 0
        self.peaks: deque[int] = deque(maxlen=EPISODES)
        self.durations: deque[float] = deque(maxlen=EPISODES)
        self.new_episode = False
        self.recent: deque[float] = deque(maxlen=RECENT_ARRIVALS)   # arrival times, for rate spikes
        self.drops: dict[int, float] = {}         # level -> when demand last fell below it
        self.arrivals = 0
        self.last_arrival: float | None = None
        self.fresh = [0] * (LEVELS + 1)           # ITs added per level since a policy last looked
        self.app_drop: float | None = None
        self.memo: dict = {}                      # a policy's own small derived state (cached choices)
        self.starts: dict[str, list[float]] = {}  # start path -> [decayed sum of ms, decayed count, when]
        self.last_path: str | None = None         # the path the last start took (the next is likely the same)
        self.zygote_mb: float | None = None       # what its model zygote holds, once measured

    def arrive(self, t: float) -> None:
        self.new_episode = self.in_flight == 0 and (self.app_drop is None or t - self.app_drop >= EPISODE_GAP_S)
        if self.new_episode:
            if self.episode_start is not None:
                self.peaks.append(self.episode_peak)
                self.durations.append(self.app_drop - self.episode_start)
            self.episode_start, self.episode_peak = t, 0
        self.in_flight += 1
        self.recent.append(t)
        self.episode_peak = max(self.episode_peak, self.in_flight)
        level = self.in_flight
        self.arrivals += 1
        self.last_arrival = t
        dropped = self.drops.pop(level, None)
        if dropped is not None:
            self._observe(min(level, LEVELS), t - dropped, t)

    def _observe(self, slot: int, it: float, t: float) -> None:
        """Add an IT to the slot's histogram.  Older ITs count less: half as much an hour
        (HIST_HALF_LIFE_S) later or ``HIST_HALF_LIFE_ITS`` ITs later, whichever comes last, so
        a quiet night soon outweighs the busy day before it, however few its observations,
        while an endpoint called every few minutes still remembers enough of them to know
        its rate.  New ITs are added with a weight that grows (``weight``: its log2) and the
        histogram is renormalised now and then."""
        self.its[slot].append(it)
        self.fresh[slot] += 1
        h = self.hist[slot]
        if h is None:
            h = self.hist[slot] = [0.0] * HIST_BINS
            self.weight[slot], self.seen[slot] = 0.0, t
        self.weight[slot] += min((t - self.seen[slot]) / HIST_HALF_LIFE_S, 1.0 / HIST_HALF_LIFE_ITS)
        self.seen[slot] = t
        if self.weight[slot] > 20.0:
            scale = 2.0 ** -self.weight[slot]
            h[:] = [v * scale for v in h]
            self.weight[slot] = 0.0
        h[_bin(it)] += 2.0 ** self.weight[slot]

    def samples(self, slot: int) -> float:
        """How many idle times the slot's histogram holds, each counted by its decayed weight."""
        h = self.hist[slot]
        return sum(h) / 2.0 ** self.weight[slot] if h is not None else 0.0

    def started(self, path: str, ms: float, t: float) -> None:
        """A sandbox of this endpoint started on ``path`` (model-zygote, zygote, fresh, stem, ...)
        in ``ms``.  Each path's latency is a mean in which a start counts half as much
        ``HIST_HALF_LIFE_S`` later, as idle times do; a few paths at most are kept."""
        if not (ms >= 0 and math.isfinite(ms)):
            return
        s = self.starts.get(path)
        if s is None:
            if len(self.starts) >= START_PATHS:
                del self.starts[min(self.starts, key=lambda p: self.starts[p][2])]
            s = self.starts[path] = [0.0, 0.0, t]
        decay = 2.0 ** (-(t - s[2]) / HIST_HALF_LIFE_S) if t > s[2] else 1.0
        s[0], s[1], s[2] = s[0] * decay + ms, s[1] * decay + 1.0, max(t, s[2])
        self.last_path = path

    def start_ms(self, path: str | None = None) -> float | None:
        """What a start on ``path`` (default: the path the last start took) has been taking, in
        ms; None before any was seen."""
        s = self.starts.get(path or self.last_path or "")
        return s[0] / s[1] if s and s[1] > 0 else None

    def start_view(self) -> dict:
        """Each path's learned latency (ms) and the path the next start is expected to take."""
        return {"by_path_ms": {p: round(v[0] / v[1], 3) for p, v in self.starts.items() if v[1] > 0},
                "expected_path": self.last_path}

    def depart(self, t: float) -> int:
        """A request finished; returns the level its sandbox goes idle at."""
        level = self.in_flight
        self.in_flight = max(0, self.in_flight - 1)
        self.drops[level] = t
        if self.in_flight == 0:
            self.app_drop = t
        return level

    def level_its(self, level: int) -> deque:
        return self.its[min(level, LEVELS)]
