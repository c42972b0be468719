"""Shot boundaries from frame histograms, as scannertools' ``shot_detection``.

scannertools' rule: the distance between neighbouring frames is the Chebyshev distance (largest
bin difference) of each channel's histogram, averaged over the channels; frame ``i`` starts a
new shot when its distance exceeds the mean of the distances within ``window`` rows on either
side by more than ``threshold`` standard deviations (a window of ``[i - window, i + window)``,
cut at the stream's ends; the first frame's distance counts as 0).

The rule needs every histogram of the stream before it can place the first boundary, so:

- :func:`shot_boundaries` is the scanner_nb way: a function over a computed histogram stream
  (``shot_boundaries(sc.ops.Histogram(frame=frames))``, or the histograms themselves). It does
  not depend on how the stream is partitioned.
- ``sc.ops.ShotBoundaries(histograms=...)`` is scannertools' op, for Scanner programs: it sees
  what one ``execute`` call is given, as scannertools' op saw one work packet (see its
  docstring).

Examples
--------
>>> import numpy as np
>>> hists = np.zeros((30, 3, 4), np.int64)
>>> hists[:, :, 0] = 100
>>> hists[12:, :, :] = [50, 50, 0, 0]       # frame 12 starts a new shot
>>> shot_boundaries(hists)
[12]
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from ..errors import ScannerTypeError, ScannerValueError
from ..kernel import Kernel, register_python_op
from ..stream import Stream
from .arrays import _positive_int

__all__ = ["shot_boundaries", "ShotBoundaries", "WINDOW", "THRESHOLD"]

#: scannertools' window: distances within this many rows on either side of a frame.
WINDOW = 500
#: scannertools' threshold, in standard deviations above the window's mean.
THRESHOLD = 2.5


def _check_rule(window: Any, threshold: Any) -> tuple[int, float]:
    window = _positive_int(window, "ShotBoundaries window")
    try:
        threshold = float(threshold)
    except (TypeError, ValueError):
        raise ScannerTypeError(f"ShotBoundaries threshold must be a number, got {threshold!r}"
                               ) from None
    if not np.isfinite(threshold):
        raise ScannerValueError(f"ShotBoundaries threshold must be finite, got {threshold}")
    return window, threshold


def _boundaries(histograms: Sequence[Any], window: int, threshold: float) -> list[int]:
    """scannertools' rule over one stream's histograms (each ``(C, bins)``, or ``None``)."""
    if len(histograms) < 2:
        return []
    try:
        counts = np.stack([np.asarray(h, dtype=np.float64) for h in histograms])
    except (TypeError, ValueError) as exc:  # None (a null row) or histograms of other shapes
        raise ScannerValueError(
            f"shot boundaries need one histogram of one shape per row ({exc})") from None
    if counts.ndim != 3:
        raise ScannerValueError(
            f"shot boundaries need (channels, bins) histograms, got shape {counts.shape[1:]}")
    distances = np.zeros(len(counts))
    distances[1:] = np.abs(np.diff(counts, axis=0)).max(axis=2).mean(axis=1)
    n = len(distances)
    found = []
    for i in range(1, n):  # each window's mean and deviation as numpy computes them
        near = distances[max(i - window, 0):min(i + window, n)]
        if distances[i] - near.mean() > threshold * near.std():
            found.append(i)
    return found


def shot_boundaries(histograms: Any, window: int = WINDOW, threshold: float = THRESHOLD
                    ) -> list:
    """The first frame of each new shot, from per-frame histograms (scannertools' rule, see the
    module docstring).

    Parameters
    ----------
    histograms : Stream, array or sequence
        A Stream of histograms (``sc.ops.Histogram(frame=...)``; it is computed, and one list
        is returned per stream), or one stream's histograms: an ``(n, C, bins)`` array or a
        sequence of ``(C, bins)`` arrays.
    window : int
        Rows on either side of a frame whose distances make its window.
    threshold : float
        Standard deviations above the window's mean that make a boundary.

    Returns
    -------
    list
        Sorted row numbers (a list of them per stream for a Stream). Frame 0 is never one.

    Examples
    --------
    >>> shots = shot_boundaries(sc.ops.Histogram(frame=frames))  # doctest: +SKIP
    """
    window, threshold = _check_rule(window, threshold)
    if isinstance(histograms, Stream):
        return [_boundaries(h, window, threshold) for h in histograms.compute()]
    return _boundaries(histograms, window, threshold)


@register_python_op(name="ShotBoundaries", batch=10_000_000)
class ShotBoundaries(Kernel):
    """scannertools' ``ShotBoundaries`` op: the shot boundaries of the histograms it is given,
    as a list at the first of those rows (``None`` at the others).

    Like scannertools' op (a batch as large as any stream), it finds the boundaries of the rows
    one ``execute`` call gets: a partition. So give the whole stream one partition, as
    scannertools' own example does (``sc.run(..., sp.PerfParams.manual(n, n))`` for ``n``
    rows, or ``compute(perf_params=...)``); row numbers count from the partition's first row.
    Why not a stencil: the rule's window needs every row's histogram before the first
    boundary, and the first row's output is the whole list, so no window of offsets fits it.
    :func:`shot_boundaries` over the computed histograms gives the same list whatever the
    partitions, and is the notebook way.

    Examples
    --------
    >>> hist = sc.ops.Histogram(frame=frames)  # doctest: +SKIP
    >>> cuts = sc.ops.ShotBoundaries(histograms=hist)  # doctest: +SKIP
    """

    @classmethod
    def check_args(cls, window=WINDOW, threshold=THRESHOLD):
        _check_rule(window, threshold)

    def __init__(self, config, window: int = WINDOW, threshold: float = THRESHOLD):
        super().__init__(config)
        self.window, self.threshold = _check_rule(window, threshold)

    def execute(self, histograms: Sequence[Any]) -> Sequence[Any]:
        found = _boundaries(histograms, self.window, self.threshold)
        return [found] + [None] * (len(histograms) - 1)
