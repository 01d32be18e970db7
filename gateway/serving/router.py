"""Endpoint -> variant routing: by TargetVariant when given, else by weight."""
from __future__ import annotations

import random

from gateway.domain import EndpointSpec, VariantSpec
from gateway.errors import Invalid


class UnknownVariant(Invalid):
    """A TargetVariant the endpoint does not have."""


def pick_variant(spec: EndpointSpec, target: str | None, rng: random.Random | None = None) -> VariantSpec:
    if target:
        v = spec.variant(target)
        if v is None:
            raise UnknownVariant(f"Variant {target} not found for endpoint {spec.name}")
        return v
    if len(spec.variants) == 1:
        return spec.variants[0]
    total = sum(v.weight for v in spec.variants)
    if total <= 0:
        return spec.variants[0]
    x = (rng or random).random() * total
    for v in spec.variants:
        x -= v.weight
        if x < 0:
            return v
    return spec.variants[-1]
