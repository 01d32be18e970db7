"""InvokeEndpointAsync: ``POST /endpoints/{name}/async-invocations`` -> 202 with the request's
InferenceId and where its answer (or its error) will be.

A thin handler: the headers are checked by ``async_inference.requests``, the request is made
durable by the queue, and the 202 leaves only after that.  Both request shapes are taken: an
``X-Amzn-SageMaker-InputLocation`` naming an S3 object, or the body inline (<= 128,000 bytes).
"""
from __future__ import annotations

import uuid

from aiohttp import web

from gateway import errors
from gateway.async_inference.queue import AsyncQueue
from gateway.async_inference.requests import MAX_INLINE_BODY, AsyncConfig, submission
from gateway.data.locations import parse
from gateway.http.body import read_capped
from gateway.http.wire import runtime_error


class AsyncRuntimeApi:
    def __init__(self, queue: AsyncQueue, config_of, exists, s3_endpoint, metrics, account_id: str,
                 body_timeout_s: float, budget=None, backlog_of=lambda name: 0, max_backlog: int = 100_000):
        self.backlog_of, self.max_backlog = backlog_of, max_backlog
        self.account_id = account_id
        self.queue = queue
        self.config_of = config_of        # endpoint -> its AsyncInferenceConfig document, or None
        self.exists = exists              # endpoint -> whether it is an endpoint at all
        self.s3_endpoint = s3_endpoint    # () -> the S3 endpoint URL https:// input locations must be on
        self.metrics = metrics
        self.body_timeout_s, self.budget = body_timeout_s, budget

    def routes(self) -> list[web.RouteDef]:
        return [web.post("/endpoints/{name}/async-invocations", self.submit)]

    async def submit(self, request: web.Request) -> web.Response:
        request_id = str(uuid.uuid4())        # a refused request's; an accepted one's is its queue id
        name = request.match_info["name"]
        try:
            body = await read_capped(request, MAX_INLINE_BODY, MAX_INLINE_BODY, self.body_timeout_s, self.budget,
                                     digest=False)
            sub = submission(request.headers, body.size)      # (a body over the cap is refused here, named)
            if not self.exists(name):
                raise errors.NotFound(f"Endpoint {name} of account {self.account_id} not found.")
            doc = self.config_of(name)
            if doc is None:
                raise errors.Invalid(f"Endpoint {name} does not have an AsyncInferenceConfig: it takes "
                                     "synchronous requests (InvokeEndpoint).")
            if self.backlog_of(name) >= self.max_backlog:
                raise errors.Unavailable(f"Endpoint {name} has {self.max_backlog} requests queued, its limit; "
                                         "retry later.")
            if sub.input_location:
                loc = parse(sub.input_location, self.s3_endpoint(), "InputLocation")
                if loc.scheme != "s3" or loc.is_prefix:
                    raise errors.Invalid(f"InputLocation {sub.input_location} must name an S3 object.")
            req = await self.queue.submit(name, AsyncConfig.from_doc(doc), sub, body.data)
        except errors.PayloadTooLarge:
            exc = errors.Invalid(f"1 validation error detected: Value at 'body' failed to satisfy constraint: "
                                 f"Member must have length less than or equal to {MAX_INLINE_BODY}")
            self.metrics.request_rejected(exc.code)
            return runtime_error(exc, request_id)
        except errors.SlimserveError as exc:
            self.metrics.request_rejected(exc.code)
            return runtime_error(exc, request_id)
        return web.json_response({"InferenceId": req.inference_id}, status=202, headers={
            "x-amzn-RequestId": req.id,          # also GET /admin/async/{id}
            "X-Amzn-SageMaker-OutputLocation": req.output_location,
            "X-Amzn-SageMaker-FailureLocation": req.failure_location,
        })
