import pytest

from tests.helpers import GatewayProcess, make_state_dir, remove_state_dir


@pytest.fixture(scope="module")
def gateway():
    """One real gateway per test module (process backend, SQLite), 5 s invocation timeout."""
    state = make_state_dir()
    gw = GatewayProcess(state, "--timeout", "5").start()
    gw.wait_for_zygote()
    yield gw
    gw.stop()
    remove_state_dir(state)


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
