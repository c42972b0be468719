"""Storing results: ``sc.io.Output``, ``sc.run``, stored streams, cache modes and faults.

Everything runs on the threaded scheduler and on a real 2-worker ``LocalCluster`` (the
``client`` fixture), writing real files under a temporary ``db_path``; one test round-trips a
``memory://`` database. Faults are injected for real: a kernel that raises, a worker process
killed with SIGKILL from inside a kernel.
"""

from __future__ import annotations

import collections.abc
import os
import pickle
import signal
import threading
import uuid
from collections.abc import Sequence
from typing import Any

import av
import dask.array as da
import numpy as np
import pytest
import xarray
import zarr
from conftest import calls_in

import scanner_nb as sp
from scanner_nb.samples import frame_index, make_video
from scanner_nb.storage import fs as storage_fs
from scanner_nb.storage.manifest import MANIFEST
from scanner_nb.types import Batch

N_FRAMES, WIDTH, HEIGHT, GOP, FPS = 60, 64, 48, 10, 30


# ------------------------------------------------------------------------------ ops and helpers


@sp.register_python_op(name="run_plus")
def plus(config, x: Any, by: int = 1000) -> Any:
    return x + by


@sp.register_python_op(name="run_logged")
def logged(config, x: Any, log: str, fail_at: int = -1) -> Any:
    """Appends ``x`` to the file ``log`` (works across processes); raises on row ``fail_at``."""
    with open(log, "a") as f:
        f.write(f"{x}\n")
    if x == fail_at:
        raise RuntimeError(f"cannot handle {x}")
    return x * 2


@sp.register_python_op(name="run_invert")
def invert(config, frame: sp.FrameType) -> sp.FrameType:
    return 255 - frame


@sp.register_python_op(name="run_batch_sizes", batch=16)
def batch_sizes(config, x: Sequence[Any]) -> Sequence[Any]:
    return [len(x)] * len(x)


def numbers(sc, *lengths, start=0):
    return sc.io.Input([sp.MemoryStream(list(range(start + 100_000 * i, start + 100_000 * i + n)))
                        for i, n in enumerate(lengths)])


def version_dirs(sc, name):
    path = os.path.join(sc.db.root, name)
    return sorted(p for p in os.listdir(path) if p.startswith("v-")) if os.path.isdir(path) else []


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    """A small H.264 clip whose frames carry their index (keyframe every GOP frames)."""
    path = tmp_path_factory.mktemp("video") / "clip.mp4"
    return make_video(path, n_frames=N_FRAMES, width=WIDTH, height=HEIGHT, fps=FPS, gop=GOP)


@pytest.fixture
def chunk_reads(monkeypatch):
    """Names of the chunk files read by stored-stream loads in this process, in order."""
    read = []
    real_file = storage_fs.read_file

    def read_file(fs, path, reader=None):
        if not path.endswith((MANIFEST, "lock.json")):
            read.append(path.rsplit("/", 1)[-1] if "/c/" not in path else
                        path[path.index("/c/") + 3:])
        return real_file(fs, path, reader)

    monkeypatch.setattr(storage_fs, "read_file", read_file)
    return read


# ------------------------------------------------------------------------------ store and load


def test_run_stores_and_returns_the_stored_streams(client):
    s = numbers(client, 1000, 130)
    out = client.io.Output(client.ops.run_plus(x=s), [sp.NamedStream(client, "a"),
                                                  sp.NamedStream(client, "b")])
    other = client.io.Output(numbers(client, 5), [sp.NamedStream(client, "c")])
    stored = client.run([out, other], sp.PerfParams.manual(8, 64), show_progress=False)
    assert [type(x) for x in stored] == [sp.NamedStream] * 3
    assert [x.name for x in stored] == ["a", "b", "c"]
    a, b, c = stored
    assert a.exists() and b.exists() and c.exists()
    assert (len(a), a.len(), len(b), len(c)) == (1000, 1000, 130, 5)
    assert list(a.load()) == [1000 + i for i in range(1000)]
    assert list(b.load()) == [101_000 + i for i in range(130)]
    assert list(c.load()) == [0, 1, 2, 3, 4]
    assert list(a.load(rows=[999, 0, 64, 64, 63])) == [1999, 1000, 1064, 1064, 1063]
    manifest = a.manifest()
    assert (manifest["type"], manifest["length"], manifest["chunk_rows"],
            manifest["num_chunks"]) == ("Any", 1000, 64, 16)
    # a fresh handle on the name sees the same stream
    assert list(sp.NamedStream(client, "b").load(rows=[129])) == [101_129]
    assert client.db.names() == ["a", "b", "c"]

    a.delete()
    assert not a.exists() and client.db.names() == ["b", "c"]
    assert not os.path.exists(os.path.join(client.db.root, "a"))
    with pytest.raises(sp.StreamNotFoundError, match="'a'") as info:
        a.load()
    assert isinstance(info.value, KeyError) and isinstance(info.value, sp.ScannerError)
    with pytest.raises(sp.StreamNotFoundError):
        len(a)
    a.delete()  # twice is fine


def test_load_is_lazy_and_reads_only_the_chunks_it_needs(local_client, chunk_reads):
    sc = local_client
    (stored,) = sc.run(sc.io.Output(numbers(sc, 1000), [sp.NamedStream(sc, "n")]),
                       sp.PerfParams.manual(10, 100), show_progress=False)
    it = stored.load()
    assert isinstance(it, collections.abc.Iterator) and chunk_reads == []
    assert [next(it), next(it)] == [0, 1]
    assert chunk_reads == ["0.elements"]
    del chunk_reads[:]
    assert list(stored.load(rows=[517, 530, 5, 999])) == [517, 530, 5, 999]
    assert chunk_reads == ["5.elements", "0.elements", "9.elements"]
    with pytest.raises(sp.RowIndexError, match="1000"):
        stored.load(rows=[1000])


def test_lossless_frames_are_stored_bit_exact_as_zarr(client, video, tmp_path, chunk_reads):
    frames = client.io.Input([sp.NamedVideoStream(client, "clip", path=video)])
    expected = frames.compute()[0]
    assert [frame_index(f) for f in expected] == list(range(N_FRAMES))
    out = client.io.Output(client.ops.run_invert(frame=frames).lossless(),
                           [sp.NamedVideoStream(client, "inv")])
    (stored,) = client.run(out, sp.PerfParams.manual(4, 20), show_progress=False)
    assert isinstance(stored, sp.NamedVideoStream) and len(stored) == N_FRAMES
    assert stored.manifest()["layout"] == "zarr" and stored.manifest()["chunk_rows"] == 20
    loaded = np.stack(list(stored.load()))
    assert loaded.dtype == np.uint8 and loaded.shape == (N_FRAMES, HEIGHT, WIDTH, 3)
    np.testing.assert_array_equal(loaded, 255 - expected)

    del chunk_reads[:]
    picked = list(stored.load(rows=[45, 3, 4]))
    np.testing.assert_array_equal(np.stack(picked), 255 - expected[[45, 3, 4]])
    assert chunk_reads == ["2/0/0/0", "0/0/0/0"]

    # the stored frames open by path with zarr, dask and xarray
    assert stored.zarr_path.endswith(".zarr")
    z = zarr.open(stored.zarr_path, mode="r")["frames"]
    assert z.shape == (N_FRAMES, HEIGHT, WIDTH, 3) and z.chunks[0] == 20
    np.testing.assert_array_equal(z[:], 255 - expected)
    array = da.from_zarr(stored.zarr_path, component="frames")
    np.testing.assert_array_equal(array[10:30].compute(), 255 - expected[10:30])
    dataset = xarray.open_zarr(stored.zarr_path)
    assert dataset["frames"].dims == ("frame", "y", "x", "channel")
    assert dataset.attrs["fps"] == FPS and dataset.attrs["type"] == "FrameType"
    assert dataset.attrs["rows"] == [0, N_FRAMES]
    np.testing.assert_array_equal(dataset["frames"][5:7].values, 255 - expected[5:7])

    # save_mp4 writes exactly the path asked for, and the frames decode back in order
    (plain,) = client.run(client.io.Output(frames.lossless(),
                                           [sp.NamedVideoStream(client, "plain")]),
                          show_progress=False)
    np.testing.assert_array_equal(np.stack(list(plain.load())), expected)
    (tmp_path / "mp4").mkdir()
    target = tmp_path / "mp4" / "out.video"
    assert plain.fps == stored.fps == FPS  # the source video's rate is kept in the manifest
    assert plain.save_mp4(str(target)) == str(target)
    assert os.listdir(tmp_path / "mp4") == ["out.video"]
    with av.open(str(target)) as container:
        assert container.streams.video[0].average_rate == FPS
        decoded = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    assert [frame_index(f) for f in decoded] == list(range(N_FRAMES))


def test_a_stored_stream_is_the_input_of_a_later_graph(client, video):
    (nums,) = client.run(client.io.Output(numbers(client, 300), [sp.NamedStream(client, "nums")]),
                         sp.PerfParams.manual(10, 50), show_progress=False)
    again = client.io.Input([sp.NamedStream(client, "nums")])
    assert again.lengths == [300] and again.type_name == "Any"
    assert client.ops.run_plus(x=again, by=1).compute() == [list(range(1, 301))]
    picked = client.streams.Gather(again, [[299, 0, 150]])
    assert picked.compute() == [[299, 0, 150]]
    (doubled,) = client.run(client.io.Output(client.ops.run_plus(x=again, by=5),
                                             [sp.NamedStream(client, "nums5")]),
                            show_progress=False)
    assert list(doubled.load()) == list(range(5, 305))

    frames = client.io.Input([sp.NamedVideoStream(client, "clip", path=video)])
    client.run(client.io.Output(frames, [sp.NamedVideoStream(client, "frames")]),
               sp.PerfParams.manual(5, 25), show_progress=False)
    stored = client.io.Input([sp.NamedVideoStream(client, "frames")])
    assert stored.type_name == "FrameType"
    (back,) = client.ops.run_invert(frame=client.streams.Stride(stored, [7])).compute()
    assert [frame_index(255 - f) for f in back] == list(range(0, N_FRAMES, 7))


@sp.types.register_type
class RunInterval:
    """A custom type stored through its own serialize: (start, end) as two little-endian int32."""

    def serialize(value):
        return np.asarray(value, dtype="<i4").tobytes()

    def deserialize(data):
        return tuple(int(v) for v in np.frombuffer(data, dtype="<i4"))


@sp.register_python_op(name="run_to_interval")
def to_interval(config, x: Any) -> RunInterval:
    return (x, x + 10)


def test_custom_type_is_stored_with_its_serialize(local_client, monkeypatch):
    sc = local_client
    out = sc.io.Output(sc.ops.run_to_interval(x=numbers(sc, 50)), [sp.NamedStream(sc, "spans")])
    (spans,) = sc.run(out, sp.PerfParams.manual(5, 20), show_progress=False)
    assert spans.manifest()["type"] == "RunInterval"
    assert list(spans.load()) == [(i, i + 10) for i in range(50)]
    with open(os.path.join(sc.db.root, "spans", spans.manifest()["version"], "0.elements"),
              "rb") as f:
        assert RunInterval.serialize((3, 13)) in f.read()  # the type's own bytes are on disk

    monkeypatch.delitem(sp.types._REGISTRY, "RunInterval")  # a process that never registered it
    for action in (lambda: spans.load(), lambda: spans.load(rows=[1]),
                   lambda: sc.io.Input([sp.NamedStream(sc, "spans")]).compute()):
        with pytest.raises(sp.ScannerError, match="'RunInterval'"):
            action()
    monkeypatch.undo()
    assert list(spans.load(rows=[49])) == [(49, 59)]


def test_batch_of_custom_type_pickles_where_the_type_was_never_registered(monkeypatch):
    """A worker gets a custom type only inside an OpSpec or a Batch, never by register_type."""
    import cloudpickle

    spec = sp.types.lookup_type("RunInterval")
    shipped = cloudpickle.dumps(spec)  # what a worker receives with an op's OpSpec
    monkeypatch.delitem(sp.types._REGISTRY, "RunInterval")
    cloudpickle.loads(shipped)
    batch = Batch(0, np.arange(2), [(1, 2), (3, 4)], None, "RunInterval")
    assert pickle.loads(cloudpickle.dumps(batch)).elements == [(1, 2), (3, 4)]


def test_custom_type_is_written_by_workers_that_never_registered_it(client):
    """A type registered in the notebook only: workers compute, move and write its elements."""

    @sp.types.register_type
    class RunSpan2:
        def serialize(value):
            return np.asarray(value, dtype="<i8").tobytes()

        def deserialize(data):
            return tuple(int(v) for v in np.frombuffer(data, dtype="<i8"))

    @sp.register_python_op(name="run_to_span2")
    def to_span2(config, x: Any) -> RunSpan2:
        return (x, -x)

    spans = client.ops.run_to_span2(x=numbers(client, 30))
    out = client.io.Output(spans, [sp.NamedStream(client, "span2")])
    (stored,) = client.run(out, sp.PerfParams.manual(4, 4), show_progress=False)
    assert stored.manifest()["num_chunks"] == 8
    assert list(stored.load()) == [(i, -i) for i in range(30)]
    # elements of several partitions cross processes, and a stored stream of it is an input
    assert spans.compute(perf_params=sp.PerfParams.manual(4, 4)) == [[(i, -i) for i in range(30)]]
    again = client.streams.Gather(client.io.Input([sp.NamedStream(client, "span2")]), [[29, 0]])
    assert again.compute() == [[(29, -29), (0, 0)]]


def test_each_chunk_is_written_by_the_worker_that_computed_it(cluster, tmp_path):
    distributed = pytest.importorskip("distributed")
    frames = np.random.default_rng(2).integers(0, 256, (80, 128, 128, 3), dtype=np.uint8)
    with sp.Client(address=cluster, db_path=str(tmp_path / "db"), show_progress=False) as sc:
        inverted = sc.ops.run_invert(frame=sc.io.Input([sp.MemoryStream(frames)]))
        with distributed.get_task_stream(client=sc.distributed) as tasks:
            (stored,) = sc.run(sc.io.Output(inverted.lossless(),
                                            [sp.NamedVideoStream(sc, "inv")]),
                               sp.PerfParams.manual(10, 10), show_progress=False)
        np.testing.assert_array_equal(np.stack(list(stored.load())), 255 - frames)
    ran_on = {t["key"]: t["worker"] for t in tasks.data}
    computed = {k[2]: w for k, w in ran_on.items() if str(k[0]).startswith("run_invert")}
    written = {k[1]: w for k, w in ran_on.items() if str(k[0]).startswith("store-inv")}
    assert sorted(written) == sorted(computed) == list(range(8))
    assert written == computed  # the chunk never travelled to another process to be written


# ------------------------------------------------------------------------------ perf params


def test_perf_params_map_onto_partitions_and_work_packets(client, video):
    s = numbers(client, 100)
    (stored,) = client.run(client.io.Output(client.ops.run_batch_sizes(x=s),
                                            [sp.NamedStream(client, "bs")]),
                           sp.PerfParams.manual(4, 32), show_progress=False)
    m = stored.manifest()
    assert (m["chunk_rows"], m["num_chunks"]) == (32, 4)
    assert set(stored.load()) == {4}  # work packet: at most 4 rows per execute of a batch op

    for bad in [(0, 10), (10, 5), (1.5, 10), (True, 10)]:
        with pytest.raises(sp.ScannerValueError):
            sp.PerfParams.manual(*bad)

    # estimate(): frames sized from the frame's bytes, other elements from the client
    estimate = sp.PerfParams.estimate()
    frames = client.io.Input([sp.NamedVideoStream(client, "clip", path=video)])
    rows = estimate.partition_size_for(frames)
    assert 1 <= rows <= (64 << 20) // (WIDTH * HEIGHT * 3)
    tiny = sp.PerfParams.estimate(memory_fraction=1e-9)
    assert tiny.partition_size_for(frames) == 1
    assert estimate.partition_size_for(s) == client.partition_size

    # partitions bigger than the budget (whole GOPs): fewer threads, never more memory
    from scanner_nb.run import _threads_within_budget

    one_gop = GOP * WIDTH * HEIGHT * 3
    expected_tiny = None if client.distributed else 1
    assert _threads_within_budget(client, tiny, one_gop) == expected_tiny
    assert _threads_within_budget(client, estimate, one_gop) is None
    assert _threads_within_budget(client, sp.PerfParams.manual(1, 1), one_gop) is None
    (stored,) = client.run(client.io.Output(frames, [sp.NamedVideoStream(client, "tiny")]), tiny,
                           show_progress=False)
    assert stored.manifest()["chunk_rows"] == 1  # partitions follow the size, even inside a GOP
    assert [frame_index(f) for f in stored.load()] == list(range(N_FRAMES))


# ------------------------------------------------------------------------------ cache modes


def test_cache_mode_error_refuses_before_any_work(client, tmp_path):
    client.run(client.io.Output(numbers(client, 10), [sp.NamedStream(client, "old")]),
               show_progress=False)
    version = client.db.manifest("old")["version"]
    log = str(tmp_path / "calls")
    s = client.ops.run_logged(x=numbers(client, 10, 20), log=log)
    out = client.io.Output(s, [sp.NamedStream(client, "new"), sp.NamedStream(client, "old")])
    with pytest.raises(sp.StreamExistsError, match="old"):
        client.run(out, show_progress=False)  # CacheMode.Error is the default
    with pytest.raises(sp.StreamExistsError):
        client.run(out, cache_mode=sp.CacheMode.Error, show_progress=False)
    assert calls_in(log) == []  # the kernel never ran
    assert not sp.NamedStream(client, "new").exists()  # nothing else was stored either
    assert client.db.manifest("old")["version"] == version
    assert list(sp.NamedStream(client, "old").load()) == list(range(10))


def test_cache_mode_ignore_skips_existing_outputs(client, tmp_path):
    client.run(client.io.Output(numbers(client, 10), [sp.NamedStream(client, "kept")]),
               show_progress=False)
    log = str(tmp_path / "calls")
    s = client.ops.run_logged(x=numbers(client, 10, 4, start=50), log=log)
    targets = [sp.NamedStream(client, "kept"), sp.NamedStream(client, "fresh")]
    stored = client.run(client.io.Output(s, targets), cache_mode=sp.CacheMode.Ignore,
                        show_progress=False)
    assert stored == targets  # skipped outputs are returned too, in order
    assert list(stored[0].load()) == list(range(10))
    assert list(stored[1].load()) == [2 * (100_050 + i) for i in range(4)]
    assert sorted(int(x) for x in calls_in(log)) == [100_050 + i for i in range(4)]
    # every output exists: nothing runs
    again = client.run(client.io.Output(s, targets), cache_mode=sp.CacheMode.Ignore,
                       show_progress=False)
    assert again == targets and len(calls_in(log)) == 4


def test_cache_mode_overwrite_replaces_only_once_complete(local_client):
    sc = local_client
    sc.run(sc.io.Output(numbers(sc, 100), [sp.NamedStream(sc, "x")]),
           sp.PerfParams.manual(10, 10), show_progress=False)
    old_version = sc.db.manifest("x")["version"]
    seen = []

    @sp.register_python_op(name="run_peek")
    def peek(config, x: Any) -> Any:
        if x == 55:  # mid-run, the old stream is still there, whole
            seen.append(list(sp.NamedStream(sc, "x").load(rows=[0, 99])))
        return -x

    (x,) = sc.run(sc.io.Output(sc.ops.run_peek(x=numbers(sc, 100)), [sp.NamedStream(sc, "x")]),
                  sp.PerfParams.manual(10, 10), cache_mode=sp.CacheMode.Overwrite,
                  show_progress=False)
    assert seen == [[0, 99]]
    assert list(x.load()) == [-i for i in range(100)]
    assert version_dirs(sc, "x") == [x.manifest()["version"]] != [old_version]


def test_a_stream_is_read_and_overwritten_by_one_run(client):
    x = sp.NamedStream(client, "x")
    client.run(client.io.Output(numbers(client, 100), [x]), sp.PerfParams.manual(10, 10),
               show_progress=False)
    for step in range(1, 3):
        bumped = client.ops.run_plus(x=client.io.Input([x]), by=1)
        client.run(client.io.Output(bumped, [x]), sp.PerfParams.manual(10, 10),
                   cache_mode=sp.CacheMode.Overwrite, show_progress=False)
        assert list(x.load()) == [i + step for i in range(100)]
    del bumped  # a Stream built on a version keeps it on disk while it lives
    client.gc()
    assert version_dirs(client, "x") == [x.manifest()["version"]]


# ------------------------------------------------------------------------------ faults


def test_kernel_error_commits_nothing_and_overwrite_then_succeeds(client, tmp_path):
    (earlier,) = client.run(client.io.Output(numbers(client, 20), [sp.NamedStream(client, "e")]),
                            show_progress=False)
    earlier_manifest = earlier.manifest()
    log = str(tmp_path / "calls")
    failing = client.ops.run_logged(x=numbers(client, 1000), log=log, fail_at=517)
    with pytest.raises(sp.KernelError) as info:
        client.run(client.io.Output(failing, [sp.NamedStream(client, "out")]),
                   sp.PerfParams.manual(10, 100), show_progress=False)
    error = info.value
    assert (error.op, error.stream, error.row) == ("run_logged", 0, 517)
    assert "'run_logged'" in str(error) and "stream 0" in str(error) and "row 517" in str(error)
    assert isinstance(error.__cause__, RuntimeError) and "517" in str(error.__cause__)
    assert "517" in calls_in(log)  # the fault was real

    out = sp.NamedStream(client, "out")
    assert not out.exists() and client.db.names() == ["e"]
    with pytest.raises(sp.StreamNotFoundError):
        list(out.load())
    assert earlier.manifest() == earlier_manifest
    assert list(earlier.load()) == list(range(20))

    # the same output with the fault gone, and Overwrite (nothing exists, so Error works too)
    fixed = client.ops.run_logged(x=numbers(client, 1000), log=log)
    (stored,) = client.run(client.io.Output(fixed, [out]), sp.PerfParams.manual(10, 100),
                           cache_mode=sp.CacheMode.Overwrite, show_progress=False)
    assert list(stored.load()) == [2 * i for i in range(1000)]
    assert stored.manifest()["version"] in version_dirs(client, "out")
    assert list(earlier.load()) == list(range(20))


def test_failed_overwrite_keeps_the_old_stream(client, tmp_path):
    (x,) = client.run(client.io.Output(numbers(client, 50), [sp.NamedStream(client, "x")]),
                      show_progress=False)
    manifest = x.manifest()
    failing = client.ops.run_logged(x=numbers(client, 50), log=str(tmp_path / "calls"), fail_at=30)
    with pytest.raises(sp.KernelError, match="row 30"):
        client.run(client.io.Output(failing, [x]), sp.PerfParams.manual(5, 10),
                   cache_mode=sp.CacheMode.Overwrite, show_progress=False)
    assert x.manifest() == manifest and list(x.load()) == list(range(50))


KILL_AT = 300


@pytest.mark.slow
def test_worker_killed_mid_run_still_stores_a_complete_stream(tmp_path):
    """SIGKILL of the worker process running a kernel, once: Dask reruns its tasks elsewhere."""
    distributed = pytest.importorskip("distributed")
    marker = str(tmp_path / "killed")

    @sp.register_python_op(name="run_kill_once")
    def kill_once(config, x: Any) -> Any:
        if x == KILL_AT:
            try:
                fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                pass  # the rerun: carry on
            else:
                os.write(fd, str(os.getpid()).encode())
                os.close(fd)
                os.kill(os.getpid(), signal.SIGKILL)
        return x * 3

    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=":0", silence_logs=50) as cluster, \
            sp.Client(address=cluster, db_path=str(tmp_path / "db"), show_progress=False) as sc:
        pids = set(sc.distributed.run(os.getpid).values())
        out = sc.io.Output(sc.ops.run_kill_once(x=numbers(sc, 1000)), [sp.NamedStream(sc, "k")])
        (stored,) = sc.run(out, sp.PerfParams.manual(10, 50), show_progress=False)
        with open(marker) as f:
            killed = int(f.read())
        assert killed in pids and killed not in set(sc.distributed.run(os.getpid).values())
        assert list(stored.load()) == [3 * i for i in range(1000)]
        assert stored.manifest()["num_chunks"] == 20
        assert version_dirs(sc, "k") == [stored.manifest()["version"]]


BAD_NAMES = ["a/b", "../up", "..", "", "x\x00y", "line\nbreak", "tab\there", "back\\slash"]


@pytest.mark.parametrize("name", BAD_NAMES)
def test_bad_names_are_refused_before_any_work(local_client, tmp_path, name):
    sc = local_client
    log = str(tmp_path / "calls")
    s = sc.ops.run_logged(x=numbers(sc, 10), log=log)
    for make in (sp.NamedStream, sp.NamedVideoStream):
        with pytest.raises(sp.InvalidNameError, match="invalid stream name") as info:
            sc.run(sc.io.Output(s, [make(sc, name)]), show_progress=False)
        assert isinstance(info.value, ValueError)
    assert calls_in(log) == [] and sc.db.names() == []


def test_unwritable_db_path_is_refused_before_any_work(client, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    log = str(tmp_path / "calls")
    with sp.Client(address=client.distributed, db_path=str(blocker / "db"),
                   show_progress=False) as sc:
        s = sc.ops.run_logged(x=numbers(sc, 10), log=log)
        with pytest.raises(sp.StorageError, match="not writable") as info:
            sc.run(sc.io.Output(s, [sp.NamedStream(sc, "out")]), show_progress=False)
        assert str(blocker / "db") in str(info.value)
    assert calls_in(log) == []
    assert blocker.read_text() == "not a folder"


def test_two_runs_on_one_name_one_wins_whole_and_readers_never_see_a_mix(local_client):
    sc = local_client
    n, chunk = 400, 20
    barrier = threading.Barrier(3)
    errors, loads = [], collections.Counter()
    done = threading.Event()

    def writer(value):
        try:
            stream = sc.io.Input([sp.MemoryStream([value] * n)])
            barrier.wait()
            sc.run(sc.io.Output(stream, [sp.NamedStream(sc, "race")]),
                   sp.PerfParams.manual(chunk, chunk), cache_mode=sp.CacheMode.Overwrite,
                   show_progress=False)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    def reader():
        barrier.wait()
        while not done.is_set():
            try:
                got = list(sp.NamedStream(sc, "race").load())
            except sp.StreamNotFoundError:
                loads["absent"] += 1
                continue
            except sp.StorageError as exc:  # replaced while read: an error, never a mix
                assert "replaced" in str(exc) or "deleted" in str(exc)
                loads["replaced"] += 1
                continue
            assert len(got) == n and len(set(got)) == 1, f"a mix: {sorted(set(got))}"
            loads[got[0]] += 1

    threads = [threading.Thread(target=writer, args=(v,)) for v in ("A", "B")]
    threads.append(threading.Thread(target=reader))
    for t in threads:
        t.start()
    for t in threads[:2]:
        t.join(60)
    done.set()
    threads[2].join(60)
    assert errors == []
    final = list(sp.NamedStream(sc, "race").load())
    assert final in (["A"] * n, ["B"] * n)
    # The reader may have held the loser's version open during the last commit's sweep (kept
    # by the documented rule while this process reads it); with the reader gone, gc reclaims it.
    current = sc.db.manifest("race")["version"]
    assert current in version_dirs(sc, "race")
    sc.gc()
    assert version_dirs(sc, "race") == [current]


def test_concurrent_runs_with_cache_mode_error_never_replace_each_other(local_client):
    """Both runs see no stream when they start; the second to commit must not replace the first."""
    sc = local_client
    barrier = threading.Barrier(2)
    results = {}

    @sp.register_python_op(name="run_wait_then")
    def wait_then(config, x: Any) -> Any:
        return x

    def writer(value):
        stream = sc.ops.run_wait_then(x=sc.io.Input([sp.MemoryStream([value] * 50)]))
        out = sc.io.Output(stream, [sp.NamedStream(sc, "once")])
        barrier.wait()
        try:
            sc.run(out, sp.PerfParams.manual(10, 10), show_progress=False)
            results[value] = "stored"
        except sp.StreamExistsError:
            results[value] = "refused"

    threads = [threading.Thread(target=writer, args=(v,)) for v in ("A", "B")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sorted(results.values()) == ["refused", "stored"]
    winner = next(v for v, r in results.items() if r == "stored")
    assert list(sp.NamedStream(sc, "once").load()) == [winner] * 50
    assert version_dirs(sc, "once") == [sc.db.manifest("once")["version"]]


# ------------------------------------------------------------------------------ memory://, progress


def test_memory_url_round_trip():
    url = f"memory://scanner-nb-test-run-{uuid.uuid4().hex}"
    frames = np.random.default_rng(1).integers(0, 256, (23, 12, 16, 3), dtype=np.uint8)
    with sp.Client(db_path=url, show_progress=False) as sc:
        try:
            out = [sc.io.Output(sc.io.Input([sp.MemoryStream(frames)]).lossless(),
                                [sp.NamedVideoStream(sc, "frames")]),
                   sc.io.Output(sc.ops.run_plus(x=numbers(sc, 40)), [sp.NamedStream(sc, "nums")])]
            stored_frames, nums = sc.run(out, sp.PerfParams.manual(5, 10), show_progress=False)
            assert sc.db.names() == ["frames", "nums"]
            assert list(nums.load(rows=[39, 0])) == [1039, 1000] and len(nums) == 40
            np.testing.assert_array_equal(np.stack(list(stored_frames.load())), frames)
            assert stored_frames.zarr_path.startswith("memory://")
            path = stored_frames.zarr_path
            np.testing.assert_array_equal(zarr.open(path, mode="r")["frames"][:], frames)
            np.testing.assert_array_equal(da.from_zarr(path, component="frames").compute(), frames)
            again = sc.ops.run_plus(x=sc.io.Input([sp.NamedStream(sc, "nums")]), by=1)
            assert again.compute() == [list(range(1001, 1041))]
            with pytest.raises(sp.StreamExistsError):
                sc.run(out, show_progress=False)
            nums.delete()
            assert sc.db.names() == ["frames"] and not nums.exists()
        finally:
            sc.db.fs.rm(sc.db.root, recursive=True)


def test_default_db_path_follows_scanner_nb_db(tmp_path, monkeypatch):
    monkeypatch.setenv("SCANNER_NB_DB", str(tmp_path / "from-env"))
    with sp.Client(show_progress=False) as sc:
        sc.run(sc.io.Output(numbers(sc, 3), [sp.NamedStream(sc, "n")]), show_progress=False)
    assert os.path.isfile(tmp_path / "from-env" / "n" / "manifest.json")
    monkeypatch.delenv("SCANNER_NB_DB")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    with sp.Client(show_progress=False) as sc:
        assert sc.db.url == str(tmp_path / "home" / ".scanner_nb" / "db")


def test_progress_bar_in_a_terminal_and_off(client, capfd):
    sc = client
    out = sc.io.Output(numbers(sc, 200), [sp.NamedStream(sc, "p")])
    sc.run(out, sp.PerfParams.manual(10, 10), show_progress=True)
    captured = capfd.readouterr()
    # tqdm's text bar, on both schedulers (tqdm.auto picks text outside Jupyter)
    assert "100%" in captured.err and "partition/s]" in captured.err
    sc.run(out, sp.PerfParams.manual(10, 10), cache_mode=sp.CacheMode.Overwrite,
           show_progress=False)
    captured = capfd.readouterr()
    assert captured.err == "" and captured.out == ""


def test_output_arguments_are_checked_at_the_call(local_client, video):
    sc = local_client
    s = numbers(sc, 5, 5)
    with pytest.raises(sp.ScannerValueError, match="2 stream"):
        sc.io.Output(s, [sp.NamedStream(sc, "only-one")])
    with pytest.raises(sp.ScannerTypeError):
        sc.io.Output(s, ["a", "b"])
    with pytest.raises(sp.ScannerTypeError):
        sc.io.Output([1, 2], [sp.NamedStream(sc, "a")])
    frames = sc.io.Input([sp.NamedVideoStream(sc, "clip", path=video)])
    with pytest.raises(sp.ScannerValueError, match="video file"):
        sc.io.Output(frames, [sp.NamedVideoStream(sc, "v", path=video)])
    # Scanner's tutorial 03 stores histograms in a NamedVideoStream: accepted, as there
    assert sc.io.Output(numbers(sc, 5), [sp.NamedVideoStream(sc, "v")]).targets[0].name == "v"
    with pytest.raises(sp.ScannerValueError, match="twice"):
        sc.run(sc.io.Output(s, [sp.NamedStream(sc, "d"), sp.NamedStream(sc, "d")]),
               show_progress=False)
    with pytest.raises(sp.ScannerTypeError):
        sc.run([s], show_progress=False)
    with pytest.raises(sp.ScannerTypeError):
        sc.run(sc.io.Output(s, [sp.NamedStream(sc, "a"), sp.NamedStream(sc, "b")]),
               cache_mode="overwrite", show_progress=False)
    assert sc.db.names() == []


# ------------------------------------------------------------------------------ how frames are kept


def _psnr(a, b):
    mse = np.mean((np.asarray(a, float) - np.asarray(b, float)) ** 2)
    return 10 * np.log10(255.0**2 / mse) if mse else float("inf")


@pytest.fixture(scope="module")
def natural_video(tmp_path_factory):
    path = tmp_path_factory.mktemp("natural") / "clip.mp4"
    return make_video(path, n_frames=24, width=320, height=192, fps=FPS, gop=12)


def test_frames_are_compressed_video_by_default_lossless_on_request(client, natural_video):
    frames = client.io.Input([sp.NamedVideoStream(client, "src", path=natural_video)])
    (expected,) = frames.compute()
    default, chosen, exact = client.run(
        [client.io.Output(frames, [sp.NamedVideoStream(client, "default")]),
         client.io.Output(frames.compress_video(quality=35), [sp.NamedVideoStream(client, "q35")]),
         client.io.Output(frames.lossless(), [sp.NamedVideoStream(client, "exact")])],
        sp.PerfParams.manual(4, 12), show_progress=False)
    got = {s.name: np.stack(list(s.load())) for s in (default, chosen, exact)}
    assert [s.manifest()["layout"] for s in (default, chosen, exact)] == ["video", "video", "zarr"]
    assert _psnr(got["default"], expected) >= 40
    assert _psnr(got["q35"], expected) < _psnr(got["default"], expected)
    assert chosen.manifest()["nbytes"] < default.manifest()["nbytes"] < exact.manifest()["nbytes"]
    np.testing.assert_array_equal(got["exact"], expected)
    assert os.path.getsize(natural_video) * 3 > default.manifest()["nbytes"]
    with pytest.raises(sp.ScannerValueError, match="not stored as a Zarr array"):
        default.zarr_path  # noqa: B018
    # a stored video stream is an input, sampling reads only the chunks it needs
    again = client.streams.Gather(client.io.Input([sp.NamedVideoStream(client, "default")]),
                                  [[23, 0]])
    np.testing.assert_array_equal(again.compute()[0], got["default"][[23, 0]])
    with pytest.raises(sp.ScannerTypeError, match="frame streams"):
        numbers(client, 3).lossless()


def test_plain_data_and_pickled_objects_round_trip(client):
    values = [None, 1, 2.5, "x", b"y", [1, (2, 3)], {"k": np.arange(3)}, np.float32(4), 3j]
    (stored,) = client.run(client.io.Output(client.io.Input([sp.MemoryStream(values)]),
                                            [sp.NamedStream(client, "plain")]),
                           sp.PerfParams.manual(3, 3), show_progress=False)
    loaded = list(stored.load())
    assert [type(v) for v in loaded] == [type(v) for v in values]
    assert loaded[:6] == values[:6] and loaded[7:] == values[7:]
    np.testing.assert_array_equal(loaded[6]["k"], values[6]["k"])
    assert not any(c["pickled"] for c in stored.manifest()["chunks"])


def test_a_re_registered_type_is_used_by_workers(client):
    def version(sign):
        class RunSigned:
            def serialize(value):
                return np.float64(sign * value).tobytes()

            def deserialize(data):
                return sign * float(np.frombuffer(data, np.float64)[0])

        return sp.types.register_type(RunSigned)

    def to_signed(config, x: Any):
        return float(x)

    version(1)
    to_signed.__annotations__["return"] = "RunSigned"
    sp.register_python_op(name="run_to_signed")(to_signed)

    for sign in (1, -1):
        version(sign)  # a notebook cell re-run with a changed serialize
        (stored,) = client.run(
            client.io.Output(client.ops.run_to_signed(x=numbers(client, 8)),
                             [sp.NamedStream(client, "signed")]),
            sp.PerfParams.manual(4, 4), cache_mode=sp.CacheMode.Overwrite, show_progress=False)
        assert list(stored.load()) == [float(i) for i in range(8)]
        raw = sp.types.lookup_type("RunSigned").serialize(3.0)
        path = os.path.join(client.db.root, "signed", stored.manifest()["version"], "0.elements")
        with open(path, "rb") as f:
            assert raw in f.read()  # the current serialize wrote it, on every worker
