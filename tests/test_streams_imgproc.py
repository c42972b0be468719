"""Built-in image ops on streams: shot boundaries on a video with known cuts, and ops whose
input others see too (shared, overlapping ranges and slices). Both schedulers (``client``).

Named to run after ``test_indexing.py``, which expects the session's cluster to have indexed no
other video."""

from __future__ import annotations

import statistics

import av
import cv2
import dask
import numpy as np
import pytest

import scanner_nb as sp
from scanner_nb.imgproc import shot_boundaries

N, W, H = 140, 96, 64
CUTS = [23, 51, 90, 118]


def scene_frames() -> np.ndarray:
    """Five scenes, each its own colours and texture drifting a pixel a frame; a cut at each of
    ``CUTS``."""
    frames = np.empty((N, H, W, 3), np.uint8)
    starts = [0, *CUTS, N]
    for k, (start, end) in enumerate(zip(starts, starts[1:])):
        rng = np.random.default_rng(k)
        texture = rng.integers(0, 60, (H, W, 1)) + np.linspace(0, 40, W)[None, :, None]
        base = rng.integers(20, 150, 3)
        for i in range(start, end):
            frames[i] = np.clip(base + np.roll(texture, i - start, axis=1), 0, 255)
    return frames


@pytest.fixture(scope="module")
def scenes(tmp_path_factory):
    """An H.264 file of :func:`scene_frames` (a keyframe every 12 frames, none at the cuts)."""
    path = str(tmp_path_factory.mktemp("shots") / "scenes.mp4")
    with av.open(path, mode="w") as container:
        stream = container.add_stream("libx264", rate=24)
        stream.width, stream.height, stream.pix_fmt = W, H, "yuv420p"
        stream.options = {"crf": "18", "x264-params": "keyint=12:min-keyint=12:scenecut=0"}
        for frame in scene_frames():
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return path


def reference_boundaries(histograms, window, threshold):
    """The rule written out with the statistics module, one row at a time."""
    distances = [0.0] + [
        statistics.fmean(float(np.max(np.abs(b[c].astype(float) - a[c]))) for c in range(len(a)))
        for a, b in zip(histograms, histograms[1:])]
    n, found = len(distances), []
    for i in range(1, n):
        near = distances[max(i - window, 0):min(i + window, n)]
        if distances[i] - statistics.fmean(near) > threshold * statistics.pstdev(near):
            found.append(i)
    return found


def test_shot_boundaries_of_a_histogram_stream_are_the_cuts(client, scenes):
    frames = client.io.Input([sp.NamedVideoStream(client, "scenes", path=scenes)])
    hist = client.ops.Histogram(frame=frames)
    assert shot_boundaries(hist) == [CUTS]
    (computed,) = hist.compute(perf_params=sp.PerfParams.manual(12, 12))  # whatever the partitions
    assert shot_boundaries(computed) == CUTS
    assert shot_boundaries(np.stack(computed), window=20) == CUTS


def test_scannertools_shot_detection_program_runs(client, scenes):
    # as scannertools' own test: histograms of a range, ShotBoundaries, the list at row 0
    frame = client.io.Input([sp.NamedVideoStream(client, "scenes", path=scenes)])
    range_frame = client.streams.Range(frame, [(0, 1000)])
    hist = client.ops.Histogram(frame=range_frame)
    boundaries = client.ops.ShotBoundaries(histograms=hist)
    output = sp.NamedStream(client, "output")
    output_op = client.io.Output(boundaries, [output])
    client.run(output_op, sp.PerfParams.manual(work_packet_size=1000, io_packet_size=1000,
                                               pipeline_instances_per_node=1),
               cache_mode=sp.CacheMode.Overwrite, show_progress=False)
    assert next(output.load(rows=[0])) == CUTS
    rows = list(output.load())
    assert len(rows) == N and all(r is None for r in rows[1:])


def test_shot_boundaries_follow_the_rule_at_the_window_edges(local_client):
    rng = np.random.default_rng(7)
    hists = rng.poisson(40, (60, 3, 8))
    hists[[9, 30, 31, 52]] += rng.poisson(90, (4, 3, 8))  # spikes, near the ends too
    expected = reference_boundaries(list(hists), 7, 1.5)
    assert expected and shot_boundaries(hists, window=7, threshold=1.5) == expected
    assert shot_boundaries(list(hists)) == reference_boundaries(list(hists), 500, 2.5)
    stream = local_client.io.Input([sp.MemoryStream(list(hists))])
    cuts = local_client.ops.ShotBoundaries(histograms=stream, window=7, threshold=1.5)
    (got,) = cuts.compute(perf_params=sp.PerfParams.manual(64, 64))
    assert got[0] == expected and got[1:] == [None] * 59
    assert shot_boundaries(hists[:1]) == [] and shot_boundaries([]) == []


def test_shot_boundaries_errors(local_client):
    stream = local_client.io.Input([sp.MemoryStream([np.zeros((3, 4))] * 3)])
    with pytest.raises(sp.ScannerValueError, match="window"):
        local_client.ops.ShotBoundaries(histograms=stream, window=0)
    with pytest.raises(sp.ScannerTypeError, match="threshold"):
        shot_boundaries([np.zeros((3, 4))] * 3, threshold="high")
    with pytest.raises(sp.ScannerValueError, match="one histogram of one shape"):
        shot_boundaries([np.zeros((3, 4)), None, np.zeros((3, 4))])
    with pytest.raises(sp.ScannerValueError, match=r"\(channels, bins\)"):
        shot_boundaries(np.zeros((5, 4)))


def test_ops_leave_their_input_as_others_see_it(client, scenes):
    frames = client.io.Input([sp.NamedVideoStream(client, "scenes", path=scenes)])
    blurred = client.ops.Blur(frame=frames, kernel_size=5, sigma=0)
    hsv = client.ops.ConvertColor(frame=frames, conversion=["hsv"])
    lab = client.ops.ConvertColor(frame=blurred, conversion=["COLOR_RGB2LAB"])
    hist = client.ops.Histogram(frame=frames)
    (got_frames,), (got_blur,), (got_hsv,), (got_lab,), (got_hist,) = dask.compute(
        frames, blurred, hsv, lab, hist)
    expected_blur = np.stack([cv2.GaussianBlur(f, (5, 5), 0) for f in got_frames])
    np.testing.assert_array_equal(got_blur, expected_blur)
    np.testing.assert_array_equal(
        got_hsv, np.stack([cv2.cvtColor(f, cv2.COLOR_RGB2HSV) for f in got_frames]))
    np.testing.assert_array_equal(
        got_lab, np.stack([cv2.cvtColor(f, cv2.COLOR_RGB2LAB) for f in expected_blur]))
    np.testing.assert_array_equal(got_hist[7][1], np.bincount(
        got_frames[7][..., 1].ravel(), minlength=256).reshape(16, 16).sum(axis=1))
    np.testing.assert_allclose(got_frames, scene_frames(), atol=40)  # decoded, not blurred
    # a user's array given as a MemoryStream stays as it was
    data = scene_frames()[:10]
    mem = client.io.Input([sp.MemoryStream(data)])
    (soft,) = client.ops.Blur(frame=mem, kernel_size=3).compute()
    np.testing.assert_array_equal(data, scene_frames()[:10])
    np.testing.assert_array_equal(soft[4], cv2.GaussianBlur(data[4], (3, 3), 0))


def test_ops_over_overlapping_ranges_and_slices(client, scenes):
    # the engine hands both copies of a repeated range one array: an op writing over its input
    # would blur the second copy twice
    frames = client.io.Input([sp.NamedVideoStream(client, "scenes", path=scenes)])
    (decoded,) = frames.compute()
    twice = np.stack([cv2.GaussianBlur(f, (5, 5), 0) for f in decoded[:24]] * 2)
    ranges = client.streams.Ranges(frames, [[(0, 24), (0, 24)]])
    (got,) = client.ops.Blur(frame=ranges, kernel_size=5).compute()
    np.testing.assert_array_equal(got, twice)
    sliced = client.streams.Slice(frames, [client.partitioner.ranges([(0, 24), (0, 24)])])
    (got,) = client.streams.Unslice(client.ops.Blur(frame=sliced, kernel_size=5)).compute()
    np.testing.assert_array_equal(got, twice)
    (hsv,) = client.ops.ConvertColor(frame=ranges, conversion=["hsv"]).compute()
    np.testing.assert_array_equal(hsv[30], cv2.cvtColor(decoded[6], cv2.COLOR_RGB2HSV))
