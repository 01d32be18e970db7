"""Application Auto Scaling's records for SageMaker variants: scalable targets and their
target-tracking policies, checked as the service checks them and kept in the store.

A target is ``endpoint/<endpoint>/variant/<variant>`` with the dimension
``sagemaker:variant:DesiredInstanceCount`` (instance variants: real-time and asynchronous).
MinCapacity 0 is taken only for an asynchronous endpoint's variant, as on AWS: only a queue
can wait for an instance to start.
"""
from __future__ import annotations

import json
import re
import time
import uuid

from gateway.autoscaling import policy as tt
from gateway.errors import Named

NAMESPACE = "sagemaker"
DIMENSION = "sagemaker:variant:DesiredInstanceCount"
RESOURCE_RE = re.compile(r"^endpoint/([a-zA-Z0-9](-*[a-zA-Z0-9]){0,62})/variant/([a-zA-Z0-9](-*[a-zA-Z0-9]){0,62})$")
POLICY_NAME_RE = re.compile(r"^\p{Print}{1,256}$".replace(r"\p{Print}", r"[\x20-\x7e]"))
MAX_CAPACITY = 100                     # instances of one variant at most (one host: more could not start)
MAX_POLICIES = 20
MAX_POLICY_BYTES = 8192               # a target-tracking configuration, as JSON, at most


def ValidationException(message: str) -> Named:      # noqa: N802 - named as the service's error
    return Named(message, "ValidationException")


def ObjectNotFound(message: str) -> Named:           # noqa: N802
    return Named(message, "ObjectNotFoundException")


def InvalidNextToken(message: str) -> Named:         # noqa: N802
    return Named(message, "InvalidNextTokenException")


def _int(req: dict, key: str, lo: int, hi: int) -> int | None:
    value = req.get(key)
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= hi:
        raise ValidationException(f"{key} must be a whole number between {lo} and {hi}, not {value!r}.")
    return value


def _number(cfg: dict, key: str, lo: float, hi: float, default: float | None = None) -> float | None:
    value = cfg.get(key, default)
    if value is None:
        return None
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not lo <= value <= hi:
        raise ValidationException(f"{key} must be a number between {lo:g} and {hi:g}, not {value!r}.")
    return float(value)


class Registry:
    """Targets and policies by resource id, persisted as store resources."""

    def __init__(self, store, account_id: str, region: str, variants, is_async, clock=time.time):
        self.store = store
        self.account_id, self.region = account_id, region
        self.variants = variants          # endpoint -> {variant name: VariantSpec}, or None if no such endpoint
        self.is_async = is_async          # endpoint -> whether it has an AsyncInferenceConfig
        self.wall = clock
        self.targets: dict[str, dict] = {}
        self.policies: dict[str, dict[str, dict]] = {}     # resource id -> policy name -> doc
        self.on_change = lambda: None     # told after a target or policy changed (the scaler looks at once)

    async def load(self) -> None:
        for kind, name, doc in await self.store.load_resources():
            if kind == "scalable-target":
                self.targets[name] = doc
            elif kind == "scaling-policy":
                self.policies.setdefault(doc["ResourceId"], {})[doc["PolicyName"]] = doc

    # --- checks ------------------------------------------------------------------------
    def _resource(self, req: dict) -> tuple[str, str, str]:
        if req.get("ServiceNamespace") != NAMESPACE:
            raise ValidationException(f"Unsupported service namespace {req.get('ServiceNamespace')!r}: slimserve "
                                      f"scales SageMaker variants (ServiceNamespace {NAMESPACE}).")
        if req.get("ScalableDimension") not in (None, DIMENSION):
            raise ValidationException(f"Unsupported scalable dimension {req.get('ScalableDimension')!r} for "
                                      f"{NAMESPACE}; use {DIMENSION}.")
        rid = req.get("ResourceId")
        m = RESOURCE_RE.match(rid) if isinstance(rid, str) else None
        if m is None:
            raise ValidationException(f"Unsupported resource ID {rid!r}: it must be endpoint/<endpoint "
                                      "name>/variant/<variant name>.")
        return rid, m.group(1), m.group(3)

    def _variant(self, endpoint: str, variant: str, rid: str):
        variants = self.variants(endpoint)
        v = (variants or {}).get(variant)
        if v is None:
            raise ValidationException(f"The resource {rid} does not exist: no endpoint {endpoint} with a "
                                      f"variant {variant}.")
        if not v.instance_type:
            raise ValidationException(f"{rid} is a serverless variant; {DIMENSION} scales instance variants.")
        return v

    def target(self, rid: str) -> dict:
        doc = self.targets.get(rid)
        if doc is None:
            raise ObjectNotFound(f"No scalable target registered for service namespace: {NAMESPACE}, resource ID: "
                                 f"{rid}, scalable dimension: {DIMENSION}")
        return doc

    # --- operations ----------------------------------------------------------------------
    async def register(self, req: dict) -> dict:
        rid, endpoint, variant = self._resource(req)
        if req.get("ScalableDimension") is None:
            raise ValidationException("ScalableDimension is required.")
        self._variant(endpoint, variant, rid)
        old = self.targets.get(rid)
        lo = _int(req, "MinCapacity", 0, MAX_CAPACITY)
        hi = _int(req, "MaxCapacity", 0, MAX_CAPACITY)
        if old is None and (lo is None or hi is None):
            raise ValidationException("MinCapacity and MaxCapacity are required to register a new scalable target.")
        lo = old["MinCapacity"] if lo is None else lo
        hi = old["MaxCapacity"] if hi is None else hi
        role = req.get("RoleARN")
        if role is not None and (not isinstance(role, str) or not 1 <= len(role) <= 1600):
            raise ValidationException("RoleARN must be a string of 1-1600 characters.")
        if lo > hi:
            raise ValidationException(f"Minimum capacity ({lo}) cannot be greater than maximum capacity ({hi}).")
        if lo == 0 and not self.is_async(endpoint):
            raise ValidationException(f"MinCapacity 0 is allowed only for a variant of an asynchronous endpoint; "
                                      f"{endpoint} serves synchronous requests, which need an instance.")
        suspended = dict((old or {}).get("SuspendedState") or {"DynamicScalingInSuspended": False,
                                                                 "DynamicScalingOutSuspended": False,
                                                                 "ScheduledScalingSuspended": False})
        if isinstance(req.get("SuspendedState"), dict):
            for k in suspended:
                if k in req["SuspendedState"]:
                    suspended[k] = bool(req["SuspendedState"][k])
        arn = (old or {}).get("ScalableTargetARN") or (
            f"arn:aws:application-autoscaling:{self.region}:{self.account_id}:scalable-target/"
            f"{uuid.uuid4().hex}")
        doc = {"ServiceNamespace": NAMESPACE, "ResourceId": rid, "ScalableDimension": DIMENSION,
               "MinCapacity": lo, "MaxCapacity": hi,
               "RoleARN": req.get("RoleARN") or f"arn:aws:iam::{self.account_id}:role/aws-service-role/"
                                                "sagemaker.application-autoscaling.amazonaws.com/"
                                                "AWSServiceRoleForApplicationAutoScaling_SageMakerEndpoint",
               "CreationTime": (old or {}).get("CreationTime") or self.wall(), "SuspendedState": suspended,
               "ScalableTargetARN": arn}
        await self.store.put_resource("scalable-target", rid, doc)
        self.targets[rid] = doc
        self.on_change()
        return {"ScalableTargetARN": arn}

    async def deregister(self, req: dict) -> dict:
        rid, _, _ = self._resource(req)
        self.target(rid)
        for name in list(self.policies.get(rid, {})):
            await self.store.delete_resource("scaling-policy", f"{rid}|{name}")
        self.policies.pop(rid, None)
        await self.store.delete_resource("scalable-target", rid)
        del self.targets[rid]
        self.on_change()
        return {}

    async def put_policy(self, req: dict) -> dict:
        rid, _, _ = self._resource(req)
        name = req.get("PolicyName")
        if not isinstance(name, str) or not POLICY_NAME_RE.match(name) or "|" in name:
            raise ValidationException("PolicyName must be 1-256 printable characters (and no '|').")
        self.target(rid)
        kind = req.get("PolicyType") or "StepScaling"
        if kind != "TargetTrackingScaling":
            raise ValidationException(f"PolicyType {kind} is not supported by slimserve; use TargetTrackingScaling.")
        cfg = req.get("TargetTrackingScalingPolicyConfiguration")
        if isinstance(cfg, dict) and len(json.dumps(cfg)) > MAX_POLICY_BYTES:
            raise ValidationException(f"TargetTrackingScalingPolicyConfiguration is over {MAX_POLICY_BYTES} bytes.")
        if not isinstance(cfg, dict):
            raise ValidationException("TargetTrackingScalingPolicyConfiguration is required for "
                                      "TargetTrackingScaling.")
        parse_tracking(cfg)                                  # refused now if slimserve cannot follow it
        if name not in self.policies.get(rid, {}) and len(self.policies.get(rid, {})) >= MAX_POLICIES:
            raise ValidationException(f"A scalable target has at most {MAX_POLICIES} scaling policies.")
        old = self.policies.get(rid, {}).get(name)
        arn = (old or {}).get("PolicyARN") or (
            f"arn:aws:autoscaling:{self.region}:{self.account_id}:scalingPolicy:"
            f"{uuid.uuid4()}:resource/{NAMESPACE}/{rid}:policyName/{name}")
        doc = {"PolicyARN": arn, "PolicyName": name, "ServiceNamespace": NAMESPACE, "ResourceId": rid,
               "ScalableDimension": DIMENSION, "PolicyType": kind, "TargetTrackingScalingPolicyConfiguration": cfg,
               "Alarms": [], "CreationTime": (old or {}).get("CreationTime") or self.wall()}
        await self.store.put_resource("scaling-policy", f"{rid}|{name}", doc)
        self.policies.setdefault(rid, {})[name] = doc
        self.on_change()
        return {"PolicyARN": arn, "Alarms": []}

    async def delete_policy(self, req: dict) -> dict:
        rid, _, _ = self._resource(req)
        name = req.get("PolicyName")
        if not isinstance(name, str) or name not in self.policies.get(rid, {}):
            raise ObjectNotFound(f"No scaling policy found for service namespace: {NAMESPACE}, resource ID: {rid}, "
                                 f"scalable dimension: {DIMENSION}, policy name: {name}")
        await self.store.delete_resource("scaling-policy", f"{rid}|{name}")
        del self.policies[rid][name]
        return {}

    async def forget(self, endpoint: str) -> None:
        """DeleteEndpoint: its variants' targets and policies go too (a new endpoint of the same
        name starts unscaled, not with a floor that was allowed for the old one)."""
        for rid in [r for r in self.targets if r.startswith(f"endpoint/{endpoint}/variant/")]:
            for name in list(self.policies.get(rid, {})):
                await self.store.delete_resource("scaling-policy", f"{rid}|{name}")
            self.policies.pop(rid, None)
            await self.store.delete_resource("scalable-target", rid)
            del self.targets[rid]

    def describe_targets(self, req: dict) -> dict:
        self._namespace(req)
        ids = _strings(req, "ResourceIds")
        docs = [d for rid, d in sorted(self.targets.items()) if not ids or rid in ids]
        return _page(req, docs, "ScalableTargets")

    def describe_policies(self, req: dict) -> dict:
        self._namespace(req)
        names, rid = _strings(req, "PolicyNames"), req.get("ResourceId")
        if rid is not None and not isinstance(rid, str):
            raise ValidationException("ResourceId must be a string.")
        docs = [d for r, ps in sorted(self.policies.items()) for _, d in sorted(ps.items())
                if (not rid or r == rid) and (not names or d["PolicyName"] in names)]
        return _page(req, docs, "ScalingPolicies")

    @staticmethod
    def _namespace(req: dict) -> None:
        if req.get("ServiceNamespace") != NAMESPACE:
            raise ValidationException(f"Unsupported service namespace {req.get('ServiceNamespace')!r}.")



def parse_tracking(cfg: dict) -> tt.TargetTracking:
    target = _number(cfg, "TargetValue", 1e-9, 1e9)
    if target is None:
        raise ValidationException("TargetValue is required.")
    predefined, custom = cfg.get("PredefinedMetricSpecification"), cfg.get("CustomizedMetricSpecification")
    if bool(predefined) == bool(custom):
        raise ValidationException("Specify one of PredefinedMetricSpecification or CustomizedMetricSpecification.")
    if predefined:
        metric = predefined.get("PredefinedMetricType") if isinstance(predefined, dict) else None
        if metric != tt.INVOCATIONS_PER_INSTANCE:
            raise ValidationException(f"PredefinedMetricType {metric!r} is not supported by slimserve for "
                                      f"{NAMESPACE}; use {tt.INVOCATIONS_PER_INSTANCE}, or a customized "
                                      f"{tt.BACKLOG_PER_INSTANCE} metric.")
    else:
        metric = custom.get("MetricName") if isinstance(custom, dict) else None
        if metric not in tt.METRICS or custom.get("Namespace", "AWS/SageMaker") != "AWS/SageMaker":
            raise ValidationException(f"CustomizedMetricSpecification {metric!r}: slimserve tracks the AWS/SageMaker "
                                      f"metrics {', '.join(tt.METRICS)}.")
    return tt.TargetTracking(
        metric=metric, target=target,
        scale_out_cooldown_s=_number(cfg, "ScaleOutCooldown", 0, 86400, tt.DEFAULT_COOLDOWN_S),
        scale_in_cooldown_s=_number(cfg, "ScaleInCooldown", 0, 86400, tt.DEFAULT_COOLDOWN_S),
        disable_scale_in=_bool(cfg, "DisableScaleIn"))


def _bool(cfg: dict, key: str) -> bool:
    value = cfg.get(key, False)
    if not isinstance(value, bool):
        raise ValidationException(f"{key} must be true or false, not {value!r}.")
    return value


def _strings(req: dict, key: str, most: int = 50) -> list[str] | None:
    value = req.get(key)
    if value is None:
        return None
    if not isinstance(value, list) or len(value) > most or not all(isinstance(v, str) for v in value):
        raise ValidationException(f"{key} must be a list of at most {most} strings.")
    return value


def _page(req: dict, docs: list[dict], key: str) -> dict:
    size = req.get("MaxResults") or 50
    if not isinstance(size, int) or isinstance(size, bool) or not 1 <= size <= 50:
        raise ValidationException("MaxResults must be between 1 and 50.")
    token = req.get("NextToken")
    start = 0
    if token is not None:
        if not (isinstance(token, str) and re.fullmatch(r"[0-9]{1,9}", token) and int(token) <= len(docs)):
            raise InvalidNextToken("Invalid NextToken.")
        start = int(token)
    out = {key: docs[start:start + size]}
    if start + size < len(docs):
        out["NextToken"] = str(start + size)
    return out
