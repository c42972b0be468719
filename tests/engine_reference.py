"""A small reference interpreter of API.md sections 2 and 4, one element at a time.

A stream collection is a list of streams, each a list of values where ``None`` is a null.
Every function here follows the text of API.md directly, with no partitions, no Dask and no
numpy, so the engine's answers can be checked against it.
"""

from __future__ import annotations

NULL = None


def clamp(i: int, n: int) -> int:
    return min(max(i, 0), n - 1)


def elementwise(streams, f):
    """An op's output at a row where its input is null is null."""
    return [[NULL if x is NULL else f(x) for x in s] for s in streams]


def two_inputs(a, b, f):
    return [[NULL if x is NULL or y is NULL else f(x, y) for x, y in zip(sa, sb)]
            for sa, sb in zip(a, b)]


def stencil(streams, offsets, f):
    """Per output row i the inputs at i+o, clamped to the stream's ends; null where the input
    at row i itself is null; other nulls in the window are passed as None."""
    out = []
    for s in streams:
        n = len(s)
        out.append([NULL if s[i] is NULL else f([s[clamp(i + o, n)] for o in offsets])
                    for i in range(n)])
    return out


def window_sum(streams, k):
    """A bounded-state op summing what it saw since its reset: with warm-up, row r sees rows
    max(0, r-k) .. r (inputs here are never null)."""
    return [[sum(s[max(0, r - k):r + 1]) for r in range(len(s))] for s in streams]


def running_sum(streams):
    """An unbounded-state op: one instance sees each stream (or slice) from its first row."""
    out = []
    for s in streams:
        total, row = 0, []
        for x in s:
            total += x
            row.append(total)
        out.append(row)
    return out


def stride(streams, ks):
    return [s[::k] for s, k in zip(streams, ks)]


def range_(streams, bounds):
    return [s[a:b] for s, (a, b) in zip(streams, bounds)]


def ranges(streams, intervals):
    return [[x for a, b in ivs for x in s[a:b]] for s, ivs in zip(streams, intervals)]


def strided_range(streams, args):
    return [s[a:b:k] for s, (a, b, k) in zip(streams, args)]


def gather(streams, indices):
    return [[s[i] for i in idx] for s, idx in zip(streams, indices)]


def repeat_null(streams, ns):
    return [[x if j == 0 else NULL for x in s for j in range(n)] for s, n in zip(streams, ns)]


def repeat(streams, ns):
    return [[x for x in s for _ in range(n)] for s, n in zip(streams, ns)]


def partition_rows(kind: str, args: tuple, n: int) -> list[list[int]]:
    """The rows of each slice a partitioner cuts a stream of ``n`` rows into."""
    if kind == "all":
        (size,) = args
        return [list(range(i, min(i + size, n))) for i in range(0, n, size)] or [[]]
    if kind == "strided":
        k, size = args
        rows = list(range(0, n, k))
        return [rows[i:i + size] for i in range(0, len(rows), size)] or [rows]
    (intervals,) = args  # ranges
    return [list(range(min(a, n), min(b, n))) for a, b in intervals]


def slice_(streams, partitioners):
    """Per stream, its slices as independent streams; returns (streams, parent of each)."""
    out, parents = [], []
    for p, (s, (kind, args)) in enumerate(zip(streams, partitioners)):
        for rows in partition_rows(kind, args, len(s)):
            out.append([s[r] for r in rows])
            parents.append(p)
    return out, parents


def unslice(streams, parents, n_parents):
    """The slices' outputs concatenated in order, one stream per stream that was sliced."""
    out = [[] for _ in range(n_parents)]
    for s, p in zip(streams, parents):
        out[p].extend(s)
    return out
