"""Transform jobs: create, describe, list, stop -- and the background task that runs each one.

A job is a row in the store from the moment CreateTransformJob answers; its status moves
InProgress -> Completed | Failed, or Stopping -> Stopped, and only here.  A gateway that stops
(or is killed) leaves its running jobs InProgress: the next start resumes each at its first
object that is not done.  The SageMaker operations (``sagemaker/transform_jobs.py``) and the
admin API are thin layers over this class.
"""
from __future__ import annotations

import asyncio
import hashlib
import logging
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from gateway import errors
from gateway.batch import model as models
from gateway.batch.compute import Compute
from gateway.batch.runner import HeldBytes, JobFailed, JobLog, JobRunner
from gateway.batch.spec import TransformSpec, parse
from gateway.batch.storage import JobInputError, JobStorage
from gateway.sagemaker.shapes import tags_of
from gateway.serving.bundles import Limits

log = logging.getLogger("slimserve.batch")
FINAL = ("Completed", "Failed", "Stopped")


@dataclass
class Active:
    task: asyncio.Task
    runner: JobRunner | None = None
    message: str = "preparing"


class TransformJobs:
    def __init__(self, settings, store, catalog, storage: JobStorage, invoker, backend, manager):
        self.settings, self.store, self.catalog, self.storage = settings, store, catalog, storage
        self.invoker, self.backend, self.manager = invoker, backend, manager
        self.active: dict[str, Active] = {}
        self.closing = False
        self.held = HeldBytes(settings.transform_held_mb << 20)
        self.tags: dict[str, list] = {}              # job -> its tags (AddTags/ListTags by ARN read them here)

    def arn(self, name: str) -> str:
        return self.catalog.arn("transform-job", name)

    def log_path(self, name: str) -> Path:
        return self.settings.logs_dir / "transform-jobs" / f"{name}.log"

    # --- lifecycle ----------------------------------------------------------------------------
    async def load(self) -> None:
        """Resume the jobs an earlier run left InProgress, settle those it was stopping, and remove
        the work directories of every job that is not running any more."""
        running = set()
        for job in await self.store.list_transform_jobs():
            self.tags[job["name"]] = list(job["doc"].get("Tags") or job["doc"]["Request"].get("Tags") or [])
            if job["status"] == "Stopping":
                await self.store.set_transform_status(job["name"], "Stopped", time.time())
            elif job["status"] == "InProgress":
                log.info("resuming transform job %s", job["name"])
                running.add(_dir_name(job["name"]))
                self._launch(job["name"], self._spec(job["doc"]))
        root = self.settings.transform_dir
        for child in await asyncio.to_thread(lambda: list(root.iterdir()) if root.exists() else []):
            if child.name not in running:
                await asyncio.to_thread(shutil.rmtree, child, True)

    async def close(self) -> None:
        """Stop running jobs without ending them (they stay InProgress and resume next start)."""
        self.closing = True
        tasks = [a.task for a in self.active.values()]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _spec(self, doc: dict) -> TransformSpec:
        return parse(doc["Request"])

    # --- operations ---------------------------------------------------------------------------
    async def create(self, req: dict) -> dict:
        spec = parse(req)
        if not models.known(self.catalog, spec.model_name):
            raise errors.Invalid(f'Could not find model "{self.catalog.arn("model", spec.model_name)}".')
        if models.multi_model(self.catalog, spec.model_name):
            raise errors.Invalid(f"Model {spec.model_name} is a multi-model model: batch transform runs one model "
                                 "per job; create a model of the one you want to run.")
        need = spec.instance_count * spec.instance_memory_mb
        if need > self.manager.budget.capacity_mb:
            raise errors.Named(f"The job needs {spec.instance_count} x {spec.instance_type} ({need} MB), more than "
                               f"this host's memory budget of {self.manager.budget.capacity_mb} MB: use fewer or "
                               "smaller instances.", "ResourceLimitExceeded")
        if not spec.output_path.lower().startswith(("s3://", "https://")):
            try:
                self.storage.locate_output(spec.output_path)
            except JobInputError as exc:
                raise errors.Invalid(exc.message) from None
        now = round(time.time(), 3)
        doc = {"Request": req, "TransformJobArn": self.arn(spec.name), "Tags": tags_of(req.get("Tags"))}
        if not await self.store.insert_transform_job(spec.name, doc, now):
            raise errors.Named(f'Job name must be unique within an AWS account and region, and a job with this name '
                               f'already exists ({self.arn(spec.name)})', "ResourceInUse")
        self.tags[spec.name] = doc["Tags"]
        self._launch(spec.name, spec)
        return {"TransformJobArn": doc["TransformJobArn"]}

    def find(self, lowered: str) -> tuple[str, list] | None:
        """A job by its ARN's (lowercased) name: (name, tags)."""
        name = next((n for n in self.tags if n.lower() == lowered), None)
        return None if name is None else (name, self.tags[name])

    async def set_tags(self, name: str, tags: list) -> None:
        job = await self.get(name)
        doc = dict(job["doc"], Tags=tags)
        await self.store.set_transform_doc(name, doc)
        self.tags[name] = tags

    async def get(self, name: str) -> dict:
        job = await self.store.get_transform_job(name) if isinstance(name, str) else None
        if job is None:
            raise errors.NotFound(f"Could not find requested job with name {name}")
        return job

    async def describe(self, name: str) -> dict:
        return self.described(await self.get(name))

    def described(self, job: dict) -> dict:
        req, spec = job["doc"]["Request"], self._spec(job["doc"])
        out = {"TransformJobName": job["name"], "TransformJobArn": job["doc"]["TransformJobArn"],
               "TransformJobStatus": job["status"], "ModelName": spec.model_name,
               "MaxConcurrentTransforms": spec.max_concurrent, "MaxPayloadInMB": spec.max_payload_mb,
               "BatchStrategy": spec.batch_strategy,
               "ModelClientConfig": {"InvocationsTimeoutInSeconds": spec.timeout_s,
                                     "InvocationsMaxRetries": spec.max_retries},
               "Environment": spec.environment, "CreationTime": job["created"]}
        for key, members in KNOWN.items():          # what the shapes define, nothing a client added
            if isinstance(req.get(key), dict):
                out[key] = _known(req[key], members)
        if job["failure_reason"]:
            out["FailureReason"] = job["failure_reason"]
        if job["started"] is not None:
            out["TransformStartTime"] = job["started"]
        if job["ended"] is not None:
            out["TransformEndTime"] = job["ended"]
        return out

    async def summaries(self) -> list[dict]:
        out = []
        for job in await self.store.list_transform_jobs():
            s = {"TransformJobName": job["name"], "TransformJobArn": job["doc"]["TransformJobArn"],
                 "CreationTime": job["created"], "LastModifiedTime": job["modified"],
                 "TransformJobStatus": job["status"]}
            if job["ended"] is not None:
                s["TransformEndTime"] = job["ended"]
            if job["failure_reason"]:
                s["FailureReason"] = job["failure_reason"]
            out.append(s)
        return out

    async def stop(self, name: str) -> None:
        job = await self.store.get_transform_job(name) if isinstance(name, str) else None
        if job is None:
            raise errors.Named(f"Could not find requested job with name {name}", "ResourceNotFound")
        if job["status"] in FINAL:
            return                                       # as on AWS: stopping a finished job changes nothing
        await self.store.set_transform_status(name, "Stopping", time.time(), only_from=("InProgress",))
        active = self.active.get(name)
        if active is not None:
            active.task.cancel()
        else:
            await self.store.set_transform_status(name, "Stopped", time.time(), only_from=("Stopping",))

    async def progress(self, name: str) -> dict:
        """What the CLI's progress bar shows: objects and records done, and what the job waits for."""
        job = await self.get(name)
        out = dict(await self.store.transform_progress(name), status=job["status"],
                   failure_reason=job["failure_reason"], started=job["started"], ended=job["ended"],
                   created=job["created"])
        active = self.active.get(name)
        if active is not None:
            runner = active.runner
            out["message"] = runner.status_message if runner is not None else active.message
            out["sandboxes"] = runner.compute.sandboxes if runner is not None else 0
            if runner is not None:
                out["records_done"] += runner.records_in_flight
        return out

    # --- running ------------------------------------------------------------------------------
    def _launch(self, name: str, spec: TransformSpec) -> None:
        task = asyncio.get_running_loop().create_task(self._run(name, spec))
        self.active[name] = Active(task)
        task.add_done_callback(lambda _: self.active.pop(name, None))

    async def _run(self, name: str, spec: TransformSpec) -> None:
        work = self.settings.transform_dir / _dir_name(name)
        job_log = JobLog(self.log_path(name))
        compute = None
        try:
            try:
                await asyncio.to_thread(shutil.rmtree, work, True)
                bundle = await models.install_model(self.catalog, spec.model_name, work / "model",
                                                    Limits(max_bytes=self.settings.max_model_bytes))
                compute = Compute(name, self.backend, self.manager, spec.instance_type, spec.instance_count,
                                  spec.max_concurrent, spec.instance_memory_mb, float(spec.instance_vcpus), bundle,
                                  str(job_log.path), dict(spec.environment, **spec.sandbox_env()))
                runner = JobRunner(name, spec, self.store, self.storage, self.invoker, compute, work / "spool",
                                   job_log, self.held)
                self.active[name].runner = runner
                await runner.run()
            except JobFailed as exc:
                await self._end(name, "Failed", exc.reason)
            except errors.SlimserveError as exc:
                await self._end(name, "Failed", f"ClientError: {exc.message}")
            except asyncio.CancelledError:
                if not self.closing:
                    await asyncio.shield(self._end(name, "Stopped", None))
                raise
            except Exception as exc:  # noqa: BLE001 - a gateway bug still ends the job, saying so
                log.exception("transform job %s failed inside the gateway", name)
                await self._end(name, "Failed", f"InternalServerError: {type(exc).__name__}: {exc}")
            else:
                await self._end(name, "Completed", None)
        finally:
            if compute is not None:
                await asyncio.shield(compute.close())
            if not self.closing:
                await asyncio.shield(asyncio.to_thread(shutil.rmtree, work, True))

    async def _end(self, name: str, status: str, reason: str | None) -> None:
        job = await self.store.get_transform_job(name)
        if job is not None and job["status"] == "Stopping":
            status, reason = "Stopped", None              # a stop asked for wins over how the run ended
        await self.store.set_transform_status(name, status, time.time(), reason,
                                              only_from=("InProgress", "Stopping"))
        JobLog(self.log_path(name)).write(f"transform job {status.lower()}" + (f": {reason}" if reason else ""))


KNOWN = {
    "TransformInput": {"DataSource": {"S3DataSource": {"S3DataType": None, "S3Uri": None}}, "ContentType": None,
                       "CompressionType": None, "SplitType": None},
    "TransformOutput": {"S3OutputPath": None, "Accept": None, "AssembleWith": None, "KmsKeyId": None},
    "TransformResources": {"InstanceType": None, "InstanceCount": None, "VolumeKmsKeyId": None,
                           "TransformAmiVersion": None},
    "DataCaptureConfig": {"DestinationS3Uri": None, "KmsKeyId": None, "GenerateInferenceId": None},
    "DataProcessing": {"InputFilter": None, "OutputFilter": None, "JoinSource": None},
    "ExperimentConfig": {"ExperimentName": None, "TrialName": None, "TrialComponentDisplayName": None,
                         "RunName": None},
}


def _known(doc: dict, members: dict) -> dict:
    out = {}
    for key, inner in members.items():
        if key in doc and doc[key] is not None:
            out[key] = _known(doc[key], inner) if inner is not None and isinstance(doc[key], dict) else doc[key]
    return out


def _dir_name(name: str) -> str:
    """Job names differ in case where directories may not (names are unique case-insensitively on AWS)."""
    return f"{name.lower()}-{hashlib.sha1(name.encode()).hexdigest()[:6]}"
