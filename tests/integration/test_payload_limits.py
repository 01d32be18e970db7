"""Synchronous payload limits per variant kind, as SageMaker documents them: 4 MB requests and
answers for serverless invocations, 6 MB for real-time instance variants; each refusal of a
known endpoint's invocation is recorded (billed 0), the sandbox stays, and flags change them."""
from __future__ import annotations

import pytest
from botocore.exceptions import ClientError as BotoError

from gateway.client import ClientError, pickle_model
from tests import models
from tests.helpers import running_gateway, sagemaker_clients

MB = 1 << 20


def _instance_endpoint(sm, name: str, model_path) -> None:
    sm.create_model(ModelName=name, PrimaryContainer={"ModelDataUrl": str(model_path)})
    sm.create_endpoint_config(EndpointConfigName=name, ProductionVariants=[
        {"VariantName": "OnInstances", "ModelName": name, "InstanceType": "ml.t2.medium", "InitialInstanceCount": 1}])
    sm.create_endpoint(EndpointName=name, EndpointConfigName=name)
    sm.get_waiter("endpoint_in_service").wait(EndpointName=name, WaiterConfig={"Delay": 0.2, "MaxAttempts": 300})


def _status(boto, name, body):
    try:
        r = boto.invoke_endpoint(EndpointName=name, Body=body, ContentType="application/octet-stream")
        r["Body"].read()
        return 200
    except BotoError as exc:
        return exc.response["ResponseMetadata"]["HTTPStatusCode"]


@pytest.fixture(scope="module")
def limits(gateway, tmp_path_factory):
    c = gateway.client()
    c.deploy("lim-kinds", models.kind_of, memory_mb=1024)
    c.deploy("lim-big", models.big_answer, memory_mb=1024)
    root = tmp_path_factory.mktemp("lim")
    (root / "kinds.pkl").write_bytes(pickle_model(models.kind_of))
    (root / "big.pkl").write_bytes(pickle_model(models.big_answer))
    sm, _ = sagemaker_clients(gateway.url)
    _instance_endpoint(sm, "lim-rt-kinds", root / "kinds.pkl")
    _instance_endpoint(sm, "lim-rt-big", root / "big.pkl")
    return gateway


def test_requests_are_capped_at_4_mb_serverless_and_6_mb_real_time(limits):
    boto = limits.boto()
    assert _status(boto, "lim-kinds", b"x" * (4 * MB)) == 200
    assert _status(boto, "lim-kinds", b"x" * (4 * MB + 1)) == 413
    assert _status(boto, "lim-rt-kinds", b"x" * (6 * MB)) == 200
    assert _status(boto, "lim-rt-kinds", b"x" * (6 * MB + 1)) == 413
    for name in ("lim-kinds", "lim-rt-kinds"):
        usage = limits.client().usage(endpoint=name)
        assert [u["status"] for u in usage] == ["ok", "ValidationError"]           # refused, and recorded
        refused = usage[1]
        assert (refused["billed_ms"], refused["bytes_in"], refused["error_kind"]) == (0, 0, "too_large")


def test_a_body_too_large_even_to_be_read_is_cut_off_and_not_recorded(limits):
    boto = limits.boto()
    before = len(limits.client().usage(endpoint="lim-kinds"))
    assert _status(boto, "lim-kinds", b"x" * (24 * MB + 1)) == 413                # over 4 x the 6 MB cap
    assert len(limits.client().usage(endpoint="lim-kinds")) == before
    assert _status(boto, "lim-kinds", b"1") == 200                                   # and the gateway serves on


def test_answers_are_capped_per_kind_and_the_sandbox_stays(limits):
    c = limits.client()
    with pytest.raises(ClientError) as err:
        c.invoke("lim-big", 4.5)
    assert err.value.status == 424 and "over the limit of 4194304 bytes" in err.value.message
    assert len(c.invoke("lim-rt-big", 4.5)) == int(4.5 * MB)                       # 4.5 MB is fine on instances
    with pytest.raises(ClientError) as err:
        c.invoke("lim-rt-big", 6.5)
    assert err.value.status == 424 and "over the limit of 6291456 bytes" in err.value.message
    assert len(c.invoke("lim-big", 1)) == MB
    assert [u["cold_start"] for u in c.usage(endpoint="lim-big")] == [True, False]  # the same sandbox throughout


def test_flags_change_the_limits():
    with running_gateway("--max-serverless-payload-mb", "1", "--max-payload-mb", "2") as gw:
        c = gw.client()
        c.deploy("tiny", models.big_answer, memory_mb=1024)
        with pytest.raises(ClientError) as err:
            c.invoke("tiny", 1.5)
        assert err.value.status == 424 and "over the limit of 1048576 bytes" in err.value.message
        assert _status(gw.boto(), "tiny", b"0." + b"0" * MB) == 413


def test_bad_limit_flags_are_refused_before_starting(tmp_path):
    import subprocess
    import sys

    from tests.helpers import ROOT

    for flag, value in (("--max-payload-mb", "0"), ("--max-serverless-payload-mb", "500")):
        r = subprocess.run([sys.executable, "-m", "gateway.cli", "serve", "--state-dir", str(tmp_path), flag, value],
                           cwd=ROOT, capture_output=True, text=True, timeout=60)
        assert r.returncode == 2 and "--max-serverless-payload-mb" in r.stderr
