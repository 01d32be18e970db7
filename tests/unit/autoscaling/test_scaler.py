"""The scaler's rounds under a fake clock, over a real SQLite store and a small endpoint fake:
registered targets and policies, cooldowns across rounds, suspension, bounds."""
import asyncio
from dataclasses import replace

import pytest

from gateway.autoscaling.scaler import AutoScaler
from gateway.autoscaling.targets import Registry
from gateway.clock import FakeClock
from gateway.domain import EndpointSpec, UsageRecord, VariantSpec
from gateway.errors import Named
from gateway.store.sqlite import Store

RID = "endpoint/e/variant/v"
BASE = {"ServiceNamespace": "sagemaker", "ResourceId": RID,
        "ScalableDimension": "sagemaker:variant:DesiredInstanceCount"}


class Endpoints:
    """The endpoint service as the scaler uses it: specs, and set_variants."""

    def __init__(self, count: int):
        self.specs = {"e": EndpointSpec("e", [VariantSpec(name="v", memory_mb=8192, max_concurrency=count,
                                                          provisioned=count, instance_type="ml.m5.large")])}
        self.changes = []

    def busy(self, name):
        return False

    async def set_variants(self, name, changes):
        self.changes.append(changes)
        spec = self.specs[name]
        spec.variants = [replace(v, **changes.get(v.name, {})) for v in spec.variants]


def record(n=1):
    return [UsageRecord(f"r{i}", "e", "v", 8192, 0.0, 1, 1.0, 0.0, False, 0.0, "ok") for i in range(n)]


def policy(metric, target, out=0, inn=0, custom=False, **extra):
    spec = ({"CustomizedMetricSpecification": {"MetricName": metric, "Namespace": "AWS/SageMaker",
                                               "Dimensions": [{"Name": "EndpointName", "Value": "e"}],
                                               "Statistic": "Average"}} if custom else
            {"PredefinedMetricSpecification": {"PredefinedMetricType": metric}})
    return dict(BASE, PolicyName=f"p-{metric}", PolicyType="TargetTrackingScaling",
                TargetTrackingScalingPolicyConfiguration=dict(TargetValue=target, ScaleOutCooldown=out,
                                                              ScaleInCooldown=inn, **spec, **extra))


async def setup(tmp_path, count=1, is_async=True):
    store = Store(tmp_path / "s.db")
    await store.open()
    eps = Endpoints(count)
    clock = FakeClock()
    backlog = {"e": 0}
    reg = Registry(store, "123456789012", "us-east-1", lambda e: {v.name: v for v in eps.specs[e].variants}
                   if e in eps.specs else None, lambda e: is_async, clock=clock.wall)
    scaler = AutoScaler(reg, eps, clock, lambda e: backlog.get(e, 0))
    return store, eps, clock, backlog, reg, scaler


def test_invocations_per_instance_with_cooldowns_across_rounds(tmp_path):
    async def go():
        store, eps, clock, _, reg, scaler = await setup(tmp_path, count=1, is_async=False)
        await reg.register(dict(BASE, MinCapacity=1, MaxCapacity=4))
        await reg.put_policy(policy("SageMakerVariantInvocationsPerInstance", 10, out=30, inn=120))
        for rec in record(35):                              # 35 a minute on 1 instance against 10: 4 (max)
            scaler.observe(rec)
        assert await scaler.step() == {RID: 4}
        assert eps.specs["e"].variants[0].provisioned == 4 == eps.specs["e"].variants[0].max_concurrency
        clock.advance(61)                                   # the minute's invocations are gone: wants 1 ...
        assert await scaler.step() == {}                    # ... but the scale-in cooldown (120 s) holds
        clock.advance(60)
        assert await scaler.step() == {RID: 1}
        for rec in record(25):
            scaler.observe(rec)
        assert await scaler.step() == {RID: 3}             # scale-out: its own cooldown only
        for rec in record(40):
            scaler.observe(rec)
        clock.advance(10)
        assert await scaler.step() == {}                    # within ScaleOutCooldown of 30 s
        clock.advance(21)
        assert await scaler.step() == {RID: 4}
        await store.close()
    asyncio.run(go())


def test_async_backlog_scales_from_zero_and_back(tmp_path):
    async def go():
        store, eps, clock, backlog, reg, scaler = await setup(tmp_path, count=1)
        await reg.register(dict(BASE, MinCapacity=0, MaxCapacity=3))
        await reg.put_policy(policy("ApproximateBacklogSizePerInstance", 2, inn=60, custom=True))
        assert await scaler.step() == {RID: 0}              # nothing queued: scaled in (no earlier activity)
        backlog["e"] = 5
        assert await scaler.step() == {RID: 3}              # ceil(5 / 2) from zero, at once
        backlog["e"] = 0
        clock.advance(30)
        assert await scaler.step() == {}
        clock.advance(31)
        assert await scaler.step() == {RID: 0}
        await reg.register(dict(BASE, SuspendedState={"DynamicScalingOutSuspended": True}))
        backlog["e"] = 9
        assert await scaler.step() == {}                    # suspended: the backlog waits
        await reg.register(dict(BASE, MinCapacity=1))        # a new floor moves the count at once
        assert await scaler.step() == {RID: 1}
        await store.close()
    asyncio.run(go())


def test_registry_rules_and_persistence(tmp_path):
    async def go():
        store, eps, clock, _, reg, _ = await setup(tmp_path, is_async=False)
        with pytest.raises(Named, match="MinCapacity 0 is allowed only"):
            await reg.register(dict(BASE, MinCapacity=0, MaxCapacity=2))
        with pytest.raises(Named, match="cannot be greater"):
            await reg.register(dict(BASE, MinCapacity=3, MaxCapacity=2))
        with pytest.raises(Named, match="does not exist"):
            await reg.register(dict(BASE, ResourceId="endpoint/e/variant/w", MinCapacity=1, MaxCapacity=2))
        with pytest.raises(Named, match="Unsupported resource ID"):
            await reg.register(dict(BASE, ResourceId="endpoint/e", MinCapacity=1, MaxCapacity=2))
        with pytest.raises(Named) as info:
            await reg.put_policy(policy("SageMakerVariantInvocationsPerInstance", 10))
        assert info.value.code == "ObjectNotFoundException"
        await reg.register(dict(BASE, MinCapacity=1, MaxCapacity=2))
        with pytest.raises(Named, match="not supported"):
            await reg.put_policy(policy("ECSServiceAverageCPUUtilization", 10))
        with pytest.raises(Named, match="not supported"):
            await reg.put_policy(dict(policy("SageMakerVariantInvocationsPerInstance", 10), PolicyType="StepScaling"))
        await reg.put_policy(policy("SageMakerVariantInvocationsPerInstance", 10))
        again = Registry(store, "123456789012", "us-east-1", reg.variants, reg.is_async)
        await again.load()
        assert again.describe_targets({"ServiceNamespace": "sagemaker"})["ScalableTargets"][0]["MaxCapacity"] == 2
        found = again.describe_policies({"ServiceNamespace": "sagemaker", "ResourceId": RID})["ScalingPolicies"]
        assert len(found) == 1
        await again.deregister(dict(BASE))
        assert again.describe_policies({"ServiceNamespace": "sagemaker"})["ScalingPolicies"] == []
        await store.close()
    asyncio.run(go())


def test_a_synchronous_endpoint_keeps_an_instance_and_unscaled_variants_are_not_tracked(tmp_path):
    async def go():
        store, eps, clock, backlog, reg, scaler = await setup(tmp_path, count=2, is_async=True)
        await reg.register(dict(BASE, MinCapacity=0, MaxCapacity=3))          # allowed: async now ...
        await reg.put_policy(policy("ApproximateBacklogSizePerInstance", 2, custom=True))
        reg.is_async = lambda e: False                                         # ... a sync one later
        assert await scaler.step() == {RID: 1}                                 # never below one instance
        for rec in record(5):
            rec.variant = "other"                                              # no target: not kept
            scaler.observe(rec)
        assert ("e", "other") not in scaler._seen
        await reg.forget("e")                                                  # DeleteEndpoint
        assert reg.targets == {} and reg.policies == {}
        again = Registry(store, "123456789012", "us-east-1", reg.variants, reg.is_async)
        await again.load()
        assert again.targets == {}
        await store.close()
    asyncio.run(go())


@pytest.mark.parametrize("req, member", [
    ({"ServiceNamespace": "sagemaker", "ResourceIds": 5}, "ResourceIds"),
    ({"ServiceNamespace": "sagemaker", "NextToken": "²"}, "NextToken"),
    ({"ServiceNamespace": "sagemaker", "NextToken": "9" * 5000}, "NextToken"),
])
def test_describe_arguments_of_the_wrong_type_are_validation_errors(tmp_path, req, member):
    async def go():
        store, _, _, _, reg, _ = await setup(tmp_path)
        with pytest.raises(Named, match=member):
            reg.describe_targets(req)
        await store.close()
    asyncio.run(go())


def test_policy_fields_are_typed(tmp_path):
    async def go():
        store, _, _, _, reg, _ = await setup(tmp_path)
        await reg.register(dict(BASE, MinCapacity=1, MaxCapacity=2))
        with pytest.raises(Named, match="DisableScaleIn"):
            await reg.put_policy(policy("SageMakerVariantInvocationsPerInstance", 10, DisableScaleIn="false"))
        with pytest.raises(Named, match="over 8192 bytes"):
            await reg.put_policy(policy("SageMakerVariantInvocationsPerInstance", 10, Junk="x" * 9000))
        with pytest.raises(Named, match="RoleARN"):
            await reg.register(dict(BASE, RoleARN={"not": "a string"}))
        with pytest.raises(Named) as info:
            await reg.delete_policy(dict(BASE, PolicyName=[]))
        assert info.value.code == "ObjectNotFoundException"
        await store.close()
    asyncio.run(go())
