"""Stream operations over real videos (issue 4): exactly which frames come out, how many are
decoded, where partitions start, per-slice state, ``save_mp4`` and bad input.

Every frame made by :func:`~scanner_nb.samples.make_video` carries its own index, so each test
checks *which* frames an operation produced (``frame_index``), not just how many, at several
partition sizes and over several videos of different lengths, codecs and GOP sizes in one
``Input``. Decode counts come from :func:`scanner_nb.video.decode_stats` (this process only, so
they are taken on the threaded scheduler).
"""

from __future__ import annotations

import os
import pathlib
from typing import Any, Sequence

import av
import numpy as np
import pytest

import scanner_nb as sp
import scanner_nb.imgproc  # noqa: F401  (registers Resize, FrameDifference, ...)
from scanner_nb import video
from scanner_nb.errors import (
    RowIndexError,
    ScannerError,
    ScannerTypeError,
    ScannerValueError,
    VideoError,
    VideoNotFoundError,
)
from scanner_nb.samples import frame_index, make_audio, make_video

# name -> make_video keyword arguments; lengths differ on purpose (a 7-frame clip is shorter
# than one GOP and than every partition size used below)
SPECS: dict[str, dict] = {
    "h264_gop12": dict(n_frames=120, gop=12),
    "mpeg4_gop12": dict(n_frames=100, gop=12, codec="mpeg4"),
    "h264_gop1": dict(n_frames=30, gop=1),
    "h264_gop50": dict(n_frames=130, gop=50),
    "h264_odd": dict(n_frames=45, gop=12, width=161, height=97),  # yuv444: kept exact
    "h264_vfr": dict(n_frames=90, gop=12, vfr=True),
    "h264_bframes": dict(n_frames=70, gop=10, bframes=2),
    "h264_short": dict(n_frames=7, gop=12),
}
NAMES = list(SPECS)
PARTITION_SIZES = [5, 12, 13, None]


# ------------------------------------------------------------------------------------------
# fixtures and helpers
# ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> dict[str, str]:
    """The test videos, made once: name -> absolute path."""
    folder = tmp_path_factory.mktemp("stream_videos")
    return {name: make_video(str(folder / f"{name}.mp4"), **spec) for name, spec in SPECS.items()}


@pytest.fixture(scope="module")
def db(tmp_path_factory) -> str:
    """One database for the module, so video indexes are cached once (beside it)."""
    return str(tmp_path_factory.mktemp("db"))


@pytest.fixture(scope="module")
def keyframes(videos) -> dict[str, np.ndarray]:
    return {name: video.index_video(path).keyframes for name, path in videos.items()}


@pytest.fixture(autouse=True)
def _fresh_readers():
    video.close_readers()
    video.reset_decode_stats()
    yield
    video.close_readers()


def make_client(db: str, partition_size: int | None = None, address=None) -> sp.Client:
    return sp.Client(address=address, db_path=db, partition_size=partition_size,
                     show_progress=False)


def video_input(sc: sp.Client, videos: dict[str, str], names: Sequence[str] = NAMES):
    return sc.io.Input([sp.NamedVideoStream(sc, name, path=videos[name]) for name in names])


def lengths_of(names: Sequence[str] = NAMES) -> list[int]:
    return [SPECS[name]["n_frames"] for name in names]


def indices(frames) -> list:
    """The index drawn in each frame (``None`` for a null)."""
    return [None if f is None else frame_index(f) for f in frames]


def decoded(videos: dict[str, str], name: str) -> int:
    return video.decode_stats().get(videos[name], 0)


def gop_prefix_cost(keyframes: np.ndarray, rows) -> int:
    """Frames a decoder must decode to produce ``rows``: in each GOP holding one, from its
    keyframe up to the last row needed in it."""
    rows = np.unique(np.asarray(list(rows), dtype=np.int64))
    if not len(rows):
        return 0
    gop = np.searchsorted(keyframes, rows, side="right") - 1
    return sum(int(rows[gop == g].max()) - int(keyframes[g]) + 1 for g in np.unique(gop))


def clamp(i: int, n: int) -> int:
    return min(max(i, 0), n - 1)


# ------------------------------------------------------------------------------------------
# ops defined for these tests
# ------------------------------------------------------------------------------------------


@sp.register_python_op(stencil=[-1, 0, 1])
def vs_window(config, frame: Sequence[sp.FrameType]) -> Any:
    """The indices of the frames in the window."""
    return tuple(frame_index(f) for f in frame)


@sp.register_python_op(stencil=[-2, 0, 3])
def vs_wide_window(config, frame: Sequence[sp.FrameType]) -> Any:
    return tuple(frame_index(f) for f in frame)


@sp.register_python_op()
def vs_index(config, frame: sp.FrameType) -> Any:
    return frame_index(frame)


@sp.register_python_op(bounded_state=3)
class VsHistory(sp.Kernel):
    """Bounded state: the indices of the last 4 frames seen since the last ``reset``."""

    def __init__(self, config):
        self.seen: list[int] = []

    def reset(self):
        self.seen = []

    def execute(self, frame: sp.FrameType) -> Any:
        self.seen.append(frame_index(frame))
        return tuple(self.seen[-4:])


@sp.register_python_op(unbounded_state=True)
class VsCount(sp.Kernel):
    """Unbounded state: (tag, first frame since reset, frames seen since reset)."""

    def __init__(self, config):
        self.seen: list[int] = []
        self.tag = None

    def new_stream(self, tag=None):
        self.tag = tag

    def reset(self):
        self.seen = []

    def execute(self, frame: sp.FrameType) -> Any:
        self.seen.append(frame_index(frame))
        return (self.tag, self.seen[0], len(self.seen))


# ------------------------------------------------------------------------------------------
# every stream operation: exactly which frames come out
# ------------------------------------------------------------------------------------------

# op -> (argument for stream s of length n, the input rows it yields: ints, None for nulls)
CASES = {
    "Stride": (lambda s, n: (1, 2, 7, 30)[s % 4],
               lambda k, n: list(range(0, n, k))),
    "Range": (lambda s, n: (n // 3, n // 3 + 17),  # end past the short clip: cut to its length
              lambda r, n: list(range(min(r[0], n), min(r[1], n)))),
    "Ranges": (lambda s, n: [(n // 2, n + 3), (0, 5), (3, 9)],  # out of order, overlapping
               lambda ivs, n: [i for a, b in ivs for i in range(min(a, n), min(b, n))]),
    "StridedRange": (lambda s, n: (1, n - 1, 5),
                     lambda r, n: list(range(r[0], min(r[1], n), r[2]))),
    "Gather": (lambda s, n: [n - 1, 0, n // 2, n // 2, min(13, n - 1), 1, n - 1],
               lambda idx, n: list(idx)),
    "Repeat": (lambda s, n: 3, lambda k, n: [i for i in range(n) for _ in range(k)]),
    "RepeatNull": (lambda s, n: 2,
                   lambda k, n: [i if j == 0 else None for i in range(n) for j in range(k)]),
}


@pytest.mark.parametrize("partition_size", PARTITION_SIZES)
@pytest.mark.parametrize("op", list(CASES) + ["All"])
def test_stream_operation_gives_exact_frames(videos, db, op, partition_size):
    sc = make_client(db, partition_size)
    inp = video_input(sc, videos)
    ns = lengths_of()
    memory = sc.io.Input([sp.MemoryStream(list(range(n))) for n in ns])
    if op == "All":
        out, mem, want = sc.streams.All(inp), sc.streams.All(memory), [list(range(n)) for n in ns]
    else:
        arg, expect = CASES[op]
        args = [arg(s, n) for s, n in enumerate(ns)]
        out = getattr(sc.streams, op)(inp, args)
        mem = getattr(sc.streams, op)(memory, args)
        want = [expect(a, n) for a, n in zip(args, ns)]
    assert out.lengths == [len(w) for w in want]
    got = out.compute()
    assert [indices(g) for g in got] == want
    assert mem.compute() == want  # videos and in-memory streams alike
    for g, name in zip(got, NAMES):  # frames keep their size (the odd one too)
        if len(g) and not isinstance(g, list):
            assert g.shape[1:] == (SPECS[name].get("height", 96), SPECS[name].get("width", 160), 3)


@pytest.mark.parametrize("partition_size", [5, 13])
def test_chained_operations_and_ops_on_samples(videos, db, partition_size):
    sc = make_client(db, partition_size)
    names = ["h264_gop12", "h264_gop50", "mpeg4_gop12"]
    inp = video_input(sc, videos, names)
    ranged = sc.streams.Range(inp, [(10, 110), (5, 125), (0, 100)])
    strided = sc.streams.Stride(ranged, [3, 4, 9])
    gathered = sc.streams.Gather(strided, [[0, 32, 5, 5, 1], [29, 0, 3], [11, 0]])
    assert [indices(g) for g in gathered.compute()] == [
        [10, 106, 25, 25, 13], [121, 5, 17], [99, 0]]
    # ops run on sampled streams, and samples of op outputs read only the rows they need
    small = sc.ops.Resize(frame=strided, width=[64] * 3, height=[40] * 3)
    got = small.compute()
    assert got[0].shape == (34, 40, 64, 3)
    assert indices(got[0]) == list(range(10, 110, 3))
    idx = sc.ops.vs_index(frame=inp)
    assert sc.streams.Gather(idx, [[119, 3], [0], [50, 51]]).compute() == [[119, 3], [0], [50, 51]]
    assert sc.streams.Stride(idx, [40, 40, 40]).compute() == [
        [0, 40, 80], [0, 40, 80, 120], [0, 40, 80]]


def test_row_and_rows_on_a_sampled_video(videos, db):
    sc = make_client(db, 12)
    strided = sc.streams.Stride(video_input(sc, videos, ["h264_gop12", "h264_vfr"]), [5, 7])
    assert frame_index(strided.row(1, 4)) == 28
    assert indices(strided.rows(0, [23, 0, 23])) == [115, 0, 115]
    assert video.decode_stats()[videos["h264_vfr"]] == 28 - 24 + 1


# ------------------------------------------------------------------------------------------
# partitions and decode counts
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("partition_size", PARTITION_SIZES)
def test_full_pass_decodes_every_frame_exactly_once(videos, db, partition_size):
    sc = make_client(db, partition_size)
    got = video_input(sc, videos).compute()
    for name, frames in zip(NAMES, got):
        n = SPECS[name]["n_frames"]
        assert indices(frames) == list(range(n)), name
        assert decoded(videos, name) == n, name


@pytest.mark.parametrize("partition_size", [5, 13])
def test_stateful_and_stencil_ops_over_a_video_decode_every_frame_once(videos, db,
                                                                       partition_size):
    # stencil overlap and warm-up rows come from the neighbouring partitions, never decoded twice
    sc = make_client(db, partition_size)
    names = ["h264_gop12", "h264_gop50", "h264_bframes"]
    inp = video_input(sc, videos, names)
    for op in (lambda: sc.ops.FrameDifference(frame=inp), lambda: sc.ops.vs_wide_window(frame=inp),
               lambda: sc.ops.VsHistory(frame=inp), lambda: sc.ops.VsCount(frame=inp, tag=[0] * 3)):
        video.reset_decode_stats()
        op().compute()
        stats = video.decode_stats()
        for n in names:
            frames = SPECS[n]["n_frames"]
            # pieces of a GOP continue one reader; with more GOPs open at once than readers
            # per file, a piece may decode its GOP's prefix again (correct, a little slower)
            assert frames <= stats[videos[n]] <= frames * 1.25, n


def test_frames_are_bit_exact_with_plain_pyav(videos, db):
    sc = make_client(db, 13)
    names = ["mpeg4_gop12", "h264_bframes", "h264_vfr", "h264_odd"]
    for name, got in zip(names, video_input(sc, videos, names).compute()):
        with av.open(videos[name]) as c:
            plain = np.stack([f.to_ndarray(format="rgb24") for f in c.decode(video=0)])
        np.testing.assert_array_equal(got, plain)


def test_read_frames_into_a_given_array(videos):
    index = video.index_video(videos["h264_gop12"])
    buf = np.zeros((12, 96, 160, 3), np.uint8)
    assert video.read_frames(index, np.arange(30, 36), out=buf[:6]) is not None
    got = video.read_frames(index, [90, 2, 90, 1, 0, 119], out=buf[6:])
    assert np.shares_memory(got, buf)
    assert indices(buf) == [30, 31, 32, 33, 34, 35, 90, 2, 90, 1, 0, 119]
    for bad in (buf[:5], buf[:6].astype(np.int16), np.zeros((6, 96, 161, 3), np.uint8), [0] * 6):
        with pytest.raises(ScannerValueError, match="out must be"):
            video.read_frames(index, np.arange(6), out=bad)
    readonly = np.zeros((6, 96, 160, 3), np.uint8)
    readonly.setflags(write=False)
    with pytest.raises(ScannerValueError):
        video.read_frames(index, np.arange(6), out=readonly)


@pytest.mark.parametrize("partition_size", PARTITION_SIZES)
def test_partitions_are_whole_gops_or_pieces_of_one(videos, db, keyframes, partition_size):
    sc = make_client(db, partition_size)
    inp = video_input(sc, videos)
    downstream = sc.ops.FrameDifference(frame=inp)  # an op keeps its source's partitions
    infos, infos_op = inp.partitions_info(), downstream.partitions_info()
    assert infos == infos_op
    for name, info in zip(NAMES, infos):
        kf, n = keyframes[name].tolist(), SPECS[name]["n_frames"]
        bounds = info["boundaries"]
        assert info["length"] == n
        assert bounds[0][0] == 0 and bounds[-1][1] == n
        assert all(a[1] == b[0] for a, b in zip(bounds, bounds[1:]))  # contiguous
        for start, end in bounds:
            if partition_size is not None:
                assert end - start <= partition_size  # memory follows the partition size
            if start not in kf or (end not in kf and end != n):  # a piece of one long GOP
                gop_start = max(k for k in kf if k <= start)
                gop_end = min([k for k in kf if k > gop_start] + [n])
                assert gop_end - gop_start > partition_size
                assert gop_start <= start and end <= gop_end
        if partition_size is None:
            assert len(bounds) == 1  # ~64 MiB of small frames: one partition


@pytest.mark.parametrize("partition_size", [5, None])
def test_stride_decodes_only_the_gop_prefixes_it_needs(videos, db, keyframes, partition_size):
    sc = make_client(db, partition_size)
    got = sc.streams.Stride(video_input(sc, videos), [30] * len(NAMES)).compute()
    for name, frames in zip(NAMES, got):
        n = SPECS[name]["n_frames"]
        rows = list(range(0, n, 30))
        assert indices(frames) == rows
        assert decoded(videos, name) == gop_prefix_cost(keyframes[name], rows), name
    # far less than the video where GOPs are short; exactly one frame per row with GOP 1
    assert decoded(videos, "h264_gop12") == 16
    assert decoded(videos, "h264_gop1") == 1


@pytest.mark.parametrize("partition_size", [5, 12, None])
def test_gather_of_ten_frames_decodes_at_most_ten_gops(videos, db, keyframes, partition_size):
    sc = make_client(db, partition_size)
    rng = np.random.default_rng(4)
    names = [n for n in NAMES if SPECS[n]["n_frames"] >= 30]
    picks = [rng.choice(SPECS[n]["n_frames"], 10, replace=False).tolist() for n in names]
    got = sc.streams.Gather(video_input(sc, videos, names), picks).compute()
    for name, rows, frames in zip(names, picks, got):
        assert indices(frames) == rows
        kf = keyframes[name]
        assert decoded(videos, name) == gop_prefix_cost(kf, rows), name
        longest_gop = int(np.diff(np.append(kf, SPECS[name]["n_frames"])).max())
        assert decoded(videos, name) <= 10 * longest_gop


@pytest.mark.parametrize("partition_size", [5, 13, None])
def test_stencil_over_a_range_decodes_exactly_its_window(videos, db, keyframes, partition_size):
    sc = make_client(db, partition_size)
    names = ["h264_gop12", "h264_gop50", "mpeg4_gop12"]
    inp = video_input(sc, videos, names)
    spans = [(30, 47), (55, 80), (13, 14)]
    diff = sc.ops.FrameDifference(frame=sc.streams.Range(inp, spans))
    got = diff.compute()
    for name, (a, b), out in zip(names, spans, got):
        # the stencil lives in the Range's stream: row 0 is clamped to the range's first row
        assert decoded(videos, name) == gop_prefix_cost(keyframes[name], range(a, b)), name
        frames = video.read_frames(video.index_video(videos[name]), np.arange(a, b))
        f = frames.astype(np.int16)
        want = np.abs(f - np.concatenate([f[:1], f[:-1]])).astype(np.uint8)
        np.testing.assert_array_equal(out, want)


@pytest.mark.parametrize("partition_size", [5, 13, None])
def test_range_of_a_stencil_decodes_the_neighbours_it_needs(videos, db, keyframes,
                                                            partition_size):
    sc = make_client(db, partition_size)
    names = ["h264_gop12", "h264_gop50", "h264_gop1"]
    wide = sc.ops.vs_wide_window(frame=video_input(sc, videos, names))  # offsets -2, 0, +3
    spans = [(30, 47), (55, 80), (0, 4)]
    got = sc.streams.Range(wide, spans).compute()
    for name, (a, b), out in zip(names, spans, got):
        n = SPECS[name]["n_frames"]
        assert out == [(clamp(i - 2, n), i, clamp(i + 3, n)) for i in range(a, b)]
        needed = {clamp(i + o, n) for i in range(a, b) for o in (-2, 0, 3)}
        assert decoded(videos, name) == gop_prefix_cost(keyframes[name], needed), name
    assert decoded(videos, "h264_gop1") == 7  # rows 0..6: each its own keyframe


def test_stencil_over_stride_and_gather(videos, db):
    sc = make_client(db, 5)
    inp = video_input(sc, videos, ["h264_gop12", "h264_vfr"])
    strided = sc.streams.Stride(inp, [10, 4])
    got = sc.ops.vs_wide_window(frame=strided).compute()
    for out, k, n in zip(got, (10, 4), (120, 90)):
        m = -(-n // k)
        assert out == [(clamp(i - 2, m) * k, i * k, clamp(i + 3, m) * k) for i in range(m)]
    gathered = sc.streams.Gather(inp, [[50, 3, 77], [89, 0]])
    assert sc.ops.vs_window(frame=gathered).compute() == [
        [(50, 50, 3), (50, 3, 77), (3, 77, 77)], [(89, 89, 0), (89, 0, 0)]]


def test_bounded_state_warm_up_decodes_only_its_rows(videos, db, keyframes):
    sc = make_client(db, 5)
    history = sc.ops.VsHistory(frame=video_input(sc, videos, ["h264_gop12"]))
    got = sc.streams.Gather(history, [[0, 10, 25, 26, 27]]).compute()
    assert got == [[(0,), (7, 8, 9, 10), (22, 23, 24, 25), (23, 24, 25, 26), (24, 25, 26, 27)]]
    needed = [0, 7, 8, 9, 10] + list(range(22, 28))
    assert decoded(videos, "h264_gop12") == gop_prefix_cost(keyframes["h264_gop12"], needed)


@pytest.mark.parametrize("partition_size", [5, 13])
def test_bounded_state_over_a_whole_video_is_partition_independent(videos, db, partition_size):
    sc = make_client(db, partition_size)
    got = sc.ops.VsHistory(frame=video_input(sc, videos, ["h264_gop50", "h264_short"])).compute()
    for out, n in zip(got, (130, 7)):
        assert out == [tuple(range(max(0, i - 3), i + 1)) for i in range(n)]


def test_unbounded_state_sees_the_video_in_order(videos, db):
    sc = make_client(db, 5)
    inp = video_input(sc, videos, ["h264_gop12", "h264_bframes"])
    counted = sc.ops.VsCount(frame=inp, tag=["a", "b"])
    assert counted.compute() == [[("a", 0, i + 1) for i in range(120)],
                                 [("b", 0, i + 1) for i in range(70)]]
    assert counted.row(0, 57) == ("a", 0, 58)


# ------------------------------------------------------------------------------------------
# Slice / Unslice: per-slice state, stencils and warm-up inside a slice
# ------------------------------------------------------------------------------------------

SLICINGS = {
    "all": (lambda sc: sc.partitioner.all(25),
            lambda n: [list(range(i, min(i + 25, n))) for i in range(0, n, 25)]),
    "strided": (lambda sc: sc.partitioner.strided(3, 8),
                lambda n: [list(range(0, n, 3))[i:i + 8] for i in range(0, -(-n // 3), 8)]),
    "range": (lambda sc: sc.partitioner.range(17, 61),
              lambda n: [list(range(17, min(61, n)))]),
    "ranges": (lambda sc: sc.partitioner.ranges([(40, 70), (10, 45), (0, 3)]),
               lambda n: [list(range(a, min(b, n))) for a, b in [(40, 70), (10, 45), (0, 3)]]),
    "strided_range": (lambda sc: sc.partitioner.strided_range(5, 100, 7),
                      lambda n: [list(range(5, min(100, n), 7))]),
}


@pytest.mark.parametrize("partition_size", [5, 12, None])
@pytest.mark.parametrize("slicing", list(SLICINGS))
def test_slices_restart_state_and_keep_windows_inside(videos, db, slicing, partition_size):
    sc = make_client(db, partition_size)
    names = ["h264_gop12", "h264_gop50"]
    make_spec, slices_of = SLICINGS[slicing]
    inp = video_input(sc, videos, names)
    sliced = sc.streams.Slice(inp, [make_spec(sc), make_spec(sc)])
    per_video = [slices_of(SPECS[name]["n_frames"]) for name in names]
    assert sliced.lengths == [len(r) for slices in per_video for r in slices]
    tags = [sp.SliceList([f"{name}/{j}" for j in range(len(slices))])
            for name, slices in zip(names, per_video)]
    outputs = {
        "frames": sliced,
        "window": sc.ops.vs_window(frame=sliced),
        "history": sc.ops.VsHistory(frame=sliced),
        "count": sc.ops.VsCount(frame=sliced, tag=tags),
    }
    for what, stream in outputs.items():
        got = sc.streams.Unslice(stream).compute()
        for name, slices, out in zip(names, per_video, got):
            want = []
            for j, rows in enumerate(slices):
                m = len(rows)
                for i, r in enumerate(rows):
                    if what == "frames":
                        want.append(r)
                    elif what == "window":  # clamped to the slice's own ends
                        want.append((rows[clamp(i - 1, m)], r, rows[clamp(i + 1, m)]))
                    elif what == "history":  # warm-up never reaches before the slice
                        want.append(tuple(rows[max(0, i - 3):i + 1]))
                    else:  # new_stream with the slice's tag, then reset, at each slice
                        want.append((f"{name}/{j}", rows[0], i + 1))
            result = indices(out) if what == "frames" else out
            assert result == want, (what, name)


def test_slice_then_op_then_unslice_keeps_partitions_per_slice(videos, db):
    sc = make_client(db, 12)
    sliced = sc.streams.Slice(video_input(sc, videos, ["h264_gop12"]),
                              [sc.partitioner.all(30)])
    diff = sc.streams.Unslice(sc.ops.FrameDifference(frame=sliced))
    out = diff.compute()[0]
    frames = video.read_frames(video.index_video(videos["h264_gop12"]), np.arange(120))
    f = frames.astype(np.int16)
    for start in range(0, 120, 30):  # the first row of every slice differs from itself only
        assert not out[start].any()
        np.testing.assert_array_equal(out[start + 1], np.abs(f[start + 1] - f[start]))
    assert video.decode_stats()[videos["h264_gop12"]] == 120 + 120  # compute + read_frames


# ------------------------------------------------------------------------------------------
# threads and a 2-worker LocalCluster give the same frames
# ------------------------------------------------------------------------------------------


def _on(client, partition_size: int) -> sp.Client:
    return sp.Client(address=client.distributed, db_path=client._db_path,
                     partition_size=partition_size, show_progress=False)


def test_sampling_and_stencils_match_on_both_schedulers(client, videos):
    sc = _on(client, 12)
    names = ["h264_gop12", "h264_gop50", "h264_vfr"]
    inp = video_input(sc, videos, names)
    strided = sc.streams.Stride(inp, [30, 7, 4])
    gathered = sc.streams.Gather(inp, [[119, 0, 60, 60], [129, 49, 50], [3, 88]])
    windows = sc.ops.vs_window(frame=strided)
    got_s, got_g, got_w = (s.compute() for s in (strided, gathered, windows))
    assert [indices(g) for g in got_s] == [list(range(0, n, k))
                                           for n, k in zip((120, 130, 90), (30, 7, 4))]
    assert [indices(g) for g in got_g] == [[119, 0, 60, 60], [129, 49, 50], [3, 88]]
    for out, n, k in zip(got_w, (120, 130, 90), (30, 7, 4)):
        m = -(-n // k)
        assert out == [(clamp(i - 1, m) * k, i * k, clamp(i + 1, m) * k) for i in range(m)]
    diff = sc.ops.FrameDifference(frame=sc.streams.Range(inp, [(20, 40), (45, 55), (0, 3)]))
    reference = make_client(client._db_path, 5)  # threads, other partitions
    want = sc.ops.FrameDifference(frame=sc.streams.Range(
        video_input(reference, videos, names), [(20, 40), (45, 55), (0, 3)]))
    for a, b in zip(diff.compute(), reference.compute_collections([want])[0]):
        np.testing.assert_array_equal(a, b)


def test_per_slice_state_matches_on_both_schedulers(client, videos):
    sc = _on(client, 5)
    sliced = sc.streams.Slice(video_input(sc, videos, ["h264_gop12"]),
                              [sc.partitioner.ranges([(50, 80), (0, 20)])])
    counted = sc.streams.Unslice(sc.ops.VsCount(frame=sliced, tag=[sp.SliceList(["x", "y"])]))
    history = sc.streams.Unslice(sc.ops.VsHistory(frame=sliced))
    assert counted.compute() == [[("x", 50, i + 1) for i in range(30)]
                                 + [("y", 0, i + 1) for i in range(20)]]
    rows = list(range(50, 80)) + list(range(20))
    starts = [0] * 30 + [30] * 20
    assert history.compute() == [[tuple(rows[max(s, i - 3):i + 1]) for i, s in
                                  zip(range(50), starts)]]


# ------------------------------------------------------------------------------------------
# save_mp4
# ------------------------------------------------------------------------------------------


def _read_back(path: str) -> tuple[list[np.ndarray], Any]:
    with av.open(path) as c:
        s = c.streams.video[0]
        info = (s.codec_context.name, s.codec_context.pix_fmt, s.width, s.height)
        frames = [f.to_ndarray(format="rgb24") for f in c.decode(s)]
    return frames, info


def test_save_mp4_round_trip_odd_size(videos, db, tmp_path):
    sc = make_client(db, 12)
    inp = video_input(sc, videos, ["h264_gop12", "h264_gop50"])
    small = sc.ops.Resize(frame=sc.streams.Stride(inp, [3, 5]), width=[81, 81], height=[49, 49])
    want = small.compute()
    path = str(tmp_path / "clip.video")  # written exactly there, no extension added
    assert small.save_mp4(path, stream_index=1) == path
    assert sorted(os.listdir(tmp_path)) == ["clip.video"]
    frames, (codec, pix_fmt, width, height) = _read_back(path)
    assert (codec, pix_fmt, width, height) == ("h264", "yuv444p", 81, 49)  # the exact size
    assert len(frames) == len(want[1]) == 26
    got = np.stack(frames)
    assert indices(got) == list(range(0, 130, 5))
    err = np.abs(got.astype(np.int16) - want[1].astype(np.int16))
    assert err.mean() < 4 and np.percentile(err, 99) < 40


def test_save_mp4_of_a_video_stream_and_fps(videos, db, tmp_path):
    sc = make_client(db, 13)
    inp = video_input(sc, videos, ["h264_odd"])
    path = str(tmp_path / "odd.mp4")
    sc.streams.Range(inp, [(5, 40)]).save_mp4(path)
    frames, (codec, pix_fmt, width, height) = _read_back(path)
    assert (codec, pix_fmt, width, height) == ("h264", "yuv444p", 161, 97)
    assert indices(frames) == list(range(5, 40))
    with av.open(path) as c:
        assert float(c.streams.video[0].average_rate) == pytest.approx(24.0)


def test_save_mp4_of_a_stream_with_nulls_and_of_non_frames(videos, db, tmp_path):
    sc = make_client(db, 12)
    inp = video_input(sc, videos, ["h264_gop12"])
    path = str(tmp_path / "nulls.mp4")
    sc.streams.RepeatNull(sc.streams.Range(inp, [(0, 10)]), [3]).save_mp4(path, fps=10)
    frames, _ = _read_back(path)
    assert indices(frames) == list(range(10))  # nulls are skipped
    with pytest.raises(ScannerTypeError):
        sc.ops.vs_index(frame=inp).save_mp4(str(tmp_path / "x.mp4"))
    assert not os.path.exists(tmp_path / "x.mp4")


# ------------------------------------------------------------------------------------------
# bad input: the right error, at the call, naming the stream and the value
# ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def bad_files(videos, tmp_path_factory) -> dict[str, str]:
    folder = tmp_path_factory.mktemp("bad")
    data = pathlib.Path(videos["h264_gop12"]).read_bytes()
    files = {}

    def write(name: str, content: bytes) -> None:
        files[name] = str(folder / name)
        pathlib.Path(files[name]).write_bytes(content)

    write("text.mp4", b"this is not a video\n" * 50)
    write("empty.mp4", b"")
    write("random.mp4", np.random.default_rng(1).integers(0, 256, 50_000, np.uint8).tobytes())
    write("truncated.mp4", data[: len(data) * 6 // 10])  # index at the end: cut off
    write("header_only.mp4", data[:64])
    corrupt = bytearray(data)
    n = len(corrupt)
    corrupt[n * 4 // 10: n * 6 // 10] = np.random.default_rng(0).integers(
        0, 256, n * 6 // 10 - n * 4 // 10, np.uint8).tobytes()
    write("corrupt_middle.mp4", bytes(corrupt))
    files["audio.m4a"] = make_audio(str(folder / "audio.m4a"), seconds=0.3)
    os.makedirs(folder / "folder.mp4")
    files["folder.mp4"] = str(folder / "folder.mp4")
    files["missing.mp4"] = str(folder / "missing.mp4")
    return files


BAD_AT_INPUT = {
    "missing.mp4": VideoNotFoundError,
    "text.mp4": VideoError,
    "empty.mp4": VideoError,
    "random.mp4": VideoError,
    "truncated.mp4": VideoError,
    "header_only.mp4": VideoError,
    "audio.m4a": VideoError,
    "folder.mp4": VideoError,
}


@pytest.mark.parametrize("fname", list(BAD_AT_INPUT))
def test_bad_video_file_fails_at_input(bad_files, db, fname):
    sc = make_client(db)
    stream = sp.NamedVideoStream(sc, "bad", path=bad_files[fname])  # lazy: no error yet
    with pytest.raises(BAD_AT_INPUT[fname]) as info:
        sc.io.Input([stream])
    assert isinstance(info.value, ScannerError)
    assert bad_files[fname] in str(info.value)  # names the file ...
    assert "'bad'" in str(info.value)  # ... and the stream
    err = info.value  # FFmpeg's exception is not shown (raised ``from None``)
    assert err.__cause__ is None and (err.__context__ is None or err.__suppress_context__)
    if fname == "missing.mp4":
        assert isinstance(info.value, FileNotFoundError)
    if fname == "audio.m4a":
        assert "no video track" in str(info.value)
    assert video.decode_stats() == {}


def test_a_bad_file_among_good_ones_fails_at_input(videos, bad_files, db):
    sc = make_client(db)
    streams = [sp.NamedVideoStream(sc, "good", path=videos["h264_gop12"]),
               sp.NamedVideoStream(sc, "gone", path=bad_files["missing.mp4"])]
    with pytest.raises(FileNotFoundError, match="'gone'.*missing.mp4"):
        sc.io.Input(streams)


def test_corrupt_region_found_while_decoding_names_the_file_and_row(bad_files, db):
    sc = make_client(db, 12)
    inp = sc.io.Input([sp.NamedVideoStream(sc, "corrupt", path=bad_files["corrupt_middle.mp4"])])
    assert inp.lengths == [120]  # demuxing alone does not see it
    # the intact part decodes
    assert indices(sc.streams.Range(inp, [(0, 24)]).compute()[0]) == list(range(24))
    with pytest.raises(VideoError, match=r"row \d+") as info:
        inp.compute()
    assert bad_files["corrupt_middle.mp4"] in str(info.value)
    with pytest.raises(VideoError, match=r"row \d+"):
        sc.ops.FrameDifference(frame=sc.streams.Stride(inp, [2])).compute()


def test_corrupt_region_error_names_the_stream(bad_files, db):
    sc = make_client(db, 12)
    inp = sc.io.Input([sp.NamedVideoStream(sc, "damaged", path=bad_files["corrupt_middle.mp4"])])
    with pytest.raises(VideoError, match=r"'damaged'.*row \d+|row \d+.*'damaged'"):
        inp.compute()


def test_file_removed_after_input(db, tmp_path):
    path = make_video(str(tmp_path / "gone.mp4"), n_frames=24, gop=12)
    sc = make_client(db)
    inp = sc.io.Input([sp.NamedVideoStream(sc, "gone", path=path)])
    os.remove(path)
    with pytest.raises(VideoNotFoundError, match="gone.mp4"):
        inp.compute()


def test_truncated_file_with_index_at_front_reads_what_is_there(videos, db, tmp_path):
    full = str(tmp_path / "front.mp4")
    with av.open(videos["h264_gop12"]) as src, \
            av.open(full, "w", options={"movflags": "+faststart"}) as dst:
        s_in = src.streams.video[0]
        s_out = dst.add_stream_from_template(s_in)
        for packet in src.demux(s_in):
            if packet.dts is not None:
                packet.stream = s_out
                dst.mux(packet)
    data = pathlib.Path(full).read_bytes()
    cut = tmp_path / "front_cut.mp4"
    cut.write_bytes(data[: len(data) * 6 // 10])
    sc = make_client(db, 12)
    inp = sc.io.Input([sp.NamedVideoStream(sc, "cut", path=str(cut))])
    n = inp.lengths[0]
    assert 0 < n < 120
    assert indices(inp.compute()[0]) == list(range(n))
    assert indices(sc.streams.Stride(inp, [10]).compute()[0]) == list(range(0, n, 10))


def _call_errors(sc, inp):
    """(call, expected class, text the message must hold) for bad stream-operation arguments;
    stream 1 (length 130) is the offending one."""
    s = sc.streams
    return [
        (lambda: s.Gather(inp, [[0, 5], [3, 130]]), RowIndexError, ["stream 1", "130"]),
        (lambda: s.Gather(inp, [[0], [-1]]), RowIndexError, ["stream 1", "-1"]),
        (lambda: s.Range(inp, [(0, 5), (50, 20)]), ScannerValueError, ["stream 1", "50", "20"]),
        (lambda: s.Ranges(inp, [[(0, 5)], [(1, 2), (9, 3)]]), ScannerValueError,
         ["stream 1", "9", "3"]),
        (lambda: s.StridedRange(inp, [(0, 5, 1), (0, 50, 0)]), ScannerValueError,
         ["stream 1", "0"]),
        (lambda: s.Stride(inp, [2, 0]), ScannerValueError, ["stream 1", "0"]),
        (lambda: s.Stride(inp, [2, -3]), ScannerValueError, ["stream 1", "-3"]),
        (lambda: s.Stride(inp, [2, 1.5]), ScannerTypeError, ["stream 1", "1.5"]),
        (lambda: s.Stride(inp, [2]), ScannerValueError, ["1 value", "2 stream"]),
        (lambda: s.Repeat(inp, [1, 0]), ScannerValueError, ["stream 1", "0"]),
        (lambda: s.RepeatNull(inp, [1, -2]), ScannerValueError, ["stream 1", "-2"]),
        (lambda: s.Slice(s.Slice(inp, [sc.partitioner.all(10)] * 2), [sc.partitioner.all(3)] * 2),
         ScannerValueError, ["Slice", "sliced"]),
        (lambda: s.Slice(inp, [sc.partitioner.all(10), sc.partitioner.range(40, 30)]),
         ScannerValueError, ["40", "30"]),
        (lambda: s.Unslice(inp), ScannerValueError, ["not sliced"]),
    ]


def test_bad_stream_operation_arguments_fail_at_the_call(videos, db):
    sc = make_client(db, 12)
    inp = video_input(sc, videos, ["h264_gop12", "h264_gop50"])
    builtin = {RowIndexError: IndexError, ScannerValueError: ValueError,
               ScannerTypeError: TypeError}
    for call, cls, words in _call_errors(sc, inp):
        with pytest.raises(cls) as info:
            call()  # the graph-building call itself raises: nothing computed
        assert isinstance(info.value, ScannerError) and isinstance(info.value, builtin[cls])
        for word in words:
            assert word in str(info.value), (str(info.value), word)
    assert video.decode_stats() == {}
    # a Gather on a sampled stream checks against that stream's length
    with pytest.raises(IndexError, match="length 4"):
        sc.streams.Gather(sc.streams.Stride(inp, [30, 30]), [[4], [0]])
    assert video.decode_stats() == {}


def test_range_past_the_end_is_cut_like_a_slice(videos, db):
    sc = make_client(db, 12)
    inp = video_input(sc, videos, ["h264_short", "h264_gop12"])
    ranged = sc.streams.Range(inp, [(5, 1000), (200, 300)])
    assert ranged.lengths == [2, 0]
    got = ranged.compute()
    assert indices(got[0]) == [5, 6] and len(got[1]) == 0


def test_compute_decodes_into_one_array_without_a_final_copy(videos, db):
    from scanner_nb import runtime

    sc = make_client(db, 12)
    (frames,) = sc.io.Input([sp.NamedVideoStream(sc, "inplace", path=videos["h264_gop12"])]).compute()
    assert runtime._RESULT_BUFFERS.get(id(frames)) is frames  # the buffer itself, not a copy
    assert indices(frames) == list(range(len(frames)))
    memory = np.zeros((6, 4, 4, 3), np.uint8)
    (again,) = sc.io.Input([sp.MemoryStream(memory)]).compute()
    assert not np.shares_memory(again, memory) and np.array_equal(again, memory)
