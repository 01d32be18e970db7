"""The admin API's view of transform jobs (bearer token, as all of /admin), for the CLI:

  POST /admin/transform-jobs                a CreateTransformJob request (JSON) -> {"TransformJobArn"}
  GET  /admin/transform-jobs                every job: its summary and progress
  GET  /admin/transform-jobs/{name}         DescribeTransformJob's answer, plus "Progress"
  POST /admin/transform-jobs/{name}/stop    StopTransformJob
  GET  /admin/transform-jobs/{name}/logs    the job's log (its sandboxes' output and its own lines)
"""
from __future__ import annotations

import asyncio
import json

from aiohttp import web

from gateway import errors
from gateway.batch.jobs import TransformJobs
from gateway.http.body import read_body

MAX_REQUEST_BYTES = 1 << 20
MAX_LOG_BYTES = 1 << 20


def _named(exc: errors.Named) -> web.Response:
    """ResourceInUse, ResourceLimitExceeded, ResourceNotFound: the service's own codes (the admin
    middleware words the other refusals, NotFound as 404)."""
    return web.json_response({"error": exc.code, "message": exc.message}, status=exc.status)


class TransformAdminApi:
    def __init__(self, jobs: TransformJobs):
        self.jobs = jobs

    def routes(self) -> list[web.RouteDef]:
        return [web.post("/admin/transform-jobs", self.create), web.get("/admin/transform-jobs", self.list),
                web.get("/admin/transform-jobs/{name}", self.describe),
                web.post("/admin/transform-jobs/{name}/stop", self.stop),
                web.get("/admin/transform-jobs/{name}/logs", self.logs)]

    async def create(self, request: web.Request) -> web.Response:
        try:
            req = json.loads(await read_body(request, MAX_REQUEST_BYTES) or b"{}")
        except ValueError:
            raise errors.Malformed("the request body is not JSON") from None
        if not isinstance(req, dict):
            raise errors.Malformed("the request body must be a JSON object")
        try:
            return web.json_response(await self.jobs.create(req))
        except errors.Named as exc:
            return _named(exc)

    async def list(self, request: web.Request) -> web.Response:
        out = []
        for s in sorted(await self.jobs.summaries(), key=lambda d: d["CreationTime"], reverse=True):
            out.append(dict(s, Progress=await self.jobs.progress(s["TransformJobName"])))
        return web.json_response({"TransformJobs": out})

    async def describe(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        doc = await self.jobs.describe(name)
        doc["Progress"] = await self.jobs.progress(name)
        return web.json_response(doc)

    async def stop(self, request: web.Request) -> web.Response:
        try:
            await self.jobs.stop(request.match_info["name"])
        except errors.Named as exc:
            return _named(exc)
        return web.json_response({})

    async def logs(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        await self.jobs.get(name)

        def tail() -> bytes:
            path = self.jobs.log_path(name)
            try:
                with open(path, "rb") as fh:
                    fh.seek(0, 2)
                    fh.seek(max(0, fh.tell() - MAX_LOG_BYTES))
                    return fh.read()
            except FileNotFoundError:
                return b""
        return web.Response(body=await asyncio.to_thread(tail), content_type="text/plain",
                            headers={"X-Content-Type-Options": "nosniff"})
