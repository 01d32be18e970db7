"""The warm-up replay of model zygotes: never a request that failed, bounded when stems die,
silent, and off for endpoints that ask."""
import time

import pytest

from gateway.client import ClientError
from tests import models
from tests.helpers import sagemaker_clients, serverless_endpoint, wait_until


def _model_zygotes(c, name):
    v = c.describe(name)["variants"][0]
    return [m for m in c.zygotes()["models"] if f"/{name}/v{v['bundle_version']}" in m["bundle"]]


def _log(gw, name):
    return (gw.state_dir / "logs" / f"{name}.log").read_text()


def test_a_request_that_kills_its_sandbox_is_never_replayed(gateway):
    c = gateway.client()
    c.deploy("wu-exit", models.exits_3, memory_mb=1024)
    with pytest.raises(ClientError) as err:
        c.invoke("wu-exit", 1)
    assert err.value.status == 424
    time.sleep(5)                                     # a crash loop would fork and die ~13 times a second
    assert _model_zygotes(c, "wu-exit") == []
    assert _log(gateway, "wu-exit").count("stem died") == 0


def test_stems_that_die_in_warm_up_stop_being_warmed_up(gateway):
    c = gateway.client()
    if not c.doctor()["replica_isolation"]["ok"]:
        pytest.skip("replicas are not PID 1 of a namespace of their own here")
    c.deploy("wu-flaky", models.dies_in_replicas, memory_mb=1024)
    assert c.invoke("wu-flaky", 0) == 1               # answers here; every replay in a replica dies
    assert wait_until(lambda: "no more warm-ups" in _log(gateway, "wu-flaky"), timeout=60)
    time.sleep(2)
    deaths = _log(gateway, "wu-flaky").count("in a row")
    assert 3 <= deaths <= 5                           # 3 in a row, and the ones already warming then
    time.sleep(2)
    assert _log(gateway, "wu-flaky").count("in a row") == deaths   # stems not warmed up live
    assert [m["alive"] for m in _model_zygotes(c, "wu-flaky")] == [True]


def test_a_zygote_whose_stems_keep_dying_backs_off_gives_up_and_is_not_remade(gateway):
    c = gateway.client()
    c.deploy("wu-doomed", models.KillsItsForks(), memory_mb=1024)
    assert c.invoke("wu-doomed", 0) == 1
    assert wait_until(lambda: "giving up" in _log(gateway, "wu-doomed"), timeout=60)
    deaths = _log(gateway, "wu-doomed").count("in a row")
    assert deaths == 6                                # backed off between tries, then exited
    c.scale_in("wu-doomed")
    assert c.invoke("wu-doomed", 0) == 1              # the next cold start takes the base zygote ...
    assert c.usage(endpoint="wu-doomed")[-1]["start_path"] == "zygote"
    time.sleep(3)
    assert _model_zygotes(c, "wu-doomed") == []       # ... and no new model zygote is made for a while
    assert _log(gateway, "wu-doomed").count("in a row") == deaths


def test_what_a_warm_up_prints_is_not_logged_again(gateway):
    c = gateway.client()
    c.deploy("wu-print", models.prints_once, memory_mb=1024)
    assert c.invoke("wu-print", 7) == 7
    assert wait_until(lambda: _model_zygotes(c, "wu-print"), timeout=60)
    time.sleep(2)                                     # its stems have replayed the call by now
    assert _log(gateway, "wu-print").count("side-effect-7") == 1


def test_an_endpoint_can_opt_out_of_the_warm_up(gateway):
    c = gateway.client()
    c.deploy("wu-off", models.dies_in_replicas, memory_mb=1024, warmup=False)
    assert c.invoke("wu-off", 0) == 1
    assert wait_until(lambda: _model_zygotes(c, "wu-off"), timeout=60)
    time.sleep(2)
    assert "in a row" not in _log(gateway, "wu-off")  # nothing replayed, so nothing died


def test_a_sagemaker_model_opts_out_with_its_environment(gateway, tmp_path):
    from gateway.client import pickle_model

    (tmp_path / "model.pkl").write_bytes(pickle_model(models.dies_in_replicas))
    sm, rt = sagemaker_clients(gateway.url)
    serverless_endpoint(sm, "wu-env", {"ModelDataUrl": str(tmp_path), "Environment": {"SLIMSERVE_WARMUP": "0"}})
    assert rt.invoke_endpoint(EndpointName="wu-env", Body=b"0", ContentType="application/json")["Body"].read() == b"1"
    c = gateway.client()
    assert wait_until(lambda: _model_zygotes(c, "wu-env"), timeout=60)
    time.sleep(2)
    assert "in a row" not in _log(gateway, "wu-env")


def test_a_cold_start_never_waits_for_another_stems_warm_up(gateway):
    """Stems of a 2 s model replay a 2 s call to warm up; cold starts that arrive meanwhile get a
    stem that skips it instead of queueing behind the warm-ups (they took 3, 3, 3, 15, 18, 21 s)."""
    from concurrent.futures import ThreadPoolExecutor

    c = gateway.client()
    c.deploy("wu-slow", models.sleeps, memory_mb=1024)
    assert c.invoke("wu-slow", 2.0) == 2.0
    assert wait_until(lambda: _model_zygotes(c, "wu-slow"), timeout=60)
    c.scale_in("wu-slow")
    t0 = time.monotonic()
    with ThreadPoolExecutor(4) as ex:
        answers = list(ex.map(lambda _: c.invoke("wu-slow", 2.0), range(4)))
    assert answers == [2.0] * 4 and time.monotonic() - t0 < 8.0       # generous: each call is 2 s
    cold = [u for u in c.usage(endpoint="wu-slow")[-4:] if u["cold_start"]]
    assert cold and all(u["init_ms"] < 1500 for u in cold), [u["init_ms"] for u in cold]
