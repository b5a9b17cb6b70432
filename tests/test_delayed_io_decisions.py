"""The pure half of delayed I/O and chunking (wukong.decisions): when a held output claims, waits
or writes, that an executor never waits on its own held bits, that the wait ends by half the
function timeout, and how many chunks a value gets. No Redis.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from wukong import decisions
from wukong.decisions import (BACKLOG_GRACE, MAX_BACKLOG_GRACE, MAX_CHUNK, after_poll, backlog_grace, chunk_count,
                              completable, delay_deadline)
from wukong.schedule import DependentRef


def ref(tid: int, slot: int, n_deps: int) -> DependentRef:
    return DependentRef(tid=tid, path=0, slot=slot, n_deps=n_deps)


def test_refused_hold_writes_at_once():
    refs = (ref(5, 0, 2),)
    assert after_poll(refs, None, now=0.0, deadline=10.0) == decisions.DelayStep((), refs, True)


def test_last_missing_bit_claims_else_wait_until_the_deadline():
    a, b = ref(5, 0, 3), ref(6, 1, 2)
    step = after_poll((a, b), [(2, False), (0, False)], now=1.0, deadline=10.0)
    assert (step.claim, step.rest, step.write) == ((a,), (b,), False)
    step = after_poll((b,), [(0, False)], now=10.0, deadline=10.0)
    assert (step.claim, step.rest, step.write) == ((), (b,), True)


def test_a_bit_set_by_an_earlier_attempt_is_bumped_again():
    a = ref(5, 0, 4)
    assert after_poll((a,), [(1, True)], now=0.0, deadline=10.0).claim == (a,)


def test_queued_work_ends_a_wait_only_after_the_grace():
    a = ref(5, 0, 3)
    grace = backlog_grace(300_000_000)
    assert not after_poll((a,), [(0, False)], 0.0, 10.0, backlog=3, waited=grace / 2, grace=grace).write
    assert after_poll((a,), [(0, False)], 0.0, 10.0, backlog=3, waited=grace, grace=grace).write
    assert not after_poll((a,), [(0, False)], 0.0, 10.0, backlog=0, waited=100.0, grace=grace).write


def test_the_grace_is_what_writing_the_output_would_cost_within_bounds():
    assert backlog_grace(8_000_000) == BACKLOG_GRACE  # a few ms of writing: the floor
    assert backlog_grace(300_000_000) == pytest.approx(0.3)
    assert backlog_grace(10**12) == MAX_BACKLOG_GRACE


def test_two_held_outputs_of_one_executor_complete_their_shared_fan_in():
    # the fan-in needs 4 bits: two are set, the other two are ours (held by two outputs)
    a, b = ref(8, 0, 4), ref(8, 1, 4)
    ours = completable([(a, (2, False)), (b, (2, False))])
    assert ours == {8}
    assert after_poll((a,), [(2, False)], 0.0, 10.0, ours=ours).claim == (a,)


@given(n_deps=st.integers(2, 12), data=st.data())
def test_completable_iff_every_missing_bit_is_held_here(n_deps, data):
    ours = data.draw(st.sets(st.integers(0, n_deps - 1), min_size=1))
    others_set = data.draw(st.sets(st.integers(0, n_deps - 1)).map(lambda s: s - ours))
    polled = [(ref(1, slot, n_deps), (len(others_set), False)) for slot in sorted(ours)]
    assert (completable(polled) == {1}) == (len(others_set) + len(ours) == n_deps)


@given(now=st.floats(0, 1e4), started=st.floats(0, 1e4), wait=st.floats(0, 1e3),
       timeout=st.none() | st.floats(1, 900))
def test_the_wait_never_passes_half_the_function_timeout(now, started, wait, timeout):
    deadline = delay_deadline(now, started, wait, timeout)
    assert deadline <= now + wait
    if timeout is not None:
        assert deadline <= started + timeout / 2


@given(n_polls=st.integers(0, 100), left=st.floats(-5, 5))
def test_backoff_is_capped_and_never_sleeps_past_the_deadline(n_polls, left):
    pause = decisions.poll_interval(n_polls, left)
    assert 0 <= pause <= decisions.MAX_POLL_INTERVAL and pause <= max(left, 0)


@given(nbytes=st.integers(0, 4 * MAX_CHUNK), threshold=st.none() | st.integers(1, 2 * MAX_CHUNK),
       configured=st.none() | st.integers(1, 64), shards=st.integers(1, 8),
       limit=st.sampled_from([1 << 20, 100 * 1024 * 1024, 512 * 1024 * 1024]))
def test_chunk_count(nbytes, threshold, configured, shards, limit):
    n = chunk_count(nbytes, threshold, configured, shards, limit)
    if nbytes <= limit and (threshold is None or nbytes < threshold):
        assert n == 1
    else:  # chunked on request, and always when one string cannot hold the value
        assert 1 <= n <= max(nbytes, 1)
        assert -(-nbytes // n) <= min(MAX_CHUNK, limit)  # no chunk is over the server's limit
        assert n >= min(configured or shards, nbytes)
