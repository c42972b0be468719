"""Indexing the videos of an ``sc.io.Input``: all at once, on a cluster's workers, the client
keeping a light index (keyframes and frame count) and the workers the full one."""

from __future__ import annotations

import logging
import os
import pickle
from typing import Any

import numpy as np
import pytest

import scanner_nb as sp
from scanner_nb.samples import frame_index, make_video
from scanner_nb.video import index_cache_path, index_video, read_frames


@sp.register_python_op()
def numbered(config, frame: sp.FrameType) -> Any:
    return frame_index(frame)


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> list[str]:
    """Six short clips of 20 to 45 frames, keyframes every 8."""
    folder = tmp_path_factory.mktemp("clips")
    return [make_video(str(folder / f"c{i}.mp4"), n_frames=20 + 5 * i, gop=8) for i in range(6)]


def _indexed_here() -> list[str]:
    from scanner_nb.video import index as index_module

    return sorted({key[0][0] for key in index_module._FULL})


def test_a_cluster_indexes_the_inputs_on_its_workers(cluster, clips, tmp_path):
    distributed = pytest.importorskip("distributed")
    with distributed.Client(cluster) as dclient, sp.Client(
            address=dclient, db_path=str(tmp_path / "db"), show_progress=False) as sc:
        videos = [sp.NamedVideoStream(sc, f"c{i}", path=p) for i, p in enumerate(clips)]
        frames = sc.io.Input(videos)
        # the client keeps light indexes: keyframes and counts, no timestamps
        assert all(v.index.is_light and v.index.pts is None for v in videos)
        assert [len(v) for v in videos] == [20 + 5 * i for i in range(6)]
        assert [v.index.keyframes.tolist()[:3] for v in videos] == [[0, 8, 16]] * 6
        # the workers demuxed them (each keeps the full indexes it made) ...
        on_workers = set().union(*dclient.run(_indexed_here).values())
        assert set(clips) <= on_workers
        # ... and cached them in the database, where a worker without them finds them
        cache = os.path.join(str(tmp_path / "db"), ".video-index")
        assert sorted(os.listdir(cache)) == sorted(
            os.path.basename(index_cache_path(p, cache)) for p in clips)
        result = sc.ops.numbered(frame=sc.streams.Stride(frames, [3] * 6)).compute()
        assert result == [list(range(0, 20 + 5 * i, 3)) for i in range(6)]
        assert [frame_index(f) for f in videos[5].load(rows=[0, 44])] == [0, 44]


def test_local_threads_index_at_once_and_keep_full_indexes(clips, tmp_path, caplog):
    db = str(tmp_path / "db")
    with sp.Client(db_path=db, show_progress=False) as sc:
        videos = [sp.NamedVideoStream(sc, f"c{i}", path=p) for i, p in enumerate(clips)]
        sc.io.Input(videos)
        assert not any(v.index.is_light for v in videos)
        assert [len(v) for v in videos] == [20 + 5 * i for i in range(6)]
    with caplog.at_level(logging.DEBUG, logger="scanner_nb"), sp.Client(
            db_path=db, show_progress=False) as sc:
        frames = sc.io.Input([sp.NamedVideoStream(sc, f"c{i}", path=p)
                              for i, p in enumerate(clips)])
        assert sc.ops.numbered(frame=frames).compute()[2] == list(range(30))
    assert caplog.text.count("read from the cache") == len(clips)


def test_a_bad_video_among_many_names_its_stream(clips, tmp_path):
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"not a video at all" * 100)
    with sp.Client(db_path=str(tmp_path / "db"), show_progress=False) as sc:
        videos = [sp.NamedVideoStream(sc, "good", path=clips[0]),
                  sp.NamedVideoStream(sc, "broken", path=str(bad))]
        with pytest.raises(sp.VideoError, match=r"NamedVideoStream 'broken'.*bad\.mp4"):
            sc.io.Input(videos)


def test_a_light_index_is_small_and_finds_its_full_index(tmp_path):
    path = make_video(str(tmp_path / "long.mp4"), n_frames=600, gop=50, width=64, height=48)
    cache = str(tmp_path / "cache")
    index = index_video(path, cache)
    light = index.summary()
    assert light.is_light and len(light) == 600 and light.summary() is light
    assert light.keyframes.tolist() == list(range(0, 600, 50))
    assert light.metadata == index.metadata
    assert len(pickle.dumps(light)) < len(pickle.dumps(index)) - 4000  # no 600 timestamps
    assert light.full() == index
    frames = read_frames(light, [0, 299, 599])
    assert [frame_index(f) for f in frames] == [0, 299, 599]
    with pytest.raises(sp.ScannerValueError, match="either pts"):
        sp.video.VideoIndex(path, 64, 48, 24.0, np.arange(3), [0], 1, "h264", frames=3)


def test_a_light_index_of_a_changed_file_says_so(tmp_path):
    from scanner_nb.video import index as index_module

    path = make_video(str(tmp_path / "v.mp4"), n_frames=30, gop=10)
    light = index_video(path, str(tmp_path / "cache")).summary()
    make_video(path, n_frames=40, gop=10)  # replaced by another video
    index_module._FULL.clear()  # a fresh process: the full index must be found again
    with pytest.raises(sp.VideoError, match="changed since it was indexed"):
        light.full()


def test_a_damaged_or_foreign_cache_is_indexed_again(tmp_path):
    path = make_video(str(tmp_path / "v.mp4"), n_frames=30, gop=10)
    cache = str(tmp_path / "cache")
    index = index_video(path, cache)
    entry = index_cache_path(path, cache)
    with open(entry, "rb") as f:
        good = f.read()
    for damaged in (good[:-3], good[:40], good + b"tail", b"PK\x03\x04 a zip", b"",
                    good.replace(b'"arrays": [30', b'"arrays": [3000000')):
        with open(entry, "wb") as f:
            f.write(damaged)
        assert index_video(path, cache) == index
        with open(entry, "rb") as f:
            assert f.read() == good  # written anew
