"""The SageMaker control plane through the real boto3 clients: models, configs, endpoints,
waiters, traffic split by weights, blue/green updates under load, tags, errors, SigV4."""
import concurrent.futures as cf
import math
import os
import textwrap
import threading
import time

import boto3
import botocore
import pytest
from botocore.config import Config

from gateway.client import pickle_model
from tests.helpers import running_gateway

FAST = {"Delay": 0.2, "MaxAttempts": 150}
ACCOUNT = "123456789012"


def clients(url, key="x", secret="x", **cfg):
    kw = dict(endpoint_url=url, region_name="us-east-1", aws_access_key_id=key, aws_secret_access_key=secret,
              config=Config(retries={"total_max_attempts": 1}, **cfg))
    return boto3.client("sagemaker", **kw), boto3.client("sagemaker-runtime", **kw)


def _answer(label):
    return lambda x: {"variant": label}


def _env_model(x):
    import os as _os

    return {"greeting": _os.environ.get("GREETING"), "program": _os.environ.get("SAGEMAKER_PROGRAM")}


@pytest.fixture(scope="module")
def gw():
    with running_gateway("--timeout", "10", zygote=True) as g:
        yield g


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    d = tmp_path_factory.mktemp("models")
    for label in ("a", "b", "c"):
        (d / f"{label}.pkl").write_bytes(pickle_model(_answer(label)))
    (d / "env.pkl").write_bytes(pickle_model(_env_model))
    broken = d / "broken"
    (broken / "code").mkdir(parents=True)
    (broken / "code" / "inference.py").write_text(textwrap.dedent("""
        def model_fn(model_dir):
            raise RuntimeError("weights are missing")
    """))
    return d


def _model(sm, name, path, **kw):
    sm.create_model(ModelName=name, PrimaryContainer={"Image": "local/sklearn:1", "ModelDataUrl": str(path), **kw},
                    ExecutionRoleArn=f"arn:aws:iam::{ACCOUNT}:role/Test")


def _serverless(variant, model, weight=1.0, mem=1024):
    return {"VariantName": variant, "ModelName": model, "InitialVariantWeight": weight,
            "ServerlessConfig": {"MemorySizeInMB": mem, "MaxConcurrency": 10}}


def _split(rt, endpoint, n):
    counts = {}
    for _ in range(n):
        r = rt.invoke_endpoint(EndpointName=endpoint, Body=b"{}", ContentType="application/json")
        counts[r["InvokedProductionVariant"]] = counts.get(r["InvokedProductionVariant"], 0) + 1
    return counts


def test_model_config_endpoint_lifecycle_with_waiters_and_weights(gw, data):
    sm, rt = clients(gw.url)
    _model(sm, "m-a", data / "a.pkl")
    _model(sm, "m-b", f"file://{data / 'b.pkl'}")
    desc = sm.describe_model(ModelName="m-a")
    assert desc["ModelArn"] == f"arn:aws:sagemaker:us-east-1:{ACCOUNT}:model/m-a"
    assert desc["PrimaryContainer"]["Image"] == "local/sklearn:1"
    sm.create_endpoint_config(EndpointConfigName="cfg-ab", ProductionVariants=[
        _serverless("Blue", "m-a", 0.9), _serverless("Green", "m-b", 0.1)],
        DataCaptureConfig={"EnableCapture": True, "InitialSamplingPercentage": 50,
                           "DestinationS3Uri": "s3://bucket/capture",
                           "CaptureOptions": [{"CaptureMode": "Input"}]})
    assert sm.describe_endpoint_config(EndpointConfigName="cfg-ab")["ProductionVariants"][1]["VariantName"] == "Green"
    arn = sm.create_endpoint(EndpointName="split", EndpointConfigName="cfg-ab",
                             Tags=[{"Key": "team", "Value": "fraud"}])["EndpointArn"]
    assert arn == f"arn:aws:sagemaker:us-east-1:{ACCOUNT}:endpoint/split"
    assert sm.describe_endpoint(EndpointName="split")["EndpointStatus"] in ("Creating", "InService")
    sm.get_waiter("endpoint_in_service").wait(EndpointName="split", WaiterConfig=FAST)

    d = sm.describe_endpoint(EndpointName="split")
    assert d["EndpointStatus"] == "InService" and d["EndpointConfigName"] == "cfg-ab"
    weights = {v["VariantName"]: v["CurrentWeight"] for v in d["ProductionVariants"]}
    assert weights == {"Blue": 0.9, "Green": 0.1}
    assert d["ProductionVariants"][0]["CurrentServerlessConfig"] == {"MemorySizeInMB": 1024, "MaxConcurrency": 10}
    assert d["ProductionVariants"][0]["DeployedImages"][0]["SpecifiedImage"] == "local/sklearn:1"
    assert d["DataCaptureConfig"]["CurrentSamplingPercentage"] == 50

    n = 400
    counts = _split(rt, "split", n)
    sigma = math.sqrt(n * 0.9 * 0.1)
    assert abs(counts.get("Blue", 0) - 0.9 * n) < 4 * sigma, counts        # 4 sigma: fails by chance ~1e-4
    sm.update_endpoint_weights_and_capacities(EndpointName="split", DesiredWeightsAndCapacities=[
        {"VariantName": "Blue", "DesiredWeight": 0.1}, {"VariantName": "Green", "DesiredWeight": 0.9}])
    sm.get_waiter("endpoint_in_service").wait(EndpointName="split", WaiterConfig=FAST)
    counts = _split(rt, "split", n)
    assert abs(counts.get("Green", 0) - 0.9 * n) < 4 * sigma, counts

    import urllib.request

    metrics = urllib.request.urlopen(f"{gw.url}/metrics").read().decode()      # per-variant metrics
    for variant in ("Blue", "Green"):
        assert f'slimserve_invocations_total{{endpoint="split",status="ok",variant="{variant}"}}' in metrics
        assert f'slimserve_model_latency_seconds_count{{endpoint="split",variant="{variant}"}}' in metrics
    per_variant = {u["variant"] for u in gw.client().usage(endpoint="split")}
    assert per_variant == {"Blue", "Green"}

    r = rt.invoke_endpoint(EndpointName="split", Body=b"{}", ContentType="application/json", TargetVariant="Blue")
    assert r["InvokedProductionVariant"] == "Blue" and b'"a"' in r["Body"].read()
    with pytest.raises(rt.exceptions.ValidationError, match="Variant Nope"):
        rt.invoke_endpoint(EndpointName="split", Body=b"{}", TargetVariant="Nope")

    assert sm.list_tags(ResourceArn=arn)["Tags"] == [{"Key": "team", "Value": "fraud"}]
    sm.add_tags(ResourceArn=arn, Tags=[{"Key": "env", "Value": "test"}])
    sm.delete_tags(ResourceArn=arn, TagKeys=["team"])
    assert sm.list_tags(ResourceArn=arn)["Tags"] == [{"Key": "env", "Value": "test"}]
    assert gw.client().describe("split")["tags"] == {"env": "test"}          # the same endpoint, for bills
    sm.add_tags(ResourceArn=desc["ModelArn"], Tags=[{"Key": "owner", "Value": "ml"}])
    assert sm.list_tags(ResourceArn=desc["ModelArn"])["Tags"] == [{"Key": "owner", "Value": "ml"}]

    sm.delete_endpoint(EndpointName="split")
    sm.get_waiter("endpoint_deleted").wait(EndpointName="split", WaiterConfig=FAST)
    with pytest.raises(botocore.exceptions.ClientError, match='Could not find endpoint "arn:aws:sagemaker'):
        sm.describe_endpoint(EndpointName="split")


def test_failed_model_reports_failure_reason_and_the_waiter_stops(gw, data):
    sm, _ = clients(gw.url)
    _model(sm, "m-broken", data / "broken")
    sm.create_endpoint_config(EndpointConfigName="cfg-broken",
                              ProductionVariants=[_serverless("AllTraffic", "m-broken")])
    sm.create_endpoint(EndpointName="broken", EndpointConfigName="cfg-broken")
    with pytest.raises(botocore.exceptions.WaiterError):
        sm.get_waiter("endpoint_in_service").wait(EndpointName="broken", WaiterConfig=FAST)
    d = sm.describe_endpoint(EndpointName="broken")
    assert d["EndpointStatus"] == "Failed" and "weights are missing" in d["FailureReason"]
    assert sm.list_endpoints(StatusEquals="Failed")["Endpoints"][0]["EndpointName"] == "broken"
    sm.delete_endpoint(EndpointName="broken")


def test_environment_reaches_the_model_and_instance_variants_run_fixed_counts(gw, data):
    sm, rt = clients(gw.url)
    _model(sm, "m-env", data / "env.pkl", Environment={"GREETING": "hello", "SAGEMAKER_PROGRAM": "inference.py"})
    sm.create_endpoint_config(EndpointConfigName="cfg-env", ProductionVariants=[{
        "VariantName": "OnInstances", "ModelName": "m-env", "InstanceType": "ml.t2.medium",
        "InitialInstanceCount": 2, "InitialVariantWeight": 1.0}])
    sm.create_endpoint(EndpointName="env", EndpointConfigName="cfg-env")
    sm.get_waiter("endpoint_in_service").wait(EndpointName="env", WaiterConfig=FAST)
    body = rt.invoke_endpoint(EndpointName="env", Body=b"{}", ContentType="application/json")["Body"].read()
    assert b'"greeting": "hello"' in body and b"inference.py" in body
    v = sm.describe_endpoint(EndpointName="env")["ProductionVariants"][0]
    assert v["DesiredInstanceCount"] == 2
    deadline = time.time() + 30
    while sm.describe_endpoint(EndpointName="env")["ProductionVariants"][0]["CurrentInstanceCount"] < 2:
        assert time.time() < deadline, "the instance variant never reached its count"
        time.sleep(0.2)
    sm.update_endpoint_weights_and_capacities(EndpointName="env", DesiredWeightsAndCapacities=[
        {"VariantName": "OnInstances", "DesiredInstanceCount": 1}])
    assert sm.describe_endpoint(EndpointName="env")["ProductionVariants"][0]["DesiredInstanceCount"] == 1
    sm.delete_endpoint(EndpointName="env")


def test_blue_green_update_under_load_fails_no_request(gw, data):
    sm, rt = clients(gw.url)
    _model(sm, "m-old", data / "a.pkl")
    _model(sm, "m-new", data / "c.pkl")
    sm.create_endpoint_config(EndpointConfigName="cfg-old", ProductionVariants=[_serverless("AllTraffic", "m-old")])
    sm.create_endpoint_config(EndpointConfigName="cfg-new",
                              ProductionVariants=[_serverless("AllTraffic", "m-new", mem=2048)])
    sm.create_endpoint(EndpointName="bg", EndpointConfigName="cfg-old")
    sm.get_waiter("endpoint_in_service").wait(EndpointName="bg", WaiterConfig=FAST)

    stop = threading.Event()
    seen, failures = [], []

    def hammer():
        _, rt2 = clients(gw.url)
        while not stop.is_set():
            try:
                r = rt2.invoke_endpoint(EndpointName="bg", Body=b"{}", ContentType="application/json")
                seen.append(r["Body"].read())
            except Exception as exc:  # noqa: BLE001 - any failure is what this test looks for
                failures.append(repr(exc))

    with cf.ThreadPoolExecutor(4) as pool:
        futures = [pool.submit(hammer) for _ in range(4)]
        time.sleep(0.5)
        sm.update_endpoint(EndpointName="bg", EndpointConfigName="cfg-new")
        assert sm.describe_endpoint(EndpointName="bg")["EndpointStatus"] in ("Updating", "InService")
        sm.get_waiter("endpoint_in_service").wait(EndpointName="bg", WaiterConfig=FAST)
        time.sleep(1.0)
        stop.set()
        for f in futures:
            f.result()
    assert not failures, failures[:3]
    assert any(b'"a"' in s for s in seen) and b'"c"' in seen[-1]
    d = sm.describe_endpoint(EndpointName="bg")
    assert d["EndpointConfigName"] == "cfg-new"
    assert d["ProductionVariants"][0]["CurrentServerlessConfig"]["MemorySizeInMB"] == 2048
    sm.delete_endpoint(EndpointName="bg")


def test_errors_read_as_the_real_service_writes_them(gw, data):
    sm, _ = clients(gw.url)
    arn = f"arn:aws:sagemaker:us-east-1:{ACCOUNT}"
    cases = [
        (lambda: sm.describe_endpoint(EndpointName="ghost"), f'Could not find endpoint "{arn}:endpoint/ghost".'),
        (lambda: sm.describe_model(ModelName="Ghost"), f'Could not find model "{arn}:model/ghost".'),
        (lambda: sm.describe_endpoint_config(EndpointConfigName="ghost"),
         f'Could not find endpoint configuration "{arn}:endpoint-config/ghost".'),
        (lambda: sm.delete_endpoint(EndpointName="ghost"), "Could not find endpoint"),
        (lambda: sm.create_endpoint(EndpointName="x1", EndpointConfigName="ghost"),
         "Could not find endpoint configuration"),
        (lambda: sm.create_endpoint_config(EndpointConfigName="big", ProductionVariants=[
            {"VariantName": "v", "ModelName": "m", "ServerlessConfig": {"MemorySizeInMB": 8192, "MaxConcurrency": 5}}]),
         "Member must satisfy enum value set: [1024, 2048, 3072, 4096, 5120, 6144]"),
        (lambda: sm.create_endpoint_config(EndpointConfigName="gpu", ProductionVariants=[
            {"VariantName": "v", "ModelName": "m", "InstanceType": "ml.p3.2xlarge", "InitialInstanceCount": 1}]),
         "instanceType"),
        (lambda: sm.create_endpoint_config(EndpointConfigName="bad name!", ProductionVariants=[
            _serverless("v", "m")]), "regular expression pattern"),
        (lambda: sm.list_endpoints(SortBy="Colour"),
         "Member must satisfy enum value set: [Name, CreationTime, Status]"),
    ]
    _model(sm, "m-dup", data / "a.pkl")
    cases.append((lambda: _model(sm, "m-dup", data / "a.pkl"),
                  f'Cannot create already existing model "{arn}:model/m-dup".'))
    for call, message in cases:
        with pytest.raises(botocore.exceptions.ClientError) as info:
            call()
        err = info.value.response
        assert err["Error"]["Code"] == "ValidationException", err
        assert err["ResponseMetadata"]["HTTPStatusCode"] == 400
        assert message in err["Error"]["Message"], (message, err["Error"]["Message"])
    with pytest.raises(botocore.exceptions.ClientError, match="UnknownOperation"):
        sm._make_api_call("ListTrainingJobs", {})
    # an S3 endpoint that does not answer (conftest points S3 at a closed port): a 503 to retry
    with pytest.raises(botocore.exceptions.ClientError) as info:
        sm.create_model(ModelName="m-s3", PrimaryContainer={"ModelDataUrl": "s3://bucket/model.tar.gz"})
    assert info.value.response["Error"]["Code"] == "ServiceUnavailable"
    assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == 503
    assert "Could not read model data at s3://bucket/model.tar.gz: S3 at http://127.0.0.1:9 did not answer" in \
        info.value.response["Error"]["Message"]


def test_listing_sorts_filters_and_paginates(gw, data):
    sm, _ = clients(gw.url)
    for i in range(7):
        _model(sm, f"page-{i}", data / "a.pkl")
    names = [m["ModelName"] for page in sm.get_paginator("list_models").paginate(
        NameContains="page-", SortBy="Name", SortOrder="Ascending", PaginationConfig={"PageSize": 3})
        for m in page["Models"]]
    assert names == [f"page-{i}" for i in range(7)]
    first = sm.list_models(NameContains="page", MaxResults=3, SortBy="CreationTime")
    assert len(first["Models"]) == 3 and first["NextToken"]
    assert first["Models"][0]["ModelName"] == "page-6"           # newest first by default
    for i in range(7):
        sm.delete_model(ModelName=f"page-{i}")


def test_cli_endpoints_appear_in_the_sagemaker_api(gw, data):
    sm, rt = clients(gw.url)
    gw.client().deploy("from-cli", _answer("cli"), memory_mb=1024, tags={"team": "cli"})
    d = sm.describe_endpoint(EndpointName="from-cli")
    assert d["EndpointStatus"] == "InService" and d["ProductionVariants"][0]["VariantName"] == "AllTraffic"
    assert "from-cli" in [e["EndpointName"] for e in sm.list_endpoints(MaxResults=100)["Endpoints"]]
    assert sm.list_tags(ResourceArn=d["EndpointArn"])["Tags"] == [{"Key": "team", "Value": "cli"}]
    # the chain a SageMaker tool follows: endpoint -> its config -> the config's models
    config = sm.describe_endpoint_config(EndpointConfigName=d["EndpointConfigName"])
    assert d["EndpointConfigName"] == "from-cli" and config["ProductionVariants"] == [
        {"VariantName": "AllTraffic", "ModelName": "from-cli", "InitialVariantWeight": 1.0,
         "ServerlessConfig": {"MemorySizeInMB": 1024, "MaxConcurrency": 20}}]
    model = sm.describe_model(ModelName=config["ProductionVariants"][0]["ModelName"])
    assert model["ModelArn"].endswith(":model/from-cli") and model["PrimaryContainer"]["Mode"] == "SingleModel"
    assert "from-cli" in [m["ModelName"] for m in sm.list_models(MaxResults=100)["Models"]]
    assert "from-cli" in [c["EndpointConfigName"] for c in sm.list_endpoint_configs(MaxResults=100)["EndpointConfigs"]]
    with pytest.raises(sm.exceptions.ClientError, match="delete the endpoint instead"):
        sm.delete_model(ModelName="from-cli")
    sm.delete_endpoint(EndpointName="from-cli")
    with pytest.raises(sm.exceptions.ClientError, match="Could not find model"):
        sm.describe_model(ModelName="from-cli")
    assert all(e["name"] != "from-cli" for e in gw.client().endpoints())


# --- SigV4 ----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def signed_gw():
    with running_gateway("--access-key", "AKIDSLIMSERVE:s3cr3t-key", "--no-zygotes") as g:
        yield g


def test_signed_requests_pass_and_unsigned_or_missigned_ones_get_aws_errors(signed_gw, data):
    sm, rt = clients(signed_gw.url, "AKIDSLIMSERVE", "s3cr3t-key")
    _model(sm, "signed", data / "a.pkl")
    sm.create_endpoint_config(EndpointConfigName="signed", ProductionVariants=[_serverless("AllTraffic", "signed")])
    sm.create_endpoint(EndpointName="signed", EndpointConfigName="signed")
    sm.get_waiter("endpoint_in_service").wait(EndpointName="signed", WaiterConfig=FAST)
    r = rt.invoke_endpoint(EndpointName="signed", Body=b"{}", ContentType="application/json")
    assert b'"a"' in r["Body"].read()

    bad_sm, bad_rt = clients(signed_gw.url, "AKIDSLIMSERVE", "wrong")
    for call in (lambda: bad_sm.list_endpoints(), lambda: bad_rt.invoke_endpoint(EndpointName="signed", Body=b"{}")):
        with pytest.raises(botocore.exceptions.ClientError) as info:
            call()
        assert info.value.response["Error"]["Code"] == "InvalidSignatureException"
    stranger, _ = clients(signed_gw.url, "AKIDSTRANGER", "s3cr3t-key")
    with pytest.raises(botocore.exceptions.ClientError, match="UnrecognizedClient"):
        stranger.list_models()
    anon, anon_rt = clients(signed_gw.url, signature_version=botocore.UNSIGNED)
    with pytest.raises(botocore.exceptions.ClientError) as info:
        anon.list_models()
    assert info.value.response["Error"]["Code"] == "MissingAuthenticationTokenException"
    assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
    with pytest.raises(botocore.exceptions.ClientError, match="MissingAuthenticationToken"):
        anon_rt.invoke_endpoint(EndpointName="signed", Body=b"{}")
    assert [e["name"] for e in signed_gw.client().endpoints()] == ["signed"]      # the admin token still works


def test_sagemaker_python_sdk_predictor(gw, data):
    # conftest sets the region, keys and AWS_EC2_METADATA_DISABLED before anything imports the SDK,
    # which otherwise asks the EC2 metadata address for a region at import time
    assert os.environ["AWS_EC2_METADATA_DISABLED"] == "true"
    sdk = pytest.importorskip("sagemaker", reason="the SageMaker Python SDK (sagemaker<3) is a test extra")
    from sagemaker.deserializers import JSONDeserializer
    from sagemaker.predictor import Predictor
    from sagemaker.serializers import JSONSerializer

    sm, rt = clients(gw.url)
    _model(sm, "m-sdk", data / "b.pkl")
    sm.create_endpoint_config(EndpointConfigName="cfg-sdk", ProductionVariants=[_serverless("AllTraffic", "m-sdk")])
    sm.create_endpoint(EndpointName="sdk", EndpointConfigName="cfg-sdk")
    session = sdk.Session(boto_session=boto3.Session(region_name="us-east-1"), sagemaker_client=sm,
                          sagemaker_runtime_client=rt)
    session.wait_for_endpoint("sdk", poll=0.2)
    predictor = Predictor("sdk", sagemaker_session=session, serializer=JSONSerializer(),
                          deserializer=JSONDeserializer())
    assert predictor.predict({"x": 1}) == {"variant": "b"}
    predictor.delete_endpoint()             # DescribeEndpoint -> DeleteEndpointConfig -> DeleteEndpoint
    with pytest.raises(botocore.exceptions.ClientError, match="Could not find endpoint"):
        sm.describe_endpoint(EndpointName="sdk")


def test_models_configs_and_endpoints_survive_a_restart(fresh_gateway, data):
    g = fresh_gateway()
    g.wait_for_zygote()
    sm, _ = clients(g.url)
    _model(sm, "kept", data / "a.pkl")
    sm.create_endpoint_config(EndpointConfigName="kept", ProductionVariants=[_serverless("AllTraffic", "kept")])
    sm.create_endpoint(EndpointName="kept", EndpointConfigName="kept", Tags=[{"Key": "team", "Value": "ops"}])
    sm.get_waiter("endpoint_in_service").wait(EndpointName="kept", WaiterConfig=FAST)
    g.stop()
    g2 = fresh_gateway()
    sm, rt = clients(g2.url)
    assert sm.describe_model(ModelName="kept")["ModelName"] == "kept"
    assert sm.describe_endpoint_config(EndpointConfigName="kept")["ProductionVariants"][0]["ModelName"] == "kept"
    d = sm.describe_endpoint(EndpointName="kept")
    assert d["EndpointStatus"] == "InService" and d["EndpointConfigName"] == "kept"
    assert sm.list_tags(ResourceArn=d["EndpointArn"])["Tags"] == [{"Key": "team", "Value": "ops"}]
    assert b'"a"' in rt.invoke_endpoint(EndpointName="kept", Body=b"{}", ContentType="application/json")["Body"].read()


def test_update_of_a_cli_endpoint_goes_through_updating(gw, data):
    sm, rt = clients(gw.url)
    gw.client().deploy("cli-upd", _answer("old"), memory_mb=1024)
    _model(sm, "m-upd", data / "b.pkl")
    sm.create_endpoint_config(EndpointConfigName="cfg-upd", ProductionVariants=[_serverless("AllTraffic", "m-upd")])
    sm.update_endpoint(EndpointName="cli-upd", EndpointConfigName="cfg-upd")
    first = sm.describe_endpoint(EndpointName="cli-upd")
    assert first["EndpointStatus"] in ("Updating", "InService")
    sm.get_waiter("endpoint_in_service").wait(EndpointName="cli-upd", WaiterConfig=FAST)
    d = sm.describe_endpoint(EndpointName="cli-upd")
    assert d["EndpointConfigName"] == "cfg-upd" and "PendingDeploymentSummary" not in d
    r = rt.invoke_endpoint(EndpointName="cli-upd", Body=b"{}", ContentType="application/json")
    assert b'"b"' in r["Body"].read()
    sm.delete_endpoint(EndpointName="cli-upd")


def _signed_raw(gw, method, path, body=b"", headers=None):
    import urllib.error
    import urllib.request

    from gateway.sagemaker.credentials import AccessKey
    from gateway.sagemaker.sigv4 import sign_url
    from tests.helpers import TEST_KEYS

    url = gw.url + path
    hdrs = sign_url(method, url, body, AccessKey(*TEST_KEYS[0].split(":")), "us-east-1", headers)
    req = urllib.request.Request(url, data=body or None, method=method, headers=hdrs)
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def test_unknown_paths_methods_and_over_deep_json_get_the_error_shapes_clients_parse(gw):
    import json as _json

    status, hdrs, body = _signed_raw(gw, "POST", "/no/such/operation", b"{}")
    assert status == 404 and hdrs["Content-Type"].startswith("application/json")
    assert _json.loads(body)["ErrorCode"] == "UnknownOperationException"
    assert hdrs["x-amzn-ErrorType"].startswith("UnknownOperationException")
    status, hdrs, body = _signed_raw(gw, "GET", "/")
    assert status == 405 and _json.loads(body)["__type"] == "UnknownOperationException"
    deep = b"[" * 100_000 + b"]" * 100_000
    status, _, body = _signed_raw(gw, "POST", "/", deep, {"X-Amz-Target": "SageMaker.ListModels",
                                                           "Content-Type": "application/x-amz-json-1.1"})
    assert status == 400 and _json.loads(body)["__type"] == "ValidationException"
    assert "too deeply" in _json.loads(body)["message"]
