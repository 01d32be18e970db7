"""The admin API's view of asynchronous requests (bearer token, as all of /admin):

  GET  /admin/async/{id}          the request as the queue keeps it (state, attempts, error, locations)
  GET  /admin/async/{id}/output   its output object (or, ?failure=1, its failure object), streamed from S3

``slimserve invoke-async --wait`` follows a request with these, so the shell needs no S3
credentials of its own.
"""
from __future__ import annotations

import asyncio
import dataclasses

from aiohttp import web

from gateway import errors
from gateway.data import s3 as s3mod
from gateway.data.locations import parse
from gateway.http.wire import admin_error

READ_BYTES = 1 << 20


class AsyncAdminApi:
    def __init__(self, store, s3: s3mod.S3):
        self.store, self.s3 = store, s3

    def routes(self) -> list[web.RouteDef]:
        return [web.get("/admin/async/{id}", self.describe), web.get("/admin/async/{id}/output", self.output)]

    async def _request(self, request: web.Request):
        req = await self.store.get_async(request.match_info["id"])
        if req is None:
            raise errors.NotFound(f"no asynchronous request {request.match_info['id']} (finished requests are "
                                  "kept for a day)")
        return req

    async def describe(self, request: web.Request) -> web.Response:
        req = await self._request(request)
        doc = {k: v for k, v in dataclasses.asdict(req).items() if k != "body"}
        return web.json_response(doc)

    async def output(self, request: web.Request) -> web.StreamResponse:
        req = await self._request(request)
        url = req.failure_location if request.query.get("failure") else req.output_location
        loc = parse(url, self.s3.endpoint_url, "output location")
        try:
            body, content_type, size = await asyncio.to_thread(self.s3.open, loc)
        except s3mod.Missing as exc:
            raise errors.NotFound(f"{url}: {exc.reason}") from None
        except (s3mod.Unreachable, s3mod.Changed) as exc:
            return admin_error(errors.Unavailable(f"{url}: {exc.reason}"))
        except s3mod.S3Error as exc:
            return admin_error(errors.Unavailable(f"{url}: {exc.reason}"))
        out = web.StreamResponse(headers={     # the model chose the type: a browser must not act on it
            "Content-Type": content_type or "application/octet-stream", "Content-Length": str(size),
            "X-Content-Type-Options": "nosniff", "Content-Disposition": "attachment"})
        await out.prepare(request)
        try:
            while chunk := await asyncio.to_thread(body.read, READ_BYTES):
                await out.write(chunk)
        finally:
            body.close()
        await out.write_eof()
        return out
