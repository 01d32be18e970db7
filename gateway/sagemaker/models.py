"""SageMaker models: CreateModel, DescribeModel, ListModels, DeleteModel.

A model is a record of its container (model data and/or image, environment); its model data
is checked to be readable under the model roots when it is created, and read when an
endpoint that uses it is deployed.
"""
from __future__ import annotations

from gateway.sagemaker.catalog import Catalog, now
from gateway.sagemaker.shapes import check_name, invalid, list_page, tags_of


class Models:
    def __init__(self, catalog: Catalog):
        self.c = catalog

    async def create_model(self, req: dict) -> dict:
        name = check_name(req, "ModelName")
        if name in self.c.models:
            raise self.c.exists("model", name)
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
        multi = self.c.multi_model(container)
        source = None if multi else self.c.model_source(container)   # refuse what cannot be served now, not later
        if source is not None:
            await self.c.check_model_data(source, container.get("Image"))
        code = self.c.submit_directory(container)                   # the SDK's sourcedir.tar.gz
        if code is not None:
            await self.c.check_model_data(code, None)
        tags = tags_of(req.get("Tags"))
        doc = {"ModelName": name, "ModelArn": self.c.arn("model", name), "CreationTime": now(),
               "EnableNetworkIsolation": bool(req.get("EnableNetworkIsolation", False)), "Tags": tags}
        await self.c.put("model", name, doc, req, (
            "PrimaryContainer", "Containers", "ExecutionRoleArn", "VpcConfig", "InferenceExecutionConfig"))
        return {"ModelArn": doc["ModelArn"]}

    def describe_model(self, req: dict) -> dict:
        return self.c.described("model", check_name(req, "ModelName"))

    def list_models(self, req: dict) -> dict:
        return list_page(req, self.c.docs("model"), "ModelName", "Models",
                          lambda d: {"ModelName": d["ModelName"], "ModelArn": d["ModelArn"],
                                     "CreationTime": d["CreationTime"]}, ("Name", "CreationTime"))

    async def delete_model(self, req: dict) -> dict:
        return await self.c.delete("model", check_name(req, "ModelName"))
