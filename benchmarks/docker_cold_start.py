"""Docker backend cold start: paused stem containers against a plain create + start, beside
the process backend's model zygote, in one run.

The bundle is the cold-start benchmark's RandomForest (50 trees, iris) on 2048 MB.  Before
each sample the endpoint is scaled in, so the invocation finds no warm sandbox; the pause
between samples lets the backend prepare its next stem, as idle time between cold starts
does in real traffic.  Paths are read back from the usage records.

    .venv/bin/python benchmarks/docker_cold_start.py [--samples 20] [--fresh-samples 6]
"""
from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._servers import start_gateway, stop_server  # noqa: E402
from benchmarks.cold_start import cold_samples, make_model, summarise, timed_invoke, wait_for  # noqa: E402
from gateway.client import Client  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--samples", type=int, default=20)
    ap.add_argument("--fresh-samples", type=int, default=6)
    ap.add_argument("--pause", type=float, default=2.0, help="seconds between cold starts (stems refill)")
    args = ap.parse_args()

    import docker

    from runtime.docker import image

    image.build(docker.from_env(), log=lambda m: print(m, file=sys.stderr))
    model = make_model()
    tmp = Path(tempfile.mkdtemp(prefix="slimserve-dcold-"))
    procs, results = [], []
    try:
        for label, extra, n, expect in [
            ("docker stem", ("--backend", "docker"), args.samples, "stem"),
            ("docker fresh", ("--backend", "docker", "--docker-stems", "0"), args.fresh_samples, "fresh"),
            ("process model-zygote", (), args.samples, "model-zygote"),
        ]:
            state = tmp / label.replace(" ", "-")
            proc, url = start_gateway(state, *extra)
            procs.append(proc)
            client = Client(url, state_dir=state)
            client.deploy("rf", model, memory_mb=2048)
            timed_invoke(url, "rf")                              # first request: warms zygotes / stems
            if expect == "model-zygote":
                wait_for(lambda client=client: any("/rf/" in m["bundle"] and m["alive"]
                                                 for m in client.zygotes()["models"]))
            time.sleep(args.pause)
            results.append(summarise(label, cold_samples(client, url, "rf", n, args.pause), expect))
            stop_server(proc)
            procs.remove(proc)
    finally:
        for p in procs:
            stop_server(p)
        shutil.rmtree(tmp, ignore_errors=True)
    by = {r["label"]: r for r in results}
    print("cold start to first response, client-side through the gateway (RandomForest 50 trees, 2048 MB)")
    print(f"{'path':22} {'samples':>7} {'p50 ms':>9} {'p99 ms':>9} {'max ms':>9}")
    for r in results:
        print(f"{r['label']:22} {r['samples']:7d} {r['p50_ms']:9.2f} {r['p99_ms']:9.2f} {r['max_ms']:9.2f}"
              + (f"   NOTE: {r['off_path']} off path" if r["off_path"] or not r["cold"] else ""))
    print(f"docker fresh p50 / docker stem p50 = {by['docker fresh']['p50_ms'] / by['docker stem']['p50_ms']:.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
