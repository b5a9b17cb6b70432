"""The simulator (``wukong simulate``): pure computation, no Redis.

Checks that the replay of Wukong runs every task once and in dependency order, that its executor
counts match what the real schedules imply, that an ideal model reproduces the critical path, that
the centralized baseline never beats it, the Lambda capacity model, and the CLI end to end.
"""

from __future__ import annotations

import json
import math
import pickle
import random
import subprocess
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from graph_shapes import tree_sum_graph
from wukong.schedule import generate_schedules
from wukong.simulate import SimGraph, SimModel, make_shape, simulate_central, simulate_wukong
from wukong.simulate.lambdas import LambdaPool
from wukong.simulate.shapes import gemm, to_task_graph, tree, tsqr


def random_sim_graph(rng: random.Random, n: int, max_deps: int = 3) -> SimGraph:
    deps = []
    for i in range(n):
        k = rng.randint(0, min(i, max_deps))
        deps.append(tuple(sorted(rng.sample(range(i), k))))
    used = {d for ds in deps for d in ds}
    sinks = tuple(t for t in range(n) if t not in used)  # every task must lead to an output
    return SimGraph("random", deps, [rng.uniform(0.001, 0.1) for _ in range(n)],
                    [rng.choice([8, 1000, 300_000, 2_000_000]) for _ in range(n)], sinks)


def fan_out_tree(depth: int, width: int) -> SimGraph:
    """One root fanning out ``width`` ways per level: no fan-in anywhere."""
    deps, level = [()], [0]
    for _ in range(depth):
        nxt = []
        for parent in level:
            for _ in range(width):
                deps.append((parent,))
                nxt.append(len(deps) - 1)
        level = nxt
    n = len(deps)
    return SimGraph("fan-out", deps, [0.01] * n, [100] * n, tuple(level))


def check_replay(sim: SimGraph, result) -> None:
    """Every task ran exactly once, and none started before all of its inputs had finished."""
    assert result.tasks_run == len(sim)
    assert result.runs == [1] * len(sim)
    for tid, deps in enumerate(sim.dependencies):
        for d in deps:
            assert result.start[tid] >= result.finish[d], f"task {tid} started before its input {d} finished"
        assert result.finish[tid] >= result.start[tid] + sim.seconds[tid] - 1e-12


SMALL = [tree(200), tree(300, fan_in=3), tsqr(200), gemm(300), fan_out_tree(3, 4)]


@pytest.mark.parametrize("sim", SMALL, ids=lambda s: s.name)
def test_wukong_replay_runs_every_task_once_in_dependency_order(sim):
    result = simulate_wukong(sim, SimModel())
    check_replay(sim, result)
    assert result.makespan >= result.critical_path


@pytest.mark.parametrize("sim", SMALL, ids=lambda s: s.name)
def test_central_runs_every_task_once_in_dependency_order(sim):
    result = simulate_central(sim, SimModel())
    check_replay(sim, result)
    assert result.executors == len(sim)  # one Lambda per task


def test_reduction_tree_needs_only_the_leaf_executors():
    # no task has two dependents, so nothing is ever invoked: the counters decide who goes on
    sim = tree(1000)
    plan = generate_schedules(to_task_graph(sim))
    result = simulate_wukong(sim, SimModel(), plan)
    n_leaves = sum(1 for deps in sim.dependencies if not deps)
    assert result.executors == len(plan.leaf_paths) == plan.n_leaves == n_leaves


def test_fan_out_executors_are_the_leaves_plus_the_schedules_invoke_lists():
    sim = fan_out_tree(4, 3)
    plan = generate_schedules(to_task_graph(sim))
    records = {t: rec for path in plan.paths for t, rec in path.records.items() if rec.path == path.pid}
    invoke_lists = sum(len([d for d in rec.dependents if d.tid != rec.become]) for rec in records.values())
    result = simulate_wukong(sim, SimModel(), plan)
    assert result.executors == plan.n_leaves + invoke_lists == 1 + (3 + 9 + 27 + 81) - (1 + 3 + 9 + 27)


def test_every_fan_in_task_is_claimed_once_and_invocations_add_up():
    # executors = leaves + invoked; each executor starts one task, every other task continues locally
    rng = random.Random(7)
    sim = random_sim_graph(rng, 400)
    result = simulate_wukong(sim, SimModel(payload_limit=200_000, big_task_threshold=10**12))
    check_replay(sim, result)
    n_leaves = sum(1 for deps in sim.dependencies if not deps)
    assert n_leaves <= result.executors <= len(sim)


@pytest.mark.parametrize("sim", SMALL + [random_sim_graph(random.Random(3), 300)], ids=lambda s: s.name)
def test_ideal_model_gives_exactly_the_critical_path(sim):
    for simulate in (simulate_wukong, simulate_central):
        result = simulate(sim, SimModel.ideal())
        assert result.makespan == pytest.approx(sim.critical_path(), rel=1e-9, abs=1e-12)


def test_critical_path_of_a_chain_and_a_tree():
    chain = SimGraph("chain", [(), (0,), (1,)], [1.0, 2.0, 3.0], [1, 1, 1], (2,))
    assert chain.critical_path() == 6.0
    assert tree(7).critical_path() == pytest.approx(0.01 + 3 * 0.001)


def test_clustering_and_tiny_payloads_still_replay_correctly():
    # everything too big to inline (KV store), and big outputs keep all dependents local
    sim = random_sim_graph(random.Random(11), 300)
    model = SimModel(payload_limit=4096, big_task_threshold=1_000_000)
    result = simulate_wukong(sim, model)
    check_replay(sim, result)
    assert result.kv_ops > 0 and result.bytes_read > 0


models = st.builds(
    SimModel,
    invoke_latency=st.floats(0, 0.2), invoke_call_seconds=st.floats(0, 0.05), cold_start=st.floats(0, 1),
    concurrency_limit=st.one_of(st.none(), st.integers(1, 50)),
    scaling_burst=st.one_of(st.none(), st.integers(1, 20)), scaling_rate=st.one_of(st.none(), st.floats(1, 500)),
    redis_rtt=st.floats(0, 0.01), bandwidth=st.floats(1e5, 1e10), payload_limit=st.integers(4096, 2 * 2**20),
    big_task_threshold=st.integers(0, 10**7), central_dispatch_seconds=st.floats(0, 0.01),
)


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10**6), n=st.integers(1, 120), model=models)
def test_any_graph_any_model_replays_correctly_and_never_beats_the_critical_path(seed, n, model):
    sim = random_sim_graph(random.Random(seed), n)
    for simulate in (simulate_wukong, simulate_central):
        result = simulate(sim, model)
        check_replay(sim, result)
        assert result.makespan >= sim.critical_path() - 1e-9
        if model.concurrency_limit is not None:
            assert result.peak_concurrency <= model.concurrency_limit


def test_lambda_pool_concurrency_limit_scaling_rate_and_warm_reuse():
    pool = LambdaPool(SimModel(concurrency_limit=1500, scaling_burst=1000, scaling_rate=100.0,
                               invoke_latency=0.05, cold_start=0.3))
    started = [pool.request(0.0, i) for i in range(1200)]
    assert sum(s is not None for s in started) == 1000  # the burst: 1,000 new environments at once
    assert started[0].at == pytest.approx(0.35) and started[0].cold
    assert pool.next_token_at(0.0) == pytest.approx(0.01)  # 100 a second after that
    assert len(pool.drain(1.0)) == 100
    again = pool.release(1.5)  # reused warm; and 0.5 s refilled 50 new environments
    assert not again[0].cold and again[0].at == 1.5
    assert [s.cold for s in again[1:]] == [True] * 50
    assert pool.busy == 1150 and pool.waiting == 49


def test_costs_follow_the_prices():
    sim = tree(2000)
    model = SimModel()
    r = simulate_wukong(sim, model)
    requests = r.executors + r.helper_invocations
    assert r.lambda_cost == pytest.approx(requests * model.price_per_request + r.gb_seconds * model.price_per_gb_second)
    batches = math.ceil(r.executors / model.leaves_per_invoker)
    assert r.sfn_transitions == 4 + batches  # Plan, Map, one per invoker iteration, Await, Finalize
    assert r.sfn_cost == pytest.approx(r.sfn_transitions * 0.000025)
    c = simulate_central(sim, model)
    assert c.sfn_transitions == 0 and c.executors == len(sim)


@pytest.mark.parametrize("shape", ["tree", "tsqr", "gemm"])
@pytest.mark.parametrize("n", [10_000, 100_000])
def test_shapes_come_close_to_the_requested_size_in_topological_order(shape, n):
    sim = make_shape(shape, n)
    assert abs(len(sim) - n) / n < 0.15
    assert all(d < tid for tid, deps in enumerate(sim.dependencies) for d in deps)
    used = {d for deps in sim.dependencies for d in deps}
    assert all(t in used for t in range(len(sim)) if t not in set(sim.outputs))  # nothing dangling


@pytest.mark.timeout(900)
def test_million_task_tree_simulates():
    sim = tree(1_000_000)
    result = simulate_wukong(sim, SimModel())
    assert result.tasks_run == len(sim) > 1_000_000 - 10
    assert result.executors == sum(1 for deps in sim.dependencies if not deps)
    assert result.peak_concurrency <= 1000


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "wukong.cli", "simulate", *args],
                          capture_output=True, text=True, timeout=600)


def test_cli_writes_a_png_and_json(tmp_path):
    out = tmp_path / "sim.png"
    proc = run_cli("--shape", "tsqr", "--tasks", "3000", "--out", str(out), "--json")
    assert proc.returncode == 0, proc.stderr
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    doc = json.loads(proc.stdout)
    assert [r["scheduler"] for r in doc["results"]] == ["wukong", "central"]
    assert doc["results"][0]["tasks_run"] == doc["results"][0]["n_tasks"]
    assert "simulated wukong" in proc.stderr  # progress goes to stderr, results to stdout


def test_cli_sweep_and_model_overrides(tmp_path):
    out = tmp_path / "sweep.png"
    proc = run_cli("--shape", "gemm", "--tasks", "500,2000", "--out", str(out),
                   "--set", "concurrency_limit=none", "--set", "cold_start=0", "--scheduler", "wukong")
    assert proc.returncode == 0, proc.stderr
    assert out.stat().st_size > 1000
    assert proc.stdout.count("makespan") == 2


def test_cli_graph_file_and_usage_errors(tmp_path):
    dsk, root = tree_sum_graph(64, "t")
    path = tmp_path / "job.pkl"
    path.write_bytes(pickle.dumps((dsk, [root])))
    proc = run_cli("--graph", str(path), "--ideal", "--set", "default_task_seconds=0.5", "--json")
    assert proc.returncode == 0, proc.stderr
    wukong = json.loads(proc.stdout)["results"][0]
    assert wukong["n_tasks"] == 127 and wukong["makespan"] == pytest.approx(7 * 0.5)
    assert run_cli("--set", "no_such_field=1").returncode == 2
    assert run_cli("--set", "cold_start=-1").returncode == 2
    assert run_cli("--graph", str(tmp_path / "missing.pkl")).returncode == 2
    assert run_cli("--tasks", "zero").returncode == 2
