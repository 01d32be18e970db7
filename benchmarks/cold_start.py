"""Cold start to first response: fresh interpreters against zygote forks, in one run.

The bundle is a cloudpickled RandomForestClassifier (50 trees, iris) on the
2048 MB tier.  Each sample is one invocation, timed by the client through the
gateway, that found no warm sandbox: the benchmark scales the endpoint in
(``POST /admin/endpoints/{name}/scale-in``) before every sample.

  fresh         a gateway started with --no-zygotes: a new interpreter imports
                numpy and scikit-learn, unpickles the model, predicts
  model-zygote  the default gateway, for an endpoint with traffic: a stem of the
                zygote that already holds the model takes the request
  zygote        the default gateway, first request of a newly deployed endpoint:
                a stem of the base zygote (libraries imported) loads the model

Every sample's path is read back from its usage record, so a sample that took
another path than its label says is reported, not hidden.  The last line is
the ratio of the fresh p50 to the model-zygote p50.

    .venv/bin/python benchmarks/cold_start.py [--samples 40] [--fresh-samples 8] [--endpoints 10]
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._servers import start_gateway, stop_server, timed_invocation  # noqa: E402
from gateway.client import Client  # noqa: E402
from gateway.reportkit.stats import percentile  # noqa: E402

BODY = json.dumps([[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]]).encode()


def make_model():
    from sklearn.datasets import load_iris
    from sklearn.ensemble import RandomForestClassifier

    X, y = load_iris(return_X_y=True)
    return RandomForestClassifier(n_estimators=50, random_state=0).fit(X, y)


def timed_invoke(url: str, name: str) -> float:
    return timed_invocation(url, name, BODY, timeout=120)


def wait_for(pred, timeout: float = 60.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.1)
    return False


def cold_samples(client: Client, url: str, name: str, n: int, pause_s: float) -> list[tuple[float, dict]]:
    out = []
    for _ in range(n):
        client.scale_in(name)
        time.sleep(pause_s)                       # cold starts arrive apart, as they do in real traffic
        ms = timed_invoke(url, name)
        out.append((ms, client.usage(endpoint=name, limit=1)[-1]))
    return out


def summarise(label: str, samples: list[tuple[float, dict]], expect_path: str) -> dict:
    lat = [ms for ms, _ in samples]
    paths = [u.get("start_path") for _, u in samples]
    inits = [u["init_ms"] for _, u in samples]
    phases: dict[str, list[float]] = {}
    for _, u in samples:
        for k, v in json.loads(u.get("init_detail") or "{}").items():
            phases.setdefault(k, []).append(v)
    return {
        "label": label, "samples": len(lat), "p50_ms": percentile(lat, 50), "p99_ms": percentile(lat, 99),
        "max_ms": max(lat), "gateway_init_p50_ms": percentile(inits, 50),
        "phases_p50_ms": {k: round(percentile(v, 50), 3) for k, v in sorted(phases.items())},
        "off_path": sum(1 for p in paths if p != expect_path), "cold": all(u["cold_start"] for _, u in samples),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description="Cold start: fresh interpreter against zygote fork.")
    ap.add_argument("--samples", type=int, default=40, help="model-zygote cold starts")
    ap.add_argument("--fresh-samples", type=int, default=8, help="fresh-interpreter cold starts (about 1 s each)")
    ap.add_argument("--endpoints", type=int, default=10, help="new endpoints for base-zygote first requests")
    ap.add_argument("--pause", type=float, default=0.2, help="seconds between cold starts")
    ap.add_argument("--format", choices=["table", "json"], default="table")
    args = ap.parse_args()

    model = make_model()
    tmp = Path(tempfile.mkdtemp(prefix="slimserve-cold-"))
    procs = []
    results = []
    try:
        fresh_proc, fresh_url = start_gateway(tmp / "fresh", "--no-zygotes")
        procs.append(fresh_proc)
        zy_proc, zy_url = start_gateway(tmp / "zygote")
        procs.append(zy_proc)
        fresh = Client(fresh_url, state_dir=tmp / "fresh")
        zy = Client(zy_url, state_dir=tmp / "zygote")
        if not wait_for(lambda: (zy.zygotes().get("base") or {}).get("alive")):
            raise RuntimeError("the base zygote did not come up")

        fresh.deploy("rf", model, memory_mb=2048)
        results.append(summarise("fresh", cold_samples(fresh, fresh_url, "rf", args.fresh_samples, args.pause),
                                 "fresh"))

        first = []
        for i in range(args.endpoints):
            zy.deploy(f"rf-{i}", model, memory_mb=2048)
            time.sleep(args.pause)
            ms = timed_invoke(zy_url, f"rf-{i}")
            first.append((ms, zy.usage(endpoint=f"rf-{i}", limit=1)[-1]))
        results.append(summarise("zygote", first, "zygote"))

        zy.deploy("rf", model, memory_mb=2048)
        timed_invoke(zy_url, "rf")                 # traffic: the model zygote is made in the background
        wait_for(lambda: any("/rf/" in m["bundle"] and m["alive"] for m in zy.zygotes()["models"]))
        results.append(summarise("model-zygote", cold_samples(zy, zy_url, "rf", args.samples, args.pause),
                                 "model-zygote"))
    finally:
        for p in procs:
            stop_server(p)
        shutil.rmtree(tmp, ignore_errors=True)

    by = {r["label"]: r for r in results}
    ratio = by["fresh"]["p50_ms"] / by["model-zygote"]["p50_ms"]
    if args.format == "json":
        print(json.dumps({"paths": results, "fresh_over_model_zygote_p50": ratio}, indent=2))
        return 0
    print("cold start to first response, client-side through the gateway (RandomForest 50 trees, 2048 MB)")
    print(f"{'path':14} {'samples':>7} {'p50 ms':>9} {'p99 ms':>9} {'max ms':>9} {'init p50':>9}  phases (p50 ms)")
    for r in results:
        phases = ", ".join(f"{k[:-3]} {v:.2f}" for k, v in r["phases_p50_ms"].items() if k != "total_ms")
        print(f"{r['label']:14} {r['samples']:7d} {r['p50_ms']:9.2f} {r['p99_ms']:9.2f} {r['max_ms']:9.2f}"
              f" {r['gateway_init_p50_ms']:9.2f}  {phases}")
        if r["off_path"] or not r["cold"]:
            print(f"  NOTE: {r['off_path']} sample(s) took another path; all cold: {r['cold']}")
    print(f"fresh p50 / zygote p50 = {by['fresh']['p50_ms'] / by['zygote']['p50_ms']:.1f}x")
    print(f"fresh p50 / model-zygote p50 = {ratio:.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
