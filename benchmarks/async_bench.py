"""Asynchronous inference, measured against a real gateway (process sandboxes, SQLite) and its
local S3 server (``serve --s3 local``), each figure beside a baseline taken in the same run:

1. small payloads: ``--requests`` InvokeEndpointAsync calls (inline bodies) on an endpoint of
   ``--instances`` instances, throughput until the last output object is visible, beside the
   same model called synchronously (InvokeEndpoint, as many client threads as instances); and
   end-to-end latency, submit -> output visible (HeadObject polled every 5 ms), one at a time,
   beside one synchronous call;
2. ``--relay-mb`` MB relayed: an input object of that size in, the same bytes out (the model
   echoes them), submit -> output visible, beside a plain S3 copy made by this process
   (get_object streamed to disk, then upload_file); and the gateway's peak RSS (VmHWM), which
   must stay far below the payload: the gateway streams files, the sandbox holds the bytes;
3. scale from zero: an endpoint at zero instances (Application Auto Scaling, MinCapacity 0,
   a backlog policy) gets one request; submit -> output visible, beside the same on a warm
   instance.

    .venv/bin/python benchmarks/async_bench.py [--requests 500] [--instances 2] [--relay-mb 1024]
        [--format table|json]
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._servers import start_gateway, stop_server  # noqa: E402
from gateway import locate  # noqa: E402
from gateway.client import model_tar  # noqa: E402
from gateway.reportkit.stats import percentile  # noqa: E402
from gateway.sagemaker import credentials  # noqa: E402

OUT = "bench-out"


def double(x):
    return {"double": x * 2}


def echo(x):
    return x


class Bench:
    def __init__(self, state: Path):
        import boto3
        from botocore.config import Config

        self.proc, self.url = start_gateway(state, "--s3", "local", "--memory-budget-mb", "200000",
                                            "--autoscaling-interval", "1")
        key = credentials.read(state / credentials.FILE_NAME)
        kw = dict(region_name="us-east-1", aws_access_key_id=key.key_id, aws_secret_access_key=key.secret,
                  config=Config(retries={"total_max_attempts": 3}, max_pool_connections=64, read_timeout=600))
        self.s3_url = locate.s3_url(state)
        self.sm = boto3.client("sagemaker", endpoint_url=self.url, **kw)
        self.rt = boto3.client("sagemaker-runtime", endpoint_url=self.url, **kw)
        self.aas = boto3.client("application-autoscaling", endpoint_url=self.url, **kw)
        self.s3 = boto3.client("s3", endpoint_url=self.s3_url, **kw)
        for b in ("bench-models", OUT, "bench-in"):
            self.s3.create_bucket(Bucket=b)
        self.s3.put_object(Bucket="bench-models", Key="double.tar.gz", Body=model_tar(double))
        self.s3.put_object(Bucket="bench-models", Key="echo.tar.gz", Body=model_tar(echo))

    def endpoint(self, name, model_key, instances, asynchronous=True, instance_type="ml.m5.large"):
        self.sm.create_model(ModelName=name, PrimaryContainer={"ModelDataUrl": f"s3://bench-models/{model_key}"})
        extra = {"AsyncInferenceConfig": {"OutputConfig": {"S3OutputPath": f"s3://{OUT}/{name}",
                                                           "S3FailurePath": f"s3://{OUT}/{name}-fail"}}} \
            if asynchronous else {}
        self.sm.create_endpoint_config(EndpointConfigName=name, ProductionVariants=[
            {"VariantName": "v", "ModelName": name, "InstanceType": instance_type,
             "InitialInstanceCount": instances}], **extra)
        self.sm.create_endpoint(EndpointName=name, EndpointConfigName=name)
        self.sm.get_waiter("endpoint_in_service").wait(EndpointName=name, WaiterConfig={"Delay": 0.25,
                                                                                        "MaxAttempts": 400})

    def visible(self, url, timeout=1800.0, interval=0.005) -> float:
        """Seconds until the object at ``url`` exists (HeadObject polled)."""
        bucket, key = url[5:].split("/", 1)
        t0 = time.perf_counter()
        while time.perf_counter() - t0 < timeout:
            try:
                self.s3.head_object(Bucket=bucket, Key=key)
                return time.perf_counter() - t0
            except self.s3.exceptions.ClientError:
                time.sleep(interval)
        raise TimeoutError(f"{url} did not appear")

    def gateway_hwm_mb(self) -> float:
        with open(f"/proc/{self.proc.pid}/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
        return 0.0

    def close(self):
        stop_server(self.proc)


def small(b: Bench, n: int, instances: int) -> dict:
    b.endpoint("small-async", "double.tar.gz", instances)
    b.endpoint("small-sync", "double.tar.gz", instances, asynchronous=False)
    for _ in range(20):                                      # warm both
        b.rt.invoke_endpoint(EndpointName="small-sync", Body=b"1", ContentType="application/json")["Body"].read()
    r = b.rt.invoke_endpoint_async(EndpointName="small-async", Body=b"1", ContentType="application/json")
    b.visible(r["OutputLocation"])

    def sync_call(i):
        return b.rt.invoke_endpoint(EndpointName="small-sync", Body=str(i).encode(),
                                    ContentType="application/json")["Body"].read()
    t0 = time.perf_counter()
    with ThreadPoolExecutor(instances) as ex:
        list(ex.map(sync_call, range(n)))
    sync_rps = n / (time.perf_counter() - t0)

    t0 = time.perf_counter()
    with ThreadPoolExecutor(8) as ex:
        sent = list(ex.map(lambda i: b.rt.invoke_endpoint_async(
            EndpointName="small-async", Body=str(i).encode(), ContentType="application/json"), range(n)))
    submit_s = time.perf_counter() - t0
    b.visible(sent[-1]["OutputLocation"], interval=0.02)     # the last one finishes last (oldest first) ...
    async_rps = n / (time.perf_counter() - t0)
    for r in sent:                                            # ... and every one is there
        b.visible(r["OutputLocation"], timeout=60)

    sync_lat, async_lat, put_lat = [], [], []
    for i in range(30):
        t = time.perf_counter()                               # what one small PutObject costs this store
        b.s3.put_object(Bucket=OUT, Key=f"probe/{i}", Body=b'{"double": 6}', ContentType="application/json")
        put_lat.append((time.perf_counter() - t) * 1000)
        t = time.perf_counter()
        sync_call(i)
        sync_lat.append((time.perf_counter() - t) * 1000)
        t = time.perf_counter()
        r = b.rt.invoke_endpoint_async(EndpointName="small-async", Body=b"3", ContentType="application/json")
        b.visible(r["OutputLocation"])
        async_lat.append((time.perf_counter() - t) * 1000)
    return {"requests": n, "instances": instances, "sync_rps": round(sync_rps, 1),
            "async_rps": round(async_rps, 1), "async_submit_rps": round(n / submit_s, 1),
            "sync_p50_ms": round(percentile(sync_lat, 50), 2), "async_e2e_p50_ms": round(percentile(async_lat, 50), 2),
            "async_e2e_p95_ms": round(percentile(async_lat, 95), 2),
            "s3_put_p50_ms": round(percentile(put_lat, 50), 2)}


def relay(b: Bench, mb: int, work: Path) -> dict:
    b.endpoint("relay", "echo.tar.gz", 1, instance_type="ml.m5.xlarge")      # 16 GB: the body, and its echo
    blob = work / "in.bin"
    with open(blob, "wb") as fh:
        chunk = bytes(range(256)) * 4096
        for _ in range(mb):
            fh.write(chunk)
    b.s3.upload_file(str(blob), "bench-in", "big.bin")
    blob.unlink()
    before = b.gateway_hwm_mb()
    t0 = time.perf_counter()
    r = b.rt.invoke_endpoint_async(EndpointName="relay", InputLocation="s3://bench-in/big.bin",
                                   ContentType="application/octet-stream", Accept="application/octet-stream",
                                   InvocationTimeoutSeconds=3600)
    b.visible(r["OutputLocation"], interval=0.05)
    relay_s = time.perf_counter() - t0
    bucket, key = r["OutputLocation"][5:].split("/", 1)
    size = b.s3.head_object(Bucket=bucket, Key=key)["ContentLength"]
    hwm = b.gateway_hwm_mb()
    t0 = time.perf_counter()                                  # the baseline: a plain copy through this process
    local = work / "copy.bin"
    with open(local, "wb") as fh:
        body = b.s3.get_object(Bucket="bench-in", Key="big.bin")["Body"]
        while data := body.read(1 << 20):
            fh.write(data)
    b.s3.upload_file(str(local), "bench-in", "big-copy.bin")
    copy_s = time.perf_counter() - t0
    local.unlink()
    return {"mb": mb, "output_bytes": size, "relay_s": round(relay_s, 2), "s3_copy_s": round(copy_s, 2),
            "relay_over_copy": round(relay_s / copy_s, 2), "gateway_peak_rss_mb_before": round(before, 1),
            "gateway_peak_rss_mb": round(hwm, 1)}


def from_zero(b: Bench) -> dict:
    b.endpoint("zero", "double.tar.gz", 1)
    rid = "endpoint/zero/variant/v"
    b.aas.register_scalable_target(ServiceNamespace="sagemaker", ResourceId=rid,
                                   ScalableDimension="sagemaker:variant:DesiredInstanceCount", MinCapacity=0,
                                   MaxCapacity=1)
    b.aas.put_scaling_policy(
        PolicyName="backlog", ServiceNamespace="sagemaker", ResourceId=rid,
        ScalableDimension="sagemaker:variant:DesiredInstanceCount", PolicyType="TargetTrackingScaling",
        TargetTrackingScalingPolicyConfiguration={
            "TargetValue": 1.0, "ScaleInCooldown": 1,
            "CustomizedMetricSpecification": {"MetricName": "ApproximateBacklogSizePerInstance",
                                              "Namespace": "AWS/SageMaker", "Statistic": "Average"}})
    cold, warm = [], []
    for _ in range(3):
        t0 = time.perf_counter()
        while b.sm.describe_endpoint(EndpointName="zero")["ProductionVariants"][0]["CurrentInstanceCount"]:
            if time.perf_counter() - t0 > 120:
                raise TimeoutError("the endpoint did not scale to zero")
            time.sleep(0.2)
        time.sleep(1.5)                                       # past the scale-in cooldown: a fresh start
        t = time.perf_counter()
        r = b.rt.invoke_endpoint_async(EndpointName="zero", Body=b"1", ContentType="application/json")
        b.visible(r["OutputLocation"])
        cold.append((time.perf_counter() - t) * 1000)
        t = time.perf_counter()                               # now warm: the same request again
        r = b.rt.invoke_endpoint_async(EndpointName="zero", Body=b"1", ContentType="application/json")
        b.visible(r["OutputLocation"])
        warm.append((time.perf_counter() - t) * 1000)
    return {"from_zero_ms": [round(x, 1) for x in cold], "warm_ms": [round(x, 1) for x in warm],
            "from_zero_p50_ms": round(percentile(cold, 50), 1), "warm_p50_ms": round(percentile(warm, 50), 1)}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--requests", type=int, default=500)
    p.add_argument("--instances", type=int, default=2)
    p.add_argument("--relay-mb", type=int, default=1024)
    p.add_argument("--format", choices=["table", "json"], default="table")
    args = p.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="slimserve-async-bench-"))
    b = Bench(work / "state")
    try:
        out = {"small": small(b, args.requests, args.instances)}
        out["relay"] = relay(b, args.relay_mb, work) if args.relay_mb else None
        out["scale_from_zero"] = from_zero(b)
    finally:
        b.close()
        threading.Thread(target=shutil.rmtree, args=(work, True)).start()
    if args.format == "json":
        print(json.dumps(out, indent=2))
        return 0
    s = out["small"]
    print(f"small payloads, {s['requests']} requests on {s['instances']} instances")
    print(f"  throughput     sync {s['sync_rps']:8.1f}/s   async {s['async_rps']:8.1f}/s "
          f"(submits {s['async_submit_rps']}/s)   ratio {s['async_rps'] / s['sync_rps']:.2f}")
    print(f"  latency p50    sync {s['sync_p50_ms']:8.2f} ms  async submit->output visible "
          f"{s['async_e2e_p50_ms']:.2f} ms (p95 {s['async_e2e_p95_ms']:.2f}); one small PutObject to the same "
          f"store {s['s3_put_p50_ms']:.2f} ms")
    if out["relay"]:
        r = out["relay"]
        print(f"relay of {r['mb']} MB in and out: {r['relay_s']} s   plain S3 copy {r['s3_copy_s']} s   "
              f"ratio {r['relay_over_copy']}")
        print(f"  gateway peak RSS {r['gateway_peak_rss_mb']} MB "
              f"(before the relay {r['gateway_peak_rss_mb_before']} MB)")
    z = out["scale_from_zero"]
    print(f"scale from zero: submit->output {z['from_zero_p50_ms']} ms p50 {z['from_zero_ms']}   "
          f"warm {z['warm_p50_ms']} ms {z['warm_ms']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
