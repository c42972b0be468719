"""Stored streams: scanner_nb.storage on real files (tmp dirs) and on memory://."""

from __future__ import annotations

import gc
import json
import multiprocessing
import os
import pickle
import threading
import uuid

import numpy as np
import pytest

from scanner_nb import storage, types
from scanner_nb.errors import (
    InvalidNameError,
    RowIndexError,
    ScannerError,
    ScannerTypeError,
    ScannerValueError,
    StorageError,
    StreamNotFoundError,
)
from scanner_nb.storage import Database, StreamWriter, default_db_path, validate_name
from scanner_nb.types import Batch

# ------------------------------------------------------------------------------- helpers


def chunk_batch(elements, k, chunk_rows, nulls=None, type_name="Any"):
    """The Batch of chunk k of ``elements`` (a list or an (n, ...) array)."""
    start, end = k * chunk_rows, min(len(elements), (k + 1) * chunk_rows)
    part = elements[start:end]
    mask = None if nulls is None else np.asarray(nulls[start:end], dtype=bool)
    return Batch(0, np.arange(start, end), part, mask, type_name)


def store(db, name, elements, type_name="Any", chunk_rows=4, nulls=None, commit=True):
    """Write ``elements`` as stream ``name``; the writer (committed unless commit=False)."""
    writer = db.begin(name, type_name, len(elements), chunk_rows)
    infos = [writer.write_chunk(k, chunk_batch(elements, k, chunk_rows, nulls, type_name))
             for k in range(writer.num_chunks)]
    if commit:
        writer.commit(infos)
    return writer, infos


def version_dirs(db, name):
    path = os.path.join(db.root, name)
    return sorted(p for p in os.listdir(path) if p.startswith("v-")) if os.path.isdir(path) else []


def same_elements(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        if isinstance(x, np.ndarray):
            assert isinstance(y, np.ndarray) and x.dtype == y.dtype and np.array_equal(x, y)
        else:
            assert x == y


@pytest.fixture
def db(tmp_path):
    return Database(str(tmp_path / "db"))


@pytest.fixture
def memdb():
    url = f"memory://test-storage-{uuid.uuid4().hex}"
    db = Database(url)
    yield db
    storage._rmtree(db.fs, db.root)


@pytest.fixture
def frames():
    rng = np.random.default_rng(7)
    return rng.integers(0, 256, size=(150, 36, 64, 3), dtype=np.uint8)


@types.register_type
class StoredPoint:
    """A custom element type: (x, y) float pairs."""

    def serialize(point):
        return np.asarray(point, dtype="<f8").tobytes()

    def deserialize(data):
        return tuple(np.frombuffer(data, dtype="<f8").tolist())


# ------------------------------------------------------------------------------- names


@pytest.mark.parametrize("name", [
    "dets", "clip-01", "a b", "a.b", "my_stream", "名前", "a:b", "x" * 255, "é" * 127, "a*b",
])
def test_valid_names(name):
    assert validate_name(name) == name


@pytest.mark.parametrize("name, why", [
    (3, "must be a str"),
    (None, "must be a str"),
    (b"bytes", "must be a str"),
    ("", "empty"),
    ("/", "'/'"),
    ("a/b", "'/'"),
    ("/abs", "'/'"),
    ("a\\b", "'\\\\'"),
    ("..", "'..'"),
    ("a..b", "'..'"),
    ("../up", "'/'"),
    ("a\x00b", "control character"),
    ("a\nb", "control character"),
    ("tab\there", "control character"),
    ("del\x7f", "control character"),
    (" lead", "whitespace"),
    ("trail ", "whitespace"),
    ("trail\u00a0", "whitespace"),
    (".hidden", "reserved"),
    (".", "reserved"),
    ("x" * 256, "256 bytes"),
    ("é" * 128, "256 bytes"),
    ("\ud800", "UTF-8"),
])
def test_invalid_names(name, why):
    with pytest.raises(InvalidNameError) as info:
        validate_name(name)
    message = str(info.value)
    assert repr(name) in message and why in message
    assert isinstance(info.value, ScannerValueError) and isinstance(info.value, ValueError)


def test_methods_validate_names(db):
    for call in (db.exists, db.manifest, db.delete, db.load, db.zarr_path,
                 lambda n: db.begin(n, "Any", 1, 1), lambda n: db.read_chunk(n, 0)):
        with pytest.raises(InvalidNameError):
            call("../escape")
    assert not os.path.exists(os.path.join(os.path.dirname(db.root), "escape"))


def test_default_db_path(monkeypatch, tmp_path):
    monkeypatch.setenv("SCANNER_NB_DB", str(tmp_path / "elsewhere"))
    assert default_db_path() == str(tmp_path / "elsewhere")
    monkeypatch.delenv("SCANNER_NB_DB")
    assert default_db_path() == os.path.join(os.path.expanduser("~"), ".scanner_nb", "db")


def test_local_paths_are_made_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    db = Database("rel/db")
    assert db.url == str(tmp_path / "rel" / "db")
    assert pickle.loads(pickle.dumps(db)).url == db.url
    assert Database(tmp_path / "p").url == str(tmp_path / "p")
    with pytest.raises(ScannerValueError):
        Database("")
    with pytest.raises(ScannerValueError, match="codec"):
        Database(str(tmp_path), codec={"id": "no-such-codec"})


# ------------------------------------------------------------------------------- frames


def test_frames_round_trip_bit_exact_with_partial_last_chunk(db, frames):
    store(db, "clip", frames, "FrameType", chunk_rows=64)
    m = db.manifest("clip")
    assert m["name"] == "clip" and m["type"] == "FrameType" and m["length"] == 150
    assert m["chunk_rows"] == 64 and m["num_chunks"] == 3 and m["layout"] == "zarr"
    assert m["frame"] == {"shape": [36, 64, 3], "dtype": "|u1"} and m["nulls"] == 0
    assert m["version"].startswith("v-") and m["created"].endswith("Z")
    assert m["codec"] == storage.DEFAULT_CODEC
    back = list(db.load("clip"))
    assert len(back) == 150 and all(f.dtype == np.uint8 for f in back)
    assert np.array_equal(np.stack(back), frames)
    chunk = db.read_chunk("clip", 2)
    assert np.array_equal(chunk.rows, np.arange(128, 150)) and chunk.type_name == "FrameType"
    assert isinstance(chunk.elements, np.ndarray) and np.array_equal(chunk.elements, frames[128:])
    assert chunk.nulls is None
    with pytest.raises(RowIndexError):
        db.read_chunk("clip", 3)


def test_frames_open_with_zarr_and_dask(db, frames):
    zarr = pytest.importorskip("zarr")
    da = pytest.importorskip("dask.array")
    store(db, "clip", frames, "FrameType", chunk_rows=64)
    path = db.zarr_path("clip")
    assert os.path.isdir(path)
    z = zarr.open_array(path, mode="r")
    assert z.shape == frames.shape and z.chunks == (64, 36, 64, 3) and z.dtype == np.uint8
    assert np.array_equal(z[:], frames) and np.array_equal(z[140:150], frames[140:150])
    assert np.array_equal(zarr.open(path, mode="r")[:], frames)
    x = da.from_zarr(path)
    assert x.chunks[0] == (64, 64, 22)
    assert np.array_equal(x.compute(), frames)


@pytest.mark.parametrize("shape, dtype", [
    ((7, 5, 3), np.uint8), ((1, 1, 1), np.uint8), ((33, 17, 4), np.uint8),
    ((9, 11, 1), np.uint8), ((6, 10), np.uint16), ((5, 4, 3), np.float32),
])
def test_odd_frame_shapes_and_dtypes(db, shape, dtype):
    zarr = pytest.importorskip("zarr")
    rng = np.random.default_rng(1)
    data = (rng.random((13, *shape)) * 250).astype(dtype)
    store(db, "odd", data, "FrameType", chunk_rows=5)
    assert db.manifest("odd")["frame"] == {"shape": list(shape), "dtype": np.dtype(dtype).str}
    back = np.stack(list(db.load("odd")))
    assert back.dtype == dtype and np.array_equal(back, data)
    assert np.array_equal(zarr.open_array(db.zarr_path("odd"), mode="r")[:], data)


def test_compressible_frames_are_compressed_and_noisy_ones_stored_as_is(db, frames):
    zarr = pytest.importorskip("zarr")
    flat = np.zeros((64, 36, 64, 3), np.uint8)
    flat[:, 10:20] = 200
    store(db, "flat", flat, "FrameType", chunk_rows=32)
    store(db, "noisy", frames[:64], "FrameType", chunk_rows=32)
    assert db.manifest("flat")["nbytes"] < flat.nbytes / 10
    assert db.manifest("noisy")["nbytes"] == frames[:64].nbytes + 2 * 16  # Blosc headers
    for name, data in (("flat", flat), ("noisy", frames[:64])):
        assert np.array_equal(np.stack(list(db.load(name))), data)
        assert np.array_equal(zarr.open_array(db.zarr_path(name), mode="r")[:], data)


def test_raw_codec_and_other_codecs(tmp_path, frames):
    zarr = pytest.importorskip("zarr")
    for codec in (None, {"id": "zstd", "level": 1},
                  {"id": "blosc", "cname": "zstd", "clevel": 1, "shuffle": 2, "blocksize": 0}):
        db = Database(str(tmp_path / f"db-{codec and codec['id']}"), codec=codec)
        store(db, "clip", frames, "FrameType", chunk_rows=64)
        assert db.manifest("clip")["codec"] == codec
        assert np.array_equal(np.stack(list(db.load("clip"))), frames)
        assert np.array_equal(zarr.open_array(db.zarr_path("clip"), mode="r")[:], frames)


def test_frames_from_a_list_and_mixed_shapes(db, frames):
    listed = list(frames[:10])
    store(db, "listed", listed, "FrameType", chunk_rows=4)
    assert db.manifest("listed")["layout"] == "zarr"
    mixed = [frames[i] if i % 3 else frames[i, :10, :7] for i in range(10)]
    store(db, "mixed", mixed, "FrameType", chunk_rows=4)
    m = db.manifest("mixed")
    assert m["layout"] == "elements" and m["frame"] is None
    same_elements(list(db.load("mixed")), mixed)
    with pytest.raises(ScannerValueError, match="differ in shape"):
        db.zarr_path("mixed")


def test_frames_with_nulls(db, frames):
    data = list(frames[:10])
    nulls = np.zeros(10, bool)
    nulls[[5, 6]] = True
    store(db, "holes", data, "FrameType", chunk_rows=4, nulls=nulls)
    m = db.manifest("holes")
    # chunk 1 (rows 4-7) holds the nulls; chunks 0 and 2 are Zarr chunks
    assert m["layout"] == "mixed" and m["nulls"] == 2
    assert m["frame"] == {"shape": [36, 64, 3], "dtype": "|u1"}
    back = list(db.load("holes"))
    assert back[5] is None and back[6] is None
    same_elements([b for i, b in enumerate(back) if not nulls[i]],
                  [d for i, d in enumerate(data) if not nulls[i]])
    chunk = db.read_chunk("holes", 1)
    assert chunk.nulls.tolist() == [False, True, True, False]
    assert list(db.load("holes", rows=[6, 4])) [0] is None
    with pytest.raises(ScannerValueError, match="null"):
        db.zarr_path("holes")


# ------------------------------------------------------------------------------- other types


def test_bytes_any_custom_round_trip(db):
    blobs = [b"", b"a", bytes(range(256)), b"\x00" * 1000, b"end"]
    store(db, "blobs", blobs, "bytes", chunk_rows=2)
    assert list(db.load("blobs")) == blobs and db.manifest("blobs")["layout"] == "elements"
    objects = [1, "two", [3.0, {"four": (4,)}], None, np.arange(5), {"x": b"y"}]
    store(db, "objects", objects, "Any", chunk_rows=4)
    same_elements(list(db.load("objects")), objects)
    points = [(0.5, 1.0), (2.0, -3.25), (1e300, 0.0)]
    store(db, "points", points, "StoredPoint", chunk_rows=2)
    assert db.manifest("points")["type"] == "StoredPoint"
    assert list(db.load("points")) == points
    chunk = db.read_chunk("points", 0)
    assert chunk.type_name == "StoredPoint" and chunk.elements == points[:2]


def test_nulls_kept(db):
    values = ["a", "b", "c", "d", "e"]
    nulls = [False, True, False, False, True]
    store(db, "n", values, "Any", chunk_rows=2, nulls=nulls)
    assert list(db.load("n")) == ["a", None, "c", "d", None]
    assert db.manifest("n")["nulls"] == 2
    assert db.read_chunk("n", 0).nulls.tolist() == [False, True]
    assert db.read_chunk("n", 1).nulls is None
    store(db, "nb", [b"x", b"y", b"z"], "bytes", chunk_rows=2, nulls=[True, False, True])
    assert list(db.load("nb")) == [None, b"y", None]
    store(db, "np", [(1.0, 2.0), None], "StoredPoint", chunk_rows=4, nulls=[False, True])
    assert list(db.load("np")) == [(1.0, 2.0), None]


def test_unregistered_type_is_named(db, monkeypatch):
    @types.register_type
    class GoneType:
        def serialize(x):
            return bytes([x])

        def deserialize(data):
            return data[0]

    store(db, "gone", [1, 2, 3], "GoneType", chunk_rows=2)
    assert list(db.load("gone")) == [1, 2, 3]
    monkeypatch.delitem(types._REGISTRY, "GoneType")
    for call in (lambda: db.load("gone"), lambda: db.load("gone", rows=[0]),
                 lambda: db.read_chunk("gone", 0), lambda: db.begin("x", "GoneType", 1, 1)):
        with pytest.raises(ScannerTypeError, match="GoneType"):
            call()
    assert db.exists("gone") and db.manifest("gone")["type"] == "GoneType"


def test_empty_stream(db):
    writer = db.begin("empty", "FrameType", 0, 8)
    assert writer.num_chunks == 0
    writer.commit([])
    assert db.exists("empty") and list(db.load("empty")) == []
    assert db.manifest("empty")["length"] == 0
    with pytest.raises(ScannerValueError, match="empty"):
        db.zarr_path("empty")
    with pytest.raises(RowIndexError):
        db.load("empty", rows=[0])


def test_memory_round_trip(memdb, frames):
    zarr = pytest.importorskip("zarr")
    store(memdb, "clip", frames[:70], "FrameType", chunk_rows=32)
    store(memdb, "objects", [1, None, "x"], "Any", chunk_rows=2)
    store(memdb, "pts", [(1.0, 2.0)], "StoredPoint", chunk_rows=2)
    assert memdb.names() == ["clip", "objects", "pts"]
    assert np.array_equal(np.stack(list(memdb.load("clip"))), frames[:70])
    assert list(memdb.load("objects")) == [1, None, "x"]
    assert list(memdb.load("pts")) == [(1.0, 2.0)]
    path = memdb.zarr_path("clip")
    assert path.startswith("memory://")
    assert np.array_equal(zarr.open_array(path, mode="r")[:], frames[:70])
    frame = list(memdb.load("clip", rows=[65]))[0]
    assert np.array_equal(frame, frames[65])
    memdb.delete("clip")
    assert memdb.names() == ["objects", "pts"] and not memdb.exists("clip")
    with pytest.raises(StreamNotFoundError):
        memdb.load("clip")


# ------------------------------------------------------------------------------- load(rows)


@pytest.fixture
def chunk_reads(monkeypatch):
    """Paths of chunk files read, in order."""
    reads = []
    read_file, read_into = storage._read_file, storage._read_frames_into

    def counting_read_file(fs, path):
        if path.endswith(storage._ELEMENTS_SUFFIX):
            reads.append(path.rsplit("/", 1)[-1])
        return read_file(fs, path)

    def counting_read_into(fs, path, out, config):
        reads.append(path.rsplit("/", 1)[-1])
        return read_into(fs, path, out, config)

    monkeypatch.setattr(storage, "_read_file", counting_read_file)
    monkeypatch.setattr(storage, "_read_frames_into", counting_read_into)
    return reads


def test_load_rows_reads_only_needed_chunks(db, frames, chunk_reads):
    store(db, "clip", frames, "FrameType", chunk_rows=16)  # 10 chunks
    rows = [130, 5, 7, 7, 64, 149, 0]
    got = list(db.load("clip", rows=rows))
    assert [np.array_equal(g, frames[r]) for g, r in zip(got, rows)] == [True] * len(rows)
    assert chunk_reads == ["8.0.0.0", "0.0.0.0", "4.0.0.0", "9.0.0.0", "0.0.0.0"]
    chunk_reads.clear()
    got = list(db.load("clip", rows=np.array([20, 21, 22])))
    assert chunk_reads == ["1.0.0.0"] and len(got) == 3
    chunk_reads.clear()
    assert len(list(db.load("clip"))) == 150 and len(chunk_reads) == 10
    values = list(range(40))
    store(db, "nums", values, "Any", chunk_rows=8)
    chunk_reads.clear()
    assert list(db.load("nums", rows=[39, 38, 1, 1])) == [39, 38, 1, 1]
    assert chunk_reads == ["4.elements", "0.elements"]


def test_load_rows_frames_are_independent_copies(db, frames):
    store(db, "clip", frames[:20], "FrameType", chunk_rows=8)
    (frame,) = db.load("clip", rows=[3])
    assert frame.base is None or frame.base.size == frame.size
    frame[:] = 0
    assert np.array_equal(list(db.load("clip", rows=[3]))[0], frames[3])


def test_load_rows_outside_raise_at_call(db, chunk_reads):
    store(db, "nums", list(range(10)), "Any", chunk_rows=4)
    chunk_reads.clear()
    for rows in ([10], [-1], [0, 3, 99]):
        with pytest.raises(RowIndexError, match="outside stream 'nums' of length 10"):
            db.load("nums", rows=rows)
    assert chunk_reads == []
    with pytest.raises(IndexError):
        db.load("nums", rows=[10])


def test_load_rows_memory_counts_filesystem_reads(memdb, monkeypatch):
    store(memdb, "nums", list(range(30)), "Any", chunk_rows=10)
    paths = []
    cat_file = memdb.fs.cat_file

    def counting(path, *args, **kwargs):
        paths.append(path.rsplit("/", 1)[-1])
        return cat_file(path, *args, **kwargs)

    monkeypatch.setattr(memdb.fs, "cat_file", counting)
    assert list(memdb.load("nums", rows=[25, 21])) == [25, 21]
    assert [p for p in paths if p != storage.MANIFEST] == ["2.elements"]


# ------------------------------------------------------------------------------- queries


def test_exists_names_delete(db):
    assert db.names() == [] and not db.exists("a")
    store(db, "b", [1], "Any")
    store(db, "a", [2], "Any")
    store(db, "staged", [3], "Any", commit=False)
    os.makedirs(os.path.join(db.root, ".ipynb_checkpoints"))
    with open(os.path.join(db.root, "stray-file"), "w") as f:
        f.write("x")
    assert db.names() == ["a", "b"]
    assert db.exists("a") and not db.exists("staged") and not db.exists("nothing")
    db.delete("a")
    assert not db.exists("a") and db.names() == ["b"]
    assert not os.path.exists(os.path.join(db.root, "a"))
    db.delete("a")  # twice is fine
    db.delete("never-stored")
    with pytest.raises(StreamNotFoundError) as info:
        db.manifest("a")
    assert isinstance(info.value, KeyError) and isinstance(info.value, ScannerError)
    assert "'a'" in str(info.value) and db.url in str(info.value)


def test_delete_keeps_another_writers_staging(db):
    store(db, "s", [1, 2], "Any")
    writer, infos = store(db, "s", [3, 4], "Any", commit=False)
    db.delete("s")
    assert not db.exists("s") and version_dirs(db, "s") == [writer.version]
    writer.commit(infos)
    assert list(db.load("s")) == [3, 4]


def test_manifest_is_the_commit(db):
    writer, infos = store(db, "s", list(range(10)), "Any", chunk_rows=4, commit=False)
    assert all(info["rows"] for info in infos) and len(version_dirs(db, "s")) == 1
    assert not db.exists("s") and db.names() == []
    with pytest.raises(StreamNotFoundError):
        db.load("s")
    with pytest.raises(StreamNotFoundError):
        db.read_chunk("s", 0)
    writer.abort()
    assert version_dirs(db, "s") == []
    writer.abort()  # twice is fine
    with pytest.raises(StorageError, match="aborted"):
        writer.commit(infos)


def test_commit_validates_chunk_infos(db):
    writer, infos = store(db, "s", list(range(10)), "Any", chunk_rows=4, commit=False)
    with pytest.raises(StorageError, match=r"chunks \[1\] are missing"):
        writer.commit([infos[0], infos[2]])
    with pytest.raises(StorageError, match="twice"):
        writer.commit(infos + [infos[0]])
    with pytest.raises(StorageError, match="hold 11 rows, 10 expected"):
        writer.commit(infos[:2] + [dict(infos[2], rows=3)])
    assert not db.exists("s")
    with pytest.raises(ScannerValueError, match="must hold 4 rows"):
        writer.write_chunk(0, Batch(0, np.arange(3), [0, 1, 2]))
    with pytest.raises(ScannerValueError, match="chunk 3 is outside"):
        writer.write_chunk(3, Batch(0, np.arange(2), [0, 1]))
    os.remove(os.path.join(db.root, "s", writer.version, "1.elements"))
    with pytest.raises(StorageError, match="missing"):
        writer.commit(infos)
    assert not db.exists("s")
    writer.write_chunk(1, chunk_batch(list(range(10)), 1, 4))
    writer.commit(infos)
    assert list(db.load("s")) == list(range(10))
    with pytest.raises(StorageError, match="already committed"):
        writer.commit(infos)
    writer.abort()  # after commit: nothing happens
    assert list(db.load("s")) == list(range(10))


def test_begin_checks_arguments(db):
    with pytest.raises(ScannerValueError):
        db.begin("s", "Any", -1, 4)
    with pytest.raises(ScannerValueError):
        db.begin("s", "Any", 4, 0)
    with pytest.raises(ScannerTypeError, match="NoSuchType"):
        db.begin("s", "NoSuchType", 4, 2)
    assert version_dirs(db, "s") == []


def test_writer_is_small_and_picklable(db):
    writer = db.begin("s", "Any", 4, 2)
    data = pickle.dumps(writer)
    assert len(data) < 1000
    copy = pickle.loads(data)
    infos = [copy.write_chunk(k, chunk_batch([1, 2, 3, 4], k, 2)) for k in range(2)]
    writer.commit(infos)
    assert list(db.load("s")) == [1, 2, 3, 4]
    assert pickle.loads(pickle.dumps(db)).names() == ["s"]


def test_chunk_files_of_a_dead_stream_explain_themselves(db):
    store(db, "s", list(range(8)), "Any", chunk_rows=4)
    manifest = db.manifest("s")
    os.remove(os.path.join(db.root, "s", manifest["version"], "1.elements"))
    with pytest.raises(StorageError, match="damaged"):
        list(db.load("s"))
    store(db, "s", [9], "Any")  # replaced: an old manifest now names a removed version
    with pytest.raises(StorageError, match="replaced while it was being read"):
        db.read_chunk("s", 0, manifest)
    with open(os.path.join(db.root, "s", db.manifest("s")["version"], "0.elements"), "wb") as f:
        f.write(b"garbage")
    with pytest.raises(StorageError, match="not a scanner_nb chunk"):
        list(db.load("s"))


# ------------------------------------------------------------------------------- leftovers


def _fail_in_child(url, name):
    """A run that writes chunks and dies without commit or abort."""
    db = Database(url)
    store(db, name, list(range(6)), "Any", chunk_rows=2, commit=False)
    os._exit(0)


def _spawn(target, *args):
    process = multiprocessing.get_context("spawn").Process(target=target, args=args)
    process.start()
    process.join(60)
    assert process.exitcode == 0
    return process


def test_begin_removes_leftovers_of_a_dead_process(db):
    store(db, "s", ["old"], "Any")
    _spawn(_fail_in_child, db.url, "s")
    committed = db.manifest("s")["version"]
    leftovers = [v for v in version_dirs(db, "s") if v != committed]
    assert len(leftovers) == 1 and list(db.load("s")) == ["old"]
    writer = db.begin("s", "Any", 1, 1)
    assert version_dirs(db, "s") == sorted([committed, writer.version])
    writer.abort()


def test_begin_removes_a_dropped_writers_staging_but_not_a_live_one(db):
    live, _ = store(db, "s", [1, 2], "Any", commit=False)
    dropped, _ = store(db, "s", [3, 4], "Any", commit=False)
    dropped_version = dropped.version
    del dropped
    gc.collect()
    writer = db.begin("s", "Any", 1, 1)
    assert version_dirs(db, "s") == sorted([live.version, writer.version])
    assert dropped_version not in version_dirs(db, "s")
    live.abort()
    writer.abort()
    assert version_dirs(db, "s") == []


def test_leftovers_of_other_hosts_go_when_their_heartbeat_is_stale(db):
    def fake(version, heartbeat_age):
        path = os.path.join(db.root, "s", version)
        os.makedirs(path)
        with open(os.path.join(path, storage.LOCK), "w") as f:
            json.dump({"host": "elsewhere", "pid": 1, "created": 0,
                       "heartbeat": storage.time.time() - heartbeat_age}, f)

    fake("v-20000101T000000-aaaaaaaaaaaa", storage.STALE_AFTER + 60)
    fake("v-20000101T000000-bbbbbbbbbbbb", 5)
    os.makedirs(os.path.join(db.root, "s", "v-20000101T000000-cccccccccccc"))  # no lock
    writer = db.begin("s", "Any", 1, 1)
    assert version_dirs(db, "s") == sorted(["v-20000101T000000-bbbbbbbbbbbb", writer.version])
    writer.abort()


def test_write_after_abort_fails_clearly(tmp_path):
    db = Database(str(tmp_path / "db"))
    writer = db.begin("s", "Any", 4, 2)
    copy = pickle.loads(pickle.dumps(writer))
    storage._HEARTBEATS.pop(writer._version_dir, None)  # as in a fresh worker process
    writer.abort()
    with pytest.raises(StorageError, match="removed"):
        copy.write_chunk(0, chunk_batch([1, 2, 3, 4], 0, 2))
    assert version_dirs(db, "s") == []


# ------------------------------------------------------------------------------- overwrite


def test_overwrite_replaces_only_at_commit(db):
    store(db, "s", ["old"] * 5, "Any", chunk_rows=2)
    old_version = db.manifest("s")["version"]
    writer, infos = store(db, "s", ["new"] * 7, "Any", chunk_rows=3, commit=False)
    assert list(db.load("s")) == ["old"] * 5 and db.manifest("s")["version"] == old_version
    writer.commit(infos)
    assert list(db.load("s")) == ["new"] * 7 and db.manifest("s")["length"] == 7
    assert version_dirs(db, "s") == [writer.version]  # old data removed
    failed, _ = store(db, "s", ["newer"] * 2, "Any", commit=False)
    failed.abort()
    assert list(db.load("s")) == ["new"] * 7 and version_dirs(db, "s") == [writer.version]


def test_overwrite_frames_with_other_types(db, frames):
    store(db, "s", frames[:10], "FrameType", chunk_rows=4)
    store(db, "s", [b"x"], "bytes")
    assert list(db.load("s")) == [b"x"] and len(version_dirs(db, "s")) == 1
    store(db, "s", frames[:3], "FrameType", chunk_rows=4)
    assert np.array_equal(np.stack(list(db.load("s"))), frames[:3])


# ------------------------------------------------------------------------------- races


def _frames_of(value, n=12):
    return np.full((n, 6, 8, 3), value % 256, dtype=np.uint8)


def _write_repeatedly(url, name, tag, rounds):
    db = Database(url)
    for i in range(rounds):
        store(db, name, _frames_of(tag * 50 + i), "FrameType", chunk_rows=4)


def _read_until(db, name, done, seen):
    """Load ``name`` until ``done`` is set; every load must be one writer's round, whole."""
    while not done.is_set():
        try:
            loaded = list(db.load(name))
        except StorageError as exc:  # replaced while reading: fine, never a mix
            assert "while it was being read" in str(exc)
            continue
        values = {int(f[0, 0, 0]) for f in loaded}
        assert len(loaded) == 12 and len(values) == 1, values
        assert all((f == f[0, 0, 0]).all() for f in loaded)
        seen.update(values)


@pytest.mark.parametrize("mode", ["threads", "processes"])
def test_racing_writers_one_wins_whole(db, mode):
    rounds = 6 if mode == "threads" else 8
    store(db, "race", _frames_of(255), "FrameType", chunk_rows=4)
    done, seen = threading.Event(), set()
    reader = threading.Thread(target=_read_until, args=(db, "race", done, seen))
    reader.start()
    try:
        if mode == "threads":
            writers = [threading.Thread(target=_write_repeatedly, args=(db.url, "race", t, rounds))
                       for t in (1, 2)]
        else:
            ctx = multiprocessing.get_context("spawn")
            writers = [ctx.Process(target=_write_repeatedly, args=(db.url, "race", t, rounds))
                       for t in (1, 2)]
        for w in writers:
            w.start()
        for w in writers:
            w.join(120)
        if mode == "processes":
            assert [w.exitcode for w in writers] == [0, 0]
    finally:
        done.set()
        reader.join()
    final = {int(f[0, 0, 0]) for f in db.load("race")}
    assert final in ({50 + rounds - 1}, {100 + rounds - 1})
    assert len(list(db.load("race"))) == 12
    assert seen  # the reader did read whole versions meanwhile
    writer = db.begin("race", "Any", 1, 1)  # sweeps versions orphaned by the race
    writer.abort()
    assert version_dirs(db, "race") == [db.manifest("race")["version"]]


def test_commit_from_another_process(db):
    writer = db.begin("s", "FrameType", 12, 4)
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(2) as pool:
        infos = pool.starmap(_write_one_chunk, [(writer, k) for k in range(3)])
    writer.commit(infos)
    assert np.array_equal(np.stack(list(db.load("s"))), _frames_of(7))


def _write_one_chunk(writer, k):
    return writer.write_chunk(k, chunk_batch(_frames_of(7), k, 4, type_name="FrameType"))


# ------------------------------------------------------------------------------- unwritable


def test_unwritable_database_below_a_regular_file(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    url = str(blocker / "db")
    db = Database(url)
    with pytest.raises(StorageError, match="not writable") as info:
        db.check_writable()
    assert url in str(info.value)
    with pytest.raises(StorageError, match="cannot write stream 's'"):
        db.begin("s", "Any", 1, 1)
    assert not db.exists("s") and db.names() == []
    with pytest.raises(StreamNotFoundError):
        db.load("s")
    db.delete("s")


def test_check_writable_creates_the_folder(tmp_path, memdb):
    db = Database(str(tmp_path / "a" / "b" / "db"))
    db.check_writable()
    assert os.path.isdir(db.root) and os.listdir(db.root) == []
    memdb.check_writable()


def test_huge_chunks_are_stored_raw():
    writer = StreamWriter("memory://x", "s", "v-0", "FrameType", 10, 64, storage.DEFAULT_CODEC)
    assert writer._frame_codec((64, 4320, 7680, 3), 1) is None
    assert writer._frame_codec((64, 360, 640, 3), 1) == storage.DEFAULT_CODEC


def test_a_load_never_continues_into_a_newer_version(db):
    store(db, "s", ["old"] * 6, "Any", chunk_rows=2)
    iterator = db.load("s")
    assert [next(iterator), next(iterator)] == ["old", "old"]
    store(db, "s", ["new"] * 6, "Any", chunk_rows=2)
    with pytest.raises(StorageError, match="replaced while it was being read"):
        list(iterator)
    assert list(db.load("s")) == ["new"] * 6


def test_read_chunk_into_one_array(db, frames):
    store(db, "clip", frames, "FrameType", chunk_rows=64)
    manifest = db.manifest("clip")
    whole = np.zeros_like(frames)
    for k in range(3):
        part = whole[k * 64:(k + 1) * 64]
        batch = db.read_chunk("clip", k, manifest, out=part)
        assert batch.elements is part
    assert np.array_equal(whole, frames)
    with pytest.raises(ScannerValueError, match="shape"):
        db.read_chunk("clip", 2, out=np.empty((64, 36, 64, 3), np.uint8))
    with pytest.raises(ScannerValueError, match="C-contiguous"):
        db.read_chunk("clip", 0, out=np.empty((64, 36, 64, 6), np.uint8)[..., :3])
    store(db, "nums", [1, 2], "Any")
    with pytest.raises(ScannerValueError, match="frame stream"):
        db.read_chunk("nums", 0, out=np.empty(2))


@pytest.mark.parametrize("where", ["local", "memory"])
@pytest.mark.parametrize("content", ["noisy", "flat"])
@pytest.mark.parametrize("codec", ["default", None])
def test_partial_last_chunk_is_padded_for_zarr(tmp_path, where, content, codec, frames):
    zarr = pytest.importorskip("zarr")
    url = str(tmp_path / "db") if where == "local" else f"memory://pad-{uuid.uuid4().hex}"
    db = Database(url, codec=storage.DEFAULT_CODEC if codec == "default" else None)
    data = frames[:37] if content == "noisy" else np.full((37, 36, 64, 3), 9, np.uint8)
    try:
        store(db, "clip", data, "FrameType", chunk_rows=16)  # 16 + 16 + 5
        assert np.array_equal(np.stack(list(db.load("clip"))), data)
        assert np.array_equal(db.read_chunk("clip", 2).elements, data[32:])
        assert np.array_equal(zarr.open_array(db.zarr_path("clip"), mode="r")[:], data)
        assert db.manifest("clip")["nbytes"] <= 3 * (16 * data[0].nbytes + 16)
    finally:
        storage._rmtree(db.fs, db.root)


def test_docstring_examples():
    import doctest

    result = doctest.testmod(storage, optionflags=doctest.ELLIPSIS)
    assert result.failed == 0 and result.attempted >= 5
