"""The model cache: one download per distinct object, LRU eviction under a size limit, never
evicting what is in use, never half an entry."""
import asyncio

import pytest

from gateway.data.cache import CacheFull, Entry, ModelCache, evictions


def test_eviction_choice_is_least_recently_used_first_and_skips_pinned():
    entries = [Entry("old", 40, 1.0), Entry("pinned", 40, 0.5, pins=1), Entry("new", 40, 3.0)]
    assert evictions(entries, used=120, need=30, capacity=150) == []
    assert evictions(entries, used=120, need=60, capacity=150) == ["old"]
    assert evictions(entries, used=120, need=100, capacity=150) == ["old", "new"]
    assert evictions(entries, used=120, need=140, capacity=150) is None      # would need the pinned one
    assert evictions(entries, used=0, need=151, capacity=150) is None         # larger than the cache


def _fetcher(calls, data=b"x"):
    def fetch(path):
        calls.append(path)
        path.write_bytes(data)
    return fetch


async def test_one_download_per_object_shared_by_concurrent_callers_and_kept_across_a_restart(tmp_path):
    cache = ModelCache(tmp_path, capacity_bytes=1000, reserve_free_bytes=0)
    await cache.open()
    calls = []
    entries = await asyncio.gather(*[cache.acquire("etag1", 5, _fetcher(calls, b"12345")) for _ in range(5)])
    assert len(calls) == 1 and cache.stats.downloads == 1 and cache.stats.hits == 4
    assert cache.path(entries[0].digest).read_bytes() == b"12345"
    for e in entries:
        cache.release(e)
    again = ModelCache(tmp_path, capacity_bytes=1000, reserve_free_bytes=0)
    await again.open()
    entry = await again.acquire("etag1", 5, _fetcher(calls))
    assert len(calls) == 1 and again.stats.hits == 1 and again.used == 5
    again.release(entry)
    other = await again.acquire("etag2", 5, _fetcher(calls, b"abcde"))     # a new ETag is a new object
    assert len(calls) == 2 and other.digest != entry.digest


async def test_lru_eviction_under_the_limit_and_pinned_entries_stay(tmp_path):
    cache = ModelCache(tmp_path, capacity_bytes=10, reserve_free_bytes=0)
    await cache.open()
    calls = []
    a = await cache.acquire("a", 4, _fetcher(calls, b"aaaa"))
    cache.release(a)
    b = await cache.acquire("b", 4, _fetcher(calls, b"bbbb"))            # b stays pinned
    c = await cache.acquire("c", 4, _fetcher(calls, b"cccc"))            # a (unpinned, oldest) goes
    assert set(cache.entries) == {b.digest, c.digest} and cache.stats.evictions == 1
    assert not cache.path(a.digest).exists()
    with pytest.raises(CacheFull, match="held by models"):
        await cache.acquire("d", 4, _fetcher(calls, b"dddd"))            # b and c are both in use
    with pytest.raises(CacheFull, match="larger than the whole model cache"):
        await cache.acquire("e", 11, _fetcher(calls))
    cache.release(c)
    d = await cache.acquire("d", 4, _fetcher(calls, b"dddd"))
    assert set(cache.entries) == {b.digest, d.digest} and cache.used == 8


async def test_a_failed_or_short_download_leaves_no_entry(tmp_path):
    cache = ModelCache(tmp_path, capacity_bytes=100, reserve_free_bytes=0)
    await cache.open()

    def broken(path):
        path.write_bytes(b"par")
        raise OSError("connection reset")

    with pytest.raises(OSError, match="reset"):
        await cache.acquire("x", 10, broken)
    with pytest.raises(OSError, match="3 bytes of 10"):
        await cache.acquire("x", 10, lambda p: p.write_bytes(b"abc"))
    assert cache.entries == {} and list((tmp_path / "partial").iterdir()) == []
    assert list(cache.objects.iterdir()) == []
    calls = []
    await cache.acquire("x", 10, _fetcher(calls, b"0123456789"))           # the next try downloads again
    assert len(calls) == 1


async def test_a_hit_is_pinned_before_anything_can_evict_it_and_a_download_is_never_a_hit(tmp_path):
    cache = ModelCache(tmp_path, capacity_bytes=10, reserve_free_bytes=0)
    await cache.open()
    a = await cache.acquire("a", 4, _fetcher([], b"aaaa"))
    cache.release(a)
    # a hit on a and a download that needs a's room, at once: a is pinned first, so b is refused
    hit, other = await asyncio.gather(cache.acquire("a", 4, _fetcher([])),
                                      cache.acquire("b", 8, _fetcher([], b"bbbbbbbb")), return_exceptions=True)
    assert cache.path(hit.digest).read_bytes() == b"aaaa"
    assert isinstance(other, CacheFull)
    cache.release(hit)

    slow_started = asyncio.Event()

    def slow(path):
        path.write_bytes(b"cc")
        asyncio.run_coroutine_threadsafe(_set(slow_started), loop)

    loop = asyncio.get_running_loop()
    first = asyncio.ensure_future(cache.acquire("c", 2, slow))
    await slow_started.wait()
    second = await cache.acquire("c", 2, _fetcher([]))               # waits for the download, then a hit
    assert cache.path(second.digest).read_bytes() == b"cc"
    assert (await first).digest == second.digest and cache.stats.downloads == 2


async def _set(event):
    event.set()


async def test_an_entry_whose_file_was_removed_is_downloaded_again(tmp_path):
    cache = ModelCache(tmp_path, capacity_bytes=100, reserve_free_bytes=0)
    await cache.open()
    calls = []
    e = await cache.acquire("x", 3, _fetcher(calls, b"xyz"))
    cache.release(e)
    cache.path(e.digest).unlink()
    again = await cache.acquire("x", 3, _fetcher(calls, b"xyz"))
    assert len(calls) == 2 and cache.path(again.digest).read_bytes() == b"xyz"
