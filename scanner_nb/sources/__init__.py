"""Input streams, one module each: ``MemoryStream`` (memory), a video file (video), stored
streams (stored), persisted partitions (persisted) and files (files: ``FilesStream``,
``ImagesStream``). Each implements the written :class:`~scanner_nb.sources.base.Source`
protocol: it knows its length, element type and identity, splits the rows a graph needs into
partitions, and gives the task that reads one.
"""

from .base import Source
from .files import FilesStream, ImagesStream
from .memory import MemoryStream, resolve_type
from .stored import NamedStream, NamedVideoStream
from .video import VideoFileSource

__all__ = ["Source", "FilesStream", "ImagesStream", "MemoryStream", "NamedStream",
           "NamedVideoStream", "VideoFileSource", "resolve_type"]
