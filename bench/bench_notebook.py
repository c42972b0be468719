"""Notebook benchmarks (issue 6): preview latency at 720p and ``show_video``, side by side with
the same steps done by hand (PyAV + imageio) and with ``mediapy``.

Run: ``.venv/bin/python bench/bench_notebook.py`` (``--quick`` for fewer repetitions,
``--profile`` to add cProfile listings of the widget's steps and of opening a preview). Clips
are made once with ``scanner_nb.samples.make_video`` and kept in
``$TMPDIR/scanner_nb_bench_notebook`` (``--data DIR`` to move them). Methods take turns step by
step (or run by run), and the tables show medians: the machine is shared and noisy.

What is measured, and against what:

1. Play step to the next row, cache miss (1280x720 H.264, 300 frames, GOP 60, 30 fps): the time
   ``preview.slider.value = r + 1`` takes (the synchronous observer path: ``Stream.row`` through
   the row analysis and Dask, JPEG encode, widget updates) for rows the cache has not seen,
   with Play not running (so nothing is prefetched). By hand: a PyAV decoder kept open
   (``thread_type="AUTO"``, as the library's reader), ``next`` frame, ``to_ndarray("rgb24")``,
   ``imageio`` JPEG at the same quality (90). Target: at most 1.5x the hand step. The ratio
   is the median of the per-step ratios (both sides step through the same rows, in turns).
   Steps are spaced by the Play interval (1/fps) for both: PyAV's frame threads finish decoding
   in the background between steps, as they do when a user plays or clicks, and the next
   method's step does not pay for them. "CPU/step" is the process CPU of the step plus the
   pause after it (all threads), so work done in the background is counted too.
2. The same step while Play runs: Play is switched on (its observer starts the prefetch thread)
   and the slider is moved every 1/fps, as the browser's Play does; reported with where the row
   came from (cache / prefetch / fetch). Informational.
3. Random jump: ``slider.value = random row`` (cache cleared before each jump; each jump lands
   in another GOP than the last one, so both sides seek) vs by hand ``container.seek(pts,
   backward=True)`` + decode forward to the row + JPEG. Target: at most 1.2x (median of the
   per-jump ratios: the same rows on both sides, and a jump's cost depends on the row).
4. Opening a preview until row 0 shows, each run in a fresh subprocess (modules imported
   before the clock starts, their import time reported apart):
   ``sc.io.Input([sp.NamedVideoStream(sc, name, path=...)]).preview()``, with the video's
   index cached (beside the database) or not (a fresh database folder), vs by hand
   ``av.open`` + first frame + JPEG. Target: at most 1.5x, and RSS grows by under 100 MiB.
   Diagnostic rows repeat both scanner_nb cases with ``scanner_nb.storage`` (fsspec,
   numcodecs) imported before the clock: ``NamedStream.__init__`` imports it for
   ``validate_name`` and ``Client.index_cache_dir`` for ``default_db_path``.
5. ``show_video`` of 300 frames of 640x360 vs ``mediapy.show_video(frames, fps=30,
   return_html=True)`` on the same frames (decoded once, in memory): ``stream.show_video()``
   end to end (it decodes the clip too) and ``show_video_html(frames)`` on the in-memory
   frames; time, bytes of HTML, and the PSNR of the embedded video against the frames (so a
   smaller clip cannot just be a worse one). Target: faster and no larger. A breakdown
   times the decode (``iter_partitions``) and ``encode_mp4`` of the frames alone.

mediapy needs an ``ffmpeg`` executable: the one on ``PATH``, else the one the ``imageio-ffmpeg``
package ships (``pip install imageio-ffmpeg``).
"""

from __future__ import annotations

import argparse
import base64
import cProfile
import gc
import io
import json
import os
import pstats
import random
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any, Callable

import av
import imageio.v3 as iio
import numpy as np
from benchlib import clip

MiB = 1 << 20
JPEG_QUALITY = 90  # Preview's default jpeg_quality; the hand steps use the same


# ----------------------------------------------------------------------------------------------
# clips, timing, tables
# ----------------------------------------------------------------------------------------------




def med(ts: list[float]) -> float:
    return statistics.median(ts) if ts else float("nan")


def fmt_s(t: float | None) -> str:
    if t is None or t != t:
        return "-"
    if t < 0.01:
        return f"{t * 1e3:.2f} ms"
    return f"{t * 1e3:.1f} ms" if t < 1 else f"{t:.2f} s"


def paired(ours: list[float], theirs: list[float]) -> float:
    """The median of the per-step ratios: both sides did the same rows, step by step, so this
    is robust where the medians of the two sides fall on different rows (a jump's cost depends
    on how far past its keyframe the row lies)."""
    return med([a / b for a, b in zip(ours, theirs)])


def fmt_ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}x" if b > 0 else "-"


def print_table(title: str, header: tuple[str, ...], rows: list[tuple]) -> None:
    rows = [header] + [tuple(str(c) for c in r) for r in rows]
    widths = [max(len(r[i]) if i < len(r) else 0 for r in rows) for i in range(len(header))]
    print(f"\n{title}")
    for j, r in enumerate(rows):
        print("  " + "  ".join(c.ljust(w) if i == 0 else c.rjust(w)
                               for i, (c, w) in enumerate(zip(r, widths))))
        if j == 0:
            print("  " + "  ".join("-" * w for w in widths))


RESULTS: list[tuple] = []  # (case, scanner_nb, reference, ratio, target, verdict)
VERDICTS: list[str] = []
RAW: dict[str, Any] = {}


def verdict(name: str, ok: bool, detail: str) -> str:
    VERDICTS.append(f"{name}: {detail} -> {'MET' if ok else 'MISSED'}")
    return "MET" if ok else "MISSED"


def hand_jpeg(a: np.ndarray) -> bytes:
    return iio.imwrite("<bytes>", a, extension=".jpeg", quality=JPEG_QUALITY)


def profile_listing(pr: cProfile.Profile, title: str, limit: int = 28) -> None:
    out = io.StringIO()
    stats = pstats.Stats(pr, stream=out)
    stats.sort_stats("cumulative").print_stats(limit)
    text = out.getvalue()
    start = text.find("   ncalls")
    print(f"\n--- cProfile: {title} (cumulative, top {limit}) ---")
    print(text[start:].rstrip() if start >= 0 else text.rstrip())


class Probe:
    """Timing wrappers around the library's functions (module attributes, looked up per call):
    ``scanner_nb.video.read_frames`` (the decode inside the Dask task), the preview's ``fetch``
    (``Stream.row``) and ``scanner_nb.notebook.preview._encode_image`` (the JPEG)."""

    def __init__(self) -> None:
        from scanner_nb import video
        from scanner_nb.notebook import preview as preview_mod

        self.video, self.preview_mod = video, preview_mod
        self.orig_read, self.orig_encode = video.read_frames, preview_mod._encode_image
        self.lock = threading.Lock()
        self.main = threading.main_thread()
        self.read: list[float] = []
        self.fetch: list[float] = []
        self.encode: list[float] = []
        self.last_element: Any = None
        self.active = False

        def read_frames(*args, **kwargs):
            t = time.perf_counter()
            try:
                return self.orig_read(*args, **kwargs)
            finally:
                if self.active and self._mine():
                    with self.lock:
                        self.read.append(time.perf_counter() - t)

        def encode(*args, **kwargs):
            t = time.perf_counter()
            try:
                return self.orig_encode(*args, **kwargs)
            finally:
                if self.active and threading.current_thread() is self.main:
                    self.encode.append(time.perf_counter() - t)

        video.read_frames = read_frames
        preview_mod._encode_image = encode
        self._prefetching = False

    def _mine(self) -> bool:
        # a Dask worker thread runs read_frames for the main thread's fetch; the preview's
        # prefetch thread runs its own fetch (counted only when we are not playing)
        return not self._prefetching

    def wrap_fetch(self, preview) -> None:
        panel = preview.panels[0]
        orig = panel.fetch

        def fetch(stream, row):
            t = time.perf_counter()
            element = orig(stream, row)
            if self.active and threading.current_thread() is self.main:
                self.fetch.append(time.perf_counter() - t)
                self.last_element = element
            return element

        panel.fetch = fetch

    def reset(self) -> None:
        self.read.clear(), self.fetch.clear(), self.encode.clear()

    def restore(self) -> None:
        self.video.read_frames = self.orig_read
        self.preview_mod._encode_image = self.orig_encode


# ----------------------------------------------------------------------------------------------
# 1-3. preview steps at 720p
# ----------------------------------------------------------------------------------------------


class HandPlayer:
    """By hand: one PyAV decoder kept open, frames in order, each to RGB and to JPEG."""

    def __init__(self, path: str):
        self.container = av.open(path)
        self.stream = self.container.streams.video[0]
        self.stream.thread_type = "AUTO"
        self.frames = self.container.decode(self.stream)
        self.decode: list[float] = []
        self.encode: list[float] = []

    def step(self) -> tuple[np.ndarray, bytes]:
        t0 = time.perf_counter()
        a = next(self.frames).to_ndarray(format="rgb24")
        t1 = time.perf_counter()
        data = hand_jpeg(a)
        t2 = time.perf_counter()
        self.decode.append(t1 - t0)
        self.encode.append(t2 - t1)
        return a, data

    def close(self) -> None:
        self.container.close()


class HandSeeker:
    """By hand: seek to the keyframe at or before the row (by its timestamp, backward), decode
    forward to the row, RGB, JPEG."""

    def __init__(self, path: str):
        self.container = av.open(path)
        self.stream = self.container.streams.video[0]
        self.stream.thread_type = "AUTO"
        with av.open(path) as c:  # the timestamps of the rows (as from an index)
            s = c.streams.video[0]
            self.pts = sorted(p.pts for p in c.demux(s) if p.size and p.pts is not None)
        self.decode: list[float] = []
        self.encode: list[float] = []

    def jump(self, row: int) -> tuple[np.ndarray, bytes]:
        t0 = time.perf_counter()
        target = self.pts[row]
        self.container.seek(target, stream=self.stream, backward=True, any_frame=False)
        frame = None
        for frame in self.container.decode(self.stream):
            if frame.pts is not None and frame.pts >= target:
                break
        a = frame.to_ndarray(format="rgb24")
        t1 = time.perf_counter()
        data = hand_jpeg(a)
        t2 = time.perf_counter()
        self.decode.append(t1 - t0)
        self.encode.append(t2 - t1)
        return a, data

    def close(self) -> None:
        self.container.close()


def timed_step(fn: Callable[[], Any], gap: float) -> tuple[float, float, Any]:
    """Wall seconds of ``fn()``, and CPU seconds (all threads) of ``fn()`` plus the ``gap``
    slept after it (frame threads finish their work there)."""
    c0 = time.process_time()
    t0 = time.perf_counter()
    result = fn()
    wall = time.perf_counter() - t0
    time.sleep(gap)
    return wall, time.process_time() - c0, result


def bench_preview_steps(path: str, db: str, quick: bool, profile: bool) -> None:
    import scanner_nb as sp
    from scanner_nb import video
    from scanner_nb.samples import frame_index

    sc = sp.Client(show_progress=False, db_path=db)
    inp = sc.io.Input([sp.NamedVideoStream(sc, "clip720", path=path)])
    n = inp.lengths[0]
    fps = inp.fps()
    gap = 1.0 / fps
    index = video.index_video(path, sc.index_cache_dir)
    keyframes = index.keyframes

    probe = Probe()
    try:
        # ---------------------------------------------------------------- 1. Play step, miss
        steps = 60 if quick else 150
        warm = 3
        preview = inp.preview()  # row 0 shown (a fetch)
        probe.wrap_fetch(preview)
        hand = HandPlayer(path)
        hand.step()  # row 0, as the preview has shown it
        w_wall, w_cpu, h_wall, h_cpu = [], [], [], []
        w_read, w_fetch, w_enc = [], [], []
        sources = []
        probe.active = True
        for r in range(1, steps + 1):
            order = ("w", "h") if r % 2 else ("h", "w")
            for who in order:
                if who == "w":
                    probe.reset()
                    before = preview.image.value
                    wall, cpu, _ = timed_step(lambda: setattr(preview.slider, "value", r), gap)
                    assert preview.image.value is not before and preview.row == r
                    sources.append(preview.last_source)
                    if r <= 5:
                        assert frame_index(probe.last_element) == r, (r, "widget")
                    if r > warm:
                        w_wall.append(wall), w_cpu.append(cpu)
                        w_read.append(sum(probe.read)), w_fetch.append(sum(probe.fetch))
                        w_enc.append(sum(probe.encode))
                else:
                    wall, cpu, (a, _) = timed_step(hand.step, gap)
                    if r <= 5:
                        assert frame_index(a) == r, (r, "hand")
                    if r > warm:
                        h_wall.append(wall), h_cpu.append(cpu)
        probe.active = False
        assert all(s == "fetch" for s in sources), set(sources)
        assert preview.stats["prefetch"] == 0, preview.stats
        hand_dec, hand_enc = hand.decode[warm + 1:], hand.encode[warm + 1:]
        hand.close()

        if profile:
            pr = cProfile.Profile()
            rows = range(steps + 1, min(n, steps + 61))
            pr.enable()
            for r in rows:
                preview.slider.value = r
            pr.disable()
            profile_listing(pr, f"widget Play step (cache miss), {len(rows)} steps at 720p "
                                "(no pause between steps)")
        preview.close()

        ratio = paired(w_wall, h_wall)
        RAW["play_miss"] = {"widget": w_wall, "hand": h_wall}
        RESULTS.append((
            "Play step to next row, cache miss (720p)", fmt_s(med(w_wall)), fmt_s(med(h_wall)),
            f"{ratio:.2f}x", "<= 1.5x",
            verdict("Play step (cache miss) <= 1.5x hand", ratio <= 1.5, f"{ratio:.2f}x")))
        RESULTS.append(("  CPU per step (all threads, incl. background decode)",
                        fmt_s(med(w_cpu)), fmt_s(med(h_cpu)),
                        fmt_ratio(med(w_cpu), med(h_cpu)), "", ""))
        breakdown = [
            ("widget: Stream.row (fetch)", fmt_s(med(w_fetch))),
            ("  of which read_frames (decode + RGB, in the Dask task)", fmt_s(med(w_read))),
            ("  of which graph build + Dask scheduling (fetch - read_frames)",
             fmt_s(med([f - d for f, d in zip(w_fetch, w_read)]))),
            ("widget: JPEG (_encode_image)", fmt_s(med(w_enc))),
            ("widget: the rest (traits, layout, status)",
             fmt_s(med([t - f - e for t, f, e in zip(w_wall, w_fetch, w_enc)]))),
            ("widget: total", fmt_s(med(w_wall))),
            ("hand: next frame + to_ndarray", fmt_s(med(hand_dec))),
            ("hand: imageio JPEG", fmt_s(med(hand_enc))),
            ("hand: total", fmt_s(med(h_wall))),
        ]

        # ---------------------------------------------------------------- 2. while playing
        play_steps = 50 if quick else 120
        start = max(0, n - play_steps - 2)
        preview = inp.preview()
        probe.wrap_fetch(preview)
        probe._prefetching = True
        preview.slider.value = start  # a miss, not timed
        preview.play.playing = True
        lat, src = [], []
        t_next = time.perf_counter() + gap
        for r in range(start + 1, start + 1 + play_steps):
            delay = t_next - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            t_next += gap
            t0 = time.perf_counter()
            preview.slider.value = r
            lat.append(time.perf_counter() - t0)
            src.append(preview.last_source)
        preview.play.playing = False
        stats = dict(preview.stats)
        preview.close()
        probe._prefetching = False
        RAW["playing"] = {"latency": lat, "sources": src}
        hits = [t for t, s in zip(lat, src) if s == "cache"]
        RESULTS.append((
            f"Play step while playing ({fps:g} fps, prefetch {preview.prefetch})",
            fmt_s(med(lat)), fmt_s(med(h_wall)), fmt_ratio(med(lat), med(h_wall)), "(info)", ""))
        RESULTS.append((
            f"  served from cache {src.count('cache')}, waited on prefetch "
            f"{src.count('prefetch')}, fetched {src.count('fetch')} of {len(src)}; "
            f"p90 {fmt_s(float(np.percentile(lat, 90)))}",
            f"hit {fmt_s(med(hits))}" if hits else "", "", "", "", ""))
        RAW["playing"]["stats"] = stats

        # ---------------------------------------------------------------- 3. random jumps
        jumps = 25 if quick else 60
        rng = random.Random(6)
        rows_j: list[int] = []
        gop_of = lambda r: int(np.searchsorted(keyframes, r, side="right"))  # noqa: E731
        while len(rows_j) < jumps + warm:
            r = rng.randrange(1, n)
            if rows_j and gop_of(r) == gop_of(rows_j[-1]):
                continue
            rows_j.append(r)
        preview = inp.preview()
        probe.wrap_fetch(preview)
        seeker = HandSeeker(path)
        jw_wall, jw_cpu, jh_wall, jh_cpu, jw_read, jw_fetch, jw_enc = [], [], [], [], [], [], []
        probe.active = True
        for k, r in enumerate(rows_j):
            order = ("w", "h") if k % 2 else ("h", "w")
            for who in order:
                if who == "w":
                    preview.clear_cache()
                    probe.reset()
                    wall, cpu, _ = timed_step(lambda: setattr(preview.slider, "value", r), gap)
                    assert preview.last_source == "fetch" and preview.row == r
                    assert frame_index(probe.last_element) == r, (r, "widget jump")
                    if k >= warm:
                        jw_wall.append(wall), jw_cpu.append(cpu)
                        jw_read.append(sum(probe.read)), jw_fetch.append(sum(probe.fetch))
                        jw_enc.append(sum(probe.encode))
                else:
                    wall, cpu, (a, _) = timed_step(lambda: seeker.jump(r), gap)
                    assert frame_index(a) == r, (r, "hand jump")
                    if k >= warm:
                        jh_wall.append(wall), jh_cpu.append(cpu)
        probe.active = False
        s_dec, s_enc = seeker.decode[warm:], seeker.encode[warm:]
        seeker.close()
        if profile:
            pr = cProfile.Profile()
            pr.enable()
            for r in rows_j[:20]:
                preview.clear_cache()
                preview.slider.value = r
            pr.disable()
            profile_listing(pr, "widget random jump, 20 jumps at 720p")
        preview.close()
        depth = [r - int(keyframes[gop_of(r) - 1]) for r in rows_j[warm:]]
        ratio = paired(jw_wall, jh_wall)
        RAW["jump"] = {"widget": jw_wall, "hand": jh_wall, "rows": rows_j}
        RESULTS.append((
            f"Random jump (seek + decode forward, median {med(depth):.0f} frames past the "
            "keyframe)", fmt_s(med(jw_wall)), fmt_s(med(jh_wall)), f"{ratio:.2f}x", "<= 1.2x",
            verdict("random jump <= 1.2x hand", ratio <= 1.2, f"{ratio:.2f}x")))
        RESULTS.append(("  CPU per jump (all threads)", fmt_s(med(jw_cpu)), fmt_s(med(jh_cpu)),
                        fmt_ratio(med(jw_cpu), med(jh_cpu)), "", ""))
        breakdown += [
            ("", ""),
            ("jump, widget: Stream.row (fetch)", fmt_s(med(jw_fetch))),
            ("  of which read_frames (seek + decode forward + RGB)", fmt_s(med(jw_read))),
            ("  of which graph build + Dask scheduling",
             fmt_s(med([f - d for f, d in zip(jw_fetch, jw_read)]))),
            ("jump, widget: JPEG (_encode_image)", fmt_s(med(jw_enc))),
            ("jump, widget: the rest",
             fmt_s(med([t - f - e for t, f, e in zip(jw_wall, jw_fetch, jw_enc)]))),
            ("jump, widget: total", fmt_s(med(jw_wall))),
            ("jump, hand: seek + decode forward + to_ndarray", fmt_s(med(s_dec))),
            ("jump, hand: imageio JPEG", fmt_s(med(s_enc))),
            ("jump, hand: total", fmt_s(med(jh_wall))),
        ]
        print_table(f"Where a step's time goes (medians; {steps - warm} Play steps, "
                    f"{jumps} jumps)", ("part", "median"), breakdown)
    finally:
        probe.restore()
        sc.close()


# ----------------------------------------------------------------------------------------------
# 4. opening a preview, in fresh subprocesses
# ----------------------------------------------------------------------------------------------


def child_open(mode: str, path: str, db: str, profile: bool) -> None:
    """Runs in a fresh interpreter: import, then time opening until row 0 is shown."""
    import psutil

    proc = psutil.Process()
    t0 = time.perf_counter()
    import PIL.Image  # noqa: F401
    import PIL.JpegImagePlugin  # noqa: F401

    hand_jpeg(np.zeros((16, 16, 3), np.uint8))  # loads imageio's pillow plugin (both sides)
    out: dict[str, Any] = {"mode": mode}
    if mode == "hand":
        out["import_s"] = time.perf_counter() - t0
        gc.collect()
        rss0 = proc.memory_info().rss
        pr = cProfile.Profile() if profile else None
        if pr:
            pr.enable()
        t = time.perf_counter()
        container = av.open(path)
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        a = next(container.decode(stream)).to_ndarray(format="rgb24")
        data = hand_jpeg(a)
        out["open_s"] = time.perf_counter() - t
        if pr:
            pr.disable()
        assert len(data) > 1000
        keep = container  # noqa: F841  (open, as a preview keeps its reader)
    else:
        t1 = time.perf_counter()
        import scanner_nb as sp

        t2 = time.perf_counter()
        import scanner_nb.notebook.preview  # noqa: F401  (ipywidgets)

        if mode.endswith("-pre"):  # diagnostic: the stored-stream module imported beforehand
            import scanner_nb.storage  # noqa: F401
        t3 = time.perf_counter()
        sc = sp.Client(show_progress=False, db_path=db)
        out["import_s"] = t1 - t0
        out["import_scanner_nb_s"] = t2 - t1
        out["import_widgets_s"] = t3 - t2
        gc.collect()
        rss0 = proc.memory_info().rss
        pr = cProfile.Profile() if profile else None
        if pr:
            pr.enable()
        t = time.perf_counter()
        preview = sc.io.Input([sp.NamedVideoStream(sc, "clip", path=path)]).preview()
        out["open_s"] = time.perf_counter() - t
        if pr:
            pr.disable()
        assert preview.row == 0 and preview.last_source == "fetch", preview.last_source
        assert len(preview.image.value) > 1000
        out["latency_s"] = preview.last_latency_s
    rss1 = proc.memory_info().rss
    out["rss_growth"] = rss1 - rss0
    out["rss_before"] = rss0
    if pr:
        buf = io.StringIO()
        pstats.Stats(pr, stream=buf).sort_stats("cumulative").print_stats(30)
        sys.stderr.write(buf.getvalue())
    print(json.dumps(out))


def run_child(mode: str, path: str, db: str, profile: bool = False) -> dict:
    done = subprocess.run(
        [sys.executable, os.path.abspath(__file__), "--child", mode, path, db]
        + (["--profile"] if profile else []),
        capture_output=True, text=True, timeout=600)
    if done.returncode != 0:
        raise RuntimeError(f"child {mode} failed:\n{done.stderr[-3000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    if profile:
        text = done.stderr
        start = text.find("   ncalls")
        print(f"\n--- cProfile: opening ({mode}), in a fresh process (cumulative, top 30) ---")
        print(text[start:].rstrip() if start >= 0 else text.rstrip())
    return result


def bench_open(path: str, folder: str, quick: bool, profile: bool) -> None:
    from scanner_nb import video

    repeat = 3 if quick else 7
    cached_db = os.path.join(folder, "db-open-cached")
    cache_dir = os.path.join(cached_db, ".video-index")
    video.index_video(path, cache_dir)  # the cached case's index, made beforehand
    scratch = tempfile.mkdtemp(prefix="open-", dir=folder)
    modes = ["hand", "cached", "uncached", "cached-pre", "uncached-pre"]
    res: dict[str, list[dict]] = {m: [] for m in modes}
    try:
        for rep in range(repeat):
            for mode in modes[rep % 5:] + modes[:rep % 5]:
                if mode.startswith("uncached"):
                    db = tempfile.mkdtemp(prefix="db-", dir=scratch)  # no index there
                else:
                    db = cached_db
                res[mode].append(run_child(mode, path, db))
        if profile:
            run_child("uncached", path, tempfile.mkdtemp(prefix="db-", dir=scratch), True)
            run_child("cached", path, cached_db, True)
            run_child("cached-pre", path, cached_db, True)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    RAW["open"] = res
    hand_t = med([r["open_s"] for r in res["hand"]])
    hand_m = med([r["rss_growth"] for r in res["hand"]]) / MiB
    for mode, label in (("uncached", "index not cached"), ("cached", "index cached")):
        t = med([r["open_s"] for r in res[mode]])
        grow = max(r["rss_growth"] for r in res[mode]) / MiB
        ratio = t / hand_t
        RESULTS.append((
            f"Open preview until row 0 shows, {label}", fmt_s(t), fmt_s(hand_t),
            f"{ratio:.2f}x", "<= 1.5x",
            verdict(f"open, {label} <= 1.5x hand", ratio <= 1.5, f"{ratio:.2f}x")))
        RESULTS.append((
            f"  RSS growth, {label} (worst of {repeat}; hand: median)", f"{grow:.1f} MiB",
            f"{hand_m:.1f} MiB", "", "< 100 MiB",
            verdict(f"open, {label}: RSS growth < 100 MiB", grow < 100, f"{grow:.1f} MiB")))
    for mode, label in (("uncached-pre", "not cached"), ("cached-pre", "cached")):
        t = med([r["open_s"] for r in res[mode]])
        RESULTS.append((
            f"  (diagnostic) index {label}, scanner_nb.storage imported before the clock",
            fmt_s(t), fmt_s(hand_t), f"{t / hand_t:.2f}x", "(info)", ""))
    imp = res["cached"] + res["uncached"]
    RESULTS.append((
        "  (not timed above: import scanner_nb / ipywidgets + preview module)",
        f"{fmt_s(med([r['import_scanner_nb_s'] for r in imp]))} / "
        f"{fmt_s(med([r['import_widgets_s'] for r in imp]))}", "", "", "", ""))


# ----------------------------------------------------------------------------------------------
# 5. show_video vs mediapy
# ----------------------------------------------------------------------------------------------


def setup_mediapy():
    import mediapy

    if shutil.which("ffmpeg") is None:
        try:
            import imageio_ffmpeg
        except ImportError:
            raise SystemExit("mediapy needs ffmpeg: install it, or `pip install imageio-ffmpeg`")
        mediapy.set_ffmpeg(imageio_ffmpeg.get_ffmpeg_exe())
    return mediapy


def mp4_of_html(html: str) -> bytes:
    m = re.search(r'base64,([A-Za-z0-9+/=]+)"', html)
    return base64.b64decode(m.group(1)) if m else b""


def psnr_of(mp4: bytes, frames: np.ndarray, every: int = 10) -> tuple[int, float]:
    """Frames in the mp4, and the mean PSNR (dB) of every ``every``-th one against ``frames``."""
    with av.open(io.BytesIO(mp4)) as c:
        got = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    vals = []
    for i in range(0, min(len(got), len(frames)), every):
        mse = np.mean((got[i].astype(np.float32) - frames[i].astype(np.float32)) ** 2)
        vals.append(10 * np.log10(255.0 ** 2 / max(mse, 1e-10)))
    return len(got), float(np.mean(vals))


def bench_show_video(path: str, db: str, quick: bool) -> None:
    import scanner_nb as sp
    from scanner_nb import video
    from scanner_nb.notebook.video import show_video_html

    from scanner_nb.video import encode_mp4

    mediapy = setup_mediapy()
    repeat = 3 if quick else 7
    sc = sp.Client(show_progress=False, db_path=db)
    inp = sc.io.Input([sp.NamedVideoStream(sc, "clip360", path=path)])
    n, fps = inp.lengths[0], inp.fps()
    with av.open(path) as c:
        frames = np.stack([f.to_ndarray(format="rgb24") for f in c.decode(video=0)])
    assert len(frames) == n
    methods: dict[str, Callable[[], str]] = {
        "sc": lambda: inp.show_video().html,
        "html": lambda: show_video_html(frames, fps=fps).html,
        "mediapy": lambda: mediapy.show_video(frames, fps=fps, return_html=True),
        # parts of the first, for the breakdown
        "decode": lambda: sum(len(p) for p in inp.iter_partitions(0)),
        "encode": lambda: encode_mp4(frames, io.BytesIO(), fps=fps),
    }
    times: dict[str, list[float]] = {k: [] for k in methods}
    cpu: dict[str, list[float]] = {k: [] for k in methods}
    size: dict[str, int] = {}
    quality: dict[str, tuple[int, float]] = {}
    names = list(methods)
    for rep in range(repeat):
        for name in names[rep % len(names):] + names[:rep % len(names)]:
            video.close_readers()
            gc.collect()
            c0, t0 = os.times(), time.perf_counter()
            html = methods[name]()
            times[name].append(time.perf_counter() - t0)
            c1 = os.times()
            cpu[name].append(sum(c1[:4]) - sum(c0[:4]))  # this process and its children
            if rep == 0 and isinstance(html, str):
                size[name] = len(html.encode())
                quality[name] = psnr_of(mp4_of_html(html), frames)
            del html
    sc.close()
    RAW["show_video"] = {"times": times, "cpu": cpu, "bytes": size, "quality": quality}
    print_table(
        f"Where show_video's time goes (median of {repeat}; wall / CPU of this process and "
        "its children)", ("part", "wall", "CPU"),
        [("stream.show_video() (decode, probe encode, encode, base64)",
          fmt_s(med(times["sc"])), fmt_s(med(cpu["sc"]))),
         ("  decoding the clip alone (stream.iter_partitions)", fmt_s(med(times["decode"])),
          fmt_s(med(cpu["decode"]))),
         ("  show_video_html(frames) alone (probe + encode + base64)",
          fmt_s(med(times["html"])), fmt_s(med(cpu["html"]))),
         (f"    encode_mp4 of the {n} frames alone", fmt_s(med(times["encode"])),
          fmt_s(med(cpu["encode"]))),
         ("mediapy.show_video(frames) (ffmpeg subprocess, x264 preset medium, qp 20)",
          fmt_s(med(times["mediapy"])), fmt_s(med(cpu["mediapy"])))])
    mp_t, mp_b = med(times["mediapy"]), size["mediapy"]
    for name, label in (("sc", f"stream.show_video(), {n} frames 640x360 (decodes too)"),
                        ("html", "show_video_html(frames), same frames in memory")):
        t, b = med(times[name]), size[name]
        main = name == "sc"
        RESULTS.append((
            label, fmt_s(t), fmt_s(mp_t), f"{t / mp_t:.2f}x", "< 1x" if main else "(info)",
            verdict("show_video faster than mediapy", t < mp_t, f"{t / mp_t:.2f}x")
            if main else ""))
        RESULTS.append((
            "  HTML bytes", f"{b / MiB:.2f} MiB", f"{mp_b / MiB:.2f} MiB", f"{b / mp_b:.2f}x",
            "<= 1x" if main else "",
            verdict("show_video HTML no larger than mediapy's", b <= mp_b, f"{b / mp_b:.2f}x")
            if main else ""))
        if main:
            RESULTS.append(("  CPU (this process + children, e.g. ffmpeg)",
                            fmt_s(med(cpu[name])), fmt_s(med(cpu["mediapy"])),
                            fmt_ratio(med(cpu[name]), med(cpu["mediapy"])), "", ""))
            (k, q), (k2, q2) = quality[name], quality["mediapy"]
            RESULTS.append(("  frames embedded; PSNR vs the frames", f"{k}; {q:.1f} dB",
                            f"{k2}; {q2:.1f} dB", "", "", ""))


# ----------------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer steps and repetitions")
    parser.add_argument("--profile", action="store_true",
                        help="also print cProfile listings of the widget's steps and of opening")
    parser.add_argument("--data", default=os.path.join(tempfile.gettempdir(),
                                                       "scanner_nb_bench_notebook"))
    parser.add_argument("--only", choices=["steps", "open", "show_video"], default=None)
    parser.add_argument("--json", default=None, help="also write the raw timings here")
    parser.add_argument("--child", nargs=3, metavar=("MODE", "PATH", "DB"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child_open(*args.child, profile=args.profile)
        return

    folder = os.path.abspath(args.data)
    os.makedirs(folder, exist_ok=True)
    print(f"scanner_nb notebook benchmark ({'quick' if args.quick else 'full'}); "
          f"{os.cpu_count()} cores; clips in {folder}", flush=True)
    path720 = clip(folder, 300, 1280, 720, gop=60)
    path360 = clip(folder, 300, 640, 360, gop=60)
    db = os.path.join(folder, "db")
    start = time.perf_counter()
    if args.only in (None, "steps"):
        bench_preview_steps(path720, db, args.quick, args.profile)
    if args.only in (None, "open"):
        bench_open(path720, folder, args.quick, args.profile)
    if args.only in (None, "show_video"):
        bench_show_video(path360, db, args.quick)
    print_table(
        f"Notebook benchmark (issue 6), medians; {os.cpu_count()} cores; "
        f"{'quick' if args.quick else 'full'} run in {time.perf_counter() - start:.0f}s",
        ("case", "scanner_nb", "by hand / mediapy", "ratio", "target", "met"), RESULTS)
    print("\nTargets:")
    for v in VERDICTS:
        print(f"  {v}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(RAW, f, default=float)


if __name__ == "__main__":
    main()
