"""SageMaker endpoints: CreateEndpoint, UpdateEndpoint (blue/green), DescribeEndpoint,
ListEndpoints, UpdateEndpointWeightsAndCapacities and DeleteEndpoint.

A SageMaker endpoint is an endpoint of the gateway's ``EndpointService`` whose variants come
from an endpoint config's production variants; endpoints deployed with the CLI show up here too.
Creating and updating run in the background: the record says Creating/Updating until the new
variants have loaded, then InService, or Failed with the reason.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging

from gateway.config import MAX_CONCURRENCY_RANGE
from gateway.domain import EndpointSpec, VariantSpec
from gateway.errors import Conflict, Invalid, NotFound, Unavailable
from gateway.sagemaker.catalog import Catalog, ModelSource, now
from gateway.sagemaker.instances import instance_memory_mb
from gateway.sagemaker.shapes import ENDPOINT_STATUSES, check_name, invalid, list_page, tag_dict, tags_of

log = logging.getLogger("slimserve.sagemaker")
SETTLE_S = 2.0     # CreateEndpoint/UpdateEndpoint wait this long for a quick model to be InService already


class Endpoints:
    def __init__(self, catalog: Catalog):
        self.c = catalog

    async def variants_of(self, config: dict) -> list[tuple[VariantSpec, ModelSource | None, ModelSource | None]]:
        """The gateway variants that an endpoint config asks for, with where their model data and
        (SAGEMAKER_SUBMIT_DIRECTORY) source code are."""
        out = []
        for pv in config["ProductionVariants"]:
            model = self.c.models.get(pv["ModelName"])
            if model is None:
                raise self.c.not_found("model", pv["ModelName"])
            container = (model.get("Containers") or [model.get("PrimaryContainer")])[0]
            image = container.get("Image")
            multi = self.c.multi_model(container)        # served by slimserve's own workers, whatever the image
            if multi and pv.get("ServerlessConfig"):
                raise invalid(f"Model {model['ModelName']} is a MultiModel model: serverless variants do not "
                              "support multi-model endpoints; use an InstanceType.")
            own_server = bool(not multi and image and self.c.can_run_image
                              and await asyncio.to_thread(self.c.can_run_image, image))
            source = None if multi else self.c.model_source(container)
            if source is None and not own_server and not multi:
                raise invalid(f"Model {model['ModelName']} has no ModelDataUrl and its Image is not a local image "
                              "the docker backend can run: slimserve serves model data (a model directory, "
                              "model.tar.gz or .pkl) or, with --backend docker, a SageMaker-contract image.")
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
            if multi:
                v.model_prefix, v.model_cache = multi
            out.append((v, source, None if own_server else self.c.submit_directory(container)))
        return out

    def _config(self, name: str) -> dict:
        config = self.c.configs.get(name)
        if config is None:
            raise self.c.not_found("endpoint-config", name)
        return config

    async def create_endpoint(self, req: dict) -> dict:
        name = check_name(req, "EndpointName")
        config_name = check_name(req, "EndpointConfigName")
        if name in self.c.endpoints.specs or name in self.c.records:
            raise self.c.exists("endpoint", name)
        variants = await self.variants_of(self._config(config_name))   # unknown models: refused now, like the service
        t = now()
        rec = {"EndpointName": name, "EndpointArn": self.c.arn("endpoint", name), "EndpointConfigName": config_name,
               "EndpointStatus": "Creating", "CreationTime": t, "LastModifiedTime": t,
               "Tags": tags_of(req.get("Tags")),
               "AsyncInferenceConfig": self._config(config_name).get("AsyncInferenceConfig")}
        self.c.records[name] = rec
        await self.c.save("endpoint", name, rec)
        await _settle_briefly(self.c.background(self._deploy(name, variants, replace_existing=False)))
        return {"EndpointArn": rec["EndpointArn"]}

    async def update_endpoint(self, req: dict) -> dict:
        name = check_name(req, "EndpointName")
        config_name = check_name(req, "EndpointConfigName")
        rec = self.c.endpoint_record(name)
        if rec["EndpointStatus"] not in ("InService", "Failed"):
            raise Conflict(f'Cannot update in-progress endpoint "{rec["EndpointArn"]}".')
        new_config = self._config(config_name)
        old_async = self.c.async_config(name) if name in self.c.records else None
        if old_async and not new_config.get("AsyncInferenceConfig"):
            raise invalid(f"Endpoint {name} has an AsyncInferenceConfig, and an update cannot remove it: endpoint "
                          f"config {config_name} has none. Create a new endpoint for synchronous inference.")
        if new_config.get("AsyncInferenceConfig") and not old_async:
            raise invalid(f"Endpoint {name} is a synchronous endpoint; an update cannot add an "
                          f"AsyncInferenceConfig (endpoint config {config_name} has one).")
        variants = await self.variants_of(new_config)
        rec.update(EndpointStatus="Updating", LastModifiedTime=now(), PendingConfig=config_name)
        rec.pop("FailureReason", None)
        self.c.records[name] = rec                  # a CLI endpoint gets a SageMaker record from now on
        await self.c.save("endpoint", name, rec)
        await _settle_briefly(self.c.background(
            self._deploy(name, variants, replace_existing=name in self.c.endpoints.specs)))
        return {"EndpointArn": rec["EndpointArn"]}

    async def _deploy(self, name: str, variants, replace_existing: bool) -> None:
        """Creating/Updating -> InService (blue/green: the new variants take traffic once loaded),
        or Failed with the reason the model could not load."""
        rec = self.c.records.get(name)
        try:
            async with contextlib.AsyncExitStack() as fetched:       # S3 model data: here, and kept while installed
                async def here(source):
                    return None if source is None else await fetched.enter_async_context(self.c.fetched(source))

                local = [(v, await here(loc)) for v, loc, _ in variants]
                code = {v.name: await here(src) for v, _, src in variants if src is not None}
                await self.c.endpoints.put(name, local, tags=tag_dict(rec["Tags"]) if rec else None,
                                           replace_existing=replace_existing, code=code)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - any failure ends the change; the record must say so
            if not isinstance(exc, (Invalid, Conflict, NotFound, Unavailable, OSError)):
                log.exception("endpoint %s failed to deploy", name)
            log.warning("endpoint %s failed to deploy: %s", name, exc)
            if rec is not None:
                updating = rec["EndpointStatus"] == "Updating" and replace_existing
                rec.update(EndpointStatus="InService" if updating else "Failed", LastModifiedTime=now(),
                           FailureReason=(f"update to {rec.get('PendingConfig')} failed, the previous config keeps "
                                          f"serving: {exc}" if updating else str(exc))[:1024])
                rec.pop("PendingConfig", None)
                await self.c.save("endpoint", name, rec)
            return
        if rec is not None:
            pending = rec.pop("PendingConfig", None)
            if pending:
                rec["EndpointConfigName"] = pending
                if pending in self.c.configs:          # an async endpoint stays one (UpdateEndpoint's rule)
                    rec["AsyncInferenceConfig"] = self.c.configs[pending].get("AsyncInferenceConfig")
            rec.update(EndpointStatus="InService", LastModifiedTime=now())
            rec.pop("FailureReason", None)
            await self.c.save("endpoint", name, rec)

    def describe_endpoint(self, req: dict) -> dict:
        name = check_name(req, "EndpointName")
        rec = self.c.endpoint_record(name)
        out = {k: v for k, v in rec.items() if k not in ("Tags", "PendingConfig", "AsyncInferenceConfig")}
        spec = self.c.endpoints.specs.get(name)
        if spec is not None:
            out["ProductionVariants"] = [self._summary(v, name) for v in spec.variants]
        elif rec.get("EndpointConfigName") in self.c.configs:
            out["ProductionVariants"] = [
                {"VariantName": pv["VariantName"], "DesiredWeight": float(pv.get("InitialVariantWeight", 1.0)),
                 "VariantStatus": [{"Status": "Creating", "StartTime": rec["CreationTime"]}]}
                for pv in self.c.configs[rec["EndpointConfigName"]]["ProductionVariants"]]
        config = self.c.configs.get(rec.get("EndpointConfigName", ""))
        if config is not None:
            if config.get("DataCaptureConfig"):
                dc = config["DataCaptureConfig"]
                out["DataCaptureConfig"] = {
                    "EnableCapture": bool(dc.get("EnableCapture", True)), "CaptureStatus": "Stopped",
                    "CurrentSamplingPercentage": int(dc.get("InitialSamplingPercentage", 0)),
                    "DestinationS3Uri": dc.get("DestinationS3Uri", ""), "KmsKeyId": dc.get("KmsKeyId", "")}
        if rec.get("AsyncInferenceConfig") or (config or {}).get("AsyncInferenceConfig"):
            out["AsyncInferenceConfig"] = rec.get("AsyncInferenceConfig") or config["AsyncInferenceConfig"]
        if rec.get("PendingConfig"):
            out["PendingDeploymentSummary"] = {"EndpointConfigName": rec["PendingConfig"],
                                               "StartTime": rec["LastModifiedTime"]}
        return out

    def _summary(self, v: VariantSpec, endpoint: str) -> dict:
        pool = self.c.endpoints.manager.pool(endpoint, v.name)
        live = pool.live_count if pool is not None else 0
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
        model = self.c.models.get(model_name or "")
        if model is None:
            return None
        container = (model.get("Containers") or [model.get("PrimaryContainer") or {}])[0]
        return container.get("Image")

    def list_endpoints(self, req: dict) -> dict:
        status = req.get("StatusEquals")
        if status is not None and status not in ENDPOINT_STATUSES:
            raise invalid(f"1 validation error detected: Value '{status}' at 'statusEquals' failed to satisfy "
                          f"constraint: Member must satisfy enum value set: [{', '.join(ENDPOINT_STATUSES)}]")
        names = set(self.c.records) | set(self.c.endpoints.specs)
        docs = [self.c.endpoint_record(n) for n in names]
        if status:
            docs = [d for d in docs if d["EndpointStatus"] == status]
        return list_page(req, docs, "EndpointName", "Endpoints",
                          lambda d: {k: d[k] for k in ("EndpointName", "EndpointArn", "CreationTime",
                                                       "LastModifiedTime", "EndpointStatus")},
                          ("Name", "CreationTime", "Status"), modified=True)

    async def update_weights(self, req: dict) -> dict:
        name = check_name(req, "EndpointName")
        rec = self.c.endpoint_record(name)
        spec: EndpointSpec | None = self.c.endpoints.specs.get(name)
        if spec is None or rec["EndpointStatus"] not in ("InService",):
            raise Conflict(f'Cannot update in-progress endpoint "{rec["EndpointArn"]}".')
        wanted = req.get("DesiredWeightsAndCapacities")
        if not isinstance(wanted, list) or not wanted:
            raise invalid("1 validation error detected: Value at 'desiredWeightsAndCapacities' failed to satisfy "
                          "constraint: Member must have length greater than or equal to 1")
        changes: dict[str, dict] = {}
        for i, item in enumerate(wanted, start=1):
            if not isinstance(item, dict):
                raise invalid(f"Value at 'desiredWeightsAndCapacities.{i}.member' must be an object.")
            vname = item.get("VariantName")
            v = spec.variant(vname) if isinstance(vname, str) else None
            if v is None:
                raise invalid(f"The variant name(s) [{vname}] is/are not present in the endpoint {name}.")
            ch: dict = {}
            if item.get("DesiredWeight") is not None:
                if not _number(item["DesiredWeight"]) or item["DesiredWeight"] < 0:
                    raise invalid(f"DesiredWeight of {vname} must be a number >= 0.")
                ch["weight"] = float(item["DesiredWeight"])
            if item.get("DesiredInstanceCount") is not None:
                if not v.instance_type:
                    raise invalid(f"Variant {vname} is serverless: change it with ServerlessUpdateConfig.")
                count = item["DesiredInstanceCount"]
                least, most = (0 if self.c.async_config(name) else 1), MAX_CONCURRENCY_RANGE[1]
                if not isinstance(count, int) or isinstance(count, bool) or not least <= count <= most:
                    raise invalid(f"DesiredInstanceCount of {vname} must be between {least} and {most}"
                                  + ("." if least == 0 else " (0 is for asynchronous endpoints)."))
                ch.update(provisioned=count, max_concurrency=count)
            if item.get("ServerlessUpdateConfig"):
                if v.instance_type:
                    raise invalid(f"Variant {vname} runs on instances: change it with DesiredInstanceCount.")
                su = item["ServerlessUpdateConfig"]
                if not isinstance(su, dict):
                    raise invalid(f"ServerlessUpdateConfig of {vname} must be an object.")
                if su.get("MaxConcurrency") is not None:
                    ch["max_concurrency"] = su["MaxConcurrency"]
                if su.get("ProvisionedConcurrency") is not None:
                    ch["provisioned"] = su["ProvisionedConcurrency"]
            changes[vname] = ch
        if sum(changes.get(v.name, {}).get("weight", v.weight) for v in spec.variants) <= 0:
            raise invalid("At least one variant must have a weight greater than 0.")
        try:
            await self.c.endpoints.set_variants(name, changes)
        except Invalid as exc:
            raise invalid(str(exc)) from None
        if name in self.c.records:
            rec["LastModifiedTime"] = now()
            await self.c.save("endpoint", name, rec)
        return {"EndpointArn": rec["EndpointArn"]}

    async def delete_endpoint(self, req: dict) -> dict:
        name = check_name(req, "EndpointName")
        rec = self.c.endpoint_record(name)
        if rec["EndpointStatus"] in ("Creating", "Updating"):
            raise Conflict(f'Cannot update in-progress endpoint "{rec["EndpointArn"]}".')
        for before, _ in self.c.on_endpoint_delete:   # its async requests stop being claimed and run ...
            if before is not None:
                await before(name)
        if name in self.c.endpoints.specs:
            await self.c.endpoints.delete(name)
        if self.c.records.pop(name, None) is not None:
            await self.c.store.delete_resource("endpoint", name)
        for _, after in self.c.on_endpoint_delete:    # ... and, once it is gone, go to the failure path
            if after is not None:
                await after(name)
        return {}


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value == value


async def _settle_briefly(change: asyncio.Task) -> None:
    """Give a change ``SETTLE_S`` to finish, so a model that loads quickly is InService when the
    call returns (a waiter's first poll then succeeds); a slower one is left Creating/Updating.
    The change itself goes on either way: only the wait is given up."""
    await asyncio.wait({change}, timeout=SETTLE_S)
