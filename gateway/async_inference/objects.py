"""The S3 objects of asynchronous requests: the input read to a spool file, the answer and the
failure uploaded.  S3 failures come out sorted: ``StorageDown`` is worth trying again (no
answer, throttled, changed under us), ``RequestFailed`` is not (missing, denied, bad name).

Every object written is tagged with the request's id (metadata ``slimserve-request-id``), so a
request re-run after a crash can tell its own earlier answer from another request's object
under the same name (a client may give two requests one Filename).
"""
from __future__ import annotations

import asyncio
import json
from pathlib import Path

from gateway import errors
from gateway.async_inference.requests import MAX_INPUT_BYTES
from gateway.data import s3 as s3mod
from gateway.data.locations import parse
from gateway.domain import QueuedRequest

BUCKET_CHECK_S = 60.0         # an output bucket found to exist is not asked about again for this long
REQUEST_ID_META = "slimserve-request-id"


class StorageDown(Exception):
    """S3 did not answer (or kept changing the object): worth trying again later."""


class RequestFailed(Exception):
    """The request cannot succeed (input missing, output bucket missing, model failed...): the
    failure path gets ``message``."""

    def __init__(self, message: str, code: str = "ValidationError", variant: str | None = None):
        super().__init__(message)
        self.message, self.code, self.variant = message, code, variant


class Objects:
    def __init__(self, s3: s3mod.S3, clock):
        self.s3, self.clock = s3, clock
        self._buckets_seen: dict[str, float] = {}     # output buckets known to exist, and since when

    def location(self, text: str, what: str):
        try:
            loc = parse(text, self.s3.endpoint_url, what)
        except errors.Invalid as exc:
            raise RequestFailed(str(exc)) from None
        if loc.scheme != "s3" or not loc.key or loc.is_prefix:
            raise RequestFailed(f"The {what} {text} is not an S3 object.")
        return loc

    async def _call(self, fn, loc, what: str, *args):
        try:
            return await asyncio.to_thread(fn, loc, *args)
        except (s3mod.Unreachable, s3mod.Changed) as exc:
            raise StorageDown(f"{what} at {exc.url}: {exc.reason}") from None
        except s3mod.S3Error as exc:
            if any(code in exc.reason for code in ("SlowDown", "ServiceUnavailable", "InternalError")):
                raise StorageDown(f"{what} at {exc.url}: {exc.reason}") from None
            raise RequestFailed(f"Could not access {what} at {exc.url}: {exc.reason}.") from None

    async def stat_input(self, req: QueuedRequest) -> s3mod.ObjectInfo:
        info = await self._call(self.s3.stat, self.location(req.input_location, "InputLocation"), "the input")
        if info.size > MAX_INPUT_BYTES:
            raise RequestFailed(f"The input at {req.input_location} is {info.size} bytes, more than the "
                                f"{MAX_INPUT_BYTES} bytes of an asynchronous request.")
        return info

    async def fetch_input(self, info: s3mod.ObjectInfo, path: Path) -> None:
        """The input (as stat'ed) into ``path``; a local disk that cannot take it raises OSError."""
        await self._call(self.s3.download, info, "the input", path)

    async def written_by(self, url: str, req: QueuedRequest) -> bool:
        """Whether the object at ``url`` is this request's own (an earlier run wrote it)."""
        try:
            info = await self._call(self.s3.stat, self.location(url, "output location"), "the output")
        except RequestFailed:
            return False
        return info.metadata.get(REQUEST_ID_META) == req.id

    async def put(self, url: str, source, content_type: str | None, req: QueuedRequest) -> None:
        loc = self.location(url, "output location")
        now = self.clock.now()
        if self._buckets_seen.get(loc.bucket, -1e18) < now - BUCKET_CHECK_S:
            await self._call(self.s3.check_bucket, loc, "the output")
            if len(self._buckets_seen) > 1000:
                self._buckets_seen.clear()
            self._buckets_seen[loc.bucket] = now
        await self._call(self.s3.put, loc, "the output", source, content_type, {REQUEST_ID_META: req.id})

    async def put_answer(self, req: QueuedRequest, path: Path, content_type: str | None,
                         delays_s: tuple[float, ...]) -> None:
        """The answer, tried again after each of ``delays_s`` while S3 is down: the answer is kept
        on disk meanwhile, so an outage never runs the model again."""
        for delay in (*delays_s, None):
            try:
                return await self.put(req.output_location, path, content_type, req)
            except StorageDown:
                if delay is None:
                    raise
                await asyncio.sleep(delay)

    async def put_failure(self, req: QueuedRequest, message: str, code: str) -> None:
        """The failure object: JSON (the SDK reads it with the predictor's deserializer, most often JSON)."""
        doc = {"ErrorCode": code, "Message": message, "InferenceId": req.inference_id, "RequestId": req.id}
        await self.put(req.failure_location, json.dumps(doc).encode(), "application/json", req)
