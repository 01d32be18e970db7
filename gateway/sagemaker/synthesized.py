"""The model and endpoint config an endpoint deployed with the CLI stands on, as the SageMaker
API shows them: named after the endpoint, read-only views of its variants (DescribeEndpoint
always names a config, and a config its models, so SageMaker tools can follow the chain)."""
from __future__ import annotations

from gateway.domain import EndpointSpec, VariantSpec


def _tags(spec: EndpointSpec) -> list[dict]:
    return [{"Key": k, "Value": v} for k, v in spec.tags.items()]


def model_doc(arn: str, spec: EndpointSpec) -> dict:
    first = spec.variants[0]
    return {"ModelName": spec.name, "ModelArn": arn, "CreationTime": round(spec.created, 3),
            "PrimaryContainer": {"Mode": "SingleModel", "Environment": dict(first.env)},
            "EnableNetworkIsolation": bool(first.network_isolation), "Tags": _tags(spec)}


def _variant(v: VariantSpec, model: str) -> dict:
    out = {"VariantName": v.name, "ModelName": model, "InitialVariantWeight": float(v.weight)}
    if v.instance_type:
        out.update(InstanceType=v.instance_type, InitialInstanceCount=v.provisioned)
    else:
        sc = {"MemorySizeInMB": v.memory_mb, "MaxConcurrency": v.max_concurrency}
        if v.provisioned:
            sc["ProvisionedConcurrency"] = v.provisioned
        out["ServerlessConfig"] = sc
    return out


def config_doc(arn: str, spec: EndpointSpec) -> dict:
    return {"EndpointConfigName": spec.name, "EndpointConfigArn": arn, "CreationTime": round(spec.updated, 3),
            "ProductionVariants": [_variant(v, spec.name) for v in spec.variants], "Tags": _tags(spec)}
