"""The SageMaker control plane's shared records: models, endpoint configs and endpoints
(each resource family's operations live in its own module), their ARNs, where model data
may be read from, and the background changes in flight.

Operations take the request members (already parsed JSON) and return the response members,
as botocore's service model for ``sagemaker`` defines them; every failure is a
``gateway.errors`` error worded the way the real service words it ("Could not find endpoint
"arn:..."." and so on).  ``api.operations()`` is the table the JSON 1.1 API dispatches on.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass

from gateway.data.locations import Location
from gateway.data.plane import DataPlane
from gateway.errors import BundleRejected, Conflict, NotFound
from gateway.multimodel.source import locate_prefix
from gateway.sagemaker import synthesized
from gateway.sagemaker.shapes import invalid
from gateway.serving.bundles import Limits, off_loop, verify_model_data
from gateway.serving.endpoints import EndpointService

log = logging.getLogger("slimserve.sagemaker")

SUBMIT_ENV = "SAGEMAKER_SUBMIT_DIRECTORY"
KINDS = {"model": "model", "endpoint-config": "endpoint configuration", "endpoint": "endpoint"}


@dataclass(frozen=True)
class ModelSource:
    """Where a model's data (or code) is: a location, the ETag it must have, whether it is a prefix."""
    location: Location
    etag: str | None = None
    prefix: bool = False


def now() -> float:
    return round(time.time(), 3)


class Catalog:
    def __init__(self, endpoints: EndpointService, store, account_id: str, region: str, data: DataPlane,
                 can_run_image=None, max_model_bytes: int | None = None):
        self.endpoints = endpoints
        self.data = data                      # where ModelDataUrl is read from (S3, or local under the model roots)
        self.max_model_bytes = max_model_bytes
        self.can_run_image = can_run_image    # image -> whether the backend can serve it as the model's server
        self.store = store
        self.account_id, self.region = account_id, region
        self.models: dict[str, dict] = {}
        self.configs: dict[str, dict] = {}
        self.records: dict[str, dict] = {}        # SageMaker-level state of endpoints created through this API
        self._tasks: set[asyncio.Task] = set()
        self.on_endpoint_delete: list = []        # (before, after) around DeleteEndpoint: async (name) or None

    async def load(self) -> None:
        for kind, name, doc in await self.store.load_resources():
            self._table(kind)[name] = doc
        for name, rec in self.records.items():          # a restart interrupted a change: settle it
            if rec["EndpointStatus"] in ("Creating", "Updating", "Deleting"):
                rec.pop("PendingConfig", None)
                rec["EndpointStatus"] = "InService" if name in self.endpoints.specs else "Failed"
                if rec["EndpointStatus"] == "Failed":
                    rec["FailureReason"] = "the gateway restarted while the endpoint was being created"

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()

    # --- names and ARNs ------------------------------------------------------------------
    def arn(self, kind: str, name: str) -> str:
        return f"arn:aws:sagemaker:{self.region}:{self.account_id}:{kind}/{name.lower()}"

    def not_found(self, kind: str, name: str) -> NotFound:
        return NotFound(f'Could not find {KINDS[kind]} "{self.arn(kind, name)}".')

    def exists(self, kind: str, name: str) -> Conflict:
        return Conflict(f'Cannot create already existing {KINDS[kind]} "{self.arn(kind, name)}".')

    async def save(self, kind: str, name: str, doc: dict) -> None:
        await self.store.put_resource(kind, name, doc)

    async def put(self, kind: str, name: str, doc: dict, req: dict, optional: tuple = ()) -> dict:
        """Keep ``doc``, with those members of ``req`` named in ``optional`` that were given, and save it."""
        doc.update({k: req[k] for k in optional if req.get(k) is not None})
        self._table(kind)[name] = doc
        await self.save(kind, name, doc)
        return doc

    def _table(self, kind: str) -> dict[str, dict]:
        return {"model": self.models, "endpoint-config": self.configs, "endpoint": self.records}[kind]

    def cli_endpoint(self, name: str):
        """The spec of an endpoint deployed with the CLI (one the SageMaker API has no record of)."""
        return self.endpoints.specs.get(name) if name not in self.records else None

    def doc(self, kind: str, name: str) -> dict | None:
        """A model or config: its record, else the view a CLI endpoint of that name stands on."""
        doc = self._table(kind).get(name)
        if doc is None and (spec := self.cli_endpoint(name)) is not None:
            make = synthesized.model_doc if kind == "model" else synthesized.config_doc
            doc = make(self.arn(kind, name), spec)
        return doc

    def docs(self, kind: str) -> list[dict]:
        """Every model or config, a CLI endpoint's views among them."""
        table = self._table(kind)
        views = [self.doc(kind, n) for n in self.endpoints.specs if n not in table and n not in self.records]
        return list(table.values()) + views

    def described(self, kind: str, name: str) -> dict:
        """A model's or config's record as Describe* returns it (its tags are ListTags')."""
        doc = self.doc(kind, name)
        if doc is None:
            raise self.not_found(kind, name)
        return {k: v for k, v in doc.items() if k != "Tags"}

    async def delete(self, kind: str, name: str) -> dict:
        table = self._table(kind)
        if name not in table and self.cli_endpoint(name) is not None:
            raise invalid(f"{KINDS[kind].capitalize()} {name} is the view of endpoint {name}, which was deployed "
                          "with the slimserve CLI: delete the endpoint instead.")
        if name not in table:
            raise self.not_found(kind, name)
        del table[name]
        await self.store.delete_resource(kind, name)
        return {}

    def submit_directory(self, container: dict) -> ModelSource | None:
        """Where the model's source code is, when SAGEMAKER_SUBMIT_DIRECTORY names one outside the
        model data (the SageMaker Python SDK uploads it as sourcedir.tar.gz); None when there is
        none, or it is a path inside the container (/opt/ml/model/code: already in the model data)."""
        where = (container.get("Environment") or {}).get(SUBMIT_ENV)
        if not where or where.startswith("/opt/ml/"):
            return None
        return ModelSource(self.data.locate(where, SUBMIT_ENV))

    def is_multi_model(self, model_name: str) -> bool:
        model = self.models.get(model_name) or {}
        container = (model.get("Containers") or [model.get("PrimaryContainer") or {}])[0]
        return container.get("Mode") == "MultiModel"

    def multi_model(self, container: dict) -> tuple[str, bool] | None:
        """A MultiModel container's (prefix, whether loaded models are cached); None for a single
        model.  The prefix must be one this gateway may read: an S3 prefix, or a directory under
        a --model-root."""
        mode = container.get("Mode", "SingleModel")
        if mode not in ("SingleModel", "MultiModel"):
            raise invalid(f"1 validation error detected: Value '{mode}' at 'primaryContainer.mode' failed to satisfy "
                          "constraint: Member must satisfy enum value set: [SingleModel, MultiModel]")
        config = container.get("MultiModelConfig") or {}
        setting = config.get("ModelCacheSetting", "Enabled") if isinstance(config, dict) else None
        if setting not in ("Enabled", "Disabled"):
            raise invalid(f"1 validation error detected: Value '{setting}' at 'primaryContainer.multiModelConfig."
                          "modelCacheSetting' failed to satisfy constraint: Member must satisfy enum value set: "
                          "[Enabled, Disabled]")
        if mode == "SingleModel":
            return None
        url = container.get("ModelDataUrl")
        if not isinstance(url, str) or container.get("ModelDataSource") is not None:
            raise invalid("A MultiModel container needs ModelDataUrl: the S3 prefix (or local directory) of its "
                          "models; ModelDataSource is not supported for multi-model endpoints.")
        locate_prefix(self.data, url)
        return url, setting == "Enabled"

    def model_source(self, container: dict) -> ModelSource | None:
        """Where a container's model data is: ModelDataUrl (an object or a local path), or
        ModelDataSource.S3DataSource (an S3Object, compressed or not, or an uncompressed S3Prefix
        whose objects are the model directory); None when it has neither."""
        url, source = container.get("ModelDataUrl"), container.get("ModelDataSource")
        if url is not None and source is not None:
            raise invalid("Specify either ModelDataUrl or ModelDataSource, not both.")
        if source is None:
            return ModelSource(self.data.locate(url)) if url is not None else None
        s3 = source.get("S3DataSource") if isinstance(source, dict) else None
        if not isinstance(s3, dict):
            raise invalid("ModelDataSource needs an S3DataSource.")
        data_type, compression, uri = s3.get("S3DataType"), s3.get("CompressionType"), s3.get("S3Uri")
        if data_type not in ("S3Prefix", "S3Object"):
            raise invalid(f"1 validation error detected: Value '{data_type}' at 'S3DataType' failed to satisfy "
                          "constraint: Member must satisfy enum value set: [S3Prefix, S3Object]")
        if compression not in ("None", "Gzip"):
            raise invalid(f"1 validation error detected: Value '{compression}' at 'CompressionType' failed to "
                          "satisfy constraint: Member must satisfy enum value set: [None, Gzip]")
        if data_type == "S3Prefix" and compression != "None":
            raise invalid("S3DataType S3Prefix takes CompressionType None: a compressed model is one S3Object.")
        loc = self.data.locate(uri, "ModelDataSource.S3DataSource.S3Uri")
        if loc.scheme != "s3":
            raise invalid(f"ModelDataSource.S3DataSource.S3Uri must be an s3:// URI, not {uri}.")
        etag = s3.get("ETag")
        return ModelSource(loc, etag if isinstance(etag, str) and etag else None, prefix=data_type == "S3Prefix")

    @contextlib.asynccontextmanager
    async def fetched(self, source: ModelSource):
        """The model data (or code) as a local path for the ``with`` block."""
        async with self.data.local(source.location, max_bytes=self.max_model_bytes, etag=source.etag,
                                   prefix=source.prefix) as path:
            yield path

    async def check_model_data(self, source: ModelSource, image: str | None) -> None:
        """CreateModel's check of the model data: the location may be read, the objects are there
        (and now in the model cache), and an archive reads to its end; refused with the service's wording."""
        limits = Limits(max_bytes=self.max_model_bytes)
        async with self.fetched(source) as path:
            try:
                await off_loop(verify_model_data, path, limits, raw_ok=bool(image))
            except BundleRejected as exc:
                raise BundleRejected(f"The model data at {source.location.text} cannot be served: "
                                     f"{exc.message}") from None

    def background(self, coro) -> asyncio.Task:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def async_config(self, endpoint: str) -> dict | None:
        """The AsyncInferenceConfig an endpoint was created with (None: a synchronous one).  The
        endpoint keeps its own copy: deleting or replacing its endpoint config changes nothing."""
        rec = self.records.get(endpoint)
        if rec is None or endpoint not in self.endpoints.specs:
            return None
        if "AsyncInferenceConfig" in rec:
            return rec["AsyncInferenceConfig"] or None
        config = self.configs.get(rec.get("EndpointConfigName", ""))     # a record from before the copy
        return (config or {}).get("AsyncInferenceConfig") or None

    def endpoint_record(self, name: str) -> dict:
        """The SageMaker view of an endpoint; endpoints deployed with the CLI get one on the fly."""
        rec = self.records.get(name)
        if rec is not None:
            return rec
        spec = self.endpoints.specs.get(name)
        if spec is None:
            raise self.not_found("endpoint", name)
        return {"EndpointName": name, "EndpointArn": self.arn("endpoint", name), "EndpointConfigName": name,
                "EndpointStatus": "InService",
                "CreationTime": round(spec.created, 3), "LastModifiedTime": round(spec.updated, 3),
                "Tags": [{"Key": k, "Value": v} for k, v in spec.tags.items()]}
