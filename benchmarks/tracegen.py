"""Synthetic invocation traces for the warm-pool policy: many shapes, any seed.

Shapes, each drawn per endpoint with its own parameters (shaped after published
studies of production serverless workloads: timer triggers with many periods,
Poisson and heavy-tailed arrivals, daily peaks, batch bursts, rare functions):

  diurnal   Poisson arrivals whose rate follows a day with lunch and dinner peaks
  timer     a fixed period (30 s .. 2 h) with a little jitter, sometimes skipped
  poisson   a constant rate (one every few seconds .. one every half hour)
  burst     batches of tens to hundreds of calls within a minute, at random hours
  heavy     short sessions separated by heavy-tailed (Pareto) silences
  rare      a handful of calls at random times

Durations are lognormal per endpoint; memory sizes are drawn from the tiers.
Output: CSV (gzip when the name ends in .gz), header
``endpoint,start_s,duration_ms,memory_mb``, sorted by start.

    .venv/bin/python benchmarks/tracegen.py --hours 24 --endpoints 200 --seed 7 --out /tmp/t.csv.gz
"""
from __future__ import annotations

import argparse
import csv
import gzip
import heapq
import math
import random
import sys
from pathlib import Path

TIERS = (1024, 2048, 3072, 4096, 5120, 6144)
SHAPES = {"diurnal": 0.12, "timer": 0.25, "poisson": 0.22, "burst": 0.08, "heavy": 0.13, "rare": 0.20}
DAY = 86400.0


def day_curve(t: float, phase: float) -> float:
    """Relative load over a day: a base plus lunch and dinner peaks (mean about 1)."""
    h = ((t + phase) % DAY) / 3600.0
    lunch = math.exp(-((h - 12.5) ** 2) / 2.0)
    dinner = 0.7 * math.exp(-((h - 19.0) ** 2) / 3.0)
    night = 0.15
    return (night + 1.6 * lunch + 1.6 * dinner) / 1.05


def diurnal(rng, horizon):
    peak_rate = rng.uniform(0.05, 1.5)            # requests/s at the busiest hour
    phase = rng.uniform(0, DAY)
    t = 0.0
    while True:
        t += rng.expovariate(peak_rate * 2.2)     # thinning: propose at the maximum rate
        if t >= horizon:
            return
        if rng.random() < day_curve(t, phase) / 2.2:
            yield t


def timer(rng, horizon):
    period = rng.choice([30, 60, 120, 300, 600, 900, 1200, 1800, 3600, 7200])
    jitter = period * rng.uniform(0.0, 0.01) + rng.uniform(0, 2)
    skip = rng.choice([0.0, 0.0, 0.02, 0.1])
    t = rng.uniform(0, period)
    while t < horizon:
        if rng.random() >= skip:
            yield max(0.0, t + rng.uniform(-jitter, jitter))
        t += period


def poisson(rng, horizon):
    mean_gap = math.exp(rng.uniform(math.log(3), math.log(1800)))
    t = rng.expovariate(1 / mean_gap)
    while t < horizon:
        yield t
        t += rng.expovariate(1 / mean_gap)


def burst(rng, horizon):
    mean_gap = rng.uniform(1800, 4 * 3600)
    t = rng.expovariate(1 / mean_gap)
    while t < horizon:
        size = int(rng.paretovariate(1.2) * 30)
        span = rng.uniform(5, 60)
        for x in sorted(rng.uniform(0, span) for _ in range(min(size, 2000))):
            if t + x < horizon:
                yield t + x
        t += span + rng.expovariate(1 / mean_gap)


def heavy(rng, horizon):
    t = rng.uniform(0, 600)
    scale = rng.uniform(20, 200)
    while t < horizon:
        for _ in range(rng.randint(1, 40)):                # a session of closely spaced calls
            t += rng.expovariate(1 / rng.uniform(2, 15))
            if t >= horizon:
                return
            yield t
        t += scale * rng.paretovariate(1.1)               # a heavy-tailed silence


def rare(rng, horizon):
    for t in sorted(rng.uniform(0, horizon) for _ in range(rng.randint(1, 6))):
        yield t


GENERATORS = {"diurnal": diurnal, "timer": timer, "poisson": poisson, "burst": burst, "heavy": heavy, "rare": rare}


def endpoint_rows(i: int, shape: str, rng: random.Random, horizon: float):
    name = f"ep-{i:04d}-{shape}"
    memory = rng.choice(TIERS)
    median_s = math.exp(rng.uniform(math.log(0.02), math.log(3.0)))
    sigma = rng.uniform(0.2, 1.0)
    for t in GENERATORS[shape](rng, horizon):
        dur_ms = max(1, int(rng.lognormvariate(math.log(median_s * 1000), sigma)))
        yield (round(t, 3), name, dur_ms, memory)


def generate(hours: float, endpoints: int, seed: int, shapes: dict[str, float] | None = None):
    """All rows of a trace, sorted by start."""
    rng = random.Random(seed)
    shapes = shapes or SHAPES
    names, weights = zip(*shapes.items(), strict=True)
    horizon = hours * 3600.0
    streams = []
    for i in range(endpoints):
        shape = rng.choices(names, weights)[0]
        streams.append(endpoint_rows(i, shape, random.Random(rng.getrandbits(64)), horizon))
    return heapq.merge(*(sorted(s) for s in streams))


def write(rows, out: Path) -> int:
    out.parent.mkdir(parents=True, exist_ok=True)
    opener = gzip.open if out.suffix == ".gz" else open
    n = 0
    with opener(out, "wt", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["endpoint", "start_s", "duration_ms", "memory_mb"])
        for start, name, dur, mem in rows:
            w.writerow([name, f"{start:.3f}", dur, mem])
            n += 1
    return n


def main() -> int:
    ap = argparse.ArgumentParser(description="Generate a synthetic invocation trace.")
    ap.add_argument("--hours", type=float, default=24.0)
    ap.add_argument("--endpoints", type=int, default=200)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    n = write(generate(args.hours, args.endpoints, args.seed), args.out)
    print(f"{args.out}: {n} invocations, {args.endpoints} endpoints, {args.hours:g} h (seed {args.seed})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
