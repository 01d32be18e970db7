"""Multi-model endpoints against a real gateway, real sandboxes and a real S3-compatible server:
boto3's TargetModel and the SageMaker Python SDK's MultiDataModel unchanged, models added,
replaced and deleted under the prefix, the service's errors, the CLI with a local prefix and
ModelCacheSetting Disabled, and hostile targets: paths out of the prefix, a pickle that does not
unpickle, a model that allocates past its tier while loading, 200 distinct models at once."""
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import boto3
import botocore
import pytest
from botocore.config import Config

from gateway.client import model_tar, pickle_model
from tests.helpers import ROOT, running_gateway, sagemaker_clients, serverless_endpoint, wait_until

pytestmark = pytest.mark.slow

ROLE = "arn:aws:iam::123456789012:role/SageMaker"


def answer(state):
    return lambda x: {"state": state, "got": x}


def s3_client(url):
    return boto3.client("s3", endpoint_url=url, region_name="us-east-1",
                        aws_access_key_id=os.environ["AWS_ACCESS_KEY_ID"],
                        aws_secret_access_key=os.environ["AWS_SECRET_ACCESS_KEY"])


def invoke(rt, name, target, body=b"1"):
    resp = rt.invoke_endpoint(EndpointName=name, Body=body, ContentType="application/json", TargetModel=target)
    return json.loads(resp["Body"].read())


def error_of(fn):
    with pytest.raises(botocore.exceptions.ClientError) as e:
        fn()
    err = e.value.response
    return err["Error"]["Code"], err["Error"]["Message"], err["ResponseMetadata"]["HTTPStatusCode"]


def metrics(gw) -> str:
    return urllib.request.urlopen(gw.url + "/metrics", timeout=10).read().decode()


@pytest.fixture(scope="module")
def bucket(local_s3):
    s3 = s3_client(local_s3.url)
    s3.create_bucket(Bucket="mme")
    s3.put_object(Bucket="mme", Key="states/ny.pkl", Body=pickle_model(answer("ny")))
    s3.put_object(Bucket="mme", Key="states/ca.tar.gz", Body=model_tar(answer("ca")))
    s3.put_object(Bucket="mme", Key="dirs/tx/model.pkl", Body=pickle_model(answer("tx")))
    s3.put_object(Bucket="mme", Key="bad.pkl", Body=b"this is not a pickle")
    return s3


@pytest.fixture(scope="module")
def gw(local_s3, bucket):
    with running_gateway("--s3-endpoint-url", local_s3.url, "--multi-model-recheck", "0", zygote=True) as g:
        yield g


@pytest.fixture(scope="module")
def mme(gw):
    """A multi-model endpoint of s3://mme/ on one ml.m5.large instance, made through boto3."""
    sm, rt = sagemaker_clients(gw.url, "test", "test")
    sm.create_model(ModelName="mme", ExecutionRoleArn=ROLE,
                    PrimaryContainer={"Image": "local/mme:1", "Mode": "MultiModel", "ModelDataUrl": "s3://mme/"})
    sm.create_endpoint_config(EndpointConfigName="mme", ProductionVariants=[
        {"VariantName": "AllTraffic", "ModelName": "mme", "InitialInstanceCount": 1,
         "InstanceType": "ml.m5.large"}])
    sm.create_endpoint(EndpointName="mme", EndpointConfigName="mme")
    sm.get_waiter("endpoint_in_service").wait(EndpointName="mme", WaiterConfig={"Delay": 0.2, "MaxAttempts": 300})
    return sm, rt


def test_boto3_target_models_of_every_form_serve_from_one_endpoint(gw, mme):
    _, rt = mme
    assert invoke(rt, "mme", "states/ny.pkl") == {"state": "ny", "got": 1}
    assert invoke(rt, "mme", "states/ca.tar.gz", b"[1, 2]") == {"state": "ca", "got": [1, 2]}
    assert invoke(rt, "mme", "dirs/tx") == {"state": "tx", "got": 1}
    assert invoke(rt, "mme", "states/ny.pkl", b"2") == {"state": "ny", "got": 2}     # now from the cache
    loaded = gw.client().models("mme")["variants"][0]["models"]
    assert sorted(m["target_model"] for m in loaded) == ["dirs/tx", "states/ca.tar.gz", "states/ny.pkl"]
    assert all(m["memory_bytes"] >= 0 and len(m["sandboxes"]) == 1 for m in loaded)
    usage = gw.client().usage("mme")
    assert [u["target_model"] for u in usage][-4:] == ["states/ny.pkl", "states/ca.tar.gz", "dirs/tx",
                                                       "states/ny.pkl"]
    bill = gw.client().bill(by="target_model")
    rows = {r["target_model"]: r for r in bill["rows"]}
    assert rows["states/ny.pkl"]["invocations"] == 2 and rows["dirs/tx"]["invocations"] == 1
    text = metrics(gw)
    assert 'slimserve_ModelCacheHit_count{endpoint="mme",variant="AllTraffic"} 4.0' in text
    assert 'slimserve_ModelCacheHit_sum{endpoint="mme",variant="AllTraffic"} 1.0' in text
    assert 'slimserve_LoadedModelCount{endpoint="mme",variant="AllTraffic"} 3.0' in text
    assert 'slimserve_ModelLoadingTime_microseconds_count{endpoint="mme",variant="AllTraffic"} 3.0' in text
    assert 'slimserve_ModelDownloadingTime_microseconds_count{endpoint="mme",variant="AllTraffic"} 3.0' in text


def test_the_services_errors_for_missing_unknown_and_unloadable_targets(gw, mme):
    sm, rt = mme
    code, msg, status = error_of(lambda: invoke(rt, "mme", "states/zz.pkl"))
    assert (code, status) == ("ValidationError", 400) and "states/zz.pkl" in msg
    code, msg, status = error_of(lambda: invoke(rt, "mme", "bad.pkl"))
    assert (code, status) == ("ModelError", 424) and "bad.pkl" in msg
    code, msg, status = error_of(lambda: rt.invoke_endpoint(EndpointName="mme", Body=b"1",
                                                            ContentType="application/json"))
    assert (code, status) == ("ValidationError", 400) and "missing a target model header" in msg
    for hostile in ("../states/ny.pkl", "/etc/passwd", "states/../../x.pkl"):
        code, msg, status = error_of(lambda h=hostile: invoke(rt, "mme", h))
        assert (code, status) == ("ValidationError", 400), hostile
    unchecked = boto3.client("sagemaker-runtime", endpoint_url=gw.url, region_name="us-east-1",
                             aws_access_key_id="test", aws_secret_access_key="test",
                             config=Config(parameter_validation=False, retries={"total_max_attempts": 1}))
    code, msg, status = error_of(lambda: invoke(unchecked, "mme", "a" * 2000 + ".pkl"))
    assert (code, status) == ("ValidationError", 400) and "at most 1024" in msg
    serverless_endpoint(sm, "single", {"Image": "local/x:1", "ModelDataUrl": "s3://mme/states/ca.tar.gz"})
    code, msg, status = error_of(lambda: invoke(rt, "single", "states/ny.pkl"))
    assert (code, status) == ("ValidationError", 400)
    assert msg == "Endpoint single is not a multi-model endpoint and does not support target model header."
    assert invoke(rt, "mme", "states/ny.pkl") == {"state": "ny", "got": 1}        # the endpoint kept serving


def test_serverless_variants_refuse_a_multi_model_model(mme):
    sm, _ = mme
    code, msg, status = error_of(lambda: sm.create_endpoint_config(EndpointConfigName="mme-serverless",
                                                                   ProductionVariants=[
        {"VariantName": "AllTraffic", "ModelName": "mme",
         "ServerlessConfig": {"MemorySizeInMB": 2048, "MaxConcurrency": 2}}]))
    assert code == "ValidationException" and "serverless" in msg


def test_models_added_replaced_and_deleted_under_the_prefix_follow_at_their_next_request(gw, mme, bucket):
    _, rt = mme
    bucket.put_object(Bucket="mme", Key="new/wa.pkl", Body=pickle_model(answer("wa")))
    assert invoke(rt, "mme", "new/wa.pkl") == {"state": "wa", "got": 1}          # no change to the endpoint
    bucket.put_object(Bucket="mme", Key="new/wa.pkl", Body=pickle_model(answer("wa-2")))
    assert invoke(rt, "mme", "new/wa.pkl") == {"state": "wa-2", "got": 1}        # a new ETag: reloaded

    def versions():
        return [m for m in gw.client().models("mme")["variants"][0]["models"] if m["target_model"] == "new/wa.pkl"]
    wait_until(lambda: len(versions()) == 1, timeout=10)                          # the old version was unloaded
    bucket.delete_object(Bucket="mme", Key="new/wa.pkl")
    code, msg, _ = error_of(lambda: invoke(rt, "mme", "new/wa.pkl"))
    assert code == "ValidationError" and "new/wa.pkl" in msg
    wait_until(lambda: not versions(), timeout=10)


def test_the_sagemaker_python_sdks_multi_data_model_runs_unchanged(gw, local_s3, monkeypatch, tmp_path):
    sdk = pytest.importorskip("sagemaker", reason="the SageMaker Python SDK (sagemaker<3) is a test extra")
    from sagemaker.deserializers import JSONDeserializer
    from sagemaker.multidatamodel import MultiDataModel
    from sagemaker.predictor import Predictor
    from sagemaker.serializers import JSONSerializer

    for var, url in (("AWS_ENDPOINT_URL_SAGEMAKER", gw.url), ("AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME", gw.url),
                     ("AWS_ENDPOINT_URL_S3", local_s3.url)):
        monkeypatch.setenv(var, url)
    s3_client(local_s3.url).create_bucket(Bucket="sdk-mme")
    session = sdk.Session(boto_session=boto3.Session(region_name="us-east-1"), default_bucket="sdk-mme")
    mdm = MultiDataModel(name="sdk-mme", model_data_prefix="s3://sdk-mme/models/", image_uri="local/mme:1",
                         role=ROLE, sagemaker_session=session, predictor_cls=Predictor)
    predictor = mdm.deploy(initial_instance_count=1, instance_type="ml.m5.large", endpoint_name="sdk-mme",
                           serializer=JSONSerializer(), deserializer=JSONDeserializer(), wait=False)
    session.wait_for_endpoint("sdk-mme", poll=1)
    local = tmp_path / "model.tar.gz"
    local.write_bytes(model_tar(answer("sdk")))
    mdm.add_model(str(local), "fraud/ny.tar.gz")
    mdm.add_model(str(local), "fraud/ca.tar.gz")
    assert sorted(mdm.list_models()) == ["fraud/ca.tar.gz", "fraud/ny.tar.gz"]
    assert predictor.predict({"a": 1}, target_model="fraud/ny.tar.gz") == {"state": "sdk", "got": {"a": 1}}
    assert predictor.predict({"a": 2}, target_model="fraud/ca.tar.gz") == {"state": "sdk", "got": {"a": 2}}
    predictor.delete_endpoint()


@pytest.fixture(scope="module")
def local_prefix():
    root = Path(tempfile.mkdtemp(prefix="mme-local-"))        # under the tests' --model-root
    for i in range(200):
        (root / f"m{i:03d}.pkl").write_bytes(pickle_model(answer(i)))
    (root / "sub").mkdir()
    (root / "sub" / "x.pkl").write_bytes(pickle_model(answer("x")))
    outside = Path(tempfile.mkdtemp(prefix="mme-outside-"))
    (outside / "secret.pkl").write_bytes(pickle_model(answer("secret")))
    (root / "escape.pkl").symlink_to(outside / "secret.pkl")
    (root / "hog.pkl").write_bytes(pickle_model(_Hog()))
    yield root


class _Hog:
    """Unpickles into 1.5 GB: past a 1 GB tier while it loads."""

    def __reduce__(self):
        return (bytearray, (1536 << 20,))


def _cli(gw, *args):
    return subprocess.run([sys.executable, "-m", "gateway.cli", *args], cwd=str(ROOT), env=gw.cli_env(),
                          capture_output=True, text=True, timeout=120)


def test_the_cli_deploys_a_serverless_multi_model_endpoint_and_a_disabled_cache_unloads(gw, local_prefix):
    out = _cli(gw, "deploy", "local-mme", str(local_prefix), "--multi-model", "--memory", "1024", "--format", "json")
    assert out.returncode == 0, out.stderr
    out = _cli(gw, "invoke", "local-mme", "--target-model", "sub/x.pkl", "--data", "7")
    assert out.returncode == 0 and json.loads(out.stdout) == {"state": "x", "got": 7}
    out = _cli(gw, "models", "local-mme", "--format", "json")
    assert [m["target_model"] for m in json.loads(out.stdout)["variants"][0]["models"]] == ["sub/x.pkl"]
    out = _cli(gw, "invoke", "local-mme", "--target-model", "escape.pkl", "--data", "1")
    assert out.returncode != 0 and "Could not find target model escape.pkl" in out.stderr    # a link out: nothing
    out = _cli(gw, "deploy", "no-cache", str(local_prefix), "--multi-model", "--memory", "1024", "--no-model-cache")
    assert out.returncode == 0, out.stderr
    c = gw.client()
    assert c.invoke("no-cache", 3, target_model="m001.pkl") == {"state": 1, "got": 3}
    assert c.models("no-cache")["variants"][0]["models"] == []          # ModelCacheSetting Disabled
    assert c.invoke("no-cache", 4, target_model="m001.pkl") == {"state": 1, "got": 4}


def test_a_model_past_its_tier_while_loading_gets_the_memory_error_and_the_rest_keeps_serving(gw, local_prefix):
    c = gw.client()
    c.deploy("hog-mme", str(local_prefix), memory_mb=1024, multi_model=True)
    assert c.invoke("hog-mme", 1, target_model="m002.pkl") == {"state": 2, "got": 1}
    for _ in range(3):                     # with a neighbour, then alone, then refused without a load
        with pytest.raises(Exception) as e:
            c.invoke("hog-mme", 1, target_model="hog.pkl")
        assert "exceeded its memory tier of 1024 MB" in str(e.value)
        assert c.invoke("hog-mme", 5, target_model="m002.pkl") == {"state": 2, "got": 5}


def test_two_hundred_distinct_models_at_once_are_each_answered_or_throttled(gw, local_prefix):
    c = gw.client()
    c.deploy("many", str(local_prefix), memory_mb=1024, multi_model=True, max_concurrency=20)
    rt = gw.boto()
    results: dict[int, object] = {}

    def call(i):
        try:
            results[i] = invoke(rt, "many", f"m{i:03d}.pkl", b"0")
        except botocore.exceptions.ClientError as exc:
            results[i] = exc.response["Error"]["Code"]

    threads = [threading.Thread(target=call, args=(i,)) for i in range(200)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert len(results) == 200
    ok = [i for i, r in results.items() if isinstance(r, dict)]
    assert all(results[i] == {"state": i, "got": 0} for i in ok)
    assert {r for r in results.values() if not isinstance(r, dict)} <= {"ThrottlingException"}
    assert len(ok) >= 20
    for i in range(0, 200, 7):                                   # every model serves once the rush is over
        assert invoke(rt, "many", f"m{i:03d}.pkl", b"9") == {"state": i, "got": 9}
    time.sleep(0.1)
    loaded = c.models("many")["variants"][0]["models"]
    assert len(loaded) >= 29


def test_a_load_past_the_wait_answers_model_not_ready_while_it_goes_on(local_prefix):
    slow = local_prefix / "slow" / "code"
    slow.mkdir(parents=True, exist_ok=True)
    (slow / "inference.py").write_text("import time\n\ndef model_fn(model_dir):\n    time.sleep(4)\n"
                                       "    return 'slow'\n\n"
                                       "def predict_fn(data, model):\n    return {'model': model, 'got': data}\n")
    with running_gateway("--model-load-wait", "1", zygote=True) as gw:
        c = gw.client()
        c.deploy("slow-mme", str(local_prefix), memory_mb=1024, multi_model=True)
        rt = gw.boto()
        errors_seen = []

        def call():
            try:
                invoke(rt, "slow-mme", "slow")
            except botocore.exceptions.ClientError as exc:
                errors_seen.append((exc.response["Error"]["Code"], exc.response["ResponseMetadata"]["HTTPStatusCode"]))

        threads = [threading.Thread(target=call) for _ in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert errors_seen == [("ModelNotReadyException", 429)] * 3
        wait_until(lambda: c.models("slow-mme")["variants"][0]["models"], timeout=20)
        assert invoke(rt, "slow-mme", "slow") == {"model": "slow", "got": 1}
        assert 'slimserve_ModelLoadingTime_microseconds_count{endpoint="slow-mme",variant="AllTraffic"} 1.0' \
            in metrics(gw)                                  # three callers, one load


def test_detached_loads_hold_their_place_in_max_concurrency(local_prefix):
    for i in range(3):
        code = local_prefix / f"sleepy{i}" / "code"
        code.mkdir(parents=True, exist_ok=True)
        (code / "inference.py").write_text("import time\n\ndef model_fn(d):\n    time.sleep(6)\n    return 1\n")
    with running_gateway("--model-load-wait", "0.5", zygote=True) as gw:
        c = gw.client()
        c.deploy("cap-one", str(local_prefix), memory_mb=1024, multi_model=True, max_concurrency=1)
        rt = gw.boto()
        codes = []
        for i in range(3):                               # one after another: one in flight at a time
            try:
                invoke(rt, "cap-one", f"sleepy{i}")
            except botocore.exceptions.ClientError as exc:
                codes.append(exc.response["Error"]["Code"])
        assert codes == ["ModelNotReadyException", "ThrottlingException", "ThrottlingException"]
        assert len(c.describe("cap-one")["variants"][0]["pool"]["sandboxes"]) == 1


def _code_tar(path: Path, tag: str) -> None:
    import io
    import tarfile

    src = f"def model_fn(d):\n    return None\n\ndef predict_fn(x, m):\n    return {{'code': {tag!r}}}\n".encode()
    with tarfile.open(path, "w:gz") as tar:
        info = tarfile.TarInfo("inference.py")
        info.size = len(src)
        tar.addfile(info, io.BytesIO(src))


def test_a_re_created_endpoint_runs_its_own_shared_code_not_the_deleted_ones(gw, local_prefix):
    sm, rt = sagemaker_clients(gw.url, "test", "test")
    for tag in ("OLD", "NEW"):
        _code_tar(local_prefix / f"{tag}.tar.gz", tag)
        sm.create_model(ModelName=f"shared-{tag}", ExecutionRoleArn=ROLE, PrimaryContainer={
            "Image": "local/mme:1", "Mode": "MultiModel", "ModelDataUrl": str(local_prefix),
            "Environment": {"SAGEMAKER_PROGRAM": "inference.py",
                            "SAGEMAKER_SUBMIT_DIRECTORY": str(local_prefix / f"{tag}.tar.gz")}})
        sm.create_endpoint_config(EndpointConfigName=f"shared-{tag}", ProductionVariants=[
            {"VariantName": "AllTraffic", "ModelName": f"shared-{tag}", "InitialInstanceCount": 1,
             "InstanceType": "ml.t2.medium"}])
        sm.create_endpoint(EndpointName="shared", EndpointConfigName=f"shared-{tag}")
        sm.get_waiter("endpoint_in_service").wait(EndpointName="shared", WaiterConfig={"Delay": 0.2,
                                                                                       "MaxAttempts": 300})
        assert invoke(rt, "shared", "m003.pkl") == {"code": tag}
        sm.delete_endpoint(EndpointName="shared")
        wait_until(lambda: not [e for e in sm.list_endpoints()["Endpoints"] if e["EndpointName"] == "shared"],
                   timeout=60)
