"""Real-time (instance-backed) variants: SageMaker instance types and the memory and CPUs each maps to.

A production variant with InstanceType and InitialInstanceCount becomes that
many always-on sandboxes, each capped at the instance's memory and vCPUs and billed by
wall time (as provisioned concurrency).  Memory figures are the published
memory (GiB x 1024) and vCPUs of each instance type; CPU-only, so GPU types are refused.
"""
from __future__ import annotations

# instance type -> (vCPUs, GiB), the published figures of each type (the ml.* types are EC2's)
_SPECS = {
    "ml.t2.medium": (2, 4), "ml.t2.large": (2, 8), "ml.t2.xlarge": (4, 16), "ml.t2.2xlarge": (8, 32),
    "ml.m4.xlarge": (4, 16), "ml.m4.2xlarge": (8, 32), "ml.m4.4xlarge": (16, 64),
    "ml.m5.large": (2, 8), "ml.m5.xlarge": (4, 16), "ml.m5.2xlarge": (8, 32), "ml.m5.4xlarge": (16, 64),
    "ml.m5d.large": (2, 8), "ml.m5d.xlarge": (4, 16), "ml.m5d.2xlarge": (8, 32),
    "ml.m6i.large": (2, 8), "ml.m6i.xlarge": (4, 16), "ml.m6i.2xlarge": (8, 32),
    "ml.c4.large": (2, 3.75), "ml.c4.xlarge": (4, 7.5), "ml.c4.2xlarge": (8, 15),
    "ml.c5.large": (2, 4), "ml.c5.xlarge": (4, 8), "ml.c5.2xlarge": (8, 16), "ml.c5.4xlarge": (16, 32),
    "ml.c5d.large": (2, 4), "ml.c5d.xlarge": (4, 8), "ml.c5d.2xlarge": (8, 16),
    "ml.c6i.large": (2, 4), "ml.c6i.xlarge": (4, 8), "ml.c6i.2xlarge": (8, 16),
    "ml.r5.large": (2, 16), "ml.r5.xlarge": (4, 32), "ml.r5.2xlarge": (8, 64),
}
GPU_FAMILIES = ("ml.p2", "ml.p3", "ml.p4", "ml.p5", "ml.g4", "ml.g5", "ml.g6", "ml.inf", "ml.trn")

INSTANCE_TYPES = tuple(sorted(_SPECS))


class UnknownInstanceType(ValueError):
    pass


def instance_memory_mb(instance_type: str) -> int:
    return int(_spec(instance_type)[1] * 1024)


def instance_vcpus(instance_type: str) -> int:
    return _spec(instance_type)[0]


def _spec(instance_type: str) -> tuple[int, float]:
    if instance_type in _SPECS:
        return _SPECS[instance_type]
    if instance_type.startswith(GPU_FAMILIES):
        raise UnknownInstanceType(f"instance type {instance_type} needs an accelerator; slimserve runs CPU-only")
    raise UnknownInstanceType(f"instance type {instance_type} is not supported; use one of "
                              + ", ".join(INSTANCE_TYPES))
