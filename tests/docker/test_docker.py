"""The docker backend against a real Docker engine: container settings, faults, kill -9, orphans."""
import json
import os
import shutil
import sqlite3
import time

import pytest

from tests import models
from tests.helpers import (
    GatewayProcess,
    answered_until_killed,
    make_state_dir,
    remove_state_dir,
    sagemaker_clients,
    serverless_endpoint,
    wait_until,
)

docker = pytest.importorskip("docker")


def _engine():
    try:
        client = docker.from_env(timeout=20)
        client.ping()
        return client
    except Exception as exc:  # noqa: BLE001 - no engine here
        return exc


@pytest.fixture(scope="module")
def engine():
    client = _engine()
    if isinstance(client, Exception):
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true but no Docker engine answers: {client}")
        pytest.skip(f"no Docker engine: {client}")
    from runtime.docker import image

    image.build(client, log=lambda m: None)
    return client


def _containers(client, state_dir):
    from gateway.app import make_backend
    from gateway.config import Settings

    instance = make_backend(Settings(state_dir=state_dir, backend="docker")).config.instance
    # List without inspecting, then inspect each: a container can be removed between the two (a
    # stem retiring, a kill -9's leftovers exiting), and one gone is simply not there any more.
    out = []
    for sparse in client.containers.list(all=True, sparse=True, filters={"label": f"slimserve.instance={instance}"}):
        try:
            out.append(client.containers.get(sparse.id))
        except docker.errors.NotFound:
            pass
    return out


@pytest.fixture(scope="module")
def dgw(engine, local_s3):
    state = make_state_dir()
    gw = GatewayProcess(state, "--backend", "docker", "--timeout", "5", "--byoc-user", "4242",
                        "--s3-endpoint-url", local_s3.url).start(timeout=120)
    c = gw.client()
    for name, fn, mem in [("echo", models.echo, 1024), ("raises", models.raises, 1024),
                          ("exits", models.exits, 1024), ("hangs", models.hangs, 1024),
                          ("bomb", models.allocates, 1024), ("sandbox", models.tmp_and_net, 2048),
                          ("identity", models.identity, 1024), ("dock", models.docker_socket, 1024),
                          ("reads", models.reads, 1024)]:
        c.deploy(name, fn, memory_mb=mem)
    yield gw
    gw.stop()
    assert wait_until(lambda: not _containers(engine, state), timeout=30), "containers left after a clean stop"
    remove_state_dir(state)


def _dockerd_alive() -> bool:
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/stat") as fh:
                fields = fh.read().split()
        except OSError:
            continue
        if fields[1] == "(dockerd)" and fields[2] != "Z":
            return True
    return False


def invoke(gw, name, body=b"1"):
    return gw.boto().invoke_endpoint(EndpointName=name, Body=body, ContentType="application/json")


def _model_error(gw, name, body=b"1"):
    with pytest.raises(gw.boto().exceptions.ModelError) as exc:
        invoke(gw, name, body)
    return exc.value.response


def test_containers_are_capped_isolated_and_unprivileged(dgw, engine):
    out = json.loads(invoke(dgw, "sandbox", b"0")["Body"].read())
    assert out["cuda"] == "" and out["net"] in (101, 111)        # refused or unreachable: a loopback at most
    # find the container serving "sandbox" by its memory limit (the only 2048 MB one)
    hosts = [x for x in _containers(engine, dgw.state_dir)
             if x.attrs["HostConfig"]["Memory"] == 2048 << 20]
    assert len(hosts) == 1, [x.attrs["HostConfig"]["Memory"] for x in _containers(engine, dgw.state_dir)]
    hc = hosts[0].attrs["HostConfig"]
    assert hc["MemorySwap"] == hc["Memory"] == 2048 << 20                # no swap beyond the tier
    assert hc["NetworkMode"] == "none" and hc["ReadonlyRootfs"] is True
    assert hc["CapDrop"] == ["ALL"] and "no-new-privileges" in hc["SecurityOpt"]
    assert hc["PidsLimit"] > 0 and hc["CpuShares"] == 2048 and not hc.get("Devices")
    assert hosts[0].attrs["Config"]["User"] == "10001:10001"
    mounts = {m["Destination"]: m for m in hosts[0].attrs["Mounts"]}
    assert mounts["/opt/ml/model"]["RW"] is False


def test_containers_meet_the_process_sandboxes_list(dgw):
    """The same attacks as tests/integration/test_isolation.py, against a container."""
    me = json.loads(invoke(dgw, "identity", b"0")["Body"].read())
    assert me["uid"] == 10001 and me["gid"] == 10001 and set(me["groups"]) <= {10001}    # no other group
    assert int(me["cap_eff"], 16) == 0 and me["no_new_privs"] == "1" and me["seccomp"] == "2"
    assert me["bundle"] == ["model.pkl"] and me["thread"] == [45] and me["sklearn"] == 1
    assert json.loads(invoke(dgw, "dock", b"0")["Body"].read()) == {"error": "FileNotFoundError"}
    token = json.dumps(str(dgw.state_dir / "admin-token")).encode()
    assert json.loads(invoke(dgw, "reads", token)["Body"].read()) == {"error": "FileNotFoundError"}
    assert json.loads(invoke(dgw, "reads", b'"/etc/shadow"')["Body"].read()) == {"error": "FileNotFoundError"}
    rep = dgw.client().doctor()
    assert all(rep[k]["ok"] for k in ("sandbox_uid", "filesystem_view", "private_tmp", "pids_limit", "seccomp"))
    assert "4242" in rep["sandbox_uid"]["detail"]


def test_model_faults_match_the_process_backend(dgw):
    resp = _model_error(dgw, "raises", b'"zz"')
    assert resp["OriginalStatusCode"] == 500 and "ValueError: bad input 'zz'" in resp["OriginalMessage"]
    resp = _model_error(dgw, "exits")
    assert "exited" in resp["Error"]["Message"]
    assert json.loads(invoke(dgw, "echo")["Body"].read()) == {"echo": 1}
    _model_error(dgw, "exits")                                         # replaced: a new container served it
    assert [u["cold_start"] for u in dgw.client().usage(endpoint="exits")] == [True, True]


def test_hang_times_out_and_the_container_is_replaced(dgw):
    resp = _model_error(dgw, "hangs")
    assert "did not answer within 5 s" in resp["Error"]["Message"]
    rec = dgw.client().usage(endpoint="hangs")[-1]
    assert rec["status"] == "ModelError" and rec["error_kind"] == "timeout"


def test_memory_bomb_is_oom_killed_as_the_tier_error(dgw):
    assert json.loads(invoke(dgw, "bomb", b"64")["Body"].read()) == 64 << 20
    resp = _model_error(dgw, "bomb", b"3000")
    assert "exceeded its memory tier of 1024 MB" in resp["Error"]["Message"]
    assert dgw.client().usage(endpoint="bomb")[-1]["error_kind"] == "out_of_memory"
    assert json.loads(invoke(dgw, "echo", b"2")["Body"].read()) == {"echo": 2}   # everything else still served


def test_cold_starts_come_from_paused_stems(dgw, engine):
    dgw.client().deploy("stemmed", models.echo, memory_mb=3072)
    assert wait_until(lambda: sum(x.status == "paused" for x in _containers(engine, dgw.state_dir)) >= 1, timeout=60)
    invoke(dgw, "stemmed")
    sb = dgw.client().describe("stemmed")["variants"][0]["pool"]["sandboxes"][0]
    assert sb["start_path"] == "stem"


def test_a_containers_cpu_quota_and_thread_pools_follow_its_tier(dgw, engine):
    """Docker sandboxes get their tier's CPU like process ones: the quota on the (un)paused stem,
    pools of ceil(vCPUs) once handed the model."""
    c = dgw.client()
    c.deploy("pools-2g", models.thread_pools, memory_mb=2048)
    out = json.loads(invoke(dgw, "pools-2g", b"0")["Body"].read())
    assert out["pools"] == [2] and out["omp"] == "2" and out["cpus"] == "2"
    quotas = []
    for x in _containers(engine, dgw.state_dir):
        try:
            quotas.append(engine.containers.get(x.id).attrs["HostConfig"]["CpuQuota"])
        except Exception:  # noqa: BLE001 - a container that went away meanwhile
            pass
    assert 115800 in quotas                                       # 1.158 vCPU per 100 ms, set on its stem


def test_kill9_loses_no_record_and_the_next_start_removes_orphans(engine):
    state = make_state_dir()
    gw = GatewayProcess(state, "--backend", "docker").start(timeout=120)
    try:
        gw.client().deploy("ledger", models.echo, memory_mb=1024, max_concurrency=20)
        answered = answered_until_killed(gw, "ledger", clients=4, at_least=100)
        ids = [r[0] for r in sqlite3.connect(state / "slimserve.db").execute("SELECT request_id FROM usage")]
        assert set(answered) <= set(ids) and len(ids) == len(set(ids))
        assert _containers(engine, state), "kill -9 leaves containers; the next start must remove them"
        left = {c.id for c in _containers(engine, state)}
        gw2 = GatewayProcess(state, "--backend", "docker").start(timeout=120)
        try:
            assert not left & {c.id for c in _containers(engine, state)}
            r = gw2.boto().invoke_endpoint(EndpointName="ledger", Body=b"2", ContentType="application/json")
            assert r["ResponseMetadata"]["HTTPStatusCode"] == 200
        finally:
            gw2.stop()
    finally:
        remove_state_dir(state)


def test_a_dockerd_restart_is_survived(dgw, engine):
    if os.environ.get("SLIMSERVE_TEST_RESTART_DOCKERD") != "1" and os.environ.get("CI") != "true":
        pytest.skip("restarts the machine's dockerd: set SLIMSERVE_TEST_RESTART_DOCKERD=1 (CI does)")
    if not shutil.which("dockerd"):
        pytest.skip("dockerd is not on this machine's PATH")
    import subprocess

    invoke(dgw, "echo")
    subprocess.run(["pkill", "-x", "dockerd"], check=False)
    assert wait_until(lambda: not _dockerd_alive(), timeout=60), "dockerd did not stop"
    if os.path.exists("/var/run/docker.pid"):
        os.unlink("/var/run/docker.pid")                 # left by the stopped daemon
    with open("/tmp/slimserve-test-dockerd.log", "ab") as log:
        subprocess.Popen(["dockerd", "--bridge=none", "--iptables=false"], stdout=log, stderr=log,
                         start_new_session=True)
    assert wait_until(lambda: not isinstance(_engine(), Exception), timeout=60), "dockerd did not come back"
    deadline = time.time() + 60
    while True:                                   # the containers died with dockerd: new ones are started
        try:
            assert json.loads(invoke(dgw, "echo", b"3")["Body"].read()) == {"echo": 3}
            break
        except Exception:  # noqa: BLE001 - until the gateway has replaced its sandboxes
            if time.time() > deadline:
                raise
            time.sleep(0.5)


BYOC_SERVER = '''#!{python}
"""A model server that follows SageMaker's container contract (started as `serve`)."""
import json, os
from http.server import BaseHTTPRequestHandler, HTTPServer

WEIGHTS = open("/opt/ml/model/weights.txt").read().strip()


class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200 if self.path == "/ping" else 404)
        self.end_headers()

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        if body == b"fail":
            self.send_response(500)
            self.end_headers()
            self.wfile.write(b"cannot score that")
            return
        if body.startswith(b"huge"):                   # 50 MB, announced or not
            self.send_response(200)
            if body == b"huge":
                self.send_header("Content-Length", str(50 << 20))
            self.end_headers()
            try:
                for _ in range(50):
                    self.wfile.write(b"x" * (1 << 20))
            except OSError:
                pass
            return
        out = json.dumps({{"weights": WEIGHTS, "greeting": os.environ.get("GREETING"),
                          "port": os.environ.get("SAGEMAKER_BIND_TO_PORT"), "echo": body.decode(),
                          "attrs": self.headers.get("X-Amzn-SageMaker-Custom-Attributes")}}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("X-Amzn-SageMaker-Custom-Attributes", "scored=1")
        self.end_headers()
        self.wfile.write(out)

    def log_message(self, *args):
        pass


HTTPServer(("0.0.0.0", int(os.environ.get("SAGEMAKER_BIND_TO_PORT", "8080"))), Handler).serve_forever()
'''


def test_bring_your_own_sagemaker_container(dgw, engine, tmp_path, local_s3):

    python = engine.images.get("slimserve-runtime:latest").attrs["Config"]["Env"]
    python = next(e.split("=", 1)[1] for e in python if e.startswith("SLIMSERVE_PYTHON="))
    ctx = tmp_path / "byoc"
    ctx.mkdir()
    (ctx / "serve").write_text(BYOC_SERVER.format(python=python))
    (ctx / "serve").chmod(0o755)
    (ctx / "Dockerfile").write_text("FROM slimserve-runtime:latest\nCOPY serve /usr/bin/serve\n")
    engine.images.build(path=str(ctx), tag="slimserve-test-byoc:1", rm=True, pull=False)
    data = tmp_path / "artifacts"
    data.mkdir()
    (data / "weights.txt").write_text("w=0.42\n")

    sm, rt = sagemaker_clients(dgw.url)
    serverless_endpoint(sm, "byoc", {"Image": "slimserve-test-byoc:1", "ModelDataUrl": str(data),
                                     "Environment": {"GREETING": "hello"}}, delay=0.3)
    _byoc_from_s3(sm, rt, data, tmp_path, local_s3.url)
    r = rt.invoke_endpoint(EndpointName="byoc", Body=b'{"x": 1}', ContentType="application/json",
                           CustomAttributes="trace=7")
    out = json.loads(r["Body"].read())
    assert out == {"weights": "w=0.42", "greeting": "hello", "port": "8080", "echo": '{"x": 1}', "attrs": "trace=7"}
    assert r["ContentType"] == "application/json" and r["CustomAttributes"] == "scored=1"
    with pytest.raises(rt.exceptions.ModelError) as info:
        rt.invoke_endpoint(EndpointName="byoc", Body=b"fail", ContentType="text/plain")
    assert info.value.response["OriginalStatusCode"] == 500
    assert "cannot score that" in info.value.response["OriginalMessage"]
    for huge in (b"huge", b"huge-unannounced"):       # over the 4 MB serverless cap: refused, never held
        with pytest.raises(rt.exceptions.ModelError) as info:
            rt.invoke_endpoint(EndpointName="byoc", Body=huge, ContentType="text/plain")
        assert "over the limit of 4194304 bytes" in info.value.response["OriginalMessage"]
    again = json.loads(rt.invoke_endpoint(EndpointName="byoc", Body=b"2", ContentType="text/plain")["Body"].read())
    assert again["echo"] == "2"
    pool = dgw.client().describe("byoc")["variants"][0]["pool"]
    assert pool["sandboxes"][0]["start_path"] == "container"
    servers = [c for c in _containers(engine, dgw.state_dir) if c.labels.get("slimserve.role") == "container-server"]
    assert servers and all(c.attrs["HostConfig"]["NetworkMode"] == "none" for c in servers)
    assert all(c.attrs["Config"]["User"] == "4242" for c in servers)              # --byoc-user
    assert all(c.attrs["HostConfig"]["CpuQuota"] == 57900 and c.attrs["HostConfig"]["CpuPeriod"] == 100_000
               for c in servers)                                                # 1 GB: 0.579 vCPU
    assert all(c.attrs["HostConfig"]["CapDrop"] == ["ALL"]
               and "no-new-privileges" in c.attrs["HostConfig"]["SecurityOpt"] for c in servers)
    assert dgw.client().usage(endpoint="byoc")[0]["billed_ms"] >= 1
    sm.delete_endpoint(EndpointName="byoc")


def _byoc_from_s3(sm, rt, data, tmp_path, s3_url):
    """The same container with its artifacts as a model.tar.gz in S3: unpacked into /opt/ml/model."""
    import tarfile

    from tests.integration.test_s3 import s3_client

    archive = tmp_path / "artifacts.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(data / "weights.txt", arcname="weights.txt")
    s3 = s3_client(s3_url)
    s3.create_bucket(Bucket="byoc-models")
    s3.upload_file(str(archive), "byoc-models", "byoc/model.tar.gz")
    serverless_endpoint(sm, "byoc-s3", {"Image": "slimserve-test-byoc:1", "Environment": {"GREETING": "from s3"},
                                        "ModelDataUrl": "s3://byoc-models/byoc/model.tar.gz"}, delay=0.3)
    out = json.loads(rt.invoke_endpoint(EndpointName="byoc-s3", Body=b"3", ContentType="text/plain")["Body"].read())
    assert out["weights"] == "w=0.42" and out["greeting"] == "from s3"
    sm.delete_endpoint(EndpointName="byoc-s3")


def test_a_model_from_s3_runs_in_a_container(dgw, local_s3):
    from tests.integration.test_s3 import model_tar, s3_client

    s3 = s3_client(local_s3.url)
    s3.create_bucket(Bucket="docker-models")
    s3.put_object(Bucket="docker-models", Key="echo/model.tar.gz", Body=model_tar(models.echo))
    sm, rt = sagemaker_clients(dgw.url)
    serverless_endpoint(sm, "from-s3", {"ModelDataUrl": "s3://docker-models/echo/model.tar.gz"}, delay=0.3)
    r = rt.invoke_endpoint(EndpointName="from-s3", Body=b"5", ContentType="application/json")
    assert json.loads(r["Body"].read()) == {"echo": 5}
    sm.delete_endpoint(EndpointName="from-s3")


def test_a_transform_job_runs_in_containers_that_split_the_instance(dgw, engine, local_s3):
    """The docker backend cannot put containers under one shared cap: each of an instance's
    workers gets its share (ml.m5.large, two workers: 4096 MB and one vCPU each)."""
    from tests.integration.test_s3 import model_tar, s3_client

    s3 = s3_client(local_s3.url)
    for b in ("docker-tj-models", "docker-tj-in", "docker-tj-out"):
        s3.create_bucket(Bucket=b)
    s3.put_object(Bucket="docker-tj-models", Key="sums/model.tar.gz", Body=model_tar(models.csv_sums))
    s3.put_object(Bucket="docker-tj-in", Key="x/a.csv", Body=b"1,2\nsleep 3\n3,4\n")
    sm, _ = sagemaker_clients(dgw.url)
    sm.create_model(ModelName="docker-sums", PrimaryContainer={"ModelDataUrl": "s3://docker-tj-models/sums/model.tar.gz"})
    sm.create_transform_job(
        TransformJobName="docker-tj", ModelName="docker-sums", MaxConcurrentTransforms=2, BatchStrategy="SingleRecord",
        TransformInput={"DataSource": {"S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": "s3://docker-tj-in/x/"}},
                        "ContentType": "text/csv", "SplitType": "Line"},
        TransformOutput={"S3OutputPath": "s3://docker-tj-out/j", "AssembleWith": "Line"},
        TransformResources={"InstanceType": "ml.m5.large", "InstanceCount": 1})

    def shares():
        found = set()
        for x in _containers(engine, dgw.state_dir):
            try:
                hc = engine.containers.get(x.id).attrs["HostConfig"]
            except Exception:  # noqa: BLE001 - gone meanwhile
                continue
            found.add((hc["Memory"] >> 20, hc["CpuQuota"]))
        return (4096, 100000) in found
    assert wait_until(shares, timeout=60)
    sm.get_waiter("transform_job_completed_or_stopped").wait(TransformJobName="docker-tj",
                                                              WaiterConfig={"Delay": 0.5, "MaxAttempts": 240})
    d = sm.describe_transform_job(TransformJobName="docker-tj")
    assert d["TransformJobStatus"] == "Completed", d
    assert s3.get_object(Bucket="docker-tj-out", Key="j/a.csv.out")["Body"].read() == b"3.0\nslept\n7.0\n"


def test_a_multi_model_endpoint_loads_its_models_into_containers(dgw, local_s3):
    from gateway.client import pickle_model
    from tests.integration.test_s3 import s3_client

    s3 = s3_client(local_s3.url)
    s3.create_bucket(Bucket="docker-mme")
    for state in ("ny", "ca"):
        s3.put_object(Bucket="docker-mme", Key=f"{state}.pkl", Body=pickle_model((lambda s: lambda x: {s: x})(state)))
    c = dgw.client()
    c.deploy("mme-docker", "s3://docker-mme/", memory_mb=1024, multi_model=True)
    rt = dgw.boto()
    for state, body in (("ny", b"1"), ("ca", b"2"), ("ny", b"3")):
        r = rt.invoke_endpoint(EndpointName="mme-docker", Body=body, ContentType="application/json",
                               TargetModel=f"{state}.pkl")
        assert json.loads(r["Body"].read()) == {state: json.loads(body)}
    loaded = c.models("mme-docker")["variants"][0]["models"]
    assert sorted(m["target_model"] for m in loaded) == ["ca.pkl", "ny.pkl"]
    pool = c.describe("mme-docker")["variants"][0]["pool"]
    assert all(sb["start_path"] in ("stem", "container") for sb in pool["sandboxes"])
    c.delete("mme-docker")
