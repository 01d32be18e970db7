"""The warm-pool goal of issue 20, part 1, checked on traces: adaptive against the clairvoyant frontier.

For each trace it measures, beside ``fixed:600`` in the same run:

1. **At adaptive's own cold starts**: the idle GB-s adaptive needs against the least any keep-alive
   policy could need for as few (``keepalive_bound.idle_needed``, the clairvoyant frontier).  Goal:
   no more than that plus 5 % of fixed:600's idle.
2. **At fixed:600's idle**: adaptive:H's cold starts, H doubled from the default until its idle passes
   fixed:600's and interpolated between the last two.  Goal: at most half of fixed:600's cold starts,
   or, where even the bound cannot halve them at that idle, the bound's cold starts there plus 5 %.
3. **Against histogram** (Shahrad et al.): fewer cold starts and less idle memory.

Ratios are to fixed:600 on the same trace.  Timers are free in the bound (see keepalive_bound.py):
it is a lower bound no real policy reaches.

    .venv/bin/python benchmarks/warm_pool_goal.py --trace ../shared/traces/dev-mixed-12h.csv.gz \\
        --trace /tmp/gen-1.csv.gz --jobs 2
"""
from __future__ import annotations

import argparse
import json
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from keepalive_bound import LAMS, frontier, idle_needed  # noqa: E402

from gateway.pools.policy import parse  # noqa: E402
from gateway.pools.simulate import read_trace, simulate  # noqa: E402

SLACK = 0.05           # of fixed:600's idle (1) and cold starts (2)


def cold_needed(points: list[dict], idle: float) -> float:
    """The fewest cold starts (ratio) for which the bound needs no more than ``idle`` (ratio)."""
    lo, hi = 0.0, 10.0
    for _ in range(60):
        mid = (lo + hi) / 2
        if idle_needed(points, mid) <= idle:
            hi = mid
        else:
            lo = mid
    return hi


def check(trace: str) -> dict:
    rows = list(read_trace(trace))
    base, points = frontier(rows, LAMS)
    B, C = base["idle_gb_s"], base["cold_starts"]

    def ratios(spec: str) -> tuple[float, float]:
        r = simulate(iter(rows), parse(spec))
        return r["cold_starts"] / C, r["idle_gb_s"] / B

    cold, idle = ratios("adaptive")
    need = idle_needed(points, cold)
    sweep = [(2400.0, cold, idle)]
    while sweep[-1][2] < 1.0 and sweep[-1][0] < 2400.0 * 64:
        h = sweep[-1][0] * 2
        sweep.append((h, *ratios(f"adaptive:{h:g}")))
    if sweep[-1][2] >= 1.0 and len(sweep) > 1:
        (_, c0, i0), (_, c1, i1) = sweep[-2], sweep[-1]
        cold_at = c0 + (1.0 - i0) / (i1 - i0) * (c1 - c0)
    else:
        cold_at = float("nan")
    bound_cold = cold_needed(points, 1.0)
    target = 0.5 if bound_cold <= 0.5 else bound_cold + SLACK
    h_cold, h_idle = ratios("histogram")
    return {
        "trace": Path(trace).name, "invocations": len(rows), "fixed_cold": C, "fixed_idle_gb_s": round(B),
        "adaptive_cold": round(cold, 3), "adaptive_idle": round(idle, 3), "bound_idle": round(need, 3),
        "excess": round(idle - need, 3), "goal1": idle - need <= SLACK,
        "cold_at_fixed_idle": round(cold_at, 3), "target": round(target, 3), "bound_cold": round(bound_cold, 3),
        "goal2": cold_at <= target,
        "histogram_cold": round(h_cold, 3), "histogram_idle": round(h_idle, 3),
        "goal3": cold < h_cold and idle < h_idle,
        "sweep": [(h, round(c, 3), round(i, 3)) for h, c, i in sweep],
    }


def main() -> int:
    ap = argparse.ArgumentParser(description="Issue 20's frontier goal for the adaptive warm-pool policy.")
    ap.add_argument("--trace", action="append", required=True)
    ap.add_argument("--jobs", type=int, default=1, help="traces checked at once (processes)")
    ap.add_argument("--json", action="store_true", help="one JSON object per trace")
    args = ap.parse_args()
    with ProcessPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        results = list(pool.map(check, args.trace))
    if args.json:
        for r in results:
            print(json.dumps(r))
        return 0
    print(f"{'trace':>16} {'invocations':>11} | {'adaptive cold':>13} {'idle':>6} {'bound idle':>10} "
          f"{'excess':>7} {'(1)':>4} | {'cold at fixed idle':>18} {'target':>7} {'(2)':>4} | "
          f"{'histogram cold':>14} {'idle':>6} {'(3)':>4}")
    for r in results:
        ok = {k: "ok" if r[k] else "no" for k in ("goal1", "goal2", "goal3")}
        print(f"{r['trace'][:16]:>16} {r['invocations']:>11,} | {r['adaptive_cold']:>13.3f} {r['adaptive_idle']:>6.3f} "
              f"{r['bound_idle']:>10.3f} {r['excess']:>+7.3f} {ok['goal1']:>4} | {r['cold_at_fixed_idle']:>18.3f} "
              f"{r['target']:>7.3f} {ok['goal2']:>4} | {r['histogram_cold']:>14.3f} {r['histogram_idle']:>6.3f} "
              f"{ok['goal3']:>4}")
    print("ratios to fixed:600 on the same trace; (1) excess <= 0.05, (2) cold at fixed:600's idle <= target, "
          "(3) fewer cold starts and less idle than histogram")
    return 0


if __name__ == "__main__":
    sys.exit(main())
