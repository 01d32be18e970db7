"""Model zygote limits and admission as pure functions: which to close, which bundle earns one."""


def test_model_zygote_limits_close_idle_ones_then_least_recently_used():
    from runtime.process.zygote_limits import ModelZygote, choose_closures

    zs = [ModelZygote(("a", 1024), 10.0, 300), ModelZygote(("b", 2048), 20.0, 300), ModelZygote(("c", 1024), 30.0, 300)]
    assert choose_closures(zs, now=40.0, max_count=3, max_mb=900, idle_s=100) == []
    assert choose_closures(zs, now=40.0, max_count=2, max_mb=900, idle_s=100) == [("a", 1024)]
    assert choose_closures(zs, now=40.0, max_count=3, max_mb=400, idle_s=100) == [("a", 1024), ("b", 2048)]
    assert choose_closures(zs, now=40.0, max_count=3, max_mb=900, idle_s=25) == [("a", 1024)]   # idle 30 s >= 25
    assert choose_closures(zs, now=40.0, max_count=0, max_mb=900, idle_s=100) == [("a", 1024), ("b", 2048), ("c", 1024)]


def test_model_zygote_admission_displaces_only_for_a_bundle_started_more_often():
    from runtime.process.zygote_limits import admit

    assert admit(1, full=False, victim_cold_starts=None)      # room: the first cold start is enough
    assert not admit(1, full=True, victim_cold_starts=1)      # full: as often is not enough ...
    assert not admit(1.9, full=True, victim_cold_starts=1)    # ... nor a little more often
    assert admit(2, full=True, victim_cold_starts=1)
    assert admit(100, full=True, victim_cold_starts=8)        # no ceiling on how busy a bundle looks
    assert not admit(5, full=True, victim_cold_starts=None)   # every one is forking right now


def _admission(templates, starts, wanted, max_models=16, memory_mb=1 << 20):
    """Which of ``wanted`` a ZygoteSet holding ``templates`` ({key: (last_used, MB)}) sets out to
    make, given each key's cold starts; the makes never finish, so each stays under way."""
    import asyncio
    from types import SimpleNamespace

    from runtime.process.zygotes import ZygoteConfig, ZygoteSet

    async def scenario():
        zs = ZygoteSet(ZygoteConfig(max_models=max_models, models_memory_mb=memory_mb))
        for key, (last_used, mb) in templates.items():
            zs.templates[key] = SimpleNamespace(alive=True, busy=False, last_used=last_used, memory_mb=mb)
        for key, n in starts.items():
            for _ in range(n):
                zs.note_cold_start(key)
        never = asyncio.Event()

        async def make():
            await never.wait()

        made = []
        for key in wanted:
            zs.want_template(key, make)
            if key in zs._creating:
                made.append(key)
        for task in list(zs._creating.values()):
            task.cancel()
        return made

    return asyncio.run(scenario())


def test_admission_gives_each_displaced_zygote_to_one_newcomer_and_weighs_memory():
    a, b, n1, n2 = ("a", 1024), ("b", 1024), ("n1", 1024), ("n2", 1024)
    # Two slots, both taken: a (3 cold starts, least recently used) and b (5). n1 and n2 (4 each)
    # outnumber a, but only one can displace it; the other would have to displace b.
    assert _admission({a: (1.0, 100), b: (2.0, 100)}, {a: 3, b: 5, n1: 4, n2: 4}, [n1, n2], max_models=2) == [n1]
    # Room by count but not by memory: the set is full, and one cold start does not displace eight.
    assert _admission({a: (1.0, 1000), b: (2.0, 1000)}, {a: 8, b: 8, n1: 1}, [n1], memory_mb=2048) == []
    # A bundle far busier than the one it would displace gets its zygote, however busy that one.
    assert _admission({a: (1.0, 100)}, {a: 8, n1: 100}, [n1], max_models=1) == [n1]
    # With zygotes off nothing is counted (no sweep would ever prune it).
    from runtime.process.zygotes import ZygoteConfig, ZygoteSet

    off = ZygoteSet(ZygoteConfig(enabled=False))
    off.note_cold_start(a)
    assert off._cold_starts == {}
