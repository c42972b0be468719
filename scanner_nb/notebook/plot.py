"""Scalar or vector elements against row index, with matplotlib.

``plot_elements`` takes already computed elements (one list per stream) and draws one line per
stream, or one per component for vector elements. ``None`` elements (rows a sampling op left
empty, or that failed) are NaN, which matplotlib draws as gaps.

The backend is left alone: in a notebook the kernel has already chosen one (inline, widget,
...). Only when nothing chose one (no ``MPLBACKEND``, no ``matplotlib.use``, pyplot not yet
imported) is the non-interactive Agg backend selected, so a script or a test never opens a
window.
"""

from __future__ import annotations

import numbers
import os
import sys
from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = ["plot_elements"]


def _ensure_backend() -> None:
    """Select Agg only if no backend was chosen (never override a notebook's backend)."""
    if "matplotlib.pyplot" in sys.modules or os.environ.get("MPLBACKEND"):
        return
    import matplotlib

    try:
        unset = matplotlib.rcParams._get_backend_or_none() is None
    except AttributeError:  # older matplotlib
        from matplotlib import rcsetup

        unset = dict.__getitem__(matplotlib.rcParams, "backend") is rcsetup._auto_backend_sentinel
    if unset:
        matplotlib.use("Agg")


def _components(element: Any) -> np.ndarray | None:
    """The element as a 1-d float array (a scalar gives one component); None for None.

    >>> _components(3), _components(None), _components([1, 2])
    (array([3.]), None, array([1., 2.]))
    """
    if element is None:
        return None
    if isinstance(element, (bool, np.bool_)):
        return np.array([float(element)])
    if isinstance(element, numbers.Number):
        try:
            return np.array([float(element)])
        except TypeError:  # complex: its magnitude
            return np.array([abs(element)])
    try:
        a = np.asarray(element)
    except Exception:
        return np.array([np.nan])
    if a.dtype == object or a.dtype.kind in "USV":
        return np.array([np.nan])
    if np.iscomplexobj(a):
        a = np.abs(a)
    return a.astype(float, copy=False).reshape(-1)


def _series_matrix(elements: Sequence[Any]) -> tuple[np.ndarray, bool]:
    """Rows × components float matrix (NaN for None or missing components), and is_vector."""
    comps = [_components(e) for e in elements]
    width = max((len(c) for c in comps if c is not None), default=1)
    is_vector = any(c is not None and (len(c) != 1 or np.ndim(e) >= 1)
                    for c, e in zip(comps, elements))
    out = np.full((len(comps), max(width, 1)), np.nan)
    for i, c in enumerate(comps):
        if c is not None and len(c):
            out[i, : len(c)] = c
    return out, is_vector


def plot_elements(
    series: list[list],
    labels: list[str] | None = None,
    ax: Any = None,
    ylabel: str = "value",
) -> Any:
    """Draw scalar or vector elements against their row index, one line per stream.

    Parameters
    ----------
    series : list of lists
        One list of elements per stream, element ``i`` being row ``i``. An element is a
        number (one line for the stream) or a 1-d array-like (one line per component, labelled
        ``"<label>[c]"``). ``None`` is a gap (NaN).
    labels : list of str, optional
        One label per stream; ``stream 0``, ``stream 1``, ... by default.
    ax : matplotlib.axes.Axes, optional
        Where to draw; a new figure's Axes by default (``pyplot.subplots``).
    ylabel : str
        The y axis label (the x axis is ``row``).

    Points between two gaps (a sparse stream: ``RepeatNull(Stride(...))``) get a marker, since
    no line reaches them; series differ in line style and marker and are half transparent, so
    one never hides another; the legend sits beside the axes.

    Returns
    -------
    matplotlib.axes.Axes

    Examples
    --------
    >>> ax = plot_elements([[1.0, None, 3.0], [[0, 1], [1, 2], [2, 3]]], labels=["a", "b"])
    >>> [line.get_label() for line in ax.get_lines()]
    ['a', 'b[0]', 'b[1]']
    >>> import matplotlib.pyplot as plt; plt.close(ax.figure)
    """
    _ensure_backend()
    if ax is None:
        import matplotlib.pyplot as plt

        _, ax = plt.subplots(figsize=(8, 3))
    series = [list(s) if s is not None else [] for s in series]
    if labels is None:
        labels = [f"stream {i}" for i in range(len(series))]
    labels = [str(x) for x in labels] + [f"stream {i}" for i in range(len(labels), len(series))]
    longest = 0
    n_lines = 0
    for elements, label in zip(series, labels):
        values, is_vector = _series_matrix(elements)
        longest = max(longest, len(elements))
        columns = range(values.shape[1]) if is_vector else [0]
        for c in columns:
            name = f"{label}[{c}]" if is_vector else label
            _plot_line(ax, values[:, c], name, n_lines)
            n_lines += 1
    ax.set_xlabel("row")
    ax.set_ylabel(ylabel)
    if longest:
        ax.set_xlim(-0.5, max(longest - 0.5, 0.5))
    if 0 < n_lines <= 20:  # beside the axes, never over the data
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0,
                  fontsize="small", frameon=False)
        ax.figure.tight_layout()
    return ax


_STYLES = ("-", "--", "-.", ":")
_MARKERS = ("o", "s", "^", "D", "v", "P")


def _plot_line(ax: Any, y: np.ndarray, label: str, k: int) -> None:
    """One series: a line where points have neighbours, a marker where one stands alone.

    Styles cycle per series (line style and marker) and lines are half transparent, so equal
    series drawn over each other stay distinguishable.
    """
    x = np.arange(len(y))
    ok = np.isfinite(y)
    before = np.concatenate([[False], ok[:-1]])
    after = np.concatenate([ok[1:], [False]])
    alone = ok & ~before & ~after  # between nulls (e.g. RepeatNull): no line reaches it
    few = ok.sum() <= 60
    marker = _MARKERS[k % len(_MARKERS)]
    line, = ax.plot(x, y, linestyle=_STYLES[k % len(_STYLES)], alpha=0.75,
                    linewidth=max(2.5 - 0.75 * k, 1.0),  # the first widest: overlaps show
                    marker=marker if few else None, markersize=4, label=label)
    if not few and alone.any():
        ax.plot(x[alone], y[alone], linestyle="none", marker=marker, markersize=3,
                color=line.get_color(), alpha=0.75)
