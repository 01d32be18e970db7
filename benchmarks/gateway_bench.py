"""Gateway latency and throughput, each beside a bare aiohttp handler measured in the same run.

What is measured (client-side, over loopback, on this machine):
  cold   -- first invocation of K freshly deployed endpoints (a trivial pickled
            callable, 1024 MB): sandbox process start + bundle load + invoke.
            Baseline: a request to the bare handler on a new connection.
  warm   -- N invocations from C concurrent keep-alive clients to one endpoint
            whose C sandboxes are already warm: p50/p99 latency and throughput.
            Baseline: the same load against a bare aiohttp handler that decodes
            and encodes JSON.
The machine is shared and noisy, so read the ratios: they compare runs taken
minutes apart on the same cores.  Run from the repository root:

    .venv/bin/python benchmarks/gateway_bench.py [--requests 2000] [--concurrency 8] [--cold 10]
"""
from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import aiohttp  # noqa: E402

from benchmarks._servers import signed, start_gateway, start_server, stop_server  # noqa: E402
from gateway.client import Client  # noqa: E402
from gateway.reportkit.stats import percentile as pct  # noqa: E402

BARE_SERVER = """
import json, sys
from aiohttp import web
async def handle(request):
    return web.json_response({"echo": json.loads(await request.read())})
app = web.Application()
app.router.add_post("/endpoints/{name}/invocations", handle)
async def main():
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    print("listening on http://127.0.0.1:%d" % runner.addresses[0][1], flush=True)
    import asyncio
    await asyncio.Event().wait()
import uvloop
uvloop.run(main())
"""


def echo(x):
    return {"echo": x}


async def one_request(url: str, name: str) -> tuple[float, int]:
    """A request on a new connection, as a cold caller makes it."""
    t0 = time.perf_counter()
    async with aiohttp.ClientSession() as s:
        target = f"{url}/endpoints/{name}/invocations"
        async with s.post(target, data=b'{"x": 1}',
                          headers=signed(target, b'{"x": 1}', {"Content-Type": "application/json"})) as r:
            await r.read()
            status = r.status
    return (time.perf_counter() - t0) * 1000.0, status


async def load(url: str, name: str, n: int, concurrency: int) -> dict:
    lat: list[float] = []
    errors = 0
    remaining = n
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as s:
        async def worker():
            nonlocal remaining, errors
            while remaining > 0:
                remaining -= 1
                t0 = time.perf_counter()
                target, body = f"{url}/endpoints/{name}/invocations", b'{"x": [1, 2, 3]}'
                async with s.post(target, data=body,
                                  headers=signed(target, body, {"Content-Type": "application/json"})) as r:
                    await r.read()
                    if r.status != 200:
                        errors += 1
                lat.append((time.perf_counter() - t0) * 1000.0)

        t_start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        wall = time.perf_counter() - t_start
    return {"requests": n, "errors": errors, "p50_ms": pct(lat, 50), "p99_ms": pct(lat, 99),
            "throughput_rps": n / wall}


async def measure(gw_url: str, bare_url: str, client: Client, args) -> dict:
    # cold starts: K endpoints, each invoked for the first time
    cold, cold_err = [], 0
    for i in range(args.cold):
        client.deploy(f"cold-{i}", echo, memory_mb=1024)
        ms, status = await one_request(gw_url, f"cold-{i}")
        cold.append(ms)
        cold_err += status != 200
    bare_new_conn = [(await one_request(bare_url, "x"))[0] for _ in range(args.cold)]
    init = [u["init_ms"] for u in client.usage() if u["cold_start"] and u["endpoint"].startswith("cold-")]

    # warm path: one endpoint with `concurrency` warm sandboxes
    client.deploy("warm", echo, memory_mb=1024, max_concurrency=max(50, args.concurrency))
    await load(gw_url, "warm", args.concurrency * 20, args.concurrency)        # warm-up
    await load(bare_url, "warm", args.concurrency * 20, args.concurrency)
    gw = await load(gw_url, "warm", args.requests, args.concurrency)
    bare = await load(bare_url, "warm", args.requests, args.concurrency)
    return {
        "cold": {"endpoints": args.cold, "errors": cold_err, "p50_ms": pct(cold, 50), "p99_ms": pct(cold, 99),
                 "gateway_init_ms_p50": statistics.median(init) if init else None,
                 "bare_new_connection_p50_ms": pct(bare_new_conn, 50)},
        "warm": {"concurrency": args.concurrency, "gateway": gw, "bare": bare,
                 "p50_ratio": gw["p50_ms"] / bare["p50_ms"], "p99_ratio": gw["p99_ms"] / bare["p99_ms"],
                 "throughput_ratio": gw["throughput_rps"] / bare["throughput_rps"]},
    }


def print_table(r: dict) -> None:
    c, w = r["cold"], r["warm"]
    print(f"cold start ({c['endpoints']} endpoints, trivial callable, 1024 MB), client-side:")
    print(f"  gateway first invocation  p50 {c['p50_ms']:8.2f} ms   p99 {c['p99_ms']:8.2f} ms"
          f"   (sandbox init p50 {c['gateway_init_ms_p50'] or 0:.2f} ms)   errors {c['errors']}")
    print(f"  bare aiohttp, new conn    p50 {c['bare_new_connection_p50_ms']:8.2f} ms")
    print(f"warm path ({w['gateway']['requests']} requests, concurrency {w['concurrency']}):")
    for label, m in (("gateway", w["gateway"]), ("bare aiohttp", w["bare"])):
        print(f"  {label:13} p50 {m['p50_ms']:7.3f} ms   p99 {m['p99_ms']:7.3f} ms"
              f"   {m['throughput_rps']:8.0f} req/s   errors {m['errors']}")
    if c["errors"] or w["gateway"]["errors"] or w["bare"]["errors"]:
        print("WARNING: some requests failed; the figures above are not clean")
    print(f"warm throughput ratio gateway/bare: {w['throughput_ratio']:.2f}")
    print(f"warm p99 ratio gateway/bare: {w['p99_ratio']:.2f}")
    print(f"warm p50 ratio gateway/bare: {w['p50_ratio']:.2f}")


def main() -> int:
    ap = argparse.ArgumentParser(description="Gateway latency and throughput beside a bare aiohttp handler.")
    ap.add_argument("--requests", type=int, default=2000)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--cold", type=int, default=10, help="endpoints whose first invocation is timed")
    ap.add_argument("--format", choices=["table", "json"], default="table")
    args = ap.parse_args()
    state = Path(tempfile.mkdtemp(prefix="slimserve-bench-"))
    procs = []
    try:
        gw_proc, gw_url = start_gateway(state)
        procs.append(gw_proc)
        bare_proc, bare_url = start_server([sys.executable, "-c", BARE_SERVER])
        procs.append(bare_proc)
        result = asyncio.run(measure(gw_url, bare_url, Client(gw_url, state_dir=state), args))
    finally:
        for p in procs:
            stop_server(p)
        shutil.rmtree(state, ignore_errors=True)
    if args.format == "json":
        print(json.dumps(result, indent=2))
    else:
        print_table(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
