"""A job's instances reserve host memory all together or not at all."""
import asyncio

from gateway.batch.compute import Bundle, Compute
from gateway.pools.admission import HostBudget


class Manager:
    def __init__(self, mb):
        self.budget = HostBudget(mb)

    async def make_room(self, requester, key, mb, speculative=False):
        return self.budget.reserve(key, mb)


def compute(name, manager, instances):
    return Compute(name, backend=None, manager=manager, instance_type="ml.m5.large", instances=instances,
                   per_instance=1, memory_mb=8192, vcpus=2.0, bundle=Bundle("/x", "pickle", {}), log_path="/dev/null",
                   env={})


def test_a_job_that_cannot_have_every_instance_holds_none():
    m = Manager(2 * 8192)
    a, b = compute("a", m, 2), compute("b", m, 2)

    async def go():
        m.budget.reserve("someone", 8192)
        assert not await a._reserve_all() and m.budget.used_mb == 8192      # one would fit: none is kept
        m.budget.release("someone")
        assert await a._reserve_all() and m.budget.used_mb == 2 * 8192
        assert not await b._reserve_all() and m.budget.used_mb == 2 * 8192
    asyncio.run(go())


def test_workers_get_their_share_of_the_instances_threads_unless_the_model_says():
    c = Compute("j", None, Manager(1 << 20), "ml.m5.xlarge", 1, 2, 16384, 4.0,
                Bundle("/x", "pickle", {"OMP_NUM_THREADS": "3"}), "/dev/null", {})
    assert c.env["OMP_NUM_THREADS"] == "3" and c.env["OPENBLAS_NUM_THREADS"] == "2" and c.env["SM_NUM_CPUS"] == "4"


def test_a_job_that_does_not_fit_now_waits_and_says_why():
    import gateway.batch.compute as compute_mod

    class Backend:
        started = []

        async def open_group(self, group):
            return True

        async def start(self, spec):
            Backend.started.append(spec)
            raise compute_mod.StartError("load_failed", "stop here")

    m = Manager(8192)
    c = Compute("w", Backend(), m, "ml.m5.large", 1, 2, 8192, 2.0, Bundle("/x", "pickle", {}), "/dev/null", {})
    said = []

    async def go():
        m.budget.reserve("endpoint-sandbox", 4096)
        compute_mod.WAIT_POLL_S = 0.01
        task = asyncio.get_running_loop().create_task(c.start(on_wait=said.append))
        await asyncio.sleep(0.05)
        assert not task.done() and said and "waiting for host memory" in said[0] and "4096 MB free" in said[0]
        m.budget.release("endpoint-sandbox")
        try:
            await task
        except compute_mod.StartError as exc:
            assert exc.message == "stop here"
        assert said[-1] == "" and {s.group.name for s in Backend.started} == {c.groups[0].name}
        assert all(s.memory_mb == 8192 and s.env["OMP_NUM_THREADS"] == "1" for s in Backend.started)
    asyncio.run(go())
