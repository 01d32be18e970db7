"""Serving one invocation, whichever API asked for it (runtime HTTP, the async queue, batch transform).

route to a variant -> lease a sandbox from its pool (admission, maybe a cold start) -> invoke
-> release -> commit the usage record -> the outcome.  Nothing here knows HTTP: the caller
renders the ``Outcome``.  An invocation of a known variant gets exactly one usage record, made
durable before ``invoke`` returns, and runs shielded, so a caller that goes away cannot skip it.
"""
from __future__ import annotations

import asyncio
import logging
import uuid
from dataclasses import dataclass, replace

from gateway import errors
from gateway.domain import UsageRecord, VariantSpec
from gateway.multimodel import targets
from gateway.serving.router import pick_variant
from runtime import sandbox as sbx

log = logging.getLogger("slimserve.invoker")


@dataclass(frozen=True)
class Invocation:
    endpoint: str
    body: bytes
    content_type: str | None = None
    accept: str | None = None
    custom_attributes: str | None = None
    target_variant: str | None = None
    request_id: str = ""
    oversized: int = 0              # bytes of a body that was over every cap (its bytes were not kept)
    # Asynchronous requests: the body is in ``body_file`` (``body_size`` bytes), the answer goes to
    # ``response_file``; ``max_bytes`` and ``timeout_s`` replace the synchronous limits.
    asynchronous: bool = False
    body_file: str | None = None
    body_size: int | None = None
    response_file: str | None = None
    max_bytes: int | None = None
    timeout_s: float | None = None
    backlog_ms: float = 0.0
    target_model: str | None = None  # X-Amzn-SageMaker-Target-Model: a multi-model endpoint's model to run

    @property
    def size(self) -> int:
        return self.body_size if self.body_size is not None else len(self.body)


@dataclass
class Outcome:
    """What became of one invocation: the model's answer, or the error to report, never both."""
    request_id: str
    variant: str | None = None               # None: refused before it was routed (no usage record)
    result: sbx.InvokeResult | None = None
    error: errors.SlimserveError | None = None
    record: UsageRecord | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


class Invoker:
    def __init__(self, settings, clock, endpoints, manager, meter, metrics, is_async=lambda endpoint: False):
        self.settings, self.clock = settings, clock
        self.endpoints, self.manager, self.meter, self.metrics = endpoints, manager, meter, metrics
        self.is_async = is_async        # endpoint name -> whether it takes only asynchronous requests

    def log_stream(self, endpoint: str) -> str:
        s = self.settings
        return f"arn:aws:logs:{s.region}:{s.account_id}:log-group:/aws/sagemaker/Endpoints/{endpoint}"

    def refused(self, request_id: str, error: errors.SlimserveError) -> Outcome:
        """A request turned away before routing (bad body, unknown endpoint): counted, not billed."""
        self.metrics.request_rejected(error.code)
        return Outcome(request_id, error=error)

    async def invoke(self, inv: Invocation) -> Outcome:
        request_id = inv.request_id or str(uuid.uuid4())
        spec = self.endpoints.specs.get(inv.endpoint)
        if spec is None:
            s = self.settings
            return self.refused(request_id, errors.NotFound(f"Endpoint {inv.endpoint} of account {s.account_id} "
                                                            "not found."))
        if self.is_async(inv.endpoint) != inv.asynchronous:
            return self.refused(request_id, errors.Invalid(
                f"Endpoint {inv.endpoint} is an asynchronous endpoint: use InvokeEndpointAsync." if not inv.asynchronous
                else f"Endpoint {inv.endpoint} does not have an AsyncInferenceConfig: use InvokeEndpoint."))
        try:
            variant = pick_variant(spec, inv.target_variant,
                                   can_serve=_has_instances if inv.asynchronous else None)
        except errors.Invalid as exc:
            return self.refused(request_id, exc)
        if variant.multi_model != (inv.target_model is not None):
            return self.refused(request_id, errors.Invalid(
                f"Endpoint {inv.endpoint} is not a multi-model endpoint and does not support target model header."
                if not variant.multi_model else
                f"Request {request_id} is missing a target model header: endpoint {inv.endpoint} is a multi-model "
                "endpoint; name the model in X-Amzn-SageMaker-Target-Model (TargetModel)."))
        if inv.target_model is not None:
            try:
                inv = replace(inv, target_model=targets.check(inv.target_model))    # billed as it is served
            except errors.Invalid as exc:
                return self.refused(request_id, exc)
        return await asyncio.shield(self._run(request_id, inv, variant))

    async def _run(self, request_id: str, inv: Invocation, variant: VariantSpec) -> Outcome:
        clock = self.clock
        t0 = clock.now()
        start_wall = clock.wall()
        pool = self.manager.pool(inv.endpoint, variant.name)
        limit = inv.max_bytes or self.settings.payload_limit(serverless=not variant.instance_type)
        if pool is None:
            lease, result, error = None, None, errors.NotReady(f"endpoint {inv.endpoint} is being updated")
        else:
            lease, result, error = await self._call(pool, inv, limit)
        rec = self._record(request_id, inv, variant, start_wall, (clock.now() - t0) * 1000.0, lease, result, error)
        try:
            await self.meter.record(rec)
        except Exception as exc:  # noqa: BLE001 - without a durable record we must not answer "ok"
            return Outcome(request_id, variant.name, error=errors.Internal(f"usage could not be recorded: {exc}"))
        return Outcome(request_id, variant.name, result=result if error is None else None, error=error, record=rec)

    async def invoke_on(self, pool, inv: Invocation, label: str) -> Outcome:
        """One invocation on sandboxes a caller owns (a transform job's instances: ``pool`` leases
        and takes back sandboxes as a variant's pool does): the same call and the same errors as an
        endpoint's.  No usage record: a job is billed by its instances' time, not per invocation."""
        request_id = inv.request_id or str(uuid.uuid4())
        lease, result, error = await asyncio.shield(self._call(pool, inv, inv.max_bytes or self.settings.body_cap,
                                                               log_stream=label))
        return Outcome(request_id, label, result=result if error is None else None, error=error)

    async def _call(self, pool, inv: Invocation, limit: int, log_stream: str | None = None):
        """Lease a sandbox from ``pool``, invoke it, give it back: (lease, result, error), where
        error is the SageMaker error the call ended in (None: the model answered)."""
        lease = None
        result: sbx.InvokeResult | None = None
        error: errors.SlimserveError | None = None
        stream = log_stream or self.log_stream(inv.endpoint)
        try:
            if inv.oversized or inv.size > limit:
                raise errors.PayloadTooLarge(limit)
            req = sbx.InvokeRequest(body=inv.body, content_type=inv.content_type, accept=inv.accept,
                                    custom_attributes=inv.custom_attributes, max_response=limit,
                                    body_file=inv.body_file, response_file=inv.response_file)
            lease = await pool.acquire(sample=None if inv.body_file else req, target=inv.target_model)
            req.model = lease.model
            result = await lease.sandbox.invoke(req, inv.timeout_s or self.settings.invocation_timeout_s)
            if result.error_kind == sbx.DEAD_HANDLE:
                raise errors.NotReady(result.message)
            if not result.ok:
                error = errors.ModelFailed(result.error_kind, result.message, result.original_status, stream)
        except (errors.Throttled, errors.NotReady, errors.Invalid) as exc:
            error = exc                     # (Invalid: a multi-model endpoint's target is not there)
        except errors.ModelFailed as exc:   # a multi-model endpoint's target did not load
            exc.log_stream = exc.log_stream or stream
            error = exc
        except sbx.StartError as exc:
            if exc.kind == sbx.SPAWN_FAILED:
                error = errors.Unavailable(exc.message)
            else:
                kind = exc.kind if exc.kind == sbx.OUT_OF_MEMORY else sbx.LOAD_FAILED
                error = errors.ModelFailed(kind, exc.message, 500, stream)
        except Exception as exc:  # noqa: BLE001 - a gateway bug still gets a record and a 500
            log.exception("invocation of %s failed inside the gateway", inv.endpoint)
            error = errors.Internal(f"internal error: {type(exc).__name__}: {exc}")
        finally:
            if lease is not None:
                await lease.pool.release(lease)
        return lease, result, error

    @staticmethod
    def _record(request_id, inv, variant, start_wall, total_ms, lease, result, error) -> UsageRecord:
        model_ms = result.model_ms if result is not None else 0.0
        init_ms = lease.init_ms if lease is not None else 0.0
        cold = bool(lease and lease.cold)
        return UsageRecord(
            request_id=request_id, endpoint=inv.endpoint, variant=variant.name, memory_mb=variant.memory_mb,
            start=start_wall, billed_ms=UsageRecord.bill(model_ms), model_ms=model_ms,
            overhead_ms=max(0.0, total_ms - model_ms - init_ms), cold_start=cold, init_ms=init_ms,
            status="ok" if error is None else error.code, error_kind=None if error is None else error.kind,
            bytes_in=0 if isinstance(error, errors.PayloadTooLarge) else inv.size,
            bytes_out=result.nbytes if result is not None and error is None else 0,
            sandbox_id=lease.sandbox.id if lease is not None else None,
            start_path=lease.sandbox.facts.path if cold else None,
            init_detail=_phases(lease, model_ms) if cold else None, backlog_ms=round(inv.backlog_ms, 3),
            # a target that is not there is not a model's: not a bill row of its own
            target_model=None if isinstance(error, errors.Invalid) else inv.target_model,
        )


def _has_instances(v: VariantSpec) -> bool:
    """Whether a variant can take a request now (an instance variant scaled to zero cannot)."""
    return v.max_concurrency > 0


def _phases(lease, model_ms: float) -> dict[str, float]:
    """Where a cold start's time went: the sandbox's own phases, the first predict, and the total."""
    phases = {k: round(v, 3) for k, v in lease.sandbox.facts.timings.items()}
    phases["first_predict_ms"] = round(model_ms, 3)
    phases["total_ms"] = round(lease.init_ms, 3)
    return phases
