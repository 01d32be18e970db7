"""Latency of a CPU-bound scikit-learn model per memory tier: with CPU in proportion to memory a
bigger tier answers faster, which is what makes it worth choosing.

The model is a brute-force KNeighborsClassifier (its distances are one BLAS matrix product, so
it uses as many threads as the sandbox's pool has); each request scores 2,000 rows against
20,000.  Each tier gets a warm sandbox and ``--samples`` timed invocations; the baseline,
measured in the same run, is the 1 GB tier on a gateway with ``--cpu-per-gb 0`` (no quotas:
every sandbox may use the whole host).  Read the ratios: the machine is shared and noisy.

    .venv/bin/python benchmarks/tiers.py [--samples 15] [--format table|json]
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._servers import start_gateway, stop_server, timed_invocation  # noqa: E402
from gateway.client import Client  # noqa: E402
from gateway.config import MEMORY_TIERS_MB  # noqa: E402
from gateway.reportkit.stats import percentile  # noqa: E402


def make_model_and_body():
    import numpy as np
    from sklearn.neighbors import KNeighborsClassifier

    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(20_000, 20)), rng.integers(0, 3, size=20_000)
    model = KNeighborsClassifier(n_neighbors=5, algorithm="brute").fit(X, y)
    return model, json.dumps(rng.normal(size=(2_000, 20)).round(4).tolist()).encode()


def measure(client: Client, url: str, name: str, body: bytes, samples: int) -> dict:
    for _ in range(2):                             # a warm sandbox, its pages touched
        timed_invocation(url, name, body)
    lat = [timed_invocation(url, name, body) for _ in range(samples)]
    pool = client.describe(name)["variants"][0]["pool"]
    return {"p50_ms": percentile(lat, 50), "p99_ms": percentile(lat, 99), "vcpus": pool.get("vcpus") or 0.0}


def main() -> int:
    ap = argparse.ArgumentParser(description="CPU-bound model latency per memory tier.")
    ap.add_argument("--samples", type=int, default=15)
    ap.add_argument("--format", choices=["table", "json"], default="table")
    args = ap.parse_args()
    model, body = make_model_and_body()
    tmp = Path(tempfile.mkdtemp(prefix="slimserve-tiers-"))
    procs, rows = [], []
    try:
        free_proc, free_url = start_gateway(tmp / "free", "--cpu-per-gb", "0")
        procs.append(free_proc)
        free = Client(free_url, state_dir=tmp / "free")
        free.deploy("knn", model, memory_mb=1024)
        baseline = measure(free, free_url, "knn", body, args.samples)
        stop_server(free_proc)
        proc, url = start_gateway(tmp / "tiers")
        procs.append(proc)
        client = Client(url, state_dir=tmp / "tiers")
        for mb in MEMORY_TIERS_MB:
            client.deploy(f"knn-{mb}", model, memory_mb=mb)
            rows.append(dict(measure(client, url, f"knn-{mb}", body, args.samples), memory_mb=mb))
            client.delete(f"knn-{mb}")                # one tier's sandbox at a time: no contention between them
    finally:
        for p in procs:
            stop_server(p)
        shutil.rmtree(tmp, ignore_errors=True)
    one = rows[0]["p50_ms"]
    for r in rows:
        r["speedup_vs_1gb"] = one / r["p50_ms"]
    if args.format == "json":
        print(json.dumps({"baseline_no_quota_1gb": baseline, "tiers": rows}, indent=1))
        return 0
    print("CPU-bound model (brute-force k-NN, 2,000 x 20,000 distances) per tier, warm, client-side")
    print(f"{'tier':>8} {'vCPU':>6} {'p50 ms':>9} {'p99 ms':>9} {'vs 1 GB':>8}")
    for r in rows:
        print(f"{r['memory_mb']:>5} MB {r['vcpus']:>6.3f} {r['p50_ms']:>9.1f} {r['p99_ms']:>9.1f} "
              f"{r['speedup_vs_1gb']:>7.2f}x")
    print(f"baseline: 1 GB with no CPU quota (--cpu-per-gb 0)  p50 {baseline['p50_ms']:.1f} ms  "
          f"p99 {baseline['p99_ms']:.1f} ms")
    print(f"1 GB with its quota / 1 GB without: {one / baseline['p50_ms']:.2f}x the latency")
    return 0


if __name__ == "__main__":
    sys.exit(main())
