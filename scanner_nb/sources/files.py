"""Streams of files, one file per element (Scanner's ``FilesStream``), on any fsspec filesystem.

- ``FilesStream(paths)`` as an input: each element is a file's bytes (decode images with
  ``sc.ops.ImageDecoder``); as an ``sc.io.Output`` target: each element (bytes, e.g. from
  ``sc.ops.ImageEncoder``) is written to its path.
- ``ImagesStream(folder)``: the image files of a folder (or a glob, or a list of paths) as
  RGB frames, decoded where the partition is read.

Writing is all or nothing per run: every file is first written beside its target under a
temporary name, and the files are renamed into place only once all of them are written; a failed
run removes what it wrote.
"""

from __future__ import annotations

import contextlib
import os
import threading
import uuid
from typing import Any, Sequence

import numpy as np

from ..errors import (
    InputFileNotFoundError,
    ScannerTypeError,
    ScannerValueError,
    StreamExistsError,
)
from ..types import Batch, stack_elements
from .base import Source, default_rows, memory_partitions
from .stored import StreamStorage

__all__ = ["FilesStream", "ImagesStream", "FilesOutput", "write_files", "IMAGE_EXTENSIONS"]

#: What ``ImagesStream`` takes from a folder.
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".gif", ".ppm",
                    ".pgm", ".pnm")
_IMAGE_ROWS = 16  # images per partition when nobody chose (their size is unknown until read)


def _filesystem(path: str, storage_options: dict | None):
    import fsspec.core

    return fsspec.core.url_to_fs(path, **(storage_options or {}))


def _read_files(paths: list[str], storage_options: dict | None, stream: int, rows: np.ndarray,
                decode: bool) -> Batch:
    """Read the files of a partition (decoding them to frames when ``decode``)."""
    fs, _ = _filesystem(paths[0], storage_options) if paths else (None, None)
    elements = []
    for row, path in zip(rows.tolist(), paths):
        try:
            with fs.open(path, "rb") as f:
                data = f.read()
        except FileNotFoundError:
            raise InputFileNotFoundError(f"stream {stream}, row {row}: file {path!r} does not "
                                         f"exist (any more)") from None
        if decode:
            from ..imgproc.images import decode_image

            try:
                data = decode_image(data)
            except ScannerValueError as exc:
                raise ScannerValueError(f"stream {stream}, row {row}, file {path!r}: {exc}") from None
        elements.append(data)
    return Batch(stream, rows, stack_elements(elements, decode) if decode else elements, None,
                 "FrameType" if decode else "bytes")


class FilesStream(Source):
    """A stream whose elements are files: their bytes as an input, their content as an output.

    Parameters
    ----------
    paths : list of str
        One path (or fsspec URL, e.g. ``s3://bucket/a.jpg``) per element.
    storage_options : dict, optional
        Passed to fsspec (credentials, endpoint, ...).

    Examples
    --------
    >>> raw = sc.io.Input([sp.FilesStream(["a.jpg", "b.jpg"])])       # doctest: +SKIP
    >>> frames = sc.ops.ImageDecoder(img=raw)                          # doctest: +SKIP
    """

    type_name = "bytes"

    def __init__(self, paths: Sequence[str | os.PathLike], storage_options: dict | None = None):
        if isinstance(paths, (str, os.PathLike)) or not isinstance(paths, Sequence):
            raise ScannerTypeError(f"{type(self).__name__} takes a list of paths, got {paths!r}")
        self.paths = [_path(p) for p in paths]
        self.storage_options = dict(storage_options or {})
        self._token: str | None = None

    @property
    def token(self) -> str:
        """The files' identity: their paths, sizes and modification times."""
        if self._token is None:
            from dask.base import tokenize

            fs = self.fs
            stats = []
            for p in self.paths:
                try:
                    info = fs.info(p)
                except FileNotFoundError:
                    info = {}
                stats.append((info.get("size"), str(info.get("mtime", info.get("LastModified")))))
            self._token = tokenize(type(self).__name__, self.paths, stats)
        return self._token

    @property
    def label(self) -> str:
        first = self.paths[0] if self.paths else ""
        return f"{type(self).__name__}[{len(self.paths)}: {first}{', ...' if len(self) > 1 else ''}]"

    def __len__(self) -> int:
        return len(self.paths)

    def len(self) -> int:
        """The number of files (Scanner's spelling of ``len(stream)``)."""
        return len(self)

    @property
    def fs(self):
        """The fsspec filesystem of the paths."""
        return _filesystem(self.paths[0] if self.paths else ".", self.storage_options)[0]

    def check(self) -> None:
        """Every file exists (checked at ``sc.io.Input``)."""
        fs = self.fs
        missing = [p for p in self.paths if not fs.isfile(p)]
        if missing:
            raise InputFileNotFoundError(
                f"{self.label}: {len(missing)} file(s) do not exist, e.g. {missing[0]!r}")

    def partition(self, rows: np.ndarray, partition_size: int | None) -> list[np.ndarray]:
        return memory_partitions(rows, partition_size or default_rows(len(rows)))

    def read_task(self, stream: int, rows: np.ndarray, shared=None, out=None,
                  after=None) -> tuple:
        paths = [self.paths[r] for r in rows.tolist()]
        return (_read_files, paths, self.storage_options, stream, rows, self.type_name != "bytes")

    def read(self, rows: np.ndarray):
        return _read_files([self.paths[r] for r in rows.tolist()], self.storage_options, 0,
                           np.asarray(rows), self.type_name != "bytes").elements

    def load(self, rows=None):
        """The elements, lazily (``rows=[...]`` for some of them)."""
        wanted = range(len(self)) if rows is None else list(rows)
        for r in wanted:
            yield self.read(np.array([r], np.int64))[0]

    load_bytes = load  # Scanner's name

    def exists(self) -> bool:
        """Whether any of the files exists."""
        fs = self.fs
        return any(fs.exists(p) for p in self.paths)

    def committed(self) -> bool:
        """Whether all of the files exist."""
        fs = self.fs
        return all(fs.isfile(p) for p in self.paths)

    def delete(self, sc=None) -> None:
        """Remove the files (``sc``, Scanner's client argument, is optional)."""
        fs = self.fs
        for p in self.paths:
            with contextlib.suppress(FileNotFoundError):
                fs.rm_file(p)

    def storage(self) -> StreamStorage:
        """Scanner's storage backend: ``stream.storage().delete(sc, streams)``."""
        return StreamStorage()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.paths!r})"


class ImagesStream(FilesStream):
    """Image files as a stream of RGB frames: a folder (its image files, sorted by name), a glob
    (``"shots/*.png"``) or a list of paths. Each is decoded (OpenCV, else imageio) where its
    partition is read.

    Examples
    --------
    >>> frames = sc.io.Input([sp.ImagesStream("shots/")])               # doctest: +SKIP
    """

    type_name = "FrameType"

    def __init__(self, path: str | os.PathLike | Sequence[str], storage_options: dict | None = None):
        if isinstance(path, (str, os.PathLike)):
            path = _path(path)
            fs, _ = _filesystem(path, storage_options)
            if any(c in path for c in "*?["):
                found = fs.glob(path)
            elif fs.isdir(path):
                found = [p for p in fs.ls(path, detail=False)
                         if os.path.splitext(p)[1].lower() in IMAGE_EXTENSIONS]
            else:
                raise InputFileNotFoundError(f"ImagesStream: {path!r} is not a folder or a glob")
            protocol = path.split("://", 1)[0] + "://" if "://" in path else ""
            if not found:
                raise InputFileNotFoundError(f"ImagesStream: no image files in {path!r}")
            path = [p if "://" in p or not protocol else protocol + p for p in sorted(found)]
        super().__init__(path, storage_options)

    def partition(self, rows: np.ndarray, partition_size: int | None) -> list[np.ndarray]:
        return memory_partitions(rows, partition_size or _IMAGE_ROWS)


def _path(p: Any) -> str:
    if not isinstance(p, (str, os.PathLike)) or not os.fspath(p):
        raise ScannerTypeError(f"a file path must be a non-empty string, got {p!r}")
    p = os.fspath(p)
    return p if "://" in p else os.path.abspath(os.path.expanduser(p))


class FilesOutput:
    """``sc.io.Output(stream, [sp.FilesStream(paths), ...])``: one file per element."""

    def __init__(self, stream, targets: Sequence[FilesStream]):
        if stream.type_name not in ("bytes", "FrameType"):
            raise ScannerTypeError(
                f"sc.io.Output: a FilesStream stores bytes (or frames, encoded by the paths' "
                f"extension), got a stream of {stream.type_name}; encode it first, e.g. with "
                f"sc.ops.ImageEncoder")
        if len(targets) != stream.num_streams:
            raise ScannerValueError(
                f"sc.io.Output: {len(targets)} FilesStream(s) for {stream.num_streams} stream(s)")
        for s, (target, n) in enumerate(zip(targets, stream.lengths)):
            if len(target) != n:
                raise ScannerValueError(
                    f"sc.io.Output: stream {s} has {n} elements but its FilesStream has "
                    f"{len(target)} path(s); give one path per element")
        self.stream, self.targets = stream, list(targets)


def _write_partition(elements: list, paths: list[str], rows: list[int], suffix: str,
                     storage_options: dict | None) -> list[tuple[str, str]]:
    """Write a partition's elements to temporary names beside their paths (nothing once its
    run failed; see :class:`_Writes`)."""
    with _WRITES.running(suffix) as wanted:
        return _write_elements(elements, paths, rows, suffix, storage_options) if wanted else []


def _write_elements(elements: list, paths: list[str], rows: list[int], suffix: str,
                    storage_options: dict | None) -> list[tuple[str, str]]:
    from ..imgproc.images import encode_image

    fs, _ = _filesystem(paths[0], storage_options)
    written = []
    for element, path, row in zip(elements, paths, rows):
        if element is None:
            raise ScannerValueError(f"row {row} is null: no file can be written to {path!r}")
        if not isinstance(element, (bytes, bytearray)):
            element = encode_image(element, os.path.splitext(path)[1] or "png")
        parent = path.rsplit("/", 1)[0]
        if parent and "://" not in path:  # object stores have no folders to make
            fs.makedirs(parent, exist_ok=True)
        with fs.open(path + suffix, "wb") as f:
            f.write(element)
        written.append((path + suffix, path))
    return written


class _Writes:
    """The write tasks of each run running in this process, so that a failed run removes its
    files only once none of its tasks is still writing (the scheduler gives up on a failed
    graph while other tasks run on), and tasks that start later write nothing."""

    def __init__(self) -> None:
        self._changed = threading.Condition()
        self._running: dict[str, int] = {}
        self._failed: set[str] = set()

    @contextlib.contextmanager
    def running(self, run: str):
        with self._changed:
            wanted = run not in self._failed
            self._running[run] = self._running.get(run, 0) + 1
        try:
            yield wanted
        finally:
            with self._changed:
                self._running[run] -= 1
                if not self._running[run]:
                    del self._running[run]
                self._changed.notify_all()

    def fail(self, run: str, timeout: float = 60.0) -> None:
        """Mark ``run`` failed and wait for its tasks running here to end."""
        with self._changed:
            self._failed.add(run)
            self._changed.wait_for(lambda: not self._running.get(run), timeout)


_WRITES = _Writes()


def write_files(client, outputs: list[FilesOutput], perf, cache_mode, show_progress: bool,
                note=None) -> None:
    """Compute ``outputs`` and write their files, all or nothing (see the module docstring).

    ``note(built)`` is told each built graph (for profiles).
    """
    import dask

    from ..run import CacheMode

    jobs = [(o.stream, s, t) for o in outputs for s, t in enumerate(o.targets)]
    existing = [t for _, _, t in jobs if t.exists()]
    if existing and cache_mode is CacheMode.Error:
        raise StreamExistsError(
            f"{existing[0].label}: files exist; pass cache_mode=sp.CacheMode.Overwrite to "
            f"replace them or sp.CacheMode.Ignore to keep them")
    if cache_mode is CacheMode.Ignore:
        jobs = [j for j in jobs if not j[2].committed()]
    suffix = f".{uuid.uuid4().hex[:12]}.part"
    tasks, owners, views = [], [], {}
    for stream, s, target in jobs:
        if id(stream) not in views:
            views[id(stream)] = stream.with_perf_params(perf)
            if note is not None:
                note(views[id(stream)]._build())
        view = views[id(stream)]
        parts = view.to_delayed()[s]
        bounds = view.partitions_info()[s]["boundaries"]
        for part, (start, end) in zip(parts, bounds):
            tasks.append(dask.delayed(_write_partition, pure=False)(
                part, target.paths[start:end], list(range(start, end)), suffix,
                target.storage_options))
            owners.append(target)
    try:
        written = client.compute_collections(tasks, progress=show_progress)
    except BaseException:
        _WRITES.fail(suffix)  # no task of the run writes here any more
        for _, _, target in jobs:
            fs = target.fs
            for p in target.paths:
                with contextlib.suppress(OSError):
                    fs.rm_file(p + suffix)
        raise
    for target, pairs in zip(owners, written):
        fs = target.fs
        for temporary, final in pairs:
            fs.mv(temporary, final)
