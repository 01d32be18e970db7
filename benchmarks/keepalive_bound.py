"""How far can a keep-alive policy go on a trace?  A clairvoyant bound for the warm-pool goal.

The goal (issue 4) asks a policy to reach, against ``fixed:600`` on the same trace,
at most 50 % of its cold starts, at most 50 % of its endpoint cold-start p75 and at
most 70 % of its idle GB-s.  This script measures what the best policy of the
*keep-alive family* could reach if it knew the future:

* For every endpoint and concurrency level it knows, in advance, every idle time
  (IT) that level will see in the trace, and keeps each idle sandbox for the one
  constant keep-alive k that is best in hindsight at a price ``lam``, the GB-s of
  idle memory one cold start is worth: the argmin of  memory * (sum(min(IT, k)) +
  sum(min(tail, k))) + lam * #(IT > k), a tail being the time from a level's last
  use to the end of the trace.  ``fixed:S`` and the keep-alive half of the
  histogram policy are members of this family; a clairvoyant member is at least
  as good as any of them.
* Timer endpoints (named ``*-timer`` by tracegen and in the sample traces) are
  counted as perfect on top: one cold start each (the first), no idle memory.

Each ``lam`` gives one point: the member that minimises  idle + lam * cold starts,
since the cost is a sum of independent per-endpoint, per-level choices.  So no
member lies below the line through that point of slope -lam, and the highest of
those lines at a given number of cold starts bounds from below the idle memory any
member needs for it.  The script prints the points as ratios to ``fixed:600`` and
that bound at the goal's 50 %.  The argument holds for the cost model; the points
are measured by the simulator, which agrees with it up to the cold-start delays
(ITs are recorded in a ``fixed:600`` run, and another policy's cold starts shift
departures by the cold-start latency) and to levels sharing the last slot.

A second table (``--per-endpoint``) is not a bound but a measure of headroom: it
runs ``fixed:S`` and ``adaptive:H`` over grids of S and H and, in hindsight, picks
for every endpoint the run that is cheapest at the price ``lam`` (then, for the
p75 bar, switches the endpoints cheapest to bring to the bar until the 75th
percentile gets there).  It shows what learning one trade-off per endpoint,
perfectly, could add to a single setting for all.

The first table does not bound dynamic policies: ``adaptive`` pre-warms, scales out
at the start of an episode and follows a changing rate, and beats it on some traces.

    .venv/bin/python benchmarks/keepalive_bound.py --trace ../shared/traces/dev-mixed-12h.csv.gz
"""
from __future__ import annotations

import argparse
import bisect
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gateway.pools.policy import FixedKeepAlive, Plan, parse  # noqa: E402
from gateway.pools.simulate import read_trace, simulate  # noqa: E402
from gateway.pools.traffic import LEVELS, Traffic  # noqa: E402
from gateway.reportkit.stats import percentile  # noqa: E402

GOAL = {"cold": 0.50, "p75": 0.50, "idle": 0.70}
LAMS = [100 * 2 ** (i / 2) for i in range(21)]          # 100 .. 102,400 GB-s per cold start


def best_keep_alive(its: list[float], memory_gb: float, lam: float, tails: list[float] = ()) -> float:
    """The constant keep-alive k minimising  memory * (sum(min(IT, k)) + sum(min(tail, k)))
    + lam * #(IT > k).  A *tail* is the time from a level's last drop to the end of the
    trace: no request comes to end it, so keeping the sandbox only costs (up to k)."""
    its, tails = sorted(its), sorted(tails)
    tail_sum = [0.0]
    for t in tails:
        tail_sum.append(tail_sum[-1] + t)

    def tail_cost(k: float) -> float:              # sum(min(tail, k))
        j = bisect.bisect_right(tails, k)
        return tail_sum[j] + k * (len(tails) - j)

    n = len(its)
    best_cost, best_k = lam * n, 0.0               # k = 0: every IT ends in a cold start
    below = 0.0
    for i, it in enumerate(its):
        below += it
        above = n - i - 1
        cost = memory_gb * (below + it * above + tail_cost(it)) + lam * above
        if cost < best_cost:
            best_cost, best_k = cost, it
    return best_k


class _Recorder(FixedKeepAlive):
    """fixed:600 that also writes down every IT of every endpoint and level, and at the
    end the open tails (levels whose sandbox went idle and was never needed again)."""

    def __init__(self) -> None:
        super().__init__(600.0)
        object.__setattr__(self, "its", {})
        object.__setattr__(self, "seen", {})

    def _drain(self, traffic: Traffic) -> None:
        # Each level keeps only its last 16 ITs: read them at every arrival and departure.
        self.seen[traffic.name] = traffic
        for slot in range(1, LEVELS + 1):
            new = min(traffic.fresh[slot], len(traffic.its[slot]))
            if new:
                self.its.setdefault((traffic.name, slot), []).extend(list(traffic.its[slot])[-new:])
                traffic.fresh[slot] = 0

    def plan(self, traffic: Traffic, level: int, now: float) -> Plan:
        self._drain(traffic)
        return super().plan(traffic, level, now)

    def scale_out(self, traffic: Traffic, now: float, alive: int) -> tuple[int, float]:
        self._drain(traffic)
        return 0, 0.0

    def tails(self, horizon: float) -> dict[tuple[str, int], list[float]]:
        out: dict[tuple[str, int], list[float]] = {}
        for name, traffic in self.seen.items():
            for level, dropped in traffic.drops.items():
                out.setdefault((name, min(level, LEVELS)), []).append(max(0.0, horizon - dropped))
        return out


class _Clairvoyant:
    """Keeps each idle sandbox for its endpoint-level's hindsight-best keep-alive."""

    name = "clairvoyant keep-alive"

    def __init__(self, keep: dict[tuple[str, int], float]) -> None:
        self.keep = keep

    def plan(self, traffic: Traffic, level: int, now: float) -> Plan:
        # An IT equal to k counts as caught; the epsilon keeps float rounding from missing it.
        k = self.keep.get((traffic.name, min(level, LEVELS)), 0.0)
        return Plan(expire_at=now + k + 1e-6 if k else now)

    def scale_out(self, traffic: Traffic, now: float, alive: int) -> tuple[int, float]:
        return 0, 0.0


def frontier(rows: list, lams: list[float]) -> tuple[dict, list[dict]]:
    base = simulate(iter(rows), FixedKeepAlive(600.0))
    timers = {r[1] for r in rows if r[1].endswith("-timer")}
    timer_inv: dict[str, int] = {}
    for r in rows:
        if r[1] in timers:
            timer_inv[r[1]] = timer_inv.get(r[1], 0) + 1
    rest = [r for r in rows if r[1] not in timers]
    memory = {r[1]: r[3] / 1024.0 for r in rest}
    recorder = _Recorder()
    simulate(iter(rest), recorder)
    horizon = max((r[0] + r[2] for r in rest), default=0.0)   # about where the books close
    tails = recorder.tails(horizon)
    points = []
    for lam in lams:
        keep = {key: best_keep_alive(its, memory[key[0]], lam, tails.get(key, ())) for key, its in recorder.its.items()}
        r = simulate(iter(rest), _Clairvoyant(keep))
        per_ep = [100.0 * e["cold_starts"] / e["invocations"] for e in r["by_endpoint"].values()]
        per_ep += [100.0 / n for n in timer_inv.values()]
        points.append({
            "lam": lam,
            "lam_ratio": lam * base["cold_starts"] / base["idle_gb_s"],
            "cold": (r["cold_starts"] + len(timers)) / base["cold_starts"],
            "p75": percentile(per_ep, 75) / base["endpoint_cold_start_pct_p75"],
            "idle": r["idle_gb_s"] / base["idle_gb_s"],
        })
    return base, points


CHOICES = ["none"] + [f"fixed:{s}" for s in (60, 300, 600, 1200, 2400, 4800, 9600, 21600, 43200)] \
    + [f"adaptive:{h}" for h in (150, 300, 600, 1200, 2400, 4800, 9600, 19200, 38400)]


def per_endpoint_choice(rows: list, base: dict, lams: list[float], specs: list[str] = CHOICES) -> list[dict]:
    """For each price, the hindsight-best run per endpoint (see the module docstring)."""
    runs = {spec: simulate(iter(rows), parse(spec))["by_endpoint"] for spec in specs}
    names = list(base["by_endpoint"])
    inv = {n: base["by_endpoint"][n]["invocations"] for n in names}
    goal_p75 = GOAL["p75"] * base["endpoint_cold_start_pct_p75"]

    def pct(spec: str, n: str) -> float:
        return 100.0 * runs[spec][n]["cold_starts"] / inv[n]

    points = []
    for lam in lams:
        def cost(spec: str, n: str, lam: float = lam) -> float:
            return runs[spec][n]["idle_gb_s"] + lam * runs[spec][n]["cold_starts"]

        pick = {n: min(specs, key=lambda spec: cost(spec, n)) for n in names}
        while percentile([pct(pick[n], n) for n in names], 75) > goal_p75:
            options = [(cost(spec, n) - cost(pick[n], n), n, spec) for n in names if pct(pick[n], n) > goal_p75
                       for spec in specs if pct(spec, n) <= goal_p75]
            if not options:
                break
            _, n, spec = min(options)
            pick[n] = spec
        points.append({
            "lam": lam,
            "cold": sum(runs[pick[n]][n]["cold_starts"] for n in names) / base["cold_starts"],
            "p75": percentile([pct(pick[n], n) for n in names], 75) / base["endpoint_cold_start_pct_p75"],
            "idle": sum(runs[pick[n]][n]["idle_gb_s"] for n in names) / base["idle_gb_s"],
        })
    return points


def idle_needed(points: list[dict], cold: float) -> float | None:
    """Lower bound on the idle ratio of any family member with ``cold`` (ratio) cold starts.

    Each point minimises  idle + lam * cold  over the family (per endpoint and level, on
    the recorded ITs), so no member lies below the line through it of slope -lam (in
    ratio units: lam * base cold starts / base idle).  The bound is the highest of those
    lines at ``cold``; None without points."""
    lines = [p["idle"] + p["lam_ratio"] * (p["cold"] - cold) for p in points]
    return max(lines) if lines else None


def main() -> int:
    ap = argparse.ArgumentParser(description="Clairvoyant keep-alive frontier against the warm-pool goal.")
    ap.add_argument("--trace", action="append", required=True, type=Path)
    ap.add_argument("--compare", action="append", default=[], metavar="POLICY",
                    help="also run this policy (e.g. adaptive) and set it against the frontier")
    ap.add_argument("--per-endpoint", action="store_true",
                    help="also pick fixed:S / adaptive:H per endpoint in hindsight (headroom, not a bound)")
    args = ap.parse_args()
    for trace in args.trace:
        rows = list(read_trace(trace))
        base, points = frontier(rows, LAMS)
        print(f"\n{trace.name}: fixed:600 has {base['cold_starts']:,} cold starts, "
              f"p75 {base['endpoint_cold_start_pct_p75']:.1f} %, {base['idle_gb_s']:,.0f} idle GB-s")
        _print_points("clairvoyant keep-alive, timers free", points)
        need = idle_needed(points, GOAL["cold"])
        if need is not None:
            print(f"at {GOAL['cold']:.2f} of the cold starts the family needs at least {need:.2f} of the idle "
                  f"(goal {GOAL['idle']:.2f})")
        for spec in args.compare:
            r = simulate(iter(rows), parse(spec))
            cold = r["cold_starts"] / base["cold_starts"]
            p75 = r["endpoint_cold_start_pct_p75"] / base["endpoint_cold_start_pct_p75"]
            idle = r["idle_gb_s"] / base["idle_gb_s"]
            need = idle_needed(points, cold)
            versus = f"; the family needs {need:.2f} of the idle for as few cold starts" if need is not None else ""
            print(f"{spec}: {cold:.2f} / {p75:.2f} / {idle:.2f}{versus}")
        if args.per_endpoint:
            _print_points("hindsight pick of fixed:S / adaptive:H per endpoint",
                          per_endpoint_choice(rows, base, LAMS[4:17:2]))
    return 0


def _print_points(title: str, points: list[dict]) -> None:
    print(f"{title}, as ratios to fixed:600:")
    print(f"{'lam GB-s':>10}  {'cold':>6}  {'p75':>6}  {'idle':>6}")
    for p in points:
        meets = all(p[k] <= GOAL[k] for k in GOAL)
        print(f"{p['lam']:>10,.0f}  {p['cold']:>6.2f}  {p['p75']:>6.2f}  {p['idle']:>6.2f}"
              + ("   meets the goal" if meets else ""))


if __name__ == "__main__":
    sys.exit(main())
