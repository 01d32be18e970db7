"""The SageMaker API's request rules as pure functions: names, production variants, tags,
listing (sort, filter, paginate), each refusal a ValidationException worded like the service's."""
from __future__ import annotations

import pytest

from gateway.errors import Invalid
from gateway.sagemaker import shapes

DOCS = [{"Name": n, "CreationTime": t, "EndpointStatus": s}
        for n, t, s in [("alpha", 3.0, "InService"), ("beta", 1.0, "Failed"), ("gamma", 2.0, "InService"),
                        ("Alphabet", 4.0, "Creating")]]


def _page(**req):
    return shapes.list_page(req, list(DOCS), "Name", "Items", lambda d: d["Name"], ("Name", "CreationTime", "Status"))


def test_names_follow_the_services_pattern():
    assert shapes.check_name({"EndpointName": "my-endpoint-1"}, "EndpointName") == "my-endpoint-1"
    for bad in ("-lead", "trail-", "under_score", "a" * 64, "", None, 7):
        with pytest.raises(Invalid, match="endpointName"):
            shapes.check_name({"EndpointName": bad}, "EndpointName")


@pytest.mark.parametrize("variant, message", [
    ({"VariantName": "v", "ModelName": "m"}, "either ServerlessConfig or InstanceType"),
    ({"VariantName": "v", "ModelName": "m", "ServerlessConfig": {"MemorySizeInMB": 1000, "MaxConcurrency": 1}},
     "memorySizeInMB"),
    ({"VariantName": "v", "ModelName": "m", "ServerlessConfig": {"MemorySizeInMB": 1024, "MaxConcurrency": 201}},
     "maxConcurrency"),
    ({"VariantName": "v", "ModelName": "m",
      "ServerlessConfig": {"MemorySizeInMB": 1024, "MaxConcurrency": 2, "ProvisionedConcurrency": 3}},
     "ProvisionedConcurrency"),
    ({"VariantName": "v", "ModelName": "m", "InstanceType": "ml.nope", "InitialInstanceCount": 1}, "instanceType"),
    ({"VariantName": "v", "ModelName": "m", "InstanceType": "ml.m5.large", "InitialInstanceCount": 0},
     "initialInstanceCount"),
    ({"VariantName": "v", "ModelName": "m", "InstanceType": "ml.m5.large", "InitialInstanceCount": 1,
      "InitialVariantWeight": -1}, "initialVariantWeight"),
    ("not an object", "must be an object"),
])
def test_production_variants_are_checked(variant, message):
    with pytest.raises(Invalid, match=message):
        shapes.check_variant(variant, 1)


def test_good_variants_pass():
    shapes.check_variant({"VariantName": "v", "ModelName": "m",
                          "ServerlessConfig": {"MemorySizeInMB": 6144, "MaxConcurrency": 200}}, 1)
    shapes.check_variant({"VariantName": "v", "ModelName": "m", "InstanceType": "ml.m5.large",
                          "InitialInstanceCount": 2, "InitialVariantWeight": 0}, 1)


def test_listing_sorts_filters_and_pages_through_everything_once():
    assert _page()["Items"] == ["Alphabet", "alpha", "gamma", "beta"]            # CreationTime, descending
    assert _page(SortBy="Name", SortOrder="Ascending")["Items"] == ["Alphabet", "alpha", "beta", "gamma"]
    assert _page(NameContains="ALPHA")["Items"] == ["Alphabet", "alpha"]           # case-insensitive
    assert _page(CreationTimeAfter=1.5, CreationTimeBefore=3.5)["Items"] == ["alpha", "gamma"]
    seen, token = [], None
    while True:
        page = _page(MaxResults=3, **({"NextToken": token} if token else {}))
        seen += page["Items"]
        token = page.get("NextToken")
        if token is None:
            break
    assert seen == _page()["Items"]


@pytest.mark.parametrize("req, message", [
    ({"SortBy": "Size"}, "sortBy"), ({"SortOrder": "Up"}, "sortOrder"), ({"NameContains": "a b"}, "nameContains"),
    ({"NameContains": 7}, "nameContains"), ({"MaxResults": 0}, "maxResults"), ({"MaxResults": "10"}, "maxResults"),
    ({"NextToken": "garbage!"}, "pagination token"), ({"NextToken": 12}, "pagination token"),
    ({"NextToken": ["o:1"]}, "pagination token"), ({"CreationTimeAfter": "yesterday"}, "timestamp"),
])
def test_listing_refuses_bad_members_with_validation_errors(req, message):
    with pytest.raises(Invalid, match=message):
        _page(**req)


def test_tags_are_checked_and_kept_in_order():
    assert shapes.tags_of([{"Key": "b", "Value": "1"}, {"Key": "a"}]) == [{"Key": "b", "Value": "1"},
                                                                           {"Key": "a", "Value": ""}]
    for bad in ("team=risk", [{"Key": ""}], [{"Key": "k", "Value": 5}], [{"Key": "k"}] * 51, [["k", "v"]]):
        with pytest.raises(Invalid):
            shapes.tags_of(bad)
