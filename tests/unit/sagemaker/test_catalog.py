"""The SageMaker control plane's operations in-process, over a real store and endpoint service
on a fake backend: resources, their errors as the service words them, tags, and each error
class written the way JSON 1.1 clients parse it."""
from __future__ import annotations

import asyncio
import json

import cloudpickle
import pytest

from gateway import errors
from gateway.clock import FakeClock
from gateway.config import Settings
from gateway.data.cache import ModelCache
from gateway.data.plane import DataPlane
from gateway.data.s3 import S3, S3Config
from gateway.http.wire import admin_error, control_error, runtime_error
from gateway.pools.admission import HostBudget
from gateway.pools.manager import PoolManager
from gateway.pools.policy import FixedKeepAlive
from gateway.sagemaker.api import operations
from gateway.sagemaker.catalog import Catalog
from gateway.serving.endpoints import EndpointService
from gateway.store.sqlite import Store
from tests.fakes import FakeBackend


class DelayedBackend(FakeBackend):
    delay = 0.0

    async def start(self, spec):
        await asyncio.sleep(self.delay)
        return await super().start(spec)


SERVERLESS = {"VariantName": "AllTraffic", "ModelName": "m",
              "ServerlessConfig": {"MemorySizeInMB": 1024, "MaxConcurrency": 2}}


@pytest.fixture
async def ops(tmp_path):
    roots = tmp_path / "models"
    roots.mkdir()
    (roots / "model.pkl").write_bytes(cloudpickle.dumps(lambda x: x))
    settings = Settings(state_dir=tmp_path / "state", model_roots=(roots,))
    settings.bundles_dir.mkdir(parents=True)
    store = Store(settings.db_path)
    await store.open()
    backend = DelayedBackend()
    manager = PoolManager(backend, HostBudget(8192), FakeClock(), tmp_path, policy=FixedKeepAlive(600))
    backend.listeners.append(manager.on_sandbox_event)
    endpoints = EndpointService(settings, store, manager)
    # S3 at a closed loopback port: these tests read local model data only
    data = DataPlane(settings.model_roots, settings.state_dir, S3(S3Config(endpoint_url="http://127.0.0.1:9")),
                     ModelCache(settings.model_cache_dir, 1 << 20))
    await data.cache.open()
    catalog = Catalog(endpoints, store, settings.account_id, settings.region, data,
                      max_model_bytes=settings.max_model_bytes)
    table = operations(catalog)

    async def call(op, **req):
        out = table[op](req)
        return await out if asyncio.iscoroutine(out) else out

    async def settle():
        await asyncio.gather(*list(catalog._tasks))
    call.settle, call.roots, call.endpoints, call.backend = settle, roots, endpoints, backend
    yield call
    await catalog.close()
    await manager.close()
    await store.close()


async def test_a_model_config_and_endpoint_come_up_and_go_away(ops):
    arn = (await ops("CreateModel", ModelName="m",
                     PrimaryContainer={"ModelDataUrl": f"file://{ops.roots}/model.pkl"}))["ModelArn"]
    assert arn == "arn:aws:sagemaker:us-east-1:123456789012:model/m"
    await ops("CreateEndpointConfig", EndpointConfigName="c", ProductionVariants=[SERVERLESS])
    await ops("CreateEndpoint", EndpointName="E1", EndpointConfigName="c")
    # a model that loads at once is InService when CreateEndpoint returns: a waiter's first poll succeeds
    assert (await ops("DescribeEndpoint", EndpointName="E1"))["EndpointStatus"] == "InService"
    d = await ops("DescribeEndpoint", EndpointName="E1")
    assert d["EndpointStatus"] == "InService"
    assert d["ProductionVariants"][0]["CurrentServerlessConfig"] == {"MemorySizeInMB": 1024, "MaxConcurrency": 2}
    assert [e["EndpointName"] for e in (await ops("ListEndpoints", StatusEquals="InService"))["Endpoints"]] == ["E1"]
    await ops("DeleteEndpoint", EndpointName="E1")
    with pytest.raises(errors.NotFound, match='Could not find endpoint "arn:aws:sagemaker:us-east-1:123456789012:'
                                              'endpoint/e1"'):
        await ops("DescribeEndpoint", EndpointName="E1")
    assert "E1" not in ops.endpoints.specs


async def test_a_slow_model_is_left_creating_and_comes_up_in_the_background(ops):
    await ops("CreateModel", ModelName="m", PrimaryContainer={"ModelDataUrl": f"{ops.roots}/model.pkl"})
    await ops("CreateEndpointConfig", EndpointConfigName="c", ProductionVariants=[SERVERLESS])
    ops.backend.delay = 2.5                            # the trial load takes longer than CreateEndpoint waits
    await ops("CreateEndpoint", EndpointName="slow", EndpointConfigName="c")
    assert (await ops("DescribeEndpoint", EndpointName="slow"))["EndpointStatus"] == "Creating"
    await ops.settle()
    assert (await ops("DescribeEndpoint", EndpointName="slow"))["EndpointStatus"] == "InService"


async def test_refusals_carry_the_services_wording(ops):
    url = f"{ops.roots}/model.pkl"
    await ops("CreateModel", ModelName="m", PrimaryContainer={"ModelDataUrl": url})
    with pytest.raises(errors.Conflict, match='Cannot create already existing model "arn:'):
        await ops("CreateModel", ModelName="m", PrimaryContainer={"ModelDataUrl": url})
    with pytest.raises(errors.Invalid, match="read only under a --model-root"):
        await ops("CreateModel", ModelName="x", PrimaryContainer={"ModelDataUrl": "/etc/passwd"})
    with pytest.raises(errors.Invalid, match="slimserve does not fetch other URLs"):
        await ops("CreateModel", ModelName="x", PrimaryContainer={"ModelDataUrl": "http://169.254.169.254/"})
    with pytest.raises(errors.Invalid, match="Member must satisfy regular expression pattern"):
        await ops("CreateModel", ModelName="bad_name!", PrimaryContainer={"ModelDataUrl": url})
    with pytest.raises(errors.Invalid, match="Member must satisfy enum value set"):
        await ops("CreateEndpointConfig", EndpointConfigName="c",
                  ProductionVariants=[dict(SERVERLESS, ServerlessConfig={"MemorySizeInMB": 1000, "MaxConcurrency": 1})])
    with pytest.raises(errors.NotFound, match='Could not find model "arn:aws:sagemaker:us-east-1:123456789012:'
                                              'model/ghost"'):
        await ops("CreateEndpointConfig", EndpointConfigName="c2", ProductionVariants=[dict(SERVERLESS,
                                                                                            ModelName="ghost")])
    with pytest.raises(errors.Invalid, match="Value '5' at 'modelName' failed to satisfy constraint: Member must "
                                             "be a string"):
        await ops("DescribeModel", ModelName=5)
    with pytest.raises(errors.NotFound, match="Could not find endpoint configuration"):
        await ops("CreateEndpoint", EndpointName="e", EndpointConfigName="nope")
    with pytest.raises(errors.Invalid, match="statusEquals"):
        await ops("ListEndpoints", StatusEquals="Sleeping")


async def test_tags_by_arn_reach_the_gateway_endpoint(ops):
    await ops("CreateModel", ModelName="m", PrimaryContainer={"ModelDataUrl": f"{ops.roots}/model.pkl"})
    await ops("CreateEndpointConfig", EndpointConfigName="c", ProductionVariants=[SERVERLESS])
    arn = (await ops("CreateEndpoint", EndpointName="e", EndpointConfigName="c"))["EndpointArn"]
    await ops.settle()
    await ops("AddTags", ResourceArn=arn, Tags=[{"Key": "team", "Value": "risk"}, {"Key": "tier", "Value": "1"}])
    assert ops.endpoints.specs["e"].tags == {"team": "risk", "tier": "1"}
    await ops("DeleteTags", ResourceArn=arn, TagKeys=["tier"])
    assert (await ops("ListTags", ResourceArn=arn))["Tags"] == [{"Key": "team", "Value": "risk"}]
    with pytest.raises(errors.Invalid, match="Invalid ResourceArn"):
        await ops("ListTags", ResourceArn="arn:aws:sagemaker:eu-west-1:123456789012:endpoint/e")


def _doc(resp):
    return json.loads(resp.body), resp.status, resp.headers.get("x-amzn-ErrorType", "").split(":")[0]


@pytest.mark.parametrize("err, control, runtime, admin", [
    (errors.Invalid("x"), ("ValidationException", 400), ("ValidationError", 400), ("ValidationError", 400)),
    (errors.NotFound("x"), ("ValidationException", 400), ("ValidationError", 400), ("NotFound", 404)),
    (errors.Conflict("x"), ("ValidationException", 400), ("ValidationError", 400), ("Conflict", 409)),
    (errors.BundleRejected("x"), ("ValidationException", 400), ("ValidationError", 400), ("BundleRejected", 400)),
    (errors.Malformed("x"), ("SerializationException", 400), ("ValidationError", 400), ("ValidationError", 400)),
    (errors.PayloadTooLarge(10), ("ValidationException", 413), ("ValidationError", 413), ("ValidationError", 400)),
    (errors.Throttled("x"), ("ThrottlingException", 400), ("ThrottlingException", 429), ("Throttled", 429)),
    (errors.NotReady("x"), ("ServiceUnavailable", 503), ("ModelNotReadyException", 429), ("NotReady", 503)),
    (errors.Unavailable("x"), ("ServiceUnavailable", 503), ("ServiceUnavailable", 503), ("Unavailable", 503)),
    (errors.Internal("x"), ("InternalFailure", 500), ("InternalFailure", 500), ("InternalFailure", 500)),
    (errors.Unauthorized("x", "SignatureDoesNotMatch", 403), ("SignatureDoesNotMatch", 403),
     ("SignatureDoesNotMatch", 403), ("Unauthorized", 401)),
])
def test_each_error_class_in_each_wire_flavour(err, control, runtime, admin):
    body, status, header = _doc(control_error(err))
    assert (body["__type"], status) == control and header == control[0]
    body, status, header = _doc(runtime_error(err, "rid"))
    assert (header, status) == runtime and body["message"] == err.message
    body, status, _ = _doc(admin_error(err))
    assert (body["error"], status) == admin


def test_a_model_error_reads_as_botocore_exposes_it():
    err = errors.ModelFailed("model_raised", "boom", 500, "arn:aws:logs:us-east-1:1:log-group:/aws/sagemaker/x")
    body, status, header = _doc(runtime_error(err, "rid", {"X-Amzn-Invoked-Production-Variant": "A"}))
    assert (header, status) == ("ModelError", 424)
    assert body["OriginalStatusCode"] == 500 and body["OriginalMessage"] == "boom"
    assert body["message"].startswith('Received server error (500) from model with message "boom"')


async def test_list_tags_pages_and_refuses_a_bad_page_size(ops):
    await ops("CreateModel", ModelName="m", PrimaryContainer={"ModelDataUrl": f"{ops.roots}/model.pkl"},
              Tags=[{"Key": f"k{i:02}", "Value": str(i)} for i in range(50)])
    arn = "arn:aws:sagemaker:us-east-1:123456789012:model/m"
    first = await ops("ListTags", ResourceArn=arn)
    assert len(first["Tags"]) == 50 and "NextToken" not in first
    for bad in (10, "50", True):
        with pytest.raises(errors.Invalid, match="maxResults"):
            await ops("ListTags", ResourceArn=arn, MaxResults=bad)


GOOD = {
    "CreateModel": {"ModelName": "fz", "PrimaryContainer": {"ModelDataUrl": "MODEL", "Environment": {"A": "1"}},
                    "Tags": [{"Key": "k", "Value": "v"}], "EnableNetworkIsolation": False},
    "CreateEndpointConfig": {"EndpointConfigName": "fzc", "ProductionVariants": [dict(SERVERLESS, ModelName="fz")]},
    "CreateEndpoint": {"EndpointName": "fze", "EndpointConfigName": "fzc"},
    "UpdateEndpointWeightsAndCapacities": {"EndpointName": "fze", "DesiredWeightsAndCapacities": [
        {"VariantName": "AllTraffic", "DesiredWeight": 1.0, "ServerlessUpdateConfig": {"MaxConcurrency": 2}}]},
    "ListEndpoints": {"SortBy": "Name", "SortOrder": "Ascending", "MaxResults": 5, "NameContains": "fz",
                      "StatusEquals": "InService", "CreationTimeAfter": 0, "LastModifiedTimeBefore": 4e9},
    "AddTags": {"ResourceArn": "arn:aws:sagemaker:us-east-1:123456789012:endpoint/fze",
                "Tags": [{"Key": "a", "Value": "b"}]},
    "DeleteTags": {"ResourceArn": "arn:aws:sagemaker:us-east-1:123456789012:endpoint/fze", "TagKeys": ["a"]},
    "UpdateEndpoint": {"EndpointName": "fze", "EndpointConfigName": "fzc"},
    "ListModels": {"NextToken": "bzox", "MaxResults": 5, "SortBy": "CreationTime", "CreationTimeBefore": 4e9},
    "ListEndpointConfigs": {"NameContains": "fz", "SortOrder": "Descending"},
    "ListTags": {"ResourceArn": "arn:aws:sagemaker:us-east-1:123456789012:model/fz", "MaxResults": 50,
                 "NextToken": "bzox"},
    "DescribeModel": {"ModelName": "fz"}, "DescribeEndpointConfig": {"EndpointConfigName": "fzc"},
    "DescribeEndpoint": {"EndpointName": "fze"},
    "DeleteEndpoint": {"EndpointName": "fze"}, "DeleteEndpointConfig": {"EndpointConfigName": "fzc"},
    "DeleteModel": {"ModelName": "fz"},
}
WRONG = [None, 7, -1, True, 1.5, "", "text", [], [1], {}, {"x": 1}, [{"x": 1}]]


def _mutations(doc, path=()):
    """Every way of putting one wrong-typed value at one place of ``doc``."""
    if isinstance(doc, dict):
        for k, v in doc.items():
            for w in WRONG:
                yield path + (k,), {**doc, k: w}
            for p, sub in _mutations(v, path + (k,)):
                yield p, {**doc, k: sub}
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            for p, sub in _mutations(v, path + (i,)):
                yield p, doc[:i] + [sub] + doc[i + 1:]


async def test_no_wrong_typed_member_of_any_request_is_a_500(ops):
    """Each member of each request, replaced by a value of every other JSON type: a gateway
    error (a ValidationException on the wire) every time, never an exception of Python's."""
    model = f"{ops.roots}/model.pkl"
    fill = json.loads(json.dumps(GOOD).replace('"MODEL"', json.dumps(model)))
    await ops("CreateModel", **fill["CreateModel"])
    await ops("CreateEndpointConfig", **fill["CreateEndpointConfig"])
    await ops("CreateEndpoint", **fill["CreateEndpoint"])
    await ops.settle()
    tried = 0
    names = {"CreateModel": "ModelName", "CreateEndpointConfig": "EndpointConfigName", "CreateEndpoint": "EndpointName"}
    for op, doc in fill.items():
        for path, bad in _mutations(doc):
            tried += 1
            if op in names and path[0] != names[op]:        # a new name, so the request gets validated
                bad = {**bad, names[op]: f"fz{tried}"}
            try:
                await ops(op, **bad)
                await ops.settle()
            except errors.SlimserveError:
                pass
            except Exception as exc:  # noqa: BLE001 - what this test exists to find
                pytest.fail(f"{op} with {path} = {bad!r:.200}: {type(exc).__name__}: {exc}")
    assert tried > 500


async def test_nan_and_infinity_are_not_json_and_a_nul_is_no_path(ops):
    from gateway.sagemaker.api import _parse

    for raw in (b'{"x": NaN}', b'{"x": Infinity}', b'{"x": -Infinity}'):
        with pytest.raises(errors.Malformed):
            _parse(raw)
    with pytest.raises(errors.Invalid, match="initialVariantWeight"):
        await ops("CreateEndpointConfig", EndpointConfigName="w", ProductionVariants=[
            dict(SERVERLESS, InitialVariantWeight=float("inf"))])
    with pytest.raises(errors.Invalid, match="ModelDataUrl is not a valid location"):
        await ops("CreateModel", ModelName="nul", PrimaryContainer={"ModelDataUrl": f"{ops.roots}/model\0.pkl"})
