"""``VideoFileSource``: a video file read a partition of groups of pictures at a time."""

from __future__ import annotations

import contextlib
import os

import numpy as np

from ..errors import ScannerValueError, VideoError
from ..types import Batch
from .base import Source, frame_partition_rows

__all__ = ["VideoFileSource"]


def _index(name: str, path: str, cache_dir: str | None, track: int,
           storage_options: dict | None, light: bool):
    """Index one video (on a worker, or a local thread): its full index, or its summary."""
    from ..video import index_video

    try:
        index = index_video(path, cache_dir, track, storage_options=storage_options)
    except VideoError as exc:  # name the stream as well as the file
        raise type(exc)(f"NamedVideoStream {name!r}: {exc}") from None
    return index.summary() if light else index


def _read_video(index, name: str, stream: int, rows: np.ndarray, out=None, options=None,
                after=None) -> Batch:
    """Decode a partition's frames (into ``out``, a slice of the result, when given).

    ``after``: tasks this piece waits for (the consumers of the previous piece of its GOP; see
    ``graph._chain_pieces``), a dependency only: it orders the reads.
    """
    from ..video import read_frames

    try:
        frames = read_frames(index, rows, out=out, **(options or {}))
    except VideoError as exc:  # name the stream as well as the file and row
        raise type(exc)(f"NamedVideoStream {name!r} (stream {stream}): {exc}") from None
    nulls = None  # rows that cannot be decoded, with damaged="null"
    if isinstance(frames, list) and any(f is None for f in frames):
        nulls = np.array([f is None for f in frames])
    return Batch(stream, rows, frames, nulls, "FrameType")


class VideoFileSource(Source):
    """A video file, indexed by demuxing (cached), read a partition at a time.

    Its token is the file's path, track, options, size and modification time; its index is
    :meth:`shared`, one graph key every read task depends on (no task carries the index).

    ``track`` picks the file's video track (counting video tracks from 0); ``rotate`` turns
    frames as the file's display matrix says; ``resize`` scales every frame to the first
    frame's size where the video changes resolution (default: frames keep their own size);
    ``damaged`` is what a row that cannot be decoded gives: a ``VideoError`` (``"raise"``) or a
    null element (``"null"``).
    """

    type_name = "FrameType"

    def __init__(self, name: str, path: str, cache_dir: str | None, track: int = 0,
                 rotate: bool = True, resize: bool = False, storage_options: dict | None = None,
                 damaged: str = "raise"):
        from ..fsio import location
        from ..video import DAMAGED

        if damaged not in DAMAGED:
            raise ScannerValueError(f"NamedVideoStream {name!r}: damaged must be 'raise' or "
                                    f"'null', got {damaged!r}")
        self.name = name
        self.path = location(path)  # a URL (s3://...) is read on the workers with these options
        self.storage_options = storage_options
        self.cache_dir = cache_dir
        self.track = int(track)
        self.options = {"rotate": bool(rotate), "resize": bool(resize), "damaged": damaged}
        self.label = f"NamedVideoStream {name!r}"
        self._index = None
        self._damaged: tuple | None = None  # (index key, damaged rows)

    @property
    def token(self) -> str:
        try:
            stat = os.stat(self.path)
        except OSError:
            return f"video-{self.path}-missing"
        return (f"video-{self.path}-{self.track}-{sorted(self.options.items())}-{stat.st_size}-"
                f"{stat.st_mtime_ns}")

    @property
    def index(self):
        """The video's index (demuxed once, then cached in the database's ``.video-index``);
        a light one (:meth:`~scanner_nb.video.VideoIndex.summary`) where a cluster's worker
        indexed the video."""
        if self._index is None:
            self._index = _index(*self._index_args(), light=False)
        return self._index

    def _index_args(self) -> tuple:
        return self.name, self.path, self.cache_dir, self.track, self.storage_options

    def check_call(self, remote: bool) -> tuple | None:
        """Index the video where the call runs (a worker keeps the full index, the client a
        light one); nothing to do once indexed."""
        return None if self._index is not None else (_index, *self._index_args(), remote)

    def checked(self, result) -> None:
        self._index = result

    @property
    def fps(self) -> float:
        return self.index.fps

    def __len__(self) -> int:
        return len(self.index)

    def partition(self, rows: np.ndarray, partition_size: int | None) -> list[np.ndarray]:
        from ..video import plan_partitions

        if partition_size is None:
            partition_size = frame_partition_rows(self.frame_bytes)
        return plan_partitions(self.index, rows, partition_size)

    @property
    def frame_bytes(self) -> int:
        return self.index.width * self.index.height * 3

    def check(self) -> None:
        self.index  # noqa: B018 - index now: a bad file fails at the call

    def read(self, rows: np.ndarray) -> np.ndarray | list:
        return _read_video(self.index, self.name, 0, rows, None, self.options).elements

    def damaged_rows(self) -> list[int]:
        """The rows that cannot be decoded (see :func:`~scanner_nb.video.damaged_rows`): found
        by decoding the whole file here, once per version of the file."""
        from ..video import damaged_rows

        index = self.index.full()
        if self._damaged is None or self._damaged[0] != index._key:
            try:
                rows = damaged_rows(index).tolist()
            except VideoError as exc:
                raise type(exc)(f"{self.label}: {exc}") from None
            self._damaged = (index._key, rows)
        return list(self._damaged[1])

    @property
    def metadata(self) -> dict:
        """The video's metadata (size, display rotation, frame rate, ...), from its index."""
        return self.index.metadata

    @property
    def frame_shape(self) -> tuple[int, int, int]:
        """``(H, W, 3)`` of the first frame as it comes out (rotated unless ``rotate=False``)."""
        index = self.index
        width, height = index.display_size if self.options["rotate"] else (index.width,
                                                                            index.height)
        return (height, width, 3)

    def follows(self, previous: np.ndarray, rows: np.ndarray) -> bool:
        """Whether partition `rows` continues the GOP partition `previous` ends in.

        Such pieces of a long GOP are read in order, each continuing the decoder the previous
        one left there (see :func:`~scanner_nb.video.plan_partitions`).
        """
        return self.index.keyframe_at_or_before(int(rows[0])) <= int(previous[-1])

    def shared(self):
        return self.index

    def read_task(self, stream: int, rows: np.ndarray, shared, out: np.ndarray | None = None,
                  after: list | None = None) -> tuple:
        """The read task; ``after``: keys of tasks to run first (see :meth:`follows`)."""
        return (_read_video, shared, self.name, stream, rows, out, self.options, after)

    def forget(self) -> None:
        """Drop the cached index (never the user's file)."""
        from ..video import close_readers, index_cache_path

        close_readers(self.path)
        if self.cache_dir:
            with contextlib.suppress(FileNotFoundError):
                os.remove(index_cache_path(self.path, self.cache_dir, self.track))
        self._index = None
