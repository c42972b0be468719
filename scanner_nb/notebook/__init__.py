"""Notebook front ends: plan summaries, frame previews, plots and inline videos.

Each module is built on plain values and callables, never on the engine, so it can be tested
without a browser and without a graph:

=============  ==========================================================================
``repr``       ``plan_html(summary)`` / ``plan_text(summary)``: pure strings, no widgets
``preview``    ``Preview(fetch, lengths, is_frame=...)``: ipywidgets slider + Play + image
``stills``     ``bundle(widget, data)``: the saved still of a preview, or of a box of them
``plot``       ``plot_elements(series, labels)``: scalars or vectors against row index
``video``      ``show_video_html(frames, fps)``: an inline base64 H.264 ``<video>``
``cluster``    ``keep_workers_on_interrupt(cluster)``: a LocalCluster that survives an interrupt
=============  ==========================================================================

Importing this package imports nothing heavy (no ipywidgets, matplotlib or av); the names
below are loaded from their module on first use.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = [
    "Preview",
    "KeepWorkersOnInterrupt",
    "VideoHTML",
    "keep_workers_on_interrupt",
    "plan_html",
    "plan_text",
    "plot_elements",
    "show_video_html",
]

_WHERE = {
    "Preview": "preview",
    "KeepWorkersOnInterrupt": "cluster",
    "VideoHTML": "video",
    "keep_workers_on_interrupt": "cluster",
    "plan_html": "repr",
    "plan_text": "repr",
    "plot_elements": "plot",
    "show_video_html": "video",
}


def __getattr__(name: str) -> Any:
    try:
        module = _WHERE[name]
    except KeyError:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
