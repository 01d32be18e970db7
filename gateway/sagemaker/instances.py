"""Real-time (instance-backed) variants: SageMaker instance types and the memory each maps to.

A production variant with InstanceType and InitialInstanceCount becomes that
many always-on sandboxes, each capped at the instance's memory and billed by
wall time (as provisioned concurrency).  Memory figures are the published
memory of each instance type (GiB x 1024); CPU-only, so GPU types are refused.
"""
from __future__ import annotations

_GIB = {
    "ml.t2.medium": 4, "ml.t2.large": 8, "ml.t2.xlarge": 16, "ml.t2.2xlarge": 32,
    "ml.m4.xlarge": 16, "ml.m4.2xlarge": 32, "ml.m4.4xlarge": 64,
    "ml.m5.large": 8, "ml.m5.xlarge": 16, "ml.m5.2xlarge": 32, "ml.m5.4xlarge": 64,
    "ml.m5d.large": 8, "ml.m5d.xlarge": 16, "ml.m5d.2xlarge": 32,
    "ml.m6i.large": 8, "ml.m6i.xlarge": 16, "ml.m6i.2xlarge": 32,
    "ml.c4.large": 3.75, "ml.c4.xlarge": 7.5, "ml.c4.2xlarge": 15,
    "ml.c5.large": 4, "ml.c5.xlarge": 8, "ml.c5.2xlarge": 16, "ml.c5.4xlarge": 32,
    "ml.c5d.large": 4, "ml.c5d.xlarge": 8, "ml.c5d.2xlarge": 16,
    "ml.c6i.large": 4, "ml.c6i.xlarge": 8, "ml.c6i.2xlarge": 16,
    "ml.r5.large": 16, "ml.r5.xlarge": 32, "ml.r5.2xlarge": 64,
}
GPU_FAMILIES = ("ml.p2", "ml.p3", "ml.p4", "ml.p5", "ml.g4", "ml.g5", "ml.g6", "ml.inf", "ml.trn")

INSTANCE_TYPES = tuple(sorted(_GIB))


class UnknownInstanceType(ValueError):
    pass


def instance_memory_mb(instance_type: str) -> int:
    if instance_type in _GIB:
        return int(_GIB[instance_type] * 1024)
    if instance_type.startswith(GPU_FAMILIES):
        raise UnknownInstanceType(f"instance type {instance_type} needs an accelerator; slimserve runs CPU-only")
    raise UnknownInstanceType(f"instance type {instance_type} is not supported; use one of "
                              + ", ".join(INSTANCE_TYPES))
