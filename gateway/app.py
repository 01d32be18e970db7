"""The gateway: wires settings, state, backend, pools, meter, scaler and HTTP.

Start-up and shutdown are paired step by step.  Shutdown follows the usual
order: stop accepting connections, let in-flight requests finish (their usage
records are committed before their responses), cancel background loops, write
the last provisioned-concurrency checkpoint, then release sandboxes and state.
"""
from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os

import psutil
from aiohttp import web

from gateway import errors
from gateway.async_inference.notify import Notifier
from gateway.async_inference.queue import AsyncQueue
from gateway.async_inference.requests import AsyncConfig
from gateway.async_inference.worker import AsyncWorkers
from gateway.autoscaling.api import TARGET_PREFIX
from gateway.autoscaling.api import operations as autoscaling_operations
from gateway.autoscaling.scaler import AutoScaler
from gateway.autoscaling.targets import Registry
from gateway.batch.jobs import TransformJobs
from gateway.batch.storage import JobStorage
from gateway.clock import Clock
from gateway.config import DRAIN_FACTOR, Settings
from gateway.data.cache import ModelCache
from gateway.data.local_s3 import LocalS3, LocalS3Config
from gateway.data.plane import DataPlane
from gateway.data.s3 import S3, S3Config
from gateway.http.admin import AdminApi, ensure_token
from gateway.http.admin_async import AsyncAdminApi
from gateway.http.admin_transform import TransformAdminApi
from gateway.http.async_metrics import AsyncMetrics
from gateway.http.async_runtime import AsyncRuntimeApi
from gateway.http.body import BodyBudget
from gateway.http.guard import ConnectionLimits, GuardedListener
from gateway.http.metrics import Metrics
from gateway.http.runtime import RuntimeApi
from gateway.http.wire import control_error, runtime_error
from gateway.lifecycle import Supervisor
from gateway.logs.api import TARGET_PREFIX as LOGS_TARGET_PREFIX
from gateway.logs.api import LogsApi
from gateway.metering.billing import Prices
from gateway.metering.idle import IdleMeter
from gateway.metering.meter import Meter
from gateway.metering.provisioned import ProvisionedMeter
from gateway.multimodel.pool import MultiModels
from gateway.multimodel.source import Archives
from gateway.pools import policy as policies
from gateway.pools.admission import HostBudget
from gateway.pools.manager import PoolManager
from gateway.pools.scaler import Scaler
from gateway.sagemaker import credentials
from gateway.sagemaker.api import SageMakerApi, auth_middleware
from gateway.sagemaker.catalog import Catalog
from gateway.sagemaker.transform_jobs import TransformJobsApi
from gateway.serving.endpoints import EndpointService
from gateway.serving.invoker import Invoker
from gateway.store.sqlite import Store
from runtime.process.backend import ProcessBackend, ProcessBackendConfig
from runtime.process.zygote import DEFAULT_PRELOAD
from runtime.process.zygotes import ZygoteConfig

log = logging.getLogger("slimserve.gateway")


def host_budget_mb(settings: Settings) -> int:
    if settings.memory_budget_mb:
        return int(settings.memory_budget_mb)
    return int(psutil.virtual_memory().total * settings.memory_budget_fraction) >> 20


def make_policy(settings: Settings):
    if settings.policy == "fixed":
        return policies.FixedKeepAlive(settings.keep_alive_s)
    return policies.parse(settings.policy, settings.policy_cold_start_ms)


def model_zygotes_memory_mb(settings: Settings) -> int:
    if settings.model_zygotes_memory_mb is not None:
        return int(settings.model_zygotes_memory_mb)
    return int(psutil.virtual_memory().total // 10) >> 20


def instance_id(settings: Settings) -> str:
    """This gateway's name among others on the host and in a shared store: its state dir's hash."""
    return hashlib.sha1(str(settings.state_dir.resolve()).encode()).hexdigest()[:12]


def make_backend(settings: Settings):
    instance = instance_id(settings)
    if settings.backend == "process":
        return ProcessBackend(ProcessBackendConfig(
            work_dir=str(settings.sandboxes_dir), cgroup_mode=settings.cgroup_mode,
            network_isolation=settings.network_isolation, start_timeout_s=settings.start_timeout_s,
            instance=instance, pids_max=settings.sandbox_pids_max, uid_range=settings.sandbox_uid_range,
            extra_binds=settings.sandbox_paths, max_response_bytes=settings.body_cap,
            zygotes=ZygoteConfig(enabled=settings.zygotes, stems=settings.zygote_stems,
                                 preload=tuple(dict.fromkeys(DEFAULT_PRELOAD + tuple(settings.zygote_preload))),
                                 log_path=str(settings.logs_dir / "_zygotes.log"),
                                 max_models=settings.model_zygotes_max,
                                 models_memory_mb=model_zygotes_memory_mb(settings),
                                 model_idle_s=settings.model_zygote_idle_s),
        ))
    if settings.backend == "docker":
        from runtime.docker.backend import DockerBackend, DockerBackendConfig

        return DockerBackend(DockerBackendConfig(
            work_dir=str(settings.state_dir / "containers"), image=settings.docker_image, instance=instance,
            stems=settings.docker_stems, start_timeout_s=settings.start_timeout_s, byoc_user=settings.byoc_user,
            preload=tuple(dict.fromkeys(DEFAULT_PRELOAD + tuple(settings.zygote_preload))),
            max_response_bytes=settings.body_cap,
        ))
    raise ValueError(f"unknown backend {settings.backend!r} (available: process, docker)")


def _is_loopback(host: str) -> bool:
    import ipaddress

    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class Gateway:
    def __init__(self, settings: Settings, clock: Clock | None = None, policy=None):
        self.settings = settings
        self.clock = clock or Clock()
        self.policy = policy or make_policy(settings)
        self.prices = Prices.load(settings.prices_path)      # a bad price table stops the start, clearly
        self.runner: web.AppRunner | None = None
        self.port: int | None = None
        self._stack: contextlib.AsyncExitStack | None = None

    @property
    def url(self) -> str:
        return f"http://{self.settings.host}:{self.port}"

    async def start(self) -> None:
        """Start every part in order; each registers its own stop as it comes up, so a start that
        fails half-way unwinds exactly what had started, and ``stop`` is that unwinding."""
        self._stack = contextlib.AsyncExitStack()
        try:
            await self._start(self._stack)
        except BaseException:
            await self._stack.aclose()
            raise

    async def _start(self, stack: contextlib.AsyncExitStack) -> None:
        s = self.settings
        for d in (s.state_dir, s.logs_dir, s.bundles_dir, s.sandboxes_dir):
            d.mkdir(parents=True, exist_ok=True)
        os.chmod(s.state_dir, 0o700)          # the ledger, keys and bundles: the gateway's user's alone
        self.token = ensure_token(s.token_path)
        if s.auth == "none" and not _is_loopback(s.host):
            raise errors.Invalid(f"--auth none is refused on {s.host}: only a loopback address may serve unsigned")
        # Keys given with --access-key replace the generated pair, which is made at first start either way
        # (clients of this state dir find it there).
        generated = credentials.ensure(s.state_dir)
        self.access_keys = {k.key_id: k for k in s.access_keys} or {generated.key_id: generated}
        await self._start_data_plane(stack, generated)
        self.store = Store(s.db_path)
        await self.store.open()
        stack.push_async_callback(self.store.close)
        self.budget = HostBudget(host_budget_mb(s))
        self.backend = make_backend(s)
        self.provisioned = ProvisionedMeter(self.clock)
        archives = Archives(s.multi_model_dir, s.multi_model_archives_mb << 20)
        await asyncio.to_thread(archives.open)
        self.manager = PoolManager(self.backend, self.budget, self.clock, s.logs_dir, self.provisioned.change,
                                   self.policy, IdleMeter(self.clock), cpu_per_gb=s.cpu_per_gb,
                                   multi_models=MultiModels(s, self.data, archives))
        self.backend.listeners.append(self.manager.on_sandbox_event)
        stack.push_async_callback(self.backend.close)
        await self.backend.open()
        self.metrics = Metrics(self.manager, self.cache)
        self.meter = Meter(self.store, [self.metrics.observe])
        await self.meter.start()
        stack.push_async_callback(self.meter.stop)
        stack.push_async_callback(self.manager.close)        # sandboxes go before the backend closes
        self.endpoints = EndpointService(s, self.store, self.manager)
        await self.endpoints.load()
        self.scaler = Scaler(self.manager, self.meter, self.clock,
                             s.reaper_interval_s, s.provisioned_checkpoint_s, self.provisioned)
        stack.push_async_callback(self.scaler.checkpoint)   # the last provisioned time, after the loops stop
        self.loops = Supervisor()
        stack.push_async_callback(self.loops.stop)
        self.loops.spawn("scaler", self.scaler.run)
        if s.usage_retention_days:
            self.loops.spawn("retention", self._keep_retention)

        self.catalog = Catalog(self.endpoints, self.store, s.account_id, s.region, self.data,
                               can_run_image=self.backend.can_run_image, max_model_bytes=s.max_model_bytes)
        await self.catalog.load()
        stack.push_async_callback(self.catalog.close)
        admin = AdminApi(self, self.token)
        self.invoker = Invoker(s, self.clock, self.endpoints, self.manager, self.meter, self.metrics,
                               is_async=lambda name: self.catalog.async_config(name) is not None)
        self.body_budget = BodyBudget(s.max_body_bytes_held)
        runtime_api = RuntimeApi(self.invoker, s.body_cap, s.body_cap * DRAIN_FACTOR, s.body_timeout_s,
                                 self.body_budget)
        async_api = await self._start_async(stack)
        await self._start_autoscaling()
        self.transform = TransformJobs(s, self.store, self.catalog, JobStorage(self.data), self.invoker,
                                       self.backend, self.manager)
        await self.transform.load()
        stack.push_async_callback(self.transform.close)      # running jobs stop (and resume next start) first
        logs = LogsApi(self._job_names, self.transform.log_path, lambda: self.endpoints.specs,
                       self.manager.log_path)
        sagemaker = SageMakerApi(self.catalog, {TARGET_PREFIX: autoscaling_operations(self.scaling),
                                                LOGS_TARGET_PREFIX: logs.operations()},
                                 extra=TransformJobsApi(self.transform).operations(),
                                 taggable={"transform-job": self.transform})
        middlewares = [_internal_errors, admin.middleware]
        if s.auth == "sigv4":
            middlewares.append(auth_middleware(self.access_keys, s.region, s.body_cap, s.account_id,
                                               body_timeout_s=s.body_timeout_s, budget=self.body_budget))
        else:
            log.warning("SIGNING IS OFF (--auth none): anyone who reaches %s:%s may call every SageMaker API",
                        s.host, s.port)
        app = web.Application(middlewares=middlewares)
        app.add_routes(runtime_api.routes() + async_api.routes() + admin.routes()
                       + AsyncAdminApi(self.store, self.data.s3).routes()
                       + TransformAdminApi(self.transform).routes() + sagemaker.routes()
                       + [web.get("/metrics", self._metrics)])
        self.runner = web.AppRunner(app, access_log=None, shutdown_timeout=s.invocation_timeout_s + 5,
                                    keepalive_timeout=s.idle_timeout_s)
        await self.runner.setup()
        stack.push_async_callback(self.runner.cleanup)      # in-flight requests finish, then connections close
        self.listener = GuardedListener(self.runner.server, ConnectionLimits(s.max_connections, s.header_timeout_s))
        self.port = await self.listener.start(s.host, s.port)
        stack.push_async_callback(self.listener.close)      # first to stop: no new connections
        log.info("slimserve gateway on %s (backend %s, budget %d MB, model data from %s)", self.url, s.backend,
                 self.budget.capacity_mb, self.local_s3_url or self.data.s3.endpoint_url or "AWS S3")

    async def _start_data_plane(self, stack: contextlib.AsyncExitStack, generated) -> None:
        """S3 (a local server with ``--s3 local``, else the standard AWS configuration), the model
        cache, and the data plane that reads model data through them."""
        s = self.settings
        self.local_s3_url, self.local_s3 = None, None
        config = S3Config(endpoint_url=s.s3_endpoint_url)
        if s.s3 == "local":
            keys = (generated, *[k for k in s.access_keys if k.key_id != generated.key_id])
            local = self.local_s3 = LocalS3(LocalS3Config(root=s.s3_dir, keys=keys, log_path=s.logs_dir / "s3.log",
                                                          port=s.s3_port))
            stack.push_async_callback(local.stop)            # after the HTTP server and everything that reads S3
            self.local_s3_url = await local.start()
            config = S3Config(endpoint_url=self.local_s3_url, key_id=generated.key_id, secret=generated.secret,
                              region=s.region)
        self.cache = ModelCache(s.model_cache_dir, s.model_cache_mb << 20)
        await self.cache.open()
        self.data = DataPlane(s.model_roots, s.state_dir, S3(config), self.cache)

    async def _start_async(self, stack: contextlib.AsyncExitStack) -> AsyncRuntimeApi:
        """Asynchronous inference: the durable queue, its workers (a background loop) and its API."""
        s = self.settings
        self.queue = AsyncQueue(self.store, self.clock, instance_id(s), s.async_lease_s)
        self.notifier = Notifier(s.region, s.sns_endpoint_url, s.notify_allow, self.clock)
        stack.push_async_callback(self.notifier.close)         # after the loops (registered earlier) stop
        self.loops.spawn("notify", self.notifier.run)
        self.async_workers = AsyncWorkers(self.queue, self.invoker, self.data.s3, s.async_spool_dir,
                                          self._async_configs, self._async_capacity, self.notifier, self.clock,
                                          s.async_s3_backoff_s, s.region)
        self.async_workers.metrics = AsyncMetrics(self.metrics.registry, self.async_workers)
        self.catalog.on_endpoint_delete.append((self.async_workers.close, self.async_workers.abandon))
        self.loops.spawn("async-inference", self.async_workers.run)
        return AsyncRuntimeApi(self.queue, self.catalog.async_config, lambda name: name in self.endpoints.specs,
                               lambda: self.data.s3.endpoint_url, self.metrics, s.account_id, s.body_timeout_s,
                               self.body_budget, backlog_of=self.async_workers.backlog_of,
                               max_backlog=s.async_max_backlog)

    async def _start_autoscaling(self) -> None:
        """Application Auto Scaling of instance variants: its records and the loop that applies them."""
        def variants(endpoint: str):
            spec = self.endpoints.specs.get(endpoint)
            return {v.name: v for v in spec.variants} if spec is not None else None

        self.scaling = Registry(self.store, self.settings.account_id, self.settings.region, variants,
                                lambda name: self.catalog.async_config(name) is not None, clock=self.clock.wall)
        await self.scaling.load()
        self.catalog.on_endpoint_delete.append((None, self.scaling.forget))     # its targets go with it
        self.autoscaler = AutoScaler(self.scaling, self.endpoints, self.clock, self.async_workers.backlog_of,
                                     self.settings.autoscaling_interval_s, on_scaled=self.queue.wake)
        self.scaling.on_change = self.autoscaler.wake
        self.meter.listeners.append(self.autoscaler.observe)
        self.async_workers.on_starved = self.autoscaler.wake
        self.loops.spawn("autoscaling", self.autoscaler.run)

    async def _job_names(self) -> list[str]:
        return [j["TransformJobName"] for j in await self.transform.summaries()]

    def _async_configs(self) -> dict[str, AsyncConfig]:
        out = {}
        for name in self.endpoints.specs:
            doc = self.catalog.async_config(name)
            if doc is not None:
                out[name] = AsyncConfig.from_doc(doc)
        return out

    def _async_capacity(self, endpoint: str) -> int:
        """Requests an async endpoint runs at once: one per instance (a sandbox runs one at a time)."""
        spec = self.endpoints.specs.get(endpoint)
        return sum(v.max_concurrency for v in spec.variants) if spec is not None else 0

    async def _keep_retention(self) -> None:
        """Hourly: drop raw usage records past the retention limit (roll-ups keep the bills)."""
        keep_s = self.settings.usage_retention_days * 86400.0
        while True:
            try:
                gone = await self.store.prune_usage(self.clock.wall() - keep_s)
                if gone:
                    log.info("usage retention: dropped %d raw records older than %g days", gone,
                             self.settings.usage_retention_days)
            except Exception:  # noqa: BLE001 - try again next hour
                log.exception("usage retention failed")
            await self.clock.sleep(3600.0)

    async def _metrics(self, request: web.Request) -> web.Response:
        resp = web.Response(body=self.metrics.render(await self.manager.measured()))
        resp.headers["Content-Type"] = "text/plain; version=0.0.4; charset=utf-8"
        return resp

    async def stop(self) -> None:
        """Stop in the reverse order of the start: stop accepting and let in-flight requests finish
        (their usage records are committed before their responses), stop the background loops and
        write the last provisioned checkpoint, release sandboxes, then the meter, backend and store."""
        stack, self._stack = self._stack, None
        if stack is not None:
            await stack.aclose()

def _unknown_operation(request: web.Request, status: int) -> web.Response:
    """An unknown path or method: the control plane's JSON 1.1 error on its path (``POST /``), the
    runtime's REST-JSON shape elsewhere; both carry ``UnknownOperationException``."""
    err = errors.UnknownOperation(f"No operation at {request.method} {request.path}", status)
    return control_error(err) if request.path == "/" else runtime_error(err, "-")


@web.middleware
async def _internal_errors(request: web.Request, handler):
    try:
        return await handler(request)
    except errors.SlimserveError as exc:
        return runtime_error(exc, "-")
    except (web.HTTPNotFound, web.HTTPMethodNotAllowed) as exc:     # no such route: still a shape clients parse
        return _unknown_operation(request, exc.status)
    except web.HTTPException:
        raise
    except Exception as exc:  # noqa: BLE001 - the caller gets a SageMaker-shaped 500, the gateway keeps serving
        log.exception("unhandled error on %s", request.path)
        return runtime_error(errors.Internal(f"internal error: {type(exc).__name__}"), "-")
