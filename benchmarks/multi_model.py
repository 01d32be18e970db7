"""One multi-model endpoint against as many single-model endpoints, on the same gateway in the same run.

N small scikit-learn models (logistic regressions, trained here) go under one prefix (a local
directory under the gateway's --model-root).  The same request sequence -- each request's model
drawn from a Zipf distribution (s = 1.1) over the N, sent by C concurrent clients -- runs twice:

* against one multi-model endpoint of 2048 MB (serverless, the CLI's extension) naming the model
  with X-Amzn-SageMaker-Target-Model;
* against N single-model serverless endpoints of 1024 MB, one per model, the request going to
  its model's endpoint.

The gateway's host memory budget is set far above what N sandboxes of 1 GB reserve
(--memory-budget-mb), and its sandbox uids to twice N (--sandbox-uids), so the single-model side
never throttles.  Printed per side: invocations,
errors, p50/p99 end-to-end latency, the cache hit ratio after warm-up (the multi-model side's
ModelCacheHit; the single-model side's share of warm invocations), model loads or cold starts, and
peak host memory: the summed RSS of the gateway and every process under it (zygotes, sandboxes),
sampled every 0.5 s, and the summed PSS at the end of the side (RSS counts a page shared by forked
sandboxes once per sandbox; PSS divides it among them).

    .venv/bin/python benchmarks/multi_model.py [--models 1000] [--requests 20000] [--clients 8]
"""
from __future__ import annotations

import argparse
import asyncio
import re
import shutil
import sys
import tempfile
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import aiohttp  # noqa: E402
import numpy as np  # noqa: E402
import psutil  # noqa: E402

from benchmarks._servers import signed, start_gateway, stop_server  # noqa: E402
from gateway.client import Client, pickle_model  # noqa: E402
from gateway.load.driver import error_kind  # noqa: E402
from gateway.reportkit.stats import percentile as pct  # noqa: E402

BODY = b"0.1,0.2,0.3,0.4"


def train(n: int, seed: int) -> list[bytes]:
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        x = rng.normal(size=(40, 4))
        y = (x @ rng.normal(size=4) > 0).astype(int)
        y[:2] = [0, 1]
        out.append(pickle_model(LogisticRegression().fit(x, y)))
    return out


def zipf_sequence(n_models: int, n_requests: int, s: float, seed: int) -> list[int]:
    weights = 1.0 / np.arange(1, n_models + 1) ** s
    rng = np.random.default_rng(seed)
    ranks = rng.choice(n_models, size=n_requests, p=weights / weights.sum())
    shuffle = rng.permutation(n_models)              # popularity is not file order
    return [int(shuffle[r]) for r in ranks]


class MemorySampler:
    """The summed RSS of a process and its descendants, every ``interval`` s, in a thread."""

    def __init__(self, pid: int, interval: float = 0.5):
        self.root, self.interval = psutil.Process(pid), interval
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def tree(self) -> list[psutil.Process]:
        return [self.root, *self.root.children(recursive=True)]

    def _summed(self, read) -> int:
        total = 0
        for p in self.tree():
            try:
                total += read(p)
            except psutil.Error:              # gone meanwhile
                pass
        return total

    def rss(self) -> int:
        return self._summed(lambda p: p.memory_info().rss)

    def pss(self) -> int:
        """Proportional set sizes (reads every process's smaps: slower, so only at the end)."""
        return self._summed(lambda p: p.memory_full_info().pss)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.rss())
            self._stop.wait(self.interval)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


async def drive(url: str, calls: list[tuple[str, str | None]], clients: int) -> tuple[list[float], dict[str, int]]:
    """Send ``calls`` ((endpoint, target model or None), in order) from ``clients`` workers: each
    request's latency in ms (None for a failed one), and failures by kind."""
    latencies: list[float | None] = [None] * len(calls)
    errors: dict[str, int] = {}
    nxt = iter(range(len(calls)))

    async def worker(session: aiohttp.ClientSession) -> None:
        for i in nxt:
            name, target = calls[i]
            url_i = f"{url}/endpoints/{name}/invocations"
            headers = {"Content-Type": "text/csv"}
            if target is not None:
                headers["X-Amzn-SageMaker-Target-Model"] = target
            t0 = time.perf_counter()
            async with session.post(url_i, data=BODY, headers=signed(url_i, BODY, headers)) as r:
                body = await r.read()
            kind = error_kind(r.status, r.headers, body)
            if kind is None:
                latencies[i] = (time.perf_counter() - t0) * 1000.0
            else:
                errors[kind] = errors.get(kind, 0) + 1

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=clients)) as session:
        await asyncio.gather(*(worker(session) for _ in range(clients)))
    return latencies, errors


def scrape(url: str, name: str, endpoint: str) -> float:
    text = urllib.request.urlopen(url + "/metrics", timeout=30).read().decode()
    m = re.search(rf'^{name}{{endpoint="{endpoint}",variant="AllTraffic"}} (\S+)$', text, re.M)
    return float(m.group(1)) if m else 0.0


def side(label: str, url: str, proc, calls, warmup: int, clients: int, hits_after_warmup) -> dict:
    with MemorySampler(proc.pid) as mem:
        lat_w, err_w = asyncio.run(drive(url, calls[:warmup], clients))
        mark = hits_after_warmup()
        t0 = time.perf_counter()
        lat, err = asyncio.run(drive(url, calls[warmup:], clients))
        wall = time.perf_counter() - t0
        hit_ratio, loads = hits_after_warmup(mark)
        pss = mem.pss()
    ok = [x for x in lat if x is not None]
    errors = {k: err_w.get(k, 0) + err.get(k, 0) for k in set(err_w) | set(err)}
    return {"side": label, "requests": len(calls), "errors": errors, "p50_ms": pct(ok, 50), "p99_ms": pct(ok, 99),
            "rps": len(ok) / wall, "hit_ratio": hit_ratio, "loads": loads,
            "peak_rss_mb": mem.peak / 2 ** 20, "pss_mb": pss / 2 ** 20}


def main() -> int:
    ap = argparse.ArgumentParser(description="A multi-model endpoint against one endpoint per model.")
    ap.add_argument("--models", type=int, default=1000)
    ap.add_argument("--requests", type=int, default=20000)
    ap.add_argument("--warmup", type=int, default=5000, help="requests before the hit ratio is measured")
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--zipf", type=float, default=1.1)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="slimserve-mme-bench-"))
    prefix = work / "models"
    prefix.mkdir()
    t0 = time.perf_counter()
    for i, data in enumerate(train(args.models, args.seed)):
        (prefix / f"m{i:04d}.pkl").write_bytes(data)
    print(f"trained {args.models} models in {time.perf_counter() - t0:.1f} s", flush=True)
    seq = zipf_sequence(args.models, args.requests, args.zipf, args.seed)
    budget_mb = args.models * 1024 + 100_000
    # one uid per live sandbox: the default 1,024 would run out with a sandbox per model (ServiceUnavailable)
    proc, url = start_gateway(work / "state", "--model-root", str(work), "--memory-budget-mb", str(budget_mb),
                              "--sandbox-uids", f"300000:{max(1024, 2 * args.models)}")
    try:
        client = Client(url, state_dir=work / "state")
        deadline = time.monotonic() + 120
        while not ((z := client.zygotes()).get("base") and z["base"]["alive"]):
            if time.monotonic() > deadline:
                raise RuntimeError("the base zygote did not come up")
            time.sleep(0.2)

        client.deploy("mme", str(prefix), memory_mb=2048, multi_model=True)

        def mme_hits(mark=None):
            count = scrape(url, "slimserve_ModelCacheHit_count", "mme")
            hits = scrape(url, "slimserve_ModelCacheHit_sum", "mme")
            loads = scrape(url, "slimserve_ModelLoadingTime_microseconds_count", "mme")
            if mark is None:
                return count, hits, loads
            return (hits - mark[1]) / max(1.0, count - mark[0]), int(loads)

        multi = side("multi-model (1 x 2048 MB)", url, proc, [("mme", f"m{i:04d}.pkl") for i in seq],
                     args.warmup, args.clients, mme_hits)
        client.delete("mme")
        time.sleep(3)

        t0 = time.perf_counter()
        with ThreadPoolExecutor(4) as pool:
            list(pool.map(lambda i: client.deploy(f"single-{i:04d}", str(prefix / f"m{i:04d}.pkl"), memory_mb=1024),
                          range(args.models)))
        print(f"deployed {args.models} single-model endpoints in {time.perf_counter() - t0:.1f} s", flush=True)

        def single_hits(mark=None):
            usage = client.usage(limit=100_000)
            cold = sum(1 for r in usage if r.get("cold_start") and r["endpoint"].startswith("single-"))
            n = sum(1 for r in usage if r["endpoint"].startswith("single-"))
            if mark is None:
                return n, cold
            return 1.0 - (cold - mark[1]) / max(1, n - mark[0]), cold

        single = side(f"single-model ({args.models} x 1024 MB)", url, proc,
                      [(f"single-{i:04d}", None) for i in seq], args.warmup, args.clients, single_hits)
    finally:
        stop_server(proc)
        shutil.rmtree(work, ignore_errors=True)

    print(f"\n{args.models} models, {args.requests} requests (Zipf s={args.zipf}, first {args.warmup} warm-up), "
          f"{args.clients} clients; host budget {budget_mb} MB")
    print(f"{'side':<30} {'p50 ms':>7} {'p99 ms':>7} {'req/s':>7} {'hit ratio':>9} {'loads/cold':>10} "
          f"{'peak RSS MB':>11} {'PSS MB':>8}  errors")
    for r in (multi, single):
        print(f"{r['side']:<30} {r['p50_ms']:>7.1f} {r['p99_ms']:>7.1f} {r['rps']:>7.0f} {r['hit_ratio']:>9.3f} "
              f"{r['loads']:>10} {r['peak_rss_mb']:>11.0f} {r['pss_mb']:>8.0f}  {r['errors'] or 'none'}")
    print(f"multi/single: p99 {multi['p99_ms'] / single['p99_ms']:.2f}x, peak RSS "
          f"{multi['peak_rss_mb'] / single['peak_rss_mb']:.3f}x, PSS {multi['pss_mb'] / single['pss_mb']:.3f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
