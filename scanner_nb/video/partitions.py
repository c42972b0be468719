"""Partitions of a video's rows: whole groups of pictures where they fit, sub-GOP pieces where not."""

from __future__ import annotations

import numpy as np

from ..errors import ScannerValueError
from .index import VideoIndex

__all__ = ["plan_partitions"]


def plan_partitions(index: VideoIndex, rows: np.ndarray, partition_size: int) -> list[np.ndarray]:
    """Group sorted rows into partitions of at most `partition_size` rows, cut at GOPs if possible.

    A partition holds the rows of whole groups of pictures (GOPs) while they fit: it is closed
    once it would hold more than `partition_size` rows, or once the frames it must decode (per
    GOP, from its keyframe to the last row needed) add up to `partition_size`. The rows of a
    GOP that holds more than `partition_size` of them are split evenly into consecutive pieces,
    each its own partition: a partition never holds a whole long GOP, so memory follows
    `partition_size`, not the GOP. The pieces of one GOP decode as a chain: a reader left where
    the previous piece ended continues from there (see :func:`~scanner_nb.video.read_frames`).

    Parameters
    ----------
    index : VideoIndex
    rows : array_like of int
        Sorted, unique rows.
    partition_size : int
        Most rows per partition, at least 1.

    Returns
    -------
    list of numpy.ndarray
        The rows of each partition, in order; empty when `rows` is.

    Examples
    --------
    >>> from fractions import Fraction
    >>> index = VideoIndex("/v.mp4", 8, 8, 24.0, np.arange(30), [0, 10, 20], Fraction(1, 24),
    ...                    "h264")
    >>> [(int(p[0]), int(p[-1])) for p in plan_partitions(index, np.arange(30), 20)]
    [(0, 19), (20, 29)]
    >>> [p.tolist() for p in plan_partitions(index, [3, 12, 25, 27], 5)]
    [[3, 12], [25, 27]]
    >>> [p.tolist() for p in plan_partitions(index, [1, 2, 11], 2)]
    [[1, 2], [11]]
    >>> [len(p) for p in plan_partitions(index, np.arange(30), 4)]
    [4, 3, 3, 4, 3, 3, 4, 3, 3]
    """
    size = int(partition_size)
    if size != partition_size or size < 1:
        raise ScannerValueError(
            f"partition_size must be a positive integer, got {partition_size!r}"
        )
    rows_a = np.asarray(rows, dtype=np.int64).reshape(-1)
    if rows_a.size == 0:
        return []
    if np.any(np.diff(rows_a) <= 0):
        raise ScannerValueError("rows must be sorted and unique")
    index.check_row(int(rows_a[0]))
    index.check_row(int(rows_a[-1]))
    keyframes = index.keyframes
    gop = np.searchsorted(keyframes, rows_a, side="right") - 1
    starts = np.concatenate([[0], np.flatnonzero(np.diff(gop)) + 1])
    ends = np.concatenate([starts[1:], [len(rows_a)]])
    costs = rows_a[ends - 1] - keyframes[gop[starts]] + 1
    parts: list[np.ndarray] = []
    first, cost = 0, 0
    for s, e, c in zip(starts.tolist(), ends.tolist(), costs.tolist()):
        if e - first > size and first < s:  # this GOP does not fit: close what is there
            parts.append(rows_a[first:s])
            first, cost = s, 0
        if e - s > size:  # a long GOP: consecutive pieces, decoded as a chain
            parts.extend(np.array_split(rows_a[s:e], -(-(e - s) // size)))
            first, cost = e, 0
            continue
        cost += c
        if cost >= size:
            parts.append(rows_a[first:e])
            first, cost = e, 0
    if first < len(rows_a):
        parts.append(rows_a[first:])
    return parts
