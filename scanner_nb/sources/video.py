"""``VideoFileSource``: a video file read a partition of groups of pictures at a time."""

from __future__ import annotations

import contextlib
import os
import uuid

import numpy as np

from ..errors import VideoError
from ..plan import FRAME_PARTITION_BYTES
from ..types import Batch

__all__ = ["VideoFileSource"]


def _read_video(index, name: str, stream: int, rows: np.ndarray, out=None) -> Batch:
    """Decode a partition's frames (into ``out``, a slice of the result, when given)."""
    from ..video import read_frames

    try:
        frames = read_frames(index, rows, out=out)
    except VideoError as exc:  # name the stream as well as the file and row
        raise type(exc)(f"NamedVideoStream {name!r} (stream {stream}): {exc}") from None
    return Batch(stream, rows, frames, None, "FrameType")


class VideoFileSource:
    """A video file, indexed by demuxing (cached), read a partition of GOPs at a time."""

    type_name = "FrameType"

    def __init__(self, name: str, path: str, cache_dir: str | None,
                 storage_options: dict | None = None):
        from ..fsio import location

        self.name = name
        self.path = location(path)  # a URL (s3://...) is read on the workers with these options
        self.storage_options = storage_options
        self.cache_dir = cache_dir
        self.label = f"NamedVideoStream {name!r}"
        self.token = uuid.uuid4().hex
        self._index = None

    @property
    def index(self):
        """The video's index (demuxed once, then cached beside the database)."""
        if self._index is None:
            from ..video import index_video

            try:
                self._index = index_video(self.path, self.cache_dir, self.storage_options)
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
            frame_bytes = self.index.width * self.index.height * 3
            partition_size = max(1, FRAME_PARTITION_BYTES // max(1, frame_bytes))
        return plan_partitions(self.index, rows, partition_size)

    def read(self, rows: np.ndarray) -> np.ndarray:
        from ..video import read_frames

        return read_frames(self.index, rows)

    @property
    def frame_shape(self) -> tuple[int, int, int]:
        """``(H, W, 3)`` of every frame."""
        return (self.index.height, self.index.width, 3)

    def task(self, stream: int, rows: np.ndarray, out: np.ndarray | None = None) -> tuple:
        return (_read_video, self.index, self.name, stream, rows, out)

    def forget(self) -> None:
        """Drop the cached index (never the user's file)."""
        from ..video import close_readers, index_cache_path

        close_readers(self.path)
        if self.cache_dir:
            with contextlib.suppress(FileNotFoundError):
                os.remove(index_cache_path(self.path, self.cache_dir))
        self._index = None
