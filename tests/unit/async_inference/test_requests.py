"""InvokeEndpointAsync's headers and AsyncInferenceConfig, checked as botocore's models say."""
import pytest
from multidict import CIMultiDict

from gateway.async_inference.requests import AsyncConfig, check_config, locations, submission
from gateway.errors import Invalid

CFG = {"OutputConfig": {"S3OutputPath": "s3://out/results/", "S3FailurePath": "s3://out/fail"}}
INSTANCE = [{"VariantName": "v", "ModelName": "m", "InstanceType": "ml.m5.large", "InitialInstanceCount": 1}]


def headers(**kw):
    return CIMultiDict({f"X-Amzn-SageMaker-{k.replace('_', '-')}": v for k, v in kw.items()})


def test_defaults_and_a_full_request():
    sub = submission(headers(InputLocation="s3://in/x.json"), 0)
    assert (sub.ttl_s, sub.timeout_s, sub.inference_id) == (21600, 900, None)
    sub = submission(headers(Content_Type="text/csv", Accept="application/json", Inference_Id="job 7",
                             RequestTTLSeconds="60", InvocationTimeoutSeconds="3600",
                             S3OutputPathExtension="runs/2026/", Filename="answer.json"), 10)
    assert (sub.content_type, sub.accept, sub.inference_id, sub.ttl_s, sub.timeout_s) == (
        "text/csv", "application/json", "job 7", 60, 3600)
    out, fail = locations(AsyncConfig.from_doc(CFG), "u-1", sub)
    assert out == "s3://out/results/runs/2026/answer.json"
    assert fail == "s3://out/fail/runs/2026/u-1-error.out"


def test_output_keys_come_from_the_server_id_so_repeated_inference_ids_never_collide():
    cfg = AsyncConfig.from_doc({"OutputConfig": {"S3OutputPath": "s3://out/r"}})
    sub = submission(headers(Inference_Id="same"), 1)
    a, b = locations(cfg, "id-a", sub), locations(cfg, "id-b", sub)
    assert a[0] != b[0] and a == ("s3://out/r/id-a.out", "s3://out/r/id-a-error.out")   # no failure path: output's


@pytest.mark.parametrize("kw, size, member", [
    ({"RequestTTLSeconds": "59"}, 1, "requestTTLSeconds"),
    ({"RequestTTLSeconds": "21601"}, 1, "requestTTLSeconds"),
    ({"RequestTTLSeconds": "ten"}, 1, "requestTTLSeconds"),
    ({"InvocationTimeoutSeconds": "0"}, 1, "invocationTimeoutSeconds"),
    ({"InvocationTimeoutSeconds": "3601"}, 1, "invocationTimeoutSeconds"),
    ({"S3OutputPathExtension": "../escape"}, 1, "s3OutputPathExtension"),
    ({"S3OutputPathExtension": "a//b"}, 1, "s3OutputPathExtension"),
    ({"S3OutputPathExtension": "a/./b"}, 1, "s3OutputPathExtension"),
    ({"S3OutputPathExtension": "s3://other/bucket"}, 1, "s3OutputPathExtension"),
    ({"S3OutputPathExtension": "a" * 513}, 1, "s3OutputPathExtension"),
    ({"Filename": "../x"}, 1, "filename"),
    ({"Filename": "a.b.c"}, 1, "filename"),
    ({"Filename": "a/b"}, 1, "filename"),
    ({"Filename": "x" * 33}, 1, "filename"),
    ({"Inference_Id": " leading"}, 1, "inferenceId"),
    ({"Inference_Id": "x" * 65}, 1, "inferenceId"),
    ({"InputLocation": "ftp://b/k"}, 0, "inputLocation"),
    ({"Content_Type": "x" * 1025}, 1, "contentType"),
    ({}, 128_001, "body"),
])
def test_every_limit_is_checked_and_named(kw, size, member):
    with pytest.raises(Invalid, match=f"'{member}'"):
        submission(headers(**kw), size)


def test_an_input_is_needed_and_only_one():
    with pytest.raises(Invalid, match="needs an input"):
        submission(headers(), 0)
    with pytest.raises(Invalid, match="not both"):
        submission(headers(InputLocation="s3://in/x"), 5)


def test_config_rules():
    check_config(CFG, INSTANCE)
    check_config({"OutputConfig": {"S3OutputPath": "s3://out/p", "NotificationConfig": {
        "SuccessTopic": "arn:aws:sns:us-east-1:123456789012:ok", "ErrorTopic": "https://hooks.example/err",
        "IncludeInferenceResponseIn": ["SUCCESS_NOTIFICATION_TOPIC"]}},
        "ClientConfig": {"MaxConcurrentInvocationsPerInstance": 4}}, INSTANCE)
    serverless = [{"VariantName": "v", "ModelName": "m", "ServerlessConfig": {"MemorySizeInMB": 1024,
                                                                             "MaxConcurrency": 1}}]
    with pytest.raises(Invalid, match="serverless"):
        check_config(CFG, serverless)
    bad = [({}, "outputConfig"),
           ({"OutputConfig": {"S3OutputPath": "/local/dir"}}, "s3OutputPath"),
           ({"OutputConfig": {"S3OutputPath": "s3://out/p", "S3FailurePath": "http://x/y"}}, "s3FailurePath"),
           ({"OutputConfig": {"S3OutputPath": "s3://out/p", "NotificationConfig": {"SuccessTopic": "nope"}}},
            "successTopic"),
           ({"OutputConfig": {"S3OutputPath": "s3://out/p", "NotificationConfig": {
               "IncludeInferenceResponseIn": ["EVERYWHERE"]}}}, "includeInferenceResponseIn"),
           ({"OutputConfig": {"S3OutputPath": "s3://out/p"}, "ClientConfig": {
               "MaxConcurrentInvocationsPerInstance": 0}}, "maxConcurrentInvocationsPerInstance")]
    for doc, member in bad:
        with pytest.raises(Invalid, match=member):
            check_config(doc, INSTANCE)
