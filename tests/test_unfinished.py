"""The pure naming of what a stalled or timed-out job never did: the right keys, in a bounded message."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from wukong.unfinished import SHOWN, bounded_keys, find_unfinished


def test_names_unstarted_leaves_and_missing_outputs_only():
    keys = ["a", ("b", 1), "c", "out"]
    gaps = find_unfinished(keys, leaves=[0, 1, 2], started=[True, False, True], outputs=[3], stored=[False])
    assert gaps.unstarted_leaves == (("b", 1),) and gaps.missing_outputs == ("out",)
    assert gaps.describe() == ("1 leaf invocation never started (lost, or still queued): ('b', 1); "
                               "1 requested output never stored: 'out'")


def test_nothing_missing_says_nothing():
    assert find_unfinished(["a"], [0], [True], [0], [True]).describe() == ""


def test_marks_must_line_up():
    with pytest.raises(ValueError):
        find_unfinished(["a", "b"], [0, 1], [True], [], [])


@given(n=st.integers(0, 40), shown=st.integers(1, 10))
def test_messages_are_bounded_and_count_the_rest(n, shown):
    keys = [f"task-{i}" for i in range(n)]
    text = bounded_keys(keys, shown)
    assert text.count("task-") == min(n, shown)
    assert (f"and {n - shown} more" in text) == (n > shown)


def test_many_lost_leaves_plural_and_bounded():
    keys = list(range(100))
    text = find_unfinished(keys, list(range(100)), [False] * 100, [], []).describe()
    assert text.startswith("100 leaf invocations never started") and f"and {100 - SHOWN} more" in text
