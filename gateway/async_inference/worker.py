"""The workers that drain the asynchronous queue: claim what an endpoint has room for, run each
request through ``serving.invoker`` (the same use case as a synchronous call), and write its
answer or its error to S3.

One request, start to end:

    claimed (lease) -> input: the inline body, or the S3 object streamed to a spool file
      -> invoker (body and answer as files: the gateway never holds a 1 GB payload)
      -> answer uploaded to the output location (S3 shows it only once complete)
      -> done;  or the error written to the failure location -> failed
    S3 down or throttled: back in the queue after each delay of ``backoff_s`` in turn, then the
    failure path.  No room (no instance, host memory): back in the queue, the
    attempt not counted.

A request re-run after a crash whose output object already exists is marked done without
running again: the object is the request's one answer, and it is written once.
"""
from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shutil
from pathlib import Path

from gateway import errors
from gateway.async_inference.queue import AsyncQueue
from gateway.async_inference.requests import MAX_INPUT_BYTES, AsyncConfig
from gateway.data import s3 as s3mod
from gateway.data.locations import parse
from gateway.domain import QueuedRequest
from gateway.serving.invoker import Invocation

log = logging.getLogger("slimserve.async")

BACKOFF_S = (2.0, 5.0, 15.0, 30.0, 60.0)    # delays before each retry of an S3 outage; then the failure path
NO_ROOM_DELAY_S = 1.0         # a request that found no capacity is claimable again after this
BUCKET_CHECK_S = 60.0         # an output bucket found to exist is not asked about again for this long
POLL_S = 1.0                  # claim again at least this often (TTL expiry, retries come due)


class StorageDown(Exception):
    """S3 did not answer (or kept changing the object): worth trying again later."""


class RequestFailed(Exception):
    """The request cannot succeed (input missing, output bucket missing, model failed...): the
    failure path gets ``message``."""

    def __init__(self, message: str, code: str = "ValidationError", variant: str | None = None):
        super().__init__(message)
        self.message, self.code, self.variant = message, code, variant


class AsyncWorkers:
    def __init__(self, queue: AsyncQueue, invoker, s3: s3mod.S3, spool_dir: Path, configs, capacity,
                 notifier=None, clock=None, backoff_s: tuple[float, ...] = BACKOFF_S):
        self.queue, self.invoker, self.s3 = queue, invoker, s3
        self.spool_dir = Path(spool_dir)
        self.configs = configs            # () -> {endpoint: AsyncConfig} of the async endpoints in service
        self.capacity = capacity          # endpoint -> requests it may run at once now
        self.notifier = notifier
        self.clock = clock or queue.clock
        self.backoff_s = tuple(backoff_s)
        self.running: dict[str, dict[str, asyncio.Task]] = {}     # endpoint -> request id -> its task
        self.metrics = None               # http.async_metrics.AsyncMetrics, told as requests end
        self.last_backlog: dict[str, tuple[int, int, float | None]] = {}   # the queue at the last round
        self._buckets_seen: dict[str, float] = {}     # output buckets known to exist, and since when

    # --- the loop -------------------------------------------------------------------------
    async def run(self) -> None:
        await asyncio.to_thread(shutil.rmtree, self.spool_dir, True)    # a killed run's spool files
        self.spool_dir.mkdir(parents=True, exist_ok=True)
        back = await self.queue.recover()
        if back:
            log.info("async inference: %d requests of an earlier run are queued again", back)
        renewals = asyncio.get_running_loop().create_task(self._renew_leases())
        ticks = 0
        try:
            while True:
                try:
                    await self._round(ticks)
                except Exception:  # noqa: BLE001 - the store may be busy; next round
                    log.exception("async inference: a claim round failed")
                ticks += 1
                await self.queue.wait(POLL_S)
        finally:
            renewals.cancel()
            await self._cancel_all()

    async def _round(self, ticks: int) -> None:
        if ticks % 10 == 0:
            await self.queue.expire()
        if ticks % 3600 == 0:
            await self.queue.prune()
        self.last_backlog = await self.queue.backlog()
        for endpoint, config in self.configs().items():
            mine = self.running.setdefault(endpoint, {})
            room = self.capacity(endpoint) - len(mine)
            if room <= 0:
                continue
            for req in await self.queue.claim(endpoint, room):
                task = asyncio.get_running_loop().create_task(self._guarded(req, config),
                                                              name=f"slimserve-async-{req.id}")
                mine[req.id] = task

    def gauges(self) -> list[dict]:
        """Per asynchronous endpoint: its backlog as the last round saw it, against its instances."""
        now = self.clock.wall()
        out = []
        for endpoint in sorted(self.configs()):
            queued, running, oldest = self.last_backlog.get(endpoint, (0, 0, None))
            backlog, instances = queued + running, self.capacity(endpoint)
            out.append({"endpoint": endpoint, "backlog": backlog, "instances": instances,
                        "backlog_per_instance": backlog / instances if instances else float(backlog),
                        "oldest_age_s": max(0.0, now - oldest) if oldest is not None else 0.0,
                        "without_capacity": backlog > 0 and instances == 0})
        return out

    def backlog_of(self, endpoint: str) -> int:
        queued, running, _ = self.last_backlog.get(endpoint, (0, 0, None))
        return queued + running

    async def _renew_leases(self) -> None:
        while True:
            await asyncio.sleep(self.queue.lease_s / 3)
            ids = [rid for tasks in self.running.values() for rid in tasks]
            try:
                await self.queue.renew(ids)
            except Exception:  # noqa: BLE001 - next time; the lease has two more thirds to go
                log.exception("async inference: renewing leases failed")

    async def _cancel_all(self) -> None:
        tasks = [t for tasks in self.running.values() for t in tasks.values()]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)   # their leases run out or recover() takes them

    async def abandon(self, endpoint: str) -> int:
        """DeleteEndpoint: stop what runs, and send every open request to the failure path."""
        tasks = list(self.running.pop(endpoint, {}).values())
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        reason = f"The endpoint {endpoint} was deleted before this request finished."
        n = 0
        for req in await self.queue.open_requests(endpoint):
            with contextlib.suppress(RequestFailed, StorageDown):
                await self._write_failure(req, reason)
            if await self.queue.failed(req, reason, held=False):
                n += 1
        return n

    # --- one request ------------------------------------------------------------------------
    async def _guarded(self, req: QueuedRequest, config: AsyncConfig) -> None:
        try:
            await self._process(req, config)
        except asyncio.CancelledError:
            raise
        except Exception:  # noqa: BLE001 - a bug: the request goes back to the queue, the loop lives
            log.exception("async inference: request %s hit a gateway error", req.id)
            with contextlib.suppress(Exception):
                await self.queue.later(req, self.backoff_s[-1], "internal error in the gateway")
        finally:
            self.running.get(req.endpoint, {}).pop(req.id, None)
            self.queue.wake()

    async def _process(self, req: QueuedRequest, config: AsyncConfig) -> None:
        started = self.clock.wall()
        work = self.spool_dir / req.id
        try:
            if req.attempts > 1 and await self._exists(req.output_location):
                await self.queue.done(req)          # an earlier run wrote it, then died before saying so
                return
            await asyncio.to_thread(work.mkdir, 0o700, True, True)
            inv = await self._invocation(req, work, started)
            outcome = await self.invoker.invoke(inv)
            if outcome.ok:
                result = outcome.result
                await self._put(req.output_location, Path(inv.response_file), result.content_type)
                if await self.queue.done(req):
                    self._ended(req, outcome.variant, True, inv.backlog_ms)
                await self._notify(config, req, True, outcome, Path(inv.response_file))
                return
            if isinstance(outcome.error, (errors.Throttled, errors.NotReady, errors.Unavailable)):
                await self.queue.later(req, NO_ROOM_DELAY_S, outcome.error.message, refund=True)
                return
            raise RequestFailed(outcome.error.message, outcome.error.code, outcome.variant)
        except StorageDown as exc:
            if req.attempts <= len(self.backoff_s):
                delay = self.backoff_s[req.attempts - 1]
                log.warning("async inference: request %s waits %g s for S3: %s", req.id, delay, exc)
                await self.queue.later(req, delay, str(exc))
                return
            await self._fail(config, req, f"S3 could not be reached after {req.attempts} attempts: {exc}",
                             "ServiceUnavailable", started=started)
        except RequestFailed as exc:
            await self._fail(config, req, exc.message, exc.code, exc.variant, started)
        finally:
            await asyncio.to_thread(shutil.rmtree, work, True)

    async def _invocation(self, req: QueuedRequest, work: Path, started: float) -> Invocation:
        common = dict(endpoint=req.endpoint, content_type=req.content_type, accept=req.accept,
                      custom_attributes=req.custom_attributes, asynchronous=True, max_bytes=MAX_INPUT_BYTES,
                      timeout_s=req.timeout_s, backlog_ms=max(0.0, (started - req.received) * 1000.0),
                      request_id=req.id if req.attempts <= 1 else f"{req.id}-{req.attempts}",
                      response_file=str(work / "output"))
        if req.input_location is None:
            return Invocation(body=req.body or b"", **common)
        loc = self._location(req.input_location, "InputLocation")
        info = await self._s3(self.s3.stat, loc, "the input")
        if info.size > MAX_INPUT_BYTES:
            raise RequestFailed(f"The input at {req.input_location} is {info.size} bytes, more than the "
                                f"{MAX_INPUT_BYTES} bytes of an asynchronous request.")
        path = work / "input"
        await self._s3(self.s3.download, info, "the input", path)
        if not req.content_type and info.content_type:      # as the SDK sends it: typed by its S3 object
            common["content_type"] = info.content_type
        return Invocation(body=b"", body_file=str(path), body_size=info.size, **common)

    def _location(self, text: str, what: str):
        try:
            loc = parse(text, self.s3.endpoint_url, what)
        except errors.Invalid as exc:
            raise RequestFailed(str(exc)) from None
        if loc.scheme != "s3" or not loc.key or loc.is_prefix:
            raise RequestFailed(f"The {what} {text} is not an S3 object.")
        return loc

    async def _s3(self, fn, loc, what: str, *args):
        """An S3 call, its failures sorted: worth retrying (``StorageDown``) or not (``RequestFailed``)."""
        try:
            return await asyncio.to_thread(fn, loc, *args)
        except (s3mod.Unreachable, s3mod.Changed) as exc:
            raise StorageDown(f"{what} at {exc.url}: {exc.reason}") from None
        except s3mod.S3Error as exc:
            if "SlowDown" in exc.reason or "ServiceUnavailable" in exc.reason or exc.reason.startswith("5"):
                raise StorageDown(f"{what} at {exc.url}: {exc.reason}") from None
            raise RequestFailed(f"Could not access {what} at {exc.url}: {exc.reason}.") from None

    async def _exists(self, url: str) -> bool:
        try:
            return await self._s3(self.s3.exists, self._location(url, "output location"), "the output")
        except RequestFailed:
            return False

    async def _put(self, url: str, source, content_type: str | None) -> None:
        loc = self._location(url, "output location")
        now = self.clock.now()
        if self._buckets_seen.get(loc.bucket, -1e18) < now - BUCKET_CHECK_S:
            await self._s3(self.s3.check_bucket, loc, "the output")
            if len(self._buckets_seen) > 1000:
                self._buckets_seen.clear()
            self._buckets_seen[loc.bucket] = now
        await self._s3(self.s3.put, loc, "the output", source, content_type)

    async def _write_failure(self, req: QueuedRequest, message: str, code: str = "ValidationError") -> None:
        """The failure object: JSON (the SDK reads it with the predictor's deserializer, most often JSON)."""
        doc = {"ErrorCode": code, "Message": message, "InferenceId": req.inference_id, "RequestId": req.id}
        await self._put(req.failure_location, json.dumps(doc).encode(), "application/json")

    def _ended(self, req: QueuedRequest, variant: str | None, ok: bool, backlog_ms: float) -> None:
        if self.metrics is not None:
            self.metrics.ended(req.endpoint, variant, ok, backlog_ms / 1000.0, self.clock.wall() - req.received)

    async def _fail(self, config: AsyncConfig, req: QueuedRequest, message: str, code: str,
                    variant: str | None = None, started: float | None = None) -> None:
        """The failure path: the error as the failure object, the request failed, the error topic told.
        A failure object that cannot be written (its bucket is missing too) leaves the error in the
        queue's record and the log; the request still ends."""
        text = f"{code}: {message}"
        try:
            await self._write_failure(req, message, code)
        except (RequestFailed, StorageDown) as exc:
            log.warning("async inference: request %s failed (%s) and its failure object could not be written: %s",
                        req.id, text, exc)
            text = f"{text} (the failure object could not be written: {exc})"
        if await self.queue.failed(req, text):
            self._ended(req, variant, False, ((started or req.received) - req.received) * 1000.0)
        await self._notify(config, req, False, None, None, text)

    async def _notify(self, config: AsyncConfig, req: QueuedRequest, ok: bool, outcome, response: Path | None,
                      error: str | None = None) -> None:
        if self.notifier is None:
            return
        topic = config.success_topic if ok else config.error_topic
        if not topic:
            return
        body = None
        kind = "SUCCESS_NOTIFICATION_TOPIC" if ok else "ERROR_NOTIFICATION_TOPIC"
        if ok and kind in config.include_response_in and response is not None:
            body = await asyncio.to_thread(_small_file, response)
        self.notifier.send(topic, req, ok, outcome, body, error)


def _small_file(path: Path, limit: int = 128 << 10) -> bytes | None:
    if os.path.getsize(path) > limit:
        return None
    return path.read_bytes()
