"""Invocations through the real gateway, with boto3's sagemaker-runtime client."""
import json
import os
from concurrent.futures import ThreadPoolExecutor

import pytest
from botocore.exceptions import ClientError as BotoError

from gateway.client import ClientError
from tests import models


@pytest.fixture(scope="module")
def deployed(gateway):
    c = gateway.client()
    for name, fn, mem in [
        ("echo", models.echo, 1024), ("kinds", models.kind_of, 1024), ("numpy", models.numpy_out, 1024),
        ("raises", models.raises, 1024), ("unserialisable", models.unserialisable, 1024),
        ("exits", models.exits, 1024), ("hangs", models.hangs, 1024), ("ctx", models.with_context, 1024),
        ("bomb", models.allocates, 1024), ("sandbox", models.tmp_and_net, 1024),
        ("doubler", models.Doubler(), 2048),
    ]:
        c.deploy(name, fn, memory_mb=mem)
    return gateway


def invoke(gw, name, body, content_type="application/json", **kw):
    return gw.boto().invoke_endpoint(EndpointName=name, Body=body, ContentType=content_type, **kw)


def test_json_roundtrip_with_boto3(deployed):
    r = invoke(deployed, "echo", json.dumps({"a": [1, 2.5]}))
    assert json.loads(r["Body"].read()) == {"echo": {"a": [1, 2.5]}}
    assert r["ContentType"] == "application/json"
    assert r["InvokedProductionVariant"] == "AllTraffic"


def test_body_is_decoded_by_content_type(deployed):
    # a str result passes through as text
    r = invoke(deployed, "kinds", b'{"x":1}')
    assert r["Body"].read() == b"dict" and r["ContentType"].startswith("text/plain")
    assert invoke(deployed, "kinds", b"hello", "text/plain")["Body"].read() == b"str"
    assert invoke(deployed, "kinds", b"\x00\x01", "application/octet-stream")["Body"].read() == b"bytes"


def test_numpy_result_becomes_a_list(deployed):
    assert json.loads(invoke(deployed, "numpy", b"4")["Body"].read()) == [0.0, 0.5, 1.0, 1.5]


def test_accept_csv(deployed):
    r = invoke(deployed, "numpy", b"3", Accept="text/csv")
    assert r["ContentType"] == "text/csv"
    assert r["Body"].read().decode().split() == ["0.0", "0.5", "1.0"]


def test_object_with_predict(deployed):
    assert json.loads(invoke(deployed, "doubler", b"[1, 2, 3]")["Body"].read()) == [2, 4, 6]


def test_custom_attributes_pass_both_ways(deployed):
    r = invoke(deployed, "ctx", b"1", CustomAttributes="trace=42")
    assert r["CustomAttributes"] == "seen=trace=42"


def test_sandbox_has_private_tmp_no_network_no_gpu(deployed):
    out = json.loads(invoke(deployed, "sandbox", b"0")["Body"].read())
    # confined (root): its own tmpfs at /tmp (tests/integration/test_isolation.py); otherwise a directory of its own
    assert out["tmpdir"] == "/tmp" if os.geteuid() == 0 else "/sandboxes/sb-" in out["tmpdir"]
    assert out["cuda"] == ""
    assert out["net"] == 101   # ENETUNREACH: the namespace has no interface up


def test_unknown_endpoint_is_validation_error(deployed):
    with pytest.raises(deployed.boto().exceptions.ValidationError) as exc:
        invoke(deployed, "no-such-endpoint", b"1")
    assert exc.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    assert "no-such-endpoint" in exc.value.response["Error"]["Message"]


def test_oversized_payload_is_413(deployed):
    with pytest.raises(BotoError) as exc:
        invoke(deployed, "echo", b"x" * (6 * 1024 * 1024 + 1))
    assert exc.value.response["ResponseMetadata"]["HTTPStatusCode"] == 413
    # exactly 4 MB is allowed: these are serverless endpoints (limits per kind: test_payload_limits.py)
    r = invoke(deployed, "kinds", b"x" * (4 * 1024 * 1024), "application/octet-stream")
    assert r["Body"].read() == b"bytes"


def _model_error(gw, name, body=b"1"):
    with pytest.raises(gw.boto().exceptions.ModelError) as exc:
        invoke(gw, name, body)
    resp = exc.value.response
    assert resp["ResponseMetadata"]["HTTPStatusCode"] == 424
    assert resp["ResponseMetadata"]["HTTPHeaders"]["x-amzn-invoked-production-variant"] == "AllTraffic"
    return resp


def test_model_that_raises_is_model_error(deployed):
    resp = _model_error(deployed, "raises", b'"zz"')
    assert resp["OriginalStatusCode"] == 500
    assert "ValueError: bad input 'zz'" in resp["OriginalMessage"]
    assert "ValueError" in deployed.client().logs("raises")   # the traceback went to the endpoint's log
    # the sandbox survives a model exception: the next call is warm
    _model_error(deployed, "raises")
    usage = deployed.client().usage(endpoint="raises")
    assert [u["cold_start"] for u in usage] == [True, False]


def test_unserialisable_result_is_model_error(deployed):
    resp = _model_error(deployed, "unserialisable")
    assert "cannot be serialised" in resp["OriginalMessage"]


def test_model_that_exits_is_model_error_and_replaced(deployed):
    resp = _model_error(deployed, "exits")
    assert "exit code 7" in resp["Error"]["Message"]
    assert json.loads(invoke(deployed, "echo", b"1")["Body"].read()) == {"echo": 1}
    resp = _model_error(deployed, "exits")     # a new sandbox was started for it
    usage = deployed.client().usage(endpoint="exits")
    assert [u["cold_start"] for u in usage] == [True, True]


def test_model_that_hangs_times_out_and_sandbox_is_replaced(deployed):
    resp = _model_error(deployed, "hangs")
    assert "timed out" in resp["Error"]["Message"]
    rec = deployed.client().usage(endpoint="hangs")[-1]
    assert rec["error_kind"] == "timeout" and rec["billed_ms"] >= 5000
    pool = deployed.client().describe("hangs")["variants"][0]["pool"]
    assert pool["sandboxes"] == []


def test_memory_bomb_is_killed_and_gateway_keeps_serving(deployed):
    with ThreadPoolExecutor(2) as ex:
        bomb = ex.submit(lambda: _model_error(deployed, "bomb", b"1536"))
        ok = ex.submit(lambda: json.loads(invoke(deployed, "echo", b'"alive"')["Body"].read()))
        resp = bomb.result()
        assert ok.result() == {"echo": "alive"}
    assert "memory" in resp["Error"]["Message"] and "1024 MB" in resp["Error"]["Message"]
    rec = deployed.client().usage(endpoint="bomb")[-1]
    assert rec["status"] == "ModelError" and rec["error_kind"] == "out_of_memory"
    # a modest allocation on the same endpoint works in a fresh sandbox
    assert json.loads(invoke(deployed, "bomb", b"100")["Body"].read()) == 100 * 1024 * 1024


def test_usage_records_have_the_documented_fields(deployed):
    invoke(deployed, "echo", b'"u"')
    rec = deployed.client().usage(endpoint="echo")[-1]
    for field in ("endpoint", "variant", "memory_mb", "start", "billed_ms", "model_ms", "overhead_ms",
                  "cold_start", "init_ms", "status"):
        assert field in rec
    assert rec["status"] == "ok" and rec["memory_mb"] == 1024 and rec["variant"] == "AllTraffic"
    assert rec["model_ms"] <= rec["billed_ms"] < rec["model_ms"] + 1


def test_metrics_are_prometheus_text(deployed):
    import urllib.request

    invoke(deployed, "echo", b"1")
    text = urllib.request.urlopen(deployed.url + "/metrics").read().decode()
    assert 'slimserve_invocations_total{endpoint="echo",status="ok",variant="AllTraffic"}' in text
    assert 'slimserve_sandboxes{state="idle",tier_mb="1024"}' in text
    assert "slimserve_model_setup_seconds_count" in text
    assert 'slimserve_sandbox_memory_cap_bytes{endpoint="echo",variant="AllTraffic"}' in text


def test_ping(deployed):
    import urllib.request

    assert urllib.request.urlopen(deployed.url + "/ping").status == 200


def test_client_invoke_and_errors(deployed):
    c = deployed.client()
    assert c.invoke("echo", [1]) == {"echo": [1]}
    with pytest.raises(ClientError) as exc:
        c.invoke("raises", 1)
    assert exc.value.code == "ModelError" and exc.value.status == 424
