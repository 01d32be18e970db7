"""``slimserve``: the gateway and its client commands.

Client commands find the gateway with --url / SLIMSERVE_URL and the admin
token with --state-dir / SLIMSERVE_TOKEN.  Errors go to stderr in one line and
the exit code is non-zero.
"""
from __future__ import annotations

import argparse
import sys

from gateway.cli import async_command, serve, transform_command
from gateway.cli.commands import (
    cmd_bill,
    cmd_credentials,
    cmd_delete,
    cmd_deploy,
    cmd_describe,
    cmd_doctor,
    cmd_endpoints,
    cmd_image,
    cmd_invoke,
    cmd_logs,
    cmd_models,
    cmd_simulate,
    cmd_update,
    cmd_usage,
)
from gateway.client import ClientError
from gateway.config import MEMORY_TIERS_MB
from gateway.errors import Invalid
from gateway.metering.billing import BillingError


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="slimserve", description="Self-hosted serverless model inference.")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def client_cmd(name, help_text, fn):
        sp = sub.add_parser(name, help=help_text, description=help_text)
        sp.add_argument("--url", default=None, help="gateway URL (default $SLIMSERVE_URL or http://127.0.0.1:8080)")
        sp.add_argument("--state-dir", default=None, help="where to find admin-token (default ./.slimserve)")
        sp.set_defaults(fn=fn)
        return sp

    serve.add_arguments(sub)

    d = client_cmd("deploy", "deploy a bundle to a new endpoint", cmd_deploy)
    d.add_argument("name")
    d.add_argument("bundle", help=".pkl file, model.tar.gz, or a model directory with code/inference.py "
                                  "(with --multi-model: the S3 prefix or directory holding the models)")
    d.add_argument("--memory", type=int, required=True, choices=MEMORY_TIERS_MB, metavar="MB",
                   help="memory size: " + ", ".join(map(str, MEMORY_TIERS_MB)))
    d.add_argument("--max-concurrency", type=int, default=None, help="1-200 (default 20)")
    d.add_argument("--provisioned", type=int, default=None, help="sandboxes kept warm always (default 0)")
    d.add_argument("--tag", action="append", default=[], metavar="KEY=VALUE")
    d.add_argument("--no-warmup", action="store_true",
                   help="never replay a request to warm up this endpoint's forked sandboxes (for models whose "
                        "calls have side effects)")
    d.add_argument("--multi-model", action="store_true",
                   help="a multi-model endpoint: BUNDLE is a prefix (s3://bucket/prefix/ or a directory under a "
                        "--model-root of the gateway) whose models requests name with --target-model")
    d.add_argument("--no-model-cache", action="store_true",
                   help="with --multi-model: unload each model after its invocation (ModelCacheSetting Disabled)")
    d.add_argument("--format", choices=["table", "json"], default="table")

    u = client_cmd("update", "change an endpoint's bundle or settings without dropping requests", cmd_update)
    u.add_argument("name")
    u.add_argument("bundle", nargs="?", default=None)
    u.add_argument("--memory", type=int, default=None, choices=MEMORY_TIERS_MB, metavar="MB")
    u.add_argument("--max-concurrency", type=int, default=None)
    u.add_argument("--provisioned", type=int, default=None)
    u.add_argument("--tag", action="append", default=[], metavar="KEY=VALUE")
    u.add_argument("--format", choices=["table", "json"], default="table")

    i = client_cmd("invoke", "invoke an endpoint and print the answer", cmd_invoke)
    i.add_argument("name")
    src = i.add_mutually_exclusive_group(required=True)
    src.add_argument("--data", help="request body as a string")
    src.add_argument("--file", help="request body from a file ('-' for stdin)")
    i.add_argument("--content-type", default="application/json")
    i.add_argument("--accept", default=None)
    i.add_argument("--custom-attributes", default=None)
    i.add_argument("--target-model", default=None, metavar="PATH",
                   help="a multi-model endpoint's model: its path below the endpoint's prefix")

    mm = client_cmd("models", "list the models a multi-model endpoint has loaded", cmd_models)
    mm.add_argument("name")
    mm.add_argument("--format", choices=["table", "json"], default="table")

    async_command.add_parser(client_cmd)
    transform_command.add_parsers(client_cmd)

    e = client_cmd("endpoints", "list endpoints", cmd_endpoints)
    e.add_argument("--format", choices=["table", "json"], default="table")
    ds = client_cmd("describe", "describe an endpoint and its sandboxes", cmd_describe)
    ds.add_argument("name")
    ds.add_argument("--format", choices=["table", "json"], default="table")
    dl = client_cmd("delete", "delete an endpoint", cmd_delete)
    dl.add_argument("name")
    lg = client_cmd("logs", "show an endpoint's sandbox stdout and stderr", cmd_logs)
    lg.add_argument("name")
    lg.add_argument("--tail", type=int, default=200)
    us = client_cmd("usage", "print usage records", cmd_usage)
    us.add_argument("--endpoint", default=None)
    us.add_argument("--limit", type=int, default=None, help="only the last N records")
    us.add_argument("--kind", choices=["invocation", "provisioned"], default="invocation")
    us.add_argument("--format", choices=["table", "json", "csv"], default="table",
                    help="csv: every record (all of them, for other tools)")
    bl = client_cmd("bill", "what each endpoint, variant, tier, tag or period cost", cmd_bill)
    bl.add_argument("--since", default=None, help="ISO 8601 time, Unix seconds, or an age like 24h or 7d")
    bl.add_argument("--until", default=None, help="same forms as --since (default: now)")
    bl.add_argument("--by", default="endpoint",
                    help="endpoint (default), variant, tier, tag:KEY, hour, day or target_model (a "
                         "multi-model endpoint's models); comma-separated to nest")
    bl.add_argument("--format", choices=["table", "csv", "json", "html"], default="table")
    bl.add_argument("--output", "-o", default=None, help="write to this file instead of stdout")
    from gateway.load import command as loadtest

    ld = client_cmd("load", "drive a live gateway with constant, poisson, burst or trace-replay traffic",
                    loadtest.run_from_args)
    loadtest.add_arguments(ld)
    cr = client_cmd("credentials", "print the gateway's access key as AWS environment variables", cmd_credentials)
    cr.add_argument("--region", default="us-east-1")
    dr = client_cmd("doctor", "which sandbox protections are in force here", cmd_doctor)
    dr.add_argument("--local", action="store_true", help="check this machine without asking a gateway")
    dr.add_argument("--cgroup", default="auto", choices=["auto", "v2", "v1", "none"])
    dr.add_argument("--format", choices=["table", "json"], default="table")

    im = sub.add_parser("image", help="the docker backend's runtime image",
                        description="Build the docker backend's runtime image from this machine's Python "
                                    "(no registry needed).")
    im_sub = im.add_subparsers(dest="image_command", required=True, metavar="ACTION")
    ib = im_sub.add_parser("build", help="build (or find up to date) slimserve-runtime:latest")
    ib.add_argument("--force", action="store_true", help="rebuild even when nothing changed")
    ib.set_defaults(fn=cmd_image)

    sm = sub.add_parser("simulate", help="replay an invocation trace through a warm-pool policy",
                        description="Replay a trace (CSV or .csv.gz: endpoint,start_s,duration_ms,memory_mb) "
                                    "through the warm-pool policy code on a virtual clock.")
    sm.add_argument("--trace", required=True)
    sm.add_argument("--policy", action="append", default=None, metavar="POLICY",
                    help="adaptive (default), adaptive:H, histogram, fixed:SECONDS or none; repeat to compare "
                         "(the table shows ratios to fixed:600 when it is one of them)")
    sm.add_argument("--cold-start-ms", type=float, default=1000.0,
                    help="cold-start latency, and the adaptive policy's prior (default 1000)")
    sm.add_argument("--cold-start-ms-by-path", default=None, metavar="model=MS,base=MS,fresh=MS",
                    help="per-path latencies: a start takes the model-zygote path while its endpoint's model "
                         "zygote is kept (30 min after its last start), else base, else fresh")
    sm.add_argument("--zygote-mb", type=float, default=16.0, metavar="MB",
                    help="with a model= latency: what each model zygote holds while it is kept (default 16)")
    sm.add_argument("--format", choices=["table", "json"], default="table",
                    help="json: one object per run, one per line")
    sm.add_argument("--by-endpoint", action="store_true", help="json: include per-endpoint figures")
    sm.set_defaults(fn=cmd_simulate)
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.fn(args)
    except ClientError as exc:
        print(f"slimserve: {exc}", file=sys.stderr)
        return 1
    except (Invalid, FileNotFoundError, OSError, BillingError) as exc:
        print(f"slimserve: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
