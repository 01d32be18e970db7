"""Endpoint -> variant routing: by TargetVariant when given, else by weight (among the variants
that can serve now, when the caller says which can: an asynchronous request waits in its queue
for a variant with an instance rather than being sent to one scaled to zero)."""
from __future__ import annotations

import random

from gateway.domain import EndpointSpec, VariantSpec
from gateway.errors import Invalid


class UnknownVariant(Invalid):
    """A TargetVariant the endpoint does not have."""


def pick_variant(spec: EndpointSpec, target: str | None, rng: random.Random | None = None,
                 can_serve=None) -> VariantSpec:
    if target:
        v = spec.variant(target)
        if v is None:
            raise UnknownVariant(f"Variant {target} not found for endpoint {spec.name}")
        return v
    variants = [v for v in spec.variants if can_serve(v)] if can_serve is not None else spec.variants
    variants = variants or spec.variants
    if len(variants) == 1:
        return variants[0]
    total = sum(v.weight for v in variants)
    if total <= 0:
        return variants[0]
    x = (rng or random).random() * total
    for v in variants:
        x -= v.weight
        if x < 0:
            return v
    return variants[-1]
