"""A fleet of many endpoints on one gateway, beside a small fleet measured in the same run.

For each fleet size (the small baseline first, then the large one) a fresh gateway
(process backend, SQLite, default memory budget) gets N endpoints of a trivial
pickled callable (1024 MB each), then every endpoint is invoked once per round, in
a shuffled order, from C concurrent clients.  With more endpoints than the memory
budget holds sandboxes, most invocations are cold starts that evict another
endpoint's idle sandbox, which is the point: it measures what many endpoints cost
the gateway itself.

Printed per fleet: deploy time per endpoint; invocation p50/p99 and cold-start
share; errors by kind; the gateway process's resident memory, its growth per
endpoint over the small fleet's; live sandboxes and model zygotes at the end
(model zygotes are kept within their limits, 16 by default, however many
endpoints there are).

    .venv/bin/python benchmarks/many_endpoints.py [--endpoints 1000] [--baseline 20] [--rounds 2]
"""
from __future__ import annotations

import argparse
import asyncio
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import aiohttp  # noqa: E402
import psutil  # noqa: E402

from benchmarks._servers import signed, start_gateway, stop_server  # noqa: E402
from gateway.client import Client  # noqa: E402
from gateway.load.driver import error_kind  # noqa: E402
from gateway.reportkit.stats import percentile as pct  # noqa: E402


def echo(x):
    return {"echo": x}


async def invoke_all(url: str, names: list[str], concurrency: int) -> tuple[list[float], dict[str, int]]:
    latencies: list[float] = []
    errors: dict[str, int] = {}
    queue: asyncio.Queue = asyncio.Queue()
    for name in names:
        queue.put_nowait(name)

    async def worker(session: aiohttp.ClientSession) -> None:
        while not queue.empty():
            name = queue.get_nowait()
            t0 = time.perf_counter()
            target = f"{url}/endpoints/{name}/invocations"
            async with session.post(target, data=b'{"x": 1}',
                                    headers=signed(target, b'{"x": 1}', {"Content-Type": "application/json"})) as r:
                body = await r.read()
                kind = error_kind(r.status, r.headers, body)
                if kind is None:
                    latencies.append((time.perf_counter() - t0) * 1000)
                else:
                    errors[kind] = errors.get(kind, 0) + 1

    async with aiohttp.ClientSession() as session:
        await asyncio.gather(*(worker(session) for _ in range(concurrency)))
    return latencies, errors


def fleet(n: int, rounds: int, concurrency: int, seed: int, serve_args: list[str]) -> dict:
    state = Path(tempfile.mkdtemp(prefix="slimserve-fleet-"))
    proc, url = start_gateway(state, *serve_args)
    try:
        client = Client(url, state_dir=state)
        deadline = time.monotonic() + 120
        while not ((z := client.zygotes()).get("base") and z["base"]["alive"]):   # the base zygote first
            if time.monotonic() > deadline:
                raise RuntimeError("the base zygote did not come up")
            time.sleep(0.2)
        names = [f"fleet-{i:05d}" for i in range(n)]
        t0 = time.perf_counter()
        for name in names:
            client.deploy(name, echo, memory_mb=1024)
        deploy_ms = (time.perf_counter() - t0) * 1000 / n
        rng = random.Random(seed)
        latencies: list[float] = []
        errors: dict[str, int] = {}
        for _ in range(rounds):
            order = names[:]
            rng.shuffle(order)
            lat, err = asyncio.run(invoke_all(url, order, concurrency))
            latencies += lat
            for k, v in err.items():
                errors[k] = errors.get(k, 0) + v
        usage = client.usage(limit=n * rounds + 10)
        cold = sum(1 for r in usage if r.get("cold_start"))
        gw = psutil.Process(proc.pid)
        rss_mb = gw.memory_info().rss / 2 ** 20
        sandboxes = sum(len(e["variants"][0]["pool"]["sandboxes"]) for e in (client.describe(m) for m in names[:50]))
        models = len([m for m in client.zygotes()["models"] if m["alive"]])
        return {"endpoints": n, "deploy_ms": deploy_ms, "invocations": len(latencies) + sum(errors.values()),
                "p50_ms": pct(latencies, 50), "p99_ms": pct(latencies, 99),
                "cold_pct": 100.0 * cold / max(1, len(usage)),
                "errors": errors, "gateway_rss_mb": rss_mb, "sandboxes_first_50": sandboxes, "model_zygotes": models}
    finally:
        stop_server(proc)
        shutil.rmtree(state, ignore_errors=True)


def main() -> int:
    ap = argparse.ArgumentParser(description="Many endpoints on one gateway, beside a small fleet.")
    ap.add_argument("--endpoints", type=int, default=1000)
    ap.add_argument("--baseline", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--serve-arg", action="append", default=[], metavar="ARG",
                    help="pass this argument to slimserve serve (repeat for several)")
    args = ap.parse_args()
    small = fleet(args.baseline, args.rounds, args.concurrency, args.seed, args.serve_arg)
    large = fleet(args.endpoints, args.rounds, args.concurrency, args.seed, args.serve_arg)
    print(f"{'endpoints':>9}  {'deploy ms':>9}  {'invocations':>11}  {'p50 ms':>7}  {'p99 ms':>7}  {'cold %':>6}  "
          f"{'gateway MB':>10}  {'model zygotes':>13}  errors")
    for r in (small, large):
        print(f"{r['endpoints']:>9,}  {r['deploy_ms']:>9.1f}  {r['invocations']:>11,}  {r['p50_ms']:>7.1f}  "
              f"{r['p99_ms']:>7.1f}  {r['cold_pct']:>6.1f}  {r['gateway_rss_mb']:>10.1f}  {r['model_zygotes']:>13}  "
              f"{r['errors'] or 'none'}")
    per_endpoint_kb = ((large["gateway_rss_mb"] - small["gateway_rss_mb"]) * 1024
                       / (large["endpoints"] - small["endpoints"]))
    print(f"gateway memory per extra endpoint: {per_endpoint_kb:.0f} KB; "
          f"p50 ratio large/small {large['p50_ms'] / small['p50_ms']:.2f}, "
          f"p99 ratio {large['p99_ms'] / small['p99_ms']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
