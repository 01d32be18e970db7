"""A live lunch spike: 1 -> 50 concurrent clients against a real gateway on the adaptive policy."""
import asyncio
import time

import aiohttp

from gateway.sagemaker.credentials import AccessKey
from gateway.sagemaker.sigv4 import sign_url
from tests import models
from tests.helpers import TEST_KEYS, wait_until

KEY = AccessKey(*TEST_KEYS[0].split(":"))      # one of the keys the test gateway accepts

# Zygote cold starts are milliseconds, so the policy's break-even keep-alive for a
# 1 GB sandbox is 2400 GB-s/cold-s x 0.005 s = 12 s: the pool must shrink within seconds.
COLD_START_MS = 5
BREAK_EVEN_S = 2400 * COLD_START_MS / 1000


async def _client_loop(session, url, stop_at, results):
    while time.monotonic() < stop_at:
        try:
            headers = sign_url("POST", url, b"0.2", KEY, "us-east-1", {"Content-Type": "application/json"})
            async with session.post(url, data=b"0.2", headers=headers) as resp:
                await resp.read()
                results.append(resp.headers.get("x-amzn-ErrorType", "?").split(":")[0] if resp.status != 200 else "ok")
                if resp.status != 200:
                    await asyncio.sleep(0.05)           # a throttled client backs off briefly
        except aiohttp.ClientError as exc:
            results.append(f"connection:{type(exc).__name__}")


def _pool(client, name):
    return client.describe(name)["variants"][0]["pool"] or {"sandboxes": [], "states": {}}


async def test_lunch_spike_serves_without_errors_and_the_pool_shrinks_after(fresh_gateway):
    gw = fresh_gateway("--policy", "adaptive", "--policy-cold-start-ms", str(COLD_START_MS))
    gw.wait_for_zygote()
    client = gw.client()
    client.deploy("lunch", models.sleeps, memory_mb=1024, max_concurrency=20)
    url = f"{gw.url}/endpoints/lunch/invocations"
    results: list[str] = []
    peak = 0

    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
        tasks = []
        t0 = time.monotonic()
        end = t0 + 10.0
        tasks.append(asyncio.create_task(_client_loop(session, url, end, results)))   # the quiet morning
        await asyncio.sleep(2.0)
        for _ in range(49):                                                          # ramp to 50 in ~3 s
            tasks.append(asyncio.create_task(_client_loop(session, url, end, results)))
            await asyncio.sleep(3.0 / 49)
        while time.monotonic() < end:                                                # held, then dropped
            pool = await asyncio.to_thread(_pool, client, "lunch")
            peak = max(peak, len(pool["sandboxes"]))
            await asyncio.sleep(0.5)
        await asyncio.gather(*tasks)

    kinds = {k: results.count(k) for k in set(results)}
    assert set(kinds) <= {"ok", "ThrottlingException"}, kinds          # designed throttles only
    assert kinds["ok"] >= 100 and kinds.get("ThrottlingException", 0) > 0, kinds
    assert peak >= 10, f"the pool never grew past {peak} sandboxes"

    # After the spike every idle sandbox is planned to go within the break-even keep-alive,
    # and the scaler lets them go: the pool shrinks back.
    after = _pool(client, "lunch")
    planned = [s["expires_in_s"] for s in after["sandboxes"] if s["expires_in_s"] is not None]
    assert planned and max(planned) <= BREAK_EVEN_S + 1.0, planned
    wait_until(lambda: len(_pool(client, "lunch")["sandboxes"]) <= 1, timeout=BREAK_EVEN_S + 20)

    usage = client.usage(endpoint="lunch")
    assert len(usage) == kinds["ok"] + kinds.get("ThrottlingException", 0)   # one record per answer
    assert sum(u["status"] == "ok" for u in usage) == kinds["ok"]
