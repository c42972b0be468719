"""Files at fsspec URLs (``s3://bucket/movie.mp4``, ``memory://...``) for the readers of inputs.

A local path stays a path (made absolute); a URL is kept as written and opened through fsspec
with the client's ``storage_options`` (``sp.Client(storage_options={...})``: an endpoint,
credentials, ...), which travel with what is sent to the workers, so each worker opens the file
straight from the store. What the store's client library raises (botocore's
``NoCredentialsError``, an access denied, a missing bucket) becomes a :class:`StorageError`
naming the URL and the fix; a missing file stays a ``FileNotFoundError`` for the caller to name.

Examples
--------
>>> is_url("s3://bucket/movie.mp4"), is_url("movie.mp4"), is_url("file:///tmp/movie.mp4")
(True, False, False)
>>> location("s3://bucket/movie.mp4")
's3://bucket/movie.mp4'
>>> location("/data/../data/movie.mp4")
'/data/movie.mp4'
"""

from __future__ import annotations

import contextlib
import os
from typing import IO, Any, NamedTuple

from .errors import ScannerTypeError, StorageError

__all__ = ["is_url", "location", "FileStat", "file_stat", "open_binary", "check_access",
           "read_bytes", "write_bytes"]


def is_url(path: str | os.PathLike) -> bool:
    """Whether ``path`` names a file through fsspec (``s3://``, ``gs://``, ``memory://``, a
    ``::`` chain) rather than on the local disk (a path, or a ``file://`` URL)."""
    text = os.fspath(path)
    return isinstance(text, str) and ("::" in text or "://" in text) and not text.startswith(
        "file://")


def location(path: str | os.PathLike) -> str:
    """The form a path or URL is kept in: a URL as given, a local path absolute.

    Raises
    ------
    ScannerTypeError
        For anything else (an open file cannot travel to the workers).
    """
    if not isinstance(path, (str, os.PathLike)):
        raise ScannerTypeError(
            f"a video is given by a path or an fsspec URL (s3://...), got {type(path).__name__}")
    text = os.fspath(path)
    if is_url(text):
        return text
    return os.path.abspath(text.removeprefix("file://"))


class FileStat(NamedTuple):
    """What ``os.stat`` tells of a file, for a file at a URL: its size and modification time."""

    st_size: int
    st_mtime_ns: int


def _filesystem(url: str, storage_options: dict | None) -> tuple[Any, str]:
    import fsspec

    try:
        return fsspec.core.url_to_fs(url, **(storage_options or {}))
    except (ImportError, ValueError) as exc:  # an unknown protocol, or its package missing
        raise StorageError(f"cannot reach {url!r}: {exc}") from None


def _unreachable(url: str, exc: BaseException) -> StorageError:
    """The error for a store that refused or could not be reached, with the fix."""
    return StorageError(
        f"cannot reach {url!r}: {type(exc).__name__}: {exc}. Give the store's credentials and "
        f"endpoint as sp.Client(storage_options={{...}}) (they reach every worker), or "
        f"through the store's own configuration on the client and every worker")


def file_stat(url: str, storage_options: dict | None = None) -> FileStat:
    """Size and modification time of the file at ``url`` (0 where the store keeps none).

    Raises
    ------
    FileNotFoundError
        If there is no file there.
    StorageError
        If it is a folder, or the store cannot be reached (credentials, endpoint).
    """
    fs, path = _filesystem(url, storage_options)
    try:
        info = fs.info(path)
        if info.get("type") == "directory":
            raise StorageError(f"not a file (a folder): {url!r}")
        try:
            modified = fs.modified(path).timestamp()
        except (NotImplementedError, AttributeError, KeyError, TypeError, ValueError):
            modified = 0
    except (FileNotFoundError, StorageError):
        raise
    except Exception as exc:  # the store's own errors (botocore, aiohttp, ...)
        raise _unreachable(url, exc) from None
    return FileStat(int(info.get("size") or 0), int(modified * 1e9))


def open_binary(url: str, storage_options: dict | None = None) -> IO[bytes]:
    """The file at ``url`` opened for reading (seekable; PyAV reads it as it reads a path).

    Raises as :func:`file_stat` does.
    """
    fs, path = _filesystem(url, storage_options)
    try:
        return fs.open(path, "rb")
    except FileNotFoundError:
        raise
    except Exception as exc:
        raise _unreachable(url, exc) from None


def check_access(url: str, storage_options: dict | None = None) -> None:
    """Raise :class:`StorageError` now if the store of ``url`` refuses us (no credentials, a
    wrong endpoint), rather than from the middle of a run; a missing folder is fine."""
    if not is_url(url):
        return
    fs, path = _filesystem(url, storage_options)
    try:
        fs.exists(path)
    except Exception as exc:
        raise _unreachable(url, exc) from None


def read_bytes(path: str, storage_options: dict | None = None) -> bytes:
    """The whole file at a local path or a URL.

    Raises
    ------
    FileNotFoundError
        If there is no file there.
    StorageError
        If the store cannot be reached.
    """
    if not is_url(path):
        with open(path, "rb") as f:
            return f.read()
    with open_binary(path, storage_options) as f:
        return f.read()


def write_bytes(path: str, data: bytes, storage_options: dict | None = None) -> None:
    """Write the whole file at a local path or a URL at once: readers see the old file or the
    new one (a local file is written aside, then renamed; a store writes an object whole).
    Folders are made as needed.

    Raises
    ------
    OSError
        If a local file cannot be written.
    StorageError
        If the store cannot be reached or refuses the write.
    """
    if not is_url(path):
        import tempfile

        folder = os.path.dirname(path)
        os.makedirs(folder, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=folder)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        return
    fs, where = _filesystem(path, storage_options)
    try:
        fs.pipe_file(where, data)
    except Exception as exc:
        raise _unreachable(path, exc) from None
