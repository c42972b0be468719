"""Awkward real-world videos (issue 13): every frame right on every access path.

Each file is made by :mod:`video_footage` with PyAV or the FFmpeg binary: a phone-style rotated
mp4, a rotate-270 + mirrored mov, a TS that changes resolution, an mp4 with bytes overwritten
mid-GOP, a TS cut off mid-GOP, an mkv whose frames share timestamps, an odd-size clip and a file
with two video tracks. The reference is a plain single-threaded PyAV decode of the whole file,
turned as a player shows it; a row is damaged when it or an earlier frame of its GOP decodes
as corrupt. Every access path (compute at several partition sizes, Stride, Gather, Range,
load(rows), row(), sc.run) is compared with it on the threaded scheduler and a LocalCluster,
with damaged rows raising (the default) and as null elements (``damaged="null"``).
"""

from __future__ import annotations

import os
import subprocess
from typing import Any

import numpy as np
import pytest
import video_footage as vf

import scanner_nb as sp
from scanner_nb import video
from scanner_nb.errors import ScannerValueError, VideoError
from scanner_nb.samples import frame_index

MAKERS = {
    "rotated": lambda d: vf.rotated(d, 90),
    "rotated_hflip": lambda d: vf.rotated(d, 270, hflip=True, ext="mov"),
    "resolution_change": vf.resolution_change,
    "damaged": vf.damaged,
    "broken": vf.broken_packet,
    "truncated": vf.truncated,
    "duplicated": vf.duplicated_timestamps,
    "odd_size": vf.odd_size,
    "two_tracks": vf.two_tracks,
}
NAMES = list(MAKERS)


class Reference:
    """What a player shows for each row of one file, and which rows are damaged."""

    def __init__(self, path: str, track: int = 0, rotation: int = 0, hflip: bool = False,
                 broken: range = range(0)):
        decoded = vf.plain_decode(path, track)
        self.frames = [vf.display(f, rotation, hflip) for f, _, _ in decoded]
        self.damaged: set[int] = set(broken)
        tainted = False
        for r, (_, corrupt, key) in enumerate(decoded):
            tainted = corrupt or (tainted and not key)
            if tainted:
                self.damaged.add(r)

    def check(self, got, rows, lossy: bool = False) -> None:
        """``got`` holds exactly the frames of ``rows`` (close to them when stored ``lossy``)."""
        assert len(got) == len(rows)
        for frame, r in zip(got, rows):
            frame = np.asarray(frame)
            if lossy:
                assert frame.shape == self.frames[r].shape, r
                assert np.abs(frame.astype(int) - self.frames[r]).mean() < 4, r
            else:
                assert np.array_equal(frame, self.frames[r]), r


@pytest.fixture(scope="module")
def footage(tmp_path_factory) -> dict[str, str]:
    folder = str(tmp_path_factory.mktemp("footage"))
    return {name: make(folder) for name, make in MAKERS.items()}


@pytest.fixture(scope="module")
def references(footage) -> dict[str, Reference]:
    turns = {"rotated": (90, False), "rotated_hflip": (270, True)}
    refs = {name: Reference(path, 0, *turns.get(name, (0, False)))
            for name, path in footage.items() if name != "broken"}
    # the decoder fails at frame 50, and the rest of its GOP (to keyframe 80) with it; the
    # other frames are those of the file before the damage
    intact = os.path.join(os.path.dirname(footage["broken"]), "broken-intact.mp4")
    refs["broken"] = Reference(intact, broken=range(50, 80))
    return refs


def good_and_bad(ref: Reference) -> tuple[list[int], list[int]]:
    rows = range(len(ref.frames))
    return [r for r in rows if r not in ref.damaged], sorted(ref.damaged)


def assert_names_row(err: BaseException, path: str, bad: list[int]) -> None:
    msg = str(err)
    assert path in msg
    named = [int(w) for w in msg.replace(",", " ").split() if w.isdigit()]
    assert set(named) & set(bad), msg


# ------------------------------------------------------------------------------------------
# the index: rotation, length, timestamps, tracks
# ------------------------------------------------------------------------------------------


def test_index_metadata(footage, references):
    rotated = video.index_video(footage["rotated"])
    assert (rotated.rotation, rotated.hflip, rotated.display_size) == (90, False, (48, 64))
    assert rotated.metadata["rotation"] == 90
    mirrored = video.index_video(footage["rotated_hflip"])
    assert (mirrored.rotation, mirrored.hflip) == (270, True)
    dup = video.index_video(footage["duplicated"])
    assert dup.by_order and len(dup) == len(references["duplicated"].frames) == 60
    for name in NAMES:  # len() is what the decoder can give
        assert len(video.index_video(footage[name])) == len(references[name].frames), name
    second = video.index_video(footage["two_tracks"], track=1)
    assert (len(second), second.width, second.height, second.stream_index) == (20, 96, 64, 1)
    with pytest.raises(VideoError, match="no video track 2"):
        video.index_video(footage["two_tracks"], track=2)


def test_rotation_matches_the_ffmpeg_player(footage):
    import imageio_ffmpeg

    for name in ("rotated", "rotated_hflip"):
        index = video.index_video(footage[name])
        ours = video.read_frames(index, np.arange(len(index)))
        raw = subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-i", footage[name],
                              "-f", "rawvideo", "-pix_fmt", "rgb24", "-"],
                             capture_output=True, check=True).stdout
        assert np.array_equal(np.frombuffer(raw, np.uint8).reshape(ours.shape), ours)
        coded = video.read_frames(index, [3], rotate=False)
        assert coded.shape == (1, 48, 64, 3)


def test_read_frames_every_row_alone_and_together(footage, references):
    for name in NAMES:
        index, ref = video.index_video(footage[name]), references[name]
        good, bad = good_and_bad(ref)
        for r in range(len(index)):  # one row at a time: the same answer as in one go
            if r in ref.damaged:
                with pytest.raises(VideoError) as info:
                    video.read_frames(index, [r])
                assert_names_row(info.value, index.path, [r])
            else:
                ref.check(video.read_frames(index, [r]), [r])
        ref.check(video.read_frames(index, good), good)
        assert video.damaged_rows(index).tolist() == bad, name
        if bad:
            with pytest.raises(VideoError) as info:
                video.read_frames(index, np.arange(len(index)))
            assert_names_row(info.value, index.path, bad)
        video.close_readers(index.path)


def test_damage_is_found_the_same_way_every_time(footage, references):
    index = video.index_video(footage["damaged"])
    bad = sorted(references["damaged"].damaged)
    assert bad and bad[-1] - bad[0] + 1 == len(bad) > 1  # the rest of the GOP is tainted
    for _ in range(4):
        for rows in ([bad[-1]], [bad[0] - 1, bad[-1]], list(range(bad[0] - 2, bad[-1] + 3))):
            video.close_readers(index.path)
            with pytest.raises(VideoError, match=f"row {rows[-1] if len(rows) == 1 else bad[0]}"):
                video.read_frames(index, rows)


def test_resize_option_scales_to_the_first_size(footage):
    index = video.index_video(footage["resolution_change"])
    mixed = video.read_frames(index, [0, 45])
    assert isinstance(mixed, list) and [f.shape for f in mixed] == [(48, 64, 3), (96, 128, 3)]
    assert video.read_frames(index, [40, 45]).shape == (2, 96, 128, 3)  # one size: an array
    assert video.read_frames(index, [0, 45], resize=True).shape == (2, 48, 64, 3)


def test_save_mp4_keeps_odd_sizes(footage, tmp_path):
    import av

    sc = sp.Client(db_path=str(tmp_path / "db"), show_progress=False)
    odd = sp.NamedVideoStream(sc, "odd", path=footage["odd_size"])
    out = odd.save_mp4(str(tmp_path / "odd.mp4"))
    with av.open(out) as c:
        sizes = {(f.width, f.height) for f in c.decode(video=0)}
    assert sizes == {(65, 49)}
    frames = [np.full((241, 321, 3), 9 * i, np.uint8) for i in range(5)]
    video.encode_mp4(frames, str(tmp_path / "big.mp4"))
    assert video.index_video(str(tmp_path / "big.mp4")).display_size == (321, 241)
    assert video.read_frames(video.index_video(str(tmp_path / "big.mp4")), [4]).shape == (
        1, 241, 321, 3)
    sc.close()


# ------------------------------------------------------------------------------------------
# every access path, on both schedulers
# ------------------------------------------------------------------------------------------


def _paths(sc, source, ref, rows_all):
    """(label, rows asked, thunk) for every access path over one video."""
    n = len(ref.frames)
    inp = sc.io.Input([source])
    gather = sorted({0, n // 3, n // 2 + 1, n - 2, 5})
    return [
        ("compute", rows_all, lambda: inp.compute()[0]),
        ("compute, partition 7", rows_all,
         lambda: inp.compute(perf_params=sp.PerfParams.manual(7, 7))[0]),
        ("Stride(3)", list(range(0, n, 3)), lambda: sc.streams.Stride(inp, [3]).compute()[0]),
        ("Gather", gather, lambda: sc.streams.Gather(inp, [gather]).compute()[0]),
        ("Range", list(range(n // 3, n - 1)),
         lambda: sc.streams.Range(inp, [(n // 3, n - 1)]).compute()[0]),
        ("load(rows)", gather, lambda: list(source.load(rows=gather))),
        ("row()", [n // 2 + 1], lambda: [inp.row(0, n // 2 + 1)]),
    ]


@pytest.mark.parametrize("name", NAMES)
def test_every_access_path(client, footage, references, name):
    ref = references[name]
    source = sp.NamedVideoStream(client, name, path=footage[name])
    good, bad = good_and_bad(ref)
    for label, rows, thunk in _paths(client, source, ref, list(range(len(ref.frames)))):
        if set(rows) & ref.damaged:
            with pytest.raises(VideoError) as info:
                thunk()
            assert_names_row(info.value, footage[name], sorted(set(rows) & ref.damaged))
        else:
            got = thunk()
            if name == "resolution_change" and label.startswith("compute"):
                assert isinstance(got, list)  # frames at their own sizes, never rescaled
            ref.check(got, rows)
    if bad:  # the good rows alone come back right on every path
        got = client.streams.Gather(client.io.Input([source]), [good]).compute()[0]
        ref.check(got, good)


@pytest.mark.parametrize("name", ["rotated_hflip", "damaged", "duplicated", "two_tracks"])
def test_sc_run_stores_the_frames(client, footage, references, name):
    ref = references[name]
    track = 1 if name == "two_tracks" else 0
    if track:
        ref = Reference(footage[name], track=1)
    source = sp.NamedVideoStream(client, name, path=footage[name], stream_index=track)
    good, bad = good_and_bad(ref)
    frames = client.streams.Gather(client.io.Input([source]), [good])
    (stored,) = client.run(client.io.Output(frames, [sp.NamedVideoStream(client, "out")]),
                           show_progress=False)
    ref.check(list(stored.load()), good, lossy=True)  # stored frames may be compressed video
    if bad:
        everything = client.io.Input([source])
        with pytest.raises(VideoError) as info:
            client.run(client.io.Output(everything, [sp.NamedVideoStream(client, "all")]),
                       show_progress=False)
        assert_names_row(info.value, footage[name], bad)
        assert not sp.NamedVideoStream(client, "all").exists()


def test_rotate_false_keeps_the_coded_orientation(footage, tmp_path):
    sc = sp.Client(db_path=str(tmp_path / "db"), show_progress=False)
    turned = sp.NamedVideoStream(sc, "a", path=footage["rotated"])
    coded = sp.NamedVideoStream(sc, "b", path=footage["rotated"], rotate=False)
    a, b = sc.io.Input([turned, coded]).compute()
    assert a.shape == (30, 64, 48, 3) and b.shape == (30, 48, 64, 3)
    assert np.array_equal(a, np.rot90(b, 1, axes=(1, 2)))
    assert turned.metadata["rotation"] == 90
    sc.close()


def test_short_clips_decode_single_threaded(footage):
    index = video.index_video(footage["odd_size"])
    assert len(index) <= video.SHORT_CLIP_FRAMES
    video.read_frames(index, [0])
    assert (index._key, False) in video.decode._pool.idle
    video.close_readers(index.path)
    assert os.path.exists(index.path)


# ------------------------------------------------------------------------------------------
# damaged="null": the rows that cannot be decoded are null elements, the same on every path
# ------------------------------------------------------------------------------------------


@sp.register_python_op()
def vf_row(config, frame: sp.FrameType) -> Any:
    return frame_index(frame)


def assert_nulls(ref: Reference, got, rows) -> None:
    """``got`` is ``None`` at the damaged rows of ``rows`` and the exact frame elsewhere."""
    assert len(got) == len(rows)
    assert [r for frame, r in zip(got, rows) if frame is None] == [
        r for r in rows if r in ref.damaged]
    ref.check([f for f in got if f is not None], [r for r in rows if r not in ref.damaged])


@pytest.mark.parametrize("name", ["damaged", "broken", "truncated"])
def test_damaged_rows_are_null_on_every_access_path(client, footage, references, name):
    ref = references[name]
    n, bad = len(ref.frames), sorted(ref.damaged)
    assert bad and bad[-1] < n  # len() counts rows the decoder reaches, damaged or not
    source = sp.NamedVideoStream(client, name, path=footage[name], damaged="null")
    inp = client.io.Input([source])
    paths = _paths(client, source, ref, list(range(n)))
    mid = [bad[0] - 1, bad[0], bad[len(bad) // 2], bad[-1], min(bad[-1] + 1, n - 1)]
    paths += [
        ("Gather across the damage", mid, lambda: client.streams.Gather(inp, [mid]).compute()[0]),
        ("row(first damaged)", [bad[0]], lambda: [inp.row(0, bad[0])]),
        ("rows() (the preview's path)", mid, lambda: inp.rows(0, mid)),
        ("load()", list(range(n)), lambda: list(source.load())),
    ]
    for label, rows, thunk in paths:
        got = thunk()
        if set(rows) & ref.damaged:
            assert isinstance(got, list), label  # nulls: a list, as API.md says
        assert_nulls(ref, got, rows)
    # an op downstream gives null where its input is null
    assert client.ops.vf_row(frame=inp).compute()[0] == [
        None if r in ref.damaged else r for r in range(n)]
    assert source.damaged_rows() == bad
    # sc.run stores the nulls; loading gives them back
    (stored,) = client.run(client.io.Output(inp, [sp.NamedVideoStream(client, "stored")]),
                           show_progress=False)
    loaded = list(stored.load())
    assert [r for r, f in enumerate(loaded) if f is None] == bad
    ref.check([f for f in loaded if f is not None],
              [r for r in range(n) if r not in ref.damaged], lossy=True)


def test_the_same_rows_are_null_every_time(footage, references):
    """Decoding from any start, in any pieces, frame-threaded or not: the same null rows."""
    for name in ("damaged", "broken", "truncated"):
        index, ref = video.index_video(footage[name]), references[name]
        n, bad = len(index), sorted(ref.damaged)
        for _ in range(3):
            assert video.damaged_rows(index).tolist() == bad
            assert video.damaged_rows(index, step=7).tolist() == bad
            for rows in ([bad[-1]], list(range(bad[0] - 3, n)), [0, *bad[1::2]], bad[::-1]):
                video.close_readers(index.path)
                got = video.read_frames(index, rows, damaged="null")
                assert_nulls(ref, got, rows)
        assert video.damaged_rows(index, [0, bad[0], bad[-1]]).tolist() == sorted({bad[0], bad[-1]})
        video.close_readers(index.path)


def test_damaged_option_is_checked_and_kept_apart(footage, tmp_path):
    sc = sp.Client(db_path=str(tmp_path / "db"), show_progress=False)
    with pytest.raises(ScannerValueError, match="damaged must be 'raise' or 'null'"):
        sp.NamedVideoStream(sc, "v", path=footage["damaged"], damaged="skip")
    with pytest.raises(ScannerValueError, match="damaged must be"):
        video.read_frames(video.index_video(footage["damaged"]), [0], damaged=None)
    raising = sp.NamedVideoStream(sc, "a", path=footage["damaged"])
    nulls = sp.NamedVideoStream(sc, "b", path=footage["damaged"], damaged="null")
    assert raising.token != nulls.token  # different results: never one graph key
    bad = nulls.damaged_rows()
    assert raising.damaged_rows() == bad
    with pytest.raises(VideoError, match=f"row {bad[0]}"):
        list(raising.load(rows=[bad[0]]))
    assert list(nulls.load(rows=[bad[0]])) == [None]
    clean = sp.NamedVideoStream(sc, "c", path=footage["rotated"], damaged="null")
    assert clean.damaged_rows() == []
    frames = sc.io.Input([clean]).compute()[0]
    assert isinstance(frames, np.ndarray) and frames.shape == (30, 64, 48, 3)  # no nulls: array
    out = nulls.save_mp4(str(tmp_path / "kept"))  # the frames that decode
    assert len(video.index_video(out)) == len(video.index_video(footage["damaged"])) - len(bad)
    sc.close()


def test_a_row_the_decoder_skips_is_null_and_the_next_row_still_comes(tmp_path):
    """An index that lists a frame the decoder never gives (as a file whose packets claim a
    frame that decodes to nothing): that row is damaged, the rows after it are exact."""
    from dataclasses import replace

    from scanner_nb.samples import make_video

    real = video.index_video(make_video(str(tmp_path / "skip.mp4"), n_frames=30, gop=10))
    pts = real.pts.tolist()
    ghost = replace(real, pts=pts[:15] + [pts[14] + 1] + pts[15:], keyframes=[0, 10, 21])
    video.close_readers(real.path)
    try:
        got = video.read_frames(ghost, [14, 15, 16, 17], damaged="null")
        assert got[1] is None and [frame_index(f) for f in got[:1] + got[2:]] == [14, 15, 16]
        assert video.damaged_rows(ghost).tolist() == [15]
        with pytest.raises(VideoError, match="row 15 .* skipped"):
            video.read_frames(ghost, [15, 16])
        assert frame_index(video.read_frames(ghost, [16])[0]) == 15
    finally:
        video.close_readers(real.path)
