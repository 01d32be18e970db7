"""Does an endpoint run on a timer?  Fit its recent arrivals to a grid of ticks.

A timer (a cron job, a health probe, a scheduled batch) calls at ``t0 + n * P`` with a
little jitter, and now and then skips a tick.  Its *idle times* (last request done ->
next request) are noisy, because the duration of each call moves them, but its
*arrival times* are not: so the fit is on arrivals.  Each gap is given a whole
number of periods (a skip is a gap of 2 or 3), the ticks are fitted by least squares
(arrival = t0 + P * tick), and the next tick is predicted with the spread the recent
ones had around the line.

Pure: numbers in, numbers out.  All times are seconds.
"""
from __future__ import annotations

from dataclasses import dataclass

FIT_ARRIVALS = 17        # the recent arrivals fitted (16 gaps)
MIN_ARRIVALS = 5         # fewer say nothing about a period
MAX_SKIP = 3             # a gap of more than this many periods is not a skipped tick
GAP_TOLERANCE = 0.2      # each gap within this share of a period of a whole number of periods
MAX_SPREAD = 0.3         # the ticks' spread around the line, at most this share of the period


@dataclass(frozen=True)
class TickFit:
    period: float        # P, seconds
    next_at: float       # when the next tick is due (on the fitted line)
    early: float         # the recent ticks came this much before the line at most (<= 0) ...
    late: float          # ... and this much after it (>= 0)
    skipped: float       # share of the fitted ticks that did not come


def fit_ticks(arrivals, min_period: float = 0.0) -> TickFit | None:
    """A tick grid through the last ``FIT_ARRIVALS`` of ``arrivals`` (times, ascending), or
    None when they are not a timer's: too few, a period of ``min_period`` or less, a gap that
    is not (close to) a whole number of periods, or a spread too wide to plan for."""
    times = list(arrivals)[-FIT_ARRIVALS:]
    if len(times) < MIN_ARRIVALS:
        return None
    gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
    guess = sorted(gaps)[len(gaps) // 2]          # the median gap: most gaps are one tick
    if guess <= min_period:
        return None
    ticks = [0]
    for g in gaps:
        m = round(g / guess)
        if m < 1 or m > MAX_SKIP or abs(g - m * guess) > GAP_TOLERANCE * guess:
            return None
        ticks.append(ticks[-1] + m)
    n = len(times)
    mean_k = sum(ticks) / n
    mean_t = sum(times) / n
    var_k = sum((k - mean_k) ** 2 for k in ticks)
    period = sum((k - mean_k) * (t - mean_t) for k, t in zip(ticks, times, strict=True)) / var_k
    if period <= min_period:
        return None
    t0 = mean_t - period * mean_k
    residuals = [t - (t0 + period * k) for k, t in zip(ticks, times, strict=True)]
    early, late = min(residuals), max(residuals)
    if late - early > MAX_SPREAD * period:
        return None
    return TickFit(period=period, next_at=t0 + period * (ticks[-1] + 1), early=early, late=late,
                   skipped=1.0 - (n - 1) / ticks[-1])
