"""Running one transform job: its plan of input objects, cut into requests, through its own
sandboxes, into one output object per input.

    plan (once, in the store) -> for each object not done: fetch -> batches (records.py, in a
    thread) -> a queue of requests -> MaxConcurrentTransforms x InstanceCount workers, each
    calling ``serving.invoker`` on the job's compute -> answers written to the object's output
    file in input order -> upload -> the object is done (in the store)

Objects overlap: the next object is fetched and cut while the last requests of the one before
are still running, so the sandboxes are not left idle between objects.  The first request that
fails (after InvocationsMaxRetries) or the first object that cannot be read fails the job:
what is in flight stops, the outputs of objects already done stay.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from gateway.batch import records
from gateway.batch.compute import Compute
from gateway.batch.spec import TransformSpec
from gateway.batch.storage import InputObject, JobInputError, JobStorage
from gateway.logs.events import stamp
from gateway.serving.invoker import Invocation

log = logging.getLogger("slimserve.batch")
CHECKPOINT_S = 10.0                 # instance time is written at least this often (a crash loses at most this)
STORAGE_RETRIES = (1.0, 3.0, 10.0)  # an unreachable store is tried again after these pauses, then the job fails
MIN_ANSWER_BYTES = 64 << 20          # the largest answer to one request (4 x MaxPayloadInMB when larger)
SPOOL_RESERVE = 512 << 20            # free disk a job leaves on the spool's file system


class JobFailed(Exception):
    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


class HeldBytes:
    """Request bodies that transform jobs hold in the gateway's memory at once (cut and waiting,
    or being sent), over all jobs: a job waits for room before it cuts its next request."""

    def __init__(self, max_bytes: int):
        self.max_bytes, self.held = max_bytes, 0
        self._changed = asyncio.Condition()

    async def take(self, n: int) -> None:
        async with self._changed:
            await self._changed.wait_for(lambda: self.held == 0 or self.held + n <= self.max_bytes)
            self.held += n

    def give(self, n: int) -> None:
        self.held = max(0, self.held - n)
        asyncio.get_running_loop().create_task(self._wake())

    async def _wake(self) -> None:
        async with self._changed:
            self._changed.notify_all()


class JobLog:
    """The job's log (its sandboxes write their output to the same file)."""

    def __init__(self, path: Path):
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)

    def write(self, line: str) -> None:
        with open(self.path, "a", encoding="utf-8") as fh:
            fh.write(f"{stamp()} {line}\n")


@dataclass
class ObjectRun:
    """One input object in flight: answers arrive out of order and are written in order."""
    seq: int
    obj: InputObject
    out_path: Path
    batches: int | None = None            # known once the object has been cut to its end
    written: int = 0
    records: int = 0
    answers: dict[int, tuple[Path, int]] = field(default_factory=dict)
    content_type: str | None = None
    finishing: bool = False
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    @property
    def complete(self) -> bool:
        return self.batches is not None and self.written == self.batches


class JobRunner:
    def __init__(self, name: str, spec: TransformSpec, store, storage: JobStorage, invoker, compute: Compute,
                 spool: Path, job_log: JobLog, held: "HeldBytes"):
        self.name, self.spec, self.store, self.storage = name, spec, store, storage
        self.invoker, self.compute, self.spool, self.log = invoker, compute, spool, job_log
        self.held = held
        self.workers = spec.instance_count * spec.max_concurrent
        self.processing = spec.processing            # None: records go to the model untouched
        self.queue: asyncio.Queue = asyncio.Queue(maxsize=self.workers)
        self.status_message = ""
        self.records_in_flight = 0             # answered records of objects not done yet (the store has the rest)
        self._holding = 0                      # bytes of ``held`` this job holds
        self.objects_done = 0
        self._failure: str | None = None
        self._tasks: set[asyncio.Task] = set()
        self._finishing: set[asyncio.Task] = set()
        self._failed = asyncio.Event()
        self._billed_to: float | None = None

    # --- the whole job ----------------------------------------------------------------------
    async def run(self) -> None:
        """Returns when every object is done; raises JobFailed, or CancelledError when stopped."""
        self.spool.mkdir(parents=True, exist_ok=True)
        try:
            objects = await self._plan()
            pending = [(o["seq"], InputObject(o["url"], o["rel"], o["size"])) for o in objects if o["state"] != "done"]
            if not pending:
                return
            await self._storage(self.storage.check_output, self.spec.output_path)
            self.status_message = "starting instances"
            first = self._spawn(self._fetch(*pending[0]))        # the first download overlaps the start
            try:
                await self.compute.start(on_wait=self._waiting)
            except Exception as exc:  # noqa: BLE001 - a model that cannot load fails the job, saying why
                raise JobFailed(f"ClientError: the model could not be loaded: {getattr(exc, 'message', exc)}") \
                    from None
            finally:
                self._billed_to = self.compute.started_at
            self.status_message = ""
            await self.store.mark_transform_started(self.name, time.time())
            self.log.write(self.spec.settings_line())
            self.log.write(f"{len(pending)} of {len(objects)} input objects to transform on "
                           f"{self.spec.instance_count} x {self.spec.instance_type}")
            await self._run_objects(pending, first)
        finally:
            await self._stop_tasks()
            await asyncio.shield(self._end_compute())
            await asyncio.to_thread(shutil.rmtree, self.spool, True)

    def _waiting(self, message: str) -> None:
        if message and message != self.status_message:
            self.log.write(message)
        self.status_message = message

    async def _plan(self) -> list[dict]:
        job = await self.store.get_transform_job(self.name)
        if not job["planned"]:
            found = await self._storage(self.storage.inputs, self.spec.input_uri, self.spec.data_type)
            await self.store.write_transform_plan(self.name, [(o.url, o.rel, o.size) for o in found])
        return await self.store.transform_objects(self.name)

    async def _storage(self, fn, *args):
        """A storage call; an unreachable store is retried, any other failure fails the job."""
        for pause in (*STORAGE_RETRIES, None):
            try:
                return await fn(*args)
            except JobInputError as exc:
                if not exc.retry or pause is None:
                    raise JobFailed(f"ClientError: {exc.message}") from None
                self.log.write(f"storage unreachable ({exc.message}); trying again in {pause:g} s")
                await asyncio.sleep(pause)

    async def _run_objects(self, pending: list[tuple[int, InputObject]], first: asyncio.Task) -> None:
        billing = self._spawn(self._bill_loop())
        producer = self._spawn(self._produce(pending, first))
        workers = [self._spawn(self._work()) for _ in range(self.workers)]
        failed = asyncio.ensure_future(self._failed.wait())
        try:
            await asyncio.wait([producer, failed], return_when=asyncio.FIRST_COMPLETED)
            if not self._failed.is_set():
                producer.result()                          # a bug in the producer: raised here
                joined = asyncio.ensure_future(self.queue.join())
                await asyncio.wait([joined, failed], return_when=asyncio.FIRST_COMPLETED)
                joined.cancel()
                while self._finishing and not self._failed.is_set():
                    await asyncio.wait(self._finishing | {failed}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            failed.cancel()
            for t in [billing, producer, *workers]:
                t.cancel()
        if self._failure is not None:
            raise JobFailed(self._failure)

    def _spawn(self, coro) -> asyncio.Task:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def fail(self, reason: str) -> None:
        if self._failure is None:
            self._failure = reason[:1024]
            self.log.write(f"job failed: {reason}")
            self._failed.set()

    async def _stop_tasks(self) -> None:
        tasks = list(self._tasks | self._finishing)
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._holding:                        # requests cut but never sent: their room goes back
            self.held.give(self._holding)
            self._holding = 0

    # --- reading and cutting ----------------------------------------------------------------
    async def _produce(self, pending: list[tuple[int, InputObject]], first: asyncio.Task | None = None) -> None:
        """Objects in order; each is fetched while the one before it is being cut and run, so
        its download is off the sandboxes' critical path (``first``: the first object's fetch,
        started while the instances came up).  At most two objects are spooled at once."""
        fetches = {0: first} if first is not None else {}
        try:
            for i, (seq, obj) in enumerate(pending):
                run = ObjectRun(seq, obj, self.spool / f"{seq}.out")
                fetch = fetches.pop(i, None) or self._spawn(self._fetch(seq, obj))
                if i + 1 < len(pending):
                    fetches[i + 1] = self._spawn(self._fetch(*pending[i + 1]))
                try:
                    await self._cut(run, *await fetch)
                except records.BadInput as exc:
                    self.fail(f"ClientError: {obj.url}: {exc.message}")
                    return
                except JobFailed as exc:
                    self.fail(exc.reason)
                    return
                if run.batches == 0:             # an empty object: an empty output
                    await self._deliver(run, None, None, 0)
        finally:
            for t in fetches.values():
                t.cancel()

    async def _fetch(self, seq: int, obj: InputObject) -> tuple[Path, Path, int]:
        """(where the object can be read, the spool file to remove after, its size)."""
        spooled = self.spool / f"{seq}.in"
        if obj.url.startswith("s3://"):
            self._room(obj.size or 0, obj.url)
        size = await self._storage(self.storage.fetch, obj, spooled)
        return self.storage.path_of(obj, spooled), spooled, size

    async def _cut(self, run: ObjectRun, path: Path, spooled: Path, size: int) -> None:
        self.log.write(f"transforming {run.obj.url} ({size} bytes)")
        open(run.out_path, "wb").close()
        fh = await asyncio.to_thread(open, path, "rb")
        try:
            gen = records.batches(records.chunks(fh, self.spec.compression == "Gzip"), self.spec.split_type,
                                  self.spec.batch_strategy, self.spec.max_payload_bytes)
            count = 0
            while (item := await asyncio.to_thread(self._next, gen)) is not None:
                await self._take(len(item[0].data))         # the gateway's memory for bodies is bounded
                await self.queue.put((run, *item))
                count += 1
        finally:
            fh.close()
            if path == spooled:
                spooled.unlink(missing_ok=True)
        run.batches = count
        if count and run.complete:           # every answer came in while the last batches were cut
            self._finish(run)

    async def _take(self, n: int) -> None:
        await self.held.take(n)
        self._holding += n

    def _give(self, n: int) -> None:
        self._holding -= n
        self.held.give(n)

    def _room(self, need: int, what: str) -> None:
        """Fail the job, rather than fill the disk, when the spool has no room for ``need`` more
        bytes and the reserve the store and the other jobs live on."""
        free = shutil.disk_usage(self.spool).free
        if free < need + SPOOL_RESERVE:
            raise JobFailed(f"InternalServerError: the gateway's disk has {free >> 20} MB free, too little to "
                            f"spool {what} ({need >> 20} MB) and keep {SPOOL_RESERVE >> 20} MB in reserve")

    def _next(self, gen) -> tuple[records.Batch, list | None] | None:
        """The next request of an object, its records filtered when the job asks (in a thread)."""
        batch = next(gen, None)
        if batch is None or self.processing is None:
            return None if batch is None else (batch, None)
        payload, parsed = self.processing.prepare(batch.data, batch.offset)
        return records.Batch(batch.seq, batch.offset, payload, len(parsed)), parsed

    # --- running requests ---------------------------------------------------------------------
    async def _work(self) -> None:
        while True:
            run, batch, parsed = await self.queue.get()
            try:
                if self._failure is None:
                    await self._request(run, batch, parsed)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - whatever it was (a full disk), the job ends saying so
                if not isinstance(exc, (OSError, JobFailed)):
                    log.exception("transform job %s: a request failed inside the gateway", self.name)
                self.fail(exc.reason if isinstance(exc, JobFailed) else
                          f"InternalServerError: {run.obj.url}: {type(exc).__name__}: {exc}")
            finally:
                self._give(len(batch.data))
                self.queue.task_done()

    async def _request(self, run: ObjectRun, batch: records.Batch, parsed: list | None = None) -> None:
        answer = self.spool / f"{run.seq}.{batch.seq}.ans"
        limit = max(MIN_ANSWER_BYTES, 4 * self.spec.max_payload_bytes)
        self._room(limit, f"an answer to {run.obj.url}")
        inv = Invocation(endpoint=self.name, body=batch.data, content_type=self.spec.content_type,
                         accept=self.spec.accept, request_id=str(uuid.uuid4()), response_file=str(answer),
                         max_bytes=limit, timeout_s=float(self.spec.timeout_s))
        label = f"/aws/sagemaker/TransformJobs/{self.name}"
        outcome = None
        for attempt in range(self.spec.max_retries + 1):
            outcome = await self.invoker.invoke_on(self.compute, inv, label)
            if outcome.ok:
                break
            self.log.write(f"{run.obj.url}: the request at byte offset {batch.offset} failed (attempt {attempt + 1} "
                           f"of {self.spec.max_retries + 1}): {outcome.error.code}: {outcome.error.message}")
        if not outcome.ok:
            answer.unlink(missing_ok=True)
            self.fail(f"ClientError: {run.obj.url}: the request at byte offset {batch.offset} ({batch.records} "
                      f"records) failed: {outcome.error.code}: {outcome.error.message}")
            return
        if run.content_type is None:
            run.content_type = outcome.result.content_type
        # The answer is joined and written in order by a task of its own: this worker's sandbox
        # takes its next request at once instead of waiting on the gateway's file work.
        self._track(self._land(run, batch, answer, parsed))

    def _track(self, coro) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._finishing.add(task)
        task.add_done_callback(self._finishing.discard)

    async def _land(self, run: ObjectRun, batch: records.Batch, answer: Path, parsed: list | None) -> None:
        try:
            if parsed is not None:
                await asyncio.to_thread(self._joined, answer, parsed, batch.offset)
            await self._deliver(run, batch.seq, answer, batch.records)
        except records.BadInput as exc:
            self.fail(f"ClientError: {run.obj.url}: {exc.message}")
        except Exception as exc:  # noqa: BLE001 - a full disk, a bug: the job ends saying so
            if not isinstance(exc, OSError):
                log.exception("transform job %s: writing an answer failed inside the gateway", self.name)
            self.fail(f"InternalServerError: {run.obj.url}: {type(exc).__name__}: {exc}")

    def _joined(self, answer: Path, parsed: list, offset: int) -> None:
        """Replace a request's answer with its records' joined and filtered output lines."""
        answer.write_bytes(self.processing.finish(answer.read_bytes(), parsed, offset))

    async def _deliver(self, run: ObjectRun, seq: int | None, answer: Path | None, nrecords: int) -> None:
        """Write the answers that are next in order to the object's output file."""
        async with run.lock:
            if seq is not None:
                run.answers[seq] = (answer, nrecords)
            ready = []
            while run.written + len(ready) in run.answers:
                ready.append(run.answers.pop(run.written + len(ready)))
            if ready:
                await asyncio.to_thread(_append, run.out_path, [p for p, _ in ready], self.spec.assemble_with)
                run.written += len(ready)
                run.records += sum(n for _, n in ready)
                self.records_in_flight += sum(n for _, n in ready)
            if run.complete:
                self._finish(run)

    def _finish(self, run: ObjectRun) -> None:
        if run.finishing:
            return
        run.finishing = True
        self._track(self._upload(run))

    async def _upload(self, run: ObjectRun) -> None:
        dest = self.storage.output_location(self.spec.output_path, run.obj.rel)
        try:
            await self._storage(self.storage.put_output, dest, run.out_path,
                                self.spec.accept or run.content_type)
        except JobFailed as exc:
            self.fail(exc.reason)
            return
        size = run.out_path.stat().st_size
        run.out_path.unlink(missing_ok=True)
        await self.store.finish_transform_object(self.name, run.seq, "done", run.records, size, time.time())
        self.records_in_flight -= run.records
        self.objects_done += 1
        self.log.write(f"wrote {dest.text} ({run.records} records, {size} bytes)")

    # --- instance time ------------------------------------------------------------------------
    async def _bill_loop(self) -> None:
        while True:
            await asyncio.sleep(CHECKPOINT_S)
            await self._bill(time.time())

    async def _bill(self, now: float) -> None:
        if self._billed_to is None or now <= self._billed_to:
            return
        start, self._billed_to = self._billed_to, now
        await self.store.add_transform_usage(self.name, self.spec.instance_type, self.spec.instance_count,
                                             start, now)

    async def _end_compute(self) -> None:
        await self.compute.close()
        with contextlib.suppress(Exception):
            await self._bill(time.time())


def _append(out_path: Path, answers: list[Path], assemble_with: str) -> None:
    with open(out_path, "ab") as out:
        for path in answers:
            if path is None:
                continue
            with open(path, "rb") as fh:
                last = b""
                while block := fh.read(1 << 20):
                    out.write(block)
                    last = block[-1:]
            if assemble_with == "Line" and last != b"\n":
                out.write(b"\n")
            os.unlink(path)
