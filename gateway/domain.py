"""The gateway's domain records and the rules that validate them."""
from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass, field, fields

from gateway.config import DEFAULT_MAX_CONCURRENCY, DEFAULT_VARIANT, MAX_CONCURRENCY_RANGE, MEMORY_TIERS_MB
from gateway.errors import Invalid
from runtime.sandbox import SandboxSpec

NAME_RE = re.compile(r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$")   # SageMaker's EndpointName pattern
TAG_KEY_RE = re.compile(r"^[\w.:/=+\-@ ]{1,128}$")


@dataclass
class VariantSpec:
    name: str = DEFAULT_VARIANT
    memory_mb: int = 2048
    max_concurrency: int = DEFAULT_MAX_CONCURRENCY
    provisioned: int = 0
    weight: float = 1.0
    bundle_kind: str = ""        # runtime.bundle.PICKLE or SAGEMAKER
    bundle_dir: str = ""         # where the unpacked bundle lives
    bundle_version: int = 0      # bumped on every new bundle; pools are per version
    env: dict = field(default_factory=dict)      # environment of the model's sandboxes (SageMaker Environment)
    network_isolation: bool = False              # EnableNetworkIsolation: never any network
    instance_type: str | None = None             # a real-time variant: this many always-on sandboxes ...
    model_name: str | None = None                # the SageMaker model it serves, when deployed through that API
    image: str | None = None                     # docker backend: the model's own SageMaker-contract image
    model_prefix: str | None = None              # a multi-model variant: where its models are (S3 prefix or directory)
    model_cache: bool = True                     # ... ModelCacheSetting (False: unload after each call)

    # What a sandbox is made of: variants equal in these can share sandboxes.
    SANDBOX_FIELDS = ("memory_mb", "bundle_dir", "bundle_kind", "bundle_version", "env", "network_isolation", "image",
                      "model_prefix", "model_cache")

    @property
    def multi_model(self) -> bool:
        return self.model_prefix is not None

    def sandbox_spec(self, sandbox_id: str, endpoint: str, log_path: str, *, sample=None,
                     check_only: bool = False, vcpus: float = 0.0) -> SandboxSpec:
        """What a backend needs to start one sandbox of this variant."""
        return SandboxSpec(sandbox_id=sandbox_id, endpoint=endpoint, variant=self.name, memory_mb=self.memory_mb,
                           bundle_dir=self.bundle_dir, bundle_kind=self.bundle_kind, log_path=log_path,
                           env=dict(self.env), network_isolation=self.network_isolation, image=self.image,
                           sample=sample, check_only=check_only, vcpus=vcpus)

    def same_sandboxes(self, other: "VariantSpec") -> bool:
        """Whether sandboxes started for this variant can serve ``other`` unchanged."""
        return all(getattr(self, f) == getattr(other, f) for f in self.SANDBOX_FIELDS)

    def validate(self) -> None:
        for name in ("memory_mb", "max_concurrency", "provisioned"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool):
                raise Invalid(f"variant {self.name}: {name} must be a whole number, not {value!r}")
        if not isinstance(self.weight, (int, float)) or isinstance(self.weight, bool):
            raise Invalid(f"variant {self.name}: weight must be a number, not {self.weight!r}")
        if self.instance_type is not None:
            from gateway.sagemaker.instances import UnknownInstanceType, instance_memory_mb

            try:
                memory_mb = instance_memory_mb(self.instance_type)
            except UnknownInstanceType as exc:
                raise Invalid(str(exc)) from None
            if memory_mb != self.memory_mb:
                raise Invalid(f"variant {self.name}: memory must follow instance type {self.instance_type}")
            if not (0 <= self.provisioned == self.max_concurrency <= MAX_CONCURRENCY_RANGE[1]):   # 0: scaled in
                raise Invalid(f"variant {self.name}: an instance variant runs a fixed count of 0.."
                              f"{MAX_CONCURRENCY_RANGE[1]} sandboxes")
            self._check_weight()
            return
        if self.memory_mb not in MEMORY_TIERS_MB:
            raise Invalid(
                f"memory size {self.memory_mb} MB is not allowed; choose one of "
                + ", ".join(str(m) for m in MEMORY_TIERS_MB)
            )
        lo, hi = MAX_CONCURRENCY_RANGE
        if not (lo <= self.max_concurrency <= hi):
            raise Invalid(f"max concurrency {self.max_concurrency} is outside {lo}..{hi}")
        if not (0 <= self.provisioned <= self.max_concurrency):
            raise Invalid(
                f"provisioned concurrency {self.provisioned} is outside 0..{self.max_concurrency} (max concurrency)"
            )
        self._check_weight()

    def _check_weight(self) -> None:
        if not (self.weight >= 0 and math.isfinite(self.weight)):
            raise Invalid(f"variant weight {self.weight} must be a finite number >= 0")


@dataclass
class EndpointSpec:
    name: str
    variants: list[VariantSpec]
    tags: dict[str, str] = field(default_factory=dict)
    created: float = 0.0
    updated: float = 0.0

    def validate(self) -> None:
        if not NAME_RE.match(self.name or ""):
            raise Invalid(
                f"endpoint name {self.name!r} must be 1-63 letters, digits or hyphens, starting with a letter or digit"
            )
        if not self.variants:
            raise Invalid("an endpoint needs at least one variant")
        names = [v.name for v in self.variants]
        if len(set(names)) != len(names):
            raise Invalid("variant names must be unique")
        for v in self.variants:
            v.validate()
        for k, v in self.tags.items():
            if not TAG_KEY_RE.match(k) or len(v) > 256:
                raise Invalid(f"tag {k}={v} is not valid (key 1-128 chars, value up to 256)")

    def variant(self, name: str) -> VariantSpec | None:
        return next((v for v in self.variants if v.name == name), None)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "EndpointSpec":
        variants = [VariantSpec(**v) for v in d.get("variants", [])]
        return cls(name=d["name"], variants=variants, tags=dict(d.get("tags", {})),
                   created=d.get("created", 0.0), updated=d.get("updated", 0.0))


def parse_tags(pairs) -> dict[str, str]:
    tags = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise Invalid(f"tag {pair!r} must be KEY=VALUE")
        tags[key] = value
    return tags


@dataclass
class UsageRecord:
    """One invocation, as billed.

    ``billed_ms`` is the run time the gateway measured (request handed over to answer)
    rounded up to the next whole millisecond (0 when the model never ran, e.g. a throttled
    request);
    ``overhead_ms`` is everything else the caller waited for except a cold
    start's ``init_ms``, so ``model_ms + init_ms + overhead_ms`` is the latency
    the gateway saw.
    """

    request_id: str
    endpoint: str
    variant: str
    memory_mb: int
    start: float                 # Unix seconds when the gateway received the request
    billed_ms: int
    model_ms: float
    overhead_ms: float
    cold_start: bool
    init_ms: float
    status: str                  # "ok" or the SageMaker error code
    error_kind: str | None = None
    bytes_in: int = 0
    bytes_out: int = 0
    sandbox_id: str | None = None
    start_path: str | None = None   # cold starts: fresh, zygote or model-zygote
    init_detail: dict[str, float] | None = None  # cold starts: the phases of init_ms, in ms (JSON when stored)
    backlog_ms: float = 0.0      # asynchronous requests: time queued before this run began
    target_model: str | None = None   # multi-model endpoints: the model the request named

    @staticmethod
    def bill(model_ms: float) -> int:
        return int(math.ceil(model_ms)) if model_ms > 0 else 0

    def to_dict(self) -> dict:
        return asdict(self)


USAGE_FIELDS = [f.name for f in fields(UsageRecord)]


@dataclass
class ProvisionedRecord:
    """Wall time that provisioned sandboxes were held, billed whether used or not."""

    endpoint: str
    variant: str
    memory_mb: int
    start: float                 # Unix seconds
    end: float
    sandboxes: int
    billed_ms: int               # (end - start) * sandboxes, in whole ms

    def to_dict(self) -> dict:
        return asdict(self)


PROVISIONED_FIELDS = [f.name for f in fields(ProvisionedRecord)]


@dataclass
class QueuedRequest:
    """One accepted asynchronous inference request, as the durable queue keeps it.

    ``id`` is made by the server and names the output object, so requests that share an
    ``inference_id`` (a client's label, repeatable) never collide.  States: queued -> running
    (a lease until ``lease_until``, renewed while it runs) -> done | failed | expired; a lease
    that runs out puts it back in the queue for the next claim (at-least-once execution)."""

    id: str
    endpoint: str
    inference_id: str
    received: float              # Unix seconds the 202 was sent at
    expires: float               # dropped (and counted) if not started by then (RequestTTLSeconds)
    timeout_s: float             # InvocationTimeoutSeconds
    output_location: str
    failure_location: str
    input_location: str | None = None    # s3:// (or S3 https) object holding the body ...
    body: bytes | None = None            # ... or the inline body (<= 128,000 bytes)
    content_type: str | None = None
    accept: str | None = None
    custom_attributes: str | None = None
    state: str = "queued"
    attempts: int = 0
    not_before: float = 0.0              # a retry after a storage failure waits until then
    lease_owner: str | None = None
    lease_until: float | None = None
    finished: float | None = None
    error: str | None = None


QUEUE_FIELDS = [f.name for f in fields(QueuedRequest)]
