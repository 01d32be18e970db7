"""The Application Auto Scaling API for SageMaker variants: AWS JSON 1.1 on ``POST /`` with
``X-Amz-Target: AnyScaleFrontendService.<Operation>``, signed for ``application-autoscaling``,
so ``boto3.client("application-autoscaling", endpoint_url=...)`` (or
``AWS_ENDPOINT_URL_APPLICATION_AUTO_SCALING``) works unchanged."""
from __future__ import annotations

from gateway.autoscaling.targets import Registry

TARGET_PREFIX = "AnyScaleFrontendService"


def operations(registry: Registry) -> dict:
    return {
        "RegisterScalableTarget": registry.register, "DeregisterScalableTarget": registry.deregister,
        "DescribeScalableTargets": registry.describe_targets, "PutScalingPolicy": registry.put_policy,
        "DeleteScalingPolicy": registry.delete_policy, "DescribeScalingPolicies": registry.describe_policies,
    }
