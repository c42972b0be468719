"""Progress of a compute: a bar in Jupyter (a widget) or in a terminal (text).

The session decides where a graph runs; this module watches it run. :func:`compute` is the one
entry point: the session passes the collections, the ``distributed.Client`` (or ``None``) and
the local scheduler's ``get``; it returns the computed results in order.
"""

from __future__ import annotations

import contextlib
import sys
from typing import Any, Callable, Sequence

import dask

__all__ = ["compute"]


def compute(collections: Sequence, *, dclient: Any = None, scheduler: Callable | None = None,
            label: str = "scanner_nb", show: bool = True, **kwargs) -> list:
    """Compute ``collections`` (on ``dclient`` when given, else with ``scheduler``), showing a
    bar labelled ``label`` when ``show``; ``kwargs`` are Dask's own compute keywords."""
    if dclient is not None:
        if not show:
            return list(dask.compute(*collections, scheduler=dclient, **kwargs))
        from distributed import progress as distributed_progress

        futures = dclient.compute(list(collections), **kwargs)
        widget = distributed_progress(futures, scheduler=dclient.scheduler.address)
        if widget is not None:  # in Jupyter progress() returns the widget to display
            from IPython.display import display

            display(widget)
        return dclient.gather(futures)
    bar = contextlib.nullcontext()
    if show:
        from tqdm.dask import TqdmCallback

        # in a notebook a finished bar stays (a closed widget would show nothing)
        bar = TqdmCallback(desc=label, leave="ipykernel" in sys.modules)
    with bar:
        return list(dask.compute(*collections, scheduler=scheduler, **kwargs))
