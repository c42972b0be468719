"""Tests of scanner_nb.video (index, decode, partition planning, mp4 encoding) and
scanner_nb.samples, on real small videos made with make_video."""

from __future__ import annotations

import doctest
import io
import os
import pathlib
import pickle
from concurrent.futures import ThreadPoolExecutor
from fractions import Fraction

import av
import numpy as np
import pytest

from scanner_nb import samples, video
from scanner_nb.errors import (
    RowIndexError,
    ScannerError,
    ScannerValueError,
    VideoError,
    VideoNotFoundError,
)
from scanner_nb.samples import draw_frame, frame_index, make_audio, make_video
from scanner_nb.video import (
    VideoIndex,
    decode_stats,
    encode_mp4,
    index_video,
    plan_partitions,
    read_frames,
    reset_decode_stats,
)

N = 120  # frames in most test videos

# name -> make_video keyword arguments (and the file extension)
SPECS = {
    "h264_gop12": dict(ext="mp4"),
    "mpeg4_gop12": dict(ext="mp4", codec="mpeg4"),
    "h264_gop1": dict(ext="mp4", gop=1),
    "h264_gop50": dict(ext="mp4", gop=50),
    "h264_odd": dict(ext="mp4", width=161, height=97),
    "mpeg4_odd": dict(ext="mp4", codec="mpeg4", width=161, height=97),
    "h264_vfr": dict(ext="mp4", vfr=True),
    "h264_bframes": dict(ext="mp4", bframes=2),
    "mkv_vfr_bframes": dict(ext="mkv", vfr=True, bframes=3),
    "ts_bframes": dict(ext="ts", bframes=2),
    "avi_mpeg4": dict(ext="avi", codec="mpeg4"),
}


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    """All test videos, made once: name -> absolute path."""
    folder = tmp_path_factory.mktemp("videos")
    out = {}
    for name, spec in SPECS.items():
        spec = dict(spec)
        ext = spec.pop("ext")
        out[name] = make_video(str(folder / f"{name}.{ext}"), n_frames=N, **spec)
    return out


@pytest.fixture(scope="module")
def indexes(videos):
    return {name: index_video(path) for name, path in videos.items()}


@pytest.fixture(autouse=True)
def _fresh_readers():
    video.close_readers()
    reset_decode_stats()
    yield
    video.close_readers()


def _gop(name: str) -> int:
    return SPECS[name].get("gop", 12)


def _indices(frames: np.ndarray) -> list[int]:
    return [frame_index(f) for f in frames]


# ------------------------------------------------------------------------------------------
# index_video
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(SPECS))
def test_index_values(name, videos, indexes):
    index = indexes[name]
    spec = SPECS[name]
    assert index.path == os.path.abspath(videos[name])
    assert len(index) == N
    assert (index.width, index.height) == (spec.get("width", 160), spec.get("height", 96))
    assert index.codec == spec.get("codec", "h264")
    assert index.keyframes.dtype == np.int64 and index.pts.dtype == np.int64
    assert index.keyframes.tolist() == list(range(0, N, _gop(name)))
    assert np.all(np.diff(index.pts) > 0)
    assert isinstance(index.time_base, Fraction)
    assert index.fps == pytest.approx(24.0, rel=1e-3)
    assert index.size == os.path.getsize(videos[name])


def test_index_is_immutable_hashable_and_picklable(indexes):
    index = indexes["h264_gop12"]
    with pytest.raises(ValueError):
        index.pts[0] = 5
    again = pickle.loads(pickle.dumps(index))
    assert again == index and hash(again) == hash(index)
    assert index != indexes["h264_gop1"]
    assert "120 frames" in repr(index)


def test_keyframe_at_or_before(indexes):
    index = indexes["h264_gop12"]
    assert [index.keyframe_at_or_before(r) for r in (0, 11, 12, 13, 119)] == [0, 0, 12, 12, 108]
    with pytest.raises(RowIndexError, match="row 120"):
        index.keyframe_at_or_before(120)
    with pytest.raises(IndexError):
        index.keyframe_at_or_before(-1)


def test_vfr_timestamps_vary(indexes):
    vfr, cfr = indexes["h264_vfr"], indexes["h264_gop12"]
    assert len(set(np.diff(vfr.pts).tolist())) > 1
    assert len(set(np.diff(cfr.pts).tolist())) == 1
    # durations cycle 0.5, 1, 1.5, 1 frame periods
    d = np.diff(vfr.pts)[:4]
    assert (d / d[0]).tolist() == [1, 2, 3, 2]


@pytest.mark.parametrize("name", ["avi_mpeg4", "ts_bframes", "mkv_vfr_bframes"])
def test_index_ignores_lying_container_metadata(name, videos, indexes):
    # AVI claims 1440 frames (it counts 1/288 s ticks) and 288 fps; TS and MKV give no count
    with av.open(videos[name]) as c:
        s = c.streams.video[0]
        claimed = (s.frames, float(s.average_rate or 0))
    assert claimed[0] != N or abs(claimed[1] - 24) > 1  # the container does not tell the truth
    index = indexes[name]
    assert len(index) == N
    assert index.fps == pytest.approx(24.0, rel=1e-3)
    rows = np.array([0, 11, 12, 50, 119])
    assert _indices(read_frames(index, rows)) == rows.tolist()


def test_bframes_index_is_display_order(videos, indexes):
    with av.open(videos["h264_bframes"]) as c:
        packet_pts = [p.pts for p in c.demux(video=0) if p.size]
    assert packet_pts != sorted(packet_pts)  # decode order differs from display order
    assert indexes["h264_bframes"].pts.tolist() == sorted(packet_pts)


def test_edit_list_hides_leading_frames(videos, tmp_path):
    # shift timestamps so the first 5 frames fall before the mp4 edit list's start: the
    # demuxer flags them "discard", so the video starts at frame 5, mid-GOP
    path = str(tmp_path / "edit.mp4")
    with av.open(videos["h264_gop12"]) as src, av.open(path, "w") as dst:
        s_in = src.streams.video[0]
        s_out = dst.add_stream_from_template(s_in)
        step = int(np.diff(index_video(videos["h264_gop12"]).pts[:2])[0])
        for packet in src.demux(s_in):
            if packet.dts is not None:
                packet.pts -= 5 * step
                packet.dts -= 5 * step
                packet.stream = s_out
                dst.mux(packet)
    with av.open(path) as c:
        shown = [f.pts for f in c.decode(video=0)]
    index = index_video(path)
    assert len(index) == len(shown) == N - 5
    assert index.keyframes.tolist() == [0] + list(range(7, N - 5, 12))
    assert _indices(read_frames(index, [0, 6, 7, N - 6])) == [5, 11, 12, N - 1]
    video.close_readers()
    assert _indices(read_frames(index, [3])) == [8]
    assert _indices(read_frames(index, np.arange(N - 5))) == list(range(5, N))


def test_index_cache(videos, tmp_path, monkeypatch):
    path = videos["h264_gop12"]
    cache = tmp_path / "cache"
    first = index_video(path, cache_dir=cache)
    files = list(cache.iterdir())
    assert len(files) == 1 and files[0].stat().st_size < 10_000

    calls = []

    def no_demux(*args, **kwargs):
        calls.append(args)
        raise AssertionError("index_video demuxed although the cache is fresh")

    monkeypatch.setattr(av, "open", no_demux)
    second = index_video(path, cache_dir=cache)
    assert second == first and calls == []
    assert second.keyframes.tolist() == first.keyframes.tolist()

    # a changed file (mtime) is indexed again
    st = os.stat(path)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    try:
        with pytest.raises(AssertionError):
            index_video(path, cache_dir=cache)
        assert len(calls) == 1
    finally:
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    monkeypatch.undo()

    # a damaged cache file is ignored and replaced
    files[0].write_bytes(b"garbage")
    assert index_video(path, cache_dir=cache) == first
    assert index_video(path, cache_dir=cache) == first


def test_cache_dir_not_writable_is_not_an_error(videos, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    index = index_video(videos["h264_gop12"], cache_dir=blocker / "sub")
    assert len(index) == N


# ------------------------------------------------------------------------------------------
# read_frames
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(SPECS))
def test_read_frames_rows(name, indexes):
    index = indexes[name]
    gop = _gop(name)
    rng = np.random.default_rng(sum(map(ord, name)))
    row_sets = [
        [0],
        [N - 1],
        [0, N - 1],
        [gop - 1, gop] if gop < N else [N - 2, N - 1],
        list(range(max(gop - 3, 0), min(gop + 3, N))),
        *(np.sort(rng.choice(N, size=k, replace=False)).tolist() for k in (2, 5, 9, 17)),
    ]
    for rows in row_sets:
        frames = read_frames(index, np.array(rows, dtype=np.int64))
        assert frames.shape == (len(rows), index.height, index.width, 3)
        assert frames.dtype == np.uint8
        assert _indices(frames) == rows, rows


@pytest.mark.parametrize("name", ["h264_gop12", "mpeg4_gop12", "h264_bframes", "mkv_vfr_bframes"])
def test_full_pass_decodes_each_frame_once(name, indexes):
    index = indexes[name]
    frames = read_frames(index, np.arange(N))
    assert _indices(frames) == list(range(N))
    assert decode_stats() == {index.path: N}


def test_read_frames_matches_plain_pyav(videos, indexes):
    with av.open(videos["h264_odd"]) as c:
        plain = np.stack([f.to_ndarray(format="rgb24") for f in c.decode(video=0)])
    ours = read_frames(indexes["h264_odd"], np.arange(N))
    np.testing.assert_array_equal(ours, plain)


def test_stepping_forward_does_not_seek(indexes):
    index = indexes["h264_gop12"]
    assert _indices(read_frames(index, [5])) == [5]
    assert decode_stats()[index.path] == 6  # from the keyframe at 0
    seeks = video.decode._seek_stats()[index.path]
    for r in range(6, 40):  # across the keyframes at 12, 24, 36
        assert _indices(read_frames(index, [r])) == [r]
        assert decode_stats()[index.path] == r + 1  # exactly one more frame each time
    assert video.decode._seek_stats()[index.path] == seeks


def test_skipping_ahead_within_a_gop_decodes_forward(indexes):
    index = indexes["h264_gop50"]
    read_frames(index, [3])
    seeks = video.decode._seek_stats()[index.path]
    read_frames(index, [20])
    assert decode_stats()[index.path] == 4 + 17
    assert video.decode._seek_stats()[index.path] == seeks


def test_sparse_rows_decode_only_their_gops(indexes):
    index = indexes["h264_gop12"]
    rows = np.array([0, 30, 61, 119])
    assert _indices(read_frames(index, rows)) == rows.tolist()
    expected = sum(int(r) - index.keyframe_at_or_before(int(r)) + 1 for r in rows)
    assert decode_stats()[index.path] == expected == 1 + 7 + 2 + 12


def test_gather_of_ten_frames_decodes_at_most_ten_gops(indexes):
    index = indexes["h264_gop12"]
    rows = np.sort(np.random.default_rng(3).choice(N, 10, replace=False))
    assert _indices(read_frames(index, rows)) == rows.tolist()
    assert decode_stats()[index.path] <= 10 * 12


def test_backward_and_repeated_reads(indexes):
    index = indexes["h264_bframes"]
    assert _indices(read_frames(index, [100])) == [100]
    assert _indices(read_frames(index, [5])) == [5]
    assert _indices(read_frames(index, [5])) == [5]
    assert _indices(read_frames(index, [5, 3, 5, 100])) == [5, 3, 5, 100]  # any order works too


def test_reads_after_the_end_of_the_file(indexes):
    index = indexes["mpeg4_gop12"]
    assert _indices(read_frames(index, [N - 2, N - 1])) == [N - 2, N - 1]
    assert _indices(read_frames(index, [N - 1])) == [N - 1]
    assert _indices(read_frames(index, [0, N - 1])) == [0, N - 1]


def test_read_empty_rows(indexes):
    index = indexes["h264_odd"]
    out = read_frames(index, np.array([], dtype=np.int64))
    assert out.shape == (0, 97, 161, 3)


def test_row_outside_the_video(indexes):
    index = indexes["h264_gop12"]
    for rows in ([N], [-1], [0, N + 5]):
        with pytest.raises(RowIndexError, match=index.path) as info:
            read_frames(index, rows)
        assert isinstance(info.value, IndexError)


def test_concurrent_reads_from_threads(indexes):
    index = indexes["h264_bframes"]

    def work(seed):
        rng = np.random.default_rng(seed)
        for _ in range(8):
            rows = np.sort(rng.choice(N, size=int(rng.integers(1, 6)), replace=False))
            assert _indices(read_frames(index, rows)) == rows.tolist()
        return True

    with ThreadPoolExecutor(6) as ex:
        assert all(ex.map(work, range(12)))
    pool = video.decode._pool
    assert 1 <= len(pool.idle[(index._key, True)]) <= video.decode._MAX_READERS_PER_FILE
    assert pool.count[(index._key, True)] == len(pool.idle[(index._key, True)])


def test_file_changed_or_removed_after_indexing(videos, tmp_path):
    path = str(tmp_path / "v.mp4")
    make_video(path, n_frames=24, gop=6)
    index = index_video(path)
    make_video(path, n_frames=30, gop=6, width=64, height=48)
    with pytest.raises(VideoError, match="changed"):
        read_frames(index, [0])
    os.remove(path)
    with pytest.raises(VideoNotFoundError, match="v.mp4"):
        read_frames(index, [0])


# ------------------------------------------------------------------------------------------
# errors
# ------------------------------------------------------------------------------------------


def _check_translated(err: BaseException, path: str) -> None:
    assert isinstance(err, ScannerError)
    assert os.path.abspath(path) in str(err)
    assert err.__cause__ is None and (err.__context__ is None or err.__suppress_context__)


def test_missing_file(tmp_path):
    path = str(tmp_path / "nope.mp4")
    with pytest.raises(VideoNotFoundError) as info:
        index_video(path)
    assert isinstance(info.value, FileNotFoundError) and isinstance(info.value, VideoError)
    _check_translated(info.value, path)


def test_text_file(tmp_path):
    path = tmp_path / "notes.mp4"
    path.write_text("this is not a video\n" * 50)
    with pytest.raises(VideoError) as info:
        index_video(path)
    assert not isinstance(info.value, VideoNotFoundError)
    _check_translated(info.value, str(path))


def test_directory(tmp_path):
    with pytest.raises(VideoError, match="not a regular file"):
        index_video(tmp_path)


@pytest.mark.parametrize("fname,codec", [("tone.m4a", "aac"), ("tone.mkv", "mp2")])
def test_audio_only_file(tmp_path, fname, codec):
    path = make_audio(str(tmp_path / fname), seconds=0.3, codec=codec)
    with av.open(path) as c:
        assert len(c.streams.audio) == 1 and len(c.streams.video) == 0
    with pytest.raises(VideoError, match="no video track") as info:
        index_video(path)
    _check_translated(info.value, path)


def test_zero_frames(tmp_path):
    path = str(tmp_path / "empty.mp4")
    with av.open(path, "w") as c:
        s = c.add_stream("libx264", rate=24)
        s.width, s.height, s.pix_fmt = 64, 48, "yuv420p"
        c.start_encoding()
    with pytest.raises(VideoError) as info:
        index_video(path)
    _check_translated(info.value, path)


def test_truncated_file_without_index(videos, tmp_path):
    data = pathlib.Path(videos["h264_gop12"]).read_bytes()  # moov at the end: cut off
    path = tmp_path / "cut.mp4"
    path.write_bytes(data[: len(data) * 6 // 10])
    with pytest.raises(VideoError) as info:
        index_video(path)
    _check_translated(info.value, str(path))


def test_truncated_file_with_index_at_front(videos, tmp_path):
    # remux with the index at the front, then cut: the readable frames stay readable
    full = str(tmp_path / "front.mp4")
    faststart = {"movflags": "+faststart"}
    with av.open(videos["h264_gop12"]) as src, av.open(full, "w", options=faststart) as dst:
        s_in = src.streams.video[0]
        s_out = dst.add_stream_from_template(s_in)
        for packet in src.demux(s_in):
            if packet.dts is not None:
                packet.stream = s_out
                dst.mux(packet)
    data = pathlib.Path(full).read_bytes()
    assert data[4:8] == b"ftyp" and data.find(b"moov") < data.find(b"mdat")
    path = tmp_path / "front_cut.mp4"
    path.write_bytes(data[: len(data) * 6 // 10])
    index = index_video(path)
    assert 0 < len(index) < N
    assert _indices(read_frames(index, np.arange(len(index)))) == list(range(len(index)))


def test_corrupt_middle(videos, tmp_path):
    data = bytearray(pathlib.Path(videos["h264_gop12"]).read_bytes())
    n = len(data)
    rng = np.random.default_rng(0)
    a, b = n * 4 // 10, n * 6 // 10
    data[a:b] = rng.integers(0, 256, b - a, dtype=np.uint8).tobytes()
    path = str(tmp_path / "corrupt.mp4")
    pathlib.Path(path).write_bytes(data)
    index = index_video(path)  # demuxing alone does not notice
    assert len(index) == N
    assert _indices(read_frames(index, np.arange(12))) == list(range(12))  # before the damage
    with pytest.raises(VideoError, match=r"row \d+") as info:
        read_frames(index, np.arange(N))
    _check_translated(info.value, path)
    # the reader that failed was dropped; the file is still usable where it is intact
    assert _indices(read_frames(index, [0, 1])) == [0, 1]


# ------------------------------------------------------------------------------------------
# plan_partitions
# ------------------------------------------------------------------------------------------


def _synthetic_index(keyframes, n):
    return VideoIndex("/x.mp4", 16, 16, 24.0, np.arange(n), keyframes, Fraction(1, 24), "h264")


def _check_plan(index, rows, size, parts):
    keyframes = index.keyframes
    flat = np.concatenate(parts).tolist() if parts else []
    assert flat == list(rows)  # every row once, in order

    def gop_of(p):
        return np.searchsorted(keyframes, p, side="right") - 1

    for p in parts:
        assert 0 < len(p) <= size  # memory follows the partition size, never the GOP
    gops = [set(gop_of(p).tolist()) for p in parts]
    for a in range(len(gops)):  # a GOP shared by partitions: only a long one, in pieces
        for b in range(a + 1, len(gops)):
            for g in gops[a] & gops[b]:
                assert int(np.sum(gop_of(rows) == g)) > size
                assert gops[a] == gops[b] == {g}  # its pieces hold nothing else


def test_plan_partitions_properties():
    rng = np.random.default_rng(7)
    for _ in range(200):
        n = int(rng.integers(1, 300))
        k = int(rng.integers(1, n + 1))
        keyframes = np.unique(np.concatenate([[0], rng.choice(n, size=k, replace=True)]))
        index = _synthetic_index(keyframes, n)
        rows = np.unique(rng.choice(n, size=int(rng.integers(0, n + 1)), replace=True))
        size = int(rng.integers(1, 80))
        parts = plan_partitions(index, rows, size)
        _check_plan(index, rows, size, parts)


def test_plan_partitions_examples(indexes):
    index = indexes["h264_gop12"]
    parts = plan_partitions(index, np.arange(N), 30)
    assert [(int(p[0]), int(p[-1])) for p in parts] == [(0, 23), (24, 47), (48, 71), (72, 95),
                                                        (96, 119)]
    # a GOP longer than the partition size is split into even pieces (decoded as a chain)
    long = indexes["h264_gop50"]
    assert [len(p) for p in plan_partitions(long, np.arange(N), 8)] == [8, 7, 7, 7, 7, 7, 7] * 2 + [
        7, 7, 6]
    # sparse rows: one partition per GOP prefix when each fills the size
    assert [p.tolist() for p in plan_partitions(index, [11, 13, 50], 12)] == [[11], [13, 50]]
    assert plan_partitions(index, np.array([], dtype=np.int64), 10) == []


def test_plan_partitions_errors(indexes):
    index = indexes["h264_gop12"]
    with pytest.raises(ScannerValueError):
        plan_partitions(index, [1, 2], 0)
    with pytest.raises(ScannerValueError):
        plan_partitions(index, [3, 2], 10)
    with pytest.raises(RowIndexError):
        plan_partitions(index, [5, N], 10)


def test_partitions_decode_no_gop_twice(indexes):
    index = indexes["h264_gop12"]
    rows = np.arange(0, N, 5)
    parts = plan_partitions(index, rows, 16)
    for p in parts:
        video.close_readers()  # as if each partition ran in its own worker
        assert _indices(read_frames(index, p)) == p.tolist()
    # each GOP decoded once, up to its last needed row
    expected = sum(
        int(rows[(rows >= k) & (rows < k + 12)].max()) - k + 1 for k in range(0, N, 12)
    )
    assert decode_stats()[index.path] == expected


# ------------------------------------------------------------------------------------------
# encode_mp4
# ------------------------------------------------------------------------------------------


def _smooth_frames(n, h, w):
    y = np.arange(h)[:, None]
    x = np.arange(w)[None, :]
    return [
        np.stack(
            np.broadcast_arrays(
                x * 180 // w + 30 + i, y * 180 // h + 30, (x + y) * 100 // (w + h) + 60
            ),
            axis=-1,
        ).astype(np.uint8)
        for i in range(n)
    ]


def _decode_all(source):
    with av.open(source) as c:
        s = c.streams.video[0]
        info = (s.codec_context.name, s.codec_context.pix_fmt, s.average_rate)
        frames = [f.to_ndarray(format="rgb24") for f in c.decode(s)]
    return info, frames


def test_encode_mp4_round_trip_odd_size(tmp_path):
    frames = _smooth_frames(30, 97, 161)
    dest = tmp_path / "clip.bin"  # written exactly there, whatever the extension
    n, nbytes = encode_mp4(iter(frames), dest, fps=24)
    assert n == 30 and nbytes == dest.stat().st_size
    assert sorted(os.listdir(tmp_path)) == ["clip.bin"]
    data = dest.read_bytes()
    assert data.find(b"moov") < data.find(b"mdat")  # index at the front (faststart)
    (codec, pix_fmt, rate), decoded = _decode_all(str(dest))
    assert (codec, pix_fmt, rate) == ("h264", "yuv444p", 24)  # odd sizes need 4:4:4
    assert len(decoded) == 30
    assert decoded[0].shape == (97, 161, 3)  # the exact size
    for a, b in zip(decoded, frames):
        err = np.abs(a.astype(int) - b.astype(int))
        assert err.mean() < 3 and err.max() <= 24
    # for browsers: padded to even, 4:2:0; the padding repeats the last row and column
    encode_mp4(iter(frames), dest, fps=24, pad_odd=True)
    (codec, pix_fmt, rate), decoded = _decode_all(str(dest))
    assert pix_fmt == "yuv420p" and decoded[0].shape == (98, 162, 3)
    for a, b in zip(decoded, frames):
        assert np.abs(a[:97, :161].astype(int) - b.astype(int)).mean() < 3
        assert np.abs(a[97, :161].astype(int) - a[96, :161].astype(int)).mean() < 3
        assert np.abs(a[:97, 161].astype(int) - a[:97, 160].astype(int)).mean() < 3


def test_encode_mp4_gray_into_buffer():
    frames = [f[:, :, 1] for f in _smooth_frames(10, 48, 64)]
    buf = io.BytesIO(b"head")
    buf.seek(4)
    n, nbytes = encode_mp4(frames[:5] + [f[:, :, None] for f in frames[5:]], buf, fps=10)
    assert n == 10 and nbytes == len(buf.getvalue()) - 4
    (_, _, rate), decoded = _decode_all(io.BytesIO(buf.getvalue()[4:]))
    assert len(decoded) == 10 and rate == 10
    for a, b in zip(decoded, frames):
        for c in range(3):
            assert np.abs(a[..., c].astype(int) - b.astype(int)).mean() < 3


def test_encode_mp4_made_frames_read_back(tmp_path):
    frames = [draw_frame(i, 96, 64) for i in range(20)]
    path = tmp_path / "idx.mp4"
    encode_mp4(frames, path, fps=12.5)
    index = index_video(path)
    assert len(index) == 20 and index.fps == pytest.approx(12.5)
    assert _indices(read_frames(index, np.arange(20))) == list(range(20))


def test_encode_mp4_errors(tmp_path):
    dest = tmp_path / "out.mp4"
    with pytest.raises(ScannerValueError, match="at least one frame"):
        encode_mp4([], dest)
    good = np.zeros((16, 16, 3), np.uint8)
    with pytest.raises(ScannerValueError, match="one size"):
        encode_mp4([good, np.zeros((8, 16, 3), np.uint8)], dest)
    with pytest.raises(ScannerValueError, match="uint8"):
        encode_mp4([good.astype(np.float32)], dest)
    with pytest.raises(ScannerValueError, match="shape"):
        encode_mp4([np.zeros((4, 4, 2), np.uint8)], dest)
    with pytest.raises(ScannerValueError, match="crf"):
        encode_mp4([good], dest, crf=99)
    with pytest.raises(ScannerValueError, match="fps"):
        encode_mp4([good], dest, fps=0)
    assert os.listdir(tmp_path) == []  # nothing half-written
    with pytest.raises(VideoError, match="cannot write"):
        encode_mp4([good], tmp_path / "no" / "such" / "dir.mp4")


# ------------------------------------------------------------------------------------------
# samples
# ------------------------------------------------------------------------------------------


def test_frame_index_survives_resize_and_gray():
    for i in (0, 1, 255, 256, 4095, 65535):
        frame = draw_frame(i, 160, 96)
        assert frame_index(frame) == i
        vf = av.VideoFrame.from_ndarray(frame, format="rgb24")
        for w, h in ((64, 40), (320, 192), (161, 97)):
            small = vf.reformat(width=w, height=h, interpolation="BILINEAR").to_ndarray()
            assert frame_index(small) == i
        gray = (frame @ np.array([0.299, 0.587, 0.114])).astype(np.uint8)
        assert frame_index(gray) == i
        assert frame_index(gray[:, :, None]) == i


def test_frame_index_rejects_other_images():
    with pytest.raises(ValueError, match="no readable index"):
        frame_index(np.full((96, 160, 3), 128, np.uint8))
    with pytest.raises(ValueError):
        draw_frame(2**16)


def test_make_video_arguments(tmp_path):
    with pytest.raises(ValueError):
        make_video(tmp_path / "a.mp4", codec="vp9")
    with pytest.raises(ValueError):
        make_video(tmp_path / "a.mp4", n_frames=0)
    with pytest.raises(ValueError):
        make_video(tmp_path / "a.mp4", gop=0)


def test_doctests():
    for module in (video, samples):
        result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
        assert result.failed == 0 and result.attempted > 0, module.__name__
