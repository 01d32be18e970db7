"""CreateTransformJob's rules, checked without a gateway."""
import pytest

from gateway.batch.spec import parse
from gateway.errors import Invalid


def req(**kw):
    r = {"TransformJobName": "j", "ModelName": "m",
         "TransformInput": {"DataSource": {"S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": "s3://b/in/"}},
                            "SplitType": "Line"},
         "TransformOutput": {"S3OutputPath": "s3://b/out"},
         "TransformResources": {"InstanceType": "ml.m5.large", "InstanceCount": 1}}
    r.update(kw)
    return r


def test_defaults_follow_the_service_and_the_toolkit():
    s = parse(req())
    assert (s.max_payload_mb, s.batch_strategy, s.timeout_s, s.max_retries, s.assemble_with) == \
        (6, "MultiRecord", 600, 3, "None")
    assert s.max_concurrent == 2                    # ml.m5.large: 2 vCPUs, one worker each
    assert parse(req(MaxPayloadInMB=60)).max_concurrent == 1          # 2 x 60 would pass 100 MB
    assert parse(req(TransformInput={"DataSource": {"S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": "s3://b/"}}})
                 ).batch_strategy == "SingleRecord"
    assert "BatchStrategy=MULTI_RECORD" in s.settings_line()
    assert s.sandbox_env()["SAGEMAKER_MAX_PAYLOAD_IN_MB"] == "6"


@pytest.mark.parametrize("change,words", [
    ({"MaxPayloadInMB": 101}, "at most 100"),
    ({"MaxPayloadInMB": 0}, "not supported"),
    ({"MaxPayloadInMB": 30, "MaxConcurrentTransforms": 4}, "must not exceed 100"),
    ({"MaxConcurrentTransforms": -1}, "maxConcurrentTransforms"),
    ({"MaxConcurrentTransforms": True}, "integer"),
    ({"ModelClientConfig": {"InvocationsTimeoutInSeconds": 3601}}, "between 1 and 3600"),
    ({"ModelClientConfig": {"InvocationsMaxRetries": -1}}, "between 0 and 3"),
    ({"BatchStrategy": "Some"}, "enum value set"),
    ({"Environment": {f"K{i}": "v" for i in range(17)}}, "16"),
    ({"Environment": {"OK": 3}}, "string"),
    ({"TransformResources": {"InstanceType": "ml.g5.xlarge", "InstanceCount": 1}}, "accelerator"),
    ({"TransformResources": {"InstanceType": "ml.m5.large", "InstanceCount": 101}}, "between 1 and 100"),
    ({"TransformOutput": {"S3OutputPath": "ftp://x/y"}}, "s3OutputPath"),
    ({"TransformJobName": "bad_name"}, "transformJobName"),
    ({"DataProcessing": {"InputFilter": "x" * 64}}, "63"),
    ({"DataCaptureConfig": {"DestinationS3Uri": "file:///tmp/x"}}, "destinationS3Uri"),
])
def test_limits(change, words):
    with pytest.raises(Invalid) as e:
        parse(req(**change))
    assert words in e.value.message


def test_split_types():
    for split, ok in (("None", True), ("Line", True), ("RecordIO", True), ("TFRecord", False), ("Lines", False)):
        r = req()
        r["TransformInput"]["SplitType"] = split
        if ok:
            assert parse(r).split_type == split
        else:
            with pytest.raises(Invalid):
                parse(r)
    r = req(BatchStrategy="MultiRecord")
    r["TransformInput"]["SplitType"] = "None"
    with pytest.raises(Invalid, match="needs a SplitType"):
        parse(r)
