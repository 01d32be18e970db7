"""The durable queue over a real SQLite store, under a fake clock: leases, expiry, recovery."""
import asyncio

import pytest
from multidict import CIMultiDict

from gateway.async_inference.queue import AsyncQueue
from gateway.async_inference.requests import AsyncConfig, submission
from gateway.clock import FakeClock
from gateway.store.sqlite import Store

CFG = AsyncConfig.from_doc({"OutputConfig": {"S3OutputPath": "s3://out/r"}})


def run(coro):
    return asyncio.run(coro)


def sub(**kw):
    return submission(CIMultiDict({f"X-Amzn-SageMaker-{k}": v for k, v in kw.items()}), 3)


@pytest.fixture
def store(tmp_path):
    return Store(tmp_path / "q.db")


async def opened(store):
    await store.open()
    return store


def test_a_claim_is_a_lease_no_two_workers_hold_the_same_request(store):
    async def go():
        await opened(store)
        clock = FakeClock()
        a, b = AsyncQueue(store, clock, "node-a", lease_s=30), AsyncQueue(store, clock, "node-b", lease_s=30)
        reqs = [await a.submit("e", CFG, sub(), b"abc") for _ in range(3)]
        got_a = await a.claim("e", 2)
        got_b = await b.claim("e", 5)
        assert [r.id for r in got_a] == [r.id for r in reqs[:2]]          # oldest first
        assert [r.id for r in got_b] == [reqs[2].id]
        assert await b.claim("e", 5) == []
        clock.advance(20)
        await a.renew([reqs[0].id])                                      # a keeps one lease alive ...
        await b.renew([reqs[2].id])
        clock.advance(15)
        stolen = await b.claim("e", 5)                                   # ... the other ran out
        assert [r.id for r in stolen] == [reqs[1].id] and stolen[0].attempts == 2
        assert not await a.done(reqs[1])                                 # a lost it: cannot end it
        assert await b.done(stolen[0])
        assert await a.done(got_a[0])
        assert (await store.get_async(reqs[0].id)).state == "done"
        assert (await store.get_async(reqs[0].id)).body is None          # the inline body is dropped once used
        await store.close()
    run(go())


def test_requests_survive_a_reopen_and_an_earlier_boot_of_the_node_is_recovered(store, tmp_path):
    async def go():
        await opened(store)
        clock = FakeClock()
        first = AsyncQueue(store, clock, "node", lease_s=300)
        r1 = await first.submit("e", CFG, sub(), b"1")
        r2 = await first.submit("e", CFG, sub(), b"2")
        assert len(await first.claim("e", 1)) == 1                     # r1 running when the process "dies"
        await store.close()
        again = Store(tmp_path / "q.db")
        await again.open()
        other_node = AsyncQueue(again, clock, "elsewhere", lease_s=300)
        assert await other_node.recover() == 0                          # another node's leases run out instead
        second = AsyncQueue(again, clock, "node", lease_s=300)
        assert await second.recover() == 1
        got = await second.claim("e", 5)
        assert [r.id for r in got] == [r1.id, r2.id] and got[0].body == b"1" and got[0].attempts == 2
        await again.close()
    run(go())


def test_ttl_expiry_retry_delay_and_refund(store):
    async def go():
        await opened(store)
        clock = FakeClock()
        q = AsyncQueue(store, clock, "n")
        short = await q.submit("e", CFG, sub(**{"RequestTTLSeconds": "60"}), b"x")
        later = await q.submit("e", CFG, sub(), b"y")
        clock.advance(61)
        assert [r.id for r in await q.expire()] == [short.id]
        assert q.counters.expired == {"e": 1}
        (got,) = await q.claim("e", 5)
        assert got.id == later.id
        assert await q.later(got, 10, "no room", refund=True)
        assert await q.claim("e", 5) == []                               # not before its delay
        clock.advance(10)
        (again,) = await q.claim("e", 5)
        assert again.attempts == 1                                       # the refunded attempt did not count
        assert await q.failed(again, "model failed")
        assert q.counters.failures == {"e": 1}
        assert (await store.get_async(later.id)).error == "model failed"
        backlog = await q.backlog()
        assert backlog == {}
        await store.close()
    run(go())


def test_backlog_counts_queued_and_running_and_the_oldest(store):
    async def go():
        await opened(store)
        clock = FakeClock()
        q = AsyncQueue(store, clock, "n")
        first = await q.submit("e", CFG, sub(), b"x")
        clock.advance(5)
        await q.submit("e", CFG, sub(), b"y")
        await q.submit("f", CFG, sub(), b"z")
        await q.claim("e", 1)
        backlog = await q.backlog()
        assert backlog["e"][:2] == (1, 1) and backlog["f"][:2] == (1, 0)
        assert backlog["e"][2] == pytest.approx(first.received + 5)      # the oldest *queued* one
        abandoned = await q.open_requests("e")
        assert len(abandoned) == 2
        for r in abandoned:
            assert await q.failed(r, "endpoint deleted", held=False)
        assert "e" not in await q.backlog()
        await store.close()
    run(go())


def test_a_worker_never_claims_again_what_it_still_runs(store):
    async def go():
        await opened(store)
        clock = FakeClock()
        q = AsyncQueue(store, clock, "n", lease_s=10)
        r = await q.submit("e", CFG, sub(), b"x")
        assert len(await q.claim("e", 1)) == 1
        clock.advance(11)                               # its lease ran out (a stalled renewal) ...
        assert await q.claim("e", 1) == []              # ... but it runs here: not taken twice
        assert await q.renew([r.id]) == {r.id}
        other = AsyncQueue(store, clock, "m", lease_s=10)
        clock.advance(11)
        assert [x.id for x in await other.claim("e", 1)] == [r.id]   # another worker may take it over
        assert await q.renew([r.id]) == set()            # and the first learns it lost it
        await store.close()
    run(go())
