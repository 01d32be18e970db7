"""The SageMaker control plane's resources: models, endpoint configs and endpoints.

Operations take the request members (already parsed JSON) and return the
response members, as botocore's service model for ``sagemaker`` defines them;
every failure is a ``gateway.errors`` error worded the way the real service words it
("Could not find endpoint "arn:..."." and so on).  Endpoints are served by the
same ``EndpointService`` as the CLI's: a SageMaker endpoint is an endpoint of
the gateway whose variants come from an endpoint config's production variants,
and endpoints deployed with the CLI show up here too.
"""
from __future__ import annotations

import asyncio
import logging
import os
import re
import time
from pathlib import Path
from urllib.parse import unquote, urlparse

from gateway.domain import EndpointSpec, VariantSpec
from gateway.errors import Conflict, Invalid, NotFound
from gateway.sagemaker.instances import instance_memory_mb
from gateway.sagemaker.shapes import (
    ENDPOINT_STATUSES,
    check_name,
    check_variant,
    invalid,
    list_page,
    page_token,
    tag_dict,
    tags_of,
    timestamp,
    token_offset,
)
from gateway.serving.endpoints import EndpointService

log = logging.getLogger("slimserve.sagemaker")

KINDS = {"model": "model", "endpoint-config": "endpoint configuration", "endpoint": "endpoint"}


def _now() -> float:
    return round(time.time(), 3)


class Catalog:
    def __init__(self, endpoints: EndpointService, store, account_id: str, region: str, local_image=None,
                 model_roots: tuple = (), state_dir=None):
        self.endpoints = endpoints
        # file:// and local ModelDataUrl are read only under these, never under the state dir
        self.model_roots = tuple(Path(r).resolve() for r in model_roots)
        self.state_dir = Path(state_dir).resolve() if state_dir is not None else None
        self.local_image = local_image        # docker backend: image -> whether it can run as the model's server
        self.store = store
        self.account_id, self.region = account_id, region
        self.models: dict[str, dict] = {}
        self.configs: dict[str, dict] = {}
        self.records: dict[str, dict] = {}        # SageMaker-level state of endpoints created through this API
        self._tasks: set[asyncio.Task] = set()

    async def load(self) -> None:
        for kind, name, doc in await self.store.load_resources():
            {"model": self.models, "endpoint-config": self.configs, "endpoint": self.records}[kind][name] = doc
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

    async def _save(self, kind: str, name: str, doc: dict) -> None:
        await self.store.put_resource(kind, name, doc)

    # --- models ---------------------------------------------------------------------------
    async def create_model(self, req: dict) -> dict:
        name = check_name(req, "ModelName")
        if name in self.models:
            raise self.exists("model", name)
        containers = req.get("Containers") or ([req["PrimaryContainer"]] if req.get("PrimaryContainer") else [])
        if req.get("PrimaryContainer") and req.get("Containers"):
            raise invalid("Specify either PrimaryContainer or Containers, not both.")
        if not containers:
            raise invalid("A model needs a PrimaryContainer (or Containers).")
        if len(containers) > 1:
            raise invalid("Inference pipelines of more than one container are not supported by slimserve; "
                          "give one container.")
        container = containers[0]
        if not isinstance(container, dict):
            raise invalid("A container definition must be an object.")
        env = container.get("Environment") or {}
        if not isinstance(env, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in env.items()):
            raise invalid("Environment must map strings to strings.")
        if container.get("ModelDataUrl") is not None:
            self.model_data_path(container["ModelDataUrl"])          # refuse what cannot be read now, not later
        tags = tags_of(req.get("Tags"))
        doc = {"ModelName": name, "ModelArn": self.arn("model", name), "CreationTime": _now(),
               "EnableNetworkIsolation": bool(req.get("EnableNetworkIsolation", False)), "Tags": tags}
        for key in ("PrimaryContainer", "Containers", "ExecutionRoleArn", "VpcConfig", "InferenceExecutionConfig"):
            if req.get(key) is not None:
                doc[key] = req[key]
        self.models[name] = doc
        await self._save("model", name, doc)
        return {"ModelArn": doc["ModelArn"]}

    def model_data_path(self, url: str) -> Path:
        """ModelDataUrl as a local path: a directory, model.tar.gz or .pkl, plain or file://."""
        if not isinstance(url, str) or not url:
            raise invalid("ModelDataUrl must be a non-empty string.")
        parsed = urlparse(url)
        if parsed.scheme == "file":
            path = Path(unquote(parsed.path))
        elif parsed.scheme in ("", None) or len(parsed.scheme) == 1:      # a path (or a Windows drive letter)
            path = Path(url)
        else:
            raise invalid(f"Could not find model data at {url}: slimserve reads model data from local paths "
                          "or file:// URLs only.")
        if not self._allowed(path) or not path.exists():      # one answer, so nothing learns what exists
            raise invalid(f"Could not find model data at {url}. Local model data is read only under a "
                          "--model-root the gateway was started with.")
        return Path(os.path.realpath(path))                   # what was checked is what is read

    def _allowed(self, path: Path) -> bool:
        real = Path(os.path.realpath(path))
        if self.state_dir is not None and (real == self.state_dir or self.state_dir in real.parents):
            return False
        return any(real == root or root in real.parents for root in self.model_roots)

    def describe_model(self, req: dict) -> dict:
        name = check_name(req, "ModelName")
        doc = self.models.get(name)
        if doc is None:
            raise self.not_found("model", name)
        return {k: v for k, v in doc.items() if k != "Tags"}

    def list_models(self, req: dict) -> dict:
        return list_page(req, list(self.models.values()), "ModelName", "Models",
                          lambda d: {"ModelName": d["ModelName"], "ModelArn": d["ModelArn"],
                                     "CreationTime": d["CreationTime"]}, ("Name", "CreationTime"))

    async def delete_model(self, req: dict) -> dict:
        name = check_name(req, "ModelName")
        if name not in self.models:
            raise self.not_found("model", name)
        del self.models[name]
        await self.store.delete_resource("model", name)
        return {}

    # --- endpoint configs --------------------------------------------------------------------
    async def create_endpoint_config(self, req: dict) -> dict:
        name = check_name(req, "EndpointConfigName")
        if name in self.configs:
            raise self.exists("endpoint-config", name)
        variants = req.get("ProductionVariants")
        if not isinstance(variants, list) or not 1 <= len(variants) <= 10:
            raise invalid("1 validation error detected: Value at 'productionVariants' failed to satisfy constraint: "
                          "Member must have length between 1 and 10")
        seen = set()
        for i, pv in enumerate(variants, start=1):
            check_variant(pv, i)
            if pv["VariantName"] in seen:
                raise invalid(f"Variant name {pv['VariantName']} appears more than once in ProductionVariants.")
            seen.add(pv["VariantName"])
        doc = {"EndpointConfigName": name, "EndpointConfigArn": self.arn("endpoint-config", name),
               "ProductionVariants": variants, "CreationTime": _now(), "Tags": tags_of(req.get("Tags"))}
        for key in ("DataCaptureConfig", "AsyncInferenceConfig", "KmsKeyId", "ExplainerConfig",
                    "ShadowProductionVariants", "ExecutionRoleArn", "VpcConfig", "EnableNetworkIsolation"):
            if req.get(key) is not None:
                doc[key] = req[key]
        self.configs[name] = doc
        await self._save("endpoint-config", name, doc)
        return {"EndpointConfigArn": doc["EndpointConfigArn"]}

    def describe_endpoint_config(self, req: dict) -> dict:
        name = check_name(req, "EndpointConfigName")
        doc = self.configs.get(name)
        if doc is None:
            raise self.not_found("endpoint-config", name)
        return {k: v for k, v in doc.items() if k != "Tags"}

    def list_endpoint_configs(self, req: dict) -> dict:
        return list_page(req, list(self.configs.values()), "EndpointConfigName", "EndpointConfigs",
                          lambda d: {"EndpointConfigName": d["EndpointConfigName"],
                                     "EndpointConfigArn": d["EndpointConfigArn"], "CreationTime": d["CreationTime"]},
                          ("Name", "CreationTime"))

    async def delete_endpoint_config(self, req: dict) -> dict:
        name = check_name(req, "EndpointConfigName")
        if name not in self.configs:
            raise self.not_found("endpoint-config", name)
        del self.configs[name]
        await self.store.delete_resource("endpoint-config", name)
        return {}

    # --- endpoints ------------------------------------------------------------------------
    async def _variants_of(self, config: dict) -> list[tuple[VariantSpec, Path]]:
        """The gateway variants (and their bundle sources) that an endpoint config asks for."""
        out = []
        for pv in config["ProductionVariants"]:
            model = self.models.get(pv["ModelName"])
            if model is None:
                raise self.not_found("model", pv["ModelName"])
            container = (model.get("Containers") or [model.get("PrimaryContainer")])[0]
            image = container.get("Image")
            own_server = bool(image and self.local_image and await asyncio.to_thread(self.local_image, image))
            if not container.get("ModelDataUrl") and not own_server:
                raise invalid(f"Model {model['ModelName']} has no ModelDataUrl and its Image is not a local image "
                              "the docker backend can run: slimserve serves model data (a model directory, "
                              "model.tar.gz or .pkl) or, with --backend docker, a SageMaker-contract image.")
            source = self.model_data_path(container["ModelDataUrl"]) if container.get("ModelDataUrl") else None
            env = dict(container.get("Environment") or {})
            isolate = bool(model.get("EnableNetworkIsolation") or config.get("EnableNetworkIsolation"))
            weight = float(pv.get("InitialVariantWeight", 1.0))
            if pv.get("ServerlessConfig"):
                sc = pv["ServerlessConfig"]
                v = VariantSpec(name=pv["VariantName"], memory_mb=sc["MemorySizeInMB"],
                                max_concurrency=sc["MaxConcurrency"], provisioned=sc.get("ProvisionedConcurrency") or 0,
                                weight=weight, env=env, network_isolation=isolate, model_name=model["ModelName"],
                                image=image if own_server else None)
            else:
                count = pv["InitialInstanceCount"]
                v = VariantSpec(name=pv["VariantName"], memory_mb=instance_memory_mb(pv["InstanceType"]),
                                max_concurrency=count, provisioned=count, weight=weight, env=env,
                                network_isolation=isolate, instance_type=pv["InstanceType"],
                                model_name=model["ModelName"], image=image if own_server else None)
            out.append((v, source))
        return out

    def _config(self, name: str) -> dict:
        config = self.configs.get(name)
        if config is None:
            raise self.not_found("endpoint-config", name)
        return config

    async def create_endpoint(self, req: dict) -> dict:
        name = check_name(req, "EndpointName")
        config_name = check_name(req, "EndpointConfigName")
        if name in self.endpoints.specs or name in self.records:
            raise self.exists("endpoint", name)
        variants = await self._variants_of(self._config(config_name))   # unknown models: refused now, like the service
        now = _now()
        rec = {"EndpointName": name, "EndpointArn": self.arn("endpoint", name), "EndpointConfigName": config_name,
               "EndpointStatus": "Creating", "CreationTime": now, "LastModifiedTime": now,
               "Tags": tags_of(req.get("Tags"))}
        self.records[name] = rec
        await self._save("endpoint", name, rec)
        self._background(self._deploy(name, variants, replace_existing=False))
        return {"EndpointArn": rec["EndpointArn"]}

    async def update_endpoint(self, req: dict) -> dict:
        name = check_name(req, "EndpointName")
        config_name = check_name(req, "EndpointConfigName")
        rec = self._record(name)
        if rec["EndpointStatus"] not in ("InService", "Failed"):
            raise Conflict(f'Cannot update in-progress endpoint "{rec["EndpointArn"]}".')
        variants = await self._variants_of(self._config(config_name))
        rec.update(EndpointStatus="Updating", LastModifiedTime=_now(), PendingConfig=config_name)
        rec.pop("FailureReason", None)
        self.records[name] = rec                  # a CLI endpoint gets a SageMaker record from now on
        await self._save("endpoint", name, rec)
        self._background(self._deploy(name, variants, replace_existing=name in self.endpoints.specs))
        return {"EndpointArn": rec["EndpointArn"]}

    async def _deploy(self, name: str, variants, replace_existing: bool) -> None:
        """Creating/Updating -> InService (blue/green: the new variants take traffic once loaded),
        or Failed with the reason the model could not load."""
        rec = self.records.get(name)
        try:
            await self.endpoints.put(name, variants, tags=tag_dict(rec["Tags"]) if rec else None,
                                     replace_existing=replace_existing)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - any failure ends the change; the record must say so
            if not isinstance(exc, (Invalid, Conflict, NotFound, OSError)):
                log.exception("endpoint %s failed to deploy", name)
            log.warning("endpoint %s failed to deploy: %s", name, exc)
            if rec is not None:
                updating = rec["EndpointStatus"] == "Updating" and replace_existing
                rec.update(EndpointStatus="InService" if updating else "Failed", LastModifiedTime=_now(),
                           FailureReason=(f"update to {rec.get('PendingConfig')} failed, the previous config keeps "
                                          f"serving: {exc}" if updating else str(exc))[:1024])
                rec.pop("PendingConfig", None)
                await self._save("endpoint", name, rec)
            return
        if rec is not None:
            pending = rec.pop("PendingConfig", None)
            if pending:
                rec["EndpointConfigName"] = pending
            rec.update(EndpointStatus="InService", LastModifiedTime=_now())
            rec.pop("FailureReason", None)
            await self._save("endpoint", name, rec)

    def _background(self, coro) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _record(self, name: str) -> dict:
        """The SageMaker view of an endpoint; endpoints deployed with the CLI get one on the fly."""
        rec = self.records.get(name)
        if rec is not None:
            return rec
        spec = self.endpoints.specs.get(name)
        if spec is None:
            raise self.not_found("endpoint", name)
        return {"EndpointName": name, "EndpointArn": self.arn("endpoint", name), "EndpointStatus": "InService",
                "CreationTime": round(spec.created, 3), "LastModifiedTime": round(spec.updated, 3),
                "Tags": [{"Key": k, "Value": v} for k, v in spec.tags.items()]}

    def describe_endpoint(self, req: dict) -> dict:
        name = check_name(req, "EndpointName")
        rec = self._record(name)
        out = {k: v for k, v in rec.items() if k not in ("Tags", "PendingConfig")}
        spec = self.endpoints.specs.get(name)
        if spec is not None:
            out["ProductionVariants"] = [self._summary(v, name) for v in spec.variants]
        elif rec.get("EndpointConfigName") in self.configs:
            out["ProductionVariants"] = [
                {"VariantName": pv["VariantName"], "DesiredWeight": float(pv.get("InitialVariantWeight", 1.0)),
                 "VariantStatus": [{"Status": "Creating", "StartTime": rec["CreationTime"]}]}
                for pv in self.configs[rec["EndpointConfigName"]]["ProductionVariants"]]
        config = self.configs.get(rec.get("EndpointConfigName", ""))
        if config is not None:
            if config.get("DataCaptureConfig"):
                dc = config["DataCaptureConfig"]
                out["DataCaptureConfig"] = {
                    "EnableCapture": bool(dc.get("EnableCapture", True)), "CaptureStatus": "Stopped",
                    "CurrentSamplingPercentage": int(dc.get("InitialSamplingPercentage", 0)),
                    "DestinationS3Uri": dc.get("DestinationS3Uri", ""), "KmsKeyId": dc.get("KmsKeyId", "")}
            if config.get("AsyncInferenceConfig"):
                out["AsyncInferenceConfig"] = config["AsyncInferenceConfig"]
        if rec.get("PendingConfig"):
            out["PendingDeploymentSummary"] = {"EndpointConfigName": rec["PendingConfig"],
                                               "StartTime": rec["LastModifiedTime"]}
        return out

    def _summary(self, v: VariantSpec, endpoint: str) -> dict:
        pool = self.endpoints.manager.pool(endpoint, v.name)
        live = len(pool.live) if pool is not None else 0
        out = {"VariantName": v.name, "CurrentWeight": float(v.weight), "DesiredWeight": float(v.weight)}
        image = self._image(v.model_name)
        if image:
            out["DeployedImages"] = [{"SpecifiedImage": image, "ResolvedImage": image}]
        if v.instance_type:
            out.update(CurrentInstanceCount=live, DesiredInstanceCount=v.provisioned)
        else:
            sc = {"MemorySizeInMB": v.memory_mb, "MaxConcurrency": v.max_concurrency}
            if v.provisioned:
                sc["ProvisionedConcurrency"] = v.provisioned
            out.update(CurrentServerlessConfig=sc, DesiredServerlessConfig=dict(sc))
        return out

    def _image(self, model_name: str | None) -> str | None:
        model = self.models.get(model_name or "")
        if model is None:
            return None
        container = (model.get("Containers") or [model.get("PrimaryContainer") or {}])[0]
        return container.get("Image")

    def list_endpoints(self, req: dict) -> dict:
        status = req.get("StatusEquals")
        if status is not None and status not in ENDPOINT_STATUSES:
            raise invalid(f"1 validation error detected: Value '{status}' at 'statusEquals' failed to satisfy "
                          f"constraint: Member must satisfy enum value set: [{', '.join(ENDPOINT_STATUSES)}]")
        names = set(self.records) | set(self.endpoints.specs)
        docs = [self._record(n) for n in names]
        if status:
            docs = [d for d in docs if d["EndpointStatus"] == status]
        for key, op in (("LastModifiedTimeBefore", "lt"), ("LastModifiedTimeAfter", "gt")):
            if req.get(key) is not None:
                t = timestamp(req[key], key)
                docs = [d for d in docs if (d["LastModifiedTime"] < t if op == "lt" else d["LastModifiedTime"] > t)]
        return list_page(req, docs, "EndpointName", "Endpoints",
                          lambda d: {k: d[k] for k in ("EndpointName", "EndpointArn", "CreationTime",
                                                       "LastModifiedTime", "EndpointStatus")},
                          ("Name", "CreationTime", "Status"))

    async def update_weights(self, req: dict) -> dict:
        name = check_name(req, "EndpointName")
        rec = self._record(name)
        spec: EndpointSpec | None = self.endpoints.specs.get(name)
        if spec is None or rec["EndpointStatus"] not in ("InService",):
            raise Conflict(f'Cannot update in-progress endpoint "{rec["EndpointArn"]}".')
        wanted = req.get("DesiredWeightsAndCapacities")
        if not isinstance(wanted, list) or not wanted:
            raise invalid("1 validation error detected: Value at 'desiredWeightsAndCapacities' failed to satisfy "
                          "constraint: Member must have length greater than or equal to 1")
        changes: dict[str, dict] = {}
        for item in wanted:
            vname = item.get("VariantName")
            v = spec.variant(vname) if isinstance(vname, str) else None
            if v is None:
                raise invalid(f"The variant name(s) [{vname}] is/are not present in the endpoint {name}.")
            ch: dict = {}
            if item.get("DesiredWeight") is not None:
                if not isinstance(item["DesiredWeight"], (int, float)) or item["DesiredWeight"] < 0:
                    raise invalid(f"DesiredWeight of {vname} must be a number >= 0.")
                ch["weight"] = float(item["DesiredWeight"])
            if item.get("DesiredInstanceCount") is not None:
                if not v.instance_type:
                    raise invalid(f"Variant {vname} is serverless: change it with ServerlessUpdateConfig.")
                count = item["DesiredInstanceCount"]
                if not isinstance(count, int) or count < 1:
                    raise invalid(f"DesiredInstanceCount of {vname} must be at least 1.")
                ch.update(provisioned=count, max_concurrency=count)
            if item.get("ServerlessUpdateConfig"):
                if v.instance_type:
                    raise invalid(f"Variant {vname} runs on instances: change it with DesiredInstanceCount.")
                su = item["ServerlessUpdateConfig"]
                if su.get("MaxConcurrency") is not None:
                    ch["max_concurrency"] = su["MaxConcurrency"]
                if su.get("ProvisionedConcurrency") is not None:
                    ch["provisioned"] = su["ProvisionedConcurrency"]
            changes[vname] = ch
        if sum(changes.get(v.name, {}).get("weight", v.weight) for v in spec.variants) <= 0:
            raise invalid("At least one variant must have a weight greater than 0.")
        try:
            await self.endpoints.set_variants(name, changes)
        except Invalid as exc:
            raise invalid(str(exc)) from None
        if name in self.records:
            rec["LastModifiedTime"] = _now()
            await self._save("endpoint", name, rec)
        return {"EndpointArn": rec["EndpointArn"]}

    async def delete_endpoint(self, req: dict) -> dict:
        name = check_name(req, "EndpointName")
        rec = self._record(name)
        if rec["EndpointStatus"] in ("Creating", "Updating"):
            raise Conflict(f'Cannot update in-progress endpoint "{rec["EndpointArn"]}".')
        if name in self.endpoints.specs:
            await self.endpoints.delete(name)
        if self.records.pop(name, None) is not None:
            await self.store.delete_resource("endpoint", name)
        return {}

    # --- tags -------------------------------------------------------------------------------
    def _resource(self, req: dict) -> tuple[str, str, list]:
        arn = req.get("ResourceArn")
        m = re.match(rf"^arn:aws[a-z-]*:sagemaker:{re.escape(self.region)}:{self.account_id}:"
                     r"(model|endpoint-config|endpoint)/(.+)$", arn or "")
        if m is None:
            raise invalid(f"Invalid ResourceArn {arn!r}: expected an ARN of a model, endpoint config or endpoint "
                          f"in {self.region} of account {self.account_id}.")
        kind, lowered = m.group(1), m.group(2)
        table = {"model": self.models, "endpoint-config": self.configs}.get(kind)
        if table is not None:
            name = next((n for n in table if n.lower() == lowered), None)
            if name is None:
                raise invalid(f'Could not find {KINDS[kind]} "{arn}".')
            return kind, name, table[name]["Tags"]
        name = next((n for n in set(self.records) | set(self.endpoints.specs) if n.lower() == lowered), None)
        if name is None:
            raise invalid(f'Could not find endpoint "{arn}".')
        return kind, name, self._record(name)["Tags"]

    async def _set_tags(self, kind: str, name: str, tags: list) -> None:
        if kind == "endpoint":
            if name in self.records:
                self.records[name]["Tags"] = tags
                await self._save("endpoint", name, self.records[name])
            if name in self.endpoints.specs:                       # bills group costs by these
                await self.endpoints.set_tags(name, tag_dict(tags))
        else:
            table = self.models if kind == "model" else self.configs
            table[name]["Tags"] = tags
            await self._save(kind, name, table[name])

    async def add_tags(self, req: dict) -> dict:
        kind, name, tags = self._resource(req)
        new = tags_of(req.get("Tags"))
        merged = {t["Key"]: t["Value"] for t in tags}
        merged.update({t["Key"]: t["Value"] for t in new})
        if len(merged) > 50:
            raise invalid("A resource can have at most 50 tags.")
        await self._set_tags(kind, name, [{"Key": k, "Value": v} for k, v in merged.items()])
        return {"Tags": new}

    def list_tags(self, req: dict) -> dict:
        _, _, tags = self._resource(req)
        start = token_offset(req.get("NextToken"))
        size = req.get("MaxResults") or 50
        page = tags[start:start + size]
        out = {"Tags": page}
        if start + size < len(tags):
            out["NextToken"] = page_token(start + size)
        return out

    async def delete_tags(self, req: dict) -> dict:
        kind, name, tags = self._resource(req)
        keys = req.get("TagKeys")
        if not isinstance(keys, list) or not keys:
            raise invalid("1 validation error detected: Value at 'tagKeys' failed to satisfy constraint: "
                          "Member must have length greater than or equal to 1")
        await self._set_tags(kind, name, [t for t in tags if t["Key"] not in set(keys)])
        return {}

    # --- listing ------------------------------------------------------------------------------
