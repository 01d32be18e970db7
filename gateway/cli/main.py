"""``slimserve``: the gateway and its client commands.

Client commands find the gateway with --url / SLIMSERVE_URL and the admin
token with --state-dir / SLIMSERVE_TOKEN.  Errors go to stderr in one line and
the exit code is non-zero.
"""
from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import logging
import signal
import sys
from pathlib import Path

from gateway.client import Client, ClientError
from gateway.config import DEFAULT_STATE_DIR, MEMORY_TIERS_MB, Settings
from gateway.domain import parse_tags
from gateway.errors import Invalid
from gateway.metering.billing import BillingError


def _fmt_time(ts) -> str:
    return dt.datetime.fromtimestamp(ts, dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")[:-4] + "Z" \
        if ts else "-"


def _table(rows: list[dict], cols: list[str]) -> str:
    cells = [[str(r.get(c, "")) for c in cols] for r in rows]
    widths = [max([len(c)] + [len(row[i]) for row in cells]) for i, c in enumerate(cols)]
    lines = ["  ".join(c.upper().ljust(w) for c, w in zip(cols, widths, strict=True))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)) for row in cells]
    return "\n".join(lines)


def _client(args) -> Client:
    return Client(args.url, state_dir=args.state_dir)


# --- serve ---------------------------------------------------------------------
async def _serve(settings: Settings) -> None:
    from gateway.app import Gateway

    gw = Gateway(settings)
    await gw.start()
    print(f"slimserve gateway listening on {gw.url} (state in {settings.state_dir})", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    print("slimserve: shutting down (finishing in-flight requests)", file=sys.stderr, flush=True)
    await gw.stop()


def _access_keys(given: list[str]) -> tuple:
    """--access-key ID:SECRET[:read] (repeatable) and $SLIMSERVE_ACCESS_KEYS (comma-separated)."""
    import os

    from gateway.sagemaker import credentials

    pairs = list(given or []) + [p for p in os.environ.get("SLIMSERVE_ACCESS_KEYS", "").split(",") if p.strip()]
    try:
        return tuple(credentials.parse(p) for p in pairs)
    except ValueError as exc:
        raise Invalid(str(exc)) from None


def cmd_serve(args) -> int:
    import uvloop

    from gateway.pools import policy as policies

    try:                                       # refuse bad settings before anything starts
        if args.policy != "fixed":
            policies.parse(args.policy)
    except ValueError as exc:
        print(f"slimserve: {exc}", file=sys.stderr)
        return 2
    if args.max_model_zygotes < 0 or (args.model_zygotes_memory_mb or 0) < 0 or not args.model_zygote_idle > 0:
        print("slimserve: --max-model-zygotes and --model-zygotes-memory-mb take numbers >= 0, "
              "--model-zygote-idle a number of seconds > 0", file=sys.stderr)
        return 2

    if args.auth == "none" and args.host not in ("127.0.0.1", "::1", "localhost"):
        print(f"slimserve: --auth none is refused on {args.host}: only a loopback address may serve unsigned",
              file=sys.stderr)
        return 2
    try:
        uid_range = _uid_range(args.sandbox_uids)
    except ValueError as exc:
        print(f"slimserve: {exc}", file=sys.stderr)
        return 2
    if args.sandbox_pids_max < 16:
        print("slimserve: --sandbox-pids-max must be at least 16 (threads count too)", file=sys.stderr)
        return 2
    settings = Settings(
        state_dir=Path(args.state_dir or DEFAULT_STATE_DIR), host=args.host, port=args.port,
        sandbox_pids_max=args.sandbox_pids_max, sandbox_uid_range=uid_range,
        sandbox_paths=tuple(str(Path(p).resolve()) for p in args.sandbox_path), byoc_user=args.byoc_user,
        backend=args.backend, docker_image=args.docker_image, docker_stems=args.docker_stems,
        invocation_timeout_s=args.timeout, memory_budget_mb=args.memory_budget_mb,
        memory_budget_fraction=args.memory_budget_fraction, keep_alive_s=args.keep_alive,
        policy=args.policy, policy_cold_start_ms=args.policy_cold_start_ms,
        cgroup_mode=args.cgroup, network_isolation=not args.allow_network,
        zygotes=not args.no_zygotes,
        zygote_preload=tuple(m for m in (args.preload or "").split(",") if m),
        model_zygotes_max=args.max_model_zygotes, model_zygotes_memory_mb=args.model_zygotes_memory_mb,
        model_zygote_idle_s=args.model_zygote_idle,
        prices_path=Path(args.prices) if args.prices else None, usage_retention_days=args.usage_retention_days,
        access_keys=_access_keys(args.access_key), account_id=args.account_id, region=args.region,
        auth=args.auth, model_roots=tuple(Path(p).resolve() for p in args.model_root),
    )
    from gateway.metering.billing import Prices

    Prices.load(settings.prices_path)          # refuse a bad price table before anything starts
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    uvloop.run(_serve(settings))
    return 0


def _uid_range(text: str | None) -> tuple[int, int] | None:
    if not text:
        return None
    first, sep, count = text.partition(":")
    try:
        lo, n = int(first), int(count) if sep else 1024
    except ValueError:
        raise ValueError(f"--sandbox-uids takes FIRST:COUNT, not {text!r}") from None
    if lo < 1000 or n < 16 or lo + n > 2 ** 32 - 2:
        raise ValueError("--sandbox-uids: FIRST at least 1000 and COUNT at least 16 (system uids stay unused)")
    return lo, n


# --- client commands ---------------------------------------------------------------
def cmd_deploy(args) -> int:
    info = _client(args).deploy(args.name, args.bundle, memory_mb=args.memory,
                                max_concurrency=args.max_concurrency, provisioned=args.provisioned,
                                tags=parse_tags(args.tag), warmup=not args.no_warmup)
    _print_describe(info, args.format)
    return 0


def cmd_update(args) -> int:
    info = _client(args).update(args.name, args.bundle, memory_mb=args.memory,
                                max_concurrency=args.max_concurrency, provisioned=args.provisioned,
                                tags=parse_tags(args.tag))
    _print_describe(info, args.format)
    return 0


def cmd_invoke(args) -> int:
    if args.file:
        body = sys.stdin.buffer.read() if args.file == "-" else Path(args.file).read_bytes()
    else:
        body = (args.data or "").encode()
    hdrs, data = _client(args).invoke_raw(args.name, body, content_type=args.content_type, accept=args.accept,
                                         custom_attributes=args.custom_attributes)
    sys.stdout.buffer.write(data)
    if data and not data.endswith(b"\n") and sys.stdout.isatty():
        sys.stdout.write("\n")
    return 0


def cmd_endpoints(args) -> int:
    eps = _client(args).endpoints()
    if args.format == "json":
        print(json.dumps(eps, indent=2))
        return 0
    rows = []
    for e in eps:
        for v in e["variants"]:
            pool = v.get("pool") or {}
            states = pool.get("states", {})
            rows.append({"name": e["name"], "variant": v["name"], "memory_mb": v["memory_mb"],
                         "max_conc": v["max_concurrency"], "provisioned": v["provisioned"],
                         "idle": states.get("idle", 0), "busy": states.get("busy", 0),
                         "cold_starts": pool.get("cold_starts", 0),
                         "tags": ",".join(f"{k}={val}" for k, val in e["tags"].items())})
    print(_table(rows, ["name", "variant", "memory_mb", "max_conc", "provisioned", "idle", "busy",
                        "cold_starts", "tags"]) if rows else "no endpoints")
    return 0


def _print_describe(info: dict, fmt: str) -> None:
    if fmt == "json":
        print(json.dumps(info, indent=2))
        return
    print(f"endpoint     {info['name']}  ({info['status']})")
    print(f"created      {_fmt_time(info['created'])}   updated {_fmt_time(info['updated'])}")
    if info["tags"]:
        print("tags         " + ", ".join(f"{k}={v}" for k, v in info["tags"].items()))
    if info.get("last_failure"):
        print(f"last failure {info['last_failure']}")
    for v in info["variants"]:
        pool = v.get("pool") or {}
        print(f"variant      {v['name']}: {v['memory_mb']} MB, max concurrency {v['max_concurrency']},"
              f" provisioned {v['provisioned']}, bundle {v['bundle_kind']} v{v['bundle_version']}")
        print(f"  pool       in flight {pool.get('in_flight', 0)}, cold starts {pool.get('cold_starts', 0)},"
              f" states {pool.get('states', {})}")
        for sb in pool.get("sandboxes", []):
            prot = sb.get("protections") or {}
            print(f"  sandbox    {sb['id']} {sb['state']} pid {sb['pid']} path {sb['start_path']}"
                  f" start {sb['start_ms'] or 0:.1f} ms, memory {sb['memory_bytes'] >> 20}/"
                  f"{sb['memory_cap_bytes'] >> 20} MB, protections {','.join(prot.get('applied', []))}"
                  + (f" missing {prot.get('missing')}" if prot.get("missing") else ""))


def cmd_describe(args) -> int:
    _print_describe(_client(args).describe(args.name), args.format)
    return 0


def cmd_delete(args) -> int:
    _client(args).delete(args.name)
    print(f"deleted {args.name}")
    return 0


def cmd_logs(args) -> int:
    sys.stdout.write(_client(args).logs(args.name, tail=args.tail))
    return 0


USAGE_COLS = ["start", "endpoint", "variant", "memory_mb", "billed_ms", "model_ms", "overhead_ms",
              "cold_start", "init_ms", "status"]


def cmd_usage(args) -> int:
    if args.format == "csv":                    # streamed: an export of millions of records stays small
        sys.stdout.flush()
        _client(args).usage_csv(endpoint=args.endpoint, kind=args.kind, out=sys.stdout.buffer)
        sys.stdout.buffer.flush()
        return 0
    rows = _client(args).usage(endpoint=args.endpoint, limit=args.limit, kind=args.kind)
    if args.format == "json":
        print(json.dumps(rows, indent=1))
        return 0
    if args.kind == "provisioned":
        cols = ["start", "endpoint", "variant", "memory_mb", "sandboxes", "billed_ms"]
    else:
        cols = USAGE_COLS
    shown = []
    for r in rows:
        r = dict(r, start=_fmt_time(r["start"]))
        for k in ("model_ms", "overhead_ms", "init_ms"):
            if k in r:
                r[k] = f"{r[k]:.3f}"
        shown.append(r)
    print(_table(shown, cols) if shown else "no usage records")
    return 0


def cmd_bill(args) -> int:
    from gateway.metering import bill_text as billreport

    client = _client(args)
    if args.format in ("json", "csv", "html"):
        out = client.bill(since=args.since, until=args.until, by=args.by, format=args.format)
        text = json.dumps(out, indent=1) + "\n" if args.format == "json" else out
    else:
        text = billreport.table(client.bill(since=args.since, until=args.until, by=args.by))
    if args.output:
        Path(args.output).write_text(text)
        print(f"slimserve: bill written to {args.output}", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return 0


def cmd_image(args) -> int:
    import docker

    from runtime.docker import image

    try:
        client = docker.from_env()
        client.ping()
    except docker.errors.DockerException as exc:
        print(f"slimserve: cannot reach the Docker engine: {exc}", file=sys.stderr)
        return 1
    tag = image.build(client, force=args.force, log=lambda m: print(f"slimserve image: {m}", file=sys.stderr))
    print(tag)
    return 0


def cmd_credentials(args) -> int:
    """``export`` lines for boto3, the AWS CLI and the SageMaker SDK: the generated pair of the
    state dir's gateway, and the variables that point AWS code at it."""
    import os

    from gateway.sagemaker import credentials

    state = Path(args.state_dir or DEFAULT_STATE_DIR)
    key = credentials.read(state / credentials.FILE_NAME)
    if key is None:
        print(f"slimserve: no generated access key in {state.resolve()} (start the gateway there first, or pass "
              "--state-dir)", file=sys.stderr)
        return 1
    url = args.url or os.environ.get("SLIMSERVE_URL") or "http://127.0.0.1:8080"
    for name, value in (("AWS_ACCESS_KEY_ID", key.key_id), ("AWS_SECRET_ACCESS_KEY", key.secret),
                        ("AWS_DEFAULT_REGION", args.region), ("AWS_ENDPOINT_URL", url)):
        print(f"export {name}={value}")
    return 0


def cmd_doctor(args) -> int:
    if args.url or not args.local:
        try:
            rep = _client(args).doctor()
        except ClientError as exc:
            if exc.code != "ConnectionError" and exc.code != "NoToken":
                raise
            rep = None
    else:
        rep = None
    if rep is None:
        from gateway.app import make_backend
        from gateway.cli.doctor import report

        settings = Settings(state_dir=Path(args.state_dir or DEFAULT_STATE_DIR), cgroup_mode=args.cgroup)
        rep = report(settings, make_backend(settings), probe=True)
        rep["source"] = "this machine (no gateway reached)"
    if args.format == "json":
        print(json.dumps(rep, indent=2))
        return 0
    print(f"backend: {rep['backend']}" + (f"  [{rep['source']}]" if rep.get("source") else ""))
    for key, val in rep.items():
        if isinstance(val, dict):
            mark = "ok  " if val.get("ok") else "MISSING"
            print(f"  {mark:7} {key:18} {val.get('mechanism', '')} {val['detail']}".rstrip())
    return 0


def cmd_simulate(args) -> int:
    from gateway.pools import simulate

    specs = args.policy or ["adaptive"]
    try:
        for spec in specs:
            simulate.parse(spec, args.cold_start_ms)      # a bad name fails before any run
        results = [simulate.run(args.trace, spec, args.cold_start_ms) for spec in specs]
    except ValueError as exc:                             # unknown policy, malformed trace
        print(f"slimserve: {exc}", file=sys.stderr)
        return 2
    if args.format == "json":
        for r in results:
            if not args.by_endpoint:
                r.pop("by_endpoint", None)
            print(json.dumps(r))
    else:
        print(f"trace {args.trace}: {results[0]['invocations']:,} invocations, "
              f"{results[0]['endpoints']:,} endpoints, cold start {args.cold_start_ms:g} ms")
        print(simulate.format_table(results), end="")
    return 0


# --- parser --------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="slimserve", description="Self-hosted serverless model inference.")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def client_cmd(name, help_text, fn):
        sp = sub.add_parser(name, help=help_text, description=help_text)
        sp.add_argument("--url", default=None, help="gateway URL (default $SLIMSERVE_URL or http://127.0.0.1:8080)")
        sp.add_argument("--state-dir", default=None, help="where to find admin-token (default ./.slimserve)")
        sp.set_defaults(fn=fn)
        return sp

    d = Settings()        # the defaults live in Settings alone; these flags only read them
    s = sub.add_parser("serve", help="run the gateway", description="Run the gateway.")
    s.add_argument("--host", default=d.host)
    s.add_argument("--port", type=int, default=d.port)
    s.add_argument("--state-dir", default=DEFAULT_STATE_DIR)
    s.add_argument("--backend", default=d.backend, choices=["process", "docker"],
                   help="process (default): OS processes with cgroups; docker: containers "
                        "(run `slimserve image build` first)")
    s.add_argument("--docker-image", default=d.docker_image, help="runtime image of the docker backend")
    s.add_argument("--docker-stems", type=int, default=d.docker_stems,
                   help=f"paused containers the docker backend keeps ready for cold starts (default {d.docker_stems};"
                        " 0: none)")
    s.add_argument("--timeout", type=float, default=d.invocation_timeout_s,
                   help=f"invocation timeout in seconds (default {d.invocation_timeout_s:g})")
    s.add_argument("--memory-budget-mb", type=int, default=None, help="host memory sandboxes may reserve")
    s.add_argument("--memory-budget-fraction", type=float, default=d.memory_budget_fraction,
                   help="fraction of RAM sandboxes may reserve when --memory-budget-mb is unset "
                        f"(default {d.memory_budget_fraction:g})")
    s.add_argument("--policy", default=d.policy,
                   help="warm-pool policy: adaptive (default), adaptive:H (H: GB-s of idle memory one second of cold "
                        "start is worth, default 2400), histogram, fixed (uses --keep-alive), fixed:SECONDS, none")
    s.add_argument("--policy-cold-start-ms", type=float, default=d.policy_cold_start_ms,
                   help="cold-start latency the adaptive policy weighs against idle memory "
                        f"(default {d.policy_cold_start_ms:g})")
    s.add_argument("--keep-alive", type=float, default=d.keep_alive_s,
                   help=f"keep-alive of --policy fixed, seconds (default {d.keep_alive_s:g})")
    s.add_argument("--access-key", action="append", default=[], metavar="ID:SECRET[:read]",
                   help="accept AWS SigV4 signatures made with this key (repeatable; also $SLIMSERVE_ACCESS_KEYS); "
                        "':read' may only invoke, Describe and List. Given keys replace the pair generated in the "
                        "state dir (slimserve credentials prints it)")
    s.add_argument("--auth", choices=["sigv4", "none"], default=d.auth,
                   help="sigv4 (default): every AWS-style API requires signatures; none: unsigned, loopback only")
    s.add_argument("--model-root", action="append", default=[], metavar="DIR",
                   help="a directory file:// and local ModelDataUrl may point into (repeatable; default: none, so "
                        "model data comes only as uploads through the admin API); never the state dir")
    s.add_argument("--account-id", default=d.account_id, help=f"account id in ARNs (default {d.account_id})")
    s.add_argument("--region", default=d.region, help=f"region in ARNs and signatures (default {d.region})")
    s.add_argument("--usage-retention-days", type=float, default=None, metavar="DAYS",
                   help="drop raw usage records older than this; hourly roll-ups keep every bill (default: keep all)")
    s.add_argument("--prices", default=None, metavar="FILE",
                   help="price table for bills (JSON; default: the shipped example, gateway/prices.json)")
    s.add_argument("--cgroup", default=d.cgroup_mode, choices=["auto", "v2", "v1", "none"])
    s.add_argument("--allow-network", action="store_true",
                   help="do not put sandboxes in a network namespace: they reach the host's network, its loopback "
                        "services and its abstract Unix sockets")
    s.add_argument("--sandbox-pids-max", type=int, default=d.sandbox_pids_max, metavar="N",
                   help=f"processes and threads per sandbox (cgroup pids.max, default {d.sandbox_pids_max})")
    s.add_argument("--sandbox-uids", default=None, metavar="FIRST:COUNT",
                   help="uids sandboxes run as, one each (default: 1024 uids from 200000 up, chosen by state dir)")
    s.add_argument("--sandbox-path", action="append", default=[], metavar="PATH",
                   help="a host path every sandbox also sees, read-only (repeatable)")
    s.add_argument("--byoc-user", default=None, metavar="UID[:GID]",
                   help="run bring-your-own SageMaker containers as this user instead of the image's USER")
    s.add_argument("--no-zygotes", action="store_true",
                   help="start every sandbox as a fresh interpreter instead of forking it from a zygote")
    s.add_argument("--preload", default="", metavar="MOD,MOD",
                   help="modules the base zygote imports besides numpy, scikit-learn, pandas, onnxruntime, torch")
    s.add_argument("--max-model-zygotes", type=int, default=d.model_zygotes_max, metavar="N",
                   help="bundles kept loaded in model zygotes at most, least recently used closed first "
                        f"(default {d.model_zygotes_max}; 0: no model zygotes)")
    s.add_argument("--model-zygotes-memory-mb", type=int, default=None, metavar="MB",
                   help="memory model zygotes may hold, beyond the sandbox budget (default: a tenth of RAM)")
    s.add_argument("--model-zygote-idle", type=float, default=d.model_zygote_idle_s, metavar="SECONDS",
                   help=f"close a model zygote not forked from for this long (default {d.model_zygote_idle_s:g})")
    s.set_defaults(fn=cmd_serve)

    d = client_cmd("deploy", "deploy a bundle to a new endpoint", cmd_deploy)
    d.add_argument("name")
    d.add_argument("bundle", help=".pkl file, model.tar.gz, or a model directory with code/inference.py")
    d.add_argument("--memory", type=int, required=True, choices=MEMORY_TIERS_MB, metavar="MB",
                   help="memory size: " + ", ".join(map(str, MEMORY_TIERS_MB)))
    d.add_argument("--max-concurrency", type=int, default=None, help="1-200 (default 20)")
    d.add_argument("--provisioned", type=int, default=None, help="sandboxes kept warm always (default 0)")
    d.add_argument("--tag", action="append", default=[], metavar="KEY=VALUE")
    d.add_argument("--no-warmup", action="store_true",
                   help="never replay a request to warm up this endpoint's forked sandboxes (for models whose "
                        "calls have side effects)")
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
                    help="endpoint (default), variant, tier, tag:KEY, hour or day; comma-separated to nest")
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
    sm.add_argument("--cold-start-ms", type=float, default=1000.0, help="cold-start latency (default 1000)")
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
