"""The deployed ASL file: well-formed, every step caught into the cleanup and a Fail state, only
the four documented placeholders, and the constructs the moto tests exercise."""

from __future__ import annotations

import json
import re

from aws_harness import ASL, FUNCTIONS

ASL_DOC = json.loads(ASL.read_text())


def walk(machine: dict) -> dict[str, dict]:
    """Every state, including the Map's iteration states; checks each transition's target."""
    states = dict(machine["States"])
    assert machine["StartAt"] in machine["States"]
    for name, state in machine["States"].items():
        targets = [state.get("Next"), state.get("Default")] + [c["Next"] for c in state.get("Catch", [])]
        targets += [c["Next"] for c in state.get("Choices", [])]
        for target in filter(None, targets):
            assert target in machine["States"], f"{name} -> {target}"
        assert state["Type"] in ("Fail", "Succeed", "Choice") or state.get("End") or state.get("Next"), name
        assert len(name) <= 80
        if state["Type"] == "Map":
            states.update(walk(state["ItemProcessor"]))
    return states


def test_the_flow_reads_plan_invoke_await_finalize():
    states = ASL_DOC["States"]
    assert list(states)[:6] == ["Plan schedules", "Start leaf executors", "Choose how to await",
                                "Await completion", "Await completion with heartbeat", "Collect results"]
    walk(ASL_DOC)
    invoke = states["Start leaf executors"]
    assert invoke["Type"] == "Map" and invoke["MaxConcurrency"] <= 40 and invoke["ResultPath"] is None
    for name in ("Await completion", "Await completion with heartbeat"):
        await_state = states[name]
        assert await_state["Resource"] == "arn:aws:states:::lambda:invoke.waitForTaskToken"
        assert await_state["Parameters"]["Payload"]["task_token.$"] == "$$.Task.Token"
        assert await_state["TimeoutSecondsPath"] == "$.await.timeout_seconds"
    assert states["Await completion with heartbeat"]["HeartbeatSecondsPath"] == "$.await.heartbeat_seconds"
    assert "HeartbeatSecondsPath" not in states["Await completion"]


def test_every_task_is_caught_into_the_cleanup_and_a_fail_state():
    states = walk(ASL_DOC)
    top = ASL_DOC["States"]
    for name, state in top.items():
        if state["Type"] in ("Task", "Map") and name != "Clean up after failure":
            assert [c["Next"] for c in state["Catch"]] == ["Clean up after failure"], name
            assert state["Catch"][0]["ErrorEquals"] == ["States.ALL"]
    cleanup = top["Clean up after failure"]
    assert cleanup["Next"] == "Job failed" and cleanup["Catch"][0]["Next"] == "Job failed and cleanup failed"
    assert top["Job failed"] == {**top["Job failed"], "Type": "Fail", "ErrorPath": "$.cleanup.error",
                                 "CausePath": "$.cleanup.cause"}
    assert sum(s["Type"] == "Fail" for s in states.values()) == 2


def test_placeholders_are_exactly_the_documented_function_arns():
    text = ASL.read_text()
    used = set(re.findall(r"\$\{(\w+)\}", text))
    assert used == {placeholder for _, placeholder in FUNCTIONS.values() if placeholder}
    documented = (ASL.parents[1] / "docs" / "aws-runtime.md").read_text()
    assert all("${" + name + "}" in documented for name in used)
