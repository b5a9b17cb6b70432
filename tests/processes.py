"""Process checks for tests that start, signal and kill processes, read from /proc (Linux): which
processes a test started, and whether any of them is still alive afterwards."""

from __future__ import annotations

import os


def process_table() -> dict[int, tuple[int, str, str]]:
    """Every process: pid -> (parent pid, command name, state letter)."""
    table = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                stat = fh.read()
        except OSError:
            continue
        # the command name is in parentheses and may itself contain spaces or parentheses
        name = stat[stat.index("(") + 1 : stat.rindex(")")]
        state, ppid = stat[stat.rindex(")") + 2 :].split()[:2]
        table[int(entry)] = (int(ppid), name, state)
    return table


def child_processes(parent: int | None = None) -> dict[int, str]:
    """Live (non-zombie) direct children of ``parent`` (default: this process), pid -> command name."""
    parent = os.getpid() if parent is None else parent
    return {pid: name for pid, (ppid, name, state) in process_table().items() if ppid == parent and state != "Z"}


def descendants(pid: int) -> list[int]:
    """Every live descendant of ``pid``, in whatever session or process group."""
    table = process_table()
    found, frontier = [], [pid]
    while frontier:
        parent = frontier.pop()
        kids = [p for p, (ppid, _, state) in table.items() if ppid == parent and state != "Z"]
        found += kids
        frontier += kids
    return found


def alive(pid: int) -> bool:
    """True while ``pid`` runs; a zombie (exited, not yet reaped) counts as gone."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False
