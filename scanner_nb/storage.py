"""Stored (named) streams: one folder per stream, chunk files, a manifest written last.

A database is a folder at any fsspec URL (a local path, ``memory://db``, ``s3://bucket/db``)::

    <db>/<name>/manifest.json            the commit: type, length, chunk_rows, version, ...
    <db>/<name>/v-<time>-<token>/        one folder per version (staging until committed)
        .zarray  .zattrs  0.0.0.0  1.0.0.0 ...    frames of one shape and dtype, no nulls:
                                                  a Zarr (v2 format) array, one chunk per k
        0.elements  1.elements ...                other types (and frames of mixed shapes or
                                                  with nulls): per chunk "SNBELEM1", the row
                                                  count, one int64 length per row (-1: null),
                                                  then each element's serialized bytes
        lock.json                                 only while staging: owner and heartbeat

A :class:`StreamWriter` (from :meth:`Database.begin`) writes chunk ``k`` from whichever worker
computed it, into a fresh version folder nobody reads. :meth:`StreamWriter.commit` then writes
the manifest last and atomically (``os.replace`` on a local disk, one PUT on an object store),
which is the moment the stream appears, or is replaced for ``CacheMode.Overwrite``; the old
version's data goes only after. A reader resolves ``manifest.json`` to one version folder and
reads only that, so it never sees a mix of two writes. No manifest means no stream: leftovers of
failed runs are invisible and removed by a later :meth:`Database.begin` of that name.

Frames are stored bit-exact with Blosc LZ4 (level 1, no shuffle: of the Blosc codecs measured
by ``bench/bench_storage.py --codecs`` it writes and reads video frames fastest), so a stored
frame stream opens directly with ``zarr.open(db.zarr_path(name))`` or
``dask.array.from_zarr(...)``. A chunk that a sample shows will not shrink by 10% (noisy video)
is written as an uncompressed Blosc frame, as Blosc itself would store it, but straight from
the array's memory, and read straight into the output: frames that do not compress are stored
and loaded at the speed of ``numpy.save`` / ``numpy.load``. Chunks are whole files, so a
partial last chunk is padded, as Zarr requires.

This module is a leaf: it imports only :mod:`scanner_nb.errors`, :mod:`scanner_nb.types`,
:mod:`scanner_nb.log`, numpy, fsspec, numcodecs and the standard library.
"""

from __future__ import annotations

import functools
import json
import os
import secrets
import shutil
import socket
import struct
import threading
import time
import weakref
from typing import Any, Iterable, Iterator

import fsspec
import numcodecs
import numpy as np
from fsspec.implementations.local import LocalFileSystem

from .errors import RowIndexError, ScannerValueError, StorageError
from .errors import StreamExistsError, StreamNotFoundError
from .log import get_logger
from .names import _name_problem, default_db_path, validate_name
from .types import Batch, StreamType, lookup_type, stack_elements

_log = get_logger("storage")

__all__ = ["validate_name", "default_db_path", "Database", "StreamWriter", "DEFAULT_CODEC"]

#: The codec of stored frames (numcodecs config). Blosc LZ4 at level 1 without shuffle: byte
#: shuffle is a no-op on ``uint8`` (item size 1), and bit-shuffle halved the read speed (and
#: zstd both speeds) for 1.3-1.45x smaller noisy frames (``bench/bench_storage.py --codecs``).
DEFAULT_CODEC: dict = {"id": "blosc", "cname": "lz4", "clevel": 1, "shuffle": 0, "blocksize": 0}

MANIFEST = "manifest.json"
LOCK = "lock.json"
FORMAT_VERSION = 1
#: A staging version owned by a process on another host is a leftover once its heartbeat is
#: older than this (seconds); on this host the owner process's liveness decides.
STALE_AFTER = 300.0
#: How often (seconds) a process writing chunks refreshes its staging version's heartbeat.
HEARTBEAT_EVERY = 60.0
_VERSION_PREFIX = "v-"
_TMP_PREFIX = ".tmp-"
_ELEMENTS_SUFFIX = ".elements"
_ELEMENTS_MAGIC = b"SNBELEM1"
_BLOSC_MAX_BYTES = 2**31 - 2**16  # Blosc compresses buffers below 2 GiB only


# --------------------------------------------------------------------------------------------
# names and paths


def _normalize_url(url: str) -> str:
    url = os.fspath(url) if isinstance(url, os.PathLike) else url
    if not isinstance(url, str) or not url:
        raise ScannerValueError(f"a database URL or path must be a non-empty str, got {url!r}")
    if "://" not in url and "::" not in url:
        return os.path.abspath(os.path.expanduser(url))
    return url


@functools.lru_cache(maxsize=64)
def _filesystem_cached(url: str, options_json: str) -> tuple[Any, str]:
    fs, root = fsspec.core.url_to_fs(url, **json.loads(options_json))
    return fs, root.rstrip("/") or "/"


def _filesystem(url: str, options: dict | None) -> tuple[Any, str]:
    """The fsspec filesystem and root path of a database URL (cached per process)."""
    return _filesystem_cached(url, json.dumps(options or {}, sort_keys=True))


def _join(*parts: str) -> str:
    return "/".join([parts[0].rstrip("/")] + [p.strip("/") for p in parts[1:]])


def _is_local(fs) -> bool:
    return isinstance(fs, LocalFileSystem)


def _basename(path: str) -> str:
    return path.rstrip("/").rsplit("/", 1)[-1]


# --------------------------------------------------------------------------------------------
# file primitives (local disk gets plain os calls: os.replace, shutil.rmtree)


def _read_file(fs, path: str) -> bytes:
    """All bytes of one file (manifests, locks, element chunks; frames: _read_frames_into)."""
    if _is_local(fs):
        with open(path, "rb") as f:
            return f.read()
    return fs.cat_file(path)


def _write_file(fs, path: str, data, size: int | None = None) -> None:
    """Write ``data`` (bytes, or a list of buffers written one after the other) to ``path``,
    then zeros up to ``size`` bytes if given (on a local disk a hole: no copy, no blocks)."""
    buffers = data if isinstance(data, list) else [data]
    if _is_local(fs):
        with open(path, "wb") as f:
            for buffer in buffers:
                if isinstance(buffer, np.ndarray):  # measured ~25% faster than f.write
                    f.flush()
                    buffer.tofile(f)
                else:
                    f.write(buffer)
            if size is not None and size > f.tell():
                f.truncate(size)
    else:
        written = sum(memoryview(b).nbytes for b in buffers)
        if size is not None and size > written:
            buffers = [*buffers, bytes(size - written)]
        fs.pipe_file(path, b"".join(buffers))


_ATOMIC_PUT = {"memory", "s3", "s3a", "gcs", "gs", "abfs", "az", "adl", "oss"}


def _atomic_write(fs, path: str, data: bytes, tmp_dir: str) -> None:
    """Write ``path`` so that readers see the old content or the new, never a part.

    Local disk: a temporary file in ``tmp_dir`` (same filesystem) moved with ``os.replace``.
    Object stores and memory: one PUT is atomic. Others: a temporary file then ``fs.mv``.
    """
    tmp = _join(tmp_dir, f".{_basename(path)}.tmp-{secrets.token_hex(6)}")
    if _is_local(fs):
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
        return
    protocols = fs.protocol if isinstance(fs.protocol, (tuple, list)) else (fs.protocol,)
    if _ATOMIC_PUT.intersection(protocols):
        fs.pipe_file(path, data)
        return
    fs.pipe_file(tmp, data)
    fs.mv(tmp, path)


def _atomic_create(fs, path: str, data: bytes, tmp_dir: str) -> bool:
    """Write ``path`` whole only if it does not exist; ``False`` (nothing written) if it does.

    Local disk: a temporary file hard-linked to ``path`` (``link`` fails on an existing name,
    atomically). Elsewhere, and where hard links are not supported: a check, then
    :func:`_atomic_write` (two writers in the same instant may both succeed; the last wins).
    """
    if _is_local(fs):
        tmp = _join(tmp_dir, f".{_basename(path)}.new-{secrets.token_hex(6)}")
        with open(tmp, "wb") as f:
            f.write(data)
        try:
            os.link(tmp, path)
            return True
        except FileExistsError:
            return False
        except OSError:  # no hard links here (some network or FUSE filesystems)
            if os.path.exists(path):
                return False
            os.replace(tmp, path)
            return True
        finally:
            _rm_file(fs, tmp)
    if fs.exists(path):
        return False
    _atomic_write(fs, path, data, tmp_dir)
    return True


def _rmtree(fs, path: str) -> None:
    """Remove a folder and everything under it; missing is fine. No globbing of ``path``."""
    if _is_local(fs):
        shutil.rmtree(path, ignore_errors=True)
        return
    try:
        found = fs.find(path, withdirs=True, detail=True)
    except (FileNotFoundError, NotADirectoryError):
        return
    files = [p for p, info in found.items() if info.get("type") != "directory"]
    dirs = sorted((p for p, info in found.items() if info.get("type") == "directory"),
                  key=len, reverse=True)
    for p in files:
        try:
            fs.rm_file(p)
        except FileNotFoundError:
            pass
    for p in dirs + [path]:
        try:
            fs.rmdir(p)
        except (FileNotFoundError, OSError):
            pass
    fs.invalidate_cache(path)


def _rm_file(fs, path: str) -> None:
    try:
        if _is_local(fs):
            os.remove(path)
        else:
            fs.rm_file(path)
    except FileNotFoundError:
        pass


# --------------------------------------------------------------------------------------------
# staging locks: who owns a staging version, and is it still alive?

_HOST = socket.gethostname()
_OWNED: "weakref.WeakValueDictionary[str, StreamWriter]" = weakref.WeakValueDictionary()
_HEARTBEATS: dict[str, float] = {}
_STATE_LOCK = threading.Lock()


def _lock_bytes(created: float) -> bytes:
    return json.dumps(
        {"host": _HOST, "pid": os.getpid(), "created": created, "heartbeat": time.time()}
    ).encode()


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True
    return True


def _is_leftover(fs, version_dir: str, stale_after: float) -> bool:
    """Whether a version folder that the manifest does not name may be removed.

    Never for a version this process is writing. Yes when it has no lock (a committed version
    since replaced, or an aborted one); when its owner was this process, which dropped its
    writer without commit or abort; when its owner, a process on this host, is gone; and, for an
    owner on another host, when its heartbeat is older than ``stale_after`` seconds.
    """
    if version_dir in _OWNED:
        return False
    try:
        lock = json.loads(_read_file(fs, _join(version_dir, LOCK)))
    except FileNotFoundError:
        return True
    except (ValueError, OSError):
        return False  # being written; let a later run decide
    if lock.get("host") == _HOST:
        pid = int(lock.get("pid", -1))
        return pid == os.getpid() or not _pid_alive(pid)
    return time.time() - float(lock.get("heartbeat", 0)) > stale_after


# --------------------------------------------------------------------------------------------
# chunk encodings


def _zarr_key(k: int, frame_ndim: int) -> str:
    return ".".join([str(k)] + ["0"] * frame_ndim)


def _elements_key(k: int) -> str:
    return f"{k}{_ELEMENTS_SUFFIX}"


def _codec(config: dict | None):
    return None if config is None else numcodecs.get_codec(dict(config))


def _encode_elements(elements: list, nulls: np.ndarray | None,
                     stream_type: str | StreamType) -> bytes:
    """``magic, n, n lengths (-1 = null), payloads`` using the type's ``serialize``.

    ``stream_type`` is a registered type's name, or the type itself (as a writer sent to a
    worker carries it: the worker need not have registered it).
    """
    if isinstance(stream_type, str):
        stream_type = lookup_type(stream_type)
    type_name, serialize = stream_type.name, stream_type.serialize
    parts, lengths = [], np.empty(len(elements), dtype="<i8")
    for i, element in enumerate(elements):
        if element is None or (nulls is not None and nulls[i]):
            lengths[i] = -1
            continue
        data = serialize(element)
        try:
            lengths[i] = memoryview(data).nbytes
        except TypeError:
            raise StorageError(
                f"serialize of type {type_name!r} returned {type(data).__name__}, not bytes"
            ) from None
        parts.append(data)
    return b"".join([_ELEMENTS_MAGIC, struct.pack("<q", len(elements)), lengths.tobytes(), *parts])


def _decode_elements(data: bytes, type_name: str, path: str) -> list:
    if data[:8] != _ELEMENTS_MAGIC:
        raise StorageError(f"{path} is not a scanner_nb chunk file (corrupt or foreign)")
    (n,) = struct.unpack_from("<q", data, 8)
    lengths = np.frombuffer(data, dtype="<i8", count=n, offset=16)
    deserialize = lookup_type(type_name).deserialize
    out, offset = [], 16 + 8 * n
    for length in lengths.tolist():
        if length < 0:
            out.append(None)
            continue
        out.append(deserialize(data[offset:offset + length]))
        offset += length
    if offset != len(data):
        raise StorageError(
            f"{path} is truncated or corrupt ({len(data)} bytes, {offset} expected)"
        )
    return out


# Blosc frames (c-blosc 1 format): a 16-byte header, then the data. A frame whose data did not
# compress is "memcpyed": the header then the raw bytes, which Blosc itself writes for
# incompressible input. Writing such a frame directly (header + the array's own memory, no
# copy) and reading its bytes straight into the output array is what lets frames that do not
# compress (noisy video) be stored and loaded at the speed of numpy.save / numpy.load.
_BLOSC_HEADER = 16
_BLOSC_MEMCPYED = 0x02
_COMPRESS_AT_LEAST = 1.1  # a chunk is compressed only when a sample of it shrinks by this much
_SAMPLE_PIECES, _SAMPLE_BYTES = 8, 2**15  # 256 KiB in 8 places
_blosc_templates: dict = {}


def _blosc_template(config: dict, dtype: np.dtype) -> tuple[bytes, int]:
    """Bytes 0-3 of a memcpyed Blosc header for this codec and item size, and its block size."""
    key = (json.dumps(config, sort_keys=True), dtype.str)
    if key not in _blosc_templates:
        noise = np.random.default_rng(0).integers(0, 256, 2**20, dtype=np.uint8)
        header = bytes(_codec(config).encode(noise.view(dtype))[:_BLOSC_HEADER])
        if not header[2] & _BLOSC_MEMCPYED:  # pragma: no cover - noise always is memcpyed
            raise StorageError(f"cannot make an uncompressed Blosc frame for {config}")
        _blosc_templates[key] = (header[:4], int.from_bytes(header[8:12], "little"))
    return _blosc_templates[key]


def _blosc_memcpy_header(config: dict, dtype: np.dtype, nbytes: int) -> bytes:
    prefix, blocksize = _blosc_template(config, dtype)
    return prefix + struct.pack("<III", nbytes, min(blocksize, nbytes), nbytes + _BLOSC_HEADER)


def _is_memcpyed(header: bytes, nbytes: int) -> bool:
    if len(header) != _BLOSC_HEADER or not header[2] & _BLOSC_MEMCPYED:
        return False
    size, _, cbytes = struct.unpack_from("<III", header, 4)
    return size == nbytes and cbytes == nbytes + _BLOSC_HEADER


def _worth_compressing(raw: memoryview, dtype: np.dtype, config: dict) -> bool:
    """Whether the codec shrinks evenly spaced samples of ``raw`` by ``_COMPRESS_AT_LEAST``.

    Each 32 KiB piece is compressed as one Blosc block, so Blosc runs it on this thread: no
    hand-off to its thread pool, which costs milliseconds on a busy machine.
    """
    piece = _SAMPLE_BYTES - _SAMPLE_BYTES % dtype.itemsize
    if raw.nbytes <= _SAMPLE_PIECES * piece:
        starts = list(range(0, raw.nbytes, piece))
    else:
        step = (raw.nbytes - piece) // (_SAMPLE_PIECES - 1)
        step -= step % dtype.itemsize
        starts = [i * step for i in range(_SAMPLE_PIECES)]
    codec = _codec(dict(config, blocksize=piece) if config.get("id") == "blosc" else config)
    plain = packed = 0
    for start in starts:
        sample = raw[start:start + piece]
        plain += sample.nbytes
        packed += len(codec.encode(np.frombuffer(sample, dtype=dtype)))
    return plain >= _COMPRESS_AT_LEAST * packed


def _encode_frames(stack: np.ndarray, chunk_rows: int, config: dict | None):
    """The buffers of the Zarr chunk file of the C-contiguous frames ``stack``, and its size.

    Zarr stores a partial last chunk whole, padded with zeros (the fill value): the size says
    to what length the file is to be padded (``None``: the buffers are the whole file).
    """
    nbytes = stack.nbytes // len(stack) * chunk_rows
    if config is None:
        return [stack], nbytes
    codec = _codec(config)
    raw = memoryview(stack).cast("B")
    if config.get("id") == "blosc" and not _worth_compressing(raw, stack.dtype, config):
        header = _blosc_memcpy_header(config, stack.dtype, nbytes)
        return [header, stack], _BLOSC_HEADER + nbytes
    if len(stack) < chunk_rows:
        padded = np.zeros((chunk_rows, *stack.shape[1:]), dtype=stack.dtype)
        padded[: len(stack)] = stack
        stack = padded
    return [codec.encode(stack)], None


def _read_frames_into(fs, path: str, out: np.ndarray, config: dict | None) -> None:
    """Decode the Zarr chunk file ``path`` into the C-contiguous array ``out``."""
    view = memoryview(out).cast("B")
    codec = _codec(config)
    if _is_local(fs):
        with open(path, "rb") as f:
            if codec is None:
                if f.readinto(view) != out.nbytes or f.read(1):
                    raise ValueError(f"size is not {out.nbytes} bytes")
                return
            header = f.read(_BLOSC_HEADER)
            if config.get("id") == "blosc" and _is_memcpyed(header, out.nbytes):
                if f.readinto(view) != out.nbytes:
                    raise ValueError("file is truncated")
                return
            size = os.fstat(f.fileno()).st_size
            data = np.empty(size, dtype=np.uint8)
            data[: len(header)] = np.frombuffer(header, np.uint8)
            f.readinto(memoryview(data)[len(header):])
    else:
        data = fs.cat_file(path)
        if codec is None:
            if len(data) != out.nbytes:
                raise ValueError(f"size is not {out.nbytes} bytes")
            view[:] = data
            return
    codec.decode(data, out=out)


def _frame_stack(batch: Batch) -> np.ndarray | None:
    """The batch's frames as one ``(n, ...)`` numeric array if it has no nulls, else ``None``."""
    if batch.nulls is not None and np.any(batch.nulls):
        return None
    elements = batch.elements
    if not isinstance(elements, np.ndarray):
        if not elements or not all(isinstance(e, np.ndarray) for e in elements):
            return None
        first = elements[0]
        if any(e.shape != first.shape or e.dtype != first.dtype for e in elements):
            return None
        elements = np.stack(elements)
    if elements.ndim < 2 or elements.dtype.kind not in "biuf" or elements.size == 0:
        return None
    return np.ascontiguousarray(elements)


def _common_frame(elements) -> tuple[list | None, str | None]:
    """Shape and dtype shared by all non-null frames, else ``(None, None)``."""
    shapes = {(tuple(e.shape), e.dtype.str) for e in elements if isinstance(e, np.ndarray)}
    if len(shapes) != 1 or any(e is not None and not isinstance(e, np.ndarray) for e in elements):
        return None, None
    shape, dtype = shapes.pop()
    return list(shape), dtype


# --------------------------------------------------------------------------------------------
# the database


class Database:
    """The stored streams under one folder (any fsspec URL).

    Parameters
    ----------
    url : str
        A local path (``~`` expanded, made absolute) or an fsspec URL such as ``memory://db``.
    storage_options : dict, optional
        Passed to fsspec (credentials and the like); kept by writers sent to workers.
    codec : dict, optional
        numcodecs config of stored frames; default :data:`DEFAULT_CODEC`; ``None`` stores raw.
    stale_after : float
        Seconds after which a staging version whose owner runs on another host counts as a
        leftover unless its heartbeat (refreshed by ``write_chunk``) is newer; on this host
        the owner process's liveness decides.

    Examples
    --------
    >>> from scanner_nb.types import Batch
    >>> db = Database("memory://doctest-db")
    >>> w = db.begin("nums", "Any", length=3, chunk_rows=2)
    >>> infos = [w.write_chunk(0, Batch(0, np.arange(2), [1, 2])),
    ...          w.write_chunk(1, Batch(0, np.arange(2, 3), [3]))]
    >>> w.commit(infos)
    >>> db.exists("nums"), list(db.load("nums")), list(db.load("nums", rows=[2, 0]))
    (True, [1, 2, 3], [3, 1])
    >>> db.delete("nums"); db.names()
    []
    """

    def __init__(self, url: str, *, storage_options: dict | None = None,
                 codec: dict | None = DEFAULT_CODEC, stale_after: float = STALE_AFTER):
        self.url = _normalize_url(url)
        self.storage_options = dict(storage_options or {})
        self.codec = None if codec is None else dict(codec)
        self.stale_after = float(stale_after)
        try:
            _codec(self.codec)  # fail now on an unknown codec
        except Exception as exc:
            raise ScannerValueError(f"unknown frame codec {codec!r}: {exc}") from None
        try:
            self.fs, self.root = _filesystem(self.url, self.storage_options)
        except Exception as exc:
            raise StorageError(f"cannot open database {self.url!r}: {exc}") from exc

    def __repr__(self) -> str:
        return f"Database({self.url!r})"

    def __reduce__(self):
        return (_rebuild_database, (self.url, self.storage_options, self.codec, self.stale_after))

    # paths -----------------------------------------------------------------------------------
    def _stream_dir(self, name: str) -> str:
        return _join(self.root, validate_name(name))

    def _manifest_path(self, name: str) -> str:
        return _join(self._stream_dir(name), MANIFEST)

    def _url_of(self, path: str) -> str:
        return path if _is_local(self.fs) else self.fs.unstrip_protocol(path)

    # queries ---------------------------------------------------------------------------------
    def check_writable(self) -> None:
        """Create the database folder and write and remove a probe file there.

        Raises
        ------
        StorageError
            Naming the URL and the reason when it cannot be written.
        """
        probe = _join(self.root, f".probe-{secrets.token_hex(6)}")
        try:
            self.fs.makedirs(self.root, exist_ok=True)
            _write_file(self.fs, probe, b"scanner_nb")
            _rm_file(self.fs, probe)
        except Exception as exc:
            raise StorageError(
                f"database {self.url!r} is not writable: {type(exc).__name__}: {exc}; "
                f"choose another db_path (or set SCANNER_NB_DB)"
            ) from exc

    def exists(self, name: str) -> bool:
        """Whether ``name`` is a committed stream (its manifest is present)."""
        try:
            return bool(self.fs.isfile(self._manifest_path(name)))
        except (FileNotFoundError, NotADirectoryError):
            return False

    def manifest(self, name: str) -> dict:
        """The manifest of stream ``name``; :class:`StreamNotFoundError` if it is not stored.

        Keys: ``name``, ``type``, ``length``, ``chunk_rows``, ``num_chunks``, ``version`` (the
        version folder), ``format_version``, ``created`` (ISO 8601 UTC), ``layout`` (``"zarr"``,
        ``"elements"`` or ``"mixed"``), ``frame`` (``{"shape", "dtype"}`` when all non-null
        frames share them, else ``None``), ``nulls`` (count), ``codec``, ``nbytes`` (stored).
        """
        path = self._manifest_path(name)
        try:
            data = _read_file(self.fs, path)
        except (FileNotFoundError, NotADirectoryError):
            raise StreamNotFoundError(
                f"no stored stream named {name!r} in {self.url!r}"
            ) from None
        try:
            return json.loads(data)
        except ValueError as exc:
            raise StorageError(f"manifest of stream {name!r} ({path}) is corrupt: {exc}") from None

    def names(self) -> list[str]:
        """Names of the committed streams, sorted."""
        try:
            entries = self.fs.ls(self.root, detail=True)
        except (FileNotFoundError, NotADirectoryError):
            return []
        names = []
        for entry in entries:
            base = _basename(entry["name"])
            if entry.get("type") != "directory" or _name_problem(base):
                continue
            if self.fs.isfile(_join(self.root, base, MANIFEST)):
                names.append(base)
        return sorted(names)

    def delete(self, name: str) -> None:
        """Remove stream ``name``: its manifest first (it vanishes at once), then its data.

        A name that is not stored is left alone (deleting twice is fine). Another writer's
        staging version of the name, still in progress, is kept.
        """
        stream_dir = self._stream_dir(name)
        try:
            current = self.manifest(name)["version"]
        except StreamNotFoundError:
            return
        _rm_file(self.fs, self._manifest_path(name))
        _rmtree(self.fs, _join(stream_dir, current))
        self._sweep(name, current=None)
        try:
            if not self.fs.ls(stream_dir):
                self.fs.rmdir(stream_dir)
        except (FileNotFoundError, OSError):
            pass

    def _current_version(self, name: str) -> str | None:
        try:
            return self.manifest(name)["version"]
        except (StreamNotFoundError, StorageError, KeyError):
            return None

    def _sweep(self, name: str, current: str | None) -> list[str]:
        """Remove leftover versions of ``name`` (see :func:`_is_leftover`); return them."""
        stream_dir = self._stream_dir(name)
        try:
            entries = self.fs.ls(stream_dir, detail=False)
        except (FileNotFoundError, NotADirectoryError):
            return []
        removed = []
        for path in entries:
            base = _basename(path)
            if base.startswith(_TMP_PREFIX) and _is_local(self.fs):  # begin() died midway
                tmp = _join(stream_dir, base)
                try:
                    if time.time() - os.stat(tmp).st_mtime > self.stale_after:
                        _rmtree(self.fs, tmp)
                except FileNotFoundError:
                    pass
                continue
            if not base.startswith(_VERSION_PREFIX) or base == current:
                continue
            version_dir = _join(stream_dir, base)
            if not _is_leftover(self.fs, version_dir, self.stale_after):
                continue
            # The lock was checked first: a committing writer removes its lock only after its
            # manifest is in place, so reading the manifest now tells whether base is current.
            if self._current_version(name) == base:
                continue
            _rmtree(self.fs, version_dir)
            removed.append(base)
        if removed:
            _log.info("stream %r: swept %d leftover version(s) of failed runs: %s", name,
                      len(removed), ", ".join(removed))
        return removed

    # writing ---------------------------------------------------------------------------------
    def begin(self, name: str, type_name: str, length: int, chunk_rows: int) -> StreamWriter:
        """Start writing a new version of ``name``; nothing is visible until ``commit``.

        Makes a fresh staging version folder (a unique token, locked by this process) and
        removes leftovers of earlier failed runs of that name. A committed version stays
        readable until the new one commits.
        """
        validate_name(name)
        stream_type = lookup_type(type_name)  # an unregistered type fails before any work
        length, chunk_rows = int(length), int(chunk_rows)
        if length < 0:
            raise ScannerValueError(f"length of stream {name!r} must be >= 0, got {length}")
        if chunk_rows < 1:
            raise ScannerValueError(f"chunk_rows must be >= 1, got {chunk_rows}")
        self._sweep(name, current=self._current_version(name))
        stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
        version = f"{_VERSION_PREFIX}{stamp}-{secrets.token_hex(6)}"
        writer = StreamWriter(self.url, name, version, type_name, length, chunk_rows,
                              self.codec, self.storage_options, stream_type)
        version_dir = writer._version_dir
        with _STATE_LOCK:  # owned from now on, so a sweep in another thread leaves it alone
            _OWNED[version_dir] = writer
            _HEARTBEATS[version_dir] = time.time()
        try:
            self._make_locked_folder(name, version)
        except Exception as exc:
            writer._finish("aborted")
            raise StorageError(
                f"cannot write stream {name!r} in {self.url!r}: {type(exc).__name__}: {exc}"
            ) from exc
        return writer

    def _make_locked_folder(self, name: str, version: str) -> None:
        """Create ``<name>/<version>/lock.json`` so that no one ever sees the folder unlocked.

        (A sweep in another process takes an unlocked version folder for a leftover.) Local
        disk: a hidden temporary folder holding the lock, renamed into place. Elsewhere,
        writing the lock file is what makes the folder appear.
        """
        stream_dir = self._stream_dir(name)
        version_dir, lock = _join(stream_dir, version), _lock_bytes(time.time())
        if not _is_local(self.fs):
            try:
                _write_file(self.fs, _join(version_dir, LOCK), lock)
            except FileNotFoundError:  # a filesystem with real folders
                self.fs.makedirs(version_dir, exist_ok=True)
                _write_file(self.fs, _join(version_dir, LOCK), lock)
            return
        tmp = _join(stream_dir, f"{_TMP_PREFIX}{version}")
        for attempt in range(3):
            try:  # a delete() of the name may remove an empty stream folder meanwhile
                os.makedirs(tmp)
                break
            except FileNotFoundError:
                if attempt == 2:
                    raise
        with open(_join(tmp, LOCK), "wb") as f:
            f.write(lock)
        os.rename(tmp, version_dir)

    # reading ---------------------------------------------------------------------------------
    def zarr_path(self, name: str) -> str:
        """Where frame stream ``name``'s Zarr array lives, for ``zarr.open`` and the like.

        A local path for a local database, else a URL. Only for frame streams stored as one
        array (frames of one shape and dtype, no nulls); others raise ScannerValueError.
        """
        manifest = self.manifest(name)
        if manifest.get("layout") != "zarr":
            why = ("its elements are not frames" if manifest["type"] != "FrameType"
                   else "it is empty" if manifest["length"] == 0
                   else "its frames differ in shape or dtype, or some are null")
            raise ScannerValueError(f"stream {name!r} is not stored as a Zarr array: {why}")
        return self._url_of(_join(self._stream_dir(name), manifest["version"]))

    def read_chunk(self, name: str, k: int, manifest: dict | None = None,
                   out: np.ndarray | None = None) -> Batch:
        """Chunk ``k`` of stream ``name``: rows ``k*chunk_rows`` to ``(k+1)*chunk_rows``.

        Pass ``manifest`` (from :meth:`manifest`) to read from that version; a version replaced
        or deleted meanwhile raises :class:`StorageError` rather than mixing two versions.
        For a frame stream without nulls, ``out`` (a C-contiguous ``(rows, *frame shape)``
        array, e.g. a slice of one ``(n, H, W, C)`` array) receives the frames, read straight
        into it when the chunk is whole; the batch's elements are then ``out``.
        """
        if manifest is None:
            manifest = self.manifest(name)
        lookup_type(manifest["type"])
        k = int(k)
        if not 0 <= k < manifest["num_chunks"]:
            raise RowIndexError(
                f"chunk {k} is outside stream {name!r}, which has {manifest['num_chunks']} "
                f"chunks of {manifest['chunk_rows']} rows"
            )
        elements, nulls = self._read_chunk_elements(name, manifest, k, out)
        start = k * manifest["chunk_rows"]
        rows = np.arange(start, start + len(elements), dtype=np.int64)
        return Batch(0, rows, elements, nulls, manifest["type"])

    def _chunk_rows(self, manifest: dict, k: int) -> int:
        start = k * manifest["chunk_rows"]
        return min(manifest["length"], start + manifest["chunk_rows"]) - start

    def _read_chunk_elements(self, name: str, manifest: dict, k: int, out=None):
        layout = manifest["layout"]
        if layout == "zarr":
            info = {"encoding": "zarr", **manifest["frame"], "codec": manifest["codec"]}
        elif layout == "elements":
            info = {"encoding": "elements"}
        else:
            info = manifest["chunks"][k]
        version_dir = _join(self._stream_dir(name), manifest["version"])
        n = self._chunk_rows(manifest, k)
        if out is not None:
            self._check_out(name, manifest, n, out, info)
        if info["encoding"] == "zarr":
            path = _join(version_dir, _zarr_key(k, len(info["shape"])))
            whole = (manifest["chunk_rows"], *info["shape"])
            if out is not None and out.shape == whole:
                self._read_or_explain(name, manifest, path, out, info["codec"])
                return out, None
            chunk = np.empty(whole, dtype=np.dtype(info["dtype"]))
            self._read_or_explain(name, manifest, path, chunk, info["codec"])
            if out is None:
                return chunk[:n], None
            out[...] = chunk[:n]
            return out, None
        path = _join(version_dir, _elements_key(k))
        elements = _decode_elements(self._read_or_explain(name, manifest, path),
                                    manifest["type"], path)
        if len(elements) != n:
            raise StorageError(f"chunk {path} holds {len(elements)} rows, {n} expected")
        null_mask = np.fromiter((e is None for e in elements), dtype=bool, count=n)
        nulls = null_mask if null_mask.any() else None
        if manifest["type"] == "FrameType" and nulls is None:
            elements = stack_elements(elements, True)
            if out is not None:
                out[...] = elements
                return out, None
        return elements, nulls

    @staticmethod
    def _check_out(name: str, manifest: dict, n: int, out, info: dict) -> None:
        frame = manifest.get("frame")
        if manifest["type"] != "FrameType" or frame is None or manifest["nulls"]:
            raise ScannerValueError(
                f"out= needs a frame stream of one frame shape without nulls; "
                f"stream {name!r} is not one"
            )
        shape, dtype = (n, *frame["shape"]), np.dtype(frame["dtype"])
        if (not isinstance(out, np.ndarray) or out.shape != shape or out.dtype != dtype
                or not out.flags.c_contiguous):
            raise ScannerValueError(
                f"out= for stream {name!r} must be a C-contiguous {dtype} array of shape "
                f"{shape}, got {getattr(out, 'dtype', type(out).__name__)} "
                f"{getattr(out, 'shape', '')}"
            )

    def _read_or_explain(self, name: str, manifest: dict, path: str, out=None, codec=None):
        """Read a chunk file (into ``out`` for frames), explaining a missing or bad one."""
        try:
            if out is None:
                return _read_file(self.fs, path)
            _read_frames_into(self.fs, path, out, codec)
        except FileNotFoundError:
            now = self._current_version(name)
            if now != manifest["version"]:
                raise StorageError(
                    f"stream {name!r} was {'deleted' if now is None else 'replaced'} while it "
                    f"was being read; load it again"
                ) from None
            raise StorageError(f"stream {name!r} is damaged: {path} is missing") from None
        except (ValueError, RuntimeError, OSError) as exc:
            raise StorageError(f"chunk {path} of stream {name!r} is corrupt: {exc}") from exc

    def load(self, name: str, rows: Iterable[int] | None = None) -> Iterator:
        """The elements of stream ``name``, lazily, in order (nulls are ``None``).

        ``rows=[...]`` yields those rows in the order given (repeats allowed), reading only the
        chunks that hold them; consecutive rows of one chunk read it once. The manifest is read
        now, so a missing stream or a row outside it raises here, not at the first ``next``,
        and the whole iteration reads that one version.

        Raises
        ------
        StreamNotFoundError
            If ``name`` is not stored.
        RowIndexError
            For a row outside ``[0, length)``.
        ScannerTypeError
            If the stream's element type is not registered in this process.
        """
        manifest = self.manifest(name)
        lookup_type(manifest["type"])
        length, chunk_rows = manifest["length"], manifest["chunk_rows"]
        if rows is None:
            return self._iter_all(name, manifest)
        rows = [int(r) for r in rows]
        bad = [r for r in rows if not 0 <= r < length]
        if bad:
            raise RowIndexError(
                f"row {bad[0]} is outside stream {name!r} of length {length} "
                f"(valid rows: 0 to {length - 1})"
            )
        return self._iter_rows(name, manifest, rows, chunk_rows)

    def _iter_all(self, name: str, manifest: dict) -> Iterator:
        for k in range(manifest["num_chunks"]):
            elements, _ = self._read_chunk_elements(name, manifest, k)
            yield from elements

    def _iter_rows(self, name: str, manifest: dict, rows: list[int], chunk_rows: int) -> Iterator:
        cached_k, cached = -1, None
        for r in rows:
            k = r // chunk_rows
            if k != cached_k:
                cached_k, (cached, _) = k, self._read_chunk_elements(name, manifest, k)
            element = cached[r - k * chunk_rows]
            # frames are views of their chunk: copy, so that keeping a few frames does not keep
            # their whole chunks alive
            yield element.copy() if isinstance(cached, np.ndarray) else element


def _rebuild_database(url, storage_options, codec, stale_after) -> Database:
    return Database(url, storage_options=storage_options, codec=codec, stale_after=stale_after)


class StreamWriter:
    """Writes one staging version of a stored stream; from :meth:`Database.begin`.

    Picklable (it holds the URL, names, numbers and the element type), so workers in other
    processes write the chunks they computed with :meth:`write_chunk`; the process that called
    ``begin`` then calls :meth:`commit` with their infos, or :meth:`abort`. Keep it until
    then: a staging version whose writer was dropped (or whose process died) is a leftover for
    the next run.
    """

    def __init__(self, url: str, name: str, version: str, type_name: str, length: int,
                 chunk_rows: int, codec: dict | None, storage_options: dict | None = None,
                 stream_type: StreamType | None = None):
        self.url, self.name, self.version, self.type_name = url, name, version, type_name
        # the type travels with the writer (cloudpickle ships a notebook's class by value), so
        # a worker that never ran register_type still serializes chunks with the right code
        self.stream_type = stream_type if stream_type is not None else lookup_type(type_name)
        if self.stream_type.name != type_name:
            raise ScannerValueError(
                f"stream type {self.stream_type.name!r} does not match type name {type_name!r}"
            )
        self.length, self.chunk_rows = int(length), int(chunk_rows)
        self.codec = None if codec is None else dict(codec)
        self.storage_options = dict(storage_options or {})
        self.num_chunks = -(-self.length // self.chunk_rows)
        self._state = "open"

    def __repr__(self) -> str:
        return f"StreamWriter({self.url!r}, {self.name!r}, {self.version!r}, {self._state})"

    @property
    def _fs(self):
        return _filesystem(self.url, self.storage_options)[0]

    @property
    def _stream_dir(self) -> str:
        return _join(_filesystem(self.url, self.storage_options)[1], self.name)

    @property
    def _version_dir(self) -> str:
        return _join(self._stream_dir, self.version)

    def _expected_rows(self, k: int) -> int:
        return min(self.length, (k + 1) * self.chunk_rows) - k * self.chunk_rows

    def _frame_codec(self, chunk_shape: tuple, itemsize: int) -> dict | None:
        """The codec config for a frame chunk of this shape (Blosc cannot take >= 2 GiB)."""
        nbytes = int(np.prod(chunk_shape)) * itemsize
        if self.codec and self.codec.get("id") == "blosc" and nbytes >= _BLOSC_MAX_BYTES:
            return None
        return self.codec

    def _heartbeat(self, fs) -> None:
        key = self._version_dir
        if time.time() - _HEARTBEATS.get(key, 0.0) < HEARTBEAT_EVERY:
            return
        lock_path = _join(key, LOCK)
        try:
            lock = json.loads(_read_file(fs, lock_path))
        except FileNotFoundError:
            raise StorageError(
                f"the staging version of stream {self.name!r} was removed (the run was "
                f"aborted, or it was cleaned up as a leftover); nothing is written"
            ) from None
        except ValueError:
            return
        lock["heartbeat"] = time.time()
        _atomic_write(fs, lock_path, json.dumps(lock).encode(), key)
        _HEARTBEATS[key] = time.time()

    def write_chunk(self, k: int, batch: Batch) -> dict:
        """Write chunk ``k`` (rows ``k*chunk_rows`` ...) and return a small info dict for commit.

        Frames of one shape and dtype without nulls become one Zarr chunk; anything else is
        stored with the type's ``serialize``. The info holds ``k``, ``rows``, ``nulls`` (count),
        ``encoding``, ``shape``/``dtype`` (shared by the chunk's frames, else ``None``),
        ``codec`` and ``nbytes``.
        """
        k = int(k)
        if not 0 <= k < self.num_chunks:
            raise ScannerValueError(
                f"chunk {k} is outside stream {self.name!r} ({self.num_chunks} chunks of "
                f"{self.chunk_rows} rows for {self.length} rows)"
            )
        n = self._expected_rows(k)
        if len(batch.elements) != n:
            raise ScannerValueError(
                f"chunk {k} of stream {self.name!r} must hold {n} rows, the batch has "
                f"{len(batch.elements)}"
            )
        fs = self._fs
        self._heartbeat(fs)
        stack = _frame_stack(batch) if self.type_name == "FrameType" else None
        size = None
        if stack is not None:
            chunk_shape = (self.chunk_rows, *stack.shape[1:])
            codec_config = self._frame_codec(chunk_shape, stack.dtype.itemsize)
            data, size = _encode_frames(stack, self.chunk_rows, codec_config)
            path = _join(self._version_dir, _zarr_key(k, stack.ndim - 1))
            info = {"encoding": "zarr", "shape": list(stack.shape[1:]),
                    "dtype": stack.dtype.str, "codec": codec_config, "nulls": 0}
        else:
            elements = batch.element_list()
            nulls = None if batch.nulls is None else np.asarray(batch.nulls, dtype=bool)
            if nulls is not None:
                elements = [None if nulls[i] else e for i, e in enumerate(elements)]
            data = [_encode_elements(elements, nulls, self.stream_type)]
            path = _join(self._version_dir, _elements_key(k))
            shape, dtype = (_common_frame(elements) if self.type_name == "FrameType"
                            else (None, None))
            info = {"encoding": "elements", "shape": shape, "dtype": dtype, "codec": None,
                    "nulls": sum(e is None for e in elements)}
        try:
            _write_file(fs, path, data, size)
        except FileNotFoundError:
            raise StorageError(
                f"the staging version of stream {self.name!r} was removed (the run was "
                f"aborted, or it was cleaned up as a leftover); chunk {k} is not written"
            ) from None
        except OSError as exc:
            raise StorageError(f"cannot write chunk {k} of stream {self.name!r}: {exc}") from exc
        nbytes = size if size is not None else sum(memoryview(b).nbytes for b in data)
        return {"k": k, "rows": n, "nbytes": nbytes, **info}

    def _layout(self, infos: list[dict]) -> tuple[str, dict | None]:
        if self.type_name != "FrameType":
            return "elements", None
        frames = {(tuple(i["shape"]), i["dtype"]) for i in infos if i["shape"] is not None}
        frame = None
        if len(frames) == 1 and all(i["shape"] is not None or i["rows"] == i["nulls"]
                                    for i in infos):
            shape, dtype = frames.pop()
            frame = {"shape": list(shape), "dtype": dtype}
        codecs = {json.dumps(i["codec"], sort_keys=True) for i in infos}
        if infos and frame and len(codecs) == 1 and all(i["encoding"] == "zarr" for i in infos):
            return "zarr", frame
        if infos and all(i["encoding"] == "elements" for i in infos):
            return "elements", frame
        return ("mixed" if infos else "elements"), frame

    def _check_infos(self, chunk_infos: list[dict]) -> list[dict]:
        by_k: dict[int, dict] = {}
        for info in chunk_infos:
            k = int(info["k"])
            if k in by_k:
                raise StorageError(f"chunk {k} of stream {self.name!r} was reported twice")
            by_k[k] = info
        missing = [k for k in range(self.num_chunks) if k not in by_k]
        extra = sorted(set(by_k) - set(range(self.num_chunks)))
        if missing or extra:
            raise StorageError(
                f"cannot commit stream {self.name!r}: chunks {missing or extra} are "
                f"{'missing' if missing else 'outside the stream'} (expected chunks 0 to "
                f"{self.num_chunks - 1})"
            )
        infos = [by_k[k] for k in range(self.num_chunks)]
        total = sum(int(i["rows"]) for i in infos)
        if total != self.length or any(i["rows"] != self._expected_rows(i["k"]) for i in infos):
            raise StorageError(
                f"cannot commit stream {self.name!r}: the chunks hold {total} rows, "
                f"{self.length} expected"
            )
        return infos

    def commit(self, chunk_infos: list[dict], replace: bool = True,
               metadata: dict | None = None) -> None:
        """Publish the stream: check the chunks, write metadata, then the manifest last.

        The manifest is written atomically; if a committed version exists it is replaced only
        now, and its data is removed after. Of two writers racing on one name, the last
        manifest wins whole. With ``replace=False`` a stream committed meanwhile (by another
        run) is kept and :class:`StreamExistsError` raised instead (atomic on a local disk).
        ``metadata`` adds JSON keys to the manifest (such as ``fps``), never replacing its own.
        On error nothing is committed (call :meth:`abort`).
        """
        if self._state != "open":
            raise StorageError(f"stream writer of {self.name!r} is already {self._state}")
        infos = self._check_infos(list(chunk_infos))
        fs, version_dir = self._fs, self._version_dir
        try:
            present = {_basename(p) for p in fs.ls(version_dir, detail=False)}
        except FileNotFoundError:
            present = set()
        if LOCK not in present:
            raise StorageError(
                f"cannot commit stream {self.name!r}: its staging version was removed (the run "
                f"was aborted, or it was cleaned up as a leftover)"
            )
        files = [_zarr_key(i["k"], len(i["shape"])) if i["encoding"] == "zarr"
                 else _elements_key(i["k"]) for i in infos]
        lost = [f for f in files if f not in present]
        if lost:
            raise StorageError(
                f"cannot commit stream {self.name!r}: chunk files {lost} are missing"
            )
        layout, frame = self._layout(infos)
        manifest = {
            "format": "scanner_nb.stream", "format_version": FORMAT_VERSION,
            "name": self.name, "type": self.type_name, "length": self.length,
            "chunk_rows": self.chunk_rows, "num_chunks": self.num_chunks,
            "version": self.version, "layout": layout, "frame": frame,
            "codec": infos[0]["codec"] if layout == "zarr" else None,
            "nulls": int(sum(i["nulls"] for i in infos)),
            "nbytes": int(sum(i["nbytes"] for i in infos)),
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        manifest.update({k: v for k, v in (metadata or {}).items() if k not in manifest})
        if layout == "mixed":
            manifest["chunks"] = [
                {key: i[key] for key in ("encoding", "shape", "dtype", "codec")} for i in infos
            ]
        if layout == "zarr":
            self._write_zarr_metadata(fs, version_dir, frame, manifest["codec"])
        stream_dir = self._stream_dir
        manifest_path = _join(stream_dir, MANIFEST)
        try:
            old = json.loads(_read_file(fs, manifest_path)).get("version")
        except (FileNotFoundError, ValueError):
            old = None
        data = json.dumps(manifest, indent=1).encode()
        if replace:
            _atomic_write(fs, manifest_path, data, version_dir)
        elif not _atomic_create(fs, manifest_path, data, version_dir):
            raise StreamExistsError(
                f"stream {self.name!r} was stored by another run while this one was computing; "
                f"it is kept (pass cache_mode=sp.CacheMode.Overwrite to replace it)"
            )
        # the stream is now committed: everything below is tidying up
        self._finish("committed")
        _rm_file(fs, _join(version_dir, LOCK))
        if old and old != self.version:
            _rmtree(fs, _join(stream_dir, old))
        # a version another writer committed between our read of ``old`` and our manifest
        Database(self.url, storage_options=self.storage_options, codec=self.codec)._sweep(
            self.name, current=self.version)

    def _write_zarr_metadata(self, fs, version_dir: str, frame: dict, codec: dict | None) -> None:
        zarray = {
            "zarr_format": 2, "shape": [self.length, *frame["shape"]],
            "chunks": [self.chunk_rows, *frame["shape"]], "dtype": frame["dtype"],
            "compressor": codec, "fill_value": 0, "order": "C", "filters": None,
            "dimension_separator": ".",
        }
        attrs = {"scanner_nb": {"name": self.name, "type": self.type_name,
                                "version": self.version}}
        _write_file(fs, _join(version_dir, ".zarray"), json.dumps(zarray, indent=1).encode())
        _write_file(fs, _join(version_dir, ".zattrs"), json.dumps(attrs, indent=1).encode())

    def _finish(self, state: str) -> None:
        self._state = state
        with _STATE_LOCK:
            _OWNED.pop(self._version_dir, None)
            _HEARTBEATS.pop(self._version_dir, None)

    def abort(self) -> None:
        """Remove the staging version (nothing was visible); safe to call twice.

        After a successful :meth:`commit` this does nothing.
        """
        if self._state == "committed":
            return
        self._finish("aborted")
        _rmtree(self._fs, self._version_dir)
