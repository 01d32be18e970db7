"""CPU in proportion to memory, as on Lambda and SageMaker Serverless: a bigger tier buys more
CPU, which is what makes a tier worth choosing.  Pure: the ratio and the host's cores are given.

Lambda's published ratio is one vCPU per 1,769 MB (1 GB ~ 0.58 vCPU, 6 GB ~ 3.47); an instance
variant gets its instance type's vCPUs.  Either is capped at the host's cores.  A quota of 0
means no quota (``serve --cpu-per-gb 0``).
"""
from __future__ import annotations

from gateway.config import DEFAULT_CPU_PER_GB  # noqa: F401 - vCPUs per GB of memory (~0.579)
from gateway.domain import VariantSpec
from gateway.sagemaker.instances import instance_vcpus


def tier_vcpus(memory_mb: int, cpu_per_gb: float, host_cores: int) -> float:
    """The vCPUs a sandbox of ``memory_mb`` gets (0: no quota)."""
    if cpu_per_gb <= 0:
        return 0.0
    return round(min(float(host_cores), memory_mb / 1024 * cpu_per_gb), 3)


def variant_vcpus(variant: VariantSpec, cpu_per_gb: float, host_cores: int) -> float:
    if cpu_per_gb <= 0:
        return 0.0
    if variant.instance_type:
        return float(min(host_cores, instance_vcpus(variant.instance_type)))
    return tier_vcpus(variant.memory_mb, cpu_per_gb, host_cores)


def threads_for(vcpus: float) -> int:
    """Thread-pool size for a quota: ceil(vCPUs), at least 1 (0 -> no quota: leave the default)."""
    return max(1, -int(-vcpus // 1)) if vcpus > 0 else 0
