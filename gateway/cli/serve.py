"""``slimserve serve``: its flags (whose defaults are ``Settings``'), the checks that refuse
bad settings before anything starts, and the gateway's run until SIGINT or SIGTERM."""
from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
from pathlib import Path

from gateway import locate
from gateway.config import DEFAULT_STATE_DIR, Settings
from gateway.errors import Invalid

MAX_PAYLOAD_MB = 100       # a synchronous payload beyond this is not what a synchronous API is for


def add_arguments(sub) -> None:
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
                   help="cold-start latency the adaptive policy weighs against idle memory until it has "
                        f"measured an endpoint's own starts (the prior; default {d.policy_cold_start_ms:g})")
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
    s.add_argument("--s3", choices=["local"], default=None,
                   help="local: start a local S3-compatible server (SeaweedFS, the s3 extra) with the gateway, on "
                        "127.0.0.1, data in the state dir, signed with the gateway's keys (default: S3 through the "
                        "standard AWS configuration)")
    s.add_argument("--s3-endpoint-url", default=None, metavar="URL",
                   help="the S3 endpoint model data is read from (default: $AWS_ENDPOINT_URL_S3, else AWS S3)")
    s.add_argument("--s3-port", type=int, default=None, metavar="PORT",
                   help="port of --s3 local (default: one chosen at first start and kept)")
    s.add_argument("--model-cache-mb", type=int, default=d.model_cache_mb, metavar="MB",
                   help=f"S3 model data kept on disk at most, least recently used evicted (default {d.model_cache_mb})")
    s.add_argument("--async-lease", type=float, default=d.async_lease_s, metavar="SECONDS",
                   help="an asynchronous request's claim lasts this long, renewed while it runs; a worker that dies "
                        f"leaves it to another after this (default {d.async_lease_s:g})")
    s.add_argument("--async-max-backlog", type=int, default=d.async_max_backlog, metavar="N",
                   help=f"requests an asynchronous endpoint holds queued at most; past it InvokeEndpointAsync answers "
                        f"ServiceUnavailable (default {d.async_max_backlog})")
    s.add_argument("--async-s3-backoff", default=",".join(f"{x:g}" for x in d.async_s3_backoff_s), metavar="S,S,..",
                   help="delays before retrying an asynchronous request whose S3 input or output was unreachable; "
                        "after the last, it goes to the failure path (default %(default)s)")
    s.add_argument("--transform-held-mb", type=int, default=d.transform_held_mb, metavar="MB",
                   help="request bodies that transform jobs hold in the gateway's memory at once, all jobs together; "
                        f"a job waits for room before it cuts its next request (default {d.transform_held_mb})")
    s.add_argument("--model-load-wait", type=float, default=d.model_load_wait_s, metavar="SECONDS",
                   help="a multi-model request waits this long for its model to load, then gets "
                        f"ModelNotReadyException while the load goes on (default {d.model_load_wait_s:g})")
    s.add_argument("--multi-model-recheck", type=float, default=d.multi_model_recheck_s, metavar="SECONDS",
                   help="a multi-model endpoint looks a target model's data up again after this long, so a "
                        f"replaced model is reloaded and a deleted one unloaded (default {d.multi_model_recheck_s:g}; "
                        "0: on every request)")
    s.add_argument("--multi-model-archives-mb", type=int, default=d.multi_model_archives_mb, metavar="MB",
                   help="models of multi-model endpoints kept prepared on disk at most, least recently used out "
                        f"first (default {d.multi_model_archives_mb})")
    s.add_argument("--autoscaling-interval", type=float, default=d.autoscaling_interval_s, metavar="SECONDS",
                   help="how often Application Auto Scaling policies are evaluated; a backlog without an instance "
                        f"is acted on at once (default {d.autoscaling_interval_s:g})")
    s.add_argument("--sns-endpoint-url", default=None, metavar="URL",
                   help="where arn:aws:sns: notification topics are published (default: $AWS_ENDPOINT_URL_SNS, "
                        "else AWS SNS)")
    s.add_argument("--notify-allow", action="append", default=[], metavar="HOST[:PORT]",
                   help="a host http(s):// notification topics may be POSTed to (repeatable; default: none, so no "
                        "request leaves for an address a user typed)")
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
    s.add_argument("--max-payload-mb", type=float, default=d.max_payload_bytes / (1 << 20), metavar="MB",
                   help="largest request and answer of an instance (real-time) variant "
                        f"(default {d.max_payload_bytes >> 20}, as SageMaker)")
    s.add_argument("--max-serverless-payload-mb", type=float, default=d.max_serverless_payload_bytes / (1 << 20),
                   metavar="MB", help="largest request and answer of a serverless invocation "
                                      f"(default {d.max_serverless_payload_bytes >> 20}, as SageMaker)")
    s.add_argument("--header-timeout", type=float, default=d.header_timeout_s, metavar="SECONDS",
                   help=f"a connection's first request head must arrive within this (default {d.header_timeout_s:g})")
    s.add_argument("--body-timeout", type=float, default=d.body_timeout_s, metavar="SECONDS",
                   help=f"a request body must arrive within this (default {d.body_timeout_s:g})")
    s.add_argument("--idle-timeout", type=float, default=d.idle_timeout_s, metavar="SECONDS",
                   help=f"close a keep-alive connection idle this long (default {d.idle_timeout_s:g})")
    s.add_argument("--max-connections", type=int, default=d.max_connections, metavar="N",
                   help=f"open client connections at most; past it a new one gets 503 (default {d.max_connections};"
                        " each takes a file descriptor)")
    s.add_argument("--cpu-per-gb", type=float, default=d.cpu_per_gb, metavar="VCPUS",
                   help="each sandbox's CPU quota per GB of its memory (default: Lambda's one vCPU per 1,769 MB, "
                        f"{d.cpu_per_gb:.3f}; capped at the host's cores; 0 turns quotas off)")
    s.add_argument("--max-bundle-mb", type=float, default=None, metavar="MB",
                   help="largest a bundle may be unpacked (default: its endpoint's memory size, since a larger "
                        "bundle could not load into it)")
    s.add_argument("--max-model-zygotes", type=int, default=d.model_zygotes_max, metavar="N",
                   help="bundles kept loaded in model zygotes at most, least recently used closed first "
                        f"(default {d.model_zygotes_max}; 0: no model zygotes)")
    s.add_argument("--model-zygotes-memory-mb", type=int, default=None, metavar="MB",
                   help="memory model zygotes may hold, beyond the sandbox budget (default: a tenth of RAM)")
    s.add_argument("--model-zygote-idle", type=float, default=d.model_zygote_idle_s, metavar="SECONDS",
                   help=f"close a model zygote not forked from for this long (default {d.model_zygote_idle_s:g})")
    s.set_defaults(fn=cmd_serve)


async def _serve(settings: Settings) -> None:
    from gateway.app import Gateway

    gw = Gateway(settings)
    await gw.start()
    locate.note_started(settings.state_dir, gw.url, s3_url=gw.local_s3_url)   # so clients find it from anywhere
    s3 = f"; local S3 on {gw.local_s3_url}" if gw.local_s3_url else ""
    print(f"slimserve gateway listening on {gw.url} (state in {settings.state_dir}{s3})", flush=True)
    stop = asyncio.Event()

    def on_signal() -> None:
        if stop.is_set():            # a second signal: stop waiting for in-flight requests, as uvicorn does
            print("slimserve: second signal, exiting now", file=sys.stderr, flush=True)
            os._exit(130)            # committed usage is durable; sandboxes die with the gateway (pdeathsig)
        stop.set()

    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal)
    await stop.wait()
    print("slimserve: shutting down (finishing in-flight requests)", file=sys.stderr, flush=True)
    await gw.stop()
    locate.note_stopped(settings.state_dir)


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

    if not (0 < args.max_payload_mb <= MAX_PAYLOAD_MB and 0 < args.max_serverless_payload_mb <= MAX_PAYLOAD_MB):
        print(f"slimserve: --max-payload-mb and --max-serverless-payload-mb take sizes above 0 and up to "
              f"{MAX_PAYLOAD_MB} MB (larger payloads are for asynchronous inference)", file=sys.stderr)
        return 2
    if not (args.header_timeout > 0 and args.body_timeout > 0 and args.idle_timeout > 0 and args.max_connections >= 1):
        print("slimserve: --header-timeout, --body-timeout and --idle-timeout take seconds above 0, "
              "--max-connections a count of at least 1", file=sys.stderr)
        return 2
    if not args.cpu_per_gb >= 0:
        print("slimserve: --cpu-per-gb takes a number of vCPUs >= 0", file=sys.stderr)
        return 2
    if args.max_bundle_mb is not None and not args.max_bundle_mb > 0:
        print("slimserve: --max-bundle-mb takes a size above 0", file=sys.stderr)
        return 2
    if args.auth == "none" and args.host not in ("127.0.0.1", "::1", "localhost"):
        print(f"slimserve: --auth none is refused on {args.host}: only a loopback address may serve unsigned",
              file=sys.stderr)
        return 2
    if args.s3 and args.s3_endpoint_url:
        print("slimserve: --s3 local runs its own endpoint; give it or --s3-endpoint-url, not both", file=sys.stderr)
        return 2
    if args.s3_endpoint_url and not args.s3_endpoint_url.startswith(("http://", "https://")):
        print("slimserve: --s3-endpoint-url takes an http:// or https:// URL", file=sys.stderr)
        return 2
    if args.model_cache_mb < 1 or (args.s3_port is not None and not 0 < args.s3_port < 65536):
        print("slimserve: --model-cache-mb takes a size of at least 1, --s3-port a port number", file=sys.stderr)
        return 2
    try:
        backoff = tuple(float(x) for x in args.async_s3_backoff.split(",") if x.strip())
        if (not backoff or any(not 0 <= x <= 3600 for x in backoff) or not 1 <= args.async_lease <= 3600
                or not 0.1 <= args.autoscaling_interval <= 3600 or args.async_max_backlog < 1
                or args.transform_held_mb < 1 or not 0 < args.model_load_wait <= 3600
                or not 0 <= args.multi_model_recheck <= 86400 or args.multi_model_archives_mb < 1):
            raise ValueError
    except ValueError:
        print("slimserve: --async-s3-backoff takes delays of 0-3600 s separated by commas, --async-lease 1-3600 s, "
              "--autoscaling-interval 0.1-3600 s, --model-load-wait 0-3600 s, --multi-model-recheck 0-86400 s, "
              "--async-max-backlog, --transform-held-mb and --multi-model-archives-mb at least 1",
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
        state_dir=Path(args.state_dir or DEFAULT_STATE_DIR).resolve(), host=args.host, port=args.port,
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
        max_payload_bytes=int(args.max_payload_mb * (1 << 20)), max_bundle_mb=args.max_bundle_mb,
        header_timeout_s=args.header_timeout, body_timeout_s=args.body_timeout, idle_timeout_s=args.idle_timeout,
        max_connections=args.max_connections, cpu_per_gb=args.cpu_per_gb,
        max_serverless_payload_bytes=int(args.max_serverless_payload_mb * (1 << 20)),
        prices_path=Path(args.prices) if args.prices else None, usage_retention_days=args.usage_retention_days,
        access_keys=_access_keys(args.access_key), account_id=args.account_id, region=args.region,
        auth=args.auth, model_roots=tuple(Path(p).resolve() for p in args.model_root),
        s3=args.s3, s3_endpoint_url=args.s3_endpoint_url, s3_port=args.s3_port, model_cache_mb=args.model_cache_mb,
        async_lease_s=args.async_lease, autoscaling_interval_s=args.autoscaling_interval,
        async_max_backlog=args.async_max_backlog, transform_held_mb=args.transform_held_mb,
        async_s3_backoff_s=backoff, sns_endpoint_url=args.sns_endpoint_url,
        notify_allow=tuple(h.lower() for h in args.notify_allow),
        model_load_wait_s=args.model_load_wait, multi_model_recheck_s=args.multi_model_recheck,
        multi_model_archives_mb=args.multi_model_archives_mb,
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
