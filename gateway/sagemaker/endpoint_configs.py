"""SageMaker endpoint configs: CreateEndpointConfig, DescribeEndpointConfig,
ListEndpointConfigs, DeleteEndpointConfig.  A config is kept as given (its production
variants checked against the service's rules) and read when an endpoint is created or updated."""
from __future__ import annotations

from gateway.async_inference.requests import check_config
from gateway.sagemaker.catalog import Catalog, now
from gateway.sagemaker.shapes import check_name, check_variant, invalid, list_page, tags_of


class EndpointConfigs:
    def __init__(self, catalog: Catalog):
        self.c = catalog

    async def create_endpoint_config(self, req: dict) -> dict:
        name = check_name(req, "EndpointConfigName")
        if name in self.c.configs:
            raise self.c.exists("endpoint-config", name)
        variants = req.get("ProductionVariants")
        if not isinstance(variants, list) or not 1 <= len(variants) <= 10:
            raise invalid("1 validation error detected: Value at 'productionVariants' failed to satisfy constraint: "
                          "Member must have length between 1 and 10")
        seen = set()
        for i, pv in enumerate(variants, start=1):
            check_variant(pv, i)
            if pv["ModelName"] not in self.c.models:           # as the service: the model must exist now
                raise self.c.not_found("model", pv["ModelName"])
            if pv.get("ServerlessConfig") and self.c.is_multi_model(pv["ModelName"]):
                raise invalid(f"Model {pv['ModelName']} is a MultiModel model: serverless variants do not support "
                              "multi-model endpoints; use an InstanceType (slimserve's CLI can deploy a serverless "
                              "multi-model endpoint: slimserve deploy NAME PREFIX --multi-model).")
            if pv["VariantName"] in seen:
                raise invalid(f"Variant name {pv['VariantName']} appears more than once in ProductionVariants.")
            seen.add(pv["VariantName"])
        if req.get("AsyncInferenceConfig") is not None:
            check_config(req["AsyncInferenceConfig"], variants)
        doc = {"EndpointConfigName": name, "EndpointConfigArn": self.c.arn("endpoint-config", name),
               "ProductionVariants": variants, "CreationTime": now(), "Tags": tags_of(req.get("Tags"))}
        await self.c.put("endpoint-config", name, doc, req, (
            "DataCaptureConfig", "AsyncInferenceConfig", "KmsKeyId", "ExplainerConfig", "ShadowProductionVariants",
            "ExecutionRoleArn", "VpcConfig", "EnableNetworkIsolation"))
        return {"EndpointConfigArn": doc["EndpointConfigArn"]}

    def describe_endpoint_config(self, req: dict) -> dict:
        return self.c.described("endpoint-config", check_name(req, "EndpointConfigName"))

    def list_endpoint_configs(self, req: dict) -> dict:
        return list_page(req, self.c.docs("endpoint-config"), "EndpointConfigName", "EndpointConfigs",
                          lambda d: {"EndpointConfigName": d["EndpointConfigName"],
                                     "EndpointConfigArn": d["EndpointConfigArn"], "CreationTime": d["CreationTime"]},
                          ("Name", "CreationTime"))

    async def delete_endpoint_config(self, req: dict) -> dict:
        return await self.c.delete("endpoint-config", check_name(req, "EndpointConfigName"))
