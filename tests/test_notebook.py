"""scanner_nb.notebook: plan HTML, the ipywidgets preview, plots and inline videos.

Real ipywidgets objects without a browser: tests move ``slider.value`` / ``dropdown.value``
the way the front end's messages would, and read ``image.value`` / ``text.value`` back.
"""

from __future__ import annotations

import base64
import io
import re
import subprocess
import sys
import time

import av
import imageio.v3 as iio
import matplotlib

matplotlib.use("Agg")  # before pyplot: these tests never open a window

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from scanner_nb.errors import KernelError  # noqa: E402
from scanner_nb.notebook.plot import plot_elements  # noqa: E402
from scanner_nb.notebook.preview import Preview, Shown  # noqa: E402
from scanner_nb.notebook.repr import plan_html, plan_text  # noqa: E402
from scanner_nb.notebook.video import VideoHTML, show_video_html  # noqa: E402

# -- fixtures ---------------------------------------------------------------------------------


def _frames(n: int, h: int = 48, w: int = 64, seed: int = 0) -> np.ndarray:
    """Smooth frames (JPEG keeps them close) that differ from row to row."""
    yy, xx = np.mgrid[0:h, 0:w]
    out = np.empty((n, h, w, 3), np.uint8)
    for i in range(n):
        out[i, ..., 0] = (xx * 3 + i * 7) % 256
        out[i, ..., 1] = (yy * 4 + i * 5) % 256
        out[i, ..., 2] = (i * 20) % 256
    return out


class CountingFetch:
    """fetch(stream, row) over arrays, counting calls; raises for rows in ``fail``."""

    def __init__(self, streams, fail=()):
        self.streams = streams
        self.fail = set(fail)
        self.calls: list[tuple[int, int]] = []

    def __call__(self, stream, row):
        self.calls.append((stream, row))
        if (stream, row) in self.fail:
            raise KernelError("Blur", stream, row, ZeroDivisionError("division by zero"))
        return self.streams[stream][row]

    def count(self, stream, row):
        return self.calls.count((stream, row))


@pytest.fixture
def previews():
    made = []

    def make(*args, **kwargs):
        p = Preview(*args, **kwargs)
        made.append(p)
        return p

    yield make
    for p in made:
        p.close()


@pytest.fixture(autouse=True)
def _no_open_figures():
    yield
    open_figs = plt.get_fignums()
    plt.close("all")
    assert not open_figs, f"figures left open: {open_figs}"


def _decode(value: bytes) -> np.ndarray:
    return iio.imread(value)


# -- preview: rows, fetch counts, images ----------------------------------------------------


def test_preview_starts_at_row_zero_with_slider_range(previews):
    frames = _frames(12)
    fetch = CountingFetch([frames])
    p = previews(fetch, [12], is_frame=True)
    assert (p.slider.min, p.slider.max, p.slider.value) == (0, 11, 0)
    assert (p.play.min, p.play.max) == (0, 11)
    assert fetch.calls == [(0, 0)]
    assert p.showing == "image"
    assert p.image.layout.display != "none" and p.text.layout.display == "none"
    assert p.image in p.widget.children
    assert p.dropdown.layout.display == "none"  # one stream: no selector
    bundle = p._repr_mimebundle_()
    assert "application/vnd.jupyter.widget-view+json" in bundle


def test_slider_and_play_are_jslinked(previews):
    p = previews(CountingFetch([_frames(3)]), [3], is_frame=True)
    link = p._link
    assert link.source == (p.play, "value") and link.target == (p.slider, "value")


def test_moving_slider_fetches_that_row_once_and_shows_it_png(previews):
    frames = np.random.default_rng(1).integers(0, 256, (10, 30, 41, 3), dtype=np.uint8)
    fetch = CountingFetch([frames])
    p = previews(fetch, [10], is_frame=True, image_format="png")
    p.slider.value = 7
    assert fetch.count(0, 7) == 1 and len(fetch.calls) == 2
    assert p.image.format == "png"
    np.testing.assert_array_equal(_decode(p.image.value), frames[7])
    assert p.last_source == "fetch"


def test_moving_slider_shows_jpeg_within_tolerance(previews):
    frames = _frames(10)
    fetch = CountingFetch([frames])
    p = previews(fetch, [10], is_frame=True)
    p.slider.value = 4
    assert fetch.count(0, 4) == 1
    assert p.image.format == "jpeg" and p.image.value[:2] == b"\xff\xd8"
    shown = _decode(p.image.value).astype(int)
    assert shown.shape == frames[4].shape
    assert np.abs(shown - frames[4]).mean() < 4.0
    # and it is not the neighbouring frame
    assert np.abs(shown - frames[5]).mean() > 4.0


def test_going_back_is_a_cache_hit(previews):
    frames = _frames(10)
    fetch = CountingFetch([frames])
    p = previews(fetch, [10], is_frame=True, image_format="png")
    p.slider.value = 3
    p.slider.value = 4
    n_calls = len(fetch.calls)
    p.slider.value = 3
    assert len(fetch.calls) == n_calls
    assert p.last_source == "cache" and p.stats["cache_hits"] == 1
    np.testing.assert_array_equal(_decode(p.image.value), frames[3])


def test_cache_is_bounded_lru(previews):
    fetch = CountingFetch([_frames(10)])
    p = previews(fetch, [10], is_frame=True, cache_size=3)
    for r in (1, 2, 3, 4):  # rows 0..4 seen, only 2, 3, 4 kept
        p.slider.value = r
    assert len(p._cache) == 3
    p.slider.value = 0
    assert fetch.count(0, 0) == 2
    p.slider.value = 4
    assert fetch.count(0, 4) == 1


def test_stream_selector_switches_stream_and_range(previews):
    a, b = _frames(10), _frames(4, seed=1)[:, ::-1]
    fetch = CountingFetch([a, b])
    p = previews(fetch, [10, 4], is_frame=True, stream_names=["left", "right"],
                 image_format="png")
    assert p.dropdown.layout.display != "none"
    assert [label for label, _ in p.dropdown.options] == ["left", "right"]
    p.slider.value = 8
    p.dropdown.value = 1
    # row 8 does not exist in a 4-row stream: clamped to its last row, fetched once
    assert (p.slider.max, p.play.max, p.slider.value) == (3, 3, 3)
    assert fetch.calls[-1] == (1, 3) and fetch.count(1, 3) == 1
    np.testing.assert_array_equal(_decode(p.image.value), b[3])
    p.dropdown.value = 0
    assert p.slider.max == 9
    np.testing.assert_array_equal(_decode(p.image.value), a[3])


def test_error_is_shown_in_the_widget_and_widget_keeps_working(previews):
    frames = _frames(10)
    fetch = CountingFetch([frames], fail={(0, 5)})
    p = previews(fetch, [10], is_frame=True, image_format="png")
    p.slider.value = 5
    assert p.showing == "error" and p.text.layout.display != "none"
    assert p.image.layout.display == "none"
    msg = p.text.value
    assert "KernelError" in msg and "in op <b>&#x27;Blur&#x27;</b>" in msg
    assert "stream 0" in msg and "row 5" in msg and "division by zero" in msg
    p.slider.value = 6
    assert p.showing == "image"
    np.testing.assert_array_equal(_decode(p.image.value), frames[6])
    p.slider.value = 5  # errors are not cached: fetched again
    assert fetch.count(0, 5) == 2 and p.showing == "error"


def test_plain_exception_names_stream_and_row(previews):
    def fetch(stream, row):
        if row == 2:
            raise ValueError("bad <row>")
        return row

    p = previews(fetch, [4], is_frame=False)
    p.slider.value = 2
    assert "ValueError" in p.text.value and "row 2" in p.text.value
    assert "bad &lt;row&gt;" in p.text.value


def test_non_frame_elements_show_as_text(previews):
    elements = [{"boxes": [[1, 2, 3, 4]], "label": "<cat>"}, "x" * 10_000]
    p = previews(lambda s, r: elements[r], [2], is_frame=False)
    assert p.showing == "text"
    assert p.image not in p.widget.children  # no empty <img> in the page
    assert "&lt;cat&gt;" in p.text.value and "boxes" in p.text.value
    p.slider.value = 1
    assert "more characters" in p.text.value and len(p.text.value) < 6000


def test_frame_that_is_not_an_image_shows_as_text(previews):
    p = previews(lambda s, r: None, [1], is_frame=True)
    assert p.showing == "text" and "None" in p.text.value


def test_gray_and_float_frames(previews):
    gray = np.random.default_rng(2).integers(0, 256, (3, 20, 30, 1), dtype=np.uint8)
    p = previews(lambda s, r: gray[r], [3], is_frame=True, image_format="png")
    np.testing.assert_array_equal(_decode(p.image.value), gray[0, ..., 0])
    ramp = np.linspace(0, 1, 20 * 30, dtype=np.float32).reshape(20, 30)
    q = previews(lambda s, r: ramp, [1], is_frame=True, image_format="png")
    assert _decode(q.image.value).max() == 255


def test_render_array_figure_and_string(previews):
    data = [np.arange(5.0) * (i + 1) for i in range(3)]

    def render(element):
        kind = int(element[1])
        if kind == 1:
            return np.full((10, 20, 3), 200, np.uint8)
        if kind == 2:
            fig, ax = plt.subplots(figsize=(2, 1.5), dpi=50)
            ax.plot(element)
            return fig
        return f"<total {element.sum()}>"

    p = previews(lambda s, r: data[r], [3], is_frame=False, render=render, image_format="png")
    assert p.showing == "image"
    np.testing.assert_array_equal(_decode(p.image.value), np.full((10, 20, 3), 200, np.uint8))
    p.slider.value = 1
    assert p.showing == "image" and p.image.format == "png"
    assert _decode(p.image.value).shape[:2] == (75, 100)  # the figure's own size
    assert plt.get_fignums() == []  # the figure was closed
    p.slider.value = 2
    assert p.showing == "text" and "&lt;total 30.0&gt;" in p.text.value


def test_render_error_is_shown(previews):
    def render(element):
        raise RuntimeError("cannot draw")

    p = previews(lambda s, r: r, [2], is_frame=False, render=render)
    assert p.showing == "error" and "cannot draw" in p.text.value
    assert "render" in p.text.value


def test_render_pil_image(previews):
    from PIL import Image

    pil = Image.fromarray(np.full((6, 9, 3), 77, np.uint8))
    p = previews(lambda s, r: r, [1], is_frame=False, render=lambda e: pil, image_format="png")
    assert p.showing == "image"
    np.testing.assert_array_equal(_decode(p.image.value), np.asarray(pil))


def test_unexpected_error_is_shown_not_lost(previews, monkeypatch):
    p = previews(lambda s, r: _frames(1)[0], [3], is_frame=True)

    def broken(*args, **kwargs):
        raise MemoryError("out of memory while encoding")

    monkeypatch.setattr(p, "_make_view", broken)
    p.slider.value = 1
    assert p.showing == "error" and "MemoryError" in p.text.value and "row 1" in p.text.value


def test_wide_frames_are_scaled_down_small_ones_up_pixelated(previews):
    wide = np.zeros((1, 10, 1200, 3), np.uint8)
    p = previews(lambda s, r: wide[r], [1], is_frame=True, max_width=960)
    assert p.image.layout.width == "960px"
    small = np.zeros((1, 10, 50, 3), np.uint8)
    q = previews(lambda s, r: small[r], [1], is_frame=True)
    assert q.image.layout.width == "350px"  # 7 x 50: a whole factor up to min_width=320
    assert _decode(q.image.value).shape[:2] == (10, 50)  # the frame sent is its own size
    assert "scanner-nb-pixelated" in q.image._dom_classes
    assert "image-rendering:pixelated" in q.status.value
    assert q.image.layout.object_fit == "contain" and q.image.layout.height == "auto"
    r = previews(lambda s, r: small[r], [1], is_frame=True, min_width=0)
    assert r.image.layout.width == "50px"


def test_preview_is_a_widget_that_fits_in_layouts(previews):
    import ipywidgets as widgets

    a = previews(CountingFetch([_frames(5)]), [5], is_frame=True)
    b = previews(CountingFetch([_frames(5, seed=1)]), [5], is_frame=True)
    assert isinstance(a, widgets.VBox) and a.widget is a
    box = widgets.HBox([a, b])
    assert box.children == (a, b)
    assert list(a.children) == [a.dropdown, a._controls, a.image, a.text]
    box.close()


def test_compare_shows_each_collection_on_one_slider(previews):
    left, right = _frames(8), 255 - _frames(8)
    f_left, f_right = CountingFetch([left]), CountingFetch([right[:5]])
    p = previews(f_left, [8], is_frame=True, image_format="png", title="original",
                 compare=[Shown(f_right, [5], True, "inverted")])
    assert len(p.panels) == 2 and p.slider.max == 7
    assert f_left.calls == [(0, 0)] and f_right.calls == [(0, 0)]
    p.slider.value = 3
    assert f_left.count(0, 3) == 1 and f_right.count(0, 3) == 1
    np.testing.assert_array_equal(_decode(p.panels[0].image.value), left[3])
    np.testing.assert_array_equal(_decode(p.panels[1].image.value), right[3])
    p.slider.value = 6  # past the shorter collection's end: said so, not fetched
    assert p.panels[1].showing == "text" and "past the end" in p.panels[1].text.value
    assert f_right.count(0, 6) == 0
    p.slider.value = 3  # both cached
    assert f_left.count(0, 3) == 1 and f_right.count(0, 3) == 1
    side = p.children[-1]
    assert [list(box.children)[:2] for box in side.children] == [
        [p.panels[0].title, p.panels[0].image], [p.panels[1].title, p.panels[1].image]]
    bundle = p._repr_mimebundle_()
    assert bundle["text/plain"] == "Preview of original | inverted: stream 0, row 3 of 8"
    still = _decode(base64.b64decode(bundle["image/png"]))  # encoded as the preview's frames
    assert still.shape == (48, 64 + 8 + 64, 3)  # both frames side by side, exact
    np.testing.assert_array_equal(still[:, :64], left[3])
    np.testing.assert_array_equal(still[:, 72:], right[3])


def test_saved_preview_carries_its_frame_and_a_caption(previews):
    frames = _frames(6)
    p = previews(CountingFetch([frames, frames]), [6, 6], is_frame=True, image_format="png",
                 stream_names=["cam0", "cam1"])
    p.dropdown.value = 1
    p.slider.value = 4
    bundle = p._repr_mimebundle_()
    assert "application/vnd.jupyter.widget-view+json" in bundle
    assert bundle["text/plain"] == "Preview: cam1, row 4 of 6"
    np.testing.assert_array_equal(_decode(base64.b64decode(bundle["image/png"])), frames[4])
    text = previews(lambda s, r: {"row": r, "label": "<cat>"}, [3],
                    is_frame=False)._repr_mimebundle_()
    assert "image/png" not in text and "image/jpeg" not in text
    assert text["text/plain"] == "Preview: stream 0, row 0 of 3"
    assert "Preview: stream 0, row 0 of 3" in text["text/html"]
    assert "{'row': 0, 'label': '&lt;cat&gt;'}</pre>" in text["text/html"]  # the element


def _still_of(data: dict) -> np.ndarray:
    (mime,) = [m for m in data if m.startswith("image/")]
    return _decode(base64.b64decode(data[mime]))


def _formatter():
    """IPython's display formatter with scanner_nb's box still registered (no global shell)."""
    from types import SimpleNamespace

    from IPython.core.formatters import DisplayFormatter

    from scanner_nb.notebook.stills import register

    shell = SimpleNamespace(display_formatter=DisplayFormatter())
    assert register(shell) and register(shell)  # a second call changes nothing
    return lambda obj: shell.display_formatter.format(obj)[0]


def test_a_box_of_previews_saves_each_frame_laid_out_like_the_box(previews):
    """``HBox([a.preview(), b.preview()])``, displayed, carries both frames side by side (a
    ``VBox`` or ``Tab`` one under the other, nested boxes nested) and every caption."""
    import ipywidgets as widgets

    red = np.zeros((48, 64, 3), np.uint8)
    red[..., 0] = 220
    blue = np.zeros((30, 40, 3), np.uint8)
    blue[..., 2] = 220
    a = previews(lambda s, r: red, [5], is_frame=True, stream_names=["red"])
    b = previews(lambda s, r: blue, [7], is_frame=True, stream_names=["blue"])
    b.slider.value = 2
    show = _formatter()

    data = show(widgets.HBox([a, b]))
    assert "application/vnd.jupyter.widget-view+json" in data  # still the live widget
    assert data["text/plain"].splitlines() == [
        "HBox of 2 previews", "Preview: red, row 0 of 5", "Preview: blue, row 2 of 7"]
    still = _still_of(data)
    assert still.shape == (48, 64 + 8 + 40, 3)
    np.testing.assert_allclose(still[:, :64].mean(axis=(0, 1)), [220, 0, 0], atol=3)
    np.testing.assert_allclose(still[:30, 72:].mean(axis=(0, 1)), [0, 0, 220], atol=3)
    assert still[34:, 72:].min() > 240 and still[:, 66:70].min() > 240  # white padding, gap

    assert _still_of(show(widgets.VBox([a, b]))).shape == (48 + 8 + 30, 64, 3)
    assert _still_of(show(widgets.Tab([a, b]))).shape == (48 + 8 + 30, 64, 3)
    column = widgets.HBox([a, b], layout=widgets.Layout(flex_flow="column"))
    assert _still_of(show(column)).shape == (48 + 8 + 30, 64, 3)
    nested = widgets.VBox([widgets.HTML("<b>before / after</b>"), widgets.HBox([a, b]), a])
    data = show(nested)
    assert _still_of(data).shape == (48 + 8 + 48, 64 + 8 + 40, 3)  # a shown twice: drawn twice
    assert data["text/plain"].splitlines()[0] == "VBox of 3 previews"
    assert show(a)["text/plain"] == "Preview: red, row 0 of 5"  # a preview alone: as before


def test_a_box_without_previews_displays_as_ipywidgets_makes_it(previews):
    import ipywidgets as widgets

    show = _formatter()
    box = widgets.HBox([widgets.IntSlider(3), widgets.Label("no preview")])
    assert show(box) == box._repr_mimebundle_()
    box.close()


def test_a_box_formatter_registered_before_is_called_first(previews):
    """Another library's formatter for boxes keeps working; its own fallback is left alone."""
    from types import SimpleNamespace

    import ipywidgets as widgets
    from IPython.core.formatters import DisplayFormatter

    from scanner_nb.notebook.stills import register

    frames = _frames(2)
    box = widgets.HBox([previews(lambda s, r: frames[r], [2], is_frame=True)])
    shell = SimpleNamespace(display_formatter=DisplayFormatter())
    formatters = shell.display_formatter.mimebundle_formatter
    formatters.for_type(widgets.Box,
                        lambda b: {**b._repr_mimebundle_(), "text/markdown": "**box**"})
    register(shell)
    assert shell.display_formatter.format(box)[0]["text/markdown"] == "**box**"
    assert not any(m.startswith("image/") for m in shell.display_formatter.format(box)[0])
    formatters.pop(widgets.Box)
    formatters.for_type(widgets.Box, lambda b: b._repr_mimebundle_())
    register(shell)
    assert "image/jpeg" in shell.display_formatter.format(box)[0]


def test_a_box_of_text_previews_saves_their_text(previews):
    import ipywidgets as widgets

    a = previews(lambda s, r: {"row": r}, [3], is_frame=False)
    b = previews(lambda s, r: 1 / 0, [3], is_frame=False)
    data = _formatter()(widgets.HBox([a, b]))
    assert not any(m.startswith("image/") for m in data)
    assert "{'row': 0}</pre>" in data["text/html"] and "ZeroDivisionError" in data["text/html"]
    assert data["text/html"].count("Preview: stream 0, row 0 of 3") == 2


def test_interact_returning_a_preview_saves_its_frame(previews):
    """``interact`` shows the function's preview in its output; the saved still has it."""
    import ipywidgets as widgets

    made = []

    def blurred(k=3):
        made.append(previews(lambda s, r: _frames(2)[r] // k, [2], is_frame=True))
        return made[-1]

    box = widgets.interactive(blurred, {"auto_display": True}, k=(1, 9, 2))  # as interact()
    data = _formatter()(box)
    assert data["text/plain"] == "interactive of 1 preview\nPreview: stream 0, row 0 of 2"
    np.testing.assert_allclose(_still_of(data), _frames(2)[0] // 3, atol=8)
    quiet = widgets.interactive(blurred, k=(1, 9, 2))  # its result is not shown: nor saved
    assert "image/jpeg" not in _formatter()(quiet)
    box.close()
    quiet.close()


def test_notebook_module_examples():
    import doctest

    from scanner_nb.notebook import _image, preview, stills

    for module in (_image, preview, stills):
        assert doctest.testmod(module).failed == 0, module.__name__


def test_empty_stream(previews):
    p = previews(CountingFetch([_frames(3), []]), [3, 0], is_frame=True)
    p.dropdown.value = 1
    assert p.slider.disabled and p.showing == "text" and "empty" in p.text.value


def test_prefetch_while_playing_serves_next_rows_from_cache(previews):
    frames = _frames(20)
    fetch = CountingFetch([frames])
    p = previews(fetch, [20], is_frame=True, prefetch=3)
    p.slider.value = 2
    assert fetch.calls == [(0, 0), (0, 2)]  # not playing: no prefetch
    p.play.playing = True
    deadline = time.monotonic() + 10
    while p._inflight and time.monotonic() < deadline:
        time.sleep(0.01)
    assert {(0, 3), (0, 4), (0, 5)} <= set(fetch.calls)
    main_fetches = p.stats["fetch"]
    p.slider.value = 3
    assert p.stats["fetch"] == main_fetches and p.last_source in ("cache", "prefetch")
    assert fetch.count(0, 3) == 1
    p.play.playing = False


# -- plan HTML and text -----------------------------------------------------------------------

SUMMARY = {
    "streams": [{"index": 0, "length": 120, "source": "movie.mp4"},
                {"index": 1, "length": 60, "source": "<b>x</b>.mp4"}],
    "type": "FrameType",
    "nodes": [
        {"id": 0, "kind": "source", "label": "NamedVideoStream 'movie'",
         "props": {"frames": 120, "size": "160x96"}, "inputs": []},
        {"id": 1, "kind": "op", "label": "Blur",
         "props": {"kernel_size": 5, "device": "CPU", "stencil": None, "batch": 1},
         "inputs": [0]},
        {"id": 2, "kind": "sample", "label": "Stride", "props": {"args": "[2]"}, "inputs": [1]},
    ],
    "partitions": [4, 4],
}


def test_plan_html_draws_ops_streams_and_type():
    h = plan_html(SUMMARY)
    for text in ("FrameType", "Blur", "kernel_size", "Stride", "120", "60", "movie.mp4"):
        assert text in h
    assert "<b>x</b>" not in h and "&lt;b&gt;x&lt;/b&gt;" in h
    assert "NamedVideoStream &#x27;movie&#x27;" in h
    assert ">partitions<" in h
    no_parts = {k: v for k, v in SUMMARY.items() if k != "partitions"}
    assert ">partitions<" not in plan_html(no_parts) and "movie.mp4" in plan_html(no_parts)


def test_plan_shows_op_arguments_shortened():
    import scanner_nb as sp
    import scanner_nb.imgproc  # noqa: F401

    sc = sp.Client(show_progress=False)
    frames = sc.io.Input([sp.MemoryStream([np.zeros((8, 8, 3), np.uint8)] * 2, type=sp.FrameType)
                          for _ in range(6)])
    small = sc.ops.Resize(frame=frames, width=[16] * 6, height=[12] * 6)
    page = small._repr_html_()
    assert "width=</span>[16, 16, 16, … 3 more]" in page
    assert "height=</span>[12, 12, 12, … 3 more]" in page


def test_plan_text():
    t = plan_text(SUMMARY)
    assert t.splitlines()[0] == "Stream: 2 output streams of FrameType, 3 nodes"
    assert "Blur  kernel_size=5 device=CPU stencil=None batch=1  <- 0" in t
    assert "[1] length 60, 4 partitions, source <b>x</b>.mp4" in t


def test_plan_html_truncates_huge_lists():
    nodes = [{"id": i, "kind": "op", "label": f"op{i}",
              "props": {f"p{k}": "v" * 500 for k in range(30)}, "inputs": list(range(i))}
             for i in range(1000)]
    streams = [{"index": i, "length": i} for i in range(500)]
    h = plan_html({"nodes": nodes, "streams": streams, "type": "int"})
    assert "… 960 more" in h and "… 484 more" in h
    assert "op999" in h and "op500" not in h
    assert "v" * 100 not in h and len(h) < 200_000
    t = plan_text({"nodes": nodes, "streams": streams})
    assert "… 960 more" in t and len(t) < 100_000


class _BadRepr:
    def __repr__(self):
        raise RuntimeError("no repr")


@pytest.mark.parametrize("summary", [
    None, {}, [], "text", 5,
    {"nodes": None, "streams": "abc"},
    {"nodes": [None, 3, {"props": [1, 2], "inputs": 7}], "streams": [None, {"length": "x"}]},
    {"nodes": [{"id": _BadRepr(), "label": _BadRepr(), "props": {"a": _BadRepr()}}],
     "type": _BadRepr(), "partitions": 3},
])
def test_plan_never_raises_on_odd_input(summary):
    assert plan_html(summary).startswith("<div")
    assert isinstance(plan_text(summary), str)


# -- plot -------------------------------------------------------------------------------------


def test_plot_scalars_with_gaps():
    ax = plot_elements([[1.0, None, 3.0, 4], [5, 6, None, None]], labels=["a", "b"])
    lines = ax.get_lines()
    assert [line.get_label() for line in lines] == ["a", "b"]
    x, y = lines[0].get_data()
    np.testing.assert_array_equal(x, [0, 1, 2, 3])
    np.testing.assert_array_equal(y, [1.0, np.nan, 3.0, 4.0])
    np.testing.assert_array_equal(lines[1].get_ydata(), [5.0, 6.0, np.nan, np.nan])
    plt.close(ax.figure)


def test_plot_vectors_one_line_per_component():
    vec = [np.array([1.0, 2.0]), None, np.array([3.0, 4.0])]
    ax = plot_elements([vec, [np.float32(7), 8, 9]])
    labels = [line.get_label() for line in ax.get_lines()]
    assert labels == ["stream 0[0]", "stream 0[1]", "stream 1"]
    np.testing.assert_array_equal(ax.get_lines()[1].get_ydata(), [2.0, np.nan, 4.0])
    plt.close(ax.figure)


def test_plot_sparse_streams_are_visible_and_distinguishable():
    sparse = [float(i) if i % 3 == 0 else None for i in range(300)]  # RepeatNull(Stride(3))
    dense = [float(i) for i in range(300)]
    ax = plot_elements([sparse, dense], labels=["cam0", "cam1"], ylabel="motion")
    lines = ax.get_lines()
    assert [line.get_label() for line in lines[:1]] == ["cam0"]
    markers = [line for line in lines if line.get_linestyle() == "None"]
    assert len(markers) == 1 and len(markers[0].get_xdata()) == 100  # each lone point marked
    assert markers[0].get_color() == lines[0].get_color()
    cam0, cam1 = lines[0], [line for line in lines if line.get_label() == "cam1"][0]
    assert cam0.get_linestyle() != cam1.get_linestyle() and cam0.get_alpha() < 1
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("row", "motion")
    legend = ax.get_legend()
    assert [t.get_text() for t in legend.get_texts()] == ["cam0", "cam1"]
    ax.figure.canvas.draw()
    axes_box = ax.get_window_extent()
    assert legend.get_window_extent().x0 >= axes_box.x1  # beside the data, not over it
    plt.close(ax.figure)


def test_plot_on_given_axes():
    fig, ax = plt.subplots()
    assert plot_elements([[1, 2]], ax=ax) is ax
    plt.close(fig)


# -- show_video_html --------------------------------------------------------------------------


def _mp4_from_html(h: str) -> bytes:
    m = re.search(r'<source src="data:video/mp4;base64,([A-Za-z0-9+/=]+)" type="video/mp4">', h)
    assert m, "no base64 mp4 <source> in the HTML"
    return base64.b64decode(m.group(1))


def _decode_mp4(data: bytes) -> list[np.ndarray]:
    with av.open(io.BytesIO(data)) as c:
        return [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]


def test_show_video_html_plays_every_frame():
    frames = _frames(24, h=48, w=64)
    v = show_video_html(frames, fps=12)
    assert isinstance(v, VideoHTML) and v._repr_html_() == v.html
    h = v.html
    assert "<video controls autoplay loop muted playsinline" in h
    # 64x48 is shown 8x larger, pixelated, so the controls cover little of the picture
    assert 'width="512"' in h and 'height="384"' in h and "image-rendering:pixelated" in h
    data = _mp4_from_html(h)
    assert len(data) == v.nbytes == len(v.data)
    decoded = _decode_mp4(data)
    assert len(decoded) == 24 == v.frames and decoded[0].shape == (48, 64, 3)
    assert np.abs(decoded[10].astype(int) - frames[10]).mean() < 6
    assert v.note == "" and "scanner-nb-video-note" not in h


def test_show_video_html_gray_odd_size():
    gray = [np.full((33, 45, 1), 10 * i, np.uint8) for i in range(8)]
    v = show_video_html(iter(gray), fps=8)
    decoded = _decode_mp4(_mp4_from_html(v.html))
    assert len(decoded) == 8 and decoded[0].shape[:2] == (34, 46)  # padded to even
    assert 'width="495"' in v.html and 'height="363"' in v.html  # 11 x 45, 11 x 33


def _noise(n, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (64, 96, 3), dtype=np.uint8) for _ in range(n)]


@pytest.mark.parametrize("max_bytes", [40_000, 120_000])
def test_size_guard_cuts_and_says_so(max_bytes):
    frames = _noise(60)  # incompressible: ~4 kB a frame; 40 kB cuts the probe, 120 kB estimates
    pulled = []

    def gen():
        for i, f in enumerate(frames):
            pulled.append(i)
            yield f

    v = show_video_html(gen(), fps=10, max_bytes=max_bytes, total=60)
    assert 0 < v.frames < 60 and v.nbytes <= max_bytes
    assert v.note.startswith(f"showing first {v.frames} of 60 frames")
    assert "too long to embed" in v.note and "save_mp4" in v.note
    assert v.note in v.html
    assert len(_decode_mp4(_mp4_from_html(v.html))) == v.frames
    assert len(pulled) < 60  # frames after the cut were never computed


def test_size_guard_on_a_list_uses_its_length():
    v = show_video_html(_noise(30), fps=10, max_bytes=60_000)
    assert re.match(r"showing first \d+ of 30 frames", v.note)


def test_first_frame_over_max_bytes():
    v = show_video_html(_noise(5), fps=10, max_bytes=2_000)
    assert v.frames == 0 and "<video" not in v.html and "over max_bytes" in v.note


def test_max_frames():
    v = show_video_html(_frames(20), fps=10, max_frames=5)
    assert v.frames == 5 and v.note.startswith("showing first 5 of 20 frames (max_frames=5)")
    assert len(_decode_mp4(_mp4_from_html(v.html))) == 5
    w = show_video_html(_frames(5), fps=10, max_frames=5)
    assert w.frames == 5 and w.note == ""


def test_no_frames():
    v = show_video_html([], fps=10)
    assert v.frames == 0 and v.note == "no frames to show" and "<video" not in v.html


# -- package ----------------------------------------------------------------------------------


def test_importing_the_package_imports_nothing_heavy():
    code = (
        "import sys, scanner_nb.notebook as nb\n"
        "heavy = {'ipywidgets', 'matplotlib', 'av', 'imageio'} & set(sys.modules)\n"
        "assert not heavy, heavy\n"
        "assert callable(nb.plan_html) and 'ipywidgets' not in sys.modules\n"
        "assert callable(nb.show_video_html) and callable(nb.plot_elements)\n"
        "assert nb.Preview.__name__ == 'Preview'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# ---------------------------------------------------------------- through the engine

def test_stream_preview_computes_exactly_the_row_shown(tmp_path):
    """A slider step runs the kernel once, on that row; a stencil decodes only its window."""
    from typing import Any

    import scanner_nb as sp
    from scanner_nb import video
    from scanner_nb.samples import frame_index, make_video

    calls = []

    @sp.register_python_op(name="preview_counted")
    def counted(config, frame: sp.FrameType) -> sp.FrameType:
        calls.append(frame_index(frame))
        return frame

    path = make_video(str(tmp_path / "p.mp4"), n_frames=60, gop=12)
    sc = sp.Client(db_path=str(tmp_path / "db"), show_progress=False)
    frames = sc.io.Input([sp.NamedVideoStream(sc, "p", path=path)])
    preview = sc.ops.preview_counted(frame=frames).preview()
    assert preview.slider.max == 59 and calls == [0]
    video.reset_decode_stats()
    preview.slider.value = 30
    assert calls == [0, 30]
    assert sum(video.decode_stats().values()) <= 7  # seek to keyframe 24, decode 24..30
    decoded = iio.imread(preview.image.value)
    assert frame_index(decoded) == 30
    preview.slider.value = 0  # cached: no kernel call
    assert calls == [0, 30]

    @sp.register_python_op(name="preview_broken")
    def broken(config, x: Any) -> Any:
        if x == 3:
            raise RuntimeError("bad row")
        return x

    numbers = sc.ops.preview_broken(x=sc.io.Input([sp.MemoryStream(list(range(5)))])).preview()
    numbers.slider.value = 3
    assert numbers.showing == "error" and "preview_broken" in numbers.text.value
    numbers.slider.value = 4
    assert numbers.showing == "text" and "4" in numbers.text.value


def test_sp_preview_puts_streams_side_by_side(local_client):
    """``sp.preview(a, b)`` is one slider over both collections, each row computed once each."""
    import ipywidgets as widgets

    import scanner_nb as sp

    a = local_client.io.Input([sp.MemoryStream(np.zeros((4, 8, 8, 3), np.uint8))])
    b = local_client.io.Input([sp.MemoryStream(np.full((4, 8, 8, 3), 200, np.uint8))])
    p = sp.preview(a, b)
    assert isinstance(p, widgets.VBox) and len(p.panels) == 2 and p.slider.max == 3
    p.slider.value = 2
    assert iio.imread(p.panels[1].image.value).mean() > 150
    assert iio.imread(p.panels[0].image.value).mean() < 50
    with pytest.raises(sp.ScannerTypeError):
        sp.preview(a, [1, 2])
    p.close()
