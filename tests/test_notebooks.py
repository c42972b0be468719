"""Every tutorial in ``notebooks/`` runs top to bottom in a real Jupyter kernel.

Each notebook is executed with nbclient on the ``python3`` kernel of this interpreter (the
kernelspec jupyter_client finds first is the venv's, whose ``argv[0]`` is ``python``, which
jupyter_client replaces with ``sys.executable``; ``test_kernel_is_this_python`` checks it). The
kernel starts in a temporary folder with ``TMPDIR`` pointing there, so the videos and databases
the notebooks make in ``tempfile.mkdtemp()`` never land in the repository or stay behind.

Checks: no ``error`` output in any cell, every code cell executed, and a few outputs per notebook
that show the tutorial did what its text says (01 renders a preview widget and a ``<video>``).
Every widget output of scanner_nb carries a still fallback in the saved file (a preview its
frame as an image and a caption, a user's box of previews their frames in one image, a progress
bar its final state as text), and 07 exported to HTML with nbconvert shows the previews' frames;
a notebook of ``HBox``, ``VBox``, ``Tab`` and ``interact`` layouts of previews checks each
layout's saved image. The saved notebooks are checked to carry no outputs and the ``python3``
kernelspec.
"""

from __future__ import annotations

import base64
import os
import re
import sys
import time
from pathlib import Path

import numpy as np
import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
iio = pytest.importorskip("imageio.v3")

pytestmark = [
    pytest.mark.slow,
    # deprecations raised inside the Jupyter machinery (none with today's versions) are theirs
    *(pytest.mark.filterwarnings(f"ignore::DeprecationWarning:{module}")
      for module in ("jupyter_client", "jupyter_core", "nbclient", "nbformat", "zmq")),
]

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
WIDGET_MIME = "application/vnd.jupyter.widget-view+json"
CELL_TIMEOUT = 120  # seconds per cell
ANSI = re.compile(r"\x1b\[[0-9;]*m")

# Per notebook: strings that must appear in its outputs (stdout, text/plain or text/html).
EXPECTED = {
    "01_basics.ipynb": [
        "scanner-nb-plan",                      # a Stream's plan shown as a cell's value
        "first rows are frames [0, 1, 2, 3, 4, 5]",
        "rows [0, 24, 48, 72] -> decoded 4 of 96 frames",
        "<video",                               # show_video()
    ],
    "02_sampling.ipynb": [
        "stream 0: [0, 24, 48, 72, 96, 120, 144, 168, 192, 216]",
        "decoded {'a.mp4': 10, 'b.mp4': 10}",   # Stride by the GOP decodes keyframes only
        "stream 0: [200, 3, 3, 50]",
        "stream 0: [0, None, None, 1, None, None, 2, None, None]",
        "RowIndexError",
    ],
    "03_defining_ops.ipynb": [
        "[[0, 3, 3, 4, 5], [0, 1, 2, 3, 4]]",   # bounded state, as in Scanner
        "(no restart at 24)",
        "op: fragile | stream: 0 | row: 60",    # KernelError attributes
        "round trip exact: True",
    ],
    "04_storing_results.ipynb": [
        "StreamExistsError",
        "bit-exact: True",
        "doomed exists: False",
        "StreamNotFoundError",
        "<video",
    ],
    "05_scaling_out.ipynb": [
        "same result as local: True",
        "cluster still running after sc.close(): running",
        "after cluster.close(): closed",
    ],
    "06_gpu_ops.ipynb": [
        "inverted correctly: True",
        "largest difference between the two runs: 0",
    ],
    "07_compare_and_cluster.ipynb": [
        "Preview of Input | Blur: tiny, row 0 of 48",   # the compare preview's saved caption
        "rows with a value: [0, 4, 8, 12, 16, 20, 24, 28, 32, 36, 40, 44]",  # RepeatNull(Stride)
        "100%|##########| 4/4",                          # the finished cluster bar, saved
        "48 histograms computed on the cluster",
        "op: picky | stream: 0 | row:",
        "raised in: picky",
        "cluster: closed",
    ],
}


def _text_of(output) -> str:
    """Everything an output shows as text: stream text, text/plain, text/html, error lines."""
    if output.output_type == "stream":
        return output.text
    if output.output_type == "error":
        return f"{output.ename}: {output.evalue}"
    data = output.get("data", {})
    return "\n".join(str(data.get(mime, "")) for mime in ("text/plain", "text/html"))


def _run(path: Path, workdir: Path):
    nb = nbformat.read(path, as_version=4)
    env = dict(os.environ, TMPDIR=str(workdir), SCANNER_NB_DB=str(workdir / "default-db"),
               PYDEVD_DISABLE_FILE_VALIDATION="1")
    env.pop("MPLBACKEND", None)  # the kernel's inline backend, as for a user
    client = nbclient.NotebookClient(nb, kernel_name="python3", timeout=CELL_TIMEOUT,
                                     startup_timeout=60, allow_errors=True,
                                     resources={"metadata": {"path": str(workdir)}})
    start = time.perf_counter()
    client.execute(env=env)
    return nb, time.perf_counter() - start


def _errors(nb) -> list[str]:
    found = []
    for index, cell in enumerate(nb.cells):
        for output in cell.get("outputs", []):
            if output.output_type == "error":
                tail = ANSI.sub("", "\n".join(output.traceback[-4:]))[-1500:]
                found.append(f"cell {index}: {output.ename}: {output.evalue}\n{tail}")
    return found


@pytest.fixture(scope="module")
def durations():
    seen: dict[str, float] = {}
    yield seen
    if seen:
        print("\nnotebook run times: " + ", ".join(f"{k} {v:.1f} s" for k, v in seen.items()))


def test_there_are_seven_tutorials():
    assert [p.name for p in NOTEBOOKS] == sorted(EXPECTED)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_saved_without_outputs(path):
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    assert nb.metadata["kernelspec"]["name"] == "python3"
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code, "no code cells"
    assert all(not c.outputs and c.execution_count is None for c in code), \
        "save the notebook with its outputs cleared"
    assert any(c.cell_type == "markdown" for c in nb.cells)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs_top_to_bottom(path, tmp_path, durations):
    nb, seconds = _run(path, tmp_path)
    durations[path.name] = seconds
    errors = _errors(nb)
    assert not errors, f"{path.name} raised in {len(errors)} cell(s):\n" + "\n\n".join(errors)
    code = [c for c in nb.cells if c.cell_type == "code" and c.source.strip()]
    assert all(c.execution_count is not None for c in code)
    shown = "\n".join(_text_of(o) for c in code for o in c.outputs)
    missing = [s for s in EXPECTED[path.name] if s not in shown]
    assert not missing, f"{path.name}: outputs lack {missing}"
    _check_fallbacks(nb)
    if path.name == "01_basics.ipynb":
        _check_basics_widgets(nb)
    if path.name == "07_compare_and_cluster.ipynb":
        _check_html_export(nb)


def _widget_outputs(nb) -> list:
    return [o for c in nb.cells if c.cell_type == "code" for o in c.outputs
            if WIDGET_MIME in o.get("data", {})]


def _check_fallbacks(nb):
    """Where no widget runs (GitHub, nbviewer, nbconvert) each scanner_nb widget shows a still:
    a preview its shown frame as an image plus a caption, a progress bar its final state."""
    for output in _widget_outputs(nb):
        data = output.data
        text = data.get("text/plain", "")
        if text.startswith("Preview") or text.startswith("HBox of 2 previews\nPreview"):
            images = [m for m in ("image/jpeg", "image/png") if m in data]
            assert images, f"a preview (or a user's box of them) saved without a frame: {text!r}"
            picture = iio.imread(base64.b64decode(data[images[0]]))
            assert picture.ndim == 3 and picture.shape[0] >= 16 and picture.std() > 0
        elif "partition" in text:  # a progress bar
            assert re.search(r"100%\|[#]+\| (\d+)/\1", text), f"bar saved unfinished: {text!r}"
        else:  # others' widgets (a LocalCluster's) bring HTML
            assert "text/html" in data, text


def _check_html_export(nb):
    """nbconvert's HTML of the executed notebook shows the frames of the compare preview and of
    the user's ``HBox`` of two previews.

    JupyterLab saves no widget state by default, and neither GitHub nor nbviewer runs one, so
    the state nbclient stored is dropped first, as for a user's saved notebook."""
    nbconvert = pytest.importorskip("nbconvert")
    nb = nbformat.from_dict(nb)
    nb.metadata.pop("widgets", None)
    body, _ = nbconvert.HTMLExporter().from_notebook_node(nb)
    found = re.findall(r'<img[^>]+src="data:image/jpeg;base64,([A-Za-z0-9+/=]+)"', body)
    shapes = [iio.imread(base64.b64decode(data)).shape for data in found]
    # input and blurred frame side by side; then blurred and gray, in the HBox
    assert shapes == [(90, 160 + 8 + 160, 3)] * 2, "the previews' frames are not in the HTML"
    assert "100%|##########| 4/4" in body  # the finished progress bar


def _check_basics_widgets(nb):
    """01 shows a live preview widget (as a cell's value) and an inline H.264 video."""
    code = [c for c in nb.cells if c.cell_type == "code"]
    preview = [c for c in code if c.source.strip().endswith(".preview()")]
    assert preview, "01 has no cell whose value is stream.preview()"
    views = [o for o in preview[-1].outputs
             if o.output_type == "execute_result" and WIDGET_MIME in o.get("data", {})]
    assert views, "preview() did not produce a widget view as the cell's value"
    assert views[0].data[WIDGET_MIME]["model_id"]
    video = [c for c in code if ".show_video(" in c.source]
    assert video, "01 has no show_video() cell"
    html = "\n".join(o.get("data", {}).get("text/html", "") for o in video[-1].outputs)
    assert "<video" in html and "data:video/mp4;base64," in html


LAYOUTS = {  # a cell's source: the still its saved output must carry (height, width)
    "frames.preview()": (90, 160),
    "small.preview()": (46, 80),
    "widgets.HBox([frames.preview(), small.preview()])": (90, 160 + 8 + 80),
    "widgets.VBox([frames.preview(), small.preview()])": (90 + 8 + 46, 160),
    'widgets.Tab([frames.preview(), small.preview()], titles=["input", "small"])': (144, 160),
    "@widgets.interact(k=(1, 9, 2))\ndef blurred(k=3):\n"
    "    return sc.ops.Blur(frame=frames, kernel_size=k, sigma=1.0).preview()": (90, 160),
}


def test_saved_layouts_of_previews_show_every_frame(tmp_path):
    """A user's own layout of previews (``HBox``, ``VBox``, ``Tab``, ``interact``), executed and
    saved, keeps each preview's frame in one image laid out like the box, and nbconvert's HTML
    of the saved file (no widget state, as JupyterLab saves it) shows those images."""
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}
    nb.cells = [nbformat.v4.new_code_cell(
        "import os, tempfile\n"
        "import ipywidgets as widgets\n"
        "import scanner_nb as sp\n"
        "import scanner_nb.imgproc\n"
        "from scanner_nb.samples import make_video\n"
        "work = tempfile.mkdtemp()\n"
        "path = make_video(os.path.join(work, 'tiny.mp4'), n_frames=12, width=160, height=90)\n"
        "sc = sp.Client(db_path=os.path.join(work, 'db'), show_progress=False)\n"
        "frames = sc.io.Input([sp.NamedVideoStream(sc, 'tiny', path=path)])\n"
        "small = sc.ops.Resize(frame=frames, width=[80], height=[46])"),
        *(nbformat.v4.new_code_cell(source) for source in LAYOUTS)]
    path = tmp_path / "layouts.ipynb"
    nbformat.write(nb, path)
    nb, _ = _run(path, tmp_path)
    assert not _errors(nb), _errors(nb)
    nb.metadata.pop("widgets", None)  # JupyterLab saves no widget state by default
    nbformat.write(nb, path)
    saved = nbformat.read(path, as_version=4)

    stills = {}
    for cell in saved.cells[1:]:
        (output,) = [o for o in cell.outputs if WIDGET_MIME in o.get("data", {})]
        stills[cell.source] = iio.imread(base64.b64decode(output.data["image/jpeg"]))
        assert stills[cell.source].shape == (*LAYOUTS[cell.source], 3), cell.source
    one, small, hbox, vbox, tab, interact = stills.values()
    for box in (hbox, vbox, tab):  # each preview's own frame, where the box puts it
        assert np.abs(box[:90, :160].astype(int) - one).mean() < 4
    assert np.abs(hbox[:46, 168:].astype(int) - small).mean() < 4
    assert np.abs(vbox[98:, :80].astype(int) - small).mean() < 4
    assert hbox[46:, 168:].mean() > 250 and vbox[98:, 80:].mean() > 250  # padding is white
    assert np.abs(interact.astype(int) - one).mean() > 1  # the function's blurred frame
    assert saved.cells[3].outputs[0].data["text/plain"].splitlines() == [
        "HBox of 2 previews", "Preview: tiny, row 0 of 12", "Preview: tiny, row 0 of 12"]

    nbconvert = pytest.importorskip("nbconvert")
    body, _ = nbconvert.HTMLExporter().from_notebook_node(saved)
    shown = [iio.imread(base64.b64decode(data)).shape[:2] for data in
             re.findall(r'<img[^>]+src="data:image/jpeg;base64,([A-Za-z0-9+/=]+)"', body)]
    assert shown == list(LAYOUTS.values())


def test_kernel_is_this_python(tmp_path):
    """The ``python3`` kernel runs this interpreter (the venv), where scanner_nb imports."""
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(
        "import sys, scanner_nb\nprint(sys.prefix)\nprint(scanner_nb.__file__)")]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}
    client = nbclient.NotebookClient(nb, kernel_name="python3", timeout=60, startup_timeout=60,
                                     resources={"metadata": {"path": str(tmp_path)}})
    client.execute()
    prefix, module = nb.cells[0].outputs[0].text.split()
    assert Path(prefix).resolve() == Path(sys.prefix).resolve()
    assert Path(module).resolve().is_relative_to(ROOT)


def test_kernel_error_shows_short_in_the_notebook(tmp_path):
    """Uncaught, a KernelError is the kernel's line plus one sentence (locally and from a
    cluster, where the workers' log line is not printed too); %xmode Verbose gives it all."""
    new = nbformat.v4.new_code_cell
    compute = "{}.ops.nb_fragile(x={}.io.Input([sp.MemoryStream(list(range(5)))])).compute()"
    nb = nbformat.v4.new_notebook(cells=[
        new("import distributed\nfrom typing import Any\nimport scanner_nb as sp\n"
            "sc = sp.Client(show_progress=False)\n"
            "cluster = distributed.LocalCluster(n_workers=1, threads_per_worker=1, "
            "dashboard_address=':0')\ncsc = sp.Client(address=cluster, show_progress=False)"),
        new("@sp.register_python_op()\ndef nb_fragile(config, x: Any) -> Any:\n"
            "    if x == 3:\n        raise ValueError('bad value')\n    return x"),
        new(compute.format("sc", "sc")),
        new(compute.format("csc", "csc")),
        new("%xmode Verbose"),
        new(compute.format("sc", "sc")),
        new("csc.close()\ncluster.close()"),
    ])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}
    client = nbclient.NotebookClient(nb, kernel_name="python3", timeout=90, startup_timeout=60,
                                     allow_errors=True,
                                     resources={"metadata": {"path": str(tmp_path)}})
    client.execute(env=dict(os.environ, TMPDIR=str(tmp_path)))

    def shown(cell):
        return [ANSI.sub("", "\n".join(o.traceback)) if o.output_type == "error" else
                o.get("text", "") for o in nb.cells[cell].outputs]

    last = "KernelError: op 'nb_fragile' failed on stream 0, row 3: ValueError: bad value"
    for cell in (2, 3):  # threads, then the cluster
        (text,) = shown(cell)
        lines = text.splitlines()
        assert len(lines) <= 6, text
        assert "raise ValueError('bad value')" in text  # the op's source, also from a worker
        assert "<dynamic-code>" not in text and last in lines
    verbose = shown(5)[0]
    assert len(verbose.splitlines()) > 20 and last in verbose
    assert "The above exception was the direct cause" in verbose


class _RecordingClient(nbclient.NotebookClient):
    """Keeps every widget state update the kernel sends, with the time it arrived."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.updates: list[tuple[float, dict]] = []

    def handle_comm_msg(self, outs, msg, cell_index):
        data = msg["content"].get("data", {})
        if data.get("method") == "update":
            self.updates.append((time.monotonic(), dict(data.get("state", {}))))
        super().handle_comm_msg(outs, msg, cell_index)


def test_progress_bar_moves_in_jupyter_during_a_cluster_compute(tmp_path):
    """The bar's widget gets each finished partition while the cluster computes (the kernel
    is blocked in compute(); distributed.progress, which needs its event loop, sent nothing),
    and the saved output keeps the finished state as text."""
    new = nbformat.v4.new_code_cell
    nb = nbformat.v4.new_notebook(cells=[
        new("import time, distributed\nfrom typing import Any\nimport scanner_nb as sp\n"
            "cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, "
            "dashboard_address=':0')\n"
            "sc = sp.Client(address=cluster, partition_size=2, show_progress=True)\n"
            "@sp.register_python_op()\ndef nb_slow(config, x: Any) -> Any:\n"
            "    time.sleep(0.25)\n    return x"),
        new("print(sc.ops.nb_slow(x=sc.io.Input([sp.MemoryStream(list(range(12)))])).compute())"),
        new("sc.close()\ncluster.close()"),
    ])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}
    client = _RecordingClient(nb, kernel_name="python3", timeout=90, startup_timeout=60,
                              resources={"metadata": {"path": str(tmp_path)}})
    client.execute(env=dict(os.environ, TMPDIR=str(tmp_path)))
    outputs = nb.cells[1].outputs
    assert "[[0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11]]" in _text_of(outputs[-1])
    values = [(t, s["value"]) for t, s in client.updates
              if isinstance(s.get("value"), (int, float)) and s.get("max") is None]
    moved = sorted({v for _, v in values if 0 < v < 6})
    assert moved, f"the bar never showed a partial state: {values}"
    first = min(t for t, v in values if 0 < v < 6)
    last = max(t for t, v in values if v == 6)
    assert last - first > 0.2  # updates spread over the compute, not sent at its end
    (bar,) = [o for o in outputs if WIDGET_MIME in o.get("data", {})]
    assert re.search(r"100%\|#+\| 6/6", bar.data["text/plain"])
