"""Stored streams: ``NamedStream`` (an output of ``sc.run`` or an input) and
``NamedVideoStream`` (a video file given by path, or stored frames)."""

from __future__ import annotations

import copy
import os

import numpy as np
from dask.base import tokenize

from ..errors import ScannerTypeError
from ..types import Batch
from .base import Source
from .video import VideoFileSource

__all__ = ["NamedStream", "NamedVideoStream", "StreamStorage", "mp4_path"]


def mp4_path(path: str | os.PathLike) -> str:
    """``path``, with ``.mp4`` added when it has no extension (as Scanner's ``save_mp4``).

    Examples
    --------
    >>> mp4_path("out/clip"), mp4_path("clip.mov")
    ('out/clip.mp4', 'clip.mov')
    """
    path = os.fspath(path)
    return path if os.path.splitext(path)[1] else path + ".mp4"


class StreamStorage:
    """What ``stream.storage()`` returns, Scanner's storage backend: ``delete(sc, streams)``
    deletes several streams at once."""

    def delete(self, sc, streams) -> None:
        """Delete each of ``streams`` (stored streams, a video's index, files)."""
        for stream in streams:
            stream.delete(sc)

    def __repr__(self) -> str:
        return "StreamStorage()"


def _read_stored(db, name: str, manifest: dict, stream: int, rows: np.ndarray) -> Batch:
    """Rows of a stored stream, reading only the chunks that hold them."""
    from ..types import concat_batches

    chunk_rows = manifest["chunk_rows"]
    chunks = rows // chunk_rows
    parts = []
    for k in np.unique(chunks).tolist():
        batch = db.read_chunk(name, k, manifest)
        parts.append(batch.take(rows[chunks == k] - k * chunk_rows))
    out = concat_batches(parts)
    return Batch(stream, rows, out.elements, out.nulls, manifest["type"])


class NamedStream(Source):
    """A stored stream in the client's database: an output of ``sc.run``, or an input.

    Parameters
    ----------
    sc : Client
    name : str
        No ``/``, ``..``, control characters, and not empty (checked now).

    Examples
    --------
    >>> out = sc.io.Output(scores, [sp.NamedStream(sc, "scores")])     # doctest: +SKIP
    >>> (stored,) = sc.run(out, sp.PerfParams.estimate())              # doctest: +SKIP
    >>> list(stored.load(rows=[0, 5]))                                 # doctest: +SKIP
    """

    def __init__(self, sc, name: str):
        from ..names import validate_name

        self._client = sc
        self._db = None  # where a handle sent to another process finds its database
        self.name = validate_name(name)
        self._manifest: dict | None = None
        self._held = None
        self._fixed = False

    def __getstate__(self) -> dict:
        """A handle travels (in a plan sent to a remote scheduler) without its client: a fixed
        one with its database and manifest, enough to plan and read its version; the hold on
        that version stays with the handle here."""
        state = dict(self.__dict__, _client=None, _held=None)
        if self._fixed:
            state["_db"] = self.db
        return state

    def __copy__(self) -> NamedStream:
        """A copy in this process keeps the client (only pickling leaves it behind)."""
        new = object.__new__(type(self))
        new.__dict__.update(self.__dict__)
        return new

    @property
    def label(self) -> str:
        return f"{type(self).__name__} {self.name!r}"

    @property
    def db(self):
        """The database the stream lives in."""
        return self._client.db if self._client is not None else self._db

    def manifest(self) -> dict:
        """The stored stream's manifest (type, length, chunks); ``StreamNotFoundError`` if absent.

        The version it names stays on disk while this handle lives (in this process); a
        handle from :meth:`fixed` keeps that version."""
        if self._fixed:
            return self._manifest
        manifest = self.db.manifest(self.name)
        if self._manifest is None or manifest["version"] != self._manifest["version"]:
            self.forget()
            self._held = self.db.hold(self.name, manifest, self)
        self._manifest = manifest
        return manifest

    def fixed(self) -> NamedStream:
        """A copy of this handle fixed at the version stored now (kept on disk while it lives):
        a Stream built on it reads that version after an ``Overwrite``, never a mix."""
        fixed = copy.copy(self)
        fixed._manifest, fixed._held = None, None
        fixed.manifest()
        fixed._fixed = True
        return fixed

    def forget(self) -> None:
        """Drop the cached manifest (and this handle's hold on its version)."""
        if self._held is not None:
            self._held()
        self._manifest = self._held = None

    @property
    def type_name(self) -> str:
        return (self._manifest or self.manifest())["type"]

    def exists(self) -> bool:
        """Whether the stream is stored (complete: a stored stream is never half-written)."""
        return self.db.exists(self.name)

    def __len__(self) -> int:
        return int(self.manifest()["length"])

    def len(self) -> int:
        """The number of rows (Scanner's spelling of ``len(stream)``)."""
        return len(self)

    def load(self, rows=None):
        """The elements, lazily; ``rows=[...]`` reads only the chunks holding them."""
        return self.db.load(self.name, rows)

    def delete(self, sc=None) -> None:
        """Remove the stored stream (``sc``, Scanner's client argument, is optional)."""
        self.forget()
        self.db.delete(self.name)

    def storage(self) -> StreamStorage:
        """Scanner's storage backend of the stream: ``stream.storage().delete(sc, streams)``."""
        return StreamStorage()

    @property
    def zarr_path(self) -> str:
        """The Zarr group of a stream stored losslessly (``stream.lossless()``), for
        ``xarray.open_zarr(path)``, ``zarr.open(path)["frames"]`` or
        ``dask.array.from_zarr(path, component="frames")``."""
        return self.db.zarr_path(self.name)

    @property
    def token(self) -> str:
        """The stored version's identity."""
        manifest = self._manifest or self.manifest()
        return f"stored-{self.name}-{manifest.get('version') or tokenize(manifest)}"

    def check(self) -> None:
        self.manifest()

    def partition(self, rows: np.ndarray, partition_size: int | None) -> list[np.ndarray]:
        chunk_rows = self.manifest()["chunk_rows"]
        size = max(chunk_rows, partition_size or chunk_rows)
        groups = rows // (chunk_rows * max(1, size // chunk_rows))
        cuts = np.flatnonzero(np.diff(groups)) + 1
        return np.split(rows, cuts)

    def read(self, rows: np.ndarray):
        return _read_stored(self.db, self.name, self._manifest or self.manifest(), 0, rows).elements

    def shared(self):
        return self._manifest or self.manifest()

    def read_task(self, stream: int, rows: np.ndarray, shared, out=None, after=None) -> tuple:
        return (_read_stored, self.db, self.name, shared, stream, rows)

    @property
    def frame_shape(self) -> tuple | None:
        frame = (self._manifest or self.manifest()).get("frame") or {}
        return tuple(frame["shape"]) if frame.get("shape") else None

    @property
    def frame_bytes(self) -> int | None:
        shape = self.frame_shape
        return None if shape is None else int(np.prod(shape))

    def save_mp4(self, path: str, fps: float | None = None) -> str:
        """Encode a stored frame stream to an H.264 mp4 at ``path`` (``.mp4`` added when it has
        no extension); returns the path written."""
        from ..video import encode_mp4

        path = mp4_path(path)
        if self.type_name != "FrameType":
            raise ScannerTypeError(f"save_mp4 needs a frame stream; {self.name!r} holds {self.type_name}")
        encode_mp4((f for f in self.load() if f is not None), path, fps=fps or self.fps)
        return path

    @property
    def fps(self) -> float:
        return float((self._manifest or self.manifest()).get("fps") or 24.0)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"


class NamedVideoStream(NamedStream):
    """A video: a file given by ``path`` (indexed lazily, cached), or a stored frame stream.

    With ``path`` it reads the user's file (never written or deleted: ``delete()`` forgets only
    the library's index). Without, it names stored frames (an ``sc.io.Output`` target).

    Parameters (with ``path``)
    --------------------------
    stream_index : int
        Which video track of the file, counting its video tracks from 0.
    rotate : bool
        Frames come out as a player shows them (the display matrix: rotation, mirroring);
        ``False`` keeps the coded orientation. ``metadata["rotation"]`` says which.
    resize : bool
        Where the video changes resolution, scale every frame to the first frame's size;
        by default frames keep their own sizes (``compute()`` then gives a list).
    damaged : {"raise", "null"}
        A frame that cannot be decoded (corrupt data, predicted from a corrupt frame, a cut-off
        tail) raises a ``VideoError`` naming the file and row (``"raise"``), or is a null
        element, ``None`` (``"null"``), which ops pass on as null. The same rows every time
        and on every path; :meth:`damaged_rows` lists them.

    Examples
    --------
    >>> video = sp.NamedVideoStream(sc, "movie", path="movie.mp4")     # doctest: +SKIP
    >>> len(video), video.fps, video.metadata["rotation"]             # doctest: +SKIP
    (1800, 30.0, 90)
    """

    def __init__(self, sc, name: str, path: str | os.PathLike | None = None, *,
                 stream_index: int = 0, rotate: bool = True, resize: bool = False,
                 damaged: str = "raise"):
        super().__init__(sc, name)
        from ..fsio import location

        self.path = None if path is None else location(path)  # a URL is kept as given
        self._file = None if path is None else VideoFileSource(
            self.name, self.path, sc.index_cache_dir, stream_index, rotate, resize,
            storage_options=sc.storage_options, damaged=damaged)

    @property
    def type_name(self) -> str:
        return "FrameType" if self._file is not None else super().type_name

    @property
    def index(self):
        """The video file's index (frame timestamps and keyframes)."""
        return self._file.index

    @property
    def metadata(self) -> dict:
        """The video file's metadata: size, ``rotation``, ``hflip``, fps, frames, codec, ...
        (``damaged``: the demuxer found damaged packets or a damaged tail)."""
        return self._file.metadata

    def damaged_rows(self) -> list[int]:
        """The rows of the video file that cannot be decoded, sorted: those that raise, or
        are null with ``damaged="null"``. Decodes the whole file here (once per version of
        it), at about the cost of reading it."""
        return self._file.damaged_rows()

    def exists(self) -> bool:
        if self._file is None:
            return super().exists()
        from ..fsio import file_stat, is_url

        if not is_url(self.path):
            return os.path.exists(self.path)
        try:
            file_stat(self.path, self._client.storage_options)
        except FileNotFoundError:
            return False
        return True

    def __len__(self) -> int:
        return len(self._file) if self._file is not None else super().__len__()

    def load(self, rows=None):
        if self._file is None:
            return super().load(rows)
        wanted = np.arange(len(self)) if rows is None else np.asarray(list(rows), dtype=np.int64)
        if rows is not None or not len(wanted):
            return iter(self._file.read(wanted)) if len(wanted) else iter(())
        return (f for start in range(0, len(wanted), 64)  # bounded memory: a piece at a time
                for f in self._file.read(wanted[start:start + 64]))

    def delete(self, sc=None) -> None:
        if self._file is None:
            return super().delete()
        self._file.forget()

    def fixed(self) -> NamedStream:
        return self if self._file is not None else super().fixed()

    @property
    def token(self) -> str:
        return self._file.token if self._file is not None else super().token

    def check_call(self, remote: bool) -> tuple | None:
        return self._file.check_call(remote) if self._file is not None else None

    def checked(self, result) -> None:
        self._file.checked(result)

    def check(self) -> None:
        if self._file is None:
            super().check()
        else:
            self._file.check()

    def partition(self, rows, partition_size):
        if self._file is None:
            return super().partition(rows, partition_size)
        return self._file.partition(rows, partition_size)

    def read(self, rows):
        return self._file.read(rows) if self._file is not None else super().read(rows)

    @property
    def frame_shape(self) -> tuple | None:
        return self._file.frame_shape if self._file is not None else super().frame_shape

    @property
    def frame_bytes(self) -> int | None:
        return self._file.frame_bytes if self._file is not None else super().frame_bytes

    def shared(self):
        return self._file.shared() if self._file is not None else super().shared()

    def read_task(self, stream: int, rows: np.ndarray, shared, out=None, after=None) -> tuple:
        if self._file is None:
            return super().read_task(stream, rows, shared)
        return self._file.read_task(stream, rows, shared, out, after)

    def follows(self, previous: np.ndarray, rows: np.ndarray) -> bool:
        """Whether partition `rows` continues the GOP `previous` ends in (video files only)."""
        return self._file is not None and self._file.follows(previous, rows)

    @property
    def fps(self) -> float:
        return self._file.fps if self._file is not None else super().fps

    def save_mp4(self, path: str, fps: float | None = None) -> str:
        if self._file is None:
            return super().save_mp4(path, fps)
        from ..video import encode_mp4

        path = mp4_path(path)
        encode_mp4((f for f in self.load() if f is not None), path, fps=fps or self.fps)
        return path

    def __repr__(self) -> str:
        where = f", path={self.path!r}" if self.path else ""
        return f"NamedVideoStream({self.name!r}{where})"
