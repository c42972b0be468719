"""An ipywidgets preview of a stream, one row at a time, built from a ``fetch(stream, row)``.

The widget is a stream ``Dropdown`` (hidden for one stream), a ``Play`` jslinked to an
``IntSlider`` (so playing moves the slider in the browser, and each new value reaches Python
once), an ``Image`` for frames and an ``HTML`` for text and errors. It knows nothing about the
engine: the engine passes a callable that computes exactly one row, and this module decides
which rows to ask for.

Cost notes: a step to a row not seen before costs one ``fetch`` plus one JPEG encode (about
2 ms for 640x360; PNG, used for RGBA frames or ``image_format="png"``, is several times
slower). A step back to one of the last ``cache_size`` rows costs neither: the cache keeps the
encoded image (or the element, when ``render`` is given, since ``render`` runs on the kernel's
main thread only). While Play runs, the next ``prefetch`` rows are fetched on one background
thread, so playing forward is served from the cache whenever ``fetch`` keeps up with ``fps``.

An exception from ``fetch`` or ``render`` (the engine raises ``KernelError`` with ``.op``,
``.stream``, ``.row``) is drawn inside the widget in place of the element; it is not cached,
and the other rows keep working.
"""

from __future__ import annotations

import html
import io
import sys
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import ipywidgets as widgets
import numpy as np

from scanner_nb.notebook._image import to_uint8_image

__all__ = ["Preview"]

MAX_TEXT = 4000  # characters of an element's repr drawn as text


@dataclass
class _View:
    """What the widget draws for one row: an encoded image, escaped HTML text or an error."""

    kind: str  # "image", "text" or "error"
    data: bytes | str
    fmt: str = ""  # "jpeg" or "png" for images
    width: int = 0
    height: int = 0


@dataclass
class _Entry:
    """A cached row: the finished view, or the element when it still has to be rendered."""

    element: Any = None
    view: _View | None = None


# -- pure helpers: arrays and figures to views ----------------------------------------------


def _encode_image(a: np.ndarray, fmt: str, quality: int) -> _View:
    """Encode a uint8 image; RGBA always goes to PNG (JPEG has no alpha)."""
    import imageio.v3 as iio

    if a.ndim == 3 and a.shape[2] == 4:
        fmt = "png"
    if fmt == "png":
        data = iio.imwrite("<bytes>", a, extension=".png", compress_level=1)
    else:
        fmt = "jpeg"
        data = iio.imwrite("<bytes>", np.ascontiguousarray(a), extension=".jpeg", quality=quality)
    return _View("image", data, fmt, int(a.shape[1]), int(a.shape[0]))


def _text_view(value: Any, limit: int = MAX_TEXT) -> _View:
    if isinstance(value, str):
        text = value
    else:
        try:
            text = repr(value)
        except Exception as exc:
            text = f"<{type(value).__name__}: repr raised {type(exc).__name__}>"
    if len(text) > limit:
        text = f"{text[:limit]}… ({len(text) - limit:,} more characters)"
    body = html.escape(text, quote=False)
    return _View(
        "text",
        '<pre style="margin:0;white-space:pre-wrap;max-height:480px;overflow:auto;'
        f'font-size:12px">{body}</pre>',
    )


def _error_view(exc: BaseException, stream: int, row: int, where: str = "fetch") -> _View:
    """An error box naming the op, stream and row (from a KernelError, else the preview's)."""
    op = getattr(exc, "op", None)
    e_stream = getattr(exc, "stream", None)
    e_row = getattr(exc, "row", None)
    parts = [f"<b>{html.escape(type(exc).__name__)}</b>"]
    if op is not None:
        parts.append(f" in op <b>{html.escape(repr(op) if isinstance(op, str) else str(op))}</b>")
    parts.append(f", stream {html.escape(str(e_stream if e_stream is not None else stream))}")
    parts.append(f", row {html.escape(str(e_row if e_row is not None else row))}")
    if where != "fetch":
        parts.append(f" (in {html.escape(where)})")
    try:
        message = str(exc)
    except Exception:
        message = "<message unavailable>"
    cause = exc.__cause__
    if cause is not None and type(cause).__name__ not in message:
        message += f"\ncaused by {type(cause).__name__}: {cause}"
    if len(message) > MAX_TEXT:
        message = message[:MAX_TEXT] + "…"
    return _View(
        "error",
        '<div style="border:1px solid #d32f2f;background:#ffebee;color:#b71c1c;'
        'padding:4px 8px;font-family:var(--jp-code-font-family,monospace);font-size:12px;'
        f'white-space:pre-wrap">{"".join(parts)}<br>{html.escape(message)}</div>',
    )


def _figure_of(value: Any) -> Any:
    """The matplotlib Figure for a Figure or an Axes, or None (without importing matplotlib)."""
    mpl_figure = sys.modules.get("matplotlib.figure")
    if mpl_figure is None:
        return None
    if isinstance(value, mpl_figure.Figure):
        return value
    axes_mod = sys.modules.get("matplotlib.axes")
    if axes_mod is not None and isinstance(value, axes_mod.Axes):
        return value.figure
    return None


def _figure_view(fig: Any) -> _View:
    """Render a Figure to PNG at its own size, then close it (so it is not shown twice)."""
    buf = io.BytesIO()
    try:
        fig.savefig(buf, format="png")
    finally:
        pyplot = sys.modules.get("matplotlib.pyplot")
        if pyplot is not None:
            pyplot.close(fig)
    data = buf.getvalue()
    w, h = (int(round(x)) for x in fig.get_size_inches() * fig.dpi)
    return _View("image", data, "png", w, h)


class Preview:
    """Browse a stream's rows in a notebook: stream selector, slider + Play, the row drawn.

    Parameters
    ----------
    fetch : callable ``(stream_index, row) -> element``
        Computes one row of one stream. Called on the kernel's main thread for a row the user
        moves to, and on one background thread for the rows prefetched while playing.
    lengths : list of int
        The number of rows of each stream.
    is_frame : bool
        Whether elements are frames (H×W, H×W×1, H×W×3 or H×W×4 arrays), drawn as images.
    render : callable ``element -> array | Figure | str``, optional
        Draws an element: an image array is shown as an image, a matplotlib Figure (or Axes)
        as a PNG (the figure is closed), anything else as text. Runs on the main thread only.
        Without it, frames are images and other elements their (shortened) repr.
    stream_names : list of str, optional
        Names in the stream selector; ``stream 0``, ``stream 1``, ... by default.
    cache_size : int
        Rows kept (least recently used dropped); 0 disables the cache and prefetch.
    prefetch : int
        Rows ahead fetched in the background while Play runs; 0 disables it.
    fps : float
        Play speed, rows per second.
    max_width : int
        Images wider than this are scaled down in the page (keeping their aspect); narrower
        ones are shown at their own size, never stretched.
    image_format : {"jpeg", "png"}
        Encoding of frames sent to the browser; RGBA is always PNG.
    jpeg_quality : int
        JPEG quality, 1 to 95.

    Attributes
    ----------
    widget : ipywidgets.VBox
        What is displayed; a ``Preview`` displays as this widget.
    dropdown, play, slider, image, text, status : ipywidgets widgets
        The parts, for tests and for layout tweaks.
    stats : dict
        Counters: ``fetch`` (calls on the main thread), ``prefetch`` (background calls),
        ``cache_hits``, ``errors``.
    last_source : str
        Where the shown row came from: ``"fetch"``, ``"cache"``, ``"prefetch"`` or ``"error"``.
    last_latency_s : float
        Seconds from the slider change to the widgets being updated, for the shown row.

    Examples
    --------
    >>> frames = np.zeros((10, 48, 64, 3), np.uint8)
    >>> p = Preview(lambda s, r: frames[r], [len(frames)], is_frame=True)
    >>> p.slider.max, p.image.format, p.stats["fetch"]
    (9, 'jpeg', 1)
    >>> p.slider.value = 3
    >>> p.row, p.stats["fetch"]
    (3, 2)
    >>> p.close()
    """

    def __init__(
        self,
        fetch: Callable[[int, int], Any],
        lengths: Sequence[int],
        *,
        is_frame: bool,
        render: Callable[[Any], Any] | None = None,
        stream_names: Sequence[str] | None = None,
        cache_size: int = 64,
        prefetch: int = 4,
        fps: float = 24.0,
        max_width: int = 960,
        image_format: str = "jpeg",
        jpeg_quality: int = 90,
    ):
        lengths = [int(n) for n in lengths]
        if not lengths:
            raise ValueError("Preview needs at least one stream; got lengths=[]")
        if any(n < 0 for n in lengths):
            raise ValueError(f"stream lengths must be >= 0; got {lengths}")
        if image_format not in ("jpeg", "png"):
            raise ValueError(f"image_format must be 'jpeg' or 'png'; got {image_format!r}")
        if stream_names is None:
            stream_names = [f"stream {i}" for i in range(len(lengths))]
        stream_names = [str(n) for n in stream_names]
        if len(stream_names) != len(lengths):
            raise ValueError(
                f"{len(stream_names)} stream_names for {len(lengths)} streams; "
                "pass one name per stream"
            )
        self._fetch = fetch
        self.lengths = lengths
        self.is_frame = bool(is_frame)
        self.render = render
        self.stream_names = stream_names
        self.cache_size = max(int(cache_size), 0)
        self.prefetch = max(int(prefetch), 0) if self.cache_size else 0
        self.fps = float(fps)
        self.max_width = int(max_width)
        self.image_format = image_format
        self.jpeg_quality = int(jpeg_quality)

        self.stats = {"fetch": 0, "prefetch": 0, "cache_hits": 0, "errors": 0}
        self.last_source = ""
        self.last_latency_s = 0.0
        self._cache: OrderedDict[tuple[int, int], _Entry] = OrderedDict()
        self._inflight: dict[tuple[int, int], Future] = {}
        self._lock = threading.Lock()
        self._executor: ThreadPoolExecutor | None = None
        self._quiet = False
        self._stream = 0
        self._closed = False

        n0 = lengths[0]
        self.dropdown = widgets.Dropdown(
            options=[(name, i) for i, name in enumerate(stream_names)],
            value=0,
            description="stream",
            layout=widgets.Layout(
                width="max-content", min_width="240px", display="none" if len(lengths) == 1 else ""
            ),
        )
        self.play = widgets.Play(
            value=0,
            min=0,
            max=max(n0 - 1, 0),
            step=1,
            interval=max(1, int(round(1000.0 / self.fps))) if self.fps > 0 else 100,
            description="play",
            disabled=n0 == 0,
        )
        self.slider = widgets.IntSlider(
            value=0,
            min=0,
            max=max(n0 - 1, 0),
            step=1,
            description="row",
            continuous_update=True,
            disabled=n0 == 0,
            layout=widgets.Layout(width="min(600px, 60%)"),
        )
        self._link = widgets.jslink((self.play, "value"), (self.slider, "value"))
        self.status = widgets.HTML(value="", layout=widgets.Layout(margin="0 0 0 8px"))
        self.image = widgets.Image(
            format=image_format,
            layout=widgets.Layout(display="none", object_fit="contain", height="auto"),
        )
        self.text = widgets.HTML(value="", layout=widgets.Layout(display="none"))
        # The image joins the box when the first image is shown: an empty <img> never
        # "loads", so a preview of text elements carries none.
        self.widget = widgets.VBox(
            [self.dropdown, widgets.HBox([self.play, self.slider, self.status]), self.text]
        )
        self.slider.observe(self._on_row, names="value")
        self.dropdown.observe(self._on_stream, names="value")
        self.play.observe(self._on_playing, names="playing")
        self._show_safely(0)

    # -- display --------------------------------------------------------------------------

    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        return self.widget._repr_mimebundle_(**kwargs)

    def __repr__(self) -> str:
        return (
            f"Preview(streams={len(self.lengths)}, lengths={self.lengths}, "
            f"stream={self._stream}, row={self.row})"
        )

    @property
    def stream(self) -> int:
        """The index of the stream shown."""
        return self._stream

    @property
    def row(self) -> int:
        """The row shown."""
        return int(self.slider.value)

    @property
    def showing(self) -> str:
        """What the widget shows now: ``"image"``, ``"text"`` or ``"error"``."""
        return self._showing

    def close(self) -> None:
        """Stop the prefetch thread and close the widgets (their views disappear)."""
        self._closed = True
        executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=True, cancel_futures=True)
        with self._lock:
            self._cache.clear()
        self._link.close()
        for w in (self.dropdown, self.play, self.slider, self.status, self.image, self.text):
            w.close()
        for child in self.widget.children:
            child.close()  # the HBox of play, slider and status
        self.widget.close()

    def clear_cache(self) -> None:
        """Forget every cached row (the next steps fetch again)."""
        with self._lock:
            self._cache.clear()

    # -- observers ------------------------------------------------------------------------

    def _on_row(self, change: dict) -> None:
        if not self._quiet:
            self._show_safely(int(change["new"]))

    def _show_safely(self, row: int) -> None:
        """Show a row; an unexpected error is drawn in the widget, not lost in the kernel log."""
        try:
            self._show(row)
        except Exception as exc:
            self.stats["errors"] += 1
            self.last_source = "error"
            self._apply(_error_view(exc, self._stream, row, where="preview"))

    def _on_stream(self, change: dict) -> None:
        if self._quiet:
            return
        self._stream = int(change["new"])
        n = self.lengths[self._stream]
        self._quiet = True
        try:
            top = max(n - 1, 0)
            # ipywidgets clamps value into [min, max]; _quiet keeps that from drawing twice.
            for w in (self.slider, self.play):
                w.max = top
                w.disabled = n == 0
        finally:
            self._quiet = False
        self._show_safely(int(self.slider.value))

    def _on_playing(self, change: dict) -> None:
        if change["new"]:
            self._schedule_prefetch(self._stream, int(self.slider.value))

    # -- showing a row --------------------------------------------------------------------

    def _show(self, row: int) -> None:
        t0 = time.perf_counter()
        stream = self._stream
        n = self.lengths[stream]
        if n == 0:
            view = _text_view(f"{self.stream_names[stream]} is empty (0 rows)")
            self.last_source = "empty"
        else:
            view = self._view_for(stream, row)
        self._apply(view)
        self.last_latency_s = time.perf_counter() - t0
        if n:
            self.status.value = (
                f'<span style="font-size:12px;color:#666">row {row} / {n - 1} · '
                f"{self.last_source} {self.last_latency_s * 1000:.1f} ms</span>"
            )
        else:
            self.status.value = ""
        if n and self.play.playing:
            self._schedule_prefetch(stream, row)

    def _view_for(self, stream: int, row: int) -> _View:
        key = (stream, row)
        entry = self._cache_get(key)
        if entry is not None:
            self.stats["cache_hits"] += 1
            self.last_source = "cache"
        else:
            with self._lock:
                future = self._inflight.get(key)
            if future is not None:
                try:
                    entry = future.result()
                except Exception:
                    entry = None
                if entry is not None:
                    self.last_source = "prefetch"
            if entry is None:
                self.stats["fetch"] += 1
                try:
                    element = self._fetch(stream, row)
                except Exception as exc:
                    self.stats["errors"] += 1
                    self.last_source = "error"
                    return _error_view(exc, stream, row)
                entry = _Entry(element=element)
                self.last_source = "fetch"
                self._cache_put(key, entry)
        if entry.view is None:
            view = self._make_view(entry.element, stream, row, main_thread=True)
            if view.kind == "error":
                self.stats["errors"] += 1
                self.last_source = "error"
                return view
            entry.view, entry.element = view, None
        return entry.view

    def _make_view(self, element: Any, stream: int, row: int, main_thread: bool) -> _View:
        """The view of an element. Without ``render`` this is thread-safe (numpy + imageio)."""
        if self.render is not None:
            if not main_thread:
                raise RuntimeError("render runs on the main thread only")
            try:
                out = self.render(element)
            except Exception as exc:
                return _error_view(exc, stream, row, where="render")
            try:
                return self._view_of_rendered(out)
            except Exception as exc:
                return _error_view(exc, stream, row, where="drawing render's result")
        if self.is_frame:
            image = to_uint8_image(element)
            if image is not None:
                return _encode_image(image, self.image_format, self.jpeg_quality)
        return _text_view(element)

    def _view_of_rendered(self, out: Any) -> _View:
        fig = _figure_of(out)
        if fig is not None:
            return _figure_view(fig)
        if isinstance(out, str):
            return _text_view(out)
        image = to_uint8_image(out)
        if image is not None:
            return _encode_image(image, self.image_format, self.jpeg_quality)
        return _text_view(out)

    def _apply(self, view: _View) -> None:
        self._showing = view.kind
        if view.kind == "image":
            width = view.width
            self.image.format = view.fmt
            self.image.value = view.data
            shown = min(width, self.max_width) if self.max_width > 0 else width
            self.image.layout.width = f"{shown}px"
            self.image.layout.display = ""
            if self.image not in self.widget.children:
                box = self.widget.children
                self.widget.children = (*box[:-1], self.image, box[-1])
            self.text.layout.display = "none"
            self.text.value = ""
        else:
            self.text.value = view.data
            self.text.layout.display = ""
            self.image.layout.display = "none"

    # -- cache and prefetch ---------------------------------------------------------------

    def _cache_get(self, key: tuple[int, int]) -> _Entry | None:
        with self._lock:
            entry = self._cache.get(key)
            if entry is not None:
                self._cache.move_to_end(key)
            return entry

    def _cache_put(self, key: tuple[int, int], entry: _Entry) -> None:
        if not self.cache_size:
            return
        with self._lock:
            self._cache[key] = entry
            self._cache.move_to_end(key)
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)

    def _ahead(self, stream: int, row: int) -> list[int]:
        n = self.lengths[stream]
        rows = []
        for k in range(1, min(self.prefetch, n - 1) + 1):
            r = row + k
            if r >= n:
                if not self.play.repeat:
                    break
                r -= n
            rows.append(r)
        return rows

    def _schedule_prefetch(self, stream: int, row: int) -> None:
        if not self.prefetch or self._closed:
            return
        for r in self._ahead(stream, row):
            key = (stream, r)
            with self._lock:
                if key in self._cache or key in self._inflight:
                    continue
                if self._executor is None:
                    self._executor = ThreadPoolExecutor(
                        max_workers=1, thread_name_prefix="scanner-nb-preview"
                    )
                self._inflight[key] = self._executor.submit(self._prefetch_one, key)

    def _wanted(self, key: tuple[int, int]) -> bool:
        stream, r = key
        if self._closed or stream != self._stream:
            return False
        n = self.lengths[stream]
        ahead = (r - int(self.slider.value)) % n if n else 0
        return 0 < ahead <= 2 * self.prefetch

    def _prefetch_one(self, key: tuple[int, int]) -> _Entry | None:
        try:
            if not self._wanted(key):
                return None
            self.stats["prefetch"] += 1
            entry = _Entry(element=self._fetch(*key))
            if self.render is None:
                entry.view = self._make_view(entry.element, *key, main_thread=False)
                entry.element = None
            self._cache_put(key, entry)
            return entry
        except Exception:  # the main thread fetches again and shows the error
            return None
        finally:
            with self._lock:
                self._inflight.pop(key, None)
