"""Batch transform against a real gateway and a real S3-compatible server (SeaweedFS): jobs
through boto3 and its waiter, outputs in input order under the output path, every limit checked
by the server, bad input failing the job with a reason that names the object, stop, a
``kill -9`` in the middle of a job, bills by instance time and the CLI with its progress."""
import gzip
import json
import struct
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest

from tests import models
from tests.helpers import running_gateway, sagemaker_clients, wait_until
from tests.integration.test_s3 import model_tar, s3_client

pytestmark = pytest.mark.slow
IN, OUT = "tj-in", "tj-out"
BUDGET = ("--memory-budget-mb", "200000")
WAIT = {"Delay": 0.5, "MaxAttempts": 240}


@pytest.fixture(scope="module")
def s3(local_s3):
    c = s3_client(local_s3.url)
    for b in ("tj-models", IN, OUT):
        c.create_bucket(Bucket=b)
    c.put_object(Bucket="tj-models", Key="sums/model.tar.gz", Body=model_tar(models.csv_sums))
    c.put_object(Bucket="tj-models", Key="jsums/model.tar.gz", Body=model_tar(models.json_sums))
    return c


@pytest.fixture(scope="module")
def gw(local_s3, s3):
    with running_gateway("--s3-endpoint-url", local_s3.url, *BUDGET, zygote=True) as g:
        sm, _ = sagemaker_clients(g.url)
        sm.create_model(ModelName="sums", PrimaryContainer={"ModelDataUrl": "s3://tj-models/sums/model.tar.gz"})
        sm.create_model(ModelName="jsums", PrimaryContainer={"ModelDataUrl": "s3://tj-models/jsums/model.tar.gz"})
        yield g


def put(s3, key, body):
    s3.put_object(Bucket=IN, Key=key, Body=body)


def job(sm, name, prefix, out=None, **kw):
    """CreateTransformJob of the ``sums`` model over ``s3://tj-in/<prefix>`` (CSV lines)."""
    tin = {"DataSource": {"S3DataSource": {"S3DataType": kw.pop("data_type", "S3Prefix"),
                                           "S3Uri": kw.pop("uri", f"s3://{IN}/{prefix}")}},
           "ContentType": "text/csv", "SplitType": kw.pop("split", "Line")}
    if "compression" in kw:
        tin["CompressionType"] = kw.pop("compression")
    tout = {"S3OutputPath": out or f"s3://{OUT}/{name}", "Accept": "text/csv"}
    if "assemble" in kw:
        tout["AssembleWith"] = kw.pop("assemble")
    req = dict(TransformJobName=name, ModelName=kw.pop("model", "sums"), TransformInput=tin, TransformOutput=tout,
               TransformResources={"InstanceType": kw.pop("instance_type", "ml.m5.large"),
                                   "InstanceCount": kw.pop("count", 1)}, **kw)
    return sm.create_transform_job(**req)


def wait(sm, name):
    try:
        sm.get_waiter("transform_job_completed_or_stopped").wait(TransformJobName=name, WaiterConfig=WAIT)
    except Exception:  # noqa: BLE001 - a Failed job ends the waiter; the caller reads why
        pass
    return sm.describe_transform_job(TransformJobName=name)


def read(s3, bucket, key):
    return s3.get_object(Bucket=bucket, Key=key)["Body"].read()


def keys(s3, bucket, prefix):
    return sorted(o["Key"] for o in s3.list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents", []))


def lines(n, start=0):
    return b"".join(b"%d,%d\n" % (i, 1) for i in range(start, start + n))


def sums(n, start=0):
    return b"".join(b"%r\n" % float(i + 1) for i in range(start, start + n))


def test_a_prefix_job_writes_one_output_per_object_in_input_order(gw, s3):
    sm, _ = sagemaker_clients(gw.url)
    put(s3, "basic/a.csv", lines(200000))                     # ~1.5 MB: two requests of at most 1 MB
    put(s3, "basic/sub/b.csv", lines(10, 100))
    capture = {"DestinationS3Uri": f"s3://{OUT}/capture", "GenerateInferenceId": True}
    arn = job(sm, "basic2", "basic/", MaxPayloadInMB=1, MaxConcurrentTransforms=2, BatchStrategy="MultiRecord",
              assemble="Line", DataCaptureConfig=capture, Tags=[{"Key": "team", "Value": "risk"}])["TransformJobArn"]
    assert arn.endswith(":transform-job/basic2")
    d = wait(sm, "basic2")
    assert d["TransformJobStatus"] == "Completed", d
    assert d["TransformStartTime"] <= d["TransformEndTime"]
    assert (d["MaxConcurrentTransforms"], d["MaxPayloadInMB"], d["BatchStrategy"]) == (2, 1, "MultiRecord")
    assert d["DataCaptureConfig"] == capture and d["TransformResources"]["InstanceType"] == "ml.m5.large"
    assert sm.list_tags(ResourceArn=arn)["Tags"] == [{"Key": "team", "Value": "risk"}]
    sm.add_tags(ResourceArn=arn, Tags=[{"Key": "month", "Value": "march"}])
    sm.delete_tags(ResourceArn=arn, TagKeys=["team"])
    assert sm.list_tags(ResourceArn=arn)["Tags"] == [{"Key": "month", "Value": "march"}]
    with pytest.raises(sm.exceptions.ClientError) as e:
        sm.list_tags(ResourceArn=arn.replace("basic2", "nope"))
    assert "Could not find transform job" in e.value.response["Error"]["Message"]
    assert keys(s3, OUT, "basic2/") == ["basic2/a.csv.out", "basic2/sub/b.csv.out"]
    assert read(s3, OUT, "basic2/a.csv.out") == sums(200000)
    assert read(s3, OUT, "basic2/sub/b.csv.out") == sums(10, 100)


def test_gzip_single_record_and_many_batches_keep_their_order(gw, s3):
    sm, _ = sagemaker_clients(gw.url)
    put(s3, "gz/x.csv.gz", gzip.compress(lines(300)) + gzip.compress(lines(200, 300)))   # two gzip members
    job(sm, "gz-single", "gz/", compression="Gzip", BatchStrategy="SingleRecord", MaxConcurrentTransforms=3,
        assemble="Line")
    d = wait(sm, "gz-single")
    assert d["TransformJobStatus"] == "Completed", d
    assert read(s3, OUT, "gz-single/x.csv.gz.out") == sums(500)
    big = b"".join(b"%d,%s\n" % (i, b"0" * 200) for i in range(30000))          # ~6 MB: many 1 MB requests
    put(s3, "multi/big.csv", big)
    job(sm, "multi", "multi/", MaxPayloadInMB=1, MaxConcurrentTransforms=4, assemble="Line")
    d = wait(sm, "multi")
    assert d["TransformJobStatus"] == "Completed", d
    assert read(s3, OUT, "multi/big.csv.out") == b"".join(b"%r\n" % float(i) for i in range(30000))
    c = gw.client()
    log = c.transform_logs("multi")
    assert "MaxConcurrentTransforms=4, MaxPayloadInMB=1, BatchStrategy=MULTI_RECORD" in log


def test_recordio_and_split_none(gw, s3):
    sm, _ = sagemaker_clients(gw.url)

    def rec(data):
        return struct.pack("<II", 0xCED7230A, len(data)) + data + b"\0" * (-len(data) % 4)
    put(s3, "whole/one.csv", b"1,2\n3,4\n")
    job(sm, "whole", "whole/", split="None")
    d = wait(sm, "whole")
    assert d["TransformJobStatus"] == "Completed", d
    assert read(s3, OUT, "whole/one.csv.out") == b"3.0\n7.0\n"
    put(s3, "rio/r.rec", rec(b"not-csv") * 3)
    job(sm, "rio", "rio/", split="RecordIO", BatchStrategy="SingleRecord")
    d = wait(sm, "rio")       # the model gets each framed record; it is not CSV, so it raises: named object
    assert d["TransformJobStatus"] == "Failed" and "s3://tj-in/rio/r.rec" in d["FailureReason"]
    put(s3, "badrio/r.rec", b"this is not recordio")
    job(sm, "badrio", "badrio/", split="RecordIO")
    d = wait(sm, "badrio")
    assert d["TransformJobStatus"] == "Failed" and "not RecordIO" in d["FailureReason"], d


def test_bad_input_fails_the_job_and_names_the_object(gw, s3):
    sm, _ = sagemaker_clients(gw.url)
    job(sm, "empty", "nothing-here/")
    d = wait(sm, "empty")
    assert d["TransformJobStatus"] == "Failed" and "no objects" in d["FailureReason"], d
    put(s3, "notgz/a.csv.gz", b"1,2\n")
    job(sm, "notgz", "notgz/", compression="Gzip")
    d = wait(sm, "notgz")
    assert d["TransformJobStatus"] == "Failed", d
    assert "s3://tj-in/notgz/a.csv.gz" in d["FailureReason"] and "not gzip" in d["FailureReason"]
    put(s3, "huge/a.csv", b"1,1\n" * 10 + b"9" * (1 << 20) + b"\n")
    job(sm, "huge", "huge/", MaxPayloadInMB=1)
    d = wait(sm, "huge")
    assert d["TransformJobStatus"] == "Failed", d
    assert "s3://tj-in/huge/a.csv" in d["FailureReason"] and "byte offset 40" in d["FailureReason"]
    put(s3, "boom/1-good.csv", lines(5))
    put(s3, "boom/2-bad.csv", b"1,2\nboom\n")
    put(s3, "boom/3-later.csv", lines(5))
    job(sm, "boom", "boom/", MaxConcurrentTransforms=1, ModelClientConfig={"InvocationsMaxRetries": 1})
    d = wait(sm, "boom")
    assert d["TransformJobStatus"] == "Failed"
    assert "s3://tj-in/boom/2-bad.csv" in d["FailureReason"] and "cannot score" in d["FailureReason"]
    assert keys(s3, OUT, "boom/") == ["boom/1-good.csv.out"]            # the object before it stays
    job(sm, "nobucket", "boom/", out="s3://no-such-bucket-tj/x")
    d = wait(sm, "nobucket")
    assert d["TransformJobStatus"] == "Failed" and "no-such-bucket-tj" in d["FailureReason"], d
    put(s3, "manifest/bad.json", b"{not json")
    job(sm, "badmanifest", "", data_type="ManifestFile", uri=f"s3://{IN}/manifest/bad.json")
    d = wait(sm, "badmanifest")
    assert d["TransformJobStatus"] == "Failed" and "manifest" in d["FailureReason"], d


def test_a_manifest_names_the_objects(gw, s3):
    sm, _ = sagemaker_clients(gw.url)
    put(s3, "man/data/x.csv", lines(3))
    put(s3, "man/data/y.csv", lines(4, 10))
    put(s3, "man/data/z.csv", b"boom\n")                                    # not in the manifest
    put(s3, "man/list.json", json.dumps([{"prefix": f"s3://{IN}/man/data/"}, "y.csv", "x.csv"]).encode())
    job(sm, "manifest", "", data_type="ManifestFile", uri=f"s3://{IN}/man/list.json", assemble="Line")
    d = wait(sm, "manifest")
    assert d["TransformJobStatus"] == "Completed", d
    assert keys(s3, OUT, "manifest/") == ["manifest/x.csv.out", "manifest/y.csv.out"]
    assert read(s3, OUT, "manifest/y.csv.out") == sums(4, 10)


def test_limits_are_checked_by_the_server(gw):
    sm, _ = sagemaker_clients(gw.url)
    sm.meta.events.unregister("before-parameter-build.sagemaker", None)
    import boto3
    from botocore.config import Config

    raw = boto3.client("sagemaker", endpoint_url=gw.url, region_name="us-east-1", aws_access_key_id="x",
                       aws_secret_access_key="x", config=Config(parameter_validation=False,
                                                                retries={"total_max_attempts": 1}))
    bad = [
        ({"MaxPayloadInMB": 101}, "at most 100"),
        ({"MaxPayloadInMB": 20, "MaxConcurrentTransforms": 6}, "must not exceed 100"),
        ({"split": "TFRecord"}, "TFRecord"),
        ({"ModelClientConfig": {"InvocationsTimeoutInSeconds": 0}}, "invocationsTimeoutInSeconds"),
        ({"ModelClientConfig": {"InvocationsMaxRetries": 4}}, "invocationsMaxRetries"),
        ({"BatchStrategy": "Everything"}, "batchStrategy"),
        ({"split": "None", "BatchStrategy": "MultiRecord"}, "needs a SplitType"),
        ({"instance_type": "ml.p3.2xlarge"}, "accelerator"),
        ({"count": 0}, "instanceCount"),
        ({"Environment": {"1BAD": "x"}}, "environment"),
        ({"model": "no-such-model"}, "Could not find model"),
        ({"uri": "ftp://x/y"}, "s3Uri"),
    ]
    for kw, words in bad:
        with pytest.raises(raw.exceptions.ClientError) as e:
            job(raw, "limits", "x/", **kw)
        assert e.value.response["Error"]["Code"] == "ValidationException", (kw, e.value.response)
        assert words in e.value.response["Error"]["Message"], (kw, e.value.response["Error"]["Message"])
    with pytest.raises(sm.exceptions.ResourceLimitExceeded):
        job(sm, "limits", "x/", instance_type="ml.m5.4xlarge", count=100)
    put_ok = job(sm, "dup", "nothing/")
    assert put_ok["TransformJobArn"]
    with pytest.raises(sm.exceptions.ResourceInUse):
        job(sm, "dup", "nothing/")
    with pytest.raises(sm.exceptions.ClientError) as e:
        sm.describe_transform_job(TransformJobName="never-made")
    assert e.value.response["Error"]["Code"] == "ValidationException"
    with pytest.raises(sm.exceptions.ResourceNotFound):
        sm.stop_transform_job(TransformJobName="never-made")


def test_list_pages_and_filters_as_the_service_does(gw, s3):
    sm, _ = sagemaker_clients(gw.url)
    put(s3, "list/a.csv", lines(1))
    for i in range(3):
        job(sm, f"listed-{i}", "list/")
    for i in range(3):
        assert wait(sm, f"listed-{i}")["TransformJobStatus"] == "Completed"
    got = sm.list_transform_jobs(NameContains="listed-", SortBy="Name", SortOrder="Ascending", MaxResults=2)
    assert [s["TransformJobName"] for s in got["TransformJobSummaries"]] == ["listed-0", "listed-1"]
    rest = sm.list_transform_jobs(NameContains="listed-", SortBy="Name", SortOrder="Ascending", MaxResults=2,
                                  NextToken=got["NextToken"])
    assert [s["TransformJobName"] for s in rest["TransformJobSummaries"]] == ["listed-2"]
    assert "NextToken" not in rest
    done = sm.list_transform_jobs(StatusEquals="Completed", NameContains="listed", MaxResults=100)
    assert len(done["TransformJobSummaries"]) == 3
    assert all(s["TransformJobStatus"] == "Completed" and "TransformEndTime" in s
               for s in done["TransformJobSummaries"])
    with pytest.raises(sm.exceptions.ClientError):
        sm.list_transform_jobs(StatusEquals="Done")


def test_stop_ends_a_job_within_seconds_and_its_bill_is_instance_time(gw, s3):
    sm, _ = sagemaker_clients(gw.url)
    put(s3, "slow/a.csv", b"sleep 60\n")
    job(sm, "stopped", "slow/", ModelClientConfig={"InvocationsTimeoutInSeconds": 120})
    c = gw.client()
    assert wait_until(lambda: c.transform_job("stopped")["Progress"].get("sandboxes"), timeout=60)
    time.sleep(1.0)
    t0 = time.monotonic()
    sm.stop_transform_job(TransformJobName="stopped")
    assert sm.describe_transform_job(TransformJobName="stopped")["TransformJobStatus"] in ("Stopping", "Stopped")
    d = wait(sm, "stopped")
    assert d["TransformJobStatus"] == "Stopped" and time.monotonic() - t0 < 15
    assert keys(s3, OUT, "stopped/") == []
    bill = c.bill()
    rows = {r["job"]: r for r in bill["transform_jobs"]["rows"]}
    assert rows["stopped"]["instance_type"] == "ml.m5.large" and rows["stopped"]["instance_count"] == 1
    assert 1.0 <= rows["stopped"]["seconds"] < 60 and rows["stopped"]["cost"] > 0
    sm.stop_transform_job(TransformJobName="stopped")                          # again: no change, no error
    assert wait_until(lambda: not c.transform_job("stopped")["Progress"].get("sandboxes"), 10)


def test_a_kill_9_resumes_at_the_first_unfinished_object(local_s3, s3):
    from tests.helpers import GatewayProcess, make_state_dir, remove_state_dir

    for i in range(8):
        put(s3, f"resume/{i:02d}.csv", lines(3, 10 * i) + b"sleep 1.5\n")
    state = make_state_dir()
    args = ("--s3-endpoint-url", local_s3.url, *BUDGET)
    gw = GatewayProcess(state, *args).start()
    try:
        sm, _ = sagemaker_clients(gw.url)
        sm.create_model(ModelName="sums", PrimaryContainer={"ModelDataUrl": "s3://tj-models/sums/model.tar.gz"})
        job(sm, "resumed", "resume/", MaxConcurrentTransforms=1, assemble="Line")
        assert wait_until(lambda: len(keys(s3, OUT, "resumed/")) >= 2, timeout=90)
        gw.kill9()
        before = {k: s3.head_object(Bucket=OUT, Key=k)["LastModified"] for k in keys(s3, OUT, "resumed/")}
        gw = GatewayProcess(state, *args).start()
        sm, _ = sagemaker_clients(gw.url)
        d = wait(sm, "resumed")
        assert d["TransformJobStatus"] == "Completed", d
        assert keys(s3, OUT, "resumed/") == [f"resumed/{i:02d}.csv.out" for i in range(8)]
        for i in range(8):
            assert read(s3, OUT, f"resumed/{i:02d}.csv.out") == sums(3, 10 * i) + b"slept\n"
        redone = [k for k, t in before.items() if s3.head_object(Bucket=OUT, Key=k)["LastModified"] != t]
        assert len(redone) <= 1, redone        # only an object whose output was written as the kill came
    finally:
        gw.stop()
        remove_state_dir(state)


def test_the_cli_runs_a_job_with_progress_and_lists_and_stops_jobs(gw, s3):
    put(s3, "cli/a.csv", lines(1000))
    env = gw.cli_env()
    cmd = [sys.executable, "-m", "gateway.cli", "transform", "cli-job", "--model", "sums", "--input",
           f"s3://{IN}/cli/", "--output", f"s3://{OUT}/cli-job", "--content-type", "text/csv",
           "--split-type", "Line", "--assemble-with", "Line", "--wait"]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "cli-job" in done.stdout and "Completed" in done.stdout and "1/1 objects" in done.stdout, done.stdout
    assert read(s3, OUT, "cli-job/a.csv.out") == sums(1000)
    listed = subprocess.run([sys.executable, "-m", "gateway.cli", "transform-jobs"], env=env, capture_output=True,
                            text=True, timeout=60)
    assert listed.returncode == 0 and "cli-job" in listed.stdout and "Completed" in listed.stdout
    put(s3, "cli-slow/a.csv", b"sleep 60\n")
    started = subprocess.run([sys.executable, "-m", "gateway.cli", "transform", "cli-slow", "--model", "sums",
                              "--input", f"s3://{IN}/cli-slow/", "--output", f"s3://{OUT}/cli-slow",
                              "--content-type", "text/csv", "--split-type", "Line"], env=env, capture_output=True,
                             text=True, timeout=60)
    assert started.returncode == 0, started.stderr
    stop = subprocess.run([sys.executable, "-m", "gateway.cli", "transform-jobs", "stop", "cli-slow"], env=env,
                          capture_output=True, text=True, timeout=60)
    assert stop.returncode == 0, stop.stderr
    sm, _ = sagemaker_clients(gw.url)
    d = wait(sm, "cli-slow")
    assert d["TransformJobStatus"] == "Stopped", d
    bad = subprocess.run([sys.executable, "-m", "gateway.cli", "transform", "cli-job", "--model", "sums", "--input",
                          f"s3://{IN}/cli/", "--output", f"s3://{OUT}/x"], env=env, capture_output=True, text=True,
                         timeout=60)
    assert bad.returncode != 0 and "already exists" in bad.stderr


def test_csv_input_filter_join_and_output_filter(gw, s3):
    sm, _ = sagemaker_clients(gw.url)
    put(s3, "dp/a.csv", b"".join(b"id%d,%d,%d\n" % (i, i, 2 * i) for i in range(1000)))
    job(sm, "dp-csv", "dp/", MaxPayloadInMB=1, assemble="Line",
        DataProcessing={"InputFilter": "$[1:]", "JoinSource": "Input", "OutputFilter": "$[0,-1]"})
    d = wait(sm, "dp-csv")
    assert d["TransformJobStatus"] == "Completed", d
    assert d["DataProcessing"]["OutputFilter"] == "$[0,-1]"
    assert read(s3, OUT, "dp-csv/a.csv.out") == b"".join(b"id%d,%r\n" % (i, float(3 * i)) for i in range(1000))
    job(sm, "dp-past-end", "dp/", DataProcessing={"InputFilter": "$[7]"})
    d = wait(sm, "dp-past-end")
    assert d["TransformJobStatus"] == "Failed" and "InputFilter: index 7 is outside" in d["FailureReason"], d
    assert "byte offset 0" in d["FailureReason"]


def test_json_lines_join_keeps_the_record_and_adds_the_answer(gw, s3):
    sm, _ = sagemaker_clients(gw.url)
    recs = [{"id": f"r{i}", "features": [i, 1]} for i in range(50)] + [[7, 8]]
    put(s3, "dpj/a.jsonl", b"".join(json.dumps(r).encode() + b"\n" for r in recs[:50]))
    job(sm, "dp-json", "dpj/", model="jsums", DataProcessing={"InputFilter": "$.features", "JoinSource": "Input",
                                                              "OutputFilter": "$['id','SageMakerOutput']"},
        BatchStrategy="MultiRecord")
    d = wait(sm, "dp-json")
    # ContentType text/csv (the helper's) says CSV: a record is then an array of columns, which
    # $.features cannot address -- the job says so rather than guess.
    assert d["TransformJobStatus"] == "Failed", d
    assert "InputFilter: ['features'] needs an object, not an array" in d["FailureReason"]
    tin = {"DataSource": {"S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": f"s3://{IN}/dpj/"}},
           "ContentType": "application/jsonlines", "SplitType": "Line"}
    sm.create_transform_job(TransformJobName="dp-json2", ModelName="jsums", TransformInput=tin,
                            TransformOutput={"S3OutputPath": f"s3://{OUT}/dp-json2", "AssembleWith": "Line"},
                            TransformResources={"InstanceType": "ml.m5.large", "InstanceCount": 1},
                            DataProcessing={"InputFilter": "$.features", "JoinSource": "Input",
                                            "OutputFilter": "$['id','SageMakerOutput']"})
    d = wait(sm, "dp-json2")
    assert d["TransformJobStatus"] == "Completed", d
    got = [json.loads(line) for line in read(s3, OUT, "dp-json2/a.jsonl.out").splitlines()]
    assert got == [{"id": f"r{i}", "SageMakerOutput": float(i + 1)} for i in range(50)]
    put(s3, "dpa/a.jsonl", b"[7, 8]\n[1, 2]\n")
    sm.create_transform_job(TransformJobName="dp-array", ModelName="jsums", TransformInput=dict(
        tin, DataSource={"S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": f"s3://{IN}/dpa/"}}),
        TransformOutput={"S3OutputPath": f"s3://{OUT}/dp-array"},
        TransformResources={"InstanceType": "ml.m5.large", "InstanceCount": 1},
        DataProcessing={"JoinSource": "Input"})
    d = wait(sm, "dp-array")
    assert d["TransformJobStatus"] == "Completed", d
    assert [json.loads(x) for x in read(s3, OUT, "dp-array/a.jsonl.out").splitlines()] == [
        {"SageMakerInput": [7, 8], "SageMakerOutput": 15.0}, {"SageMakerInput": [1, 2], "SageMakerOutput": 3.0}]
    with pytest.raises(sm.exceptions.ClientError) as e:
        sm.create_transform_job(TransformJobName="dp-bad", ModelName="jsums",
                                TransformInput=dict(tin, SplitType="None"), TransformOutput={"S3OutputPath": f"s3://{OUT}/x"},
                                TransformResources={"InstanceType": "ml.m5.large", "InstanceCount": 1},
                                DataProcessing={"JoinSource": "Input"})
    assert "SplitType Line" in e.value.response["Error"]["Message"]
    with pytest.raises(sm.exceptions.ClientError) as e:
        job(sm, "dp-bad2", "dpj/", DataProcessing={"InputFilter": "$..deep"})
    assert "cannot be read" in e.value.response["Error"]["Message"]


def logs_client(gw):
    import boto3
    from botocore.config import Config

    return boto3.client("logs", endpoint_url=gw.url, region_name="us-east-1", aws_access_key_id="x",
                        aws_secret_access_key="x", config=Config(retries={"total_max_attempts": 1}))


def test_the_logs_api_serves_job_and_endpoint_logs(gw, s3):
    sm, _ = sagemaker_clients(gw.url)
    put(s3, "logs/a.csv", lines(3) + b"boom\n")
    job(sm, "logged", "logs/", ModelClientConfig={"InvocationsMaxRetries": 0})
    assert wait(sm, "logged")["TransformJobStatus"] == "Failed"
    logs = logs_client(gw)
    group = "/aws/sagemaker/TransformJobs"
    streams = logs.describe_log_streams(logGroupName=group, logStreamNamePrefix="logged/")["logStreams"]
    assert [s["logStreamName"] for s in streams] == ["logged/slimserve"]
    assert streams[0]["lastEventTimestamp"] >= streams[0]["firstEventTimestamp"] > 0
    got = logs.get_log_events(logGroupName=group, logStreamName="logged/slimserve", startFromHead=True)
    text = "\n".join(e["message"] for e in got["events"])
    assert "MaxConcurrentTransforms=2, MaxPayloadInMB=6, BatchStrategy=MULTI_RECORD" in text
    assert "cannot score 'boom'" in text                               # the model's own traceback is there
    again = logs.get_log_events(logGroupName=group, logStreamName="logged/slimserve", startFromHead=True,
                                nextToken=got["nextForwardToken"])
    assert again["events"] == []                                         # a reader at the end stays there
    found = logs.filter_log_events(logGroupName=group, logStreamNamePrefix="logged", filterPattern='"job failed"')
    assert found["events"] and all("job failed" in e["message"] for e in found["events"])
    assert found["events"][0]["logStreamName"] == "logged/slimserve"
    with pytest.raises(logs.exceptions.ResourceNotFoundException):
        logs.describe_log_streams(logGroupName="/aws/sagemaker/Nothing")
    with pytest.raises(logs.exceptions.ResourceNotFoundException):
        logs.get_log_events(logGroupName=group, logStreamName="never/slimserve")
    c = gw.client()
    c.deploy("logged-ep", models.echo, memory_mb=1024)
    c.invoke("logged-ep", {"x": 1})
    ep = logs.get_log_events(logGroupName="/aws/sagemaker/Endpoints/logged-ep", logStreamName="AllTraffic/slimserve",
                             startFromHead=True)
    assert any("sandbox" in e["message"] for e in ep["events"])
    unsigned = urllib.request.Request(gw.url + "/", data=b"{}", method="POST",
                                      headers={"X-Amz-Target": "Logs_20140328.DescribeLogStreams",
                                               "Content-Type": "application/x-amz-json-1.1"})
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(unsigned, timeout=10)
    assert e.value.code in (400, 403)


def test_the_sagemaker_sdk_transformer_runs_and_waits_with_its_logs(gw, s3, local_s3, monkeypatch, capsys):
    import boto3
    import sagemaker as sdk
    from sagemaker.transformer import Transformer

    for var, url in (("AWS_ENDPOINT_URL_SAGEMAKER", gw.url), ("AWS_ENDPOINT_URL_CLOUDWATCH_LOGS", gw.url),
                     ("AWS_ENDPOINT_URL_S3", local_s3.url)):
        monkeypatch.setenv(var, url)
    put(s3, "sdk/a.csv", lines(2000))
    put(s3, "sdk/b.csv", lines(10, 5))
    session = sdk.Session(boto_session=boto3.Session(region_name="us-east-1"), default_bucket=OUT)
    t = Transformer(model_name="sums", instance_count=1, instance_type="ml.m5.large",
                    output_path=f"s3://{OUT}/sdk-out", accept="text/csv", assemble_with="Line",
                    sagemaker_session=session)
    t.transform(f"s3://{IN}/sdk/", content_type="text/csv", split_type="Line", job_name="sdk-transform", wait=True)
    printed = capsys.readouterr().out
    assert "MaxConcurrentTransforms=" in printed and "sdk/b.csv" in printed, printed
    assert read(s3, OUT, "sdk-out/a.csv.out") == sums(2000)
    assert read(s3, OUT, "sdk-out/b.csv.out") == sums(10, 5)
    assert sm_status(gw, "sdk-transform") == "Completed"


def sm_status(gw, name):
    sm, _ = sagemaker_clients(gw.url)
    return sm.describe_transform_job(TransformJobName=name)["TransformJobStatus"]


def local_job(sm, name, model, src, out, **kw):
    sm.create_transform_job(
        TransformJobName=name, ModelName=model,
        TransformInput={"DataSource": {"S3DataSource": {"S3DataType": kw.pop("data_type", "S3Prefix"),
                                                        "S3Uri": src}},
                        "ContentType": "text/csv", "SplitType": "Line"},
        TransformOutput={"S3OutputPath": out}, TransformResources={"InstanceType": "ml.m5.large", "InstanceCount": 1},
        **kw)


def test_local_data_stays_under_the_model_root_and_out_of_the_state_dir(tmp_path):
    """Inputs and outputs on this machine: under a --model-root only, never into the state dir
    (even when it is under the root), never through a link, and the state dir is never listed."""
    from gateway.client import pickle_model
    from tests.helpers import GatewayProcess

    root = tmp_path / "root"
    state = root / "state"                                   # the default layout: ./.slimserve under the cwd
    (root / "in" / "sub").mkdir(parents=True)
    (root / "in" / "a.csv").write_bytes(b"1,2\n")
    (root / "in" / "sub" / "b.csv").write_bytes(b"3,4\n")
    (root / "model.pkl").write_bytes(pickle_model(models.csv_sums))
    outside = tmp_path / "outside"
    outside.mkdir()
    gw = GatewayProcess(state, "--model-root", str(root), "--no-zygotes", *BUDGET).start()
    try:
        sm, _ = sagemaker_clients(gw.url)
        sm.create_model(ModelName="m", PrimaryContainer={"ModelDataUrl": str(root / "model.pkl")})
        local_job(sm, "local-ok", "m", f"file://{root}/in", f"file://{root}/out")
        assert wait(sm, "local-ok")["TransformJobStatus"] == "Completed"
        assert (root / "out" / "a.csv.out").read_bytes() == b"3.0\n"
        assert (root / "out" / "sub" / "b.csv.out").read_bytes() == b"7.0\n"
        # an input tree holding the state dir: the state dir is not walked, named or read
        local_job(sm, "local-root", "m", f"file://{root}", f"file://{root}/out2")
        d = wait(sm, "local-root")
        assert "admin-token" not in json.dumps(d, default=str) and "credentials" not in json.dumps(d, default=str)
        assert not any(p.name.endswith(".out") and "state" in p.parts for p in (root / "out2").rglob("*"))
        # an output whose relative names lead into the state dir
        (root / "evil" / "state").mkdir(parents=True)
        (root / "evil" / "state" / "admin-token").write_bytes(b"1,1\n")       # -> <root>/state/admin-token.out
        local_job(sm, "local-evil", "m", f"file://{root}/evil", f"file://{root}")
        d = wait(sm, "local-evil")
        assert d["TransformJobStatus"] == "Failed" and "not under a --model-root" in d["FailureReason"], d
        assert not (state / "admin-token.out").exists()
        # a link inside the output directory, to a place outside every root
        (root / "linked").mkdir()
        (root / "linked" / "sub").symlink_to(outside)
        local_job(sm, "local-link", "m", f"file://{root}/in", f"file://{root}/linked")
        d = wait(sm, "local-link")
        assert d["TransformJobStatus"] == "Failed" and "not under a --model-root" in d["FailureReason"], d
        assert list(outside.iterdir()) == []
        with pytest.raises(sm.exceptions.ClientError):                         # refused when created
            local_job(sm, "local-out", "m", f"file://{root}/in", f"file://{outside}")
        # a manifest naming one object twice would write one output for two inputs
        (root / "list.json").write_text(json.dumps([{"prefix": f"file://{root}/in/"}, "a.csv", "a.csv"]))
        local_job(sm, "local-dup", "m", f"file://{root}/list.json", f"file://{root}/out3", data_type="ManifestFile")
        d = wait(sm, "local-dup")
        assert d["TransformJobStatus"] == "Failed" and "twice" in d["FailureReason"], d
        assert not (state / "transform").exists() or list((state / "transform").iterdir()) == []
    finally:
        gw.stop()


def test_a_model_that_fills_the_disk_fails_its_job_and_the_gateway_keeps_serving(tmp_path):
    from gateway.client import pickle_model
    from tests.helpers import GatewayProcess

    mount = tmp_path / "small"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=700m", "tmpfs", str(mount)], check=True)
    try:
        data = tmp_path / "data"
        data.mkdir()
        (data / "model.pkl").write_bytes(pickle_model(models.big_answer))
        (data / "in").mkdir()
        (data / "in" / "a.csv").write_bytes(b"40\n" * 12)              # 12 answers of 40 MB: more than the disk
        gw = GatewayProcess(mount / "state", "--model-root", str(data), "--no-zygotes", *BUDGET).start()
        try:
            sm, _ = sagemaker_clients(gw.url)
            sm.create_model(ModelName="big", PrimaryContainer={"ModelDataUrl": str(data / "model.pkl")})
            local_job(sm, "fills", "big", f"file://{data}/in", f"file://{data}/out", BatchStrategy="SingleRecord",
                      MaxConcurrentTransforms=1)
            d = wait(sm, "fills")
            assert d["TransformJobStatus"] == "Failed" and "disk" in d["FailureReason"], d
            assert sm.list_transform_jobs()["TransformJobSummaries"]              # the store still answers
            assert not (data / "out").exists()
        finally:
            gw.stop()
    finally:
        subprocess.run(["umount", str(mount)], check=False)
