"""Progress of a compute: a bar in Jupyter (a widget) or in a terminal (text).

The engine asks for progress in two ways, one per kind of scheduler:

- :func:`local_bar` wraps a compute on the local (threaded or synchronous) scheduler;
- :func:`gather` waits for the futures of a compute on a ``distributed.Client``.
"""

from __future__ import annotations

import sys
from typing import Any, Sequence

__all__ = ["local_bar", "gather"]


def local_bar(label: str = "scanner_nb"):
    """A context manager showing a bar while a local compute runs inside it."""
    from tqdm.dask import TqdmCallback

    # in a notebook a finished bar stays (a closed widget would show nothing)
    return TqdmCallback(desc=label, leave="ipykernel" in sys.modules)


def gather(dclient: Any, futures: Sequence, label: str = "scanner_nb") -> list:
    """The results of ``futures`` of ``dclient``, showing a bar while they finish."""
    from distributed import progress as distributed_progress

    widget = distributed_progress(futures, scheduler=dclient.scheduler.address)
    if widget is not None:  # in Jupyter progress() returns the widget to display
        from IPython.display import display

        display(widget)
    return dclient.gather(futures)
