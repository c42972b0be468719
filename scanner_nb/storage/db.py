"""``Database``: the stored streams under one folder (any fsspec URL), and reading them.

Layout::

    <db>/.runs/<run>.json                  one record per committed sc.run (the commit point)
    <db>/<name>/manifest.json              the stream: version, run, type, chunks, checksums
    <db>/<name>/v-<time>-<token>[.zarr]/   one folder per version, never changed once committed
        0.mp4  1.mp4 ...                   uint8 frames (default): one H.264 mp4 per chunk
        zarr.json  frames/zarr.json        lossless frames and numeric arrays: a Zarr (v3)
        frames/c/0/0/0/0 ...               group, one chunk per partition (xarray, dask, zarr)
        0.elements  1.elements ...         other elements (plain data without pickle)
        lock.json                          only while staging: owner and heartbeat

Reading checks everything from disk first (:mod:`~scanner_nb.storage.manifest`), verifies
each chunk's checksum before decoding it (:func:`~scanner_nb.storage.codecs.checksum`), and loads pickled elements only from streams this
user committed (their manifest carries this user's signature) unless the database was opened
with ``trust_pickle=True``.
"""

from __future__ import annotations

import collections
import concurrent.futures
import gc as garbage
import itertools
import os
import secrets
import time
from collections.abc import Iterable, Iterator

import numpy as np

from ..errors import RowIndexError, ScannerValueError, StorageError, StreamNotFoundError
from ..names import _name_problem, default_db_path, validate_name
from ..types import Batch, lookup_type, stack_elements
from . import codecs
from . import fs as fs_
from .commit import (
    STALE_AFTER,
    StreamWriter,
    commit_run,
    new_version,
    own,
    pin,
    publish,
    stage,
    sweep,
    unpin,
)
from .manifest import MANIFEST, RUN_RE, RUNS, read_manifest, read_manifests, read_raw, user_key

__all__ = ["Database", "default_db_path", "validate_name"]

#: Decoded bytes that ``load()`` reads ahead at most (a single chunk when larger).
_AHEAD_BYTES = 256 * 2**20


class Database:
    """The stored streams under one folder (any fsspec URL).

    Parameters
    ----------
    url : str
        A local path (``~`` expanded, made absolute) or an fsspec URL such as ``memory://db``.
    storage_options : dict, optional
        Passed to fsspec (credentials and the like); kept by writers sent to workers.
    trust_pickle : bool
        Load pickled elements (objects of type ``Any`` that are not plain data) from streams
        this user did not commit. Off by default: unpickling runs code chosen by whoever wrote
        the data. Streams this user committed are signed with their key and always load.
    key_file : str, optional
        This user's signing key (default ``$SCANNER_NB_KEY_FILE``, else
        ``~/.config/scanner_nb/storage.key``, made on first use).
    stale_after : float
        Seconds after which a staging version owned by a process on another host counts as a
        leftover unless its heartbeat is newer; on this host the owner's liveness decides.

    Examples
    --------
    >>> from scanner_nb.types import Batch
    >>> db = Database("memory://doctest-db")
    >>> w = db.begin("nums", "Any", length=3, chunk_rows=2)
    >>> infos = [w.write_chunk(0, Batch(0, np.arange(2), [1, 2])),
    ...          w.write_chunk(1, Batch(0, np.arange(2, 3), [3]))]
    >>> db.commit([w], [infos])
    >>> db.exists("nums"), list(db.load("nums")), list(db.load("nums", rows=[2, 0]))
    (True, [1, 2, 3], [3, 1])
    >>> db.delete("nums"); db.names()
    []
    """

    def __init__(self, url: str, *, storage_options: dict | None = None,
                 trust_pickle: bool = False, key_file: str | None = None,
                 stale_after: float = STALE_AFTER):
        self.url = fs_.normalize_url(url)
        self.storage_options = dict(storage_options or {})
        self.trust_pickle = bool(trust_pickle)
        self.key_file = key_file
        self.stale_after = float(stale_after)
        try:
            self.fs, self.root = fs_.filesystem(self.url, self.storage_options)
        except Exception as exc:
            raise StorageError(f"cannot open database {self.url!r}: {exc}") from exc

    def __repr__(self) -> str:
        return f"Database({self.url!r})"

    def __reduce__(self):
        return (_rebuild_database, (self.url, self.storage_options, self.trust_pickle,
                                    self.key_file, self.stale_after))

    @property
    def key(self) -> bytes:
        """This user's signing key (see ``key_file``)."""
        return user_key(self.key_file)

    def _stream_dir(self, name: str) -> str:
        return fs_.join(self.root, validate_name(name))

    def _version_dir(self, name: str, manifest: dict) -> str:
        return fs_.join(self._stream_dir(name), manifest["version"])

    def _url_of(self, path: str) -> str:
        return path if fs_.is_local(self.fs) else self.fs.unstrip_protocol(path)

    # queries ---------------------------------------------------------------------------------
    def check_writable(self) -> None:
        """Create the database folder and write and remove a probe file there.

        Raises
        ------
        StorageError
            Naming the URL and the reason when it cannot be written.
        """
        probe = fs_.join(self.root, f".probe-{secrets.token_hex(6)}")
        try:
            self.fs.makedirs(self.root, exist_ok=True)
            fs_.write_file(self.fs, probe, b"scanner_nb")
            fs_.rm_file(self.fs, probe)
        except Exception as exc:
            raise StorageError(
                f"database {self.url!r} is not writable: {type(exc).__name__}: {exc}; "
                f"choose another db_path (or set SCANNER_NB_DB)") from exc

    def exists(self, name: str) -> bool:
        """Whether ``name`` is a committed stream (a malformed one counts: an ``Overwrite``
        replaces it, ``CacheMode.Error`` refuses to)."""
        return bool(self.existing([name]))

    def existing(self, names: Iterable[str]) -> list[str]:
        """Those of ``names`` that :meth:`exists` (read concurrently on a remote store)."""
        names = [validate_name(n) for n in names]
        found = read_manifests(self.fs, self.root, names, self.key)
        return [n for n in names if not isinstance(found[n], StreamNotFoundError)]

    def manifest(self, name: str) -> dict:
        """The checked manifest of stream ``name`` as readers see it.

        Keys: ``name``, ``type``, ``length``, ``chunk_rows``, ``num_chunks``, ``version`` (its
        folder), ``run``, ``layout`` (``"video"``, ``"zarr"``, ``"elements"`` or ``"mixed"``),
        ``chunks`` (per chunk: ``encoding``, ``rows``, ``shape``, ``dtype``, ``nulls``,
        ``nbytes``, ``checksum``, ``pickled``), ``frame`` (``{"shape", "dtype"}`` when all
        non-null frames share them), ``nulls``, ``nbytes``, ``fps``, ``storage``, ``created``,
        ``signed`` (committed by this user).

        Raises
        ------
        StreamNotFoundError
            If ``name`` is not stored.
        StorageError
            If its manifest is malformed.
        """
        return read_manifest(self.fs, self.root, validate_name(name), self.key)

    def names(self) -> list[str]:
        """Names of the committed streams, sorted."""
        try:
            entries = self.fs.ls(self.root, detail=True)
        except (FileNotFoundError, NotADirectoryError):
            return []
        folders = [fs_.basename(e["name"]) for e in entries if e.get("type") == "directory"]
        return sorted(self.existing(n for n in folders if not _name_problem(n)))

    def delete(self, name: str) -> None:
        """Remove stream ``name``: its manifest first (it vanishes at once), then its versions
        (except those this process has open, see :meth:`gc`). Deleting twice is fine."""
        stream_dir = self._stream_dir(name)
        if read_raw(self.fs, self.root, name) is None:
            return
        fs_.rm_file(self.fs, fs_.join(stream_dir, MANIFEST))
        sweep(self.fs, self.root, [name], self.key, self.stale_after)
        try:
            if not self.fs.ls(stream_dir):
                self.fs.rmdir(stream_dir)
        except (FileNotFoundError, OSError):
            pass

    def gc(self, include_open: bool = False) -> list[str]:
        """Remove every version no manifest names and no live run is writing, and run records
        no manifest names; return the removed ``"name/version"`` (and ``".runs/run"``).

        Versions this process has open (a ``load()`` in progress, a stream reading them, a
        ``zarr_path`` handed out) are kept unless ``include_open`` (then open zarr/dask
        handles on them read missing chunks). Handles nothing reaches any more count as
        closed, even those in reference cycles the garbage collector has not reached yet.
        """
        garbage.collect()
        try:
            entries = self.fs.ls(self.root, detail=False)
        except (FileNotFoundError, NotADirectoryError):
            return []
        names = [n for n in map(fs_.basename, entries) if not _name_problem(n)]
        swept = sweep(self.fs, self.root, names, self.key, self.stale_after, include_open)
        removed = [f"{name}/{v}" for name in names for v in swept[name]]
        runs = {m["run"] for m in read_manifests(self.fs, self.root, names, self.key).values()
                if isinstance(m, dict)}
        runs_dir = fs_.join(self.root, RUNS)
        try:
            records = self.fs.ls(runs_dir, detail=True)
        except (FileNotFoundError, NotADirectoryError):
            records = []
        for entry in records:
            base = fs_.basename(entry["name"])
            run = base.removesuffix(".json")
            if not RUN_RE.fullmatch(run) or run in runs:
                continue
            if time.time() - _mtime(entry) > self.stale_after:  # not a run committing now
                fs_.rm_file(self.fs, fs_.join(runs_dir, base))
                removed.append(f"{RUNS}/{run}")
        return removed

    # writing ---------------------------------------------------------------------------------
    def begin(self, name: str, type_name: str, length: int, chunk_rows: int,
              storage: dict | None = None, fps: float | None = None) -> StreamWriter:
        """Start writing a new version of ``name``; nothing is visible until it is committed.

        ``storage`` is how frames are kept (:func:`codecs.video_options` for video, the
        default; ``{"encoding": "zarr"}`` bit-exact). Makes a fresh staging version folder
        (locked by this process) and removes leftovers of earlier failed runs of the name.
        """
        writer = self.writer(name, type_name, length, chunk_rows, storage, fps)
        sweep(self.fs, self.root, [name], self.key, self.stale_after)
        self.stage([writer])
        return writer

    def writer(self, name: str, type_name: str, length: int, chunk_rows: int,
               storage: dict | None = None, fps: float | None = None) -> StreamWriter:
        """A writer of a new version of ``name`` as :meth:`begin` makes, not staged yet (no
        I/O): :meth:`stage` it before writing."""
        validate_name(name)
        stream_type = lookup_type(type_name)  # an unregistered type fails before any work
        length, chunk_rows = int(length), int(chunk_rows)
        if length < 0:
            raise ScannerValueError(f"length of stream {name!r} must be >= 0, got {length}")
        if chunk_rows < 1:
            raise ScannerValueError(f"chunk_rows must be >= 1, got {chunk_rows}")
        if storage is None:
            storage = codecs.video_options() if type_name == "FrameType" else {"encoding": "zarr"}
        builtin = type_name in ("FrameType", "bytes", "Any")
        return StreamWriter(self.url, name, new_version(storage["encoding"] == "zarr"),
                            type_name, length, chunk_rows, storage, self.storage_options,
                            None if builtin else stream_type.serialize, fps)

    def stage(self, writers: list[StreamWriter]) -> None:
        """Make each writer's staging version folder, locked by this process (concurrently on
        a remote store). On failure every one of them is aborted.

        Raises
        ------
        StorageError
            Naming the stream and the reason.
        """
        for writer in writers:
            own(writer)  # from now on a sweep in another thread leaves it alone

        def make(writer: StreamWriter) -> None:
            stream_dir = self._stream_dir(writer.name)
            try:
                for attempt in range(3):
                    try:  # a delete() of the name may remove an empty stream folder meanwhile
                        stage(self.fs, stream_dir, writer.version)
                        break
                    except FileNotFoundError:
                        if attempt == 2:
                            raise
            except Exception as exc:
                raise StorageError(f"cannot write stream {writer.name!r} in {self.url!r}: "
                                   f"{type(exc).__name__}: {exc}") from exc

        try:
            fs_.each(self.fs, make, writers)
        except BaseException:
            self.abort(writers)
            raise

    def abort(self, writers: list[StreamWriter]) -> None:
        """:meth:`StreamWriter.abort` each writer (concurrently on a remote store)."""
        fs_.each(self.fs, lambda w: w.abort(), writers)

    def commit(self, writers: list[StreamWriter], chunk_infos: list, replace: bool = True,
               metadata: list | None = None) -> None:
        """Publish the writers' streams together, or none (see :mod:`.commit`)."""
        commit_run(writers, chunk_infos, replace, metadata, self.key, self.stale_after)

    def publish(self, writers: list[StreamWriter], sealed: list[tuple[dict, dict | None]],
                replace: bool = True, skip_existing: bool = False) -> list[StreamWriter]:
        """Publish writers sealed by :meth:`StreamWriter.seal` (on the workers) together, or
        none; return those committed (see :func:`.commit.publish`)."""
        return publish(writers, sealed, replace, self.key, self.stale_after, skip_existing)

    # reading ---------------------------------------------------------------------------------
    def zarr_path(self, name: str) -> str:
        """The Zarr group of a stream stored as one array (lossless frames, numeric arrays),
        for ``xarray.open_zarr``, ``zarr.open`` or ``dask.array.from_zarr(path,
        component="frames")``. This process keeps that version on disk from then on (see
        :meth:`gc`). Others raise :class:`ScannerValueError`."""
        manifest = self.manifest(name)
        if manifest["layout"] != "zarr":
            why = ("it is empty" if manifest["length"] == 0
                   else "its frames are stored as video (store them with stream.lossless())"
                   if manifest["layout"] == "video"
                   else "its elements are not arrays of one shape and dtype")
            raise ScannerValueError(f"stream {name!r} is not stored as a Zarr array: {why}")
        path = self._version_dir(name, manifest)
        pin(path)
        return self._url_of(path)

    def hold(self, name: str, manifest: dict, owner):
        """Keep ``manifest``'s version on disk in this process while ``owner`` lives, or until
        the returned callable is called."""
        import weakref

        path = self._version_dir(name, manifest)
        pin(path)
        return weakref.finalize(owner, unpin, path)

    def read_chunk(self, name: str, k: int, manifest: dict | None = None) -> Batch:
        """Chunk ``k`` of stream ``name``: rows ``k*chunk_rows`` to ``(k+1)*chunk_rows``.

        Pass ``manifest`` (from :meth:`manifest`) to read that version; a version replaced or
        deleted meanwhile raises :class:`StorageError` rather than mixing two versions.
        """
        if manifest is None:
            manifest = self.manifest(name)
        k = int(k)
        if not 0 <= k < manifest["num_chunks"]:
            raise RowIndexError(
                f"chunk {k} is outside stream {name!r}, which has {manifest['num_chunks']} "
                f"chunks of {manifest['chunk_rows']} rows")
        elements, nulls = self._read_chunk(name, manifest, k)
        start = k * manifest["chunk_rows"]
        rows = np.arange(start, start + len(elements), dtype=np.int64)
        return Batch(0, rows, elements, nulls, manifest["type"])

    def _read_chunk(self, name: str, manifest: dict, k: int):
        info = manifest["chunks"][k]
        chunk_rows, n = manifest["chunk_rows"], info["rows"]
        where = f"chunk {k} (rows {k * chunk_rows} to {k * chunk_rows + n - 1}) of stream {name!r}"
        array = codecs.ARRAY_NAME.get(manifest["type"], "elements")
        key = codecs.chunk_key(info["encoding"], k, array, 1 + len(info["shape"] or ()))
        path = fs_.join(self._version_dir(name, manifest), key)
        if info["encoding"] == "zarr":  # read into its array, checked there (codecs.read_zarr)
            try:
                return self._read_file(name, manifest, path, where, lambda f: codecs.read_zarr(
                    f, info, chunk_rows))[:n], None
            except ValueError as exc:
                raise StorageError(f"{where} is corrupt: {path}: {exc}") from None
        data = self._read_file(name, manifest, path, where)
        if not codecs.verify(data, info["checksum"]):
            raise StorageError(f"{where} is corrupt: {path} does not match the checksum in "
                               f"its manifest")
        try:
            if info["encoding"] == "video":
                return codecs.decode_video(data, tuple(info["shape"]), n), None
            stream_type = lookup_type(manifest["type"])
            builtin = manifest["type"] in ("FrameType", "bytes", "Any")
            elements = codecs.decode_elements(
                data, n, None if builtin else stream_type.deserialize,
                lambda: self._allow_pickle(name, manifest, info, where))
        except ValueError as exc:
            raise StorageError(f"{where} is corrupt: {exc}") from None
        null_mask = np.fromiter((e is None for e in elements), dtype=bool, count=n)
        nulls = null_mask if null_mask.any() else None
        if manifest["type"] == "FrameType" and nulls is None:
            return stack_elements(elements, True), None
        return elements, nulls

    def _allow_pickle(self, name: str, manifest: dict, info: dict, where: str) -> None:
        if not info["pickled"]:  # only chunks listed as pickled have a SHA-256 checksum
            raise StorageError(f"{where} is corrupt: it holds pickled rows, its manifest "
                               f"says it does not")
        if manifest.get("signed") or self.trust_pickle:
            return
        raise StorageError(
            f"stream {name!r} in {self.url!r} holds pickled Python objects that this user did "
            f"not store (its manifest is not signed with your key); unpickling runs code "
            f"chosen by whoever wrote them, so they are not loaded. If you trust its author, "
            f"open it with sp.Client(..., trust_pickle=True)")

    def _read_file(self, name: str, manifest: dict, path: str, where: str, read=None):
        if fs_.is_local(self.fs) and not os.path.realpath(path).startswith(
                os.path.realpath(self._stream_dir(name)) + os.sep):
            raise StorageError(f"{where} is a link out of the stream's folder: {path}")
        try:
            return fs_.read_file(self.fs, path, read)
        except FileNotFoundError:
            try:
                now = self.manifest(name)
                now = None if now["pending"] else now["version"]
            except (StreamNotFoundError, StorageError):
                now = None
            if now != manifest["version"]:
                raise StorageError(
                    f"stream {name!r} was {'deleted' if now is None else 'replaced'} while it "
                    f"was being read; load it again") from None
            raise StorageError(f"{where} is missing: {path}") from None
        except OSError as exc:
            raise StorageError(f"cannot read {where}: {exc}") from exc

    def load(self, name: str, rows: Iterable[int] | None = None) -> Iterator:
        """The elements of stream ``name``, lazily, in order (nulls are ``None``).

        ``rows=[...]`` yields those rows in the order given (repeats allowed), reading only the
        chunks that hold them. The manifest is read now, so a missing stream or a row outside
        it raises here, and the whole iteration reads that one version.

        Raises
        ------
        StreamNotFoundError
            If ``name`` is not stored.
        RowIndexError
            For a row outside ``[0, length)``.
        ScannerTypeError
            If the stream's element type is not registered in this process.
        """
        import weakref

        manifest = self.manifest(name)
        lookup_type(manifest["type"])
        length = manifest["length"]
        if rows is None:
            wanted = None
        else:
            wanted = [int(r) for r in rows]
            bad = [r for r in wanted if not 0 <= r < length]
            if bad:
                raise RowIndexError(f"row {bad[0]} is outside stream {name!r} of length "
                                    f"{length} (valid rows: 0 to {length - 1})")
        iterator = self._iter(name, manifest, wanted)
        path = self._version_dir(name, manifest)
        pin(path)
        weakref.finalize(iterator, unpin, path)
        return iterator

    def _iter(self, name: str, manifest: dict, rows: list[int] | None) -> Iterator:
        chunk_rows = manifest["chunk_rows"]
        if rows is None:
            for chunk in self._read_ahead(name, manifest, range(manifest["num_chunks"])):
                yield from chunk
            return
        runs = [(k, list(group)) for k, group in itertools.groupby(rows, lambda r: r // chunk_rows)]
        chunks = self._read_ahead(name, manifest, [k for k, _ in runs])
        for (k, group), chunk in zip(runs, chunks):
            for r in group:
                element = chunk[r - k * chunk_rows]
                # a frame is a view of its chunk: copy, so a few kept frames do not keep chunks
                yield element.copy() if isinstance(chunk, np.ndarray) else element

    def _read_ahead(self, name: str, manifest: dict, ks) -> Iterator:
        """The elements of chunks ``ks`` in order. Once the caller has gone past the first
        chunk (so a caller taking a few rows reads one chunk), the next chunk is read,
        verified and decoded in a background thread while the caller uses the current one
        (decoders and checksums release the GIL). A Zarr stream's next chunks are read side
        by side, one per core but the caller's (up to 4, at most :data:`_AHEAD_BYTES` of
        decoded chunks in flight): Blosc decodes on one core outside the main thread. Errors
        surface at the chunk they belong to."""
        ks = list(ks)
        if not ks:
            return
        yield self._read_chunk(name, manifest, ks[0])[0]
        if len(ks) == 1:
            return
        depth = 1  # video decoders use threads of their own, plain data holds the GIL
        if manifest["layout"] == "zarr":
            frame = manifest["frame"]
            chunk_bytes = (manifest["chunk_rows"] * int(np.prod(frame["shape"]))
                           * np.dtype(frame["dtype"]).itemsize)
            depth = max(1, min(4, (os.cpu_count() or 1) - 1, _AHEAD_BYTES // chunk_bytes))
        with concurrent.futures.ThreadPoolExecutor(depth,
                                                   thread_name_prefix="scanner_nb-load") as pool:
            futures = collections.deque(pool.submit(self._read_chunk, name, manifest, k)
                                        for k in ks[1:1 + depth])
            rest = iter(ks[1 + depth:])
            while futures:
                elements = futures.popleft().result()[0]
                for k in itertools.islice(rest, 1):
                    futures.append(pool.submit(self._read_chunk, name, manifest, k))
                yield elements


def _mtime(entry: dict) -> float:
    value = entry.get("mtime") or entry.get("created") or entry.get("LastModified") or 0
    return value.timestamp() if hasattr(value, "timestamp") else float(value)


def _rebuild_database(url, storage_options, trust_pickle, key_file, stale_after) -> Database:
    return Database(url, storage_options=storage_options, trust_pickle=trust_pickle,
                    key_file=key_file, stale_after=stale_after)
