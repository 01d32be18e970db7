"""``slimserve invoke-async``: InvokeEndpointAsync from the shell, and with ``--wait`` a progress
line until the answer is written, then the answer (or the error) itself."""
from __future__ import annotations

import sys
import time
from pathlib import Path

from gateway.async_inference.requests import MAX_INLINE_BODY
from gateway.client import Client, ClientError

POLL_S = 0.25


def add_parser(client_cmd) -> None:
    a = client_cmd("invoke-async", "queue an asynchronous request (InvokeEndpointAsync); --wait for its answer",
                   cmd_invoke_async)
    a.add_argument("name")
    src = a.add_mutually_exclusive_group(required=True)
    src.add_argument("--data", help="request body as a string (at most 128,000 bytes)")
    src.add_argument("--file", help="request body from a file ('-' for stdin; at most 128,000 bytes)")
    src.add_argument("--input-location", metavar="S3_URL", help="the request body is this S3 object (up to 1 GB)")
    a.add_argument("--content-type", default="application/json")
    a.add_argument("--accept", default=None)
    a.add_argument("--custom-attributes", default=None)
    a.add_argument("--inference-id", default=None)
    a.add_argument("--ttl", type=int, default=None, metavar="SECONDS", help="RequestTTLSeconds (60-21600)")
    a.add_argument("--invocation-timeout", type=int, default=None, metavar="SECONDS",
                   help="InvocationTimeoutSeconds (1-3600, default 900)")
    a.add_argument("--wait", action="store_true", help="follow the request to its end and print its answer")
    a.add_argument("--output", default=None, metavar="FILE", help="with --wait: write the answer here, not stdout")


def cmd_invoke_async(args) -> int:
    client = Client(args.url, state_dir=args.state_dir)
    body = None
    if args.file or args.data is not None:
        body = (sys.stdin.buffer.read() if args.file == "-" else Path(args.file).read_bytes()) if args.file \
            else args.data.encode()
        if len(body) > MAX_INLINE_BODY:
            print(f"error: the body is {len(body)} bytes; an inline body is at most {MAX_INLINE_BODY}. Put it in "
                  "S3 and pass --input-location s3://BUCKET/KEY (up to 1 GB).", file=sys.stderr)
            return 2
    sent = client.invoke_async(args.name, body, args.input_location, args.content_type, args.accept,
                               args.custom_attributes, args.inference_id, args.ttl, args.invocation_timeout)
    if not args.wait:
        print(f"queued {sent['RequestId']} (InferenceId {sent['InferenceId']})\n"
              f"  output:  {sent['OutputLocation']}\n  failure: {sent['FailureLocation']}")
        return 0
    req = _follow(client, sent["RequestId"])
    if req["state"] == "done":
        if args.output:
            with open(args.output, "wb") as fh:
                client.async_output(req["id"], fh)
        else:
            sys.stdout.flush()
            client.async_output(req["id"], sys.stdout.buffer)
            sys.stdout.buffer.flush()
        return 0
    print(f"error: request {req['id']} {req['state']}: {req.get('error') or ''}", file=sys.stderr)
    return 1


def _follow(client: Client, request_id: str) -> dict:
    """Poll the request until it ends; one progress line on a terminal's stderr."""
    tty = sys.stderr.isatty()
    t0 = time.monotonic()
    while True:
        try:
            req = client.async_request(request_id)
        except ClientError as exc:
            if exc.status == 404:             # not visible yet (another node's store replica): keep asking
                req = {"state": "queued", "attempts": 0}
            else:
                raise
        if req["state"] in ("done", "failed", "expired"):
            if tty:
                print(f"\r{req['state']} after {time.monotonic() - t0:.1f} s" + " " * 20, file=sys.stderr)
            return req
        if tty:
            attempt = f", attempt {req['attempts']}" if req.get("attempts", 0) > 1 else ""
            print(f"\r{req['state']} {time.monotonic() - t0:.1f} s{attempt}   ", end="", file=sys.stderr, flush=True)
        time.sleep(POLL_S)
