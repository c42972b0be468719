"""Input streams, one module each: ``MemoryStream`` (memory), a video file (video), stored
streams (stored) and files (files: ``FilesStream``, ``ImagesStream``). Each is a :class:`~scanner_nb.plan.Source`: it knows its length and element
type, splits the rows a graph needs into partitions, and reads a partition where the task runs.
"""

from .files import FilesStream, ImagesStream
from .memory import MemoryStream, resolve_type
from .stored import NamedStream, NamedVideoStream
from .video import VideoFileSource

__all__ = ["FilesStream", "ImagesStream", "MemoryStream", "NamedStream", "NamedVideoStream", "VideoFileSource", "resolve_type"]
