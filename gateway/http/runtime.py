"""The SageMaker Runtime API: POST /endpoints/{name}/invocations, and GET /ping.

A thin handler: read the body (with its cap), hand it to ``serving.invoker`` and write
its outcome the way botocore's ``sagemaker-runtime`` client reads it.
"""
from __future__ import annotations

import uuid

from aiohttp import web

from gateway import errors
from gateway.http.body import read_capped
from gateway.http.wire import runtime_error
from gateway.serving.invoker import Invocation, Invoker

CUSTOM_ATTRIBUTES = "X-Amzn-SageMaker-Custom-Attributes"
TARGET_VARIANT = "X-Amzn-SageMaker-Target-Variant"
TARGET_MODEL = "X-Amzn-SageMaker-Target-Model"
INVOKED_VARIANT = "X-Amzn-Invoked-Production-Variant"


class RuntimeApi:
    def __init__(self, invoker: Invoker, cap: int, drain: int, body_timeout_s: float, budget=None):
        self.invoker = invoker
        self.cap, self.drain = cap, drain      # the largest body any variant takes; what is read to refuse one
        self.body_timeout_s, self.budget = body_timeout_s, budget

    def routes(self) -> list[web.RouteDef]:
        return [
            web.get("/ping", self.ping),
            web.post("/endpoints/{name}/invocations", self.invoke),
        ]

    async def ping(self, request: web.Request) -> web.Response:
        return web.Response(text="")

    async def invoke(self, request: web.Request) -> web.Response:
        request_id = str(uuid.uuid4())
        try:
            # (signed requests were read and hashed by the SigV4 middleware; unsigned need no hash)
            body = await read_capped(request, self.cap, self.drain, self.body_timeout_s, self.budget, digest=False)
        except (errors.PayloadTooLarge, errors.RequestTimeout, errors.Unavailable) as exc:   # refused unread
            return runtime_error(self.invoker.refused(request_id, exc).error, request_id)
        h = request.headers
        outcome = await self.invoker.invoke(Invocation(
            endpoint=request.match_info["name"], body=body.data, oversized=body.size if body.over else 0,
            content_type=h.get("Content-Type"),
            accept=h.get("Accept"), custom_attributes=h.get(CUSTOM_ATTRIBUTES), target_variant=h.get(TARGET_VARIANT),
            target_model=h.get(TARGET_MODEL), request_id=request_id))
        headers = {"x-amzn-RequestId": request_id}
        if outcome.variant is not None:
            headers[INVOKED_VARIANT] = outcome.variant
        if outcome.error is not None:
            return runtime_error(outcome.error, request_id, headers)
        result = outcome.result
        if result.custom_attributes:
            headers[CUSTOM_ATTRIBUTES] = result.custom_attributes
        resp = web.Response(body=result.body, headers=headers)
        resp.headers["Content-Type"] = result.content_type or "application/octet-stream"
        return resp
