"""Input streams: ``MemoryStream`` (and, from the video and storage adapters, stored streams).

Each is a :class:`~scanner_nb.plan.Source`: it knows its length and element type, splits the
rows a graph needs into partitions, and reads a partition where the task runs.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from .errors import ScannerTypeError
from .plan import ListSource
from .types import lookup_type, stack_elements, type_of

__all__ = ["MemoryStream", "resolve_type"]


def resolve_type(type_: Any) -> str:
    """The registered name of an element type given as a class, ``typing.Any`` or a name."""
    stream_type = type_of(type_)
    if stream_type is None:
        raise ScannerTypeError(
            f"{type_!r} is not a stream element type; use sp.FrameType, bytes, typing.Any or a "
            f"type registered with sp.types.register_type")
    return lookup_type(stream_type.name).name


class MemoryStream(ListSource):
    """A stream of in-memory elements, for ``sc.io.Input([...])``.

    Parameters
    ----------
    elements : sequence
        The elements (a list, or an ``(n, H, W, C)`` array of frames).
    type : type, optional
        The element type: ``typing.Any`` (default), ``bytes``, ``sp.FrameType`` or a registered
        type. An ``(n, H, W, C)`` ``uint8`` array defaults to ``sp.FrameType``.

    Examples
    --------
    >>> MemoryStream([b"a", b"b"], type=bytes).read(np.array([1]))
    [b'b']
    """

    def __init__(self, elements: Sequence, type: Any = None, name: str | None = None):
        if type is None:
            is_frames = isinstance(elements, np.ndarray) and elements.ndim == 4
            type = "FrameType" if is_frames else Any
        type_name = resolve_type(type)
        if not hasattr(elements, "__getitem__") or not hasattr(elements, "__len__"):
            elements = list(elements)
        if type_name == "bytes" and len(elements) and not all(
                isinstance(elements[i], (bytes, bytearray)) for i in (0, -1)):
            raise ScannerTypeError("MemoryStream(type=bytes) needs bytes elements")
        if type_name == "FrameType" and not isinstance(elements, np.ndarray):
            elements = stack_elements(list(elements), True)
        super().__init__(elements, type_name, label=name or f"MemoryStream[{len(elements)}]")
        self.name = name

    def read(self, rows):
        got = super().read(rows)
        if self.type_name == "FrameType" and not isinstance(got, np.ndarray):
            return stack_elements(got, True)
        return got


def _read_video(index, stream: int, rows: np.ndarray) -> Batch:
    from .video import read_frames

    return Batch(stream, rows, read_frames(index, rows), None, "FrameType")


class VideoFileSource:
    """A video file, indexed by demuxing (cached), read a partition of GOPs at a time."""

    type_name = "FrameType"

    def __init__(self, name: str, path: str, cache_dir: str | None):
        self.name = name
        self.path = os.path.abspath(os.fspath(path))
        self.cache_dir = cache_dir
        self.label = f"NamedVideoStream {name!r}"
        self.token = uuid.uuid4().hex
        self._index = None

    @property
    def index(self):
        """The video's index (demuxed once, then cached beside the database)."""
        if self._index is None:
            from .video import index_video

            self._index = index_video(self.path, self.cache_dir)
        return self._index

    @property
    def fps(self) -> float:
        return self.index.fps

    def __len__(self) -> int:
        return len(self.index)

    def partition(self, rows: np.ndarray, partition_size: int | None) -> list[np.ndarray]:
        from .video import plan_partitions

        if partition_size is None:
            frame_bytes = self.index.width * self.index.height * 3
            partition_size = max(1, FRAME_PARTITION_BYTES // max(1, frame_bytes))
        return plan_partitions(self.index, rows, partition_size)

    def read(self, rows: np.ndarray) -> np.ndarray:
        from .video import read_frames

        return read_frames(self.index, rows)

    def task(self, stream: int, rows: np.ndarray) -> tuple:
        return (_read_video, self.index, stream, rows)

    def forget(self) -> None:
        """Drop the cached index (never the user's file)."""
        from .video import close_readers, index_cache_path

        close_readers(self.path)
        if self.cache_dir:
            with contextlib.suppress(FileNotFoundError):
                os.remove(index_cache_path(self.path, self.cache_dir))
        self._index = None
