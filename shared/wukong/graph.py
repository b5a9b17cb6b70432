"""Graph intake: turn whatever Dask hands a scheduler into one plain, validated task graph.

Dask 2026 gives a custom ``get`` an Expr, a HighLevelGraph or a legacy dict whose values may
be tuples, ``Task``, ``DataNode`` or ``Alias``. :func:`normalize_graph` accepts all of them,
culls to what the requested keys need, numbers the tasks, and checks for missing keys and
cycles. Pure: no I/O, no recursion (10,000-long chains are fine).
"""

from __future__ import annotations

import gc
from collections.abc import Hashable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from dask._task_spec import GraphNode, convert_legacy_graph
from dask.core import flatten

from wukong.errors import GraphCycleError, InvalidGraphError, MissingKeyError

Key = Hashable


@dataclass(frozen=True)
class TaskGraph:
    """A culled, numbered task graph.

    Tasks are numbered ``0..n-1`` in a topological order; Redis keys use these ids, never
    Dask keys, so any hashable key is safe and compact.
    """

    keys: tuple[Key, ...]  # task id -> Dask key
    nodes: tuple[GraphNode, ...]  # task id -> runnable node
    dependencies: tuple[tuple[int, ...], ...]  # task id -> ids it reads, in a fixed order
    dependents: tuple[tuple[int, ...], ...]  # task id -> ids that read it
    output_ids: tuple[int, ...]  # ids of the requested keys, without duplicates
    requested: Any  # the keys argument as given (possibly nested lists)
    index: dict[Key, int] = field(repr=False)

    def __len__(self) -> int:
        return len(self.keys)

    @property
    def leaves(self) -> list[int]:
        return [t for t, deps in enumerate(self.dependencies) if not deps]

    def id_of(self, key: Key) -> int:
        return self.index[key]


def to_task_mapping(dsk: Any) -> dict[Key, GraphNode]:
    """Convert any graph form Dask passes to a scheduler into ``{key: GraphNode}``."""
    if not isinstance(dsk, Mapping):
        graph_method = getattr(dsk, "__dask_graph__", None)
        if graph_method is None:
            raise InvalidGraphError(
                f"expected a Dask graph (a mapping, HighLevelGraph or Dask collection), got "
                f"{type(dsk).__name__}; pass x.__dask_graph__() or call x.compute(scheduler=client.get)"
            )
        dsk = graph_method()
    return convert_legacy_graph(dict(dsk))


def flatten_keys(keys: Any) -> list[Key]:
    """The requested keys, flattened, in first-seen order without duplicates."""
    flat = list(flatten(keys)) if isinstance(keys, list) else [keys]
    for key in flat:
        if not _hashable(key):  # before dict.fromkeys, which would raise a bare TypeError
            raise MissingKeyError(key, f"requested key {key!r} is not hashable, so no graph can hold it; "
                                       "keys are strings or tuples such as ('x', 0)")
    return list(dict.fromkeys(flat))


def normalize_graph(dsk: Any, keys: Any) -> TaskGraph:
    """Validate and cull ``dsk`` to the tasks ``keys`` need.

    Raises ``KeyError`` naming a requested key (or a dependency) missing from the graph, and
    :class:`GraphCycleError` naming a key on a cycle.
    """
    with gc_paused():  # several objects per task, none of them garbage
        return _normalize(dsk, keys)


def _normalize(dsk: Any, keys: Any) -> TaskGraph:
    tasks = to_task_mapping(dsk)
    wanted = flatten_keys(keys)
    for key in wanted:
        if key not in tasks:
            raise MissingKeyError(key, f"requested key {key!r} is not among the graph's {len(tasks)} "
                                       "keys; check the key's spelling and type, e.g. ('x', 0) vs 'x'")

    order, deps_of = _cull(tasks, wanted)
    topo = _toposort(order, deps_of)
    index = {key: i for i, key in enumerate(topo)}
    dependencies = tuple([tuple([index[d] for d in deps_of[key]]) for key in topo])
    dependents: list[list[int]] = [[] for _ in topo]
    for tid, deps in enumerate(dependencies):
        for d in deps:
            dependents[d].append(tid)
    return TaskGraph(
        keys=tuple(topo),
        nodes=tuple([tasks[k] for k in topo]),
        dependencies=dependencies,
        dependents=tuple(map(tuple, dependents)),
        output_ids=tuple(index[k] for k in wanted),
        requested=keys,
        index=index,
    )


def _hashable(key: Any) -> bool:
    try:
        hash(key)
    except TypeError:
        return False
    return True


def _cull(tasks: Mapping[Key, GraphNode], wanted: Iterable[Key]) -> tuple[list[Key], dict[Key, list[Key]]]:
    """Keys reachable backwards from ``wanted``, with each one's dependencies in a stable order."""
    deps_of: dict[Key, list[Key]] = {}
    stack = list(wanted)
    seen = set(stack)
    order: list[Key] = []
    while stack:
        key = stack.pop()
        order.append(key)
        deps = _stable_order(tasks[key].dependencies)
        for dep in deps:
            if dep not in tasks:
                raise MissingKeyError(dep, f"task {key!r} depends on {dep!r}, which is not in the graph; "
                                           "add a task for it or pass the value itself")
            if dep not in seen:
                seen.add(dep)
                stack.append(dep)
        deps_of[key] = deps
    return order, deps_of


def _stable_order(deps: frozenset) -> list[Key]:
    """A task's dependencies in an order that does not depend on hash randomization."""
    if len(deps) < 2:
        return list(deps)
    try:
        return sorted(deps)
    except TypeError:  # keys of mixed types (str and tuple) do not compare: sort on a textual form
        return sorted(deps, key=_sort_token)


def _sort_token(key: Key) -> tuple[str, str]:
    return (type(key).__name__, repr(key))


def _toposort(keys: list[Key], deps_of: Mapping[Key, list[Key]]) -> list[Key]:
    """Kahn's algorithm; dependencies first. Raises GraphCycleError on a cycle."""
    # a task's dependencies come from a set, so they hold no duplicates to count twice
    remaining = {k: len(deps_of[k]) for k in keys}
    users: dict[Key, list[Key]] = {k: [] for k in keys}
    for k in keys:
        for d in deps_of[k]:
            users[d].append(k)
    ready = [k for k in reversed(keys) if remaining[k] == 0]
    out: list[Key] = []
    while ready:
        k = ready.pop()
        out.append(k)
        for u in users[k]:
            remaining[u] -= 1
            if remaining[u] == 0:
                ready.append(u)
    if len(out) != len(keys):
        stuck = [k for k in keys if remaining[k] > 0]
        raise GraphCycleError(
            f"the graph has a cycle through {_on_cycle(stuck, deps_of)!r} ({len(stuck)} tasks cannot run); "
            "a Dask graph must be acyclic"
        )
    return out


def _on_cycle(stuck: list[Key], deps_of: Mapping[Key, list[Key]]) -> Key:
    """A key that is itself on a cycle (stuck keys may merely depend on one).

    Every stuck key has a stuck dependency, so walking stuck dependencies must revisit a key,
    and the first key revisited is on a cycle.
    """
    stuck_set = set(stuck)
    seen: set[Key] = set()
    key = stuck[0]
    while key not in seen:
        seen.add(key)
        key = next(d for d in deps_of[key] if d in stuck_set)
    return key


@contextmanager
def gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector while building hundreds of thousands of small objects:
    nothing built here is garbage yet, so its repeated full passes cost time and free nothing."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()

