"""Asynchronous inference against a real gateway and a real S3-compatible server (SeaweedFS):
InvokeEndpointAsync in both request shapes through boto3, the server's own checks of every
limit, the output and failure objects, the queue across a ``kill -9``, DeleteEndpoint with a
backlog, S3 going away while requests wait, 1,000 queued requests, and the SageMaker Python
SDK's AsyncPredictor."""
import json
import socket
import threading

import boto3
import botocore
import pytest
from botocore.config import Config

from tests import models
from tests.helpers import running_gateway, sagemaker_clients, wait_until
from tests.integration.test_s3 import model_tar, s3_client

pytestmark = pytest.mark.slow
OUT = "async-out"


@pytest.fixture(scope="module")
def s3(local_s3):
    c = s3_client(local_s3.url)
    for b in ("async-models", OUT, "async-in"):
        c.create_bucket(Bucket=b)
    c.put_object(Bucket="async-models", Key="work/model.tar.gz", Body=model_tar(models.async_work))
    return c


# Instance variants reserve their instance's memory (4 GB each here) for as long as they exist;
# the tests' models use a few MB, so the budget is set past the machine's RAM to hold them all.
BUDGET = ("--memory-budget-mb", "200000")


@pytest.fixture(scope="module")
def gw(local_s3, s3):
    with running_gateway("--s3-endpoint-url", local_s3.url, "--timeout", "5", "--autoscaling-interval", "0.5", *BUDGET,
                         zygote=True) as g:
        yield g


def async_endpoint(sm, name, instances=1, output=f"s3://{OUT}/{{name}}/out", failure=f"s3://{OUT}/{{name}}/fail",
                   extra=None):
    sm.create_model(ModelName=name, PrimaryContainer={"ModelDataUrl": "s3://async-models/work/model.tar.gz"})
    out = {"S3OutputPath": output.format(name=name)}
    if failure:
        out["S3FailurePath"] = failure.format(name=name)
    sm.create_endpoint_config(EndpointConfigName=name, ProductionVariants=[
        {"VariantName": "v", "ModelName": name, "InstanceType": "ml.t2.medium", "InitialInstanceCount": instances}],
        AsyncInferenceConfig=dict({"OutputConfig": out}, **(extra or {})))
    sm.create_endpoint(EndpointName=name, EndpointConfigName=name)
    sm.get_waiter("endpoint_in_service").wait(EndpointName=name, WaiterConfig={"Delay": 0.25, "MaxAttempts": 200})


def sync_endpoint(sm, name):
    """The same model on a synchronous instance endpoint (no AsyncInferenceConfig)."""
    sm.create_model(ModelName=name, PrimaryContainer={"ModelDataUrl": "s3://async-models/work/model.tar.gz"})
    sm.create_endpoint_config(EndpointConfigName=name, ProductionVariants=[
        {"VariantName": "v", "ModelName": name, "InstanceType": "ml.t2.medium", "InitialInstanceCount": 1}])
    sm.create_endpoint(EndpointName=name, EndpointConfigName=name)
    sm.get_waiter("endpoint_in_service").wait(EndpointName=name, WaiterConfig={"Delay": 0.25})


def key_of(url):
    assert url.startswith("s3://")
    return url[5:].split("/", 1)


def fetch(s3, url, timeout=30.0):
    """The object at ``url`` once it exists (polled as a client polls HeadObject)."""
    bucket, key = key_of(url)

    def get():
        try:
            return s3.get_object(Bucket=bucket, Key=key)["Body"].read()
        except s3.exceptions.NoSuchKey:
            return None
    found = wait_until(get, timeout=timeout, interval=0.05)
    assert found is not None, f"no object at {url}"
    return found


def absent(s3, url) -> bool:
    bucket, key = key_of(url)
    try:
        s3.head_object(Bucket=bucket, Key=key)
    except botocore.exceptions.ClientError:
        return True
    return False


def unchecked_runtime(url):
    """A runtime client that sends what it is given, so the server's own checks are what answer."""
    return boto3.client("sagemaker-runtime", endpoint_url=url, region_name="us-east-1", aws_access_key_id="x",
                        aws_secret_access_key="x",
                        config=Config(retries={"total_max_attempts": 1}, parameter_validation=False))


def test_both_request_shapes_write_one_output_each(gw, s3):
    sm, rt = sagemaker_clients(gw.url)
    async_endpoint(sm, "shapes")
    d = sm.describe_endpoint(EndpointName="shapes")
    assert d["AsyncInferenceConfig"]["OutputConfig"]["S3OutputPath"] == f"s3://{OUT}/shapes/out"
    assert sm.describe_endpoint_config(EndpointConfigName="shapes")["AsyncInferenceConfig"] == \
        d["AsyncInferenceConfig"]

    inline = rt.invoke_endpoint_async(EndpointName="shapes", Body=b'{"n": 21}', ContentType="application/json",
                                      InferenceId="same-id")
    assert inline["ResponseMetadata"]["HTTPStatusCode"] == 202 and inline["InferenceId"] == "same-id"
    s3.put_object(Bucket="async-in", Key="req/1.json", Body=b'{"n": 5}')
    by_s3 = rt.invoke_endpoint_async(EndpointName="shapes", InputLocation="s3://async-in/req/1.json",
                                     ContentType="application/json", InferenceId="same-id")
    assert by_s3["OutputLocation"] != inline["OutputLocation"]                 # a repeated id is a new request
    assert json.loads(fetch(s3, inline["OutputLocation"])) == {"double": 42}
    assert json.loads(fetch(s3, by_s3["OutputLocation"])) == {"double": 10}
    bucket, key = key_of(inline["OutputLocation"])
    assert s3.head_object(Bucket=bucket, Key=key)["ContentType"] == "application/json"
    assert absent(s3, inline["FailureLocation"]) and absent(s3, by_s3["FailureLocation"])

    named = rt.invoke_endpoint_async(EndpointName="shapes", Body=b'{"n": 1}', ContentType="application/json",
                                     S3OutputPathExtension="runs/7", Filename="answer.json")
    assert named["OutputLocation"] == f"s3://{OUT}/shapes/out/runs/7/answer.json"
    assert json.loads(fetch(s3, named["OutputLocation"])) == {"double": 2}

    # the usage ledger has the runs, with their time in the backlog
    usage = gw.client().usage(endpoint="shapes")
    assert len(usage) == 3 and all(r["status"] == "ok" and r["backlog_ms"] >= 0 for r in usage)
    assert {r["bytes_in"] for r in usage} == {9, 8}


def test_the_server_checks_every_limit(gw, s3):
    sm, rt = sagemaker_clients(gw.url)
    async_endpoint(sm, "limits")
    raw = unchecked_runtime(gw.url)
    cases = [(dict(Body=b"1", RequestTTLSeconds=59), "requestTTLSeconds"),
             (dict(Body=b"1", RequestTTLSeconds=21601), "requestTTLSeconds"),
             (dict(Body=b"1", InvocationTimeoutSeconds=3601), "invocationTimeoutSeconds"),
             (dict(Body=b"1", S3OutputPathExtension="../../elsewhere"), "s3OutputPathExtension"),
             (dict(Body=b"1", Filename="../x"), "filename"),
             (dict(Body=b"x" * 128_001), "body"),
             (dict(InputLocation="s3://async-in/x", Body=b"1"), "not both"),
             (dict(InputLocation="https://example.com/data.json"), "InputLocation")]
    for kw, member in cases:
        with pytest.raises(botocore.exceptions.ClientError) as info:
            raw.invoke_endpoint_async(EndpointName="limits", ContentType="application/json", **kw)
        err = info.value.response["Error"]
        assert err["Code"] == "ValidationError" and member in err["Message"], (kw, err)
    with pytest.raises(botocore.exceptions.ClientError, match="not found"):
        rt.invoke_endpoint_async(EndpointName="nope", Body=b"1")
    with pytest.raises(botocore.exceptions.ClientError, match="asynchronous endpoint"):
        rt.invoke_endpoint(EndpointName="limits", Body=b"1", ContentType="application/json")

    # a synchronous endpoint has no AsyncInferenceConfig
    sync_endpoint(sm, "sync-one")
    with pytest.raises(botocore.exceptions.ClientError, match="does not have an AsyncInferenceConfig"):
        rt.invoke_endpoint_async(EndpointName="sync-one", Body=b"1")
    # ... and an update cannot take the async endpoint's away, nor give the synchronous one one
    with pytest.raises(botocore.exceptions.ClientError, match="cannot remove it"):
        sm.update_endpoint(EndpointName="limits", EndpointConfigName="sync-one")
    with pytest.raises(botocore.exceptions.ClientError, match="cannot add"):
        sm.update_endpoint(EndpointName="sync-one", EndpointConfigName="limits")
    # serverless variants do not take AsyncInferenceConfig (the API's rule; instance variants do)
    with pytest.raises(botocore.exceptions.ClientError, match="serverless"):
        sm.create_endpoint_config(EndpointConfigName="sl-async", ProductionVariants=[
            {"VariantName": "v", "ModelName": "sync-one", "ServerlessConfig": {"MemorySizeInMB": 1024,
                                                                             "MaxConcurrency": 1}}],
            AsyncInferenceConfig={"OutputConfig": {"S3OutputPath": f"s3://{OUT}/x"}})
    with pytest.raises(botocore.exceptions.ClientError, match="maxConcurrentInvocationsPerInstance"):
        unchecked = boto3.client("sagemaker", endpoint_url=gw.url, region_name="us-east-1", aws_access_key_id="x",
                                 aws_secret_access_key="x", config=Config(parameter_validation=False))
        unchecked.create_endpoint_config(EndpointConfigName="bad-client", ProductionVariants=[
            {"VariantName": "v", "ModelName": "sync-one", "InstanceType": "ml.t2.medium",
             "InitialInstanceCount": 1}],
            AsyncInferenceConfig={"OutputConfig": {"S3OutputPath": f"s3://{OUT}/x"},
                                  "ClientConfig": {"MaxConcurrentInvocationsPerInstance": 0}})


def test_failures_go_to_the_failure_path(gw, s3):
    sm, rt = sagemaker_clients(gw.url)
    async_endpoint(sm, "failing")
    raised = rt.invoke_endpoint_async(EndpointName="failing", Body=b'{"fail": "no such customer"}',
                                      ContentType="application/json")
    assert b"no such customer" in fetch(s3, raised["FailureLocation"])
    assert absent(s3, raised["OutputLocation"])

    slow = rt.invoke_endpoint_async(EndpointName="failing", Body=b'{"sleep": 30}', ContentType="application/json",
                                    InvocationTimeoutSeconds=1)
    assert b"did not answer within 1 s" in fetch(s3, slow["FailureLocation"])

    missing = rt.invoke_endpoint_async(EndpointName="failing", InputLocation="s3://async-in/not/there.json")
    assert b"no object not/there.json" in fetch(s3, missing["FailureLocation"])

    c = gw.client()
    req = wait_until(lambda: (r := c.async_request(missing["ResponseMetadata"]["RequestId"]))["state"] == "failed"
                     and r)
    assert "no object" in req["error"] and req["attempts"] == 1
    ok = rt.invoke_endpoint_async(EndpointName="failing", Body=b"4", ContentType="application/json")
    assert json.loads(fetch(s3, ok["OutputLocation"])) == {"double": 8}      # the endpoint kept serving


def test_an_output_path_in_a_missing_bucket_fails_the_request_and_says_so(gw, s3):
    sm, rt = sagemaker_clients(gw.url)
    async_endpoint(sm, "nobucket", output="s3://no-such-bucket/out")
    r = rt.invoke_endpoint_async(EndpointName="nobucket", Body=b"1", ContentType="application/json")
    text = fetch(s3, r["FailureLocation"]).decode()
    assert "no-such-bucket does not exist" in text
    assert gw.client().async_request(r["ResponseMetadata"]["RequestId"])["state"] == "failed"


def test_delete_endpoint_sends_its_backlog_to_the_failure_path(gw, s3):
    sm, rt = sagemaker_clients(gw.url)
    async_endpoint(sm, "deleted")
    running = rt.invoke_endpoint_async(EndpointName="deleted", Body=b'{"sleep": 20}', ContentType="application/json")
    queued = [rt.invoke_endpoint_async(EndpointName="deleted", Body=b"1", ContentType="application/json")
              for _ in range(3)]
    c = gw.client()
    assert wait_until(lambda: c.async_request(running["ResponseMetadata"]["RequestId"])["state"] == "running")
    sm.delete_endpoint(EndpointName="deleted")
    for r in [running] + queued:
        assert b"was deleted before this request finished" in fetch(s3, r["FailureLocation"])
        assert absent(s3, r["OutputLocation"])
        assert c.async_request(r["ResponseMetadata"]["RequestId"])["state"] == "failed"


def test_the_cli_queues_and_waits_for_the_answer(gw, s3, tmp_path):
    import subprocess
    import sys

    from tests.helpers import ROOT

    sm, _ = sagemaker_clients(gw.url)
    async_endpoint(sm, "cli-async")
    body = tmp_path / "in.json"
    body.write_text('{"n": 100}')
    base = [sys.executable, "-m", "gateway.cli"]
    env_args = ["--url", gw.url, "--state-dir", str(gw.state_dir)]
    out = subprocess.run(base + ["invoke-async", "cli-async", "--file", str(body), "--wait"] + env_args,
                         capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == {"double": 200}
    failed = subprocess.run(base + ["invoke-async", "cli-async", "--data", '{"fail": "bad row"}', "--wait"]
                            + env_args, capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert failed.returncode == 1 and "bad row" in failed.stderr
    queued = subprocess.run(base + ["invoke-async", "cli-async", "--data", "3"] + env_args, capture_output=True,
                            text=True, cwd=ROOT, timeout=120)
    assert queued.returncode == 0 and f"s3://{OUT}/cli-async/out/" in queued.stdout


def test_a_thousand_queued_requests_each_get_one_output(gw, s3):
    sm, rt = sagemaker_clients(gw.url)
    async_endpoint(sm, "thousand", instances=2)
    sent = [rt.invoke_endpoint_async(EndpointName="thousand", Body=str(i).encode(), ContentType="application/json")
            for i in range(1000)]
    c = gw.client()
    last = sent[-1]["ResponseMetadata"]["RequestId"]
    assert wait_until(lambda: c.async_request(last)["state"] == "done", timeout=240, interval=0.5)
    keys = set()
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=OUT, Prefix="thousand/"):
        keys.update(o["Key"] for o in page.get("Contents") or [])
    wanted = {key_of(r["OutputLocation"])[1] for r in sent}
    assert wanted <= keys and not any("fail" in k for k in keys)
    for i in (0, 499, 999):
        assert json.loads(fetch(s3, sent[i]["OutputLocation"])) == {"double": 2 * i}


class Outage:
    """A TCP relay in front of the S3 server that can be cut (connections refused and reset) and
    restored on the same port: S3 going away and coming back, for real, under the gateway."""

    def __init__(self, target_port: int):
        self.target = target_port
        self.port = None
        self._server = None
        self._conns: list[socket.socket] = []
        self._lock = threading.Lock()
        self.up()

    def up(self):
        srv = socket.socket()
        srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        srv.bind(("127.0.0.1", self.port or 0))
        srv.listen(64)
        self.port = srv.getsockname()[1]
        self._server = srv
        threading.Thread(target=self._accept, args=(srv,), daemon=True).start()

    def down(self):
        srv, self._server = self._server, None
        srv.shutdown(socket.SHUT_RDWR)         # wakes the accept() blocked on it (close alone does not)
        srv.close()
        with self._lock:
            for c in self._conns:
                try:
                    c.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                c.close()
            self._conns.clear()

    def _accept(self, srv):
        while True:
            try:
                client, _ = srv.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.target))
            with self._lock:
                self._conns += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(src, dst):
        try:
            while data := src.recv(1 << 16):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass


def test_s3_going_away_while_requests_wait_is_retried_then_failed_never_dropped(local_s3, s3):
    from urllib.parse import urlsplit

    relay = Outage(urlsplit(local_s3.url).port)
    url = f"http://127.0.0.1:{relay.port}"
    with running_gateway("--s3-endpoint-url", url, "--async-s3-backoff", "1,1", *BUDGET, zygote=True) as g:
        sm, rt = sagemaker_clients(g.url)
        async_endpoint(sm, "outage")
        s3.put_object(Bucket="async-in", Key="outage/in.json", Body=b'{"n": 4}')
        relay.down()
        back = rt.invoke_endpoint_async(EndpointName="outage", InputLocation="s3://async-in/outage/in.json",
                                        ContentType="application/json")
        c = g.client()
        rid = back["ResponseMetadata"]["RequestId"]
        assert wait_until(lambda: c.async_request(rid)["attempts"] >= 2, timeout=30)     # retried, still waiting
        assert c.async_request(rid)["state"] in ("queued", "running")
        relay.up()
        assert json.loads(fetch(s3, back["OutputLocation"])) == {"double": 8}

        relay.down()                                   # now longer than the two retries allow
        lost = rt.invoke_endpoint_async(EndpointName="outage", InputLocation="s3://async-in/outage/in.json")
        rid = lost["ResponseMetadata"]["RequestId"]
        req = wait_until(lambda: (r := c.async_request(rid))["state"] == "failed" and r, timeout=60)
        assert req and "could not be reached after 3 attempts" in req["error"]
        assert "failure object could not be written" in req["error"]            # S3 is down: said, not lost
        relay.up()


def test_a_kill_9_loses_no_queued_or_running_request(local_s3, s3):
    from tests.helpers import GatewayProcess, make_state_dir, remove_state_dir

    state = make_state_dir()
    args = ("--s3-endpoint-url", local_s3.url, "--async-lease", "600", *BUDGET)
    gw = GatewayProcess(state, *args).start()
    try:
        gw.wait_for_zygote()
        sm, rt = sagemaker_clients(gw.url)
        async_endpoint(sm, "killed", instances=2)
        running = [rt.invoke_endpoint_async(EndpointName="killed", Body=b'{"sleep": 30, "n": 1}',
                                            ContentType="application/json") for _ in range(2)]
        c = gw.client()
        assert wait_until(lambda: all(c.async_request(r["ResponseMetadata"]["RequestId"])["state"] == "running"
                                      for r in running), timeout=30)
        queued = [rt.invoke_endpoint_async(EndpointName="killed", Body=str(i).encode(), ContentType="application/json")
                  for i in range(100)]
        gw.kill9()
        gw = GatewayProcess(state, *args).start()        # the lease (600 s) has not run out: recovered at start
        c = gw.client()
        for i, r in enumerate(queued):
            assert json.loads(fetch(s3, r["OutputLocation"], timeout=120)) == {"double": 2 * i}
        for r in running:                                # run again, from the start, after the restart
            assert json.loads(fetch(s3, r["OutputLocation"], timeout=120)) == {"double": 2}
            assert c.async_request(r["ResponseMetadata"]["RequestId"])["attempts"] == 2
        for r in running + queued:
            assert absent(s3, r["FailureLocation"])
    finally:
        gw.stop()
        remove_state_dir(state)


def test_the_sagemaker_sdk_deploys_and_calls_an_async_endpoint_unchanged(gw, s3, local_s3, monkeypatch):
    import sagemaker as sdk
    from sagemaker.async_inference import AsyncInferenceConfig, WaiterConfig
    from sagemaker.deserializers import JSONDeserializer
    from sagemaker.exceptions import AsyncInferenceModelError
    from sagemaker.model import Model
    from sagemaker.serializers import JSONSerializer

    for var, url in (("AWS_ENDPOINT_URL_SAGEMAKER", gw.url), ("AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME", gw.url),
                     ("AWS_ENDPOINT_URL_S3", local_s3.url)):
        monkeypatch.setenv(var, url)
    session = sdk.Session(boto_session=boto3.Session(region_name="us-east-1"), default_bucket="async-in")
    model = Model(image_uri="local/sklearn:1", model_data="s3://async-models/work/model.tar.gz",
                  role="arn:aws:iam::123456789012:role/SageMaker", sagemaker_session=session,
                  predictor_cls=sdk.predictor.Predictor)
    predictor = model.deploy(instance_type="ml.t2.medium", initial_instance_count=1, endpoint_name="sdk-async",
                             async_inference_config=AsyncInferenceConfig(output_path=f"s3://{OUT}/sdk/out",
                                                                         failure_path=f"s3://{OUT}/sdk/fail"),
                             serializer=JSONSerializer(), deserializer=JSONDeserializer())
    assert type(predictor).__name__ == "AsyncPredictor"
    before = set(threading.enumerate())
    assert predictor.predict({"n": 3}, waiter_config=WaiterConfig(max_attempts=20, delay=0.25)) == {"double": 6}
    for t in set(threading.enumerate()) - before:       # the SDK's waiter on the failure path polls on: let it end
        t.join(10)

    response = predictor.predict_async({"n": 4})
    assert response.output_path.startswith(f"s3://{OUT}/sdk/out/")
    assert wait_until(lambda: _result_or_none(response), timeout=30, interval=0.2) == {"double": 8}

    failing = predictor.predict_async({"fail": "the SDK sees this"})

    def raised():
        try:
            failing.get_result()
        except AsyncInferenceModelError as exc:
            return str(exc)
        except Exception:  # noqa: BLE001 - not written yet
            return None
    assert "the SDK sees this" in wait_until(raised, timeout=30, interval=0.2)
    predictor.delete_endpoint()


def _result_or_none(response):
    from sagemaker.exceptions import ObjectNotExistedError

    try:
        return response.get_result()
    except ObjectNotExistedError:
        return None


def autoscaling_client(url, monkeypatch):
    """Found by boto3's own configuration, as a user's unchanged code finds it."""
    monkeypatch.setenv("AWS_ENDPOINT_URL_APPLICATION_AUTO_SCALING", url)
    return boto3.client("application-autoscaling", region_name="us-east-1", aws_access_key_id="x",
                        aws_secret_access_key="x", config=Config(retries={"total_max_attempts": 1}))


def metric(gw, name, endpoint):
    import re
    import urllib.request

    text = urllib.request.urlopen(gw.url + "/metrics", timeout=10).read().decode()
    m = re.search(rf'^slimserve_async_{name}{{endpoint="{endpoint}"}} (\S+)$', text, re.M)
    return float(m.group(1)) if m else None


def test_an_async_variant_scales_to_zero_and_a_backlog_wakes_it(gw, s3, monkeypatch):
    sm, rt = sagemaker_clients(gw.url)
    async_endpoint(sm, "to-zero")
    aas = autoscaling_client(gw.url, monkeypatch)
    rid = "endpoint/to-zero/variant/v"
    aas.register_scalable_target(ServiceNamespace="sagemaker", ResourceId=rid,
                                 ScalableDimension="sagemaker:variant:DesiredInstanceCount", MinCapacity=0,
                                 MaxCapacity=2)
    aas.put_scaling_policy(
        PolicyName="backlog", ServiceNamespace="sagemaker", ResourceId=rid,
        ScalableDimension="sagemaker:variant:DesiredInstanceCount", PolicyType="TargetTrackingScaling",
        TargetTrackingScalingPolicyConfiguration={
            "TargetValue": 5.0, "ScaleInCooldown": 2, "ScaleOutCooldown": 0,
            "CustomizedMetricSpecification": {"MetricName": "ApproximateBacklogSizePerInstance",
                                              "Namespace": "AWS/SageMaker", "Statistic": "Average",
                                              "Dimensions": [{"Name": "EndpointName", "Value": "to-zero"}]}})
    assert aas.describe_scalable_targets(ServiceNamespace="sagemaker", ResourceIds=[rid])[
        "ScalableTargets"][0]["MinCapacity"] == 0
    assert aas.describe_scaling_policies(ServiceNamespace="sagemaker", ResourceId=rid)[
        "ScalingPolicies"][0]["PolicyName"] == "backlog"

    def counts():
        pv = sm.describe_endpoint(EndpointName="to-zero")["ProductionVariants"][0]
        return pv["DesiredInstanceCount"], pv["CurrentInstanceCount"]
    assert wait_until(lambda: counts() == (0, 0), timeout=30)           # idle: scaled in to nothing

    sent = rt.invoke_endpoint_async(EndpointName="to-zero", Body=b"21", ContentType="application/json")
    assert json.loads(fetch(s3, sent["OutputLocation"], timeout=60)) == {"double": 42}
    assert counts()[0] == 1                                             # woken by the backlog
    assert wait_until(lambda: counts() == (0, 0), timeout=30)           # and back to zero after the cooldown

    with pytest.raises(botocore.exceptions.ClientError) as info:         # the service's own error codes
        aas.put_scaling_policy(PolicyName="x", ServiceNamespace="sagemaker", ResourceId="endpoint/nope/variant/v",
                               ScalableDimension="sagemaker:variant:DesiredInstanceCount",
                               PolicyType="TargetTrackingScaling",
                               TargetTrackingScalingPolicyConfiguration={
                                   "TargetValue": 1.0, "PredefinedMetricSpecification": {
                                       "PredefinedMetricType": "SageMakerVariantInvocationsPerInstance"}})
    assert info.value.response["Error"]["Code"] == "ObjectNotFoundException"
    sync_endpoint(sm, "sync-two")
    with pytest.raises(botocore.exceptions.ClientError, match="MinCapacity 0 is allowed only"):
        aas.register_scalable_target(ServiceNamespace="sagemaker", ResourceId="endpoint/sync-two/variant/v",
                                     ScalableDimension="sagemaker:variant:DesiredInstanceCount", MinCapacity=0,
                                     MaxCapacity=1)
    aas.deregister_scalable_target(ServiceNamespace="sagemaker", ResourceId=rid,
                                   ScalableDimension="sagemaker:variant:DesiredInstanceCount")
    assert aas.describe_scaling_policies(ServiceNamespace="sagemaker", ResourceId=rid)["ScalingPolicies"] == []


def test_without_instances_the_backlog_is_reported_and_waits(gw, s3):
    sm, rt = sagemaker_clients(gw.url)
    async_endpoint(sm, "parked")
    sm.update_endpoint_weights_and_capacities(EndpointName="parked", DesiredWeightsAndCapacities=[
        {"VariantName": "v", "DesiredInstanceCount": 0}])
    sent = rt.invoke_endpoint_async(EndpointName="parked", Body=b"1", ContentType="application/json")
    assert wait_until(lambda: metric(gw, "HasBacklogWithoutCapacity", "parked") == 1.0, timeout=10)
    assert metric(gw, "ApproximateBacklogSize", "parked") == 1.0
    assert metric(gw, "ApproximateAgeOfOldestRequest", "parked") >= 0
    assert absent(s3, sent["OutputLocation"])                          # no policy: nothing wakes it ...
    sm.update_endpoint_weights_and_capacities(EndpointName="parked", DesiredWeightsAndCapacities=[
        {"VariantName": "v", "DesiredInstanceCount": 1}])
    assert json.loads(fetch(s3, sent["OutputLocation"])) == {"double": 2}    # ... until an instance is given
    assert wait_until(lambda: metric(gw, "HasBacklogWithoutCapacity", "parked") == 0.0, timeout=10)


@pytest.fixture(scope="module")
def moto_sns():
    """A real SNS-compatible server (moto's server mode) on loopback, with a topic per outcome
    each delivering to an SQS queue the test reads."""
    from moto.server import ThreadedMotoServer

    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    url = f"http://127.0.0.1:{port}"
    kw = dict(endpoint_url=url, region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x")
    sns, sqs = boto3.client("sns", **kw), boto3.client("sqs", **kw)
    topics = {}
    for name in ("ok", "err"):
        arn = sns.create_topic(Name=f"async-{name}")["TopicArn"]
        queue = sqs.create_queue(QueueName=f"async-{name}")["QueueUrl"]
        qarn = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        sns.subscribe(TopicArn=arn, Protocol="sqs", Endpoint=qarn, Attributes={"RawMessageDelivery": "true"})
        topics[name] = (arn, queue)
    yield url, sqs, topics
    server.stop()


def received(sqs, queue, timeout=30.0):
    def one():
        got = sqs.receive_message(QueueUrl=queue, WaitTimeSeconds=1).get("Messages")
        return json.loads(got[0]["Body"]) if got else None
    msg = wait_until(one, timeout=timeout, interval=0.1)
    assert msg is not None, "no notification arrived"
    return msg


class Hook(threading.Thread):
    """An HTTP receiver on loopback for http:// notification topics."""

    def __init__(self):
        import http.server

        hook = self
        self.bodies = []

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                hook.bodies.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        super().__init__(target=self.server.serve_forever, daemon=True)
        self.start()


def test_sns_and_http_notifications_carry_sagemakers_message(local_s3, s3, moto_sns):
    moto_url, sqs, topics = moto_sns
    hook = Hook()
    with running_gateway("--s3-endpoint-url", local_s3.url, "--sns-endpoint-url", moto_url,
                         "--notify-allow", f"127.0.0.1:{hook.port}", *BUDGET, zygote=True) as g:
        sm, rt = sagemaker_clients(g.url)
        async_endpoint(sm, "notified", extra={"OutputConfig": {
            "S3OutputPath": f"s3://{OUT}/notified/out", "S3FailurePath": f"s3://{OUT}/notified/fail",
            "NotificationConfig": {"SuccessTopic": topics["ok"][0], "ErrorTopic": topics["err"][0],
                                   "IncludeInferenceResponseIn": ["SUCCESS_NOTIFICATION_TOPIC"]}}})
        ok = rt.invoke_endpoint_async(EndpointName="notified", Body=b'{"n": 2}', ContentType="application/json",
                                      InferenceId="note-1")
        msg = received(sqs, topics["ok"][1])
        assert msg["invocationStatus"] == "Completed" and msg["inferenceId"] == "note-1"
        assert msg["responseParameters"]["outputLocation"] == ok["OutputLocation"]
        assert msg["requestParameters"]["endpointName"] == "notified"
        assert msg["eventSource"] == "aws:sagemaker" and msg["awsRegion"] == "us-east-1"
        assert json.loads(msg["inferenceResponse"]["body"]) == {"double": 4}

        bad = rt.invoke_endpoint_async(EndpointName="notified", Body=b'{"fail": "no"}', ContentType="application/json")
        msg = received(sqs, topics["err"][1])
        assert msg["invocationStatus"] == "Failed" and "no" in msg["failureReason"]
        assert msg["responseParameters"]["failureLocation"] == bad["FailureLocation"]
        assert "inferenceResponse" not in msg                       # only the success topic asked for it

        # the extension: an http:// topic, only to an allowed host
        sm.create_endpoint_config(EndpointConfigName="hooked", ProductionVariants=[
            {"VariantName": "v", "ModelName": "notified", "InstanceType": "ml.t2.medium",
             "InitialInstanceCount": 1}], AsyncInferenceConfig={"OutputConfig": {
                 "S3OutputPath": f"s3://{OUT}/hooked", "NotificationConfig": {
                     "SuccessTopic": f"http://127.0.0.1:{hook.port}/done",
                     "ErrorTopic": f"http://127.0.0.2:{hook.port}/not-allowed"}}})
        sm.create_endpoint(EndpointName="hooked", EndpointConfigName="hooked")
        sm.get_waiter("endpoint_in_service").wait(EndpointName="hooked", WaiterConfig={"Delay": 0.25})
        done = rt.invoke_endpoint_async(EndpointName="hooked", Body=b"5", ContentType="application/json")
        assert wait_until(lambda: hook.bodies, timeout=30)
        assert hook.bodies[0]["responseParameters"]["outputLocation"] == done["OutputLocation"]
        rt.invoke_endpoint_async(EndpointName="hooked", Body=b'{"fail": "x"}', ContentType="application/json")
        assert wait_until(lambda: metric_total(g, "notifications_total", 'result="refused"') == 1.0, timeout=30)
    hook.server.shutdown()


def metric_total(gw, name, labels):
    import re
    import urllib.request

    text = urllib.request.urlopen(gw.url + "/metrics", timeout=10).read().decode()
    m = re.search(rf'^slimserve_async_{name}{{{labels}}} (\S+)$', text, re.M)
    return float(m.group(1)) if m else None


def test_requests_go_to_the_variant_that_has_instances(gw, s3):
    sm, rt = sagemaker_clients(gw.url)
    sm.create_model(ModelName="two-ways", PrimaryContainer={"ModelDataUrl": "s3://async-models/work/model.tar.gz"})
    sm.create_endpoint_config(EndpointConfigName="two-ways", ProductionVariants=[
        {"VariantName": name, "ModelName": "two-ways", "InstanceType": "ml.t2.medium", "InitialInstanceCount": 1,
         "InitialVariantWeight": weight} for name, weight in (("heavy", 9.0), ("light", 1.0))],
        AsyncInferenceConfig={"OutputConfig": {"S3OutputPath": f"s3://{OUT}/two-ways"}})
    sm.create_endpoint(EndpointName="two-ways", EndpointConfigName="two-ways")
    sm.get_waiter("endpoint_in_service").wait(EndpointName="two-ways", WaiterConfig={"Delay": 0.25})
    sm.update_endpoint_weights_and_capacities(EndpointName="two-ways", DesiredWeightsAndCapacities=[
        {"VariantName": "heavy", "DesiredInstanceCount": 0}])                  # most of the weight, no instance
    sent = [rt.invoke_endpoint_async(EndpointName="two-ways", Body=str(i).encode(), ContentType="application/json")
            for i in range(20)]
    for i, r in enumerate(sent):
        assert json.loads(fetch(s3, r["OutputLocation"])) == {"double": 2 * i}
    usage = gw.client().usage(endpoint="two-ways")
    assert {(u["variant"], u["status"]) for u in usage} == {("light", "ok")}    # none throttled on the way
