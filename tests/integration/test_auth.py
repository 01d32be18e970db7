"""Closed by default: SigV4 with the generated pair, scoped keys, model roots, and our own clients signing."""
import os
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

import boto3
import botocore
import pytest
from botocore.config import Config

from gateway.sagemaker import credentials
from tests import models
from tests.helpers import ROOT, make_state_dir, remove_state_dir, running_gateway


def _clients(url, key_id="x", secret="x", **cfg):
    kw = dict(endpoint_url=url, region_name="us-east-1", aws_access_key_id=key_id, aws_secret_access_key=secret,
              config=Config(retries={"total_max_attempts": 1}, **cfg))
    return boto3.client("sagemaker", **kw), boto3.client("sagemaker-runtime", **kw)


@pytest.fixture(scope="module")
def closed():
    """A gateway as a user starts it: no keys given, so it generates its own pair."""
    with running_gateway("--no-zygotes", keys=False) as gw:
        gw.client().deploy("kept", models.echo, memory_mb=1024)
        yield gw


def _code(call):
    with pytest.raises(botocore.exceptions.ClientError) as info:
        call()
    return info.value.response["Error"]["Code"]


def test_the_generated_pair_signs_and_nothing_else_gets_in(closed):
    path = closed.state_dir / credentials.FILE_NAME
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    key = credentials.read(path)
    sm, rt = _clients(closed.url, key.key_id, key.secret)
    assert [e["EndpointName"] for e in sm.list_endpoints()["Endpoints"]] == ["kept"]
    assert rt.invoke_endpoint(EndpointName="kept", Body=b"1", ContentType="application/json")["Body"].read()
    anon_sm, anon_rt = _clients(closed.url, signature_version=botocore.UNSIGNED)
    made_up_sm, made_up_rt = _clients(closed.url, "AKIAMADEUP", "x")
    wrong_sm, _ = _clients(closed.url, key.key_id, "not-the-secret")
    assert _code(lambda: anon_sm.delete_endpoint(EndpointName="kept")) == "MissingAuthenticationTokenException"
    assert _code(lambda: anon_rt.invoke_endpoint(EndpointName="kept", Body=b"1")) == \
        "MissingAuthenticationTokenException"
    assert _code(lambda: made_up_sm.delete_endpoint(EndpointName="kept")) == "UnrecognizedClientException"
    assert _code(lambda: made_up_rt.invoke_endpoint(EndpointName="kept", Body=b"1")) == "UnrecognizedClientException"
    assert _code(lambda: wrong_sm.delete_endpoint(EndpointName="kept")) == "InvalidSignatureException"
    assert [e["EndpointName"] for e in sm.list_endpoints()["Endpoints"]] == ["kept"]       # nothing changed
    assert closed.client().usage(endpoint="kept")[-1]["status"] == "ok"


def test_our_own_clients_sign_with_the_state_dirs_pair(closed):
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(PYTHONPATH=str(ROOT), HOME=str(closed.state_dir))      # no shared credentials file either
    p = subprocess.run([sys.executable, "-m", "gateway.cli", "invoke", "kept", "--data", "7", "--url", closed.url,
                        "--state-dir", str(closed.state_dir)], capture_output=True, text=True, env=env, timeout=60)
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip() == '{"echo": 7}'
    out = subprocess.run([sys.executable, "-m", "gateway.cli", "credentials", "--url", closed.url,
                          "--state-dir", str(closed.state_dir)], capture_output=True, text=True, env=env, timeout=60)
    lines = dict(line.removeprefix("export ").split("=", 1) for line in out.stdout.splitlines())
    key = credentials.read(closed.state_dir / credentials.FILE_NAME)
    assert lines == {"AWS_ACCESS_KEY_ID": key.key_id, "AWS_SECRET_ACCESS_KEY": key.secret,
                     "AWS_DEFAULT_REGION": "us-east-1", "AWS_ENDPOINT_URL_SAGEMAKER": closed.url,
                     "AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME": closed.url,
                     "AWS_ENDPOINT_URL_APPLICATION_AUTO_SCALING": closed.url,
                     "AWS_ENDPOINT_URL_CLOUDWATCH_LOGS": closed.url}


def test_a_read_key_may_invoke_and_describe_but_not_change_anything(fresh_gateway):
    gw = fresh_gateway("--no-zygotes", "--access-key", "AKIDWRITER:w-secret",
                       "--access-key", "AKIDREADER:r-secret:read")
    gw.client().deploy("ro", models.echo, memory_mb=1024)
    sm, rt = _clients(gw.url, "AKIDREADER", "r-secret")
    assert sm.describe_endpoint(EndpointName="ro")["EndpointStatus"] == "InService"
    assert sm.list_endpoints()["Endpoints"]
    assert rt.invoke_endpoint(EndpointName="ro", Body=b"2", ContentType="application/json")["Body"].read()
    assert _code(lambda: sm.delete_endpoint(EndpointName="ro")) == "AccessDeniedException"
    assert _code(lambda: sm.create_model(ModelName="m", PrimaryContainer={"ModelDataUrl": "/tmp/x"})) == \
        "AccessDeniedException"
    assert sm.describe_endpoint(EndpointName="ro")["EndpointStatus"] == "InService"
    import boto3
    from botocore.config import Config

    aas = boto3.client("application-autoscaling", endpoint_url=gw.url, region_name="us-east-1",
                       aws_access_key_id="AKIDREADER", aws_secret_access_key="r-secret",
                       config=Config(retries={"total_max_attempts": 1}))
    assert aas.describe_scalable_targets(ServiceNamespace="sagemaker")["ScalableTargets"] == []
    assert _code(lambda: aas.register_scalable_target(
        ServiceNamespace="sagemaker", ResourceId="endpoint/ro/variant/AllTraffic",
        ScalableDimension="sagemaker:variant:DesiredInstanceCount", MinCapacity=1, MaxCapacity=2)) == \
        "AccessDeniedException"
    assert _code(lambda: sm.create_transform_job(
        TransformJobName="ro-job", ModelName="ro", TransformInput={"DataSource": {"S3DataSource": {
            "S3DataType": "S3Prefix", "S3Uri": "s3://b/in/"}}}, TransformOutput={"S3OutputPath": "s3://b/out"},
        TransformResources={"InstanceType": "ml.m5.large", "InstanceCount": 1})) == "AccessDeniedException"
    assert _code(lambda: sm.stop_transform_job(TransformJobName="ro-job")) == "AccessDeniedException"
    assert sm.list_transform_jobs()["TransformJobSummaries"] == []
    logs = boto3.client("logs", endpoint_url=gw.url, region_name="us-east-1", aws_access_key_id="AKIDREADER",
                        aws_secret_access_key="r-secret", config=Config(retries={"total_max_attempts": 1}))
    assert logs.describe_log_streams(logGroupName="/aws/sagemaker/TransformJobs")["logStreams"] == []
    assert logs.get_log_events(logGroupName="/aws/sagemaker/Endpoints/ro", logStreamName="AllTraffic/slimserve",
                               startFromHead=True)["events"]
    writer, _ = _clients(gw.url, "AKIDWRITER", "w-secret")
    writer.delete_endpoint(EndpointName="ro")
    assert _code(lambda: sm.describe_endpoint(EndpointName="ro")) == "ValidationException"


def test_local_model_data_only_under_a_model_root_and_never_the_state_dir(fresh_gateway, tmp_path):
    root = tmp_path / "models"
    root.mkdir()
    (root / "m.pkl").write_bytes(b"\x80\x04N.")
    gw = fresh_gateway("--no-zygotes", "--model-root", str(root))
    sm, _ = _clients(gw.url)
    messages = set()
    for url in ("file:///etc/ssl", "file:///etc/no-such-dir", f"file://{gw.state_dir}/admin-token",
                str(gw.state_dir), str(root / "missing.pkl")):
        with pytest.raises(botocore.exceptions.ClientError) as info:
            sm.create_model(ModelName="probe", PrimaryContainer={"ModelDataUrl": url})
        assert info.value.response["Error"]["Code"] == "ValidationException"
        messages.add(info.value.response["Error"]["Message"].replace(url, "URL"))
    assert len(messages) == 1, messages                       # the same answer whether the path exists or not
    assert sm.create_model(ModelName="ok", PrimaryContainer={"ModelDataUrl": f"file://{root / 'm.pkl'}"})["ModelArn"]


def test_a_root_around_the_state_dir_still_keeps_the_state_dir_out(fresh_gateway):
    gw = fresh_gateway("--no-zygotes", "--model-root", tempfile.gettempdir())
    assert gw.state_dir.resolve().is_relative_to(Path(tempfile.gettempdir()).resolve())
    gw.client().deploy("inside", models.echo, memory_mb=1024)
    bundle = next((gw.state_dir / "bundles" / "inside").iterdir())
    sm, _ = _clients(gw.url)
    with pytest.raises(botocore.exceptions.ClientError, match="Could not find model data"):
        sm.create_model(ModelName="probe", PrimaryContainer={"ModelDataUrl": f"file://{bundle}"})


def test_auth_none_only_on_loopback(fresh_gateway):
    state = make_state_dir()
    try:
        p = subprocess.run([sys.executable, "-m", "gateway.cli", "serve", "--host", "0.0.0.0", "--port", "0",
                            "--state-dir", str(state), "--auth", "none"], capture_output=True, text=True,
                           timeout=60, env=dict(os.environ, PYTHONPATH=str(ROOT)))
        assert p.returncode == 2 and "only a loopback address" in p.stderr
    finally:
        remove_state_dir(state)
    gw = fresh_gateway("--no-zygotes", "--auth", "none")
    gw.client().deploy("open", models.echo, memory_mb=1024)
    _, anon_rt = _clients(gw.url, signature_version=botocore.UNSIGNED)
    assert anon_rt.invoke_endpoint(EndpointName="open", Body=b"3", ContentType="application/json")["Body"].read()
    assert any("SIGNING IS OFF" in line for line in gw.output)


def test_a_model_directory_holding_a_symlink_is_refused(fresh_gateway, tmp_path):
    """A link inside a model root could point anywhere (the state dir's keys): it is not followed."""
    root = tmp_path / "models"
    model = root / "linked"
    model.mkdir(parents=True)
    (model / "model.pkl").write_bytes(__import__("gateway.client").client.pickle_model(models.echo))
    gw = fresh_gateway("--no-zygotes", "--model-root", str(root))
    (model / "creds.json").symlink_to(gw.state_dir / "credentials.json")
    sm, _ = _clients(gw.url)
    with pytest.raises(botocore.exceptions.ClientError) as info:      # refused at CreateModel, nothing read
        sm.create_model(ModelName="linked", PrimaryContainer={"ModelDataUrl": str(model)})
    assert info.value.response["Error"]["Code"] == "ValidationException"
    assert "symbolic link (creds.json)" in info.value.response["Error"]["Message"]
    copies = list((gw.state_dir / "bundles").rglob("creds.json")) if (gw.state_dir / "bundles").exists() else []
    assert copies == []
