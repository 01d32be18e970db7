"""``slimserve transform`` (CreateTransformJob from the shell, ``--wait`` with a live progress
bar) and ``slimserve transform-jobs`` (list; ``stop JOB``)."""
from __future__ import annotations

import json
import sys
import time

from gateway.client import Client

POLL_S = 0.5
PLAIN_EVERY_S = 5.0         # without a terminal: one plain line this often
BAR = 24


def add_parsers(client_cmd) -> None:
    t = client_cmd("transform", "start a batch transform job over S3 (or local) data; --wait shows its progress",
                   cmd_transform)
    t.add_argument("job", help="the job's name (unique: a name is never reused)")
    t.add_argument("--model", required=True,
                   help="a SageMaker model, or an endpoint deployed with the CLI (its model is used)")
    t.add_argument("--input", required=True, metavar="URI",
                   help="s3://bucket/prefix/ (every object under it), or a local directory under a --model-root")
    t.add_argument("--manifest", action="store_true", help="--input is a manifest file, not a prefix")
    t.add_argument("--output", required=True, metavar="URI", help="S3OutputPath: outputs are <input name>.out")
    t.add_argument("--content-type", default=None)
    t.add_argument("--accept", default=None)
    t.add_argument("--gzip", action="store_true", help="the input objects are gzip-compressed")
    t.add_argument("--split-type", choices=["None", "Line", "RecordIO"], default="Line")
    t.add_argument("--batch-strategy", choices=["SingleRecord", "MultiRecord"], default=None,
                   help="default MultiRecord (SingleRecord with --split-type None)")
    t.add_argument("--max-payload-mb", type=int, default=None, help="1-100 (default 6)")
    t.add_argument("--max-concurrent", type=int, default=None,
                   help="worker sandboxes per instance (default: the instance's vCPUs)")
    t.add_argument("--assemble-with", choices=["None", "Line"], default=None)
    t.add_argument("--instance-type", default="ml.m5.large")
    t.add_argument("--instance-count", type=int, default=1)
    t.add_argument("--timeout", type=int, default=None, metavar="SECONDS",
                   help="InvocationsTimeoutInSeconds (1-3600, default 600)")
    t.add_argument("--retries", type=int, default=None, help="InvocationsMaxRetries (0-3, default 3)")
    t.add_argument("--env", action="append", default=[], metavar="KEY=VALUE", help="Environment of the job")
    t.add_argument("--wait", action="store_true", help="follow the job to its end with a progress bar")

    j = client_cmd("transform-jobs", "list transform jobs, or stop one: transform-jobs stop JOB", cmd_transform_jobs)
    j.add_argument("action", nargs="?", choices=["list", "stop"], default="list")
    j.add_argument("job", nargs="?", default=None)
    j.add_argument("--format", choices=["table", "json"], default="table")


def request_of(args) -> dict:
    """The CreateTransformJob request the flags describe."""
    tin = {"DataSource": {"S3DataSource": {"S3DataType": "ManifestFile" if args.manifest else "S3Prefix",
                                           "S3Uri": args.input}},
           "SplitType": args.split_type, "CompressionType": "Gzip" if args.gzip else "None"}
    if args.content_type:
        tin["ContentType"] = args.content_type
    tout = {"S3OutputPath": args.output}
    if args.accept:
        tout["Accept"] = args.accept
    if args.assemble_with:
        tout["AssembleWith"] = args.assemble_with
    req = {"TransformJobName": args.job, "ModelName": args.model, "TransformInput": tin, "TransformOutput": tout,
           "TransformResources": {"InstanceType": args.instance_type, "InstanceCount": args.instance_count}}
    for key, value in (("BatchStrategy", args.batch_strategy), ("MaxPayloadInMB", args.max_payload_mb),
                       ("MaxConcurrentTransforms", args.max_concurrent)):
        if value is not None:
            req[key] = value
    client = {k: v for k, v in (("InvocationsTimeoutInSeconds", args.timeout),
                                ("InvocationsMaxRetries", args.retries)) if v is not None}
    if client:
        req["ModelClientConfig"] = client
    if args.env:
        req["Environment"] = dict(e.split("=", 1) for e in args.env if "=" in e)
    return req


def cmd_transform(args) -> int:
    client = Client(args.url, state_dir=args.state_dir)
    arn = client.transform_create(request_of(args))["TransformJobArn"]
    print(f"{args.job}: started ({arn})")
    if not args.wait:
        return 0
    return follow(client, args.job, sys.stdout)


def progress_line(name: str, p: dict, rate: float | None) -> str:
    objects, done = p.get("objects", 0), p.get("objects_done", 0)
    frac = (p.get("bytes_done", 0) / p["bytes"]) if p.get("bytes") else (done / objects if objects else 0.0)
    filled = int(round(frac * BAR))
    bar = "#" * filled + "-" * (BAR - filled)
    parts = [f"{name} [{bar}] {done}/{objects} objects", f"{p.get('records_done', 0):,} records"]
    if rate:
        parts.append(f"{rate:,.0f} records/s")
        left = (1.0 - frac) * (time.time() - p["started"]) / frac if frac > 0 and p.get("started") else None
        if left is not None:
            parts.append(f"ETA {left:,.0f} s")
    if p.get("message"):
        parts.append(p["message"])
    return " | ".join(parts)


def follow(client: Client, name: str, out) -> int:
    """A live bar (a line rewritten in place on a terminal, a plain line every few seconds
    otherwise) until the job ends; exit status 0 when it Completed."""
    tty = out.isatty()
    last_plain = 0.0
    while True:
        d = client.transform_job(name)
        p = d.get("Progress", {})
        elapsed = (time.time() - p["started"]) if p.get("started") else 0.0
        rate = p.get("records_done", 0) / elapsed if elapsed > 0 else None
        line = progress_line(name, p, rate)
        status = d["TransformJobStatus"]
        final = status in ("Completed", "Failed", "Stopped")
        if tty:
            out.write("\r" + line + "\x1b[K")
        elif final or time.monotonic() - last_plain >= PLAIN_EVERY_S:
            out.write(line + "\n")
            last_plain = time.monotonic()
        out.flush()
        if final:
            if tty:
                out.write("\n")
            took = (d["TransformEndTime"] - d["TransformStartTime"]) if d.get("TransformStartTime") else 0.0
            out.write(f"{name}: {status} in {took:.1f} s" + (f": {d['FailureReason']}" if d.get("FailureReason")
                                                               else "") + "\n")
            return 0 if status == "Completed" else 1
        time.sleep(POLL_S)


def cmd_transform_jobs(args) -> int:
    client = Client(args.url, state_dir=args.state_dir)
    if args.action == "stop":
        if not args.job:
            print("slimserve: transform-jobs stop needs a job name", file=sys.stderr)
            return 2
        client.transform_stop(args.job)
        print(f"{args.job}: stopping")
        return 0
    jobs = client.transform_jobs()
    if args.format == "json":
        print(json.dumps(jobs, indent=2))
        return 0
    print(f"{'JOB':<32}  {'STATUS':<10}  {'OBJECTS':>9}  {'RECORDS':>12}  CREATED")
    for j in jobs:
        p = j.get("Progress", {})
        created = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(j["CreationTime"]))
        print(f"{j['TransformJobName']:<32}  {j['TransformJobStatus']:<10}  "
              f"{p.get('objects_done', 0):>4}/{p.get('objects', 0):<4}  {p.get('records_done', 0):>12,}  {created}")
    return 0
