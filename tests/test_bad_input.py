"""Bad input fails fast, with a message naming the task, key or field at fault and what to do.

One table of bad graphs (run through ``Client.get`` on the session cluster and over the HTTP API)
and one of bad settings (``WukongConfig``, ``LocalCluster`` keywords, ``WUKONG_*`` variables).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import pytest
from api_server import TOKEN, api_server
from dask._task_spec import Task, TaskRef
from dask.utils_test import inc
from pydantic import ValidationError

from wukong import (
    Client,
    GraphCycleError,
    InvalidGraphError,
    LocalCluster,
    MissingKeyError,
    OutputTooLargeError,
    SerializationError,
    WukongConfig,
)


def first_of(x: Any) -> Any:
    return x


@dataclass(frozen=True)
class BadGraph:
    name: str
    make: Callable[[], Any]  # builds the graph (a lock cannot be built once and shared)
    keys: Any
    error: type[BaseException]
    says: tuple[str, ...]  # every one of these must be in the message
    config: dict = field(default_factory=dict)  # cluster settings for this case only
    over_http: bool = True


GRAPHS = [
    BadGraph("missing key", lambda: {"x": 1}, "nope", MissingKeyError, ("'nope'", "not among", "spelling")),
    BadGraph("missing nested key", lambda: {"x": 1, "y": (inc, "x")}, [["y"], ["lost"]], MissingKeyError,
             ("'lost'",)),
    BadGraph("unhashable key", lambda: {"x": 1}, [{"not": "hashable"}], MissingKeyError, ("not hashable",)),
    BadGraph("missing dependency", lambda: {"y": Task("y", inc, TaskRef("ghost")), "z": (inc, "y")}, "z",
             MissingKeyError, ("task 'y' depends on 'ghost'", "add a task")),
    BadGraph("cycle", lambda: {"a": (inc, "b"), "b": (inc, "c"), "c": (inc, "a"), "out": (inc, "a")}, "out",
             GraphCycleError, ("cycle through", "acyclic")),
    BadGraph("self cycle", lambda: {"loop": Task("loop", inc, TaskRef("loop"))}, "loop", GraphCycleError,
             ("'loop'",)),
    BadGraph("an int", lambda: 42, "x", InvalidGraphError, ("got int", "__dask_graph__")),
    BadGraph("a string", lambda: "a string", "x", InvalidGraphError, ("got str",)),
    BadGraph("a list", lambda: [("x", 1)], "x", InvalidGraphError, ("got list",)),
    BadGraph("an object", lambda: object(), "x", InvalidGraphError, ("got object",)),
    BadGraph("unserializable input", lambda: {"in": (len, [threading.Lock()]), "out": (inc, "in")}, "out",
             SerializationError, ("task 'in'", "cannot be serialized", "inside the task")),
    BadGraph("unserializable data", lambda: {"held": threading.Lock(), "out": (first_of, "held")}, "out",
             SerializationError, ("task 'held'", "cannot be serialized")),
    BadGraph("unserializable output", lambda: {"lock-maker": (threading.Lock,), "user-1": (first_of, "lock-maker"),
                                               "user-2": (first_of, "lock-maker")},
             ["user-1", "user-2"], SerializationError, ("task 'lock-maker'", "cannot be serialized", "picklable")),
    # 'big' feeds only 'sum', which runs in the same executor, so 'big' is never serialized; 'sum' is
    # a requested result, so its bytes are measured and refused
    BadGraph("output over max_output_size", lambda: {"big": (np.zeros, 100_000), "sum": (np.add, "big", 1)},
             "sum", OutputTooLargeError, ("'sum' is 800,", "over max_output_size=100,000", "smaller chunks"),
             config={"max_output_size": 100_000}, over_http=False),
]


@pytest.fixture(scope="module")
def remote(cluster):
    with api_server(cluster) as server, Client(endpoint=server.url, token=TOKEN) as client:
        yield client


@pytest.mark.timeout(60)
@pytest.mark.parametrize("case", GRAPHS, ids=[g.name for g in GRAPHS])
def test_bad_graphs_fail_naming_what_is_wrong(client, cluster, case):
    for name, value in case.config.items():
        setattr(cluster.config, name, value)  # validated assignment; restored below
    try:
        with pytest.raises(case.error) as info:
            client.get(case.make(), case.keys)
    finally:
        for name in case.config:
            setattr(cluster.config, name, None)
    for words in case.says:
        assert words in str(info.value)
    assert client.get({"x": 1, "y": (inc, "x")}, "y") == 2  # the cluster is still usable


@pytest.mark.timeout(60)
@pytest.mark.parametrize("case", [g for g in GRAPHS if g.over_http], ids=[g.name for g in GRAPHS if g.over_http])
def test_bad_graphs_over_http_fail_the_same_way(remote, case):
    with pytest.raises(case.error) as info:
        remote.get(case.make(), case.keys)
    for words in case.says:
        assert words in str(info.value)


def test_wukong_errors_are_also_the_builtin_kinds_dask_users_catch():
    assert issubclass(MissingKeyError, KeyError) and issubclass(GraphCycleError, ValueError)
    assert issubclass(InvalidGraphError, TypeError) and issubclass(SerializationError, TypeError)
    assert MissingKeyError("k", "message").args == ("k",)  # as dask.get raises KeyError(key)


# --- settings -----------------------------------------------------------------------------------

SETTINGS = [
    ({"n_workers": -3}, "n_workers", "greater than or equal to 1"),
    ({"proxy_port": 70_000}, "proxy_port", "less than or equal to 65535"),
    ({"redis_endpoints": ["no-port-here"]}, "redis_endpoints", "host:port"),
    ({"num_kv_shards": 0}, "num_kv_shards", "greater than or equal to 1"),
    ({"job_timeout": -5}, "job_timeout", "greater than 0"),
    ({"stall_warning": 0}, "stall_warning", "greater than 0"),
    ({"payload_limit": 10}, "payload_limit", "greater than or equal to 4096"),
    ({"payload_limit": 100 << 20}, "payload_limit", "less than or equal to 6291456"),
    ({"job_ttl": 10**20}, "job_ttl", "less than or equal to 2592000"),
    ({"job_timeout": 10**12}, "job_timeout", "less than or equal to 2592000"),
    ({"big_task_threshold": 1 << 50}, "big_task_threshold", "less than or equal to"),
    ({"function_timeout": 1000}, "function_timeout", "less than or equal to 900"),
    ({"auth": "kerberos"}, "auth", "'sigv4'"),
    ({"no_such_setting": 1}, "no_such_setting", "Extra inputs are not permitted"),
]


@pytest.mark.parametrize(("kwargs", "field_name", "says"), SETTINGS, ids=[s[1] for s in SETTINGS])
def test_bad_settings_name_the_field(kwargs, field_name, says):
    for make in (WukongConfig, LocalCluster):  # LocalCluster validates before it starts anything
        with pytest.raises(ValidationError) as info:
            make(**kwargs)
        assert field_name in str(info.value) and says in str(info.value)


ENVIRONMENT = [
    ("WUKONG_N_WORKERS", "-3", "n_workers"),
    ("WUKONG_N_WORKERS", "many", "n_workers"),
    ("WUKONG_JOB_TIMEOUT", "soon", "job_timeout"),
    ("WUKONG_REDIS_ENDPOINTS", "nohost", "redis_endpoints"),
    ("WUKONG_PAYLOAD_LIMIT", "1", "payload_limit"),
]


@pytest.mark.parametrize(("variable", "value", "field_name"), ENVIRONMENT, ids=[f"{e[0]}={e[1]}" for e in ENVIRONMENT])
def test_bad_environment_variables_name_the_field(monkeypatch, variable, value, field_name):
    monkeypatch.setenv(variable, value)
    for make in (WukongConfig, LocalCluster):
        with pytest.raises(ValidationError, match=field_name):
            make()


@pytest.mark.timeout(60)
def test_bad_per_job_settings_name_the_field_before_anything_is_sent(remote, client):
    for where in (remote, client):
        with pytest.raises(ValidationError, match="job_timeout"):
            where.submit({"x": 1}, "x", job_timeout=-1)
        with pytest.raises(ValidationError, match="colour"):
            where.submit({"x": 1}, "x", colour="blue")
