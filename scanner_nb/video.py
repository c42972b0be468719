"""Video I/O: index a file by demuxing, decode rows, encode H.264 mp4 (PyAV / FFmpeg).

A leaf adapter: numpy, PyAV and the standard library only. FFmpeg's exceptions never leave this
module; they become :class:`~scanner_nb.errors.VideoError` (``from None``) naming the file and,
while decoding, the row.

Costs, for a file of ``n`` frames in groups of pictures (GOPs) of ``g`` frames:

- :func:`index_video` reads every packet once (no decoding): O(n) packet reads, I/O bound; the
  result is cached in a small ``.npz`` file, so a second open costs one ``stat`` and one read.
- :func:`read_frames` seeks to the keyframe at or before the first row it needs and decodes
  forward, so reaching a row costs O(g) decoded frames; a reader that already stands before the
  row in the same GOP just decodes forward (reading row ``r + 1`` after row ``r`` decodes one
  frame). Sparse rows cost one GOP prefix each.
- :func:`plan_partitions` groups rows so that no GOP is decoded by two partitions.

Examples
--------
>>> import os, tempfile
>>> from scanner_nb.samples import make_video, frame_index
>>> path = make_video(os.path.join(tempfile.mkdtemp(), "clip.mp4"), n_frames=48, gop=12)
>>> index = index_video(path)
>>> len(index), index.keyframes.tolist()
(48, [0, 12, 24, 36])
>>> frames = read_frames(index, np.array([0, 13, 47]))
>>> frames.shape, [frame_index(f) for f in frames]
((3, 96, 160, 3), [0, 13, 47])
>>> close_readers(path)
"""

from __future__ import annotations

import collections
import hashlib
import io
import json
import os
import tempfile
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

import av
import numpy as np
from av.video.reformatter import VideoReformatter

from scanner_nb.errors import (
    RowIndexError,
    ScannerTypeError,
    ScannerValueError,
    VideoError,
    VideoNotFoundError,
)
from scanner_nb.fsio import file_stat, is_url, location, open_binary
from scanner_nb.log import get_logger

__all__ = [
    "VideoIndex",
    "index_video",
    "read_frames",
    "decode_stats",
    "reset_decode_stats",
    "plan_partitions",
    "encode_mp4",
    "close_readers",
    "index_cache_path",
]

#: Exceptions PyAV raises for bad input (FFmpegError derives from OSError / ValueError subclasses).
_AV_ERRORS: tuple[type[BaseException], ...] = (av.FFmpegError, OSError, ValueError, EOFError)

_CACHE_VERSION = 1
_MAX_READERS_PER_FILE = max(4, os.cpu_count() or 1)
_MAX_FILES_WITH_IDLE_READERS = 16
_SEEK_RETRIES = 3
#: PyAV 18 decodes container metadata strictly unless told otherwise; from 19 on it never fails
#: on metadata (undecodable bytes are escaped) and takes no such option.
_OPEN_OPTIONS: dict[str, str] = (
    {"metadata_errors": "ignore"} if int(av.__version__.split(".")[0]) < 19 else {}
)
_log = get_logger("video")


# --------------------------------------------------------------------------------------------
# The index
# --------------------------------------------------------------------------------------------


def _frozen_int64(a: Any) -> np.ndarray:
    arr = np.array(a, dtype=np.int64, copy=True).reshape(-1)
    arr.setflags(write=False)
    return arr


@dataclass(frozen=True, eq=False)
class VideoIndex:
    """What :func:`index_video` learned from demuxing a video file.

    Rows are frames in display order, ``0 … len(index) - 1``, one per video packet; row ``r``
    is the frame whose presentation timestamp is ``pts[r]``.

    Attributes
    ----------
    path : str
        Absolute path of the file, or its fsspec URL (``s3://...``).
    width, height : int
        Frame size in pixels.
    fps : float
        Average frame rate, from the timestamps (the container's nominal rate where it agrees).
    pts : numpy.ndarray
        ``int64`` presentation timestamps of every frame, in display order, in `time_base` units.
    keyframes : numpy.ndarray
        ``int64`` sorted rows of the keyframes; the first is 0.
    time_base : fractions.Fraction
        Seconds per `pts` unit.
    codec : str
        FFmpeg's codec name, e.g. ``"h264"``.
    size, mtime_ns : int
        The file's size and modification time when it was indexed (0 if unknown).
    stream_index : int
        Which of the container's streams holds the video.
    storage_options : dict
        For a URL: the fsspec options it is opened with (travel with the index to workers).

    Examples
    --------
    >>> index = VideoIndex("/v.mp4", 64, 48, 24.0, np.arange(30), np.array([0, 10, 20]),
    ...                    Fraction(1, 24), "h264")
    >>> len(index), index.keyframe_at_or_before(15)
    (30, 10)
    """

    path: str
    width: int
    height: int
    fps: float
    pts: np.ndarray
    keyframes: np.ndarray
    time_base: Fraction
    codec: str
    size: int = 0
    mtime_ns: int = 0
    stream_index: int = 0
    storage_options: dict = field(default_factory=dict, repr=False, compare=False)
    _key: tuple = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        pts, keyframes = _frozen_int64(self.pts), _frozen_int64(self.keyframes)
        if len(keyframes) == 0 or keyframes[0] != 0 or np.any(np.diff(keyframes) <= 0):
            raise ScannerValueError(
                f"keyframes must be sorted, unique and start at row 0, got {keyframes[:8].tolist()}"
            )
        if len(pts) and keyframes[-1] >= len(pts):
            raise ScannerValueError(f"keyframe row {keyframes[-1]} outside {len(pts)} frames")
        object.__setattr__(self, "pts", pts)
        object.__setattr__(self, "keyframes", keyframes)
        object.__setattr__(self, "time_base", Fraction(self.time_base))
        object.__setattr__(
            self, "_key", (self.path, int(self.size), int(self.mtime_ns), int(self.stream_index))
        )

    def __len__(self) -> int:
        return len(self.pts)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, VideoIndex):
            return NotImplemented
        return (
            self._key == other._key
            and (self.width, self.height, self.fps, self.time_base, self.codec)
            == (other.width, other.height, other.fps, other.time_base, other.codec)
            and np.array_equal(self.pts, other.pts)
            and np.array_equal(self.keyframes, other.keyframes)
        )

    def __hash__(self) -> int:
        return hash((self._key, len(self)))

    def __repr__(self) -> str:
        return (
            f"VideoIndex({self.path!r}, {self.width}x{self.height}, {len(self)} frames, "
            f"{self.fps:.4g} fps, {len(self.keyframes)} keyframes, {self.codec})"
        )

    def __dask_tokenize__(self) -> tuple:
        return ("VideoIndex", self._key, len(self), int(self.pts[-1]) if len(self) else 0)

    @property
    def duration(self) -> float:
        """Seconds from the first frame's start to the last frame's end (last frame: 1/fps)."""
        if not len(self):
            return 0.0
        span = float((int(self.pts[-1]) - int(self.pts[0])) * self.time_base)
        return span + (1.0 / self.fps if self.fps > 0 else 0.0)

    def check_row(self, row: int) -> int:
        """Return `row` as an ``int``, or raise :class:`RowIndexError` if it is outside."""
        r = int(row)
        if not 0 <= r < len(self):
            raise RowIndexError(
                f"row {r} is outside video {self.path!r}, which has {len(self)} frames "
                f"(rows 0..{len(self) - 1})"
            )
        return r

    def keyframe_at_or_before(self, row: int) -> int:
        """The row of the keyframe that decoding `row` must start from.

        Examples
        --------
        >>> index = VideoIndex("/v.mp4", 8, 8, 24.0, np.arange(30), [0, 10, 20],
        ...                    Fraction(1, 24), "h264")
        >>> [index.keyframe_at_or_before(r) for r in (0, 9, 10, 29)]
        [0, 0, 10, 20]
        """
        r = self.check_row(row)
        return int(self.keyframes[np.searchsorted(self.keyframes, r, side="right") - 1])


def _stat(path: str, storage_options: dict | None = None) -> os.stat_result:
    if is_url(path):
        try:
            return file_stat(path, storage_options)  # type: ignore[return-value]
        except FileNotFoundError:
            raise VideoNotFoundError(f"video file not found: {path!r}") from None
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise VideoNotFoundError(f"video file not found: {path!r}") from None
    except OSError as e:
        raise VideoError(f"cannot read video file {path!r}: {e.strerror or e}") from None
    if not os.path.isfile(path):
        raise VideoError(f"not a video file (not a regular file): {path!r}")
    return st


def index_video(path: str | os.PathLike, cache_dir: str | os.PathLike | None = None,
                storage_options: dict | None = None) -> VideoIndex:
    """Index a video file by demuxing it: frame timestamps and keyframes, no decoding.

    The frame count and the rows come from the packets, not from container metadata, so they
    are right for variable-frame-rate files and for files whose header lies. Costs one read of
    the file (I/O bound, no decoding); with `cache_dir` the index is stored there as a small
    file keyed by the absolute path and checked against size and ``mtime_ns``, so opening an
    unchanged file again costs a ``stat`` and one small read.

    Parameters
    ----------
    path : str or os.PathLike
        The video file: a path, or an fsspec URL (``s3://bucket/movie.mp4``).
    cache_dir : str or os.PathLike, optional
        Folder for cached indexes (created if needed). ``None``: no cache.
    storage_options : dict, optional
        For a URL: fsspec's options (endpoint, credentials), kept in the index.

    Returns
    -------
    VideoIndex

    Raises
    ------
    VideoNotFoundError
        If `path` does not exist.
    VideoError
        If it is not a video, has no video track, cannot be read or has no frames.

    Examples
    --------
    >>> import os, tempfile
    >>> from scanner_nb.samples import make_video
    >>> path = make_video(os.path.join(tempfile.mkdtemp(), "a.mp4"), n_frames=30, gop=10)
    >>> index = index_video(path)
    >>> len(index), index.width, index.height, index.fps, index.keyframes.tolist()
    (30, 160, 96, 24.0, [0, 10, 20])
    """
    abspath = location(path)
    options = dict(storage_options or {}) if is_url(abspath) else {}
    st = _stat(abspath, options)
    cache_file = None
    if cache_dir is not None:
        cache_file = index_cache_path(abspath, cache_dir)
        cached = _load_cached_index(cache_file, abspath, st, options)
        if cached is not None:
            _log.debug("index of %r read from the cache %r", abspath, cache_file)
            return cached
    index = _demux_index(abspath, st, options)
    if cache_file is not None:
        _save_cached_index(cache_file, index)
        _log.debug("indexed %r (%d frames), cached in %r", abspath, len(index), cache_file)
    return index


def index_cache_path(path: str | os.PathLike, cache_dir: str | os.PathLike) -> str:
    """Where :func:`index_video` caches the index of ``path`` in ``cache_dir``."""
    abspath = location(path)
    digest = hashlib.sha1(abspath.encode("utf-8", "surrogatepass")).hexdigest()
    return os.path.join(os.fspath(cache_dir), digest + ".vidx.npz")


def _load_cached_index(cache_file: str, abspath: str, st: os.stat_result,
                       storage_options: dict | None = None) -> VideoIndex | None:
    try:
        with np.load(cache_file, allow_pickle=False) as z:
            meta = json.loads(str(z["meta"]))
            pts, keyframes = z["pts"], z["keyframes"]
    except Exception:  # absent, partial (BadZipFile), foreign: index the video again
        return None
    if (
        meta.get("version") != _CACHE_VERSION
        or meta.get("path") != abspath
        or meta.get("size") != st.st_size
        or meta.get("mtime_ns") != st.st_mtime_ns
    ):
        return None
    try:
        return VideoIndex(
            path=abspath,
            width=int(meta["width"]),
            height=int(meta["height"]),
            fps=float(meta["fps"]),
            pts=pts,
            keyframes=keyframes,
            time_base=Fraction(meta["time_base"]),
            codec=str(meta["codec"]),
            size=st.st_size,
            mtime_ns=st.st_mtime_ns,
            stream_index=int(meta["stream_index"]),
            storage_options=dict(storage_options or {}),
        )
    except (KeyError, ValueError, TypeError, ZeroDivisionError):
        return None


def _save_cached_index(cache_file: str, index: VideoIndex) -> None:
    meta = {
        "version": _CACHE_VERSION,
        "path": index.path,
        "size": index.size,
        "mtime_ns": index.mtime_ns,
        "width": index.width,
        "height": index.height,
        "fps": index.fps,
        "time_base": str(index.time_base),
        "codec": index.codec,
        "stream_index": index.stream_index,
    }
    folder = os.path.dirname(cache_file)
    tmp = None
    try:
        os.makedirs(folder, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".npz", dir=folder)
        with os.fdopen(fd, "wb") as f:
            np.savez_compressed(
                f, meta=np.array(json.dumps(meta)), pts=index.pts, keyframes=index.keyframes
            )
        os.replace(tmp, cache_file)  # atomic: readers see the old file or the new one
        tmp = None
    except OSError:
        pass  # a cache that cannot be written only costs time
    finally:
        if tmp is not None:
            try:
                os.unlink(tmp)
            except OSError:
                pass


def _open_container(path: str, storage_options: dict | None = None) -> Any:
    try:  # a URL's file object is closed when the container lets go of it (PyAV keeps it)
        source = open_binary(path, storage_options) if is_url(path) else path
    except FileNotFoundError:
        raise VideoNotFoundError(f"video file not found: {path!r}") from None
    try:
        return av.open(source, mode="r", **_OPEN_OPTIONS)
    except _AV_ERRORS as e:
        raise VideoError(f"cannot open {path!r} as a video: {_describe(e)}") from None


def _describe(e: BaseException) -> str:
    msg = getattr(e, "strerror", None) or str(e) or type(e).__name__
    return f"{type(e).__name__}: {msg}" if type(e).__name__ not in msg else msg


def _pick_video_stream(container: Any, path: str) -> Any:
    attached = av.stream.Disposition.attached_pic
    for stream in container.streams.video:
        if not (int(stream.disposition) & attached) and stream.codec_context is not None:
            return stream
    raise VideoError(f"{path!r} has no video track (no video stream with frames was found)")


def _demux_index(path: str, st: os.stat_result, storage_options: dict | None = None) -> VideoIndex:
    container = _open_container(path, storage_options)
    with container:
        stream = _pick_video_stream(container, path)
        for other in container.streams:
            if other.index != stream.index:
                other.discard = av.stream.Discard.all  # skip other tracks' data
        pts: list[int] = []
        keys: list[bool] = []
        discard: list[bool] = []
        corrupt: list[bool] = []
        try:
            for packet in container.demux(stream):
                if packet.size == 0:
                    continue  # the flush packet at the end
                t = packet.pts if packet.pts is not None else packet.dts
                if t is None:
                    raise VideoError(
                        f"{path!r}: video packets carry no timestamps; remux it into mp4 or mkv "
                        f"(e.g. `ffmpeg -i in -c copy out.mp4`)"
                    )
                pts.append(t)
                keys.append(packet.is_keyframe)
                discard.append(packet.is_discard)
                corrupt.append(packet.is_corrupt)
        except _AV_ERRORS as e:
            if not pts:
                raise VideoError(f"cannot read video packets of {path!r}: {_describe(e)}") from None
            # a damaged tail: index what could be read, as players do
        while corrupt and corrupt[-1]:  # a truncated file ends in a partial packet: not a frame
            pts.pop(), keys.pop(), discard.pop(), corrupt.pop()
        codec = stream.codec_context.name
        width, height = stream.codec_context.width, stream.codec_context.height
        time_base = stream.time_base
        nominal = stream.average_rate or stream.guessed_rate or stream.base_rate
        stream_index = stream.index
    if not width or not height:
        raise VideoError(f"{path!r}: the video track has no frame size (unsupported codec?)")
    if time_base is None:
        raise VideoError(f"{path!r}: the video track has no time base")
    pts_sorted, keyframes = _rows_from_packets(
        np.asarray(pts, dtype=np.int64),
        np.asarray(keys, dtype=bool),
        np.asarray(discard, dtype=bool),
        path,
    )
    return VideoIndex(
        path=path,
        width=int(width),
        height=int(height),
        fps=_average_fps(pts_sorted, Fraction(time_base), nominal),
        pts=pts_sorted,
        keyframes=keyframes,
        time_base=Fraction(time_base),
        codec=str(codec),
        size=st.st_size,
        mtime_ns=st.st_mtime_ns,
        stream_index=int(stream_index),
        storage_options=dict(storage_options or {}),
    )


def _rows_from_packets(
    pts: np.ndarray, keys: np.ndarray, discard: np.ndarray, path: str = "<video>"
) -> tuple[np.ndarray, np.ndarray]:
    """Rows (timestamps in display order) and keyframe rows from packets in decode order.

    Packets before the first keyframe cannot be decoded, nor can frames shown before it
    (leading frames of an open GOP); packets flagged *discard* (before an edit list's start)
    are decoded but never shown, so they are no rows, and a GOP whose keyframe is discarded
    starts at its first shown frame (seeking there lands on the keyframe before it).

    Examples
    --------
    >>> pts, kf = _rows_from_packets(np.array([0, 3, 1, 2, 4]), np.array([1, 0, 0, 0, 1], bool),
    ...                               np.zeros(5, bool))
    >>> pts.tolist(), kf.tolist()
    ([0, 1, 2, 3, 4], [0, 4])
    >>> pts, kf = _rows_from_packets(np.arange(-2, 6), np.array([1, 0, 0, 0, 1, 0, 0, 0], bool),
    ...                               np.arange(-2, 6) < 0)
    >>> pts.tolist(), kf.tolist()
    ([0, 1, 2, 3, 4, 5], [0, 2])
    """
    if not len(pts):
        raise VideoError(f"{path!r} has a video track with no frames")
    if not keys.any():
        raise VideoError(f"{path!r}: the video track has no keyframe, so no frame can be decoded")
    first = int(np.argmax(keys))
    pts, keys, discard = pts[first:], keys[first:], discard[first:]
    keep = pts >= pts[0]
    pts, keys, discard = pts[keep], keys[keep], discard[keep]
    order = np.argsort(pts, kind="stable")
    pts, keys, discard = pts[order], keys[order], discard[order]
    # a keyframe marks the next shown frame (itself unless it is discarded)
    gop = np.cumsum(keys)  # GOP number of each frame in display order, from 1
    shown = ~discard
    if not shown.any():
        raise VideoError(f"{path!r} has a video track with no frames to show")
    gop_shown = gop[shown]
    rows_pts = pts[shown]
    keyframes = np.flatnonzero(np.diff(np.concatenate([[0], gop_shown])) != 0)
    if np.any(np.diff(rows_pts) == 0):
        dup = int(rows_pts[np.flatnonzero(np.diff(rows_pts) == 0)[0]])
        raise VideoError(
            f"{path!r}: two frames share the timestamp {dup}; frames cannot be told apart "
            f"(remux it with fresh timestamps)"
        )
    return rows_pts, keyframes


def _average_fps(pts: np.ndarray, time_base: Fraction, nominal: Fraction | None) -> float:
    """Frames per second from the timestamps; the container's rate where it agrees (it is exact)."""
    if len(pts) >= 2 and pts[-1] > pts[0]:
        measured = Fraction(len(pts) - 1) / (int(pts[-1] - pts[0]) * time_base)
        if nominal and abs(float(nominal) / float(measured) - 1) < 2e-3:
            return float(nominal)
        return float(measured)
    return float(nominal) if nominal else 0.0


# --------------------------------------------------------------------------------------------
# Decoding
# --------------------------------------------------------------------------------------------

_stats_lock = threading.Lock()
_decoded: collections.Counter[str] = collections.Counter()
_seeks: collections.Counter[str] = collections.Counter()


def decode_stats() -> dict[str, int]:
    """Frames decoded in this process so far, per absolute path (dropped frames included).

    Examples
    --------
    >>> reset_decode_stats(); decode_stats()
    {}
    """
    with _stats_lock:
        return dict(_decoded)


def reset_decode_stats() -> None:
    """Set the counts of :func:`decode_stats` back to zero."""
    with _stats_lock:
        _decoded.clear()
        _seeks.clear()


def _seek_stats() -> dict[str, int]:
    """Seeks done in this process so far, per absolute path (for tests)."""
    with _stats_lock:
        return dict(_seeks)


class _Reader:
    """One open container and decoder for one file, used by one thread at a time.

    ``pos`` is the row of the next frame the decoder will give (``None`` when unknown: a seek
    is needed). Decoded frames are mapped to rows by their timestamps.
    """

    def __init__(self, index: VideoIndex):
        self.index = index
        self.packets: Iterator[Any] | None = None
        self.pending: collections.deque[Any] = collections.deque()
        self.pos: int | None = None
        self.last_used = 0
        self.convert = _Converter()
        self._open()

    def _open(self) -> None:
        index = self.index
        self.container = _open_container(index.path, index.storage_options)
        self.at_start = True  # nothing demuxed yet: decoding starts at the first packet
        try:
            self.stream = self.container.streams[index.stream_index]
            if self.stream.type != "video":
                raise VideoError(
                    f"{index.path!r} changed: its stream {index.stream_index} is not video"
                )
            self.stream.thread_type = "AUTO"
            for other in self.container.streams:
                if other.index != self.stream.index:
                    other.discard = av.stream.Discard.all
        except BaseException:
            self.container.close()
            raise

    def close(self) -> None:
        self.pending.clear()
        if self.packets is not None:
            self.packets.close()  # type: ignore[attr-defined]
            self.packets = None
        self.container.close()

    # -- positioning ----------------------------------------------------------------------

    def needs_seek(self, row: int) -> bool:
        """Whether reaching `row` needs a seek, rather than decoding forward."""
        if self.pos is None or row < self.pos:
            return True
        return self.index.keyframe_at_or_before(row) > self.pos

    def _seek(self, keyframe_row: int, earlier: int) -> None:
        """Position the demuxer at the keyframe `earlier` keyframes before `keyframe_row`."""
        index = self.index
        k = int(np.searchsorted(index.keyframes, keyframe_row)) - earlier
        self.pending.clear()
        self.pos = None
        if self.packets is not None:
            self.packets.close()  # type: ignore[attr-defined]
            self.packets = None
        if k <= 0 and not self.at_start:  # back to the very beginning: open the file anew
            self.container.close()
            self._open()
        elif k > 0:
            target = int(index.pts[index.keyframes[k]])
            try:
                self.container.seek(target, stream=self.stream, backward=True, any_frame=False)
            except _AV_ERRORS:
                return self._seek(keyframe_row, earlier=len(index.keyframes) + 1)
        self.at_start = False
        with _stats_lock:
            _seeks[index.path] += 1
        self.packets = self.container.demux(self.stream)

    def _next_frame(self) -> Any | None:
        """The next decoded frame, or ``None`` at the end of the stream."""
        while not self.pending:
            if self.packets is None:
                return None
            packet = next(self.packets, None)
            if packet is None:
                self.packets = None
                return None
            self.pending.extend(self.stream.codec_context.decode(packet))
        return self.pending.popleft()

    def _row_of(self, frame: Any) -> int | None:
        t = frame.pts
        if t is None:
            return self.pos  # no timestamp: assume it is the next frame
        pts = self.index.pts
        r = int(np.searchsorted(pts, t))
        if r < len(pts) and pts[r] == t:
            return r
        return None  # a frame the index does not know (dropped)

    # -- reading --------------------------------------------------------------------------

    def _is_keyframe_row(self, row: int) -> bool:
        keyframes = self.index.keyframes
        k = int(np.searchsorted(keyframes, row))
        return k < len(keyframes) and int(keyframes[k]) == row

    def read(self, rows: np.ndarray, out: np.ndarray) -> None:
        """Decode `rows` (sorted, unique, in range) into `out`.

        After a seek, frames count only from the first one at a keyframe row: where the
        demuxer landed past the keyframe (some formats seek by approximate timestamps), the
        decoder skips ahead or gives the next GOP, and the reader seeks further back, finally
        from the start of the file.
        """
        index = self.index
        decoded = 0
        try:
            for i, target in enumerate(rows.tolist()):
                keyframe = index.keyframe_at_or_before(target)
                fresh = False  # just sought: wait for a frame at a keyframe row
                attempt = 0
                if self.needs_seek(target):
                    self._seek(keyframe, 0)
                    fresh = True
                while True:
                    try:
                        frame = self._next_frame()
                    except _AV_ERRORS as e:
                        self.pos = None
                        raise VideoError(
                            f"cannot decode row {target} of {index.path!r}: the data is corrupt "
                            f"({_describe(e)})"
                        ) from None
                    if frame is None:
                        if fresh and attempt < _SEEK_RETRIES:
                            attempt += 1
                            self._seek(keyframe, attempt if attempt < _SEEK_RETRIES else len(index))
                            continue
                        self.pos = None
                        raise VideoError(
                            f"cannot decode row {target} of {index.path!r}: the file ends before "
                            f"it (truncated or corrupt)"
                        )
                    decoded += 1
                    r = self._row_of(frame)
                    if r is None:
                        continue
                    if fresh:
                        if not self._is_keyframe_row(r):
                            continue  # before decoding (re)starts at a keyframe: not trusted
                        if r > target and attempt < _SEEK_RETRIES:
                            attempt += 1  # landed past the keyframe: seek further back
                            _log.debug("%r: a seek for row %d landed past its keyframe; seeking "
                                       "further back (attempt %d)", index.path, target, attempt)
                            self._seek(keyframe, attempt if attempt < _SEEK_RETRIES else len(index))
                            continue
                        fresh = False
                    self.pos = r + 1
                    if r < target:
                        continue  # decoded on the way, not needed
                    if r > target:
                        self.pos = None
                        raise VideoError(
                            f"cannot decode row {target} of {index.path!r}: the decoder skipped "
                            f"it (corrupt data)"
                        )
                    if frame.is_corrupt:
                        self.pos = None
                        raise VideoError(f"row {target} of {index.path!r} decodes as corrupt")
                    out[i] = _to_rgb(frame, index.width, index.height, self.convert)
                    break
        finally:
            with _stats_lock:
                _decoded[index.path] += decoded


class _Converter:
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


def _to_rgb(frame: Any, width: int, height: int, convert: _Converter | None = None) -> np.ndarray:
    """The frame as an RGB array of the indexed size (a view into a new frame's buffer)."""
    kwargs: dict[str, Any] = {"format": "rgb24"}
    if frame.width != width or frame.height != height:
        kwargs.update(width=width, height=height)
    if convert is None:
        return frame.to_ndarray(**kwargs)
    return convert(frame, **kwargs).to_ndarray()


class _ReaderPool:
    """Open readers per file, each lent to one thread at a time; at most a few per file."""

    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.idle: dict[tuple, list[_Reader]] = {}
        self.count: collections.Counter[tuple] = collections.Counter()
        self.clock = 0

    def acquire(self, index: VideoIndex, first_row: int) -> _Reader:
        key = index._key
        with self.cond:
            while True:
                idle = self.idle.get(key)
                if idle:
                    # prefer a reader that reaches the row without seeking, closest first
                    best = min(
                        range(len(idle)),
                        key=lambda j: (
                            idle[j].needs_seek(first_row),
                            -(idle[j].pos if idle[j].pos is not None else -1),
                        ),
                    )
                    reader = idle.pop(best)
                    if not idle:
                        del self.idle[key]
                    if reader.index is not index:
                        reader.index = index  # same file, same key: an equal index
                    return reader
                if self.count[key] < _MAX_READERS_PER_FILE:
                    self.count[key] += 1
                    break
                self.cond.wait()
        try:
            return _Reader(index)
        except BaseException:
            with self.cond:
                self.count[key] -= 1
                self.cond.notify()
            raise

    def release(self, reader: _Reader, keep: bool) -> None:
        key = reader.index._key
        to_close: list[_Reader] = []
        with self.cond:
            self.clock += 1
            reader.last_used = self.clock
            if keep:
                self.idle.setdefault(key, []).append(reader)
                if len(self.idle) > _MAX_FILES_WITH_IDLE_READERS:
                    oldest = min(self.idle, key=lambda k: max(r.last_used for r in self.idle[k]))
                    to_close = self.idle.pop(oldest)
                    self.count[oldest] -= len(to_close)
            else:
                self.count[key] -= 1
                to_close = [reader]
            for k in [k for k, c in self.count.items() if c <= 0]:
                del self.count[k]
            self.cond.notify_all()
        for r in to_close:
            r.close()

    def close(self, path: str | None = None) -> None:
        with self.cond:
            keys = [k for k in self.idle if path is None or k[0] == path]
            to_close = [r for k in keys for r in self.idle.pop(k)]
            for r in to_close:
                self.count[r.index._key] -= 1
        for r in to_close:
            r.close()

    def forget(self) -> None:  # in a forked child: the parent's readers are not ours to use
        self.cond = threading.Condition()
        self.idle = {}
        self.count = collections.Counter()


_pool = _ReaderPool()
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_pool.forget)


def close_readers(path: str | os.PathLike | None = None) -> None:
    """Close the idle readers this process keeps open (of one file, or of all files).

    Readers in use by another thread are left alone. The next :func:`read_frames` opens the
    file again.
    """
    _pool.close(None if path is None else location(path))


def read_frames(
    index: VideoIndex, rows: Iterable[int] | np.ndarray, out: np.ndarray | None = None
) -> np.ndarray:
    """Decode the frames at `rows` as RGB.

    Uses a reader from a small per-process pool of open decoders for the file (safe to call from
    several threads at once). A reader remembers where it stands: it seeks to the keyframe at or
    before the first row it needs only when that row is behind it or a keyframe lies between
    (seeking is O(GOP) decoded frames), and otherwise decodes forward, dropping frames that are
    not needed and stopping right after the last row. So reading row ``r + 1`` right after row
    ``r`` decodes one frame.

    Parameters
    ----------
    index : VideoIndex
        From :func:`index_video`.
    rows : array_like of int
        Sorted, unique row indices (unsorted or repeated rows also work, at the cost of a copy).
    out : numpy.ndarray, optional
        Where to decode to: a writable ``(len(rows), height, width, 3)`` ``uint8`` array, for
        instance a slice of a larger array that several calls fill in parallel (no copy
        afterwards). Default: a new array.

    Returns
    -------
    numpy.ndarray
        ``(len(rows), height, width, 3)`` ``uint8``, RGB.

    Raises
    ------
    RowIndexError
        If a row is outside the video.
    VideoNotFoundError
        If the file is gone.
    VideoError
        If the file changed since it was indexed (size or modification time), cannot be
        opened, or a needed row is corrupt or missing.

    Examples
    --------
    >>> import os, tempfile
    >>> from scanner_nb.samples import make_video, frame_index
    >>> index = index_video(make_video(os.path.join(tempfile.mkdtemp(), "a.mp4"), n_frames=30))
    >>> [frame_index(f) for f in read_frames(index, [5, 6, 29])]
    [5, 6, 29]
    >>> close_readers(index.path)
    """
    if not isinstance(index, VideoIndex):
        raise ScannerTypeError(f"index must be a VideoIndex, got {type(index).__name__}")
    rows_a = np.asarray(rows)
    if rows_a.dtype.kind not in "iu" and rows_a.size:
        raise ScannerTypeError(f"rows must be integers, got dtype {rows_a.dtype}")
    rows_a = rows_a.astype(np.int64, copy=False).reshape(-1)
    n = len(index)
    if rows_a.size and (rows_a.min() < 0 or rows_a.max() >= n):
        bad = int(rows_a[(rows_a < 0) | (rows_a >= n)][0])
        index.check_row(bad)
    shape = (len(rows_a), index.height, index.width, 3)
    if out is not None and (
        not isinstance(out, np.ndarray)
        or out.shape != shape
        or out.dtype != np.uint8
        or not out.flags.writeable
    ):
        got = f"{out.shape} {out.dtype}" if isinstance(out, np.ndarray) else type(out).__name__
        raise ScannerValueError(f"out must be a writable {shape} uint8 array, got {got}")
    inverse = None
    if rows_a.size > 1 and np.any(np.diff(rows_a) <= 0):
        rows_a, inverse = np.unique(rows_a, return_inverse=True)
    target = out
    if target is None or inverse is not None:
        target = np.empty((len(rows_a), index.height, index.width, 3), dtype=np.uint8)
    if len(rows_a):
        st = _stat(index.path, index.storage_options)  # a file removed since indexing is "not found", not "corrupt"
        if index.size and (st.st_size, st.st_mtime_ns) != (index.size, index.mtime_ns):
            raise VideoError(
                f"video file {index.path!r} changed since it was indexed; index it again"
            )
        reader = _pool.acquire(index, int(rows_a[0]))
        keep = False
        try:
            reader.read(rows_a, target)
            keep = True
        finally:
            _pool.release(reader, keep)
    if inverse is None:
        return target
    if out is None:
        return target[inverse.reshape(-1)]
    np.take(target, inverse.reshape(-1), axis=0, out=out)
    return out


# --------------------------------------------------------------------------------------------
# Partitions
# --------------------------------------------------------------------------------------------


def plan_partitions(index: VideoIndex, rows: np.ndarray, partition_size: int) -> list[np.ndarray]:
    """Group sorted rows into partitions made of whole groups of pictures (GOPs).

    The rows needed from one GOP always land in the same partition, so neighbouring partitions
    never decode the same GOP. A partition is closed once the frames it must decode (for each
    GOP, from its keyframe to the last needed row in it) add up to at least `partition_size`;
    a GOP longer than that stays whole, in one partition.

    Parameters
    ----------
    index : VideoIndex
    rows : array_like of int
        Sorted, unique rows.
    partition_size : int
        Decoded frames per partition to aim for, at least 1.

    Returns
    -------
    list of numpy.ndarray
        The rows of each partition, in order; empty when `rows` is.

    Examples
    --------
    >>> index = VideoIndex("/v.mp4", 8, 8, 24.0, np.arange(30), [0, 10, 20], Fraction(1, 24),
    ...                    "h264")
    >>> [(int(p[0]), int(p[-1])) for p in plan_partitions(index, np.arange(30), 15)]
    [(0, 19), (20, 29)]
    >>> [p.tolist() for p in plan_partitions(index, [3, 12, 25, 27], 5)]
    [[3, 12], [25, 27]]
    >>> [p.tolist() for p in plan_partitions(index, [1, 2, 11], 2)]
    [[1, 2], [11]]
    >>> [len(p) for p in plan_partitions(index, np.arange(30), 4)]
    [10, 10, 10]
    """
    size = int(partition_size)
    if size != partition_size or size < 1:
        raise ScannerValueError(
            f"partition_size must be a positive integer, got {partition_size!r}"
        )
    rows_a = np.asarray(rows, dtype=np.int64).reshape(-1)
    if rows_a.size == 0:
        return []
    if np.any(np.diff(rows_a) <= 0):
        raise ScannerValueError("rows must be sorted and unique")
    index.check_row(int(rows_a[0]))
    index.check_row(int(rows_a[-1]))
    keyframes = index.keyframes
    gop = np.searchsorted(keyframes, rows_a, side="right") - 1
    starts = np.concatenate([[0], np.flatnonzero(np.diff(gop)) + 1])
    ends = np.concatenate([starts[1:], [len(rows_a)]])
    costs = rows_a[ends - 1] - keyframes[gop[starts]] + 1
    parts: list[np.ndarray] = []
    first, acc = 0, 0
    for s, e, c in zip(starts.tolist(), ends.tolist(), costs.tolist()):
        acc += c
        if acc >= size:
            parts.append(rows_a[first:e])
            first, acc = e, 0
    if first < len(rows_a):
        parts.append(rows_a[first:])
    return parts


# --------------------------------------------------------------------------------------------
# Encoding
# --------------------------------------------------------------------------------------------


def _as_rgb(frame: Any, i: int) -> np.ndarray:
    a = np.asarray(frame)
    if a.dtype != np.uint8:
        raise ScannerValueError(f"frame {i}: expected uint8 pixels, got dtype {a.dtype}")
    if a.ndim == 2:
        a = a[:, :, None]
    if a.ndim != 3 or a.shape[2] not in (1, 3, 4) or a.shape[0] < 1 or a.shape[1] < 1:
        raise ScannerValueError(
            f"frame {i}: expected an HxWx3 RGB, HxWx1 or HxW gray image, got shape {a.shape}"
        )
    if a.shape[2] == 1:
        a = np.repeat(a, 3, axis=2)
    elif a.shape[2] == 4:
        a = a[:, :, :3]  # RGBA: alpha dropped
    return a


def _pad_even(a: np.ndarray) -> np.ndarray:
    h, w = a.shape[:2]
    if h % 2 or w % 2:
        a = np.pad(a, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge")
    return np.ascontiguousarray(a)


def encode_mp4(
    frames: Iterable[np.ndarray],
    dest: str | os.PathLike | io.BytesIO,
    fps: float = 30.0,
    crf: int = 20,
    preset: str = "veryfast",
) -> tuple[int, int]:
    """Encode frames as an H.264 mp4 (yuv420p) that browsers play.

    Frames are encoded as they come (a generator is never held in memory). Odd widths and
    heights are padded to even by repeating the last row / column. When writing a file, the
    file is written next to `dest` and renamed into place, with the index (``moov``) at the
    front so playback can start before the download ends.

    Parameters
    ----------
    frames : iterable of numpy.ndarray
        ``uint8`` ``H x W x 3`` RGB, or ``H x W x 1`` / ``H x W`` gray; all the same size.
    dest : str, os.PathLike or io.BytesIO
        Exactly where to write (no extension is added); a buffer (any object with ``write``)
        gets the whole file written at its current position.
    fps : float
        Frame rate.
    crf : int
        x264 constant rate factor, 0 (lossless) to 51; 20 is visually near lossless.
    preset : str
        x264 speed preset (``"ultrafast"`` … ``"veryslow"``).

    Returns
    -------
    (int, int)
        Frames written, bytes written.

    Raises
    ------
    ScannerValueError
        If there are no frames, or a frame has the wrong dtype, shape or size.

    Examples
    --------
    >>> import io
    >>> frames = [np.full((48, 64, 3), 16 * i, np.uint8) for i in range(10)]
    >>> buf = io.BytesIO()
    >>> n, nbytes = encode_mp4(frames, buf, fps=10)
    >>> n, nbytes == len(buf.getvalue())
    (10, True)
    """
    try:
        rate = Fraction(fps).limit_denominator(1001)
    except (TypeError, ValueError):
        raise ScannerValueError(f"fps must be a positive number, got {fps!r}") from None
    if not rate > 0:
        raise ScannerValueError(f"fps must be positive, got {fps!r}")
    if isinstance(crf, bool) or not isinstance(crf, (int, np.integer)) or not 0 <= crf <= 51:
        raise ScannerValueError(f"crf must be an integer from 0 to 51, got {crf!r}")
    iterator = iter(frames)
    try:
        first = next(iterator)
    except StopIteration:
        raise ScannerValueError("encode_mp4 needs at least one frame, got none") from None
    first_rgb = _as_rgb(first, 0)

    if isinstance(dest, (str, os.PathLike)):
        final = os.path.abspath(os.fspath(dest))
        try:
            fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".mp4", dir=os.path.dirname(final))
        except OSError as e:
            raise VideoError(f"cannot write {final!r}: {e.strerror or e}") from None
        os.close(fd)
        try:
            n = _encode(first_rgb, iterator, tmp, rate, int(crf), preset, faststart=True)
            os.replace(tmp, final)
        except BaseException:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise
        return n, os.path.getsize(final)
    if not hasattr(dest, "write"):
        raise ScannerTypeError(
            f"dest must be a path or a writable binary buffer, got {type(dest).__name__}"
        )
    # Encode into a private buffer, then write it out in one go: the mp4 muxer seeks to absolute
    # offsets, which would be wrong in a buffer that does not start empty. (FFmpeg can move the
    # index to the front only in files, so a buffer gets it at the end; a data: URL or a
    # download holds the whole file anyway.)
    scratch = io.BytesIO()
    n = _encode(first_rgb, iterator, scratch, rate, int(crf), preset, faststart=False)
    data = scratch.getbuffer()
    dest.write(data)
    return n, len(data)


def _encode(
    first: np.ndarray,
    rest: Iterator[np.ndarray],
    target: Any,
    rate: Fraction,
    crf: int,
    preset: str,
    faststart: bool,
) -> int:
    h, w = first.shape[:2]
    options = {"movflags": "+faststart"} if faststart else {}
    try:
        container = av.open(target, mode="w", format="mp4", options=options)
    except _AV_ERRORS as e:
        raise VideoError(f"cannot write mp4 to {target!r}: {_describe(e)}") from None
    n = 0
    with container:
        stream = container.add_stream("libx264", rate=rate)
        stream.width, stream.height = w + w % 2, h + h % 2
        stream.pix_fmt = "yuv420p"
        stream.options = {"crf": str(crf), "preset": str(preset)}
        cc = stream.codec_context
        # tag what the RGB -> YUV conversion below does: BT.601 matrix, limited range
        cc.color_range = 1  # AVCOL_RANGE_MPEG
        cc.colorspace = 6  # AVCOL_SPC_SMPTE170M
        cc.color_primaries = 6  # AVCOL_PRI_SMPTE170M
        cc.color_trc = 6  # AVCOL_TRC_SMPTE170M
        frame_time_base = 1 / rate
        convert = _Converter()  # one scaler for every frame (see _Converter)

        def put(a: np.ndarray) -> None:
            nonlocal n
            vf = av.VideoFrame.from_ndarray(_pad_even(a), format="rgb24")
            vf = convert(vf, format="yuv420p", dst_colorspace="ITU601", dst_color_range="MPEG")
            vf.pts = n
            vf.time_base = frame_time_base
            try:
                for packet in stream.encode(vf):
                    container.mux(packet)
            except _AV_ERRORS as e:
                raise VideoError(f"H.264 encoding failed at frame {n}: {_describe(e)}") from None
            n += 1

        put(first)
        for i, frame in enumerate(rest, start=1):
            a = _as_rgb(frame, i)
            if a.shape[:2] != (h, w):
                raise ScannerValueError(
                    f"frame {i} is {a.shape[1]}x{a.shape[0]}, but the video is {w}x{h}: "
                    f"all frames must have one size (resize them first)"
                )
            put(a)
        try:
            for packet in stream.encode(None):
                container.mux(packet)
        except _AV_ERRORS as e:
            raise VideoError(f"H.264 encoding failed at the end: {_describe(e)}") from None
    return n
