"""The PyAV primitives the other modules share: opening a file, FFmpeg's errors, pixel conversion.

Opening a container is one function, :func:`open_container`, so that reading other kinds of
locations (an fsspec file object) is a change in one place.
"""

from __future__ import annotations

from typing import Any

import av
import numpy as np
from av.video.reformatter import VideoReformatter

from ..errors import VideoError, VideoNotFoundError
from ..fsio import is_url, open_binary

#: Exceptions PyAV raises for bad input (FFmpegError derives from OSError / ValueError subclasses).
AV_ERRORS: tuple[type[BaseException], ...] = (av.FFmpegError, OSError, ValueError, EOFError)

#: PyAV 18 decodes container metadata strictly unless told otherwise; from 19 on it never fails
#: on metadata (undecodable bytes are escaped) and takes no such option.
_OPEN_OPTIONS: dict[str, str] = (
    {"metadata_errors": "ignore"} if int(av.__version__.split(".")[0]) < 19 else {}
)


def describe(e: BaseException) -> str:
    """A short message for an FFmpeg / OS exception."""
    msg = getattr(e, "strerror", None) or str(e) or type(e).__name__
    return f"{type(e).__name__}: {msg}" if type(e).__name__ not in msg else msg


def open_container(path: str, storage_options: dict | None = None) -> Any:
    """Open ``path`` for reading with PyAV; a failure is a :class:`VideoError` naming it.

    A URL (``s3://...``) is read through an fsspec file object opened with
    ``storage_options``; PyAV keeps it, and it is closed when the container lets go of it.
    """
    try:
        source = open_binary(path, storage_options) if is_url(path) else path
    except FileNotFoundError:
        raise VideoNotFoundError(f"video file not found: {path!r}") from None
    try:
        return av.open(source, mode="r", **_OPEN_OPTIONS)
    except AV_ERRORS as e:
        raise VideoError(f"cannot open {path!r} as a video: {describe(e)}") from None


def video_track(container: Any, path: str, track: int = 0) -> Any:
    """The ``track``-th video stream of ``container`` (attached cover pictures not counted)."""
    attached = av.stream.Disposition.attached_pic
    tracks = [s for s in container.streams.video
              if not (int(s.disposition) & attached) and s.codec_context is not None]
    if not tracks:
        raise VideoError(f"{path!r} has no video track (no video stream with frames was found)")
    if not 0 <= track < len(tracks):
        raise VideoError(f"{path!r} has {len(tracks)} video track(s); there is no video track "
                         f"{track} (stream_index counts video tracks from 0)")
    return tracks[track]


class Converter:
    """Pixel-format conversion with one long-lived FFmpeg scaler (``SwsContext``).

    ``frame.to_ndarray(format="rgb24")`` makes a new scaler for every frame (PyAV keeps one per
    ``VideoFrame``), and setting one up costs more than converting a 720p frame with it: reusing
    one makes the conversion about 3x faster. It runs single-threaded (``threads=1``): frames
    are converted in parallel one partition per core, and FFmpeg's automatic threads would
    oversubscribe the cores. Not thread-safe: one per reader or encoder.
    """

    def __init__(self, threads: int = 1) -> None:
        self.reformatter = VideoReformatter()
        self.options: dict[str, Any] = {"threads": threads}

    def __call__(self, frame: Any, **kwargs: Any) -> Any:
        try:
            return self.reformatter.reformat(frame, **kwargs, **self.options)
        except TypeError:
            if not self.options:
                raise
            self.options = {}  # an older PyAV without the ``threads`` argument
            return self.reformatter.reformat(frame, **kwargs)

    def rgb(self, frame: Any, size: tuple[int, int] | None = None) -> np.ndarray:
        """The frame as ``(H, W, 3)`` RGB, scaled to ``size`` ``(width, height)`` if given."""
        kwargs: dict[str, Any] = {"format": "rgb24"}
        if size is not None and (frame.width, frame.height) != size:
            kwargs.update(width=size[0], height=size[1])
        return self(frame, **kwargs).to_ndarray()
