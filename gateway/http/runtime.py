"""The SageMaker Runtime API: POST /endpoints/{name}/invocations, and GET /ping.

One invocation: read the body (6 MB cap) -> route to a variant -> lease a
sandbox from its pool (admission, maybe a cold start) -> invoke -> release ->
commit the usage record -> respond.  The response never leaves before its
usage record is durable.
"""
from __future__ import annotations

import asyncio
import json
import logging
import uuid

from aiohttp import web

from gateway import errors
from gateway.domain import UsageRecord
from gateway.pools.pool import NotReady, StartFailed, Throttled
from gateway.serving.router import UnknownVariant, pick_variant
from runtime import sandbox as sbx

log = logging.getLogger("slimserve.runtime_api")

CUSTOM_ATTRIBUTES = "X-Amzn-SageMaker-Custom-Attributes"
TARGET_VARIANT = "X-Amzn-SageMaker-Target-Variant"
INVOKED_VARIANT = "X-Amzn-Invoked-Production-Variant"


async def read_body(request: web.Request, limit: int) -> bytes:
    if "body" in request:                  # already read (and capped) by the signature check
        return request["body"]
    if request.content_length is not None and request.content_length > limit:
        raise errors.payload_too_large(limit)
    buf = bytearray()
    async for chunk in request.content.iter_chunked(1 << 16):
        buf += chunk
        if len(buf) > limit:
            raise errors.payload_too_large(limit)
    return bytes(buf)


class RuntimeApi:
    def __init__(self, gw):
        self.gw = gw        # the Gateway: settings, clock, endpoints, manager, meter, metrics

    def routes(self) -> list[web.RouteDef]:
        return [
            web.get("/ping", self.ping),
            web.post("/endpoints/{name}/invocations", self.invoke),
        ]

    async def ping(self, request: web.Request) -> web.Response:
        return web.Response(text="")

    def log_stream(self, endpoint: str) -> str:
        s = self.gw.settings
        return f"arn:aws:logs:{s.region}:{s.account_id}:log-group:/aws/sagemaker/Endpoints/{endpoint}"

    async def invoke(self, request: web.Request) -> web.Response:
        request_id = str(uuid.uuid4())
        name = request.match_info["name"]
        try:
            body = await read_body(request, self.gw.settings.max_payload_bytes)
            spec = self.gw.endpoints.specs.get(name)
            if spec is None:
                s = self.gw.settings
                raise errors.validation(f"Endpoint {name} of account {s.account_id} not found.")
            try:
                variant = pick_variant(spec, request.headers.get(TARGET_VARIANT))
            except UnknownVariant as exc:
                raise errors.validation(str(exc)) from None
        except errors.ApiError as exc:
            self.gw.metrics.request_rejected(exc.code)
            return exc.response(request_id)
        # From here on the request is an invocation of a known variant: it gets exactly
        # one usage record, and is shielded so that a client disconnect cannot skip it.
        return await asyncio.shield(self._invoke(request_id, name, variant, body, request.headers))

    async def _invoke(self, request_id, name, variant, body, headers) -> web.Response:
        gw = self.gw
        clock = gw.clock
        t0 = clock.now()
        start_wall = clock.wall()
        pool = gw.manager.pool(name, variant.name)
        lease = None
        result: sbx.InvokeResult | None = None
        api_error: errors.ApiError | None = None
        try:
            if pool is None:
                raise NotReady(f"endpoint {name} is being updated")
            req = sbx.InvokeRequest(body=body, content_type=headers.get("Content-Type"),
                                    accept=headers.get("Accept"), custom_attributes=headers.get(CUSTOM_ATTRIBUTES))
            lease = await pool.acquire(sample=req)
            result = await lease.sandbox.invoke(req, gw.settings.invocation_timeout_s)
            if result.error_kind == sbx.DEAD_HANDLE:
                raise NotReady(result.message)
        except Throttled as exc:
            api_error = errors.throttled(str(exc))
        except NotReady as exc:
            api_error = errors.not_ready(str(exc))
        except StartFailed as exc:
            if exc.kind == sbx.SPAWN_FAILED:
                api_error = errors.unavailable(exc.message)
            else:
                api_error = errors.model_error(exc.kind if exc.kind == sbx.OUT_OF_MEMORY else sbx.LOAD_FAILED,
                                               exc.message, 500, self.log_stream(name))
        except Exception as exc:  # noqa: BLE001 - a gateway bug still gets a record and a 500
            log.exception("invocation of %s failed inside the gateway", name)
            api_error = errors.internal(f"internal error: {type(exc).__name__}: {exc}")
        finally:
            if lease is not None:
                await lease.pool.release(lease)
        if result is not None and not result.ok and api_error is None:
            api_error = errors.model_error(result.error_kind, result.message, result.original_status,
                                           self.log_stream(name))
        model_ms = result.model_ms if result is not None else 0.0
        init_ms = lease.init_ms if lease is not None else 0.0
        total_ms = (clock.now() - t0) * 1000.0
        rec = UsageRecord(
            request_id=request_id, endpoint=name, variant=variant.name, memory_mb=variant.memory_mb,
            start=start_wall, billed_ms=UsageRecord.bill(model_ms), model_ms=model_ms,
            overhead_ms=max(0.0, total_ms - model_ms - init_ms),
            cold_start=bool(lease and lease.cold), init_ms=init_ms,
            status="ok" if api_error is None else api_error.code,
            error_kind=None if api_error is None else api_error.fields.get("ErrorKind", _kind(api_error)),
            bytes_in=len(body), bytes_out=len(result.body) if result is not None and result.ok else 0,
            sandbox_id=lease.sandbox.id if lease is not None else None,
            **_cold_start_detail(lease, model_ms),
        )
        try:
            await gw.meter.record(rec)
        except Exception as exc:  # noqa: BLE001 - without a durable record we must not answer "ok"
            return errors.internal(f"usage could not be recorded: {exc}").response(request_id)
        headers_out = {INVOKED_VARIANT: variant.name, "x-amzn-RequestId": request_id}
        if api_error is not None:
            return api_error.response(request_id, headers_out)
        if result.custom_attributes:
            headers_out[CUSTOM_ATTRIBUTES] = result.custom_attributes
        return _ok(result, headers_out)


def _cold_start_detail(lease, model_ms: float) -> dict:
    """Where a cold start's time went: the sandbox's own phases, the gateway's share, and the first predict."""
    if lease is None or not lease.cold:
        return {}
    info = lease.sandbox.info
    phases = {k: round(v, 3) for k, v in info.get("timings", {}).items() if isinstance(v, (int, float))}
    phases["first_predict_ms"] = round(model_ms, 3)
    phases["total_ms"] = round(lease.init_ms, 3)
    return {"start_path": info.get("path"), "init_detail": json.dumps(phases, sort_keys=True)}


def _kind(err: errors.ApiError) -> str:
    return {"ThrottlingException": "throttled", "ModelNotReadyException": "not_ready",
            "ServiceUnavailable": "unavailable", "InternalFailure": "internal"}.get(err.code, err.code)


def _ok(result: sbx.InvokeResult, headers: dict) -> web.Response:
    resp = web.Response(body=result.body, headers=headers)
    resp.headers["Content-Type"] = result.content_type or "application/octet-stream"
    return resp
