"""What a user sees: notebooks 01 and 07 in JupyterLab in headless Chromium (shared/tools/nbcheck).

07 puts two previews side by side (one slider), two more in an ``HBox``, and runs a compute with
a progress bar on a ``LocalCluster``: every widget must render, the slider and Play must change
the picture, and the tiny clip's video must play.

Needs Debian's chromium and the ``.venv-browser`` that ``.ci/setup-browser`` makes; skipped
without them, unless ``SCANNER_NB_REQUIRE_BROWSER=1`` (as in CI), where that is a failure.
The screenshots are kept in ``bench/out/nbcheck/<notebook>/`` to look at.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parents[1]
NBCHECK = ROOT.parent / "shared" / "tools" / "nbcheck" / "nbcheck.py"
BROWSER_PYTHON = ROOT / ".venv-browser" / "bin" / "python"


def _missing() -> str | None:
    if not NBCHECK.exists():
        return f"{NBCHECK} not found"
    if not BROWSER_PYTHON.exists():
        return "no .venv-browser: run .ci/setup-browser"
    if shutil.which("chromium") is None:
        return "no chromium: run .ci/setup-browser"
    return None


@pytest.mark.parametrize("name", ["01_basics", "07_compare_and_cluster"])
def test_notebook_in_a_real_browser(name):
    missing = _missing()
    if missing:
        if os.environ.get("SCANNER_NB_REQUIRE_BROWSER") == "1":
            pytest.fail(missing)
        pytest.skip(missing)
    out = ROOT / "bench" / "out" / "nbcheck" / name
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    proc = subprocess.run(
        [str(BROWSER_PYTHON), str(NBCHECK), str(ROOT / "notebooks" / f"{name}.ipynb"), str(out),
         "--require", "all", "--python", sys.executable, "--timeout", "240"],
        capture_output=True, text=True, timeout=300)
    report = json.loads((out / "report.json").read_text()) if (out / "report.json").exists() else {}
    assert proc.returncode == 0, (proc.stdout[-4000:], proc.stderr[-4000:])
    assert report.get("ok") is True
    assert (out / "03-after-slider.png").exists() and (out / "04-after-play.png").exists()
    if name == "07_compare_and_cluster":
        widgets = report["widgets"]
        assert widgets["views_rendered"] == widgets["views"] == 3  # compare, HBox, cluster bar
        assert {"widget-image", "widget-hprogress"} <= set(widgets["kinds"])
        assert report["play"]["distinct_images_shown"] >= 2
