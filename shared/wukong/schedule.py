"""Static schedule generation: cut a task graph into one schedule ("path") per leaf.

A depth-first search runs from each leaf in turn. At each task the first dependent not yet
placed on a path becomes the task's ``become`` (the executor keeps going with it); the other
dependents form its ``invoke`` list. A task reached by an earlier leaf's search is not copied:
the record points at the path that owns it, which is how one leaf's path "splices in" another
path's tail. Every task is owned by exactly one path, so all schedules together are O(V + E).

A path is stored in pieces ("segments") of at most SEGMENT_RECORDS records, in the order the
search placed them: a record names the segment that owns it, so an executor that needs one foreign
record reads one small segment, not the whole path of the leaf whose search reached it first
(in a 100,000-task TSQR one such path held half the graph, and the simulator counted 175 GB of
schedule reads). The first segment of each path is the one a leaf's executor starts with; segments
0..L-1 belong to the L leaves in order, the rest follow.

Each segment also carries copies of the records of its foreign *immediate* dependents (its
frontier), so an executor crossing into another path needs no extra round trip for the first
step, unless such a record is big: a record's size grows with its degree, and a fan-in of n
copied into each of its n upstream paths would make the schedules O(n^2) (only the one executor
that completes the counter ever runs it, and it reads the owning path instead). Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass

from dask._task_spec import GraphNode

from wukong.graph import TaskGraph, gc_paused

#: Frontier records with more dependencies plus dependents than this are not copied (see above).
FRONTIER_COPY_MAX_DEGREE = 32
#: Most records one stored segment of a path owns: one MDS read per this many tasks on a long
#: chain, and at most this many records read to learn one foreign record.
SEGMENT_RECORDS = 256


@dataclass(frozen=True, slots=True)
class DependentRef:
    """How an upstream task reaches one of its dependents."""

    tid: int
    path: int  # the path segment that owns the dependent's record
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
    """One stored segment of a leaf's schedule: the records it owns plus copies of its frontier
    records. ``leaf`` is the leaf it starts from, None for a later segment of a long path."""

    pid: int
    leaf: int | None
    records: dict[int, TaskRecord]


@dataclass(frozen=True)
class JobPlan:
    """All path segments of a job, indexed by ``pid``; the first ``n_leaves`` start at the leaves."""

    paths: tuple[Path, ...]
    n_tasks: int
    output_ids: tuple[int, ...]
    n_leaves: int

    @property
    def leaf_paths(self) -> tuple[Path, ...]:
        """The segment each leaf's executor starts with, in leaf order (``pid`` = leaf index)."""
        return self.paths[:self.n_leaves]


def generate_schedules(graph: TaskGraph) -> JobPlan:
    """DFS from every leaf; O(V + E) time and total output size."""
    with gc_paused():  # several objects per task, none of them garbage
        return _generate(graph)


def _generate(graph: TaskGraph) -> JobPlan:
    n = len(graph)
    dependents, dependencies, keys = graph.dependents, graph.dependencies, graph.keys
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
            users = dependents[tid]
            if not users:
                continue
            unplaced = [d for d in users if owner[d] == -1]
            become[tid] = unplaced[0] if unplaced else users[0]
            for d in unplaced:
                owner[d] = pid
            # reversed so the ``become`` dependent is searched first and the path runs deep
            stack.extend(reversed(unplaced))
        path_members.append(members)

    # cut long paths into segments; a leaf's first segment keeps the leaf's index as its pid
    segments = [members[:SEGMENT_RECORDS] for members in path_members]
    leaves = [members[0] for members in path_members]
    for members in path_members:
        for start in range(SEGMENT_RECORDS, len(members), SEGMENT_RECORDS):
            segments.append(members[start:start + SEGMENT_RECORDS])
    for pid in range(len(path_members), len(segments)):
        for t in segments[pid]:
            owner[t] = pid

    outputs = set(graph.output_ids)
    n_deps = [len(deps) for deps in dependencies]
    slots: list[dict[int, int] | None] = [None] * n  # fan-in tasks only: upstream -> its counter bit
    records: list[TaskRecord] = []
    for t in range(n):
        refs = []
        for d in dependents[t]:
            k = n_deps[d]
            if k == 1:
                refs.append(DependentRef(d, owner[d], 0, 1))
                continue
            slot_of = slots[d]
            if slot_of is None:
                slot_of = slots[d] = {u: i for i, u in enumerate(dependencies[d])}
            refs.append(DependentRef(d, owner[d], slot_of[t], k))
        records.append(TaskRecord(
            t, keys[t], graph.nodes[t], tuple([(d, keys[d]) for d in dependencies[t]]), tuple(refs),
            become[t], t in outputs, owner[t],
        ))

    small = [len(dependencies[t]) + len(dependents[t]) <= FRONTIER_COPY_MAX_DEGREE for t in range(n)]
    paths = []
    for pid, members in enumerate(segments):
        own: dict[int, TaskRecord] = {}
        for t in members:
            rec = own[t] = records[t]
            for ref in rec.dependents:
                if ref.path != pid and small[ref.tid]:  # a frontier copy: crossing costs no read
                    own[ref.tid] = records[ref.tid]
        paths.append(Path(pid=pid, leaf=leaves[pid] if pid < len(leaves) else None, records=own))
    return JobPlan(paths=tuple(paths), n_tasks=n, output_ids=graph.output_ids, n_leaves=len(leaves))

