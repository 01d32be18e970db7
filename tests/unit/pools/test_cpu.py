"""CPU in proportion to memory: Lambda's ratio by default, an instance type's vCPUs, the host's cap."""
from __future__ import annotations

import pytest

from gateway.domain import VariantSpec
from gateway.pools.cpu import DEFAULT_CPU_PER_GB, threads_for, tier_vcpus, variant_vcpus
from gateway.sagemaker.instances import instance_vcpus


def test_lambdas_ratio_one_vcpu_per_1769_mb():
    assert tier_vcpus(1024, DEFAULT_CPU_PER_GB, 64) == pytest.approx(0.579, abs=1e-3)
    assert tier_vcpus(1769, DEFAULT_CPU_PER_GB, 64) == pytest.approx(1.0, abs=1e-3)
    assert tier_vcpus(6144, DEFAULT_CPU_PER_GB, 64) == pytest.approx(3.473, abs=1e-3)


def test_capped_at_the_hosts_cores_and_off_at_zero():
    assert tier_vcpus(6144, DEFAULT_CPU_PER_GB, 2) == 2.0
    assert tier_vcpus(6144, 0, 2) == 0.0
    assert tier_vcpus(4096, 0.25, 8) == 1.0


def test_instance_variants_get_their_types_vcpus():
    assert instance_vcpus("ml.m5.xlarge") == 4 and instance_vcpus("ml.c5.large") == 2
    v = VariantSpec(memory_mb=16384, instance_type="ml.m5.xlarge", provisioned=1, max_concurrency=1)
    assert variant_vcpus(v, DEFAULT_CPU_PER_GB, 64) == 4.0
    assert variant_vcpus(v, DEFAULT_CPU_PER_GB, 2) == 2.0
    assert variant_vcpus(v, 0, 64) == 0.0
    assert variant_vcpus(VariantSpec(memory_mb=2048), DEFAULT_CPU_PER_GB, 64) == pytest.approx(1.158, abs=1e-3)


def test_thread_pools_are_the_ceiling_of_the_quota():
    assert [threads_for(v) for v in (0.0, 0.3, 0.58, 1.0, 1.16, 3.47)] == [0, 1, 1, 1, 2, 4]
