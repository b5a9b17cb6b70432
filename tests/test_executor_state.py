"""The executor's protocol without any I/O: drive ExecutorState with events, match its instructions.

Every rule the executor follows (store before bumping, inline or stored values at a fan-out, a
record left out of an oversize payload, delayed I/O's claims and writes, the proxy and its
fallback, the end-of-job check) is checked here against a fake clock and scripted answers.
"""

from __future__ import annotations

import pickle

import pytest

from wukong.errors import OutputTooLargeError
from wukong.executor_state import (CHECK_INTERVAL, BumpCounters, CheckEnded, ClaimStart, CountersBumped, EndedChecked,
                                   ExecutorState, FailTask, FetchInputs, Finish, HandedOff, HandOffToProxy, HeldPolled,
                                   Hold, InputsFetched, Invoke, NotifyJobEnded, PollHeld, ProxyRefused, PublishResult,
                                   ReadSegment, ReleaseHold, ReportProgress, ResultPublished, RunTask, SegmentRead,
                                   Sleep, StartClaimed, StoreValue, TaskFinished)
from wukong.invocation import JobSettings
from wukong.redis_connection import StorageSpec
from wukong.schedule import DependentRef, TaskRecord

SPEC = StorageSpec(mds=("127.0.0.1", 1), kv=(("127.0.0.1", 1),))


def job(**overrides) -> JobSettings:
    settings = dict(job_id="j", storage=SPEC, ttl=60, n_outputs=1, payload_limit=256 * 1024,
                    big_task_threshold=1 << 20)
    return JobSettings(**{**settings, **overrides})


def ref(tid: int, n_deps: int = 1, slot: int = 0, segment: int = 0) -> DependentRef:
    return DependentRef(tid=tid, path=segment, slot=slot, n_deps=n_deps)


def rec(tid: int, deps=(), dependents=(), become=None, output=False, segment=0) -> TaskRecord:
    return TaskRecord(tid=tid, key=f"t{tid}", node=None, deps=tuple((d, f"t{d}") for d in deps),
                      dependents=tuple(dependents), become=become, is_output=output, path=segment)


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def new_state(records, start=0, job_settings=None, memory=None, clock=None, **kw) -> ExecutorState:
    return ExecutorState(job_settings or job(), start, 0, kw.pop("attempt", 0), dict(records), dict(memory or {}),
                         encode=pickle.dumps, clock=clock or Clock(), **kw)


class Script:
    """Answers the state's instructions: tasks compute ``values[tid]`` (serialized with pickle), the
    rest from ``answers`` (instruction type -> event or a function of the instruction)."""

    def __init__(self, state: ExecutorState, values=None, answers=None, blob_size=None):
        self.state, self.values, self.answers = state, values or {}, dict(answers or {})
        self.blob_size = blob_size or {}
        self.seen: list = []

    def answer(self, ins):
        given = self.answers.get(type(ins))
        if given is not None:
            return given(ins) if callable(given) else given
        if isinstance(ins, ClaimStart):
            return StartClaimed("run")
        if isinstance(ins, RunTask):
            tid = ins.record.tid
            value = self.values.get(tid, tid)
            blob = (b"x" * self.blob_size[tid] if tid in self.blob_size else pickle.dumps(value)) if ins.serialize else None
            return TaskFinished(value, blob, 0.001)
        if isinstance(ins, PublishResult):
            return ResultPublished(True)
        if isinstance(ins, BumpCounters):
            return CountersBumped([])
        return None

    def run(self) -> Finish | FailTask:
        ins = self.state.start()
        while not ins.terminal:
            self.seen.append(ins)
            ins = self.state.handle(self.answer(ins))
        return ins

    def of(self, kind) -> list:
        return [i for i in self.seen if isinstance(i, kind)]


def test_a_chain_stays_in_memory_and_only_its_output_is_serialized():
    records = [rec(0, dependents=[ref(1)], become=1), rec(1, deps=[0], dependents=[ref(2)], become=2),
               rec(2, deps=[1], output=True)]
    script = Script(new_state({r.tid: r for r in records}))
    assert script.run() == Finish("done")
    kinds = [type(i) for i in script.seen]
    assert kinds == [ClaimStart, ReportProgress, RunTask, RunTask, RunTask, PublishResult, NotifyJobEnded]
    assert [i.serialize for i in script.of(RunTask)] == [False, False, True]
    assert script.of(RunTask)[2].args == {"t1": 1}  # the upstream's value, from memory
    assert script.state.counts.drain()["tasks"] == 3


@pytest.mark.parametrize("outcome", ["duplicate", "ended"])
def test_an_unclaimed_start_runs_nothing(outcome):
    state = new_state({0: rec(0, output=True)})
    script = Script(state, answers={ClaimStart: StartClaimed(outcome)})
    assert script.run() == Finish(outcome)
    assert script.of(RunTask) == []
    assert state.counts.drain()["duplicates_dropped"] == (outcome == "duplicate")


def test_a_fan_out_becomes_the_static_choice_and_invokes_the_rest_with_the_value_inline():
    records = {0: rec(0, dependents=[ref(1), ref(2), ref(3)], become=2)}
    records.update({t: rec(t, deps=[0], output=True) for t in (1, 2, 3)})
    script = Script(new_state(records, job_settings=job(n_outputs=3)),
                    answers={PublishResult: ResultPublished(False)})
    assert script.run() == Finish("done")
    (invoke,) = script.of(Invoke)
    sent = [pickle.loads(p) for p in invoke.payloads]
    assert [inv.start for inv in sent] == [1, 3]
    assert all(inv.inline_values == {0: pickle.dumps(0)} for inv in sent)
    assert all(pickle.loads(inv.records_blob).keys() == {inv.start} for inv in sent)
    assert [i.record.tid for i in script.of(RunTask)] == [0, 2]
    assert script.of(StoreValue) == []  # inline: nothing goes to the KV store


def test_a_value_too_big_to_inline_is_stored_before_the_invocations():
    records = {0: rec(0, dependents=[ref(1), ref(2)], become=1)}
    records.update({t: rec(t, deps=[0], output=True) for t in (1, 2)})
    script = Script(new_state(records, job_settings=job(n_outputs=2)), blob_size={0: 300 * 1024},
                    answers={PublishResult: ResultPublished(False)})
    script.run()
    kinds = [type(i) for i in script.seen]
    assert kinds.index(StoreValue) < kinds.index(Invoke)
    (invoke,) = script.of(Invoke)
    assert pickle.loads(invoke.payloads[0]).inline_values == {}


def test_a_record_that_makes_the_payload_oversize_is_left_out_for_its_executor_to_read():
    records = {0: rec(0, dependents=[ref(1, segment=7), ref(2, segment=8)], become=1), 1: rec(1, deps=[0], output=True)}
    records[2] = TaskRecord(tid=2, key="big" * 100_000, node=None, deps=((0, "t0"),), dependents=(), become=None,
                            is_output=True, path=8)
    script = Script(new_state(records, job_settings=job(n_outputs=2)), answers={PublishResult: ResultPublished(False)})
    script.run()
    (sent,) = [pickle.loads(p) for p in script.of(Invoke)[0].payloads]
    assert (sent.start, sent.records_blob, sent.start_path) == (2, None, 8)


def test_a_fan_in_stores_the_value_with_the_bump_and_stops_unless_it_completed_the_counter():
    records = {0: rec(0, dependents=[ref(2, n_deps=2, slot=0)]), 2: rec(2, deps=[0, 1], output=True)}
    lost = Script(new_state(records))
    assert lost.run() == Finish("done")
    (bump,) = lost.of(BumpCounters)
    assert bump.value == (0, pickle.dumps(0)) and [r.tid for r in bump.refs] == [2]
    assert [i.record.tid for i in lost.of(RunTask)] == [0]

    won = Script(new_state(records), answers={BumpCounters: CountersBumped([2]),
                                              FetchInputs: InputsFetched({1: "from b"})})
    won.run()
    (fetch,) = won.of(FetchInputs)
    assert fetch.tids == (1,)  # its own upstream's value is in memory already
    assert won.of(RunTask)[1].args == {"t0": 0, "t1": "from b"}


def test_a_record_not_carried_is_read_from_its_segment():
    records = {0: rec(0, dependents=[ref(1, segment=4)], become=1)}
    script = Script(new_state(records), answers={ReadSegment: SegmentRead({1: rec(1, deps=[0], output=True)})})
    script.run()
    assert script.of(ReadSegment) == [ReadSegment(4)]
    assert [i.record.tid for i in script.of(RunTask)] == [0, 1]


def test_an_output_over_max_output_size_fails_its_task_before_anything_is_stored():
    records = {0: rec(0, dependents=[ref(1), ref(2)]), 1: rec(1, deps=[0]), 2: rec(2, deps=[0])}
    script = Script(new_state(records, job_settings=job(max_output_size=100)), blob_size={0: 101})
    failed = script.run()
    assert isinstance(failed, FailTask) and failed.key == "t0"
    assert isinstance(failed.error, OutputTooLargeError) and "max_output_size=100" in str(failed.error)
    assert script.of(StoreValue) == script.of(Invoke) == []


def test_a_long_task_is_followed_by_a_check_and_an_ended_job_writes_nothing():
    clock = Clock()
    records = {0: rec(0, dependents=[ref(1), ref(2)]), 1: rec(1, deps=[0]), 2: rec(2, deps=[0])}

    def slow(ins):
        clock.now += CHECK_INTERVAL + 0.5
        return TaskFinished(0, pickle.dumps(0), CHECK_INTERVAL + 0.5)

    script = Script(new_state(records, clock=clock), answers={RunTask: slow, CheckEnded: EndedChecked(True)})
    assert script.run() == Finish("job ended")
    assert script.of(Invoke) == [] and script.of(CheckEnded) == [CheckEnded()]


def test_a_wide_fan_out_goes_to_the_proxy_and_is_done_here_when_the_proxy_refuses():
    deps = [ref(t) for t in range(1, 11)] + [ref(11, n_deps=2)]
    records = {0: rec(0, dependents=deps, become=1)}
    records.update({t: rec(t, deps=[0], output=True) for t in range(1, 11)})
    records[11] = rec(11, deps=[0, 12], output=True)
    settings = job(n_outputs=11, max_task_fanout=10)
    taken = Script(new_state(records, job_settings=settings, proxy=True),
                   answers={HandOffToProxy: HandedOff([1], 500, 9), PublishResult: ResultPublished(False)})
    taken.run()
    (hand,) = taken.of(HandOffToProxy)
    assert set(hand.payloads) == set(range(1, 12)) and hand.value == pickle.dumps(0)  # stored for the fan-in
    assert taken.of(Invoke) == [] and [i.record.tid for i in taken.of(RunTask)] == [0, 1]
    assert taken.state.counts.drain()["invoked"] == 9

    refused = Script(new_state(records, job_settings=settings, proxy=True),
                     answers={HandOffToProxy: ProxyRefused("down"), BumpCounters: CountersBumped([11]),
                              PublishResult: ResultPublished(False), FetchInputs: InputsFetched({12: 0})})
    refused.run()
    (bump,) = refused.of(BumpCounters)
    assert bump.retry and bump.value == (0, pickle.dumps(0))  # the proxy may have bumped before failing
    (invoke,) = refused.of(Invoke)
    assert sorted(pickle.loads(p).start for p in invoke.payloads) == list(range(2, 12))
    (offered,) = refused.of(HandOffToProxy)
    assert invoke.payloads == tuple(offered.payloads[t] for t in range(2, 12))  # what the proxy was offered


def big_fan_in(n_deps=2):
    """A big output (clustered) feeding one fan-in: held under delayed I/O."""
    return {0: rec(0, dependents=[ref(1, n_deps=n_deps)]), 1: rec(1, deps=[0] + list(range(5, 4 + n_deps)), output=True)}


def test_a_held_output_that_completes_its_fan_in_claims_it_and_never_writes_its_value():
    settings = job(delayed_io_max_wait=5.0, big_task_threshold=1000)
    script = Script(new_state(big_fan_in(), job_settings=settings), blob_size={0: 5000},
                    answers={PollHeld: HeldPolled([[(1, False)]], 0), BumpCounters: CountersBumped([1]),
                             FetchInputs: InputsFetched({5: "other"})})
    assert script.run() == Finish("done")
    kinds = [type(i) for i in script.seen]
    assert kinds[kinds.index(RunTask):kinds.index(RunTask) + 5] == [RunTask, Hold, PollHeld, BumpCounters, ReleaseHold]
    (bump,) = script.of(BumpCounters)
    assert bump.value is None and [r.tid for r in bump.refs] == [1]
    assert script.of(ReleaseHold) == [ReleaseHold(0, written=False)]
    assert script.of(StoreValue) == []
    assert script.of(FetchInputs)[0].tids == (5,)  # the held value came from memory
    assert script.state.counts.drain()["delayed_io_claims"] == 1


def test_a_held_output_is_written_at_its_deadline_then_bumps_as_without_the_delay():
    clock = Clock()
    settings = job(delayed_io_max_wait=2.0, big_task_threshold=1000)

    def sleep(ins):
        assert 0 <= ins.seconds <= 2.0
        clock.now += max(ins.seconds, 0.3)

    script = Script(new_state(big_fan_in(3), job_settings=settings, clock=clock), blob_size={0: 5000},
                    answers={PollHeld: HeldPolled([[(0, False)]], 0), Sleep: sleep,
                             CheckEnded: EndedChecked(False)})
    assert script.run() == Finish("done")
    (bump,) = script.of(BumpCounters)
    assert bump.value == (0, b"x" * 5000) and [r.tid for r in bump.refs] == [1]
    assert script.of(ReleaseHold) == [ReleaseHold(0, written=True)]
    assert clock.now >= 100.0 + 2.0
    assert script.state.counts.drain()["delayed_io_writes"] == 1


def test_another_waiter_on_the_counter_means_write_at_once():
    settings = job(delayed_io_max_wait=5.0, big_task_threshold=1000)
    script = Script(new_state(big_fan_in(), job_settings=settings), blob_size={0: 5000},
                    answers={PollHeld: HeldPolled([None], 0)})
    script.run()
    assert script.of(Sleep) == [] and script.of(BumpCounters)[0].value is not None


def test_a_claim_a_concurrent_attempt_won_stores_the_value_for_it():
    settings = job(delayed_io_max_wait=5.0, big_task_threshold=1000)
    script = Script(new_state(big_fan_in(), job_settings=settings, attempt=1), blob_size={0: 5000},
                    answers={PollHeld: HeldPolled([[(1, True)]], 0), BumpCounters: CountersBumped([])})
    script.run()
    assert script.of(StoreValue) == [StoreValue(0, b"x" * 5000)]
    assert script.of(BumpCounters)[0].retry


def test_a_backlog_is_asked_for_only_after_the_grace_and_ends_the_wait():
    clock = Clock()
    settings = job(delayed_io_max_wait=30.0, big_task_threshold=1000)
    asked = []

    def poll(ins):
        asked.append(ins.want_backlog)
        return HeldPolled([[(0, False)]], 3 if ins.want_backlog else 0)

    def sleep(ins):
        clock.now += ins.seconds + 0.01

    script = Script(new_state(big_fan_in(3), job_settings=settings, clock=clock), blob_size={0: 5000},
                    answers={PollHeld: poll, Sleep: sleep})
    script.run()
    assert asked[0] is False and asked[-1] is True
    assert script.of(BumpCounters)[0].value is not None  # gave its slot back: wrote and bumped
    assert clock.now < 100.0 + 1.0  # long before the 30 s deadline
