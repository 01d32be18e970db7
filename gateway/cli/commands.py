"""The client commands of ``slimserve``: they find the gateway with --url / SLIMSERVE_URL and
the admin token with --state-dir / SLIMSERVE_TOKEN, and print tables or JSON."""
from __future__ import annotations

import datetime as dt
import json
import sys
from pathlib import Path

from gateway import locate
from gateway.client import Client, ClientError
from gateway.config import DEFAULT_STATE_DIR, Settings
from gateway.domain import parse_tags


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


def cmd_deploy(args) -> int:
    info = _client(args).deploy(args.name, args.bundle, memory_mb=args.memory,
                                max_concurrency=args.max_concurrency, provisioned=args.provisioned,
                                tags=parse_tags(args.tag), warmup=not args.no_warmup,
                                multi_model=args.multi_model, model_cache=not args.no_model_cache)
    _print_describe(info, args.format)
    return 0


def cmd_models(args) -> int:
    doc = _client(args).models(args.name)
    if args.format == "json":
        print(json.dumps(doc, indent=2))
        return 0
    rows = [{"variant": v["variant"], "target_model": m["target_model"], "sandboxes": len(m["sandboxes"]),
             "memory_mb": f"{m['memory_bytes'] / (1 << 20):.1f}", "stale": "yes" if m["stale"] else "",
             "last_used": dt.datetime.fromtimestamp(m["last_used"], dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")}
            for v in doc["variants"] for m in v["models"]]
    print(_table(rows, list(rows[0])) if rows else f"endpoint {doc['endpoint']} has no model loaded")
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
                                         custom_attributes=args.custom_attributes, target_model=args.target_model)
    if data and not data.endswith(b"\n") and sys.stdout.isatty():
        data += b"\n"                         # a terminal gets a whole line; a pipe the exact bytes
    sys.stdout.flush()                         # nothing written as text may come after the answer ...
    sys.stdout.buffer.write(data)
    sys.stdout.buffer.flush()                  # ... nor anything sent to stderr later come before it
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
        cpu = pool.get("vcpus")
        print(f"  pool       in flight {pool.get('in_flight', 0)}, cold starts {pool.get('cold_starts', 0)},"
              f" states {pool.get('states', {})}, cpu " + (f"{cpu:g} vCPU" if cpu else "no quota"))
        belief = pool.get("policy") or {}
        if belief.get("cold_start_ms") is not None:
            paths = ", ".join(f"{p} {ms:g} ms" for p, ms in belief["cold_start"]["by_path_ms"].items())
            print(f"  policy     {belief.get('name')}: a cold start costs {belief['cold_start_ms']:g} ms "
                  f"({belief['cold_start_from']}{'; ' + paths if paths else ''}), "
                  f"break-even keep-alive {belief['break_even_s']:g} s")
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

    from gateway.sagemaker import credentials

    state = locate.state_dir(args.state_dir) or Path(DEFAULT_STATE_DIR).resolve()
    key = credentials.read(state / credentials.FILE_NAME)
    if key is None:
        print(f"slimserve: no generated access key in {state} (start the gateway there first, or pass "
              "--state-dir)", file=sys.stderr)
        return 1
    url = locate.url(args.url, state)
    # Service-specific endpoints rather than AWS_ENDPOINT_URL: that one would send every other AWS
    # service's calls (STS, S3 ...) to the gateway too.
    values = [("AWS_ACCESS_KEY_ID", key.key_id), ("AWS_SECRET_ACCESS_KEY", key.secret),
              ("AWS_DEFAULT_REGION", args.region), ("AWS_ENDPOINT_URL_SAGEMAKER", url),
              ("AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME", url), ("AWS_ENDPOINT_URL_APPLICATION_AUTO_SCALING", url),
              ("AWS_ENDPOINT_URL_CLOUDWATCH_LOGS", url)]
    s3 = locate.s3_url(state)
    if s3:
        values.append(("AWS_ENDPOINT_URL_S3", s3))
    for name, value in values:
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
        if isinstance(val, dict) and "detail" in val:
            mark = "ok  " if val.get("ok") else "MISSING"
            print(f"  {mark:7} {key:18} {val.get('mechanism', '')} {val['detail']}".rstrip())
    tiers = rep.get("cpu_tiers") or {}
    if tiers:
        quotas = ", ".join(f"{mb} MB {v:g}" if v else f"{mb} MB none" for mb, v in tiers.items())
        print(f"cpu per tier (vCPUs): {quotas}")
    data = rep.get("data") or {}
    if data.get("local_s3"):
        where = ("its own network namespace, S3 only leaves it" if data.get("local_s3_isolated")
                 else "NOT isolated: its internal ports are on this host's loopback")
        print(f"local S3 (serve --s3 local): {data['local_s3']} ({where})")
    elif data.get("s3_endpoint"):
        print(f"S3: {data['s3_endpoint']}")
    cache = data.get("model_cache")
    if cache:
        print(f"model cache: {cache['used_bytes'] / (1 << 20):.1f} of {cache['capacity_bytes'] / (1 << 20):.0f} MB, "
              f"{cache['objects']} objects, {cache['downloads']} downloads, {cache['hits']} hits")
    return 0


def cmd_simulate(args) -> int:
    from gateway.pools import simulate

    specs = args.policy or ["adaptive"]
    try:
        for spec in specs:
            simulate.parse(spec, args.cold_start_ms)      # a bad name fails before any run
        by_path = simulate.parse_by_path(args.cold_start_ms_by_path) if args.cold_start_ms_by_path else None
        if not args.zygote_mb >= 0:
            raise ValueError("--zygote-mb takes a size of 0 MB or more")
        results = [simulate.run(args.trace, spec, args.cold_start_ms, by_path, args.zygote_mb) for spec in specs]
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
              f"{results[0]['endpoints']:,} endpoints, cold start "
              + (args.cold_start_ms_by_path + " ms by path" if args.cold_start_ms_by_path
                 else f"{args.cold_start_ms:g} ms"))
        print(simulate.format_table(results), end="")
    return 0


# --- parser --------------------------------------------------------------------------
