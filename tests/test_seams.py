"""Where the engine, storage, video and notebook pieces meet, as a user hits them (both
schedulers); each test failed before its fix."""

from __future__ import annotations

from typing import Any

import dask
from conftest import calls_in

import scanner_nb as sp
from scanner_nb.samples import frame_index, make_video


def store(sc, name, values, mode=sp.CacheMode.Error):
    stream = sc.io.Input([sp.MemoryStream(values)])
    return sc.run(sc.io.Output(stream, [sp.NamedStream(sc, name)]), cache_mode=mode,
                  show_progress=False)[0]


def test_a_stream_built_on_a_stored_stream_reads_that_version_after_an_overwrite(client):
    sc = client
    store(sc, "h", list(range(10)))
    handle = sp.NamedStream(sc, "h")
    built = sc.io.Input([handle])
    keys = built.__dask_keys__()
    store(sc, "h", list(range(100, 120)), sp.CacheMode.Overwrite)
    assert len(handle) == 20  # the handle names the stream: it sees the new version
    # the Stream built before keeps its version whole: its length, keys and data agree
    assert built.compute() == [list(range(10))]
    assert built.__dask_keys__() == keys
    rebuilt = sc.io.Input([handle])
    assert rebuilt.compute() == [list(range(100, 120))]
    assert rebuilt.__dask_keys__() != keys


def test_dask_compute_of_two_streams_over_one_video_decodes_and_runs_it_once(client, tmp_path):
    log = str(tmp_path / "calls")

    @sp.register_python_op(name="seams_logged_index")
    def logged(config, frame: sp.FrameType) -> Any:
        with open(log, "a") as f:
            f.write(f"{frame_index(frame)} ")
        return frame_index(frame)

    path = make_video(str(tmp_path / "long-gop.mp4"), n_frames=40, width=32, height=32, gop=40)
    video = client.io.Input([sp.NamedVideoStream(client, "v", path=path)])
    base = client.ops.seams_logged_index(frame=video).with_perf_params(sp.PerfParams.manual(8, 8))
    every_other, head = dask.compute(client.streams.Stride(base, [2]),
                                     client.streams.Range(base, [(0, 20)]))
    assert every_other == [list(range(0, 40, 2))] and head == [list(range(20))]
    assert sorted(map(int, calls_in(log))) == sorted(set(range(0, 40, 2)) | set(range(20)))
