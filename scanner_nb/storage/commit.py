"""Writing stored streams: staging versions, chunks, the run commit, and removing old versions.

A run stages one fresh version folder per output (:class:`StreamWriter`, locked by a
``lock.json`` naming its process), into which whichever worker computed a chunk writes it.
:func:`publish` then publishes all outputs together (each output's manifest is first made by
:meth:`StreamWriter.seal`, which checks the staged files: on the workers, in ``sc.run``):

1. each output's manifest is written (atomically) naming the new version *and* the run, with
   the stream as it was before as its ``previous``;
2. the run record ``.runs/<run>.json`` is written (atomically): this is the commit. Readers
   see a manifest's version only once its run's record exists, else its ``previous``, so a
   kill or a full disk anywhere before this leaves every output as it was;
3. the staging locks go, and replaced versions are swept (:func:`sweep`).

Every step makes its requests for all outputs at once (:func:`fs.each
<scanner_nb.storage.fs.each>`: concurrently on a remote store and on local disk), so a run of
many outputs on an object store costs a few round trips, not a few per output.

**When old versions are removed.** A version that no manifest names any more (replaced by an
``Overwrite``, deleted, or left by a failed run whose process is gone) is removed by the next
commit or ``delete`` of that name, or by ``sc.gc()`` / :meth:`Database.gc`, except while this
process has it open: a ``load()`` in progress, a stream built on it, or a path handed out by
``zarr_path`` (kept until the process ends or ``gc(include_open=True)``). Readers in other
processes of a version replaced meanwhile get a :class:`StorageError` asking to load again.
"""

from __future__ import annotations

import collections
import json
import os
import secrets
import socket
import threading
import time
import weakref

import numpy as np
import psutil

from ..errors import (
    ScannerValueError,
    StorageError,
    StreamExistsError,
    StreamNotFoundError,
)
from ..log import get_logger
from ..types import Batch
from . import codecs
from . import fs as fs_
from .manifest import (
    FORMAT_VERSION,
    MANIFEST,
    RUNS,
    VERSION_RE,
    read_manifests,
    read_raw,
    sign,
    user_key,
    validate,
)

__all__ = [
    "STALE_AFTER",
    "StreamWriter",
    "commit_run",
    "new_run",
    "new_version",
    "publish",
    "pin",
    "stage",
    "sweep",
    "unpin",
]

LOCK = "lock.json"
#: A staging version owned by a process on another host is a leftover once its heartbeat is
#: older than this (seconds); on this host the owner process's liveness decides.
STALE_AFTER = 300.0
#: How often (seconds) a process writing chunks refreshes its staging version's heartbeat.
HEARTBEAT_EVERY = 60.0
TMP_PREFIX = ".tmp-"
_log = get_logger("storage")

_HOST = socket.gethostname()
_OWNED: weakref.WeakValueDictionary[str, StreamWriter] = weakref.WeakValueDictionary()
_HEARTBEATS: dict[str, float] = {}
_PINNED: collections.Counter = collections.Counter()
_STATE_LOCK = threading.Lock()
_UNPINNED: collections.deque = collections.deque()  # unpins not applied yet (see unpin)


def _stamp() -> str:
    return time.strftime("%Y%m%dT%H%M%S", time.gmtime())


def new_version(zarr: bool) -> str:
    """A fresh version folder name (``.zarr`` when its chunks are meant to be a Zarr group)."""
    return f"v-{_stamp()}-{secrets.token_hex(6)}" + (".zarr" if zarr else "")


def new_run() -> str:
    """A fresh run id: the name of the run record that commits the run."""
    return f"r-{_stamp()}-{secrets.token_hex(6)}"


def pin(path: str) -> None:
    """Keep the version folder ``path`` from being swept while this process uses it."""
    with _STATE_LOCK:
        _drain_unpins()
        _PINNED[path] += 1


def unpin(path: str) -> None:
    """Release one :func:`pin` of ``path``.

    Readers unpin from ``weakref.finalize`` callbacks, which the garbage collector may run at
    any allocation, even one made while this thread holds ``_STATE_LOCK``: so this never takes
    the lock; the release is queued and applied by the next holder of the lock.
    """
    _UNPINNED.append(path)


def _drain_unpins() -> None:
    """Apply queued :func:`unpin` calls; the caller holds ``_STATE_LOCK``."""
    while _UNPINNED:
        path = _UNPINNED.popleft()
        _PINNED[path] -= 1
        if _PINNED[path] <= 0:
            del _PINNED[path]


def _is_pinned(path: str) -> bool:
    with _STATE_LOCK:
        _drain_unpins()
        return path in _PINNED


# ---------------------------------------------------------------------------- staging locks


def _lock_bytes() -> bytes:
    now = time.time()
    return json.dumps({"host": _HOST, "pid": os.getpid(), "created": now,
                       "heartbeat": now}).encode()


def _is_leftover(fs, version_dir: str, stale_after: float, locked: bool = True) -> bool:
    """Whether a version folder no manifest names may be removed: never one this process is
    writing; yes without a lock (``locked=False``: a listing showed none), or when its owner
    (on this host) is gone, or (elsewhere) its heartbeat is older than ``stale_after`` seconds."""
    if version_dir in _OWNED:
        return False
    if not locked:
        return True
    try:
        lock = json.loads(fs_.read_file(fs, fs_.join(version_dir, LOCK)))
        host, pid, beat = lock.get("host"), int(lock.get("pid", -1)), float(lock["heartbeat"])
    except FileNotFoundError:
        return True
    except (ValueError, OSError, KeyError, TypeError, AttributeError):
        return False  # being written; let a later run decide
    if host == _HOST:
        return pid == os.getpid() or not psutil.pid_exists(pid)
    return time.time() - beat > stale_after


def stage(fs, stream_dir: str, version: str) -> None:
    """Create ``<stream_dir>/<version>/lock.json`` so that no one ever sees the folder
    unlocked (a sweep takes an unlocked folder for a leftover). Local disk: a hidden folder
    holding the lock, renamed into place. Elsewhere, writing the lock makes the folder."""
    version_dir = fs_.join(stream_dir, version)
    if not fs_.is_local(fs):
        fs_.write_file(fs, fs_.join(version_dir, LOCK), _lock_bytes())
        return
    tmp = fs_.join(stream_dir, f"{TMP_PREFIX}{version}")
    os.makedirs(tmp)
    with open(fs_.join(tmp, LOCK), "wb") as f:
        f.write(_lock_bytes())
    os.rename(tmp, version_dir)


_UNREADABLE = object()


def _current_versions(fs, root: str, names, key: bytes) -> dict:
    """The version readers of each name see, ``None`` if none, ``_UNREADABLE`` if unknown."""
    out = {}
    for name, manifest in read_manifests(fs, root, names, key).items():
        out[name] = (manifest["version"] if isinstance(manifest, dict)
                     else None if isinstance(manifest, StreamNotFoundError) else _UNREADABLE)
    return out


def _entries(fs, stream_dir: str) -> dict[str, list[str] | None]:
    """The entries of a stream's folder, each with the files under it: on a remote store from
    one listing of the whole folder (not one per version); ``None`` (not listed) on local disk."""
    if fs_.is_local(fs):
        try:
            return dict.fromkeys(os.listdir(stream_dir))
        except (FileNotFoundError, NotADirectoryError):
            return {}
    try:
        found = fs.find(stream_dir, withdirs=True, detail=True)
    except (FileNotFoundError, NotADirectoryError):
        return {}
    entries: dict[str, list[str] | None] = {}
    for path, info in found.items():
        path = path.rstrip("/")
        relative = path.removeprefix(stream_dir + "/")
        if relative != path:
            files = entries.setdefault(relative.split("/", 1)[0], [])
            if "/" in relative and info.get("type") != "directory":
                files.append(path)
    return entries


def sweep(fs, root: str, names, key: bytes, stale_after: float, include_open: bool = False,
          keep: dict[str, str] | None = None,
          listed: dict[str, dict] | None = None) -> dict[str, list[str]]:
    """Remove the leftover versions of each of ``names`` (see the module docstring); return
    them by name. ``keep`` maps a name to a version just committed (left alone unchecked),
    ``listed`` a name to its folder's entries as listed before (:meth:`StreamWriter.seal`:
    what appeared since is left for a later sweep). On a remote store the names are listed,
    checked and cleared concurrently."""
    names, keep, listed = list(names), keep or {}, listed or {}
    candidates = []  # (name, version, its files as listed, or None)
    unlisted = [n for n in names if n not in listed]
    listed = {**listed, **dict(zip(unlisted, fs_.each(
        fs, lambda n: _entries(fs, fs_.join(root, n)), unlisted)))}
    for name, entries in ((n, listed[n]) for n in names):
        for base, files in entries.items():
            full = fs_.join(root, name, base)
            if base.startswith(TMP_PREFIX) and fs_.is_local(fs):  # stage() died midway
                try:
                    if time.time() - os.stat(full).st_mtime > stale_after:
                        fs_.rmtree(fs, full)
                except FileNotFoundError:
                    pass
            elif (base != keep.get(name) and VERSION_RE.fullmatch(base)
                  and (include_open or not _is_pinned(full))):
                candidates.append((name, base, files))
    leftover = fs_.each(fs, lambda c: _is_leftover(fs, fs_.join(root, c[0], c[1]), stale_after,
                                                   c[2] is None or fs_.join(root, c[0], c[1], LOCK)
                                                   in c[2]), candidates)
    candidates = [c for c, gone in zip(candidates, leftover) if gone]
    # The locks were checked first: a committing writer removes its lock only after its run
    # record is written, so the manifests read now tell which versions are current.
    current = _current_versions(fs, root, sorted({c[0] for c in candidates}), key)
    doomed = [c for c in candidates if current[c[0]] not in (c[1], _UNREADABLE)]
    if fs_.is_object_store(fs):  # their files as listed, in bulk
        fs_.rm_files(fs, [path for _, _, files in doomed for path in files])
    else:
        fs_.each(fs, lambda c: fs_.rmtree(fs, fs_.join(root, c[0], c[1])), doomed)
    removed: dict[str, list[str]] = {name: [] for name in names}
    for name, base, _ in doomed:
        removed[name].append(base)
    for name, versions in removed.items():
        if versions:
            _log.info("stream %r: swept %d version(s) nothing reads any more (replaced, or left "
                      "by failed runs): %s", name, len(versions), ", ".join(versions))
    return removed


# ---------------------------------------------------------------------------- writing


def _frame_stack(batch: Batch) -> np.ndarray | None:
    """The batch's elements as one ``(n, ...)`` array if they are arrays of one shape and
    dtype and none is null, else ``None``."""
    if batch.nulls is not None and np.any(batch.nulls):
        return None
    elements = batch.elements
    if not isinstance(elements, np.ndarray):
        if not elements or not all(type(e) is np.ndarray for e in elements):
            return None
        first = elements[0]
        if any(e.shape != first.shape or e.dtype != first.dtype for e in elements):
            return None
        elements = np.stack(elements)
    if elements.ndim < 2:
        return None
    return np.ascontiguousarray(elements)


class StreamWriter:
    """Writes one staging version of a stored stream; from :meth:`Database.begin`.

    Picklable: workers in other processes write the chunks they computed with
    :meth:`write_chunk`, and it carries the element type's current ``serialize`` with it (a
    worker need not have registered the type, and never uses an older registration). The
    process that called ``begin`` then calls :meth:`commit` (or :func:`commit_run` for several
    outputs together) with their infos, or :meth:`abort`; or :meth:`seal` is called where the
    chunks were written and :func:`publish` commits the sealed manifests.
    """

    def __init__(self, url: str, name: str, version: str, type_name: str, length: int,
                 chunk_rows: int, storage: dict, storage_options: dict | None = None,
                 serialize=None, fps: float | None = None):
        self.url, self.name, self.version, self.type_name = url, name, version, type_name
        self.length, self.chunk_rows = int(length), int(chunk_rows)
        self.storage = dict(storage)
        self.storage_options = dict(storage_options or {})
        self.serialize = serialize
        self.fps = fps
        self.num_chunks = -(-self.length // self.chunk_rows)
        self._state = "open"

    def __repr__(self) -> str:
        return f"StreamWriter({self.url!r}, {self.name!r}, {self.version!r}, {self._state})"

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        if state["serialize"] is not None:  # by value: the notebook's current code
            import cloudpickle

            state["serialize"] = cloudpickle.dumps(state["serialize"])
        return state

    def __setstate__(self, state: dict) -> None:
        if isinstance(state["serialize"], bytes):
            import cloudpickle

            state["serialize"] = cloudpickle.loads(state["serialize"])
        self.__dict__.update(state)

    @property
    def _fs(self):
        return fs_.filesystem(self.url, self.storage_options)[0]

    @property
    def _root(self) -> str:
        return fs_.filesystem(self.url, self.storage_options)[1]

    @property
    def version_dir(self) -> str:
        return fs_.join(self._root, self.name, self.version)

    def _expected_rows(self, k: int) -> int:
        return min(self.length, (k + 1) * self.chunk_rows) - k * self.chunk_rows

    def _heartbeat(self, fs) -> None:
        """Check, in a process writing chunks, that the staging version is still there, and
        refresh its lock's heartbeat when it is older than ``HEARTBEAT_EVERY``."""
        key = self.version_dir
        if time.time() - _HEARTBEATS.get(key, 0.0) < HEARTBEAT_EVERY:
            return
        lock_path = fs_.join(key, LOCK)
        try:
            lock = json.loads(fs_.read_file(fs, lock_path))
        except FileNotFoundError:
            raise StorageError(
                f"the staging version of stream {self.name!r} was removed (the run was "
                f"aborted, or it was cleaned up as a leftover); nothing is written") from None
        except ValueError:
            return
        beat = lock.get("heartbeat")
        if isinstance(beat, (int, float)) and time.time() - beat < HEARTBEAT_EVERY:
            _HEARTBEATS[key] = min(beat, time.time())  # fresh (just staged): no write needed
            return
        lock["heartbeat"] = time.time()
        fs_.atomic_write(fs, lock_path, json.dumps(lock).encode(), key)
        _HEARTBEATS[key] = time.time()

    def write_chunk(self, k: int, batch: Batch) -> dict:
        """Write chunk ``k`` (rows ``k*chunk_rows`` ...) and return its info for the commit:
        ``k``, ``rows``, ``encoding``, ``shape``/``dtype`` (shared by its rows, else ``None``),
        ``nulls``, ``nbytes``, ``checksum``, ``pickled``."""
        k = int(k)
        if not 0 <= k < self.num_chunks:
            raise ScannerValueError(
                f"chunk {k} is outside stream {self.name!r} ({self.num_chunks} chunks of "
                f"{self.chunk_rows} rows for {self.length} rows)")
        n = self._expected_rows(k)
        if len(batch.elements) != n:
            raise ScannerValueError(f"chunk {k} of stream {self.name!r} must hold {n} rows, "
                                    f"the batch has {len(batch.elements)}")
        fs = self._fs
        self._heartbeat(fs)
        stack = _frame_stack(batch)
        if self.type_name not in ("FrameType", "Any"):
            stack = None  # a registered type stores through its own serialize
        elif stack is not None and stack.dtype.byteorder == ">":
            stack = stack.astype(stack.dtype.newbyteorder("<"))  # Zarr's bytes are little-endian
        encoding = codecs.choose_encoding(stack, self.storage)
        info = {"k": k, "rows": n, "encoding": encoding, "nulls": 0, "pickled": False,
                "shape": None if stack is None else list(stack.shape[1:]),
                "dtype": None if stack is None else stack.dtype.str}
        if encoding == "video":
            data = codecs.encode_video(stack, self.storage, self.fps or 30.0)
            key = codecs.chunk_key("video", k)
        elif encoding == "zarr":
            key, data = codecs.encode_zarr(stack, k, self.length, self.chunk_rows,
                                           self.type_name)
        else:
            elements = batch.element_list()
            if batch.nulls is not None:
                elements = [None if null else e for null, e in zip(batch.nulls, elements)]
            info["nulls"] = sum(e is None for e in elements)
            data, info["pickled"] = codecs.encode_elements(elements, self.type_name,
                                                           self.serialize)
            key = codecs.chunk_key("elements", k)
            if self.type_name == "FrameType":
                info["shape"], info["dtype"] = _common_frame(elements)
        try:
            fs_.write_file(fs, fs_.join(self.version_dir, key), data)
        except FileNotFoundError:
            raise StorageError(
                f"the staging version of stream {self.name!r} was removed (the run was "
                f"aborted, or it was cleaned up as a leftover); chunk {k} is not written"
            ) from None
        except OSError as exc:
            raise fs_.write_error(f"chunk {k} of stream {self.name!r}", exc) from exc
        info.update(nbytes=len(data), checksum=codecs.checksum(data, secure=info["pickled"]))
        return info

    def _check_infos(self, chunk_infos) -> list[dict]:
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
                f"{self.num_chunks - 1})")
        infos = [by_k[k] for k in range(self.num_chunks)]
        if any(i["rows"] != self._expected_rows(i["k"]) for i in infos):
            raise StorageError(f"cannot commit stream {self.name!r}: the chunks hold "
                               f"{sum(i['rows'] for i in infos)} rows, {self.length} expected")
        return infos

    def _layout(self, infos: list[dict]) -> tuple[str, dict | None]:
        encodings = {i["encoding"] for i in infos}
        frames = {(tuple(i["shape"]), i["dtype"]) for i in infos if i["shape"] is not None}
        frame = None
        if len(frames) == 1 and all(i["shape"] is not None or i["rows"] == i["nulls"]
                                    for i in infos):
            shape, dtype = frames.pop()
            frame = {"shape": list(shape), "dtype": dtype}
        if len(encodings) == 1 and (frame is not None or encodings == {"elements"}):
            return encodings.pop(), frame
        return ("mixed" if infos else "elements"), frame

    def seal(self, chunk_infos, run: str,
             metadata: dict | None = None) -> tuple[dict, dict | None]:
        """The manifest of this version in run ``run`` from the chunks' infos (checked against
        the files staged; not yet signed), with the Zarr group's metadata written if the
        chunks form one; and the other entries of the stream's folder as listed for that
        (``None`` on local disk), which :func:`publish`'s sweep then need not list again. Runs
        where the chunks were written (a worker) or in the committer."""
        if self._state != "open":
            raise StorageError(f"stream writer of {self.name!r} is already {self._state}")
        infos = self._check_infos(list(chunk_infos))
        fs = self._fs
        if fs_.is_local(fs):
            present, others = set(fs_.files_under(fs, self.version_dir)), None
        else:  # one listing of the stream's folder: this version's files and the others
            others = _entries(fs, fs_.join(self._root, self.name))
            present = set(others.pop(self.version, None) or [])
        if fs_.join(self.version_dir, LOCK) not in present:
            raise StorageError(
                f"cannot commit stream {self.name!r}: its staging version was removed (the "
                f"run was aborted, or it was cleaned up as a leftover)")
        array = codecs.ARRAY_NAME.get(self.type_name, "elements")
        files = [codecs.chunk_key(i["encoding"], i["k"], array, 1 + len(i["shape"] or ()))
                 for i in infos]
        lost = [f for f in files if fs_.join(self.version_dir, f) not in present]
        if lost:
            raise StorageError(f"cannot commit stream {self.name!r}: chunk files {lost} "
                               f"are missing")
        layout, frame = self._layout(infos)
        manifest = {
            "format": "scanner_nb.stream", "format_version": FORMAT_VERSION, "name": self.name,
            "type": self.type_name, "length": self.length, "chunk_rows": self.chunk_rows,
            "num_chunks": self.num_chunks, "version": self.version, "run": run, "layout": layout,
            "frame": frame, "storage": self.storage, "fps": self.fps,
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "chunks": [{key: i[key] for key in ("encoding", "rows", "shape", "dtype", "nulls",
                                                 "nbytes", "checksum", "pickled")} for i in infos],
        }
        for key, value in (metadata or {}).items():
            manifest.setdefault(key, value)
        if layout == "zarr":
            try:
                self._write_zarr_metadata(manifest)
            except OSError as exc:
                raise fs_.write_error(f"the metadata of stream {self.name!r}", exc) from exc
        return manifest, others

    def _write_zarr_metadata(self, manifest: dict) -> None:
        frame = manifest["frame"]
        attributes = {"scanner_nb": {"name": self.name, "type": self.type_name,
                                     "version": self.version, "run": manifest["run"]},
                      "fps": self.fps, "rows": [0, self.length], "type": self.type_name}
        files = codecs.zarr_metadata(self.length, self.chunk_rows, tuple(frame["shape"]),
                                     frame["dtype"], self.type_name, attributes)
        for key, data in files.items():
            fs_.write_file(self._fs, fs_.join(self.version_dir, key), data)

    def commit(self, chunk_infos, replace: bool = True, metadata: dict | None = None,
               key_file: str | None = None) -> None:
        """Publish this stream alone (a run of one output); see :func:`commit_run`."""
        commit_run([self], [chunk_infos], replace=replace, metadata=[metadata],
                   key=user_key(key_file))

    def finish(self, state: str) -> None:
        self._state = state
        with _STATE_LOCK:
            _OWNED.pop(self.version_dir, None)
            _HEARTBEATS.pop(self.version_dir, None)

    def abort(self) -> None:
        """Remove the staging version (nothing was visible); safe to call twice. After a
        successful commit this does nothing."""
        if self._state == "committed":
            return
        self.finish("aborted")
        fs_.rmtree(self._fs, self.version_dir)


def own(writer: StreamWriter) -> None:
    """Mark ``writer``'s staging version as this process's (sweeps leave it alone)."""
    with _STATE_LOCK:
        _OWNED[writer.version_dir] = writer
        _HEARTBEATS[writer.version_dir] = time.time()


def _common_frame(elements) -> tuple[list | None, str | None]:
    """Shape and dtype shared by all non-null frames, else ``(None, None)``."""
    shapes = {(tuple(e.shape), e.dtype.str) for e in elements if isinstance(e, np.ndarray)}
    if len(shapes) != 1 or any(e is not None and not isinstance(e, np.ndarray) for e in elements):
        return None, None
    shape, dtype = shapes.pop()
    return list(shape), dtype


def commit_run(writers: list[StreamWriter], chunk_infos: list, replace: bool,
               metadata: list | None, key: bytes, stale_after: float = STALE_AFTER) -> None:
    """Seal every writer with its chunks' infos and :func:`publish` them as one run."""
    if not writers:
        return
    run = new_run()
    sealed = fs_.each(writers[0]._fs, lambda a: a[0].seal(a[1], run, a[2]),
                      zip(writers, chunk_infos, metadata or [None] * len(writers)))
    publish(writers, sealed, replace, key, stale_after)


def _taken(names: list[str]) -> StreamExistsError:
    return StreamExistsError(
        f"stored stream(s) {names} were stored by another run while this one was computing; "
        f"they are kept (pass cache_mode=sp.CacheMode.Overwrite to replace them)")


def publish(writers: list[StreamWriter], sealed: list[tuple[dict, dict | None]], replace: bool,
            key: bytes, stale_after: float = STALE_AFTER,
            skip_existing: bool = False) -> list[StreamWriter]:
    """Publish the writers' streams together, or none of them (see the module docstring).

    ``sealed``: what :meth:`StreamWriter.seal` returned for each, all in one run. With
    ``replace=False`` an output that exists now (stored by another run meanwhile) raises
    :class:`StreamExistsError` naming them all, and nothing is committed; with
    ``skip_existing`` too, such outputs are left out instead (their writers stay open). A write
    that fails (a full disk) is a :class:`StorageError`; nothing is committed then either. On
    error the caller aborts the writers. Returns the writers committed.
    """
    if not writers:
        return []
    fs, root = writers[0]._fs, writers[0]._root
    names = [w.name for w in writers]
    raws = dict(zip(names, fs_.each(fs, lambda n: read_raw(fs, root, n), names)))
    current = read_manifests(fs, root, names, key, raws)
    pairs = [(w, manifest) for w, (manifest, _) in zip(writers, sealed)]
    if not replace:
        stored = [n for n in names if not isinstance(current[n], StreamNotFoundError)]
        if skip_existing:
            pairs, stored = [(w, m) for w, m in pairs if w.name not in stored], []
        pending = fs_.each(fs, lambda n: _pending_elsewhere(fs, root, n, raws[n], stale_after),
                           [w.name for w, _ in pairs])
        taken = stored + [w.name for (w, _), p in zip(pairs, pending) if p]
        if taken:
            raise _taken(taken)
    if not pairs:
        return []
    run = pairs[0][1]["run"]
    written: list[tuple[str, bytes | None]] = []  # (manifest path, its bytes before)

    def put(pair) -> None:
        writer, manifest = pair
        path = fs_.join(root, writer.name, MANIFEST)
        checked = validate(json.loads(json.dumps(manifest)), writer.name, path)
        checked["signature"] = sign(checked, key)
        previous = current[writer.name]
        if isinstance(previous, dict):
            previous.pop("signed", None)
            previous.pop("pending", None)
            checked["previous"] = previous
        data = json.dumps(checked, indent=1).encode()
        entry = (path, raws[writer.name])
        written.append(entry)
        try:
            if entry[1] is None and not replace:  # of two runs creating it, one wins
                if not fs_.atomic_create(fs, path, data, writer.version_dir):
                    written.remove(entry)
                    raise _taken([writer.name])
            else:
                fs_.atomic_write(fs, path, data, writer.version_dir)
        except OSError as exc:
            raise fs_.write_error(f"the manifest of stream {writer.name!r}", exc) from exc

    try:
        fs_.each(fs, put, pairs)
        record = json.dumps({"run": run, "outputs": [w.name for w, _ in pairs],
                             "created": time.time()}).encode()
        try:
            fs.makedirs(fs_.join(root, RUNS), exist_ok=True)
            fs_.atomic_write(fs, fs_.join(root, RUNS, f"{run}.json"), record,
                             fs_.join(root, RUNS))
        except OSError as exc:
            raise fs_.write_error(f"the record of the run storing {[w.name for w, _ in pairs]}",
                                  exc) from exc
    except BaseException:
        _restore(fs, written, writers[0].version_dir)
        raise
    # committed: everything below is tidying up
    committed = [w for w, _ in pairs]
    for writer in committed:
        writer.finish("committed")
    fs_.rm_files(fs, [fs_.join(w.version_dir, LOCK) for w in committed])
    listed = {w.name: others for w, (_, others) in zip(writers, sealed) if others is not None}
    sweep(fs, root, [w.name for w in committed], key, stale_after,
          keep={w.name: w.version for w in committed}, listed=listed)
    return committed


def _pending_elsewhere(fs, root: str, name: str, raw: bytes | None, stale_after: float) -> bool:
    """Whether ``raw`` (a manifest whose run has no record) is of a run that may still commit."""
    try:
        version = json.loads(raw)["version"] if raw is not None else None
    except (ValueError, KeyError, TypeError):
        return False
    if not isinstance(version, str) or not VERSION_RE.fullmatch(version):
        return False
    return not _is_leftover(fs, fs_.join(root, name, version), stale_after)


def _restore(fs, written: list, tmp_dir: str) -> None:
    """Put back the manifests a failed commit wrote (readers ignore them anyway: their run
    has no record; this only keeps the folder tidy). Best effort."""
    for path, old in reversed(written):
        try:
            if old is None:
                fs_.rm_file(fs, path)
            else:
                fs_.atomic_write(fs, path, old, tmp_dir)
        except OSError:
            pass
