"""Batch transform, measured against a real gateway (process sandboxes, SQLite) and its local S3
server (``serve --s3 local``), beside the physical limit measured in the same run: the same
model scoring the same records in this one process.

The data: ``--lines`` CSV lines of ``--features`` numbers in ``--objects`` S3 objects; the model:
a scikit-learn LogisticRegression trained here, deployed as a pickled estimator.

* baseline -- one single-threaded process (BLAS threads 1) reads the same files from local disk,
  cuts them into the same 6 MB mini-batches (``gateway.batch.records``), parses each the way a
  sandbox does (``runtime.codec.decode_features``: pandas' C parser), predicts, and serialises
  the answer as CSV (``encode_result``): everything a sandbox does, and none of the gateway's
  or S3's work;
* transform -- CreateTransformJob on one ml.m5.large (2 vCPUs) with MaxConcurrentTransforms 2
  (and 1), SplitType Line, MultiRecord: records/s over the job's processing time
  (TransformStartTime -> TransformEndTime: S3 reads and writes included, sandbox starts not),
  and over the whole job as a client sees it (CreateTransformJob -> Completed);
* the gateway's own CPU time during the job, as a share of the machine's (the rest is the
  sandboxes' and the S3 server's);
* SingleRecord on ``--single-lines`` lines (a request per line: its figure is per-request cost).

    .venv/bin/python benchmarks/transform_bench.py [--lines 1000000] [--features 8] [--objects 4]
        [--single-lines 20000] [--format table|json]
"""
from __future__ import annotations

import os

for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):      # the baseline: one thread
    os.environ[_v] = "1"

import argparse  # noqa: E402
import io  # noqa: E402
import json  # noqa: E402
import shutil  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._servers import start_gateway, start_s3, stop_server  # noqa: E402
from gateway import locate  # noqa: E402
from gateway.batch import records  # noqa: E402
from gateway.client import model_tar  # noqa: E402
from gateway.sagemaker import credentials  # noqa: E402
from runtime import codec  # noqa: E402

PAYLOAD_MB = 6


def train(features: int, kind: str = "linear"):
    """``linear``: LogisticRegression (predicting costs less than parsing the CSV); ``forest``: a
    RandomForestClassifier of 20 trees of depth 8 (predicting costs more than parsing)."""
    import numpy as np
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(0)
    x = rng.normal(size=(5000, features))
    y = (x[:, 0] + x[:, 1] > 0).astype(int) + (x[:, 2] > 1).astype(int)
    if kind == "forest":
        return RandomForestClassifier(n_estimators=20, max_depth=8, n_jobs=1, random_state=0).fit(x, y)
    return LogisticRegression(max_iter=500).fit(x, y)


def make_data(lines: int, features: int, objects: int, where: Path) -> list[Path]:
    import numpy as np

    rng = np.random.default_rng(1)
    out, per = [], -(-lines // objects)
    for i in range(objects):
        n = min(per, lines - i * per)
        buf = io.StringIO()
        np.savetxt(buf, rng.normal(size=(n, features)), fmt="%.5f", delimiter=",")
        path = where / f"part-{i:03d}.csv"
        path.write_text(buf.getvalue())
        out.append(path)
    return out


def baseline(model, files: list[Path], strategy: str, limit_lines: int | None = None) -> tuple[int, float]:
    """(records, seconds) of the in-process loop over ``files``."""
    n, t0 = 0, time.perf_counter()
    for path in files:
        with open(path, "rb") as fh:
            for batch in records.batches(records.chunks(fh, False), "Line", strategy, PAYLOAD_MB << 20):
                x = codec.decode_features(batch.data, "text/csv")
                codec.encode_result(model.predict(x), "text/csv")
                n += batch.records
                if limit_lines is not None and n >= limit_lines:
                    return n, time.perf_counter() - t0
    return n, time.perf_counter() - t0


class Bench:
    def __init__(self, state: Path, s3_local: bool = False):
        import boto3
        from botocore.config import Config

        if s3_local:                 # the gateway's own --s3 local: its forwarder is the gateway's work
            self.s3_proc = None
            self.proc, self.url = start_gateway(state, "--s3", "local", "--memory-budget-mb", "200000")
            key = credentials.read(state / credentials.FILE_NAME)
            s3_url = locate.s3_url(state)
        else:                        # an S3 server of its own, as S3 is in production
            self.s3_proc, s3_url, key = start_s3(state.parent / "s3-server")
            os.environ.update(AWS_ACCESS_KEY_ID=key.key_id, AWS_SECRET_ACCESS_KEY=key.secret)
            self.proc, self.url = start_gateway(state, "--s3-endpoint-url", s3_url, "--memory-budget-mb", "200000")
        gw_key = credentials.read(state / credentials.FILE_NAME)
        kw = dict(region_name="us-east-1", config=Config(retries={"total_max_attempts": 3}, read_timeout=600))
        self.sm = boto3.client("sagemaker", endpoint_url=self.url, aws_access_key_id=gw_key.key_id,
                               aws_secret_access_key=gw_key.secret, **kw)
        self.s3 = boto3.client("s3", endpoint_url=s3_url, aws_access_key_id=key.key_id,
                               aws_secret_access_key=key.secret, **kw)
        for b in ("bench-models", "bench-in", "bench-out"):
            self.s3.create_bucket(Bucket=b)

    def job(self, name: str, prefix: str, strategy: str, concurrent: int) -> dict:
        import psutil

        gw = psutil.Process(self.proc.pid)
        s3_procs = [psutil.Process(self.s3_proc.pid)] if self.s3_proc is not None else []
        s3_procs += [c for p in s3_procs for c in p.children(recursive=True)]
        cpu0 = sum(gw.cpu_times()[:2])
        s3_0 = sum(sum(p.cpu_times()[:2]) for p in s3_procs)
        # Sandboxes exit with the job; their CPU time is then their parent's "children" time (a
        # zygote's for forked stems, the gateway's for fresh workers): read once before, once after.
        def reaped() -> float:
            procs = [gw] + gw.children()
            total = 0.0
            for p in procs:
                try:
                    t = p.cpu_times()
                    total += t.children_user + t.children_system
                except psutil.Error:
                    pass
            return total
        reaped0 = reaped()
        t0 = time.perf_counter()
        self.sm.create_transform_job(
            TransformJobName=name, ModelName="bench-lr", BatchStrategy=strategy, MaxConcurrentTransforms=concurrent,
            MaxPayloadInMB=PAYLOAD_MB,
            TransformInput={"DataSource": {"S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": f"s3://bench-in/{prefix}"}},
                            "ContentType": "text/csv", "SplitType": "Line"},
            TransformOutput={"S3OutputPath": f"s3://bench-out/{name}", "Accept": "text/csv", "AssembleWith": "Line"},
            TransformResources={"InstanceType": "ml.m5.large", "InstanceCount": 1})
        while (d := self.sm.describe_transform_job(TransformJobName=name))["TransformJobStatus"] == "InProgress":
            time.sleep(0.05)
        wall = time.perf_counter() - t0
        time.sleep(0.5)                        # the sandboxes' exits are reaped
        if d["TransformJobStatus"] != "Completed":
            raise RuntimeError(f"{name}: {d['TransformJobStatus']}: {d.get('FailureReason')}")
        cpu = sum(gw.cpu_times()[:2]) - cpu0
        s3_cpu = sum(sum(p.cpu_times()[:2]) for p in s3_procs if p.is_running()) - s3_0
        busy = d["TransformEndTime"].timestamp() - d["TransformStartTime"].timestamp()
        return {"wall_s": wall, "processing_s": busy, "gateway_cpu_s": cpu, "s3_cpu_s": s3_cpu,
                "sandbox_cpu_s": reaped() - reaped0}

    def close(self):
        stop_server(self.proc)
        if self.s3_proc is not None:
            stop_server(self.s3_proc)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--lines", type=int, default=1_000_000)
    ap.add_argument("--features", type=int, default=8)
    ap.add_argument("--objects", type=int, default=4)
    ap.add_argument("--single-lines", type=int, default=20_000)
    ap.add_argument("--model", choices=["linear", "forest"], default="linear",
                    help="linear: LogisticRegression; forest: RandomForestClassifier, 20 trees (default linear)")
    ap.add_argument("--s3-local", action="store_true",
                    help="use the gateway's own serve --s3 local (its S3 forwarder then runs in the gateway)")
    ap.add_argument("--format", choices=["table", "json"], default="table")
    args = ap.parse_args()
    cores = os.cpu_count() or 1
    tmp = Path(tempfile.mkdtemp(prefix="transform-bench-"))
    bench = None
    try:
        model = train(args.features, args.model)
        files = make_data(args.lines, args.features, args.objects, tmp)
        single_file = tmp / "single" / "part.csv"
        single_file.parent.mkdir()
        with open(files[0], "rb") as fh:
            single_file.write_bytes(b"".join(fh.readline() for _ in range(args.single_lines)))
        size_mb = sum(f.stat().st_size for f in files) / (1 << 20)
        bench = Bench(tmp / "state", s3_local=args.s3_local)
        bench.s3.put_object(Bucket="bench-models", Key="lr.tar.gz", Body=model_tar(model))
        bench.sm.create_model(ModelName="bench-lr", PrimaryContainer={"ModelDataUrl": "s3://bench-models/lr.tar.gz"})
        for f in files:
            bench.s3.upload_file(str(f), "bench-in", f"multi/{f.name}")
        bench.s3.upload_file(str(single_file), "bench-in", "single/part.csv")

        base_n, base_s = baseline(model, files, "MultiRecord")
        multi2 = bench.job("bench-multi-2", "multi/", "MultiRecord", 2)
        multi1 = bench.job("bench-multi-1", "multi/", "MultiRecord", 1)
        sbase_n, sbase_s = baseline(model, [single_file], "SingleRecord")
        single2 = bench.job("bench-single-2", "single/", "SingleRecord", 2)
        out = {
            "lines": base_n, "features": args.features, "objects": args.objects, "megabytes": round(size_mb, 1),
            "model": type(model).__name__,
            "cores": cores,
            "baseline_records_s": base_n / base_s,
            "multi": {},
            "single": {"lines": sbase_n, "baseline_records_s": sbase_n / sbase_s,
                       "records_s": sbase_n / single2["processing_s"],
                       "ratio": (sbase_n / single2["processing_s"]) / (sbase_n / sbase_s)},
        }
        for c, r in ((2, multi2), (1, multi1)):
            out["multi"][c] = {
                "records_s": base_n / r["processing_s"], "records_s_whole_job": base_n / r["wall_s"],
                "ratio": (base_n / r["processing_s"]) / (base_n / base_s),
                "ratio_whole_job": (base_n / r["wall_s"]) / (base_n / base_s),
                "gateway_cpu_s": r["gateway_cpu_s"], "gateway_cpu_share": r["gateway_cpu_s"] / (r["wall_s"] * cores),
                "sandbox_cpu_s": r["sandbox_cpu_s"], "s3_cpu_s": r["s3_cpu_s"],
                "processing_s": r["processing_s"], "wall_s": r["wall_s"]}
        if args.format == "json":
            print(json.dumps(out, indent=2))
        else:
            print(f"batch transform: {base_n:,} CSV lines x {args.features} features ({size_mb:.1f} MB in "
                  f"{args.objects} objects), {type(model).__name__}, ml.m5.large, MaxPayloadInMB {PAYLOAD_MB}, "
                  f"{cores} cores")
            print(f"  baseline, one process, one thread:          {out['baseline_records_s']:>12,.0f} records/s")
            for c in (2, 1):
                m = out["multi"][c]
                print(f"  MultiRecord, MaxConcurrentTransforms {c}:     {m['records_s']:>12,.0f} records/s  "
                      f"({m['ratio']:.2f}x baseline; whole job {m['records_s_whole_job']:,.0f}/s = "
                      f"{m['ratio_whole_job']:.2f}x)")
                print(f"      CPU during the job: sandboxes {m['sandbox_cpu_s']:.2f} s, "
                      f"gateway {m['gateway_cpu_s']:.2f} s "
                      f"({100 * m['gateway_cpu_share']:.1f}% of the machine), S3 server "
                      + (f"{m['s3_cpu_s']:.2f} s" if not args.s3_local else "(in the gateway)")
                      + f"; the baseline's {base_s:.2f} s")
            s = out["single"]
            print(f"  SingleRecord ({s['lines']:,} lines), 2 workers:  {s['records_s']:>12,.0f} records/s  "
                  f"(baseline one record at a time {s['baseline_records_s']:,.0f}/s: {s['ratio']:.2f}x)")
    finally:
        if bench is not None:
            bench.close()
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
