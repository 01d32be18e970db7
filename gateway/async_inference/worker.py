"""The workers that drain the asynchronous queue: claim what an endpoint has room for, run each
request through ``serving.invoker`` (the same use case as a synchronous call), and write its
answer or its error to S3 (``objects``).

One request, start to end:

    claimed (a lease, renewed while it runs) -> input: the inline body, or the S3 object streamed
      to a spool file -> invoker (body and answer as files: the gateway never holds a 1 GB payload)
      -> answer uploaded to the output location (S3 shows it only once complete) -> done
    or: the error written to the failure location -> failed, and the error topic told.

S3 down while the input is read: back in the queue after each delay of ``backoff_s`` in turn,
then the failure path.  S3 down while the answer is written: the upload is tried again in place
after the same delays (the answer waits on disk: the model does not run again).  No room (no
instance, host memory, spool disk): back in the queue, the attempt not counted.  A request
re-run after a crash whose output object it already wrote is marked done without running: the
object is the request's one answer, written once.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
from pathlib import Path

from gateway import errors
from gateway.async_inference.notify import message
from gateway.async_inference.objects import Objects, RequestFailed, StorageDown
from gateway.async_inference.queue import AsyncQueue
from gateway.async_inference.requests import MAX_INCLUDED_RESPONSE, MAX_INPUT_BYTES, AsyncConfig
from gateway.data import s3 as s3mod
from gateway.domain import QueuedRequest
from gateway.serving.invoker import Invocation

log = logging.getLogger("slimserve.async")

BACKOFF_S = (2.0, 5.0, 15.0, 30.0, 60.0)    # delays before each retry of an S3 outage; then the failure path
NO_ROOM_DELAY_S = 1.0         # a request that found no capacity is claimable again after this
POLL_S = 1.0                  # claim again at least this often (TTL expiry, retries come due)
BACKLOG_EVERY_S = 0.25        # the queue's counts (metrics, scaling) are read at most this often
# Requests claimed per instance: one invokes while the others fetch their input or upload their
# answer, so a sandbox does not wait on S3 and the store between requests.
PIPELINE = 3
SPOOL_RESERVE = 256 << 20     # free disk the spool keeps besides an input (answers are written there too)


class NoRoom(Exception):
    """Not this request's fault: no disk for its input now."""


class AsyncWorkers:
    def __init__(self, queue: AsyncQueue, invoker, s3: s3mod.S3, spool_dir: Path, configs, capacity,
                 notifier=None, clock=None, backoff_s: tuple[float, ...] = BACKOFF_S, region: str = "us-east-1"):
        self.queue, self.invoker = queue, invoker
        self.objects = Objects(s3, clock or queue.clock)
        self.spool_dir = Path(spool_dir)
        self.configs = configs            # () -> {endpoint: AsyncConfig} of the async endpoints in service
        self.capacity = capacity          # endpoint -> requests it may run at once now
        self.notifier = notifier
        self.clock = clock or queue.clock
        self.backoff_s = tuple(backoff_s)
        self.region = region
        self.running: dict[str, dict[str, asyncio.Task]] = {}     # endpoint -> request id -> its task
        self.metrics = None               # http.async_metrics.AsyncMetrics, told as requests end
        self.last_backlog: dict[str, tuple[int, int, float | None]] = {}   # the queue at the last round
        self.on_starved = lambda: None    # told when requests wait and no instance runs (scale from zero)
        self.closing: set[str] = set()    # endpoints being deleted: nothing of theirs is claimed
        self._invoking: dict[str, int] = {}               # endpoint -> requests in the invoker now
        self._turn = asyncio.Condition()                  # an invoke slot may have come free
        self._backlog_at = -1e18

    # --- the loop -------------------------------------------------------------------------
    async def run(self) -> None:
        await asyncio.to_thread(shutil.rmtree, self.spool_dir, True)    # a killed run's spool files
        self.spool_dir.mkdir(parents=True, exist_ok=True)
        back = await self.queue.recover()
        if back:
            log.info("async inference: %d requests of an earlier run are queued again", back)
        for endpoint in set(await self.queue.backlog()) - set(self.configs()):    # deleted, then a crash
            await self.abandon(endpoint)
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
            await self._cancel(None)

    async def _round(self, ticks: int) -> None:
        if ticks % 10 == 0:
            for req in await self.queue.expire():
                await self._tell_failure(req, "RequestTTLSeconds ran out before the request started.",
                                         "ValidationError", self.configs().get(req.endpoint), ended=False)
        if ticks % 3600 == 0:
            await self.queue.prune()
        submitted = self.queue.take_submitted()
        starving = any(self.capacity(e) == 0 for e in submitted)      # scale from zero: count it now
        if starving or self.clock.now() - self._backlog_at >= BACKLOG_EVERY_S:
            self.last_backlog = await self.queue.backlog()
            self._backlog_at = self.clock.now()
        async with self._turn:
            self._turn.notify_all()                       # the capacity may have changed (scaling)
        for endpoint, config in self.configs().items():
            if endpoint in self.closing:
                continue
            mine = self.running.setdefault(endpoint, {})
            capacity = self.capacity(endpoint)
            if capacity == 0 and self.backlog_of(endpoint):
                self.on_starved()
            room = capacity * PIPELINE - len(mine)
            if room <= 0:
                continue
            claimed = await self.queue.claim(endpoint, room)
            if endpoint in self.closing or self.running.get(endpoint) is not mine:
                for req in claimed:                   # DeleteEndpoint began meanwhile: not ours to run
                    await self.queue.later(req, 0.0, "the endpoint is being deleted", refund=True)
                continue
            for req in claimed:
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
            held = {rid: task for tasks in self.running.values() for rid, task in tasks.items()}
            try:
                kept = await self.queue.renew(list(held))
            except Exception:  # noqa: BLE001 - next time; the lease has two more thirds to go
                log.exception("async inference: renewing leases failed")
                continue
            for rid in set(held) - kept:       # taken over (this node stalled past its lease): theirs now
                log.warning("async inference: lost the lease of request %s; another worker runs it", rid)
                held[rid].cancel()

    async def _cancel(self, endpoint: str | None) -> None:
        """Stop the requests running here (of ``endpoint``, or all): their leases are left to
        run out, or to ``recover`` at the next start."""
        groups = [self.running.pop(endpoint, {})] if endpoint else list(self.running.values())
        tasks = [t for g in groups for t in g.values()]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def close(self, endpoint: str) -> None:
        """DeleteEndpoint begins: claim nothing more of it, and stop what runs (its models' answers
        would come after the endpoint's end)."""
        self.closing.add(endpoint)
        await self._cancel(endpoint)

    async def abandon(self, endpoint: str) -> int:
        """DeleteEndpoint ended: send every open request to the failure path (the endpoint is gone
        from ``configs`` now, so nothing claims them meanwhile)."""
        await self._cancel(endpoint)
        self.closing.discard(endpoint)
        reason = f"The endpoint {endpoint} was deleted before this request finished."
        n = 0
        while batch := await self.queue.open_requests(endpoint):
            for req in batch:
                if await self.queue.failed(req, reason, held=False):
                    n += 1
                    with contextlib.suppress(RequestFailed, StorageDown):
                        await self.objects.put_failure(req, reason, "ValidationError")
        return n

    # --- one request ------------------------------------------------------------------------
    async def _guarded(self, req: QueuedRequest, config: AsyncConfig) -> None:
        task = asyncio.current_task()
        try:
            await self._process(req, config)
        except asyncio.CancelledError:
            raise
        except Exception:  # noqa: BLE001 - a bug: the request goes back to the queue, the loop lives
            log.exception("async inference: request %s hit a gateway error", req.id)
            with contextlib.suppress(Exception):
                await self.queue.later(req, self.backoff_s[-1], "internal error in the gateway")
        finally:
            mine = self.running.get(req.endpoint, {})
            if mine.get(req.id) is task:
                del mine[req.id]
            self.queue.wake()

    async def _process(self, req: QueuedRequest, config: AsyncConfig) -> None:
        started = self.clock.wall()
        work = self.spool_dir / f"{req.id}.{req.attempts}"       # each attempt its own
        try:
            if req.attempts > 1 and await self.objects.written_by(req.output_location, req):
                await self.queue.done(req)          # an earlier run wrote it, then died before saying so
                return
            await asyncio.to_thread(work.mkdir, 0o700, True, True)
            inv = await self._invocation(req, work, started)
            async with self._invoke_slot(req.endpoint):
                outcome = await self.invoker.invoke(inv)
            if isinstance(outcome.error, (errors.Throttled, errors.NotReady, errors.Unavailable)):
                await self.queue.later(req, NO_ROOM_DELAY_S, outcome.error.message, refund=True)
                return
            if not outcome.ok:
                raise RequestFailed(outcome.error.message, outcome.error.code, outcome.variant)
            answer = Path(inv.response_file)
            await self.objects.put_answer(req, answer, outcome.result.content_type, self.backoff_s)
            if await self.queue.done(req):
                self._ended(req, outcome.variant, True, inv.backlog_ms)
            body = None
            if "SUCCESS_NOTIFICATION_TOPIC" in config.include_response_in:
                body = await asyncio.to_thread(_small_file, answer)
            self._notify(config.success_topic, message(self.region, req, True, self.clock.wall(),
                                                       outcome.result.content_type, body))
        except NoRoom as exc:
            await self.queue.later(req, NO_ROOM_DELAY_S, str(exc), refund=True)
        except StorageDown as exc:
            if req.attempts <= len(self.backoff_s):
                delay = self.backoff_s[req.attempts - 1]
                log.warning("async inference: request %s waits %g s for S3: %s", req.id, delay, exc)
                await self.queue.later(req, delay, str(exc))
                return
            await self._tell_failure(req, f"S3 could not be reached after {req.attempts} attempts: {exc}",
                                     "ServiceUnavailable", config, started=started)
        except RequestFailed as exc:
            await self._tell_failure(req, exc.message, exc.code, config, exc.variant, started)
        finally:
            await asyncio.to_thread(shutil.rmtree, work, True)

    @contextlib.asynccontextmanager
    async def _invoke_slot(self, endpoint: str):
        """One of the endpoint's instances for the ``with`` block: at most ``capacity`` requests of an
        endpoint are in the invoker at once (the others of the pipeline wait here, not in a pool)."""
        async with self._turn:
            await self._turn.wait_for(lambda: self._invoking.get(endpoint, 0) < self.capacity(endpoint)
                                      or self.capacity(endpoint) == 0)
            if self.capacity(endpoint) == 0:          # scaled to zero meanwhile: back to the queue
                raise NoRoom(f"endpoint {endpoint} has no instance now")
            self._invoking[endpoint] = self._invoking.get(endpoint, 0) + 1
        try:
            yield
        finally:
            self._invoking[endpoint] -= 1
            async with self._turn:
                self._turn.notify_all()

    async def _invocation(self, req: QueuedRequest, work: Path, started: float) -> Invocation:
        common = dict(endpoint=req.endpoint, content_type=req.content_type, accept=req.accept,
                      custom_attributes=req.custom_attributes, asynchronous=True, max_bytes=MAX_INPUT_BYTES,
                      timeout_s=req.timeout_s, backlog_ms=max(0.0, (started - req.received) * 1000.0),
                      request_id=req.id if req.attempts <= 1 else f"{req.id}-{req.attempts}",
                      response_file=str(work / "output"))
        if req.input_location is None:
            return Invocation(body=req.body or b"", **common)
        info = await self.objects.stat_input(req)
        free = (await asyncio.to_thread(shutil.disk_usage, work)).free
        if free < info.size + SPOOL_RESERVE:
            raise NoRoom(f"the spool disk has {free >> 20} MB free; the input is {info.size >> 20} MB")
        path = work / "input"
        try:
            await self.objects.fetch_input(info, path)
        except s3mod.LocalWriteError as exc:
            raise NoRoom(str(exc)) from None
        if not req.content_type and info.content_type:      # as the SDK sends it: typed by its S3 object
            common["content_type"] = info.content_type
        return Invocation(body=b"", body_file=str(path), body_size=info.size, **common)

    def _ended(self, req: QueuedRequest, variant: str | None, ok: bool, backlog_ms: float) -> None:
        if self.metrics is not None:
            self.metrics.ended(req.endpoint, variant, ok, backlog_ms / 1000.0, self.clock.wall() - req.received)

    async def _tell_failure(self, req: QueuedRequest, text: str, code: str, config: AsyncConfig | None,
                            variant: str | None = None, started: float | None = None, ended: bool = True) -> None:
        """The failure path: the error as the failure object, the request failed (``ended``: this
        worker ends it; else it was ended already, by expiry), the error topic told.  A failure
        object that cannot be written (its bucket is missing too, S3 is down) leaves the error in
        the queue's record and the log; the request still ends."""
        record = f"{code}: {text}"
        try:
            await self.objects.put_failure(req, text, code)
        except (RequestFailed, StorageDown) as exc:
            log.warning("async inference: request %s failed (%s) and its failure object could not be written: %s",
                        req.id, record, exc)
            record = f"{record} (the failure object could not be written: {exc})"
        if ended and await self.queue.failed(req, record):
            self._ended(req, variant, False, ((started or req.received) - req.received) * 1000.0)
        if config is not None:
            body = None
            if "ERROR_NOTIFICATION_TOPIC" in config.include_response_in:
                body = text.encode()[:MAX_INCLUDED_RESPONSE]
            self._notify(config.error_topic, message(self.region, req, False, self.clock.wall(), body=body,
                                                     error=f"{code}: {text}"))

    def _notify(self, topic: str | None, doc: dict) -> None:
        if topic and self.notifier is not None:
            self.notifier.send(topic, doc)


def _small_file(path: Path) -> bytes | None:
    if os.path.getsize(path) > MAX_INCLUDED_RESPONSE:
        return None
    return path.read_bytes()
