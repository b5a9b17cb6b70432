"""Tree reduction of ``range(1024)``: add neighbours pairwise, level by level, down to one sum.

The seed document lists this workload but shows no code for it; this is the original Wukong repo's
form, ``delayed(add)`` over the two halves of the list until one value is left (1,023 add tasks).
"""

from __future__ import annotations

from operator import add

from _seed import script_main
from dask import delayed

N_LEAVES = 1024


def build(scale: float = 1.0):
    """The delayed sum of ``range(1024)`` and its check; ``(collection, check)``.

    ``scale`` is accepted for the runner's sake and ignored: the graph is the whole workload here
    (tasks take microseconds), so even a quick run keeps the seed's 1,024 leaves.
    """
    L = range(N_LEAVES)
    while len(L) > 1:
        L = list(map(delayed(add), L[0::2], L[1::2]))
    total = L[0]

    def check(got) -> str:
        expected = sum(range(N_LEAVES))
        assert got == expected, f"tree reduction gave {got!r}, expected sum(range({N_LEAVES})) = {expected}"
        return f"sum(range({N_LEAVES})) = {got}, as Python's sum says"

    return total, check


def run(client, scale: float = 1.0):
    total, check = build(scale)
    result = total.compute(scheduler=client.get)
    return result, check(result)


if __name__ == "__main__":
    script_main(run, __doc__)
