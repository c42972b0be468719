"""``VideoFileSource``: a video file read a partition of groups of pictures at a time."""

from __future__ import annotations

import contextlib
import os

import numpy as np

from ..errors import VideoError
from ..types import Batch
from .base import Source, frame_partition_rows

__all__ = ["VideoFileSource"]


def _read_video(index, name: str, stream: int, rows: np.ndarray, out=None) -> Batch:
    """Decode a partition's frames (into ``out``, a slice of the result, when given)."""
    from ..video import read_frames

    try:
        frames = read_frames(index, rows, out=out)
    except VideoError as exc:  # name the stream as well as the file and row
        raise type(exc)(f"NamedVideoStream {name!r} (stream {stream}): {exc}") from None
    return Batch(stream, rows, frames, None, "FrameType")


class VideoFileSource(Source):
    """A video file, indexed by demuxing (cached), read a partition of GOPs at a time.

    Its token is the file's path, size and modification time; its index is :meth:`shared`, one
    graph key every read task depends on (a task never carries the index itself).
    """

    type_name = "FrameType"

    def __init__(self, name: str, path: str, cache_dir: str | None):
        self.name = name
        self.path = os.path.abspath(os.fspath(path))
        self.cache_dir = cache_dir
        self.label = f"NamedVideoStream {name!r}"
        self._index = None

    @property
    def token(self) -> str:
        try:
            stat = os.stat(self.path)
        except OSError:
            return f"video-{self.path}-missing"
        return f"video-{self.path}-{stat.st_size}-{stat.st_mtime_ns}"

    @property
    def index(self):
        """The video's index (demuxed once, then cached beside the database)."""
        if self._index is None:
            from ..video import index_video

            try:
                self._index = index_video(self.path, self.cache_dir)
            except VideoError as exc:  # name the stream as well as the file
                raise type(exc)(f"NamedVideoStream {self.name!r}: {exc}") from None
        return self._index

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

    def read(self, rows: np.ndarray) -> np.ndarray:
        from ..video import read_frames

        return read_frames(self.index, rows)

    @property
    def frame_shape(self) -> tuple[int, int, int]:
        """``(H, W, 3)`` of every frame."""
        return (self.index.height, self.index.width, 3)

    def shared(self):
        return self.index

    def read_task(self, stream: int, rows: np.ndarray, shared, out=None) -> tuple:
        return (_read_video, shared, self.name, stream, rows, out)

    def forget(self) -> None:
        """Drop the cached index (never the user's file)."""
        from ..video import close_readers, index_cache_path

        close_readers(self.path)
        if self.cache_dir:
            with contextlib.suppress(FileNotFoundError):
                os.remove(index_cache_path(self.path, self.cache_dir))
        self._index = None
