"""Static schedule generation: cut a task graph into one schedule ("path") per leaf.

A depth-first search runs from each leaf in turn. At each task the first dependent not yet
placed on a path becomes the task's ``become`` (the executor keeps going with it); the other
dependents form its ``invoke`` list. A task reached by an earlier leaf's search is not copied:
the record points at the path that owns it, which is how one leaf's path "splices in" another
path's tail. Every task is owned by exactly one path, so all schedules together are O(V + E).

Each path also carries copies of the records of its foreign *immediate* dependents (its
frontier), so an executor crossing into another path needs no extra round trip for the first
step. Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass

from dask._task_spec import GraphNode

from wukong.graph import TaskGraph


@dataclass(frozen=True, slots=True)
class DependentRef:
    """How an upstream task reaches one of its dependents."""

    tid: int
    path: int  # the path that owns the dependent's record
    slot: int  # the upstream's position among the dependent's dependencies (its counter bit)
    n_deps: int  # how many dependencies the dependent has

    @property
    def is_fan_in(self) -> bool:
        return self.n_deps > 1


@dataclass(frozen=True, slots=True)
class TaskRecord:
    """Everything an executor needs to run one task and schedule what follows it."""

    tid: int
    key: Hashable
    node: GraphNode
    deps: tuple[tuple[int, Hashable], ...]  # (task id, Dask key) of each dependency
    dependents: tuple[DependentRef, ...]
    become: int | None  # the DFS's static choice of the dependent to continue with
    is_output: bool
    path: int


@dataclass(frozen=True, slots=True)
class Path:
    """One leaf's schedule: the records it owns plus copies of its frontier records."""

    pid: int
    leaf: int
    records: dict[int, TaskRecord]


@dataclass(frozen=True)
class JobPlan:
    """All paths of a job; ``paths[i].leaf`` is the leaf an executor starts from."""

    paths: tuple[Path, ...]
    n_tasks: int
    output_ids: tuple[int, ...]

    @property
    def leaf_paths(self) -> list[tuple[int, int]]:
        return [(p.leaf, p.pid) for p in self.paths]


def generate_schedules(graph: TaskGraph) -> JobPlan:
    """DFS from every leaf; O(V + E) time and total output size."""
    n = len(graph)
    owner = [-1] * n
    become: list[int | None] = [None] * n
    path_members: list[list[int]] = []

    for leaf in graph.leaves:
        pid = len(path_members)
        owner[leaf] = pid
        members = []
        stack = [leaf]
        while stack:
            tid = stack.pop()
            members.append(tid)
            unplaced = [d for d in graph.dependents[tid] if owner[d] == -1]
            if graph.dependents[tid]:
                become[tid] = unplaced[0] if unplaced else graph.dependents[tid][0]
            for d in unplaced:
                owner[d] = pid
            # reversed so the ``become`` dependent is searched first and the path runs deep
            stack.extend(reversed(unplaced))
        path_members.append(members)

    slot_of = _dependency_slots(graph)
    outputs = set(graph.output_ids)
    records = [
        TaskRecord(
            tid=t,
            key=graph.keys[t],
            node=graph.nodes[t],
            deps=tuple((d, graph.keys[d]) for d in graph.dependencies[t]),
            dependents=tuple(
                DependentRef(tid=d, path=owner[d], slot=slot_of[(t, d)], n_deps=len(graph.dependencies[d]))
                for d in graph.dependents[t]
            ),
            become=become[t],
            is_output=t in outputs,
            path=owner[t],
        )
        for t in range(n)
    ]

    paths = []
    for pid, members in enumerate(path_members):
        own = {t: records[t] for t in members}
        frontier = {
            ref.tid: records[ref.tid]
            for t in members
            for ref in records[t].dependents
            if ref.path != pid
        }
        paths.append(Path(pid=pid, leaf=members[0], records={**frontier, **own}))
    return JobPlan(paths=tuple(paths), n_tasks=n, output_ids=graph.output_ids)


def _dependency_slots(graph: TaskGraph) -> dict[tuple[int, int], int]:
    """(upstream, dependent) -> the upstream's index in the dependent's dependency list."""
    return {(d, t): i for t, deps in enumerate(graph.dependencies) for i, d in enumerate(deps)}
