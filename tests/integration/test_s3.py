"""Model data in S3, against a real S3-compatible server (SeaweedFS, as ``serve --s3 local`` runs
it): CreateModel from s3:// and S3 https:// URLs, the content-addressed model cache, the
errors of a missing bucket, a missing key, wrong keys and a truncated archive, the CLI and
the SageMaker Python SDK deploying from S3, and ``serve --s3 local`` across a restart."""
import io
import os
import re
import subprocess
import sys
import tarfile

import boto3
import botocore
import pytest
from botocore.config import Config

from gateway.client import model_tar, pickle_model
from tests.helpers import ROOT, running_gateway, sagemaker_clients, serverless_endpoint

pytestmark = pytest.mark.slow


def s3_client(url, key=None, secret=None):
    return boto3.client("s3", endpoint_url=url, region_name="us-east-1",
                        aws_access_key_id=key or os.environ["AWS_ACCESS_KEY_ID"],
                        aws_secret_access_key=secret or os.environ["AWS_SECRET_ACCESS_KEY"],
                        config=Config(retries={"total_max_attempts": 2}))


def cache_counts(gw) -> dict:
    import urllib.request

    text = urllib.request.urlopen(gw.url + "/metrics", timeout=10).read().decode()
    return {m.group(1): float(m.group(2))
            for m in re.finditer(r"^slimserve_model_cache_(hits|downloads)_total (\S+)$", text, re.M)}


def invoke(rt, name, body=b"21"):
    import json

    return json.loads(rt.invoke_endpoint(EndpointName=name, Body=body, ContentType="application/json")["Body"].read())


@pytest.fixture(scope="module")
def bucket(local_s3):
    s3 = s3_client(local_s3.url)
    s3.create_bucket(Bucket="models")
    s3.put_object(Bucket="models", Key="double/model.tar.gz", Body=model_tar(lambda x: {"double": x * 2}))
    return s3


@pytest.fixture(scope="module")
def gw(local_s3, bucket):
    with running_gateway("--s3-endpoint-url", local_s3.url, zygote=True) as g:
        yield g


def test_a_model_from_s3_serves_and_each_object_is_downloaded_once(gw, bucket, local_s3):
    sm, rt = sagemaker_clients(gw.url)
    before = cache_counts(gw)
    serverless_endpoint(sm, "double", {"ModelDataUrl": "s3://models/double/model.tar.gz"})
    assert invoke(rt, "double") == {"double": 42}
    after = cache_counts(gw)
    assert after["downloads"] - before["downloads"] == 1        # at CreateModel; CreateEndpoint found it cached
    assert after["hits"] - before["hits"] >= 1

    # the same bytes under another key, by path-style https URL: content-addressed, no new download
    bucket.copy_object(Bucket="models", Key="copy/model.tar.gz",
                       CopySource={"Bucket": "models", "Key": "double/model.tar.gz"})
    serverless_endpoint(sm, "double-copy", {"ModelDataUrl": f"{local_s3.url}/models/copy/model.tar.gz"})
    assert invoke(rt, "double-copy") == {"double": 42}
    assert cache_counts(gw)["downloads"] == after["downloads"]

    # a changed object is fetched again, and the endpoint updated to it serves the new model
    bucket.put_object(Bucket="models", Key="double/model.tar.gz", Body=model_tar(lambda x: {"triple": x * 3}))
    sm.create_model(ModelName="double-v2", PrimaryContainer={"ModelDataUrl": "s3://models/double/model.tar.gz"})
    sm.create_endpoint_config(EndpointConfigName="double-v2", ProductionVariants=[
        {"VariantName": "AllTraffic", "ModelName": "double-v2",
         "ServerlessConfig": {"MemorySizeInMB": 1024, "MaxConcurrency": 2}}])
    sm.update_endpoint(EndpointName="double", EndpointConfigName="double-v2")
    sm.get_waiter("endpoint_in_service").wait(EndpointName="double", WaiterConfig={"Delay": 0.2, "MaxAttempts": 200})
    assert invoke(rt, "double") == {"triple": 63}
    assert cache_counts(gw)["downloads"] == after["downloads"] + 1


@pytest.mark.parametrize("url, message", [
    ("s3://no-such-bucket/m.tar.gz", "Could not find model data at s3://no-such-bucket/m.tar.gz: the bucket "
                                     "no-such-bucket does not exist"),
    ("s3://models/missing/model.tar.gz", "Could not find model data at s3://models/missing/model.tar.gz: no object"),
    ("s3://models/", "name an object"),
    ("https://example.com/models/m.tar.gz", "slimserve does not fetch other URLs"),
    ("http://169.254.169.254/latest/meta-data/", "slimserve does not fetch other URLs"),
])
def test_missing_and_unfetchable_model_data_is_refused_at_create_model(gw, bucket, url, message):
    sm, _ = sagemaker_clients(gw.url)
    with pytest.raises(botocore.exceptions.ClientError) as info:
        sm.create_model(ModelName="bad", PrimaryContainer={"ModelDataUrl": url})
    assert info.value.response["Error"]["Code"] == "ValidationException"
    assert message in info.value.response["Error"]["Message"]
    with pytest.raises(botocore.exceptions.ClientError, match="Could not find model"):
        sm.describe_model(ModelName="bad")


def test_a_truncated_or_corrupt_archive_is_refused_at_create_model(gw, bucket):
    sm, _ = sagemaker_clients(gw.url)
    whole = model_tar(len)
    bucket.put_object(Bucket="models", Key="cut/model.tar.gz", Body=whole[:-9])
    bucket.put_object(Bucket="models", Key="junk/model.tar.gz", Body=b"\x1f\x8b" + os.urandom(300))
    for key in ("cut", "junk"):
        with pytest.raises(botocore.exceptions.ClientError, match="truncated or corrupt"):
            sm.create_model(ModelName=f"bad-{key}", PrimaryContainer={"ModelDataUrl": f"s3://models/{key}/model.tar.gz"})


def test_wrong_keys_are_refused_with_access_denied_and_the_gateway_keeps_serving(local_s3, bucket):
    for env, detail in (({"AWS_SECRET_ACCESS_KEY": "not-the-secret"}, "refused the gateway's secret key"),
                        ({"AWS_ACCESS_KEY_ID": "AKIDUNKNOWN"}, "does not know the gateway's access key id")):
        with running_gateway("--s3-endpoint-url", local_s3.url, "--no-zygotes", env=env) as g:
            sm, _ = sagemaker_clients(g.url)
            with pytest.raises(botocore.exceptions.ClientError) as info:
                sm.create_model(ModelName="m", PrimaryContainer={"ModelDataUrl": "s3://models/double/model.tar.gz"})
            msg = info.value.response["Error"]["Message"]
            assert "Could not access model data at s3://models/double/model.tar.gz" in msg and detail in msg
            assert sm.list_models()["Models"] == []


def test_the_cli_deploys_from_s3_and_a_model_cache_limit_evicts(local_s3, bucket):
    bucket.put_object(Bucket="models", Key="a.tar.gz", Body=model_tar(lambda x: "a"))
    bucket.put_object(Bucket="models", Key="b.tar.gz", Body=model_tar(lambda x: "b"))
    with running_gateway("--s3-endpoint-url", local_s3.url, "--no-zygotes", "--model-cache-mb", "1") as g:
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        for name in ("a", "b"):
            p = subprocess.run([sys.executable, "-m", "gateway.cli", "deploy", name, f"s3://models/{name}.tar.gz",
                                "--memory", "1024", "--url", g.url, "--state-dir", str(g.state_dir)],
                               capture_output=True, text=True, env=env, timeout=120)
            assert p.returncode == 0, p.stderr
            assert g.client().invoke(name, "1") == name.encode()       # a str answer passes through
        p = subprocess.run([sys.executable, "-m", "gateway.cli", "deploy", "gone", "s3://models/nothing.tar.gz",
                            "--memory", "1024", "--url", g.url, "--state-dir", str(g.state_dir)],
                           capture_output=True, text=True, env=env, timeout=120)
        assert p.returncode != 0 and "Could not find model data at s3://models/nothing.tar.gz" in p.stderr
        assert sorted(e["name"] for e in g.client().endpoints()) == ["a", "b"]
        cached = g.state_dir / "model-cache" / "objects"
        assert len(list(cached.iterdir())) == 2                  # both fit in 1 MB
        for name in ("big1", "big2"):                              # 600 KB each: the second cannot fit beside the first
            bucket.put_object(Bucket="models", Key=f"{name}.tar.gz", Body=_tar_with_blob(os.urandom(600 << 10)))
            g.client().deploy(name, f"s3://models/{name}.tar.gz", memory_mb=1024)
        assert len(list(cached.iterdir())) == 1                  # least recently used first: a, b, then big1 went
        assert cache_counts(g)["downloads"] == 4
        assert g.client().invoke("a", "1") == b"a"               # installed endpoints do not need the cache


def _tar_with_blob(blob: bytes) -> bytes:
    buf = io.BytesIO()
    n = len(blob)
    data = pickle_model(lambda x: n)
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, content in (("model.pkl", data), ("weights.bin", blob)):
            info = tarfile.TarInfo(name)
            info.size = len(content)
            tar.addfile(info, io.BytesIO(content))
    return buf.getvalue()


def test_the_sagemaker_python_sdk_deploys_a_model_from_s3_unchanged(gw, bucket, local_s3, monkeypatch):
    sdk = pytest.importorskip("sagemaker", reason="the SageMaker Python SDK (sagemaker<3) is a test extra")
    from sagemaker.deserializers import JSONDeserializer
    from sagemaker.model import Model
    from sagemaker.serializers import JSONSerializer
    from sagemaker.serverless import ServerlessInferenceConfig

    for var, url in (("AWS_ENDPOINT_URL_SAGEMAKER", gw.url), ("AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME", gw.url),
                     ("AWS_ENDPOINT_URL_S3", local_s3.url)):
        monkeypatch.setenv(var, url)
    bucket.create_bucket(Bucket="sdk-default")
    bucket.put_object(Bucket="models", Key="sdk/model.tar.gz", Body=model_tar(lambda x: {"sdk": x}))
    session = sdk.Session(boto_session=boto3.Session(region_name="us-east-1"), default_bucket="sdk-default")
    model = Model(image_uri="local/sklearn:1", model_data="s3://models/sdk/model.tar.gz",
                  role="arn:aws:iam::123456789012:role/SageMaker", sagemaker_session=session,
                  predictor_cls=sdk.predictor.Predictor)
    predictor = model.deploy(serverless_inference_config=ServerlessInferenceConfig(memory_size_in_mb=1024,
                                                                                   max_concurrency=2),
                             endpoint_name="from-sdk", serializer=JSONSerializer(), deserializer=JSONDeserializer())
    assert predictor.predict({"a": 1}) == {"sdk": {"a": 1}}
    predictor.delete_endpoint()


def test_serve_s3_local_runs_a_signed_server_that_keeps_its_port_and_data_across_restarts(fresh_gateway):
    from gateway.sagemaker.credentials import FILE_NAME, read

    g = fresh_gateway("--s3", "local", "--no-zygotes")
    listening = next(line for line in g.output if "listening on" in line)
    s3_url = re.search(r"local S3 on (http://127\.0\.0\.1:\d+)", listening).group(1)
    key = read(g.state_dir / FILE_NAME)
    creds = subprocess.run([sys.executable, "-m", "gateway.cli", "credentials", "--state-dir", str(g.state_dir)],
                           capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=str(ROOT)), timeout=60)
    assert f"export AWS_ENDPOINT_URL_S3={s3_url}" in creds.stdout and key.secret in creds.stdout
    doctor = subprocess.run([sys.executable, "-m", "gateway.cli", "doctor", "--state-dir", str(g.state_dir)],
                            capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=str(ROOT)), timeout=60)
    assert f"local S3 (serve --s3 local): {s3_url}" in doctor.stdout, doctor.stdout + doctor.stderr
    if os.geteuid() == 0:          # root: SeaweedFS's internal ports are in a network namespace of its own
        import psutil

        assert "(its own network namespace" in doctor.stdout
        weed = [p for p in psutil.process_iter(["cmdline"]) if str(g.state_dir) in " ".join(p.info["cmdline"] or [])
                and "weed" in (p.info["cmdline"] or [""])[0]]
        assert len(weed) == 1
        host = [c for c in psutil.net_connections("tcp") if c.pid == weed[0].pid and c.status == "LISTEN"]
        assert host == [], f"SeaweedFS listens on the host: {host}"
    with pytest.raises(botocore.exceptions.ClientError):                      # signed with other keys: refused
        s3_client(s3_url, "AKIDNOBODY", "nope").list_buckets()
    import urllib.error
    import urllib.request
    with pytest.raises(urllib.error.HTTPError) as anon:                       # unsigned: refused
        urllib.request.urlopen(f"{s3_url}/", timeout=10)
    assert anon.value.code == 403
    s3 = s3_client(s3_url, key.key_id, key.secret)
    s3.create_bucket(Bucket="kept")
    body = model_tar(lambda x: {"kept": True})
    s3.put_object(Bucket="kept", Key="m.tar.gz", Body=body)
    sm, rt = sagemaker_clients(g.url)
    serverless_endpoint(sm, "kept", {"ModelDataUrl": "s3://kept/m.tar.gz"})
    assert invoke(rt, "kept") == {"kept": True}
    g.stop()
    g2 = fresh_gateway("--s3", "local", "--no-zygotes")
    assert f"local S3 on {s3_url}" in next(line for line in g2.output if "listening on" in line)
    assert s3.get_object(Bucket="kept", Key="m.tar.gz")["Body"].read() == body          # the data survived
    sm2, rt2 = sagemaker_clients(g2.url)
    assert invoke(rt2, "kept") == {"kept": True}
    sm2.create_model(ModelName="again", PrimaryContainer={"ModelDataUrl": "s3://kept/m.tar.gz"})   # read after restart


def test_the_sdks_framework_model_with_an_entry_point_and_source_dir_serves(gw, bucket, local_s3, monkeypatch,
                                                                            tmp_path):
    """SKLearnModel(entry_point=..., source_dir=...): the SDK uploads the code as sourcedir.tar.gz
    and names it in SAGEMAKER_SUBMIT_DIRECTORY / SAGEMAKER_PROGRAM, as SageMaker's containers read them."""
    sdk = pytest.importorskip("sagemaker", reason="the SageMaker Python SDK (sagemaker<3) is a test extra")
    import joblib
    import numpy as np
    from sagemaker.serverless import ServerlessInferenceConfig
    from sagemaker.session_settings import SessionSettings
    from sagemaker.sklearn import SKLearnModel
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    for var, url in (("AWS_ENDPOINT_URL_SAGEMAKER", gw.url), ("AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME", gw.url),
                     ("AWS_ENDPOINT_URL_S3", local_s3.url)):
        monkeypatch.setenv(var, url)
    x, y = load_iris(return_X_y=True)
    joblib.dump(LogisticRegression(max_iter=500).fit(x, y), tmp_path / "model.joblib")
    with tarfile.open(tmp_path / "model.tar.gz", "w:gz") as tar:
        tar.add(tmp_path / "model.joblib", arcname="model.joblib")
    bucket.upload_file(str(tmp_path / "model.tar.gz"), "models", "iris/model.tar.gz")
    src = tmp_path / "src"
    src.mkdir()
    (src / "serve_iris.py").write_text("import os\nimport joblib\n\n\ndef model_fn(model_dir):\n"
                                       "    return joblib.load(os.path.join(model_dir, 'model.joblib'))\n")
    bucket.create_bucket(Bucket="sdk-code")
    # SeaweedFS has no default KMS key, so the SDK's aws:kms upload of its code is turned off here
    session = sdk.Session(boto_session=boto3.Session(region_name="us-east-1"), default_bucket="sdk-code",
                          settings=SessionSettings(encrypt_repacked_artifacts=False))
    model = SKLearnModel(model_data="s3://models/iris/model.tar.gz", role="arn:aws:iam::123456789012:role/SageMaker",
                         entry_point="serve_iris.py", source_dir=str(src), framework_version="1.2-1",
                         sagemaker_session=session)
    predictor = model.deploy(serverless_inference_config=ServerlessInferenceConfig(memory_size_in_mb=1024,
                                                                                   max_concurrency=2),
                             endpoint_name="sdk-sklearn")
    assert list(predictor.predict(np.array([[5.9, 3.0, 5.1, 1.8], [5.1, 3.5, 1.4, 0.2]]))) == [2, 0]
    env = boto3.client("sagemaker", endpoint_url=gw.url).describe_model(
        ModelName=model.name)["PrimaryContainer"]["Environment"]
    assert env["SAGEMAKER_PROGRAM"] == "serve_iris.py" and env["SAGEMAKER_SUBMIT_DIRECTORY"].startswith("s3://sdk-code/")
    predictor.delete_endpoint()


def test_a_download_streams_to_disk_in_bounded_memory_and_a_replaced_object_is_never_mixed(local_s3, bucket,
                                                                                          tmp_path):
    import tracemalloc

    from gateway.data import s3 as s3mod
    from gateway.data.locations import parse

    size = 48 << 20                                          # three ranged parts
    blob = tmp_path / "big.bin"
    with open(blob, "wb") as fh:
        for _ in range(size >> 20):
            fh.write(os.urandom(1 << 20))
    bucket.upload_file(str(blob), "models", "streamed.bin")
    client = s3mod.S3(s3mod.S3Config(endpoint_url=local_s3.url))
    info = client.stat(parse("s3://models/streamed.bin"))
    assert info.size == size
    tracemalloc.start()
    client.download(info, tmp_path / "out.bin")
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert (tmp_path / "out.bin").read_bytes() == blob.read_bytes()
    assert peak < 16 << 20, f"the download held {peak >> 20} MB of a {size >> 20} MB object in memory"
    bucket.put_object(Bucket="models", Key="streamed.bin", Body=b"replaced")     # a new ETag
    with pytest.raises(s3mod.Changed):                                           # If-Match: never half old, half new
        client.download(info, tmp_path / "again.bin")


def test_model_data_source_takes_an_uncompressed_prefix_or_object_and_pins_an_etag(gw, bucket):
    sm, rt = sagemaker_clients(gw.url)
    code = "import os\n\ndef model_fn(d):\n    return open(os.path.join(d, 'weights', 'w.txt')).read()\n\n" \
           "def predict_fn(data, model):\n    return {'weights': model, 'got': data}\n"
    for key, body in (("dir/code/inference.py", code), ("dir/weights/w.txt", "0.42"), ("dir/README", "x")):
        bucket.put_object(Bucket="models", Key=key, Body=body.encode())
    serverless_endpoint(sm, "prefix", {"ModelDataSource": {"S3DataSource": {
        "S3Uri": "s3://models/dir/", "S3DataType": "S3Prefix", "CompressionType": "None"}}})
    assert invoke(rt, "prefix", b"[1]") == {"weights": "0.42", "got": [1]}

    bucket.put_object(Bucket="models", Key="raw/model.pkl", Body=pickle_model(lambda x: {"raw": x}))
    etag = bucket.head_object(Bucket="models", Key="raw/model.pkl")["ETag"]
    serverless_endpoint(sm, "raw", {"ModelDataSource": {"S3DataSource": {
        "S3Uri": "s3://models/raw/model.pkl", "S3DataType": "S3Object", "CompressionType": "None", "ETag": etag}}})
    assert invoke(rt, "raw") == {"raw": 21}

    refusals = [
        ({"S3Uri": "s3://models/raw/model.pkl", "S3DataType": "S3Object", "CompressionType": "None",
          "ETag": '"0123456789abcdef0123456789abcdef"'}, "it was replaced"),
        ({"S3Uri": "s3://models/dir/", "S3DataType": "S3Prefix", "CompressionType": "Gzip"}, "CompressionType None"),
        ({"S3Uri": "s3://models/dir", "S3DataType": "S3Prefix", "CompressionType": "None"}, "ending in /"),
        ({"S3Uri": "s3://models/empty/", "S3DataType": "S3Prefix", "CompressionType": "None"}, "no objects"),
        ({"S3Uri": "s3://models/dir/", "S3DataType": "Folder", "CompressionType": "None"}, "enum value set"),
        ({"S3Uri": "/etc/", "S3DataType": "S3Prefix", "CompressionType": "None"}, "Could not find model data"),
    ]
    for s3, message in refusals:
        with pytest.raises(botocore.exceptions.ClientError) as info:
            sm.create_model(ModelName="bad", PrimaryContainer={"ModelDataSource": {"S3DataSource": s3}})
        assert info.value.response["Error"]["Code"] == "ValidationException"
        assert message in info.value.response["Error"]["Message"], info.value.response["Error"]["Message"]
    with pytest.raises(botocore.exceptions.ClientError, match="either ModelDataUrl or ModelDataSource"):
        sm.create_model(ModelName="bad", PrimaryContainer={
            "ModelDataUrl": "s3://models/raw/model.pkl",
            "ModelDataSource": {"S3DataSource": {"S3Uri": "s3://models/raw/model.pkl", "S3DataType": "S3Object",
                                                 "CompressionType": "None"}}})


def test_the_local_s3_server_holds_many_buckets(local_s3):
    """Each bucket is a SeaweedFS collection; by default one took 7 volumes at its first write,
    so a disk of a few dozen GB held only about nine buckets (a full suite ran out)."""
    c = s3_client(local_s3.url)
    for i in range(15):
        c.create_bucket(Bucket=f"many-{i:02d}")
        c.put_object(Bucket=f"many-{i:02d}", Key="k", Body=b"v")
    assert [c.get_object(Bucket=f"many-{i:02d}", Key="k")["Body"].read() for i in range(15)] == [b"v"] * 15
