"""Routing an invocation to a variant: TargetVariant when given, else by weight."""
from __future__ import annotations

import random

import pytest

from gateway.domain import EndpointSpec, VariantSpec
from gateway.errors import Invalid
from gateway.serving.router import UnknownVariant, pick_variant


def _spec(*weights):
    return EndpointSpec(name="ep", variants=[VariantSpec(name=f"v{i}", weight=w) for i, w in enumerate(weights)])


def test_target_variant_wins_and_an_unknown_one_is_a_validation_error():
    spec = _spec(1.0, 0.0)
    assert pick_variant(spec, "v1").name == "v1"            # even at weight 0, as on SageMaker
    with pytest.raises(UnknownVariant, match="Variant nope not found for endpoint ep") as err:
        pick_variant(spec, "nope")
    assert isinstance(err.value, Invalid)


def test_weights_split_traffic_in_proportion():
    spec = _spec(3.0, 1.0)
    rng = random.Random(7)
    picks = [pick_variant(spec, None, rng).name for _ in range(20_000)]
    assert abs(picks.count("v0") / len(picks) - 0.75) < 0.02


def test_a_zero_weight_variant_gets_nothing_and_all_zero_falls_back_to_the_first():
    rng = random.Random(1)
    assert {pick_variant(_spec(1.0, 0.0), None, rng).name for _ in range(2000)} == {"v0"}
    assert pick_variant(_spec(0.0, 0.0), None, rng).name == "v0"
    assert pick_variant(_spec(5.0), None, rng).name == "v0"


def test_a_caller_may_leave_out_variants_that_cannot_serve_now():
    spec = EndpointSpec(name="ep", variants=[VariantSpec(name="zero", weight=9.0, max_concurrency=0),
                                             VariantSpec(name="one", weight=1.0, max_concurrency=1)])
    rng = random.Random(3)
    picks = {pick_variant(spec, None, rng, can_serve=lambda v: v.max_concurrency > 0).name for _ in range(200)}
    assert picks == {"one"}
    picks = {pick_variant(spec, None, rng).name for _ in range(200)}              # without: by weight alone
    assert picks == {"zero", "one"}
    nothing = EndpointSpec(name="ep", variants=[VariantSpec(name="zero", max_concurrency=0)])
    assert pick_variant(nothing, None, rng, can_serve=lambda v: False).name == "zero"   # then all of them
