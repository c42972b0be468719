"""An ipywidgets preview of a stream, one row at a time, built from a ``fetch(stream, row)``.

The widget, an ``ipywidgets.VBox``, is a stream ``Dropdown`` (hidden for one stream), a
``Play`` jslinked to an ``IntSlider`` (so playing moves the slider in the browser, and each new
value reaches Python once), an ``Image`` for frames and an ``HTML`` for text and errors; with
``compare``, one such image/text panel per collection, side by side, on the same controls. It
knows nothing about the engine: the engine passes a callable that computes exactly one row, and
this module decides which rows to ask for.

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
from typing import Any, NamedTuple

import ipywidgets as widgets
import numpy as np

from scanner_nb.notebook._image import join_images, to_uint8_image

__all__ = ["Preview", "Shown"]

MAX_TEXT = 4000  # characters of an element's repr drawn as text
MIN_WIDTH = 320  # narrower frames are shown scaled up by a whole factor
# small frames scaled up keep square pixels (the style rides along with the status line)
_PIXELATED = "<style>.scanner-nb-pixelated{image-rendering:pixelated}</style>"


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


class Shown(NamedTuple):
    """One more collection of streams to show beside the first in a comparing preview.

    ``fetch(stream, row)``, ``lengths`` and ``is_frame`` as for :class:`Preview`; ``title``
    names its panel.
    """

    fetch: Callable[[int, int], Any]
    lengths: Sequence[int]
    is_frame: bool
    title: str = ""


class _Panel:
    """One collection's side of a preview: its fetch, its cache of rows, its image and text.

    It draws what the :class:`Preview` (``owner``) asks for; the owner holds the controls,
    the settings, the counters and the one prefetch thread all panels share.
    """

    def __init__(self, owner: Preview, shown: Shown):
        self.owner = owner
        self.fetch = shown.fetch
        self.lengths = [int(n) for n in shown.lengths]
        if any(n < 0 for n in self.lengths):
            raise ValueError(f"stream lengths must be >= 0; got {self.lengths}")
        self.is_frame = bool(shown.is_frame)
        self.cache: OrderedDict[tuple[int, int], _Entry] = OrderedDict()
        self.inflight: dict[tuple[int, int], Future] = {}
        self.title = widgets.HTML(
            f'<b style="font-size:12px">{html.escape(shown.title)}</b>' if shown.title else "")
        self.image = widgets.Image(
            format=owner.image_format,
            layout=widgets.Layout(display="none", object_fit="contain", height="auto"),
        )
        self.image.add_class("scanner-nb-pixelated")
        self.text = widgets.HTML(value="", layout=widgets.Layout(display="none"))
        self.has_image = False  # an empty <img> never "loads": it joins the page when used
        self.showing = ""
        self.view: _View | None = None

    def parts(self) -> list:
        shown = [self.title] if self.title.value else []
        return shown + ([self.image] if self.has_image else []) + [self.text]

    def length(self, stream: int) -> int:
        return self.lengths[stream] if stream < len(self.lengths) else 0

    # -- one row --------------------------------------------------------------------------

    def view_for(self, stream: int, row: int) -> _View:
        owner = self.owner
        if stream >= len(self.lengths):
            return _text_view(f"no stream {stream} here ({len(self.lengths)} streams)")
        n = self.lengths[stream]
        if n == 0:
            return _text_view(f"{owner.stream_names[stream]} is empty (0 rows)")
        if row >= n:
            return _text_view(f"row {row} is past the end ({n} rows)")
        key = (stream, row)
        entry = self.cache_get(key)
        if entry is not None:
            owner.stats["cache_hits"] += 1
            owner.last_source = "cache"
        else:
            with owner._lock:
                future = self.inflight.get(key)
            if future is not None:
                try:
                    entry = future.result()
                except Exception:
                    entry = None
                if entry is not None:
                    owner.last_source = "prefetch"
            if entry is None:
                owner.stats["fetch"] += 1
                try:
                    element = self.fetch(stream, row)
                except Exception as exc:
                    owner.stats["errors"] += 1
                    owner.last_source = "error"
                    return _error_view(exc, stream, row)
                entry = _Entry(element=element)
                owner.last_source = "fetch"
                self.cache_put(key, entry)
        if entry.view is None:
            view = owner._make_view(entry.element, stream, row, main_thread=True, panel=self)
            if view.kind == "error":
                owner.stats["errors"] += 1
                owner.last_source = "error"
                return view
            entry.view, entry.element = view, None
        return entry.view

    def apply(self, view: _View) -> bool:
        """Draw ``view``; True when the panel's widgets changed (the image joined the page)."""
        self.showing, self.view = view.kind, view
        joined = False
        if view.kind == "image":
            self.image.format = view.fmt
            self.image.value = view.data
            self.image.layout.width = f"{self.owner._display_width(view.width)}px"
            self.image.layout.display = ""
            joined, self.has_image = not self.has_image, True
            self.text.layout.display = "none"
            self.text.value = ""
        else:
            self.text.value = view.data
            self.text.layout.display = ""
            self.image.layout.display = "none"
        return joined

    # -- cache and prefetch ---------------------------------------------------------------

    def cache_get(self, key: tuple[int, int]) -> _Entry | None:
        with self.owner._lock:
            entry = self.cache.get(key)
            if entry is not None:
                self.cache.move_to_end(key)
            return entry

    def cache_put(self, key: tuple[int, int], entry: _Entry) -> None:
        size = self.owner.cache_size
        if not size:
            return
        with self.owner._lock:
            self.cache[key] = entry
            self.cache.move_to_end(key)
            while len(self.cache) > size:
                self.cache.popitem(last=False)

    def prefetch_one(self, key: tuple[int, int]) -> _Entry | None:
        owner = self.owner
        try:
            if not owner._wanted(key):
                return None
            owner.stats["prefetch"] += 1
            entry = _Entry(element=self.fetch(*key))
            if owner.render is None:
                entry.view = owner._make_view(entry.element, *key, main_thread=False, panel=self)
                entry.element = None
            self.cache_put(key, entry)
            return entry
        except Exception:  # the main thread fetches again and shows the error
            return None
        finally:
            with owner._lock:
                self.inflight.pop(key, None)

    def close(self) -> None:
        self.cache.clear()
        for w in (self.title, self.image, self.text):
            w.close()


class Preview(widgets.VBox):
    """Browse a stream's rows in a notebook: stream selector, slider + Play, the row drawn.

    An ``ipywidgets.VBox``: display it, or put it in other layouts (``HBox([a, b])``). With
    ``compare``, several collections are shown side by side, on one slider and one Play; each
    row is computed once per collection.

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
    title : str
        A caption over the element (shown when comparing).
    compare : list of :class:`Shown`
        More collections to show beside this one, on the same slider and stream selector.
    cache_size : int
        Rows kept per collection (least recently used dropped); 0 disables cache and prefetch.
    prefetch : int
        Rows ahead fetched in the background while Play runs; 0 disables it.
    fps : float
        Play speed, rows per second.
    max_width : int
        Images wider than this are scaled down in the page (keeping their aspect).
    min_width : int
        Images narrower than this are scaled up in the page by a whole factor, with
        nearest-neighbour pixels (CSS ``image-rendering: pixelated``), so small frames stay
        visible; the image sent is the frame's own size.
    image_format : {"jpeg", "png"}
        Encoding of frames sent to the browser; RGBA is always PNG.
    jpeg_quality : int
        JPEG quality, 1 to 95.

    Attributes
    ----------
    widget : Preview
        The widget itself (kept for code written when the preview was not one).
    dropdown, play, slider, image, text, status : ipywidgets widgets
        The parts (``image`` and ``text`` of the first collection), for tests and layouts.
    panels : list
        One per collection shown, each with its own ``image``, ``text`` and ``showing``.
    stats : dict
        Counters over all collections: ``fetch`` (calls on the main thread), ``prefetch``
        (background calls), ``cache_hits``, ``errors``.
    last_source : str
        Where the shown row came from: ``"fetch"``, ``"cache"``, ``"prefetch"`` or ``"error"``.
    last_latency_s : float
        Seconds from the slider change to the widgets being updated, for the shown row.

    A saved notebook keeps, beside the widget, the shown frame as an image (every panel side
    by side; for text elements their text as HTML) and a line of text naming the stream and
    row, which GitHub, nbviewer and nbconvert show where no widget runs. It is the row shown
    when the cell ran: moving the slider later changes the widget, not the saved still. A box
    of previews (``HBox([a, b])``, ``VBox``, ``Tab``, ``interact``) keeps their frames laid out
    like it, in one image (see :mod:`scanner_nb.notebook.stills`).

    Examples
    --------
    >>> frames = np.zeros((10, 48, 64, 3), np.uint8)
    >>> p = Preview(lambda s, r: frames[r], [len(frames)], is_frame=True)
    >>> p.slider.max, p.image.format, p.stats["fetch"]
    (9, 'jpeg', 1)
    >>> p.slider.value = 3
    >>> p.row, p.stats["fetch"]
    (3, 2)
    >>> q = Preview(lambda s, r: frames[r], [10], is_frame=True,
    ...             compare=[Shown(lambda s, r: frames[r] // 2, [10], True, "darker")])
    >>> len(q.panels), q.stats["fetch"]
    (2, 2)
    >>> p.close(); q.close()
    """

    def __init__(
        self,
        fetch: Callable[[int, int], Any],
        lengths: Sequence[int],
        *,
        is_frame: bool,
        render: Callable[[Any], Any] | None = None,
        stream_names: Sequence[str] | None = None,
        title: str = "",
        compare: Sequence[Shown] = (),
        cache_size: int = 64,
        prefetch: int = 4,
        fps: float = 24.0,
        max_width: int = 960,
        min_width: int = MIN_WIDTH,
        image_format: str = "jpeg",
        jpeg_quality: int = 90,
    ):
        lengths = [int(n) for n in lengths]
        if not lengths:
            raise ValueError("Preview needs at least one stream; got lengths=[]")
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
        super().__init__()
        self.render = render
        self.stream_names = stream_names
        self.cache_size = max(int(cache_size), 0)
        self.prefetch = max(int(prefetch), 0) if self.cache_size else 0
        self.fps = float(fps)
        self.max_width = int(max_width)
        self.min_width = int(min_width)
        self.image_format = image_format
        self.jpeg_quality = int(jpeg_quality)

        self.stats = {"fetch": 0, "prefetch": 0, "cache_hits": 0, "errors": 0}
        self.last_source = ""
        self.last_latency_s = 0.0
        self._lock = threading.Lock()
        self._executor: ThreadPoolExecutor | None = None
        self._quiet = False
        self._stream = 0
        self._closed = False
        self._showing = ""
        self.panels = [_Panel(self, Shown(fetch, lengths, is_frame, title)),
                       *(_Panel(self, Shown(*s)) for s in compare)]

        top = max(self._length(0) - 1, 0)
        self.dropdown = widgets.Dropdown(
            options=[(name, i) for i, name in enumerate(stream_names)],
            value=0,
            description="stream",
            layout=widgets.Layout(
                width="max-content", min_width="240px", display="none" if len(lengths) == 1 else ""
            ),
        )
        self.play = widgets.Play(
            value=0, min=0, max=top, step=1,
            interval=max(1, int(round(1000.0 / self.fps))) if self.fps > 0 else 100,
            description="play", disabled=self._length(0) == 0,
        )
        self.slider = widgets.IntSlider(
            value=0, min=0, max=top, step=1, description="row", continuous_update=True,
            disabled=self._length(0) == 0, layout=widgets.Layout(width="min(600px, 60%)"),
        )
        self._link = widgets.jslink((self.play, "value"), (self.slider, "value"))
        self.status = widgets.HTML(value="", layout=widgets.Layout(margin="0 0 0 8px"))
        self._controls = widgets.HBox([self.play, self.slider, self.status])
        self._side_by_side = widgets.HBox(layout=widgets.Layout(flex_flow="row wrap"))
        self._relayout()
        self.slider.observe(self._on_row, names="value")
        self.dropdown.observe(self._on_stream, names="value")
        self.play.observe(self._on_playing, names="playing")
        self._show_safely(0)
        from scanner_nb.notebook.stills import register

        register()  # a user's HBox, VBox, Tab... of previews saves their frames too

    # -- what it is -----------------------------------------------------------------------

    @property
    def widget(self) -> Preview:
        """The widget itself (a ``Preview`` is an ``ipywidgets.VBox``)."""
        return self

    @property
    def image(self) -> widgets.Image:
        return self.panels[0].image

    @property
    def text(self) -> widgets.HTML:
        return self.panels[0].text

    @property
    def lengths(self) -> list[int]:
        return self.panels[0].lengths

    @property
    def is_frame(self) -> bool:
        return self.panels[0].is_frame

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
        """What the (first) panel shows now: ``"image"``, ``"text"`` or ``"error"``."""
        return self._showing

    @property
    def _cache(self) -> OrderedDict:
        return self.panels[0].cache

    @property
    def _inflight(self) -> dict:
        return {k: f for p in self.panels for k, f in p.inflight.items()}

    def __repr__(self) -> str:
        return (
            f"Preview(streams={len(self.lengths)}, lengths={self.lengths}, "
            f"stream={self._stream}, row={self.row}"
            + (f", panels={len(self.panels)})" if len(self.panels) > 1 else ")")
        )

    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        """The widget view, plus the shown frame as an image and a text line (for saved
        notebooks: GitHub, nbviewer and nbconvert show those where no widget runs)."""
        from scanner_nb.notebook.stills import bundle

        data = super()._repr_mimebundle_(**kwargs)
        if not isinstance(data, dict):
            return data
        try:
            return bundle(self, data)
        except Exception:  # a fallback never breaks the display of the widget
            return data

    def _caption(self) -> str:
        name = self.stream_names[self._stream]
        n = self._length(self._stream)
        where = f"{name}, row {self.row} of {n}"
        titles = [p.title.value for p in self.panels]
        if len(self.panels) > 1:
            titles = [html.unescape(t.replace('<b style="font-size:12px">', "").replace(
                "</b>", "")) or f"panel {i}" for i, t in enumerate(titles)]
            return f"Preview of {' | '.join(titles)}: {where}"
        return f"Preview: {where}"

    def _still(self) -> _View | None:
        """The shown frames as one image (side by side), or None when none shows one."""
        import imageio.v3 as iio

        views = [p.view for p in self.panels if p.view is not None and p.view.kind == "image"]
        if len(views) <= 1:
            return views[0] if views else None
        return self._encode(join_images([to_uint8_image(iio.imread(v.data)) for v in views]))

    def _encode(self, picture: np.ndarray) -> _View:
        """A still made of shown frames, encoded as this preview encodes frames."""
        return _encode_image(picture, self.image_format, self.jpeg_quality)

    def _shown_html(self) -> str:
        """The HTML of the panels that show text (or an error)."""
        return "".join(p.view.data for p in self.panels
                       if p.view is not None and isinstance(p.view.data, str))

    def close(self) -> None:
        """Stop the prefetch thread and close the widgets (their views disappear)."""
        self._closed = True
        executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=True, cancel_futures=True)
        self._link.close()
        for p in self.panels:
            p.close()
        for w in (self.dropdown, self.play, self.slider, self.status, self._controls,
                  *self._side_by_side.children, self._side_by_side):
            w.close()
        super().close()

    def clear_cache(self) -> None:
        """Forget every cached row (the next steps fetch again)."""
        with self._lock:
            for p in self.panels:
                p.cache.clear()

    # -- layout ---------------------------------------------------------------------------

    def _length(self, stream: int) -> int:
        return max(p.length(stream) for p in self.panels)

    def _display_width(self, width: int) -> int:
        """Width in the page: scaled down to ``max_width``, small frames up by a whole factor."""
        if 0 < width < self.min_width:
            width *= -(-self.min_width // width)
        return min(width, self.max_width) if self.max_width > 0 else width

    def _relayout(self) -> None:
        if len(self.panels) == 1:
            body = self.panels[0].parts()
        else:
            for box, p in zip(self._side_by_side.children, self.panels):
                box.children = p.parts()
            if not self._side_by_side.children:
                self._side_by_side.children = [
                    widgets.VBox(p.parts(), layout=widgets.Layout(margin="0 12px 4px 0"))
                    for p in self.panels]
            body = [self._side_by_side]
        self.children = [self.dropdown, self._controls, *body]

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
            view = _error_view(exc, self._stream, row, where="preview")
            for p in self.panels:
                p.apply(view)
            self._showing = "error"

    def _on_stream(self, change: dict) -> None:
        if self._quiet:
            return
        self._stream = int(change["new"])
        n = self._length(self._stream)
        self._quiet = True
        try:
            # ipywidgets clamps value into [min, max]; _quiet keeps that from drawing twice.
            for w in (self.slider, self.play):
                w.max = max(n - 1, 0)
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
        n = self._length(stream)
        if n == 0:
            self.last_source = "empty"
        joined = False
        for p in self.panels:
            joined |= p.apply(p.view_for(stream, row))
        self._showing = self.panels[0].showing
        if joined:
            self._relayout()
        self.last_latency_s = time.perf_counter() - t0
        self.status.value = _PIXELATED + (
            f'<span style="font-size:12px;color:#666">row {row} / {n - 1} · '
            f"{self.last_source} {self.last_latency_s * 1000:.1f} ms</span>" if n else "")
        if n and self.play.playing:
            self._schedule_prefetch(stream, row)

    def _make_view(self, element: Any, stream: int, row: int, main_thread: bool,
                   panel: _Panel | None = None) -> _View:
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
        if (panel or self.panels[0]).is_frame:
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

    # -- prefetch -------------------------------------------------------------------------

    def _ahead(self, stream: int, row: int) -> list[int]:
        n = self._length(stream)
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
            for p in self.panels:
                if r >= p.length(stream):
                    continue
                with self._lock:
                    if key in p.cache or key in p.inflight:
                        continue
                    if self._executor is None:
                        self._executor = ThreadPoolExecutor(
                            max_workers=1, thread_name_prefix="scanner-nb-preview"
                        )
                    p.inflight[key] = self._executor.submit(p.prefetch_one, key)

    def _wanted(self, key: tuple[int, int]) -> bool:
        stream, r = key
        if self._closed or stream != self._stream:
            return False
        n = self._length(stream)
        ahead = (r - int(self.slider.value)) % n if n else 0
        return 0 < ahead <= 2 * self.prefetch
