"""File primitives on any fsspec filesystem: whole-file reads and writes, atomic replace and
create, tree removal that never globs, and :func:`each` to run many of them at once.

A plain local disk (exactly :class:`fsspec.implementations.local.LocalFileSystem`) gets plain
``os`` calls (``os.replace``, ``os.link``, ``shutil.rmtree``); every other filesystem, a
subclass of the local one included, goes through fsspec. An ``OSError`` while writing (a full
disk, a read-only folder) becomes a :class:`~scanner_nb.errors.StorageError` through
:func:`write_error`, the one place that words it.
"""

from __future__ import annotations

import concurrent.futures
import errno
import functools
import inspect
import io
import json
import os
import secrets
import shutil
from glob import has_magic  # what fsspec's own globbing tests
from typing import Any

import fsspec
import numpy as np
from fsspec.asyn import AsyncFileSystem
from fsspec.implementations.local import LocalFileSystem

from ..errors import ScannerValueError, StorageError

__all__ = [
    "atomic_create",
    "atomic_write",
    "basename",
    "each",
    "files_under",
    "filesystem",
    "is_local",
    "is_object_store",
    "join",
    "normalize_url",
    "read_file",
    "rm_file",
    "rm_files",
    "rmtree",
    "write_error",
    "write_file",
]

#: How many requests :func:`each` keeps in flight on a remote store.
CONCURRENCY = 32
#: Object stores: no folders (a "folder" is a prefix of keys), and one PUT of a whole object
#: is atomic (readers see old or new bytes).
_OBJECT_STORES = {"s3", "s3a", "gcs", "gs", "abfs", "az", "adl", "oss"}
_ATOMIC_PUT = _OBJECT_STORES | {"memory"}


def normalize_url(url) -> str:
    """A local path made absolute (``~`` expanded), or an fsspec URL unchanged.

    >>> normalize_url("memory://db")
    'memory://db'
    """
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


def filesystem(url: str, options: dict | None) -> tuple[Any, str]:
    """The fsspec filesystem and root path of a database URL (cached per process)."""
    return _filesystem_cached(url, json.dumps(options or {}, sort_keys=True))


def join(*parts: str) -> str:
    """``parts`` joined with ``/`` (callers pass only validated names).

    >>> join("/db/", "clip", "v-1")
    '/db/clip/v-1'
    """
    return "/".join([parts[0].rstrip("/")] + [p.strip("/") for p in parts[1:]])


def basename(path: str) -> str:
    return path.rstrip("/").rsplit("/", 1)[-1]


def is_local(fs) -> bool:
    """Whether ``fs`` is the plain local disk (subclasses go through fsspec)."""
    return type(fs) is LocalFileSystem


def each(fs, fn, items) -> list:
    """``[fn(item) for item in items]``, with the calls made concurrently when ``fs`` is a
    remote (asynchronous) store such as S3, where each is a round trip, or the local disk,
    where each write waits for its ``fsync``; one by one elsewhere (memory).

    Every call has ended when this returns or raises; an error is the first in ``items``' order.

    >>> each(fsspec.filesystem("memory"), len, ["ab", "c"])
    [2, 1]
    """
    items = list(items)
    if len(items) < 2 or not (isinstance(fs, AsyncFileSystem) or is_local(fs)):
        return [fn(item) for item in items]
    with concurrent.futures.ThreadPoolExecutor(min(CONCURRENCY, len(items)),
                                               thread_name_prefix="scanner_nb-store") as pool:
        futures = [pool.submit(fn, item) for item in items]
    return [future.result() for future in futures]


def files_under(fs, path: str) -> list[str]:
    """The paths of the files under folder ``path`` (all levels), ``[]`` if it is missing."""
    if is_local(fs):
        return [join(dirpath, f) for dirpath, _, files in os.walk(path) for f in files]
    try:
        return [p.rstrip("/") for p in fs.find(path)]
    except (FileNotFoundError, NotADirectoryError):
        return []


def write_error(what: str, exc: OSError) -> StorageError:
    """The :class:`StorageError` for an ``OSError`` met while writing ``what``."""
    why = ("the disk is full" if getattr(exc, "errno", None) in (errno.ENOSPC, errno.EDQUOT)
           else f"{type(exc).__name__}: {exc}")
    return StorageError(f"cannot write {what}: {why}; nothing of it is committed")


def _protocols(fs) -> set:
    return set(fs.protocol if isinstance(fs.protocol, (tuple, list)) else (fs.protocol,))


@functools.lru_cache(maxsize=16)
def _one_request(cls) -> dict:
    """Options of ``cat_file`` that read a file in one request: s3fs asks for the size first
    (a HEAD, and a listing when there is no such file) to split large files into ranges."""
    return {"max_concurrency": 1} if "max_concurrency" in inspect.signature(
        getattr(cls, "_cat_file", cls.cat_file)).parameters else {}


def read_file(fs, path: str, read=None):
    """All bytes of one file (one request on an object store), or ``read(f)`` of it opened as
    a binary file (unbuffered on a local disk, so ``f.readinto`` fills the caller's buffer
    straight from the page cache; its bytes in memory elsewhere)."""
    if is_local(fs):
        with open(path, "rb", buffering=0 if read is not None else -1) as f:
            return f.read() if read is None else read(f)
    data = fs.cat_file(path, **_one_request(type(fs)))
    if read is None:
        return data
    with io.BytesIO(data) as f:
        return read(f)


def write_file(fs, path: str, data) -> None:
    """Write ``data`` (bytes, or a list of buffers written one after the other) to ``path``,
    making its folder if needed."""
    buffers = data if isinstance(data, list) else [data]
    if is_local(fs):
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            for buffer in buffers:
                if isinstance(buffer, np.ndarray):
                    f.flush()
                    buffer.tofile(f)
                else:
                    f.write(buffer)
        return
    try:
        fs.pipe_file(path, b"".join(bytes(memoryview(b).cast("B")) for b in buffers))
    except FileNotFoundError:  # a filesystem with real folders
        fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
        fs.pipe_file(path, b"".join(bytes(memoryview(b).cast("B")) for b in buffers))


def atomic_write(fs, path: str, data: bytes, tmp_dir: str) -> None:
    """Write ``path`` so that readers see the old content or the new, never a part.

    Local disk: a temporary file in ``tmp_dir`` (same filesystem), flushed to disk, moved with
    ``os.replace``. Object stores and memory: one PUT. Others: a temporary file then ``fs.mv``.
    """
    tmp = join(tmp_dir, f".{basename(path)}.tmp-{secrets.token_hex(6)}")
    if is_local(fs):
        try:
            with open(tmp, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            rm_file(fs, tmp)
            raise
        return
    if _ATOMIC_PUT & _protocols(fs):
        fs.pipe_file(path, data)
        return
    try:
        fs.pipe_file(tmp, data)
        fs.mv(tmp, path)
    except BaseException:
        rm_file(fs, tmp)
        raise


def atomic_create(fs, path: str, data: bytes, tmp_dir: str) -> bool:
    """Write ``path`` whole only if it does not exist; ``False`` (nothing written) if it does.

    Local disk: a temporary file hard-linked to ``path`` (``link`` fails on an existing name,
    atomically). Elsewhere: a check (reading it: one request for a small file, where asking
    whether it exists can take two), then :func:`atomic_write`.
    """
    if is_local(fs):
        tmp = join(tmp_dir, f".{basename(path)}.new-{secrets.token_hex(6)}")
        try:
            with open(tmp, "wb") as f:
                f.write(data)
            try:
                os.link(tmp, path)
                return True
            except FileExistsError:
                return False
            except OSError as exc:  # no hard links here (some network or FUSE filesystems)
                if exc.errno in (errno.ENOSPC, errno.EDQUOT) or os.path.exists(path):
                    raise
                os.replace(tmp, path)
                return True
        finally:
            rm_file(fs, tmp)
    try:
        read_file(fs, path)
        return False
    except FileNotFoundError:
        pass
    atomic_write(fs, path, data, tmp_dir)
    return True


def is_object_store(fs) -> bool:
    """Whether ``fs`` is an object store (S3, GCS, Azure, ...): no folders, atomic PUTs."""
    return bool(_OBJECT_STORES & _protocols(fs))


def rmtree(fs, path: str) -> None:
    """Remove a folder and everything under it; missing is fine. No globbing of ``path``."""
    if is_local(fs):
        shutil.rmtree(path, ignore_errors=True)
        return
    try:
        found = fs.find(path, withdirs=True, detail=True)
    except (FileNotFoundError, NotADirectoryError):
        return
    rm_files(fs, [p for p, info in found.items() if info.get("type") != "directory"])
    if not is_object_store(fs):  # an object store has no folders to remove
        dirs = sorted((p for p, info in found.items() if info.get("type") == "directory"),
                      key=len, reverse=True)
        for p in dirs + [path]:
            try:
                fs.rmdir(p)
            except (FileNotFoundError, OSError):
                pass
    fs.invalidate_cache(path)


def rm_files(fs, paths: list[str]) -> None:
    """Remove files; missing ones are fine. On an object store in bulk (S3: one request per
    1,000 files); never globbing (a path with ``*?[`` is removed alone)."""
    if is_object_store(fs):
        literal = [p for p in paths if not has_magic(p)]
        if literal:
            fs.rm(literal)
        paths = [p for p in paths if has_magic(p)]
    each(fs, lambda p: rm_file(fs, p), paths)


def rm_file(fs, path: str) -> None:
    """Remove one file; missing is fine."""
    try:
        if is_local(fs):
            os.remove(path)
        else:
            fs.rm_file(path)
    except FileNotFoundError:
        pass
