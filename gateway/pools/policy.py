"""Warm-pool policy: pure decisions from an endpoint's recent traffic and the time.

No I/O and no clock reads.  A pool (live) or the simulator feeds ``Traffic``
with arrivals and completions, and whenever a sandbox goes idle it asks the
policy for a ``Plan``: keep the sandbox until ``expire_at``, or let it go now
and have one warm again between ``prewarm_at`` and ``prewarm_until``.  The same
code runs live and in ``slimserve simulate``.  All times are seconds.

What the policies learn from is ``gateway.pools.traffic.Traffic`` (per-level idle times).

Policies:
  ``none``        reap at once: every request after a gap is a cold start.
  ``fixed:S``     keep each idle sandbox S seconds (the classic keep-alive).
  ``histogram``   Shahrad et al., "Serverless in the Wild" (USENIX ATC'20): an
                  application-level IT histogram (1-minute bins, 4 h range);
                  when representative, pre-warm at the 5th percentile minus 10 %
                  and keep alive to the 99th plus 10 %; otherwise keep alive for
                  the histogram's range; mostly out-of-range ITs use a forecast
                  (here the last IT: the paper's ARIMA is out of scope).
  ``adaptive``    per level, choose the pre-warm point p and keep-alive end k
                  that minimise  E[idle seconds] + H * P(cold start)  over the
                  recent ITs, where H (seconds of idle memory that one cold start
                  is worth) grows with the cold-start latency -- the endpoint's own,
                  learned per start path from its measured starts (the prior,
                  ``--policy-cold-start-ms``, until one is measured).  Until a level
                  has ITs, keep alive for H: the break-even ("ski rental") rule,
                  never worse than twice the best choice in hindsight.  Above the
                  median, ITs are read as an exponential excess when their spread
                  says so (a Poisson endpoint under break-even is kept until its
                  next request).  Timers (arrivals on a grid of ticks,
                  ``gateway.pools.ticks``) get a pre-warm window for the next
                  tick instead of a keep-alive when that costs less at the miss
                  rate their own predictions have had, opened again a period
                  later after a skipped tick; higher levels whose recent ITs
                  repeat get one too.  The last IT gets a narrow hedging pre-warm
                  beyond the keep-alive; bursts scale out (episode peaks, a
                  Knative-style panic window that a steady stream's noise does
                  not trip).
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

from gateway.pools.ticks import fit_ticks
from gateway.pools.traffic import _EDGES, _MIDS, EPISODE_GAP_S, LEVELS, Traffic


@dataclass(frozen=True)
class Plan:
    """What to do with a sandbox that just went idle."""

    expire_at: float                      # reap it then (== now: at once)
    prewarm_at: float | None = None       # have one warm again from then ...
    prewarm_until: float | None = None    # ... until then (unless a request takes it)
    zygote_until: float | None = None     # once the endpoint has no sandbox, keep its model zygote until then
    prewarm_every: float = 0.0            # a timer's period: while no request comes, open the window again ...
    prewarm_repeats: int = 0              # ... this many more times, one period apart (a skipped tick)

    def windows(self, now: float) -> list[tuple[float, float, float | None]]:
        """The pre-warm windows this plan (made at ``now``) asks for: (from, until, unless), each
        to be opened unless a request came after ``unless`` (None: opened anyway)."""
        if self.prewarm_at is None:
            return []
        return [(self.prewarm_at + i * self.prewarm_every, self.prewarm_until + i * self.prewarm_every,
                 now if i else None) for i in range(self.prewarm_repeats + 1)]


class _NoScaleOut:
    def scale_out(self, traffic: "Traffic", now: float, alive: int) -> tuple[int, float]:
        return 0, 0.0

    def belief(self, traffic: "Traffic") -> dict:
        """What the policy believes about this endpoint (``describe`` shows it)."""
        return {"cold_start": traffic.start_view()}


class NoKeepAlive(_NoScaleOut):
    name = "none"

    def plan(self, traffic: Traffic, level: int, now: float) -> Plan:
        return Plan(expire_at=now)


@dataclass(frozen=True)
class FixedKeepAlive(_NoScaleOut):
    keep_alive_s: float = 600.0

    @property
    def name(self) -> str:
        return f"fixed:{self.keep_alive_s:g}"

    def plan(self, traffic: Traffic, level: int, now: float) -> Plan:
        return Plan(expire_at=now + self.keep_alive_s)


class HistogramPolicy(_NoScaleOut):
    """The hybrid histogram policy of Shahrad et al. (ATC'20), application level."""

    name = "histogram"
    BIN_S = 60.0
    RANGE_S = 4 * 3600.0
    MARGIN = 0.10
    CV_THRESHOLD = 2.0
    MIN_SAMPLES = 10          # fewer ITs than this: not representative yet
    OOB_FRACTION = 0.5        # more ITs than this beyond the range: forecast instead

    def _hist(self, traffic: Traffic) -> dict:
        h = traffic.memo.get("histogram")
        if h is None:
            h = traffic.memo["histogram"] = {"bins": [0] * int(self.RANGE_S / self.BIN_S), "oob": 0,
                                            "n": 0, "seen": 0, "last_oob": None}
        its = traffic.its[1]
        new = min(traffic.fresh[1], len(its))
        for it in list(its)[len(its) - new:] if new else ():
            h["n"] += 1
            if it >= self.RANGE_S:
                h["oob"] += 1
                h["last_oob"] = it
            else:
                h["bins"][int(it // self.BIN_S)] += 1
        traffic.fresh[1] = 0
        return h

    def windows(self, traffic: Traffic) -> tuple[float, float] | None:
        """(pre-warm, keep-alive end) in seconds after going idle, or None if not representative."""
        h = self._hist(traffic)
        n_in = h["n"] - h["oob"]
        if h["n"] and h["oob"] / h["n"] > self.OOB_FRACTION and h["last_oob"] is not None:
            it = h["last_oob"]                             # forecast: the last out-of-range IT
            return it * (1 - 0.15), it * (1 + 0.15)
        if n_in < self.MIN_SAMPLES:
            return None
        bins = h["bins"]
        mean = n_in / len(bins)
        var = sum((b - mean) ** 2 for b in bins) / len(bins)
        if math.sqrt(var) / mean <= self.CV_THRESHOLD:
            return None
        head = tail = None
        acc = 0
        for i, b in enumerate(bins):
            acc += b
            if head is None and acc >= 0.05 * n_in:
                head = i * self.BIN_S                        # lower edge of the 5th-percentile bin
            if acc >= 0.99 * n_in:
                tail = (i + 1) * self.BIN_S                  # upper edge of the 99th-percentile bin
                break
        prewarm = math.floor(head * (1 - self.MARGIN) / self.BIN_S) * self.BIN_S
        keep = math.ceil(tail * (1 + self.MARGIN) / self.BIN_S) * self.BIN_S
        return prewarm, keep

    def plan(self, traffic: Traffic, level: int, now: float) -> Plan:
        w = self.windows(traffic)
        if w is None:
            return Plan(expire_at=now + self.RANGE_S)        # standard keep-alive of the range
        prewarm, keep = w
        if prewarm <= 0 or level > 1:
            return Plan(expire_at=now + keep)
        return Plan(expire_at=now, prewarm_at=now + prewarm, prewarm_until=now + keep)


class AdaptivePolicy:
    """Per level: pre-warm for periodic idle times, else the keep-alive that minimises
    E[idle seconds] + H * P(cold start) over a long-term IT histogram; per endpoint:
    scale out at the start of an episode of activity to the peak recent episodes reached."""

    # One cold start of 1 s is worth this many GB-s of idle memory, so the break-even
    # keep-alive H is shorter for big sandboxes: 2,400 GB-s -> 2,400 s at 1 GB, 400 s at 6 GB.
    HARM_GB_S_PER_COLD_S = 2400.0
    MIN_HARM_S = 1.0
    PERIODIC_SPREAD = 0.05        # recent ITs within 5 % (or PERIODIC_ABS_S) of each other: a timer
    PERIODIC_ABS_S = 2.0
    PERIODIC_SAMPLES = 2
    HEDGE = True                  # also pre-warm narrowly around a repeat of the last idle time
    HEDGE_SPREAD = 0.01
    RECOMPUTE_EVERY = 8           # recompute a level's keep-alive after this many new ITs ...
    RECOMPUTE_AFTER_S = 60.0      # ... or after one, once this long has passed since the last time

    def __init__(self, cold_start_ms: float = 1000.0, harm_gb_s_per_cold_s: float | None = None):
        self.cold_s = cold_start_ms / 1000.0
        if harm_gb_s_per_cold_s is not None:
            if not (harm_gb_s_per_cold_s > 0 and math.isfinite(harm_gb_s_per_cold_s)):
                raise ValueError("adaptive:H needs H > 0 (GB-s of idle memory one second of cold start is worth)")
            self.HARM_GB_S_PER_COLD_S = harm_gb_s_per_cold_s

    @property
    def name(self) -> str:
        h = self.HARM_GB_S_PER_COLD_S
        return "adaptive" if h == type(self).HARM_GB_S_PER_COLD_S else f"adaptive:{h:g}"

    def cold_s_of(self, traffic: Traffic) -> float:
        """What this endpoint's next cold start costs, in seconds: what starts on the path its
        last start took have been taking (learned, ``Traffic.started``), else the prior
        (``--policy-cold-start-ms``) until one has been measured."""
        ms = traffic.start_ms()
        return self.cold_s if ms is None else ms / 1000.0

    def harm_s(self, traffic: Traffic) -> float:
        """H: seconds of this endpoint's idle sandbox that one cold start is worth."""
        return max(self.MIN_HARM_S, self.HARM_GB_S_PER_COLD_S * self.cold_s_of(traffic) / traffic.memory_gb)

    # --- the model zygote, once the last sandbox has gone ------------------------------------
    MODEL_PATH, BASE_PATH = "model-zygote", "zygote"
    MODEL_SHARE = 0.32            # a model-zygote start, until one is measured: this share of a base-zygote one
    ZYGOTE_MB = 16.0              # what a model zygote holds, until its own size is known
    ZYGOTE_MAX_S = 1800.0         # the model zygotes' own idle limit (ZygoteConfig.model_idle_s)

    def path_harms(self, traffic: Traffic) -> tuple[float, float]:
        """(H of a start from the model zygote, H of one from the base zygote), in seconds of this
        endpoint's idle sandbox: learned latencies, else the prior and the measured ratio."""
        base = traffic.start_ms(self.BASE_PATH)
        model = traffic.start_ms(self.MODEL_PATH)
        base_s = base / 1000.0 if base is not None else (model / 1000.0 / self.MODEL_SHARE if model is not None
                                                         else self.cold_s)
        model_s = model / 1000.0 if model is not None else base_s * self.MODEL_SHARE
        scale = self.HARM_GB_S_PER_COLD_S / traffic.memory_gb
        return max(self.MIN_HARM_S, scale * model_s), max(self.MIN_HARM_S, scale * base_s)

    def zygote_keep(self, traffic: Traffic, hist: list[float] | None, k: float) -> float:
        """Seconds after the sandbox goes (its keep-alive ``k``) to keep the endpoint's model
        zygote: the ``kz`` that minimises, over the idle times longer than ``k``, its memory until
        the next request or ``kz`` plus that request's start (from the zygote if it came by ``kz``,
        else from the base zygote), all in seconds of idle sandbox; 0: let it go with the sandbox.
        With nothing learnt: break even, as long as the start it saves is worth."""
        h_model, h_base = self.path_harms(traffic)
        saving = h_base - h_model
        if saving <= 0:
            return 0.0
        z = (traffic.zygote_mb or self.ZYGOTE_MB) / (traffic.memory_gb * 1024.0)
        if not hist or sum(hist) <= 0:
            return min(self.ZYGOTE_MAX_S, saving / z)
        above = [(mid, m) for mid, m in zip(_MIDS, hist, strict=False) if mid > k and m > 0]
        mass = sum(m for _, m in above)
        if mass <= 0:
            return min(self.ZYGOTE_MAX_S, saving / z)
        best_kz, best = 0.0, h_base                      # let it go: every return starts from the base
        for edge in _EDGES[1:]:
            kz = edge - k
            if kz <= 0:
                continue
            if kz > self.ZYGOTE_MAX_S:
                break
            c = sum(m * (z * (min(mid - k, kz)) + (h_model if mid - k <= kz else h_base)) for mid, m in above) / mass
            if c < best:
                best_kz, best = kz, c
        return best_kz

    def belief(self, traffic: Traffic) -> dict:
        ms = traffic.start_ms()
        return {"cold_start": traffic.start_view(),
                "cold_start_ms": round(self.cold_s_of(traffic) * 1000.0, 3),
                "cold_start_from": "prior (--policy-cold-start-ms)" if ms is None
                else f"measured starts on path {traffic.last_path}",
                "break_even_s": round(self.harm_s(traffic), 3)}

    # --- per level, when a sandbox goes idle ---------------------------------------------
    def periodic_window(self, its, cold_s: float | None = None) -> tuple[float, float] | None:
        """A pre-warm window around the next IT if the recent ones repeat (a timer)."""
        cold_s = self.cold_s if cold_s is None else cold_s
        if len(its) < self.PERIODIC_SAMPLES:
            return None
        recent = list(its)[-4:]
        lo, hi = min(recent), max(recent)
        mid = (lo + hi) / 2
        if hi - lo > max(self.PERIODIC_SPREAD * mid, self.PERIODIC_ABS_S):
            return None
        margin = 0.01 * mid + 1.0 + (hi - lo)
        p, k = lo - margin, hi + margin
        if p <= cold_s + margin:                         # too soon to let it go and come back
            return None
        return p, k

    @classmethod
    def keep_alive(cls, hist: list[float] | None, harm_s: float, samples: float | None = None) -> float:
        """argmin over k of E[min(IT, k)] + H * P(IT > k), on the decayed histogram."""
        return cls.keep_alive_cost(hist, harm_s, samples)[0]

    EXCESS_TAIL = 2.0             # ... and kept on until the excess has a chance of 1/(samples + 1)^this left
    EXCESS_MAX_CV = 1.25          # the IT excess over the median is read as exponential up to this spread / mean

    @classmethod
    def keep_alive_cost(cls, hist: list[float] | None, harm_s: float,
                        samples: float | None = None) -> tuple[float, float]:
        """(k, expected cost per idle period in seconds of idle memory) of the best keep-alive.

        Below the median idle time the histogram is read as it is.  Above it, given ``samples``
        (how many ITs the histogram holds, decayed), the ITs are modelled as the median plus an
        exponential excess whose mean (mu) is the ITs' mean excess over the median: one
        statistic instead of a few noisy bins, and a tail beyond the longest IT seen.  Then
        keeping on past the median pays exactly while mu < H (a Poisson endpoint whose mean IT
        is under H is kept until its next request, however long that takes), and does not
        once mu >= H; a k past the median is chosen where the excess has a chance of
        1/(samples + 1)^2 left."""
        if hist is None:
            return harm_s, harm_s                        # nothing known: break even (ski rental)
        total = sum(hist)
        if total <= 0:
            return harm_s, harm_s
        last_bin, tail = len(hist) - 1, None       # tail: (median q, mean excess mu, mass above q)
        if samples is not None and samples > 0:
            i, acc = 0, hist[0]
            while acc < total / 2:
                i += 1
                acc += hist[i]
            upper = total - acc
            if i < len(hist) - 1 and upper > 0:
                q = _EDGES[i + 1]
                mu = sum(m * (_MIDS[j] - q) for j, m in enumerate(hist) if j > i) / upper
                second = sum(m * (_MIDS[j] - q) ** 2 for j, m in enumerate(hist) if j > i) / upper
                # an exponential excess has a spread equal to its mean; bursts (many short ITs
                # and a few hours-long ones) or heavy tails have far more: read those as they are
                if mu > 0 and second - mu * mu <= (cls.EXCESS_MAX_CV * mu) ** 2:
                    last_bin, tail = i, (q, mu, upper)
        best_k, best = 0.0, harm_s                       # k = 0: every request after a gap is cold
        below_mass = below_idle = 0.0
        for i in range(last_bin + 1):
            m = hist[i]
            below_mass += m
            below_idle += m * _MIDS[i]
            k = _EDGES[i + 1]
            above = total - below_mass
            c = (below_idle + above * (k + harm_s)) / total
            if c < best:
                best_k, best = k, c
        if tail is not None and tail[1] < harm_s:
            q, mu, upper = tail
            d = cls.EXCESS_TAIL * mu * math.log(samples + 1.0)
            left = math.exp(-d / mu)
            c = (below_idle + upper * (q + mu * (1.0 - left) + left * harm_s)) / total
            if c < best:
                best_k, best = q + d, c
        return best_k, best

    def window_cost(self, its, hist: list[float] | None, window: tuple[float, float], harm_s: float,
                    cold_s: float | None = None) -> float:
        """Expected cost per idle period of letting the sandbox go and pre-warming for
        ``window``: the window's idle memory (and the start before it) plus H for every
        IT that fell outside it (a skipped or late tick of the timer): the recent ITs, and
        the longer memory of the histogram for ITs far outside (skips)."""
        p, k = window
        miss = sum(1 for it in its if not p <= it <= k) / len(its)
        if hist:
            total = sum(hist)
            far = sum(m for mid, m in zip(_MIDS, hist, strict=False) if mid < 0.8 * p or mid > 1.25 * k)
            miss = max(miss, far / total if total > 0 else 0.0)
        return (k - p) / 2 + (self.cold_s if cold_s is None else cold_s) + miss * harm_s

    def plan(self, traffic: Traffic, level: int, now: float) -> Plan:
        plan = self._plan(traffic, level, now)
        if level != 1:                                   # other sandboxes stay: so does the zygote
            return plan
        k = plan.expire_at - now
        basis = traffic.memo.get(1)                      # recomputed with the level's keep-alive, not per plan
        cached = traffic.memo.get("zygote")
        if cached is None or cached[0] is not basis or cached[1] != k:
            cached = traffic.memo["zygote"] = (basis, k, self.zygote_keep(traffic, traffic.hist[1], k))
        kz = cached[2]
        return dataclasses.replace(plan, zygote_until=plan.expire_at + kz if kz > 0 else None)

    def _plan(self, traffic: Traffic, level: int, now: float) -> Plan:
        slot = min(level, LEVELS)
        cold = self.cold_s_of(traffic)
        harm = self.harm_s(traffic)
        cached = traffic.memo.get(slot)
        # recomputed after RECOMPUTE_EVERY new ITs, or after one once RECOMPUTE_AFTER_S have passed (a
        # level whose ITs come minutes apart learns from each), or when the learned cold start moved H by 10 %
        fresh = traffic.fresh[slot]
        if cached is None or fresh >= self.RECOMPUTE_EVERY or fresh and now - cached[3] >= self.RECOMPUTE_AFTER_S \
                or abs(cached[2] - harm) > 0.1 * harm:
            cached = traffic.memo[slot] = (*self.keep_alive_cost(traffic.hist[slot], harm,
                                                                 traffic.samples(slot)), harm, now)
            traffic.fresh[slot] = 0
        cached, keep_cost, _, _ = cached
        if slot == 1 and traffic.in_flight == 0:
            ticks = self.tick_plan(traffic, now, cold, harm, keep_cost)
            if ticks is not None:
                return ticks
        window = self.periodic_window(traffic.its[slot], cold) if slot > 1 else None
        if window is not None and \
                self.window_cost(traffic.its[slot], traffic.hist[slot], window, harm, cold) <= keep_cost:
            p, k = window
            return Plan(expire_at=now, prewarm_at=now + p, prewarm_until=now + k)
        its = traffic.its[slot]
        if self.HEDGE and its and slot == 1:        # higher levels' long ITs rarely repeat
            # Hedge: the last idle time may repeat (a timer not yet confirmed).  A narrow
            # pre-warm around it costs a few seconds of memory and catches the repeat.
            last = its[-1]
            margin = self.HEDGE_SPREAD * last + 1.0
            if last - margin > cached + cold:
                return Plan(expire_at=now + cached, prewarm_at=now + last - margin, prewarm_until=now + last + margin)
        return Plan(expire_at=now + cached)

    # --- a timer: pre-warm for its next tick ---------------------------------------------------
    TICK_MARGIN_SHARE = 0.25      # widen the window by this share of the recent ticks' spread each side ...
    TICK_MARGIN_S = 0.5           # ... plus this, and 0.5 % of the period
    TICK_REPEATS = 2              # windows opened again for skipped ticks, at most
    TICK_MEMORY = 256             # predictions the measured hit rate remembers (about)

    def tick_plan(self, traffic: Traffic, now: float, cold: float, harm: float, keep_cost: float) -> Plan | None:
        """Let the sandbox go and have one warm for the next tick, if the endpoint's arrivals fit
        a timer (``gateway.pools.ticks``) and that costs less than the best keep-alive
        (``keep_cost``, per idle period).  Per tick, in seconds of idle memory, a window costs
        its memory until the tick (and the start before it), a wasted window for every skipped
        tick, and a wasted window and a cold start (H) for every tick that misses it: a share
        measured on this endpoint's own predictions, each scored when the next request comes,
        whether or not its window was used."""
        memo = traffic.memo
        pred = memo.pop("tick_pred", None)
        if pred is not None and traffic.last_arrival is not None and traffic.last_arrival > pred[0]:
            made, lo, hi, period = pred
            first = next(t for t in traffic.recent if t > made)        # the first request after it
            hit = any(lo + i * period <= first <= hi + i * period for i in range(self.TICK_REPEATS + 1))
            score = memo.get("tick_score", (0.0, 0.0))
            keep = 1.0 - 1.0 / self.TICK_MEMORY
            memo["tick_score"] = (score[0] * keep + hit, score[1] * keep + 1.0)
        fit = fit_ticks(traffic.recent, min_period=cold)
        if fit is None:
            return None
        margin = self.TICK_MARGIN_SHARE * (fit.late - fit.early) + self.TICK_MARGIN_S + 0.005 * fit.period
        lo, hi = fit.next_at + fit.early - margin, fit.next_at + fit.late + margin
        if lo - now <= cold:                              # too soon to let it go and come back
            return None
        memo["tick_pred"] = (now, lo, hi, fit.period)
        hits, n = memo.get("tick_score", (0.0, 0.0))
        miss = (n - hits + 1.0) / (n + 2.0)               # Laplace's rule: unknown until measured
        window = hi - lo + cold
        cost = (1.0 - miss) * (fit.next_at - lo + cold) + fit.skipped * window + miss * (window + harm)
        if cost >= keep_cost:
            return None
        return Plan(expire_at=now, prewarm_at=lo, prewarm_until=hi, prewarm_every=fit.period,
                    prewarm_repeats=self.TICK_REPEATS)

    # --- per endpoint, when a request arrives -------------------------------------------------
    PANIC_WINDOW_S = 2.0          # Knative's panic window: a short look at the arrival rate ...
    STABLE_WINDOW_S = 60.0        # ... against a long one
    PANIC_RATE_RATIO = 2.0        # panic when the short-window rate is this many times the long one
    PANIC_MIN = 4                 # arrivals in the panic window, at least
    PANIC_SURPRISE = 0.001        # and no likelier than this from the minute's rate
    PANIC_HEADROOM = 2.0          # and aim for this many times the concurrency in flight
    PANIC_KEEP_S = 60.0           # (or break-even H, if shorter: cheap cold starts need no long stay)

    def panics(self, traffic: Traffic, now: float) -> bool:
        """Arrivals in the last ``PANIC_WINDOW_S`` run at ``PANIC_RATE_RATIO`` times the rate of the
        minute before or more, and at least ``PANIC_MIN`` of them, more than the minute's rate
        makes likely by chance (Poisson, ``PANIC_SURPRISE``): a steady stream's fluctuations
        are no burst."""
        recent = traffic.recent
        short = sum(1 for t in recent if now - t <= self.PANIC_WINDOW_S)
        if short < self.PANIC_MIN:
            return False
        # the minute before the short window (as far back as the remembered arrivals go)
        span = min(self.STABLE_WINDOW_S, now - recent[0]) - self.PANIC_WINDOW_S
        before = sum(1 for t in recent if self.PANIC_WINDOW_S < now - t <= self.STABLE_WINDOW_S)
        if span <= 0 or before == 0:
            return True                                   # nothing came before: a burst from nothing
        expected = before / span * self.PANIC_WINDOW_S
        if short < self.PANIC_RATE_RATIO * expected:
            return False
        # P(Poisson(expected) >= short)
        term = cdf = math.exp(-expected)
        for i in range(1, short):
            term *= expected / i
            cdf += term
        return 1.0 - cdf < self.PANIC_SURPRISE

    def scale_out(self, traffic: Traffic, now: float, alive: int) -> tuple[int, float]:
        """(sandboxes to start now, seconds to keep them), on two occasions:

        * an episode of activity starts: up to the median peak concurrency of recent
          episodes, kept for their median length;
        * panic (as Knative): every sandbox is busy and arrivals over the last 2 s run at
          twice the rate of the minute before or more, beyond chance (``panics``): up to
          twice the concurrency in flight.

        ``alive`` counts the endpoint's sandboxes, not the one this request is about to get.
        """
        if traffic.new_episode and len(traffic.peaks) >= 2:
            peak = sorted(traffic.peaks)[len(traffic.peaks) // 2]
            duration = sorted(traffic.durations)[len(traffic.durations) // 2]
            return max(0, peak - alive - 1), self.cold_s_of(traffic) + duration + EPISODE_GAP_S / 2
        if traffic.in_flight > alive and len(traffic.recent) >= 4 and self.panics(traffic, now):
            want = math.ceil(self.PANIC_HEADROOM * traffic.in_flight)
            return max(0, want - alive - 1), self.cold_s_of(traffic) + min(self.PANIC_KEEP_S, self.harm_s(traffic))
        return 0, 0.0


def parse(spec: str, cold_start_ms: float = 1000.0):
    """``adaptive`` | ``adaptive:H`` | ``histogram`` | ``fixed:SECONDS`` | ``none``.

    H (adaptive) is the idle memory, in GB-s, that one second of cold start is worth:
    higher buys fewer cold starts with more idle memory (default 2400)."""
    if spec == "adaptive":
        return AdaptivePolicy(cold_start_ms)
    if spec.startswith("adaptive:"):
        try:
            harm = float(spec.split(":", 1)[1])
        except ValueError:
            raise ValueError(f"unknown policy {spec!r}: adaptive:H needs a number") from None
        return AdaptivePolicy(cold_start_ms, harm)
    if spec == "histogram":
        return HistogramPolicy()
    if spec == "none":
        return NoKeepAlive()
    if spec.startswith("fixed:"):
        try:
            return FixedKeepAlive(float(spec.split(":", 1)[1]))
        except ValueError:
            pass
    raise ValueError(f"unknown policy {spec!r}: use adaptive, adaptive:H, histogram, fixed:SECONDS or none")


@dataclass(frozen=True)
class IdleSandbox:
    sandbox_id: str
    expire_at: float


def select_reaps(idle: list[IdleSandbox], alive: int, floor: int, now: float) -> list[str]:
    """Idle sandboxes whose time is up, earliest expiry first, never taking the
    pool below ``floor`` (its provisioned concurrency) alive sandboxes."""
    spare = max(0, alive - floor)
    due = sorted((s for s in idle if s.expire_at <= now), key=lambda s: s.expire_at)
    return [s.sandbox_id for s in due[:spare]]
