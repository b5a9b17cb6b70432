"""Task failures end to end: a raising task re-raises in the client with its own type and key, fast,
and the cluster keeps working; unpicklable exceptions, wide graphs, concurrent jobs, job_timeout.

Task functions are defined inside the tests so cloudpickle sends them by value to the workers,
which cannot import this test module.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from operator import add

import pytest
from graph_shapes import tree_sum_graph

from wukong import Client, JobTimeoutError, LocalCluster, RemoteTaskError
from wukong.config import make_config

#: Generous hang guard only; tests never assert on speed.
HANG_GUARD = 30.0


def notes_and_message(exc: BaseException) -> str:
    return "\n".join([str(exc), *getattr(exc, "__notes__", [])])


def check_cluster_usable(client: Client) -> None:
    dsk, root = tree_sum_graph(64, "after")
    assert client.get(dsk, root) == sum(range(64))
    assert client.last_report.status == "succeeded"


@pytest.mark.timeout(120)
def test_raising_task_reraises_original_type_with_key(client):
    def divide(a, b):
        return a / b

    dsk = {"a": 1, "zero": 0, "quotient": (divide, "a", "zero"), "out": (add, "quotient", 1)}
    start = time.monotonic()
    with pytest.raises(ZeroDivisionError) as info:
        client.get(dsk, "out")
    assert time.monotonic() - start < HANG_GUARD
    text = notes_and_message(info.value)
    assert "'quotient'" in text
    assert "divide" in text  # the remote traceback travels in a note
    assert client.last_report.status == "failed"
    check_cluster_usable(client)


@pytest.mark.timeout(120)
def test_custom_exception_class_round_trips(client):
    class PlanetError(Exception):
        pass

    def explode(x):
        raise PlanetError(f"boom at {x}")

    with pytest.raises(PlanetError, match="boom at 7") as info:
        client.get({("explode", 7): (explode, 7)}, ("explode", 7))
    assert "('explode', 7)" in notes_and_message(info.value)
    check_cluster_usable(client)


@pytest.mark.timeout(120)
def test_unpicklable_exception_arrives_as_remote_task_error(client):
    class UnpicklableError(Exception):
        def __reduce__(self):
            raise TypeError("this exception refuses to be pickled")

    def fail(x):
        raise UnpicklableError(f"cannot travel {x}")

    start = time.monotonic()
    with pytest.raises(RemoteTaskError) as info:
        client.get({"unpicklable": (fail, 3)}, "unpicklable")
    assert time.monotonic() - start < HANG_GUARD
    text = notes_and_message(info.value)
    assert "UnpicklableError" in text
    assert "cannot travel 3" in text
    assert "'unpicklable'" in text
    check_cluster_usable(client)


@pytest.mark.timeout(120)
def test_failure_in_the_middle_of_a_wide_graph(client):
    width, bad = 200, 117

    def work(i):
        if i == bad:
            raise KeyError(f"missing item {i}")
        return i * 2

    dsk = {("wide", i): (work, i) for i in range(width)}
    dsk["total"] = (sum, [("wide", i) for i in range(width)])
    start = time.monotonic()
    with pytest.raises(KeyError) as info:
        client.get(dsk, "total")
    assert time.monotonic() - start < HANG_GUARD
    assert f"('wide', {bad})" in notes_and_message(info.value)
    # the same graph shape without the failing task is correct right after
    dsk[("wide", bad)] = bad * 2
    assert client.get(dsk, "total") == sum(i * 2 for i in range(width))


@pytest.mark.timeout(180)
def test_failure_does_not_break_concurrent_jobs(client, tmp_path):
    entered, gate = tmp_path / "entered", tmp_path / "open"

    def wait_for_gate(x):
        # holds this job in flight until the failing job has failed (bounded, so never a hang)
        entered.touch()
        deadline = time.monotonic() + HANG_GUARD
        while not gate.exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        return x

    def fail(x):
        raise ValueError(f"bad input {x}")

    def gated_job():
        dsk, root = tree_sum_graph(32, "gated")
        dsk[("gated-0", 5)] = (wait_for_gate, 5)
        return client.get(dsk, root)

    def good_job(i):
        dsk, root = tree_sum_graph(128, f"good{i}")
        return client.get(dsk, root)

    def bad_job():
        dsk = {("in", i): i for i in range(20)}
        dsk["bad"] = (fail, ("in", 3))
        dsk["out"] = (sum, [("in", i) for i in range(20)] + ["bad"])
        return client.get(dsk, "out")

    with ThreadPoolExecutor(max_workers=6) as pool:
        gated = pool.submit(gated_job)
        deadline = time.monotonic() + HANG_GUARD
        while not entered.exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        assert entered.exists(), "the gated job never started"
        good = [pool.submit(good_job, i) for i in range(4)]
        bad = pool.submit(bad_job)
        with pytest.raises(ValueError, match="bad input 3") as info:
            bad.result(timeout=HANG_GUARD * 2)
        assert "'bad'" in notes_and_message(info.value)
        assert not gated.done()  # it was in flight, blocked on the gate, while the other job failed
        gate.touch()
        assert gated.result(timeout=HANG_GUARD * 2) == sum(range(32))
        assert [f.result(timeout=HANG_GUARD * 2) for f in good] == [sum(range(128))] * 4
    check_cluster_usable(client)


@pytest.mark.timeout(120)
def test_job_timeout_raises_and_cluster_recovers():
    # its own cluster: the sleeping task keeps one worker busy after the job has timed out;
    # job_timeout comes through a config object, n_workers through the keyword
    config = make_config(job_timeout=0.5)
    with LocalCluster(n_workers=2, config=config) as cluster:
        assert cluster.config.job_timeout == 0.5
        client = Client(cluster)
        start = time.monotonic()
        with pytest.raises(JobTimeoutError, match="job_timeout") as info:
            client.get({"nap": (time.sleep, 4.0)}, "nap")
        assert time.monotonic() - start < HANG_GUARD
        assert isinstance(info.value, TimeoutError)
        assert client.last_report.status == "timed out"
        # the cluster recovers: a quick job still runs (with a generous timeout of its own, not
        # the cluster's 0.5 s, which a busy machine may not meet)
        assert client.submit({"x": 20, "y": (add, "x", 22)}, "y", job_timeout=120).result(progress=False) == 42


@pytest.mark.timeout(120)
def test_job_timeout_keyword_on_local_cluster():
    with LocalCluster(n_workers=1, job_timeout=0.5) as cluster:
        client = Client(cluster)
        with pytest.raises(JobTimeoutError):
            client.get({"nap": (time.sleep, 2.0)}, "nap")
        assert client.last_report.status == "timed out"


def test_an_invocation_whose_schedule_does_not_unpickle_fails_its_job(cluster):
    """Records travel as an opaque blob inside the envelope, so an executor that cannot load them
    (a task module missing on that worker) ends the job with an error instead of dropping it."""
    import pickle
    import uuid

    from wukong.executor import Executor
    from wukong.invocation import Invocation, JobSettings
    from wukong.local.workers import RedisQueueInvoker
    from wukong.serialization import dumps, loads
    from wukong.storage import JobStorage, RedisStores

    stores = RedisStores(cluster.spec)
    job_id = f"test-{uuid.uuid4().hex[:12]}"
    settings = JobSettings(job_id=job_id, storage=cluster.spec, ttl=600, n_outputs=1,
                           payload_limit=1 << 20, big_task_threshold=1 << 20)
    broken = b"cnowhere_mod\nThing\n."  # a protocol-0 pickle of a global from a module no worker has
    with pytest.raises(ModuleNotFoundError):
        pickle.loads(broken)
    inv = Invocation(job=settings, start=7, start_path=0, records_blob=broken)
    envelope = loads(dumps(inv))  # the envelope itself still travels and unpickles
    storage = JobStorage(stores, job_id, 600, 1)
    try:
        executor = Executor(stores, RedisQueueInvoker(stores.mds, f"{job_id}:unused"))
        executor.handle(envelope)
        event = storage.wait_event(timeout=5)
        assert event is not None and not event.is_done
        assert "nowhere_mod" in event.message
        assert storage.has_ended()
        executor.flush()  # it still counts as finished, so the job's report need not wait for it
        assert storage.read_counts().get("executors_finished") == 1
    finally:
        storage.cleanup(n_tasks=8, n_paths=1)
        stores.close()


# outputs that cannot be serialized or are over max_output_size: tests/test_bad_input.py
