"""Stored streams: scanner_nb.storage on real files (tmp dirs) and on memory://.

Faults are real: fsspec filesystems that fail a write with ENOSPC or SIGKILL their process at
a chosen file, crafted manifests and chunk files in a db folder, pickles that would run code.
"""

from __future__ import annotations

import errno
import gc
import json
import multiprocessing
import os
import pathlib
import pickle
import re
import shutil
import signal
import struct
import subprocess
import sys
import threading
import uuid

import fsspec
import numpy as np
import pytest
from fsspec.implementations.memory import MemoryFileSystem

import scanner_nb as sp
from scanner_nb import types
from scanner_nb.errors import (
    InvalidNameError,
    RowIndexError,
    ScannerError,
    ScannerTypeError,
    ScannerValueError,
    StorageError,
    StreamNotFoundError,
)
from scanner_nb.storage import DEFAULT_CRF, Database, default_db_path, validate_name
from scanner_nb.storage import commit as commit_
from scanner_nb.storage import fs as storage_fs
from scanner_nb.types import Batch

LOSSLESS = {"encoding": "zarr"}
DATA = pathlib.Path(__file__).parent / "data"

# ------------------------------------------------------------------------------- helpers


def chunk_batch(elements, k, chunk_rows, nulls=None, type_name="Any"):
    """The Batch of chunk k of ``elements`` (a list or an (n, ...) array)."""
    start, end = k * chunk_rows, min(len(elements), (k + 1) * chunk_rows)
    part = elements[start:end]
    mask = None if nulls is None else np.asarray(nulls[start:end], dtype=bool)
    return Batch(0, np.arange(start, end), part, mask, type_name)


def store(db, name, elements, type_name="Any", chunk_rows=4, nulls=None, commit=True,
          storage=None):
    """Write ``elements`` as stream ``name``; the writer (committed unless commit=False)."""
    writer = db.begin(name, type_name, len(elements), chunk_rows, storage=storage)
    infos = [writer.write_chunk(k, chunk_batch(elements, k, chunk_rows, nulls, type_name))
             for k in range(writer.num_chunks)]
    if commit:
        writer.commit(infos)
    return writer, infos


def version_dirs(db, name):
    path = os.path.join(db.root, name)
    return sorted(p for p in os.listdir(path) if p.startswith("v-")) if os.path.isdir(path) else []


def version_path(db, name):
    return os.path.join(db.root, name, db.manifest(name)["version"])


def same_elements(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        if isinstance(x, np.ndarray):
            assert isinstance(y, np.ndarray) and x.dtype == y.dtype and np.array_equal(x, y)
        else:
            assert type(x) is type(y) and x == y


def psnr(a, b):
    mse = np.mean((np.asarray(a, float) - np.asarray(b, float)) ** 2)
    return 10 * np.log10(255.0**2 / mse) if mse else float("inf")


@pytest.fixture
def db(tmp_path):
    return Database(str(tmp_path / "db"))


@pytest.fixture
def memdb():
    url = f"memory://test-storage-{uuid.uuid4().hex}"
    db = Database(url)
    yield db
    storage_fs.rmtree(db.fs, db.root)


@pytest.fixture
def frames():
    rng = np.random.default_rng(7)
    return rng.integers(0, 256, size=(150, 36, 64, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def clip_frames(tmp_path_factory):
    """Decoded frames of a natural-looking H.264 clip (scanner_nb.samples), 320x192."""
    import av

    from scanner_nb.samples import make_video

    path = make_video(tmp_path_factory.mktemp("clip") / "clip.mp4", n_frames=48, width=320,
                      height=192, fps=24, gop=24)
    with av.open(str(path)) as container:
        return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])


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


def test_scanner_spelling_of_the_stored_stream_classes():
    from scanner_nb.storage import NamedStream, NamedVideoStream

    assert NamedStream is sp.NamedStream and NamedVideoStream is sp.NamedVideoStream


# ------------------------------------------------------------------------------- frames


def test_frames_are_video_by_default_psnr_and_size(db, clip_frames):
    store(db, "clip", clip_frames, "FrameType", chunk_rows=16)
    m = db.manifest("clip")
    assert m["layout"] == "video" and m["num_chunks"] == 3 and m["storage"]["crf"] == DEFAULT_CRF
    assert m["frame"] == {"shape": [192, 320, 3], "dtype": "|u1"}
    assert sorted(os.listdir(version_path(db, "clip"))) == ["0.mp4", "1.mp4", "2.mp4"]
    back = np.stack(list(db.load("clip")))
    assert back.shape == clip_frames.shape and back.dtype == np.uint8
    assert psnr(back, clip_frames) >= 40
    assert m["nbytes"] < clip_frames.nbytes / 20
    # each chunk decodes on its own: one row of the last chunk reads only that chunk
    (frame,) = db.load("clip", rows=[40])
    np.testing.assert_array_equal(frame, back[40])
    assert psnr(db.read_chunk("clip", 1).elements, clip_frames[16:32]) >= 40


@pytest.mark.parametrize("shape", [(47, 65, 3), (31, 17, 1), (20, 33), (2, 2, 3)])
def test_video_frames_of_odd_sizes_and_gray(db, shape):
    rng = np.random.default_rng(3)
    base = np.linspace(0, 200, shape[0] * shape[1]).reshape(shape[:2])
    data = np.stack([(base + 2 * i)[..., None].repeat(shape[2] if len(shape) == 3 else 1, -1)
                     .reshape(shape) for i in range(9)]).astype(np.uint8)
    data = np.clip(data + rng.integers(0, 3, data.shape), 0, 255).astype(np.uint8)
    store(db, "odd", data, "FrameType", chunk_rows=4)
    assert db.manifest("odd")["layout"] == "video"
    back = np.stack(list(db.load("odd")))
    assert back.shape == data.shape and psnr(back, data) > 35


def test_compress_video_quality_and_codec(db, clip_frames):
    from scanner_nb.storage import video_options

    store(db, "hq", clip_frames, "FrameType", chunk_rows=24, storage=video_options(quality=10))
    store(db, "lq", clip_frames, "FrameType", chunk_rows=24, storage=video_options(quality=40))
    hq, lq = (np.stack(list(db.load(n))) for n in ("hq", "lq"))
    assert psnr(hq, clip_frames) > psnr(lq, clip_frames)
    assert db.manifest("hq")["nbytes"] > db.manifest("lq")["nbytes"]
    with pytest.raises(ScannerValueError, match="CRF"):
        video_options(quality=99)
    with pytest.raises(ScannerValueError, match="codec"):
        video_options(codec="vp9000")


def test_lossless_frames_round_trip_bit_exact(db, frames):
    store(db, "clip", frames, "FrameType", chunk_rows=64, storage=LOSSLESS)
    m = db.manifest("clip")
    assert m["name"] == "clip" and m["type"] == "FrameType" and m["length"] == 150
    assert m["chunk_rows"] == 64 and m["num_chunks"] == 3 and m["layout"] == "zarr"
    assert m["frame"] == {"shape": [36, 64, 3], "dtype": "|u1"} and m["nulls"] == 0
    assert m["version"].startswith("v-") and m["version"].endswith(".zarr")
    assert m["created"].endswith("Z") and m["signed"]
    back = list(db.load("clip"))
    assert len(back) == 150 and all(f.dtype == np.uint8 for f in back)
    assert np.array_equal(np.stack(back), frames)
    chunk = db.read_chunk("clip", 2)
    assert np.array_equal(chunk.rows, np.arange(128, 150)) and chunk.type_name == "FrameType"
    assert isinstance(chunk.elements, np.ndarray) and np.array_equal(chunk.elements, frames[128:])
    with pytest.raises(RowIndexError):
        db.read_chunk("clip", 3)


def test_lossless_frames_open_by_path_with_zarr_dask_and_xarray(db, frames):
    zarr = pytest.importorskip("zarr")
    da = pytest.importorskip("dask.array")
    xarray = pytest.importorskip("xarray")
    store(db, "clip", frames, "FrameType", chunk_rows=64, storage=LOSSLESS)
    path = db.zarr_path("clip")
    assert os.path.isdir(path) and path.endswith(".zarr")
    z = zarr.open(path, mode="r")["frames"]
    assert z.shape == frames.shape and z.chunks == (64, 36, 64, 3) and z.dtype == np.uint8
    assert np.array_equal(z[140:150], frames[140:150])
    x = da.from_zarr(path, component="frames")
    assert x.chunks[0] == (64, 64, 22) and np.array_equal(x.compute(), frames)
    ds = xarray.open_zarr(path)
    assert ds["frames"].dims == ("frame", "y", "x", "channel")
    assert ds.attrs["type"] == "FrameType" and ds.attrs["rows"] == [0, 150]
    assert np.array_equal(ds["frames"].values, frames)


@pytest.mark.parametrize("shape, dtype", [
    ((7, 5, 3), np.uint8), ((1, 1, 1), np.uint8), ((33, 17, 4), np.uint8),
    ((6, 10), np.uint16), ((5, 4, 3), np.float32),
])
def test_numeric_frames_of_any_shape_are_stored_exactly(db, shape, dtype):
    data = (np.random.default_rng(1).random((13, *shape)) * 250).astype(dtype)
    store(db, "odd", data, "FrameType", chunk_rows=5, storage=LOSSLESS)
    assert db.manifest("odd")["frame"] == {"shape": list(shape), "dtype": np.dtype(dtype).str}
    back = np.stack(list(db.load("odd")))
    assert back.dtype == dtype and np.array_equal(back, data)
    if dtype is not np.uint8 or shape[-1] == 4:  # not video: exact even by default
        store(db, "default", data, "FrameType", chunk_rows=5)
        assert np.array_equal(np.stack(list(db.load("default"))), data)


def test_numeric_arrays_of_type_any_are_a_zarr_array(db):
    xarray = pytest.importorskip("xarray")
    hist = [np.arange(6, dtype=np.int64).reshape(2, 3) * i for i in range(10)]
    store(db, "hist", hist, "Any", chunk_rows=4)
    assert db.manifest("hist")["layout"] == "zarr"
    same_elements(list(db.load("hist")), hist)
    ds = xarray.open_zarr(db.zarr_path("hist"))
    assert ds["elements"].dims == ("row", "dim_1", "dim_2")
    assert np.array_equal(ds["elements"].values, np.stack(hist))


def blosc_header(db, name, k):
    """(flags, uncompressed bytes, file bytes) of Zarr chunk ``k`` of stream ``name``."""
    array = "frames" if db.manifest(name)["type"] == "FrameType" else "elements"
    ndim = 1 + len(db.manifest(name)["frame"]["shape"])
    path = pathlib.Path(version_path(db, name), array, "c", str(k), *["0"] * (ndim - 1))
    data = path.read_bytes()
    _, _, flags, _, nbytes, _, cbytes = struct.unpack("<BBBBIII", data[:16])
    assert cbytes == len(data)
    return flags, nbytes, cbytes


def test_lossless_chunks_are_lz4_where_it_pays_and_raw_where_it_does_not(db, clip_frames):
    """Natural frames compress (LZ4); noisy ones are Blosc's uncompressed frame (flag 0x2),
    read straight into the array; wide integers are byte-shuffled (flag 0x1). All load exact."""
    store(db, "clip", clip_frames, "FrameType", chunk_rows=20, storage=LOSSLESS)
    noise = np.random.default_rng(3).integers(0, 256, clip_frames.shape, dtype=np.uint8)
    store(db, "noisy", noise, "FrameType", chunk_rows=20, storage=LOSSLESS)
    counts = [np.arange(300, dtype=np.int64) * i for i in range(50)]
    store(db, "counts", counts, "Any", chunk_rows=20)
    for k in range(3):  # the last chunk is padded with zeros to 20 rows: it compresses
        flags, nbytes, cbytes = blosc_header(db, "clip", k)
        assert not flags & 0x2 and cbytes < 0.75 * nbytes
        flags, nbytes, cbytes = blosc_header(db, "noisy", k)
        assert (flags & 0x2 and cbytes == nbytes + 16) if k < 2 else cbytes < nbytes / 2
        flags, nbytes, cbytes = blosc_header(db, "counts", k)
        assert flags & 0x1 and not flags & 0x2 and cbytes < nbytes / 4
    for name, data in (("clip", clip_frames), ("noisy", noise), ("counts", np.stack(counts))):
        back = list(db.load(name))
        assert np.array_equal(np.stack(back), data) and back[0].dtype == data.dtype
        assert np.array_equal(np.stack(list(db.load(name, rows=[47, 3, 20]))), data[[47, 3, 20]])
        assert np.array_equal(db.read_chunk(name, 2).elements, data[40:])
    zarr = pytest.importorskip("zarr")
    for name, data in (("clip", clip_frames), ("noisy", noise)):
        assert np.array_equal(zarr.open(db.zarr_path(name), mode="r")["frames"][:], data)
    meta = json.loads(pathlib.Path(version_path(db, "counts"), "zarr.json").read_text())
    codec = meta["consolidated_metadata"]["metadata"]["elements"]["codecs"][-1]
    assert codec["name"] == "blosc" and codec["configuration"]["shuffle"] == "shuffle"


def test_streams_stored_before_raw_and_shuffled_chunks_still_load(tmp_path):
    """tests/data/stored-v1 was written by scanner_nb before lossless chunks could be stored
    raw or shuffled (every chunk Blosc LZ4 without shuffle): lossless frames (10 of 16x24,
    chunks of 4) and int64 rows of type Any (70 of 3, chunks of 32), made by::

        y, x = np.mgrid[0:16, 0:24] // 4
        frames = np.stack([np.stack([(y * 20 + i) % 256, (x * 9 + i) % 256,
                                     (y + x) * 7 % 256], -1) for i in range(10)]).astype(np.uint8)
        counts = np.arange(70 * 3, dtype=np.int64).reshape(70, 3) // 5 * 1000
    """
    shutil.copytree(DATA / "stored-v1", tmp_path / "db")
    db = Database(str(tmp_path / "db"))
    y, x = np.mgrid[0:16, 0:24] // 4
    frames = np.stack([np.stack([(y * 20 + i) % 256, (x * 9 + i) % 256, (y + x) * 7 % 256], -1)
                       for i in range(10)]).astype(np.uint8)
    counts = np.arange(70 * 3, dtype=np.int64).reshape(70, 3) // 5 * 1000
    assert db.names() == ["counts", "frames"]
    for name, data in (("frames", frames), ("counts", counts)):
        assert db.manifest(name)["layout"] == "zarr"
        flags, nbytes, cbytes = blosc_header(db, name, 0)
        assert not flags & 0x3 and cbytes < nbytes  # LZ4, no shuffle: the old chunks
        back = list(db.load(name))
        assert np.array_equal(np.stack(back), data) and back[0].dtype == data.dtype
        assert np.array_equal(np.stack(list(db.load(name, rows=[9, 0, 8]))), data[[9, 0, 8]])
    zarr = pytest.importorskip("zarr")
    assert np.array_equal(zarr.open(db.zarr_path("frames"), mode="r")["frames"][:], frames)


def test_frames_from_a_list_mixed_shapes_and_nulls(db, frames):
    store(db, "listed", list(frames[:10]), "FrameType", chunk_rows=4, storage=LOSSLESS)
    assert db.manifest("listed")["layout"] == "zarr"
    mixed = [frames[i] if i % 3 else frames[i, :10, :7] for i in range(10)]
    store(db, "mixed", mixed, "FrameType", chunk_rows=4, storage=LOSSLESS)
    m = db.manifest("mixed")
    assert m["layout"] == "elements" and m["frame"] is None
    same_elements(list(db.load("mixed")), mixed)
    with pytest.raises(ScannerValueError, match="not arrays of one shape"):
        db.zarr_path("mixed")
    nulls = np.zeros(10, bool)
    nulls[[5, 6]] = True
    store(db, "holes", list(frames[:10]), "FrameType", chunk_rows=4, nulls=nulls)
    m = db.manifest("holes")
    assert m["layout"] == "mixed" and m["nulls"] == 2
    assert [c["encoding"] for c in m["chunks"]] == ["video", "elements", "video"]
    back = list(db.load("holes"))
    assert back[5] is None and back[6] is None and back[4].shape == (36, 64, 3)
    assert db.read_chunk("holes", 1).nulls.tolist() == [False, True, True, False]
    with pytest.raises(ScannerValueError, match="not stored as a Zarr array"):
        db.zarr_path("holes")


# ------------------------------------------------------------------------------- other types


PLAIN = [None, True, 0, -2**70, 1.5, float("inf"), 2j, "two", b"\x00\xff", bytearray(b"ba"),
         [3.0, {"four": (4,)}], (), {1: "a", (2, 3): [None]}, np.arange(5),
         np.array(["a", "bc"]), np.float32(0.5), np.datetime64("2024-01-02"), {"x": b"y"}]


def test_plain_data_round_trips_without_pickle(db, tmp_path):
    store(db, "objects", PLAIN, "Any", chunk_rows=4)
    m = db.manifest("objects")
    assert m["layout"] == "elements" and not any(c["pickled"] for c in m["chunks"])
    same_elements(list(db.load("objects")), PLAIN)
    # a user who did not write it loads plain data (nothing is unpickled)
    stranger = Database(db.url, key_file=str(tmp_path / "stranger.key"))
    assert not stranger.manifest("objects")["signed"]
    same_elements(list(stranger.load("objects")), PLAIN)


def test_bytes_and_custom_types_round_trip(db):
    blobs = [b"", b"a", bytes(range(256)), b"\x00" * 1000, b"end"]
    store(db, "blobs", blobs, "bytes", chunk_rows=2)
    assert list(db.load("blobs")) == blobs and db.manifest("blobs")["layout"] == "elements"
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
    store(memdb, "clip", frames[:70], "FrameType", chunk_rows=32, storage=LOSSLESS)
    store(memdb, "objects", [1, None, "x"], "Any", chunk_rows=2)
    store(memdb, "pts", [(1.0, 2.0)], "StoredPoint", chunk_rows=2)
    assert memdb.names() == ["clip", "objects", "pts"]
    assert np.array_equal(np.stack(list(memdb.load("clip"))), frames[:70])
    assert list(memdb.load("objects")) == [1, None, "x"]
    assert list(memdb.load("pts")) == [(1.0, 2.0)]
    path = memdb.zarr_path("clip")
    assert path.startswith("memory://")
    assert np.array_equal(zarr.open(path, mode="r")["frames"][:], frames[:70])
    memdb.delete("clip")
    assert memdb.names() == ["objects", "pts"] and not memdb.exists("clip")
    with pytest.raises(StreamNotFoundError):
        memdb.load("clip")


# ------------------------------------------------------------------------------- load(rows)


@pytest.fixture
def chunk_reads(monkeypatch):
    """Names of chunk files read, in order."""
    reads = []
    read_file = storage_fs.read_file

    def counting(fs, path, read=None):
        if not path.endswith(("manifest.json", "lock.json")):
            reads.append(path.rsplit("/", 1)[-1])
        return read_file(fs, path, read)

    monkeypatch.setattr(storage_fs, "read_file", counting)
    return reads


def test_load_rows_reads_only_needed_chunks(db, clip_frames, chunk_reads):
    store(db, "clip", clip_frames, "FrameType", chunk_rows=8)  # 6 chunks
    rows = [41, 5, 7, 7, 24, 47, 0]
    got = list(db.load("clip", rows=rows))
    assert min(psnr(g, clip_frames[r]) for g, r in zip(got, rows)) >= 38
    assert chunk_reads == ["5.mp4", "0.mp4", "3.mp4", "5.mp4", "0.mp4"]
    chunk_reads.clear()
    assert len(list(db.load("clip"))) == 48 and len(chunk_reads) == 6
    store(db, "nums", list(range(40)), "Any", chunk_rows=8)
    chunk_reads.clear()
    assert list(db.load("nums", rows=[39, 38, 1, 1])) == [39, 38, 1, 1]
    assert chunk_reads == ["4.elements", "0.elements"]


def test_load_rows_frames_are_independent_copies(db, frames):
    store(db, "clip", frames[:20], "FrameType", chunk_rows=8, storage=LOSSLESS)
    (frame,) = db.load("clip", rows=[3])
    assert frame.base is None or frame.base.size == frame.size
    frame[:] = 0
    assert np.array_equal(next(db.load("clip", rows=[3])), frames[3])


@pytest.mark.parametrize("cores", [2, 8])  # the next chunk only; 4 side by side
def test_a_zarr_streams_chunks_read_side_by_side_come_in_order(db, monkeypatch, cores):
    """Zarr chunks are read a few at once: rows still come in order, an early stop is fine,
    and a damaged chunk raises only once the rows before it have come."""
    monkeypatch.setattr(os, "cpu_count", lambda: cores)
    data = np.arange(185 * 4, dtype=np.int32).reshape(185, 4)
    store(db, "many", list(data), "Any", chunk_rows=5)  # 37 chunks
    assert np.array_equal(np.stack(list(db.load("many"))), data)
    rows = np.random.default_rng(5).permutation(185)[:60].tolist()
    assert np.array_equal(np.stack(list(db.load("many", rows=rows))), data[rows])
    iterator = db.load("many")
    assert np.array_equal(np.stack([next(iterator) for _ in range(12)]), data[:12])
    iterator.close()
    path = pathlib.Path(version_path(db, "many"), "elements", "c", "20", "0")
    path.write_bytes(path.read_bytes()[:-1] + b"!")
    got = []
    with pytest.raises(StorageError, match=r"chunk 20 \(rows 100 to 104\).*corrupt"):
        got.extend(db.load("many"))
    assert np.array_equal(np.stack(got), data[:100])


def test_load_rows_outside_raise_at_call(db, chunk_reads):
    store(db, "nums", list(range(10)), "Any", chunk_rows=4)
    chunk_reads.clear()
    for rows in ([10], [-1], [0, 3, 99]):
        with pytest.raises(RowIndexError, match="outside stream 'nums' of length 10"):
            db.load("nums", rows=rows)
    assert chunk_reads == []


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
    assert "'a'" in str(info.value)


def test_delete_keeps_another_writers_staging(db):
    store(db, "s", [1, 2], "Any")
    writer, infos = store(db, "s", [3, 4], "Any", commit=False)
    db.delete("s")
    assert not db.exists("s") and version_dirs(db, "s") == [writer.version]
    writer.commit(infos)
    assert list(db.load("s")) == [3, 4]


def test_nothing_is_visible_before_the_commit(db):
    writer, infos = store(db, "s", list(range(10)), "Any", chunk_rows=4, commit=False)
    assert all(info["rows"] for info in infos) and len(version_dirs(db, "s")) == 1
    assert not db.exists("s") and db.names() == []
    with pytest.raises(StreamNotFoundError):
        db.load("s")
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
    with pytest.raises(StorageError, match="10 expected"):
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


def test_a_version_replaced_or_damaged_meanwhile_explains_itself(db):
    store(db, "s", list(range(8)), "Any", chunk_rows=4)
    manifest = db.manifest("s")
    os.remove(os.path.join(db.root, "s", manifest["version"], "1.elements"))
    with pytest.raises(StorageError, match=r"chunk 1 \(rows 4 to 7\) of stream 's' is missing"):
        list(db.load("s"))
    store(db, "s", [9], "Any")  # replaced: an old manifest now names a removed version
    with pytest.raises(StorageError, match="replaced while it was being read"):
        db.read_chunk("s", 0, manifest)


def test_a_load_never_continues_into_a_newer_version(db):
    store(db, "s", ["old"] * 6, "Any", chunk_rows=2)
    iterator = db.load("s")
    assert [next(iterator), next(iterator)] == ["old", "old"]
    store(db, "s", ["new"] * 6, "Any", chunk_rows=2)
    assert list(iterator) == ["old"] * 4  # its version stays while this process reads it
    assert list(db.load("s")) == ["new"] * 6
    del iterator
    gc.collect()
    db.gc()
    assert version_dirs(db, "s") == [db.manifest("s")["version"]]


# ------------------------------------------------------------------------------- checksums


@pytest.mark.parametrize("kind", ["raw", "lz4"])
@pytest.mark.parametrize("damage, why", [
    (lambda data: data.__setitem__(len(data) // 2, data[len(data) // 2] ^ 0x01), "checksum"),
    (lambda data: data.__setitem__(2, data[2] ^ 0x02), "checksum"),  # raw <-> compressed flag
    (lambda data: data.__delitem__(slice(len(data) - 5, None)), "size"),
    (lambda data: data.extend(b"12345"), "size"),
    (lambda data: data.__delitem__(slice(10, None)), "bytes"),
])
def test_a_flipped_byte_in_a_chunk_is_found(db, frames, clip_frames, kind, damage, why):
    data = frames[:20] if kind == "raw" else clip_frames[:20]
    store(db, "clip", data, "FrameType", chunk_rows=8, storage=LOSSLESS)
    assert bool(blosc_header(db, "clip", 1)[0] & 0x2) == (kind == "raw")
    path = pathlib.Path(version_path(db, "clip"), "frames", "c", "1", "0", "0", "0")
    changed = bytearray(path.read_bytes())
    damage(changed)
    path.write_bytes(bytes(changed))
    with pytest.raises(StorageError, match=rf"chunk 1 \(rows 8 to 15\) of stream 'clip' is "
                                           rf"corrupt.*{why}"):
        list(db.load("clip"))
    assert np.array_equal(next(db.load("clip", rows=[3])), data[3])  # chunk 0 is fine


def test_swapped_chunk_files_are_found(db):
    store(db, "nums", list(range(8)), "Any", chunk_rows=4)
    folder = version_path(db, "nums")
    a, b = (os.path.join(folder, f"{k}.elements") for k in (0, 1))
    os.rename(a, a + ".x")
    os.rename(b, a)
    os.rename(a + ".x", b)
    with pytest.raises(StorageError, match=r"chunk 0 \(rows 0 to 3\) of stream 'nums'"):
        list(db.load("nums"))


def _rewrite_manifest(db, name, change):
    path = pathlib.Path(db.root, name, "manifest.json")
    manifest = json.loads(path.read_text())
    change(manifest)
    path.write_text(json.dumps(manifest))


@pytest.mark.parametrize("change, why", [
    (lambda m: m["chunks"].pop(), "lists 2 chunks, 3 expected"),
    (lambda m: m.update(num_chunks=0), "num_chunks"),
    (lambda m: m.update(chunk_rows=0), "chunk_rows"),
    (lambda m: m.update(length="10"), "length"),
    (lambda m: m["chunks"][0].update(shape=[10**6, 10**6, 3]), "larger than"),
    (lambda m: m["chunks"][0].update(shape=[-1, 4, 3]), "shape"),
    (lambda m: m["chunks"][0].update(dtype="O"), "dtype"),
    (lambda m: m["chunks"][0].update(rows=5), "rows"),
    (lambda m: m["chunks"][0].update(checksum="00"), "checksum"),
    (lambda m: m["chunks"][0].update(checksum="sha256:" + "0" * 32), "checksum"),
    (lambda m: m.update(version="../../escape"), "version"),
    (lambda m: m.update(run="../x"), "run"),
    (lambda m: m.update(type="os.system('x')"), "type"),
    (lambda m: m.update(name="other"), "names stream 'other'"),
    (lambda m: m.clear(), "not written by this version"),
])
def test_malformed_manifests_are_storage_errors(db, frames, change, why):
    store(db, "clip", frames[:10], "FrameType", chunk_rows=4, storage=LOSSLESS)
    _rewrite_manifest(db, "clip", change)
    for call in (lambda: db.manifest("clip"), lambda: db.load("clip"),
                 lambda: db.read_chunk("clip", 0), lambda: len(list(db.load("clip")))):
        with pytest.raises(StorageError, match=why):
            call()
    pathlib.Path(db.root, "clip", "manifest.json").write_text("{not json")
    with pytest.raises(StorageError, match="corrupt"):
        db.manifest("clip")


def test_a_crafted_version_never_reaches_outside_the_db(tmp_path):
    sentinel = tmp_path / "thesis"
    sentinel.mkdir()
    (sentinel / "chapter1.tex").write_text("precious")
    db = Database(str(tmp_path / "shared" / "db"))
    store(db, "x", [1, 2, 3], "Any")
    _rewrite_manifest(db, "x", lambda m: m.update(version="../../../thesis"))
    with pytest.raises(StorageError, match="version"):
        db.load("x")
    db.delete("x")  # removes the stream's own manifest only
    store(db, "x", [4], "Any")
    _rewrite_manifest(db, "x", lambda m: m.update(version="../../../thesis"))
    store(db, "x", [5], "Any")  # an Overwrite of the crafted stream
    db.gc(include_open=True)
    assert (sentinel / "chapter1.tex").read_text() == "precious"
    assert list(db.load("x")) == [5]


def test_a_chunk_file_linking_out_of_the_db_is_not_read(db, tmp_path):
    store(db, "nums", list(range(8)), "Any", chunk_rows=4)
    secret = tmp_path / "secret"
    secret.write_bytes(pathlib.Path(version_path(db, "nums"), "1.elements").read_bytes())
    chunk = pathlib.Path(version_path(db, "nums"), "1.elements")
    chunk.unlink()
    chunk.symlink_to(secret)
    with pytest.raises(StorageError, match=r"chunk 1 \(rows 4 to 7\).*link out"):
        list(db.load("nums"))
    db.delete("nums")
    assert secret.exists()


# ------------------------------------------------------------------------------- pickle


class Payload:
    """An object whose unpickling would touch a marker file (as a hostile pickle would)."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (_touch, (self.marker,))


def _touch(path):
    with open(path, "w") as f:
        f.write("ran")
    return "payload"


def test_pickles_someone_else_stored_do_not_run(tmp_path):
    marker = tmp_path / "marker"
    url = str(tmp_path / "shared")
    author = Database(url, key_file=str(tmp_path / "author.key"))
    store(author, "objs", [1, Payload(str(marker)), "x"], "Any", chunk_rows=2)
    assert author.manifest("objs")["chunks"][0]["pickled"]
    reader = Database(url, key_file=str(tmp_path / "reader.key"))
    with pytest.raises(StorageError, match=r"pickled.*trust_pickle=True") as info:
        list(reader.load("objs"))
    assert "'objs'" in str(info.value) and not marker.exists()
    assert list(reader.load("objs", rows=[2])) == ["x"]  # a chunk without pickles loads
    # a forged signature or flag in the manifest does not help
    _rewrite_manifest(reader, "objs", lambda m: m.update(signed=True, signature="0" * 64))
    with pytest.raises(StorageError, match="trust_pickle"):
        list(reader.load("objs"))
    assert not marker.exists()
    trusting = Database(url, key_file=str(tmp_path / "reader.key"), trust_pickle=True)
    assert list(trusting.load("objs"))[1] == "payload" and marker.exists()


def test_a_pickle_under_a_plain_chunks_checksum_does_not_run(tmp_path):
    """Plain chunks have a fast (not collision-resistant) XXH3 checksum, pickled ones SHA-256:
    a pickle slipped into a plain chunk of a stream this user signed is refused even if its
    XXH3 matched (simulated by re-signing the manifest with the new file's checksum)."""
    from scanner_nb.storage import codecs
    from scanner_nb.storage.manifest import sign

    marker = tmp_path / "marker"
    db = Database(str(tmp_path / "db"), key_file=str(tmp_path / "me.key"))
    store(db, "objs", [1, 2, Payload(str(marker))], "Any", chunk_rows=2)
    chunks = db.manifest("objs")["chunks"]
    assert chunks[0]["checksum"].startswith("xxh3_128:") and not chunks[0]["pickled"]
    assert chunks[1]["checksum"].startswith("sha256:") and chunks[1]["pickled"]
    forged, _ = codecs.encode_elements([Payload(str(marker)), 2], "Any", None)
    pathlib.Path(version_path(db, "objs"), "0.elements").write_bytes(forged)

    def collide(m):
        m["chunks"][0]["checksum"] = codecs.checksum(forged)
        m["signature"] = sign(m, db.key)

    _rewrite_manifest(db, "objs", collide)
    assert db.manifest("objs")["signed"]
    with pytest.raises(StorageError, match=r"chunk 0 \(rows 0 to 1\) of stream 'objs' is "
                                           r"corrupt: it holds pickled rows"):
        list(db.load("objs"))
    assert not marker.exists()


def test_own_pickles_load_and_client_opt_in(tmp_path):
    class Thing:
        def __eq__(self, other):
            return type(other).__name__ == "Thing"

    with sp.Client(db_path=str(tmp_path / "db"), show_progress=False) as sc:
        (stored,) = sc.run(sc.io.Output(sc.io.Input([sp.MemoryStream([Thing(), 1])]),
                                        [sp.NamedStream(sc, "things")]), show_progress=False)
        assert list(stored.load()) == [Thing(), 1]
    env = dict(os.environ, SCANNER_NB_KEY_FILE=str(tmp_path / "other.key"))
    script = ("import scanner_nb as sp, sys\n"
              "for trust in (False, True):\n"
              "    sc = sp.Client(db_path=sys.argv[1], trust_pickle=trust)\n"
              "    try:\n"
              "        print(len(list(sp.NamedStream(sc, 'things').load())))\n"
              "    except sp.StorageError as e:\n"
              "        print(type(e).__name__)\n")
    out = subprocess.run([sys.executable, "-c", script, str(tmp_path / "db")], env=env,
                         capture_output=True, text=True, timeout=120, check=False)
    assert out.stdout.split() == ["StorageError", "2"], out.stderr


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
        with open(os.path.join(path, commit_.LOCK), "w") as f:
            json.dump({"host": "elsewhere", "pid": 1, "created": 0,
                       "heartbeat": commit_.time.time() - heartbeat_age}, f)

    fake("v-20000101T000000-aaaaaaaaaaaa", commit_.STALE_AFTER + 60)
    fake("v-20000101T000000-bbbbbbbbbbbb", 5)
    os.makedirs(os.path.join(db.root, "s", "v-20000101T000000-cccccccccccc"))  # no lock
    os.makedirs(os.path.join(db.root, "s", "not-a-version"))  # never ours to remove
    writer = db.begin("s", "Any", 1, 1)
    assert version_dirs(db, "s") == sorted(["v-20000101T000000-bbbbbbbbbbbb", writer.version])
    assert os.path.isdir(os.path.join(db.root, "s", "not-a-version"))
    writer.abort()


def test_write_after_abort_fails_clearly(tmp_path):
    db = Database(str(tmp_path / "db"))
    writer = db.begin("s", "Any", 4, 2)
    copy = pickle.loads(pickle.dumps(writer))
    commit_._HEARTBEATS.pop(writer.version_dir, None)  # as in a fresh worker process
    writer.abort()
    with pytest.raises(StorageError, match="removed"):
        copy.write_chunk(0, chunk_batch([1, 2, 3, 4], 0, 2))
    assert version_dirs(db, "s") == []


def test_a_worker_refreshes_the_heartbeat_only_once_it_is_old(tmp_path):
    db = Database(str(tmp_path / "db"))
    writer = db.begin("s", "Any", 4, 2)
    lock_path = pathlib.Path(writer.version_dir, commit_.LOCK)
    staged = json.loads(lock_path.read_text())
    copy = pickle.loads(pickle.dumps(writer))
    commit_._HEARTBEATS.pop(writer.version_dir, None)  # as in a fresh worker process
    copy.write_chunk(0, chunk_batch([1, 2, 3, 4], 0, 2))
    assert json.loads(lock_path.read_text()) == staged  # just staged: checked, not rewritten
    lock_path.write_text(json.dumps({**staged, "heartbeat": staged["heartbeat"] - 61}))
    commit_._HEARTBEATS.pop(writer.version_dir, None)
    copy.write_chunk(1, chunk_batch([1, 2, 3, 4], 1, 2))
    assert json.loads(lock_path.read_text())["heartbeat"] >= staged["heartbeat"]  # refreshed
    writer.abort()


# ------------------------------------------------------------------------------- overwrite, gc


def test_overwrite_replaces_only_at_commit(db):
    store(db, "s", ["old"] * 5, "Any", chunk_rows=2)
    old_version = db.manifest("s")["version"]
    writer, infos = store(db, "s", ["new"] * 7, "Any", chunk_rows=3, commit=False)
    assert list(db.load("s")) == ["old"] * 5 and db.manifest("s")["version"] == old_version
    writer.commit(infos)
    assert list(db.load("s")) == ["new"] * 7 and db.manifest("s")["length"] == 7
    assert version_dirs(db, "s") == [writer.version]  # nothing held it: old data removed
    failed, _ = store(db, "s", ["newer"] * 2, "Any", commit=False)
    failed.abort()
    assert list(db.load("s")) == ["new"] * 7 and version_dirs(db, "s") == [writer.version]


def test_an_open_zarr_handle_keeps_reading_its_version_after_overwrite(db, frames):
    zarr = pytest.importorskip("zarr")
    da = pytest.importorskip("dask.array")
    store(db, "clip", frames[:20], "FrameType", chunk_rows=8, storage=LOSSLESS)
    path = db.zarr_path("clip")
    z = zarr.open(path, mode="r")["frames"]
    lazy = da.from_zarr(path, component="frames")
    store(db, "clip", 255 - frames[:20], "FrameType", chunk_rows=8, storage=LOSSLESS)
    assert np.array_equal(np.stack(list(db.load("clip"))), 255 - frames[:20])
    assert np.array_equal(z[:], frames[:20]) and np.array_equal(lazy.compute(), frames[:20])
    assert db.gc() == [] and np.array_equal(z[12:], frames[12:20])  # open here: kept
    old = os.path.basename(path)
    assert db.gc(include_open=True) == [f"clip/{old}"]
    assert version_dirs(db, "clip") == [db.manifest("clip")["version"]]


def test_gc_removes_unreferenced_versions_and_run_records(db, monkeypatch):
    store(db, "a", [1], "Any")
    store(db, "b", [2], "Any")
    first = db.manifest("a")["run"]
    assert len(os.listdir(os.path.join(db.root, ".runs"))) == 2
    store(db, "a", [3], "Any")  # a's first run record is referenced no more
    monkeypatch.setattr(db, "stale_after", 0.0)
    assert db.gc() == [f".runs/{first}"]
    assert len(os.listdir(os.path.join(db.root, ".runs"))) == 2
    assert list(db.load("a")) == [3] and list(db.load("b")) == [2]


def test_overwrite_frames_with_other_types(db, frames):
    store(db, "s", frames[:10], "FrameType", chunk_rows=4)
    store(db, "s", [b"x"], "bytes")
    assert list(db.load("s")) == [b"x"] and len(version_dirs(db, "s")) == 1
    store(db, "s", frames[:3], "FrameType", chunk_rows=4, storage=LOSSLESS)
    assert np.array_equal(np.stack(list(db.load("s"))), frames[:3])


# ------------------------------------------------------------------------------- atomic runs


class FullMemoryFileSystem(MemoryFileSystem):
    """The memory filesystem, whose disk is full for paths matching ``FULL_AT``."""

    protocol = ("fullmem",)
    FULL_AT = "^$"

    @classmethod
    def _strip_protocol(cls, path):
        return super()._strip_protocol(path.replace("fullmem://", "memory://", 1))

    def pipe_file(self, path, value, **kwargs):
        if re.search(self.FULL_AT, path):
            raise OSError(errno.ENOSPC, "No space left on device", path)
        return super().pipe_file(path, value, **kwargs)


fsspec.register_implementation("fullmem", FullMemoryFileSystem, clobber=True)


@pytest.mark.parametrize("full_at", [r"/\.runs/", r"/b/.*manifest\.json", r"/b/v-.*/0\.elements"])
def test_a_full_disk_commits_no_output(full_at, monkeypatch):
    root = f"atomic-{uuid.uuid4().hex}"
    with sp.Client(db_path=f"fullmem://{root}", show_progress=False) as sc:
        def run(values, mode=sp.CacheMode.Error):
            out = sc.io.Output(sc.io.Input([sp.MemoryStream(values), sp.MemoryStream(values)]),
                               [sp.NamedStream(sc, "a"), sp.NamedStream(sc, "b")])
            return sc.run(out, sp.PerfParams.manual(2, 2), cache_mode=mode, show_progress=False)

        try:
            run([1, 2, 3])
            monkeypatch.setattr(FullMemoryFileSystem, "FULL_AT", full_at)
            with pytest.raises(StorageError, match="disk is full") as info:
                run([7, 8], sp.CacheMode.Overwrite)
            assert not isinstance(info.value, OSError)
            monkeypatch.setattr(FullMemoryFileSystem, "FULL_AT", "^$")
            plain = Database(f"memory://{root}")  # another process's view of the same files
            for db in (sc.db, plain):
                assert [list(db.load(n)) for n in ("a", "b")] == [[1, 2, 3]] * 2
            run([4], sp.CacheMode.Overwrite)
            assert [list(plain.load(n)) for n in ("a", "b")] == [[4], [4]]
        finally:
            storage_fs.rmtree(sc.db.fs, sc.db.root)


KILL_SCRIPT = r"""
import os, signal, sys
from fsspec.implementations.local import LocalFileSystem
import fsspec
import scanner_nb as sp

class KillingFileSystem(LocalFileSystem):
    '''The local disk, but the process is killed as it moves a file onto KILL_AT.'''
    protocol = ("killfile",)

    @classmethod
    def _strip_protocol(cls, path):
        return super()._strip_protocol(path.removeprefix("killfile://"))

    def mv(self, path1, path2, *args, **kwargs):
        if os.environ["KILL_AT"] in path2:
            os.kill(os.getpid(), signal.SIGKILL)
        return super().mv(path1, path2, *args, **kwargs)

fsspec.register_implementation("killfile", KillingFileSystem)
sc = sp.Client(db_path="killfile://" + sys.argv[1], show_progress=False)
values = [int(sys.argv[2])] * 5
out = sc.io.Output(sc.io.Input([sp.MemoryStream(values), sp.MemoryStream(values)]),
                   [sp.NamedStream(sc, "a"), sp.NamedStream(sc, "b")])
sc.run(out, sp.PerfParams.manual(2, 2), cache_mode=sp.CacheMode.Overwrite, show_progress=False)
print("committed")
"""


@pytest.mark.parametrize("kill_at", ["/b/manifest.json", "/.runs/"])
def test_a_kill_between_two_outputs_commits_no_output(tmp_path, kill_at):
    url = str(tmp_path / "db")

    def run(value, kill_at="never"):
        env = dict(os.environ, KILL_AT=kill_at)
        return subprocess.run([sys.executable, "-c", KILL_SCRIPT, url, str(value)], env=env,
                              capture_output=True, text=True, timeout=120, check=False)

    first = run(1)
    assert first.stdout.strip() == "committed", first.stderr
    killed = run(2, kill_at)
    assert killed.returncode == -signal.SIGKILL
    db = Database(url)
    raw = {n: json.loads(pathlib.Path(url, n, "manifest.json").read_text()) for n in "ab"}
    if kill_at == "/.runs/":  # both manifests name the killed run, which has no record
        assert raw["a"]["run"] == raw["b"]["run"] and "previous" in raw["a"]
    assert not os.path.exists(os.path.join(url, ".runs", raw["a"]["run"] + ".json"))
    assert [list(db.load(n)) for n in ("a", "b")] == [[1] * 5, [1] * 5]
    again = run(3)
    assert again.stdout.strip() == "committed", again.stderr
    assert [list(db.load(n)) for n in ("a", "b")] == [[3] * 5, [3] * 5]
    assert [len(version_dirs(db, n)) for n in "ab"] == [1, 1]  # the dead run's data swept


# ------------------------------------------------------------------------------- races


def _frames_of(value, n=12):
    return np.full((n, 6, 8, 3), value % 256, dtype=np.uint8)


def _write_repeatedly(url, name, tag, rounds):
    db = Database(url)
    for i in range(rounds):
        store(db, name, _frames_of(tag * 50 + i), "FrameType", chunk_rows=4, storage=LOSSLESS)


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


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["threads", "processes"])
def test_racing_writers_one_wins_whole(db, mode):
    rounds = 6 if mode == "threads" else 8
    store(db, "race", _frames_of(255), "FrameType", chunk_rows=4, storage=LOSSLESS)
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
    db.gc(include_open=True)  # versions orphaned by the race go
    assert version_dirs(db, "race") == [db.manifest("race")["version"]]


def test_commit_from_another_process(db):
    writer = db.begin("s", "FrameType", 12, 4, storage=LOSSLESS)
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


def test_docstring_examples():
    import doctest

    from scanner_nb.storage import codecs, fs
    from scanner_nb.storage import db as db_module

    for module in (codecs, db_module, fs):
        result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
        assert result.failed == 0 and result.attempted >= 2


def test_a_reader_released_by_the_garbage_collector_under_the_state_lock_does_not_deadlock():
    """Readers unpin their version from weakref finalizers, which can run at any allocation,
    including one made while this thread holds the storage state lock (it hung the suite)."""
    import threading
    import weakref

    from scanner_nb.storage import commit

    class Reader:
        pass

    path = "/nowhere/db/clip/v-20260101T000000-000000000000"

    def release_under_lock():
        commit.pin(path)
        reader = Reader()
        weakref.finalize(reader, commit.unpin, path)
        with commit._STATE_LOCK:
            del reader  # the finalizer runs here, inside the lock

    worker = threading.Thread(target=release_under_lock, daemon=True)
    worker.start()
    worker.join(10)
    assert not worker.is_alive(), "unpin blocked on the lock its own thread holds"
    assert not commit._is_pinned(path)


# ------------------------------------------------------------------------------- many at once


def test_each_makes_every_call_and_raises_the_first_error_in_order():
    local = fsspec.filesystem("file")  # calls made concurrently, as on a remote store
    done = []

    def square(i):
        if i in (2, 5):
            raise ValueError(f"item {i}")
        done.append(i)
        return i * i

    with pytest.raises(ValueError, match="item 2"):
        storage_fs.each(local, square, range(8))
    assert sorted(done) == [0, 1, 3, 4, 6, 7]  # the calls after a failed one were made too
    assert storage_fs.each(local, lambda i: i * i, range(40)) == [i * i for i in range(40)]
    assert storage_fs.each(MemoryFileSystem(), len, ["ab", "c"]) == [2, 1]


def test_many_streams_committed_together_then_replaced(db):
    writers = [db.writer(f"s{i}", "Any", 3, 2) for i in range(20)]
    db.stage(writers)
    infos = [[w.write_chunk(k, chunk_batch([i] * 3, k, 2)) for k in range(2)]
             for i, w in enumerate(writers)]
    db.commit(writers, infos)
    assert [list(db.load(f"s{i}")) for i in range(20)] == [[i, i, i] for i in range(20)]
    first = {f"s{i}": db.manifest(f"s{i}")["run"] for i in range(20)}
    assert len(set(first.values())) == 1  # one run record commits them all
    again = [store(db, f"s{i}", [-i], "Any", commit=False) for i in range(3)]
    db.commit([w for w, _ in again], [infos for _, infos in again])
    assert [list(db.load(f"s{i}")) for i in range(4)] == [[0], [-1], [-2], [3, 3, 3]]
    assert [version_dirs(db, f"s{i}") for i in range(3)] == [[w.version] for w, _ in again]
