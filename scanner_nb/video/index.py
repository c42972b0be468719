"""The index of a video file: frame timestamps, keyframes and display orientation, by demuxing.

Costs: :func:`index_video` reads every packet once (no decoding; one frame is decoded to read its
display matrix): O(n) packet reads, I/O bound. The result is cached in a small ``.npz`` file, so
a second open costs one ``stat`` and one read.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import posixpath
import threading
import zlib
from collections import OrderedDict
from dataclasses import dataclass, field, replace
from fractions import Fraction
from typing import Any

import av
import numpy as np
from av.sidedata.sidedata import Type as SideDataType

from ..errors import (RowIndexError, ScannerError, ScannerValueError, VideoError,
                      VideoNotFoundError)
from ..fsio import file_stat, is_url, location, read_bytes, write_bytes
from ..log import get_logger
from ._av import AV_ERRORS, describe, open_container, video_track

__all__ = ["VideoIndex", "index_video", "index_cache_path", "orient"]

_CACHE_VERSION = 3
_log = get_logger("video")


def _frozen_int64(a: Any) -> np.ndarray:
    arr = np.array(a, dtype=np.int64, copy=True).reshape(-1)
    arr.setflags(write=False)
    return arr


@dataclass(frozen=True, eq=False)
class VideoIndex:
    """What :func:`index_video` learned from demuxing a video file.

    Rows are frames in display order, ``0 … len(index) - 1``, one per video packet; row ``r``
    is the frame whose presentation timestamp is ``pts[r]``. Where timestamps cannot tell frames
    apart (two frames share one, or packets carry none), rows are the frames in the order the
    decoder gives them, as players show them (`by_order`), and ``pts`` holds the packets'
    timestamps in decode order.

    Attributes
    ----------
    path : str
        Absolute path of the file.
    width, height : int
        Coded size of the first frame, in pixels (before `rotation`; later frames may differ).
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
    rotation : int
        How a player turns the frames: 0, 90, 180 or 270 degrees counterclockwise (from the
        display matrix; FFmpeg's ``-display_rotation``).
    hflip : bool
        Whether a player then mirrors them left-right (FFmpeg's ``-display_hflip``).
    by_order : bool
        Rows are counted in the decoder's output order (timestamps duplicated or missing).
    keyframe_pos : numpy.ndarray
        Byte position of each keyframe's packet (``-1`` unknown; empty in a light index);
        finds where a seek landed when timestamps cannot.
    damaged : bool
        Packets were flagged corrupt or the file ends in damaged data: decode it
        single-threaded, so the same frames are found damaged every time.
    storage_options : dict
        For a URL (``s3://...``): the fsspec options it is opened with (and its cache in
        `cache_dir` read with); they travel with the index to the workers.
    track : int
        Which of the file's video tracks, counting video tracks from 0.
    cache_dir : str or None
        Where :func:`index_video` cached the index (a folder or an fsspec URL), so that a light
        index (:meth:`summary`) finds its timestamps again on a worker (:meth:`full`).
    frames : int or None
        A light index's frame count; ``None`` in a full one (its count is ``len(pts)``).

    Examples
    --------
    >>> index = VideoIndex("/v.mp4", 64, 48, 24.0, np.arange(30), np.array([0, 10, 20]),
    ...                    Fraction(1, 24), "h264")
    >>> len(index), index.keyframe_at_or_before(15), index.display_size
    (30, 10, (64, 48))
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
    rotation: int = 0
    hflip: bool = False
    by_order: bool = False
    keyframe_pos: np.ndarray | None = None
    damaged: bool = False
    storage_options: dict = field(default_factory=dict, repr=False, compare=False)
    track: int = 0
    cache_dir: str | None = field(default=None, repr=False, compare=False)
    frames: int | None = None
    _key: tuple = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if (self.pts is None) == (self.frames is None):
            raise ScannerValueError("a VideoIndex has either pts (full) or frames (light)")
        pts = None if self.pts is None else _frozen_int64(self.pts)
        keyframes = _frozen_int64(self.keyframes)
        n = len(pts) if pts is not None else int(self.frames)
        if len(keyframes) == 0 or keyframes[0] != 0 or np.any(np.diff(keyframes) <= 0):
            raise ScannerValueError(
                f"keyframes must be sorted, unique and start at row 0, got {keyframes[:8].tolist()}"
            )
        if n and keyframes[-1] >= n:
            raise ScannerValueError(f"keyframe row {keyframes[-1]} outside {n} frames")
        if self.rotation not in (0, 90, 180, 270):
            raise ScannerValueError(f"rotation must be 0, 90, 180 or 270, got {self.rotation!r}")
        positions = (self.keyframe_pos if self.keyframe_pos is not None
                     else np.full(len(keyframes) if pts is not None else 0, -1))
        object.__setattr__(self, "pts", pts)
        object.__setattr__(self, "keyframes", keyframes)
        object.__setattr__(self, "keyframe_pos", _frozen_int64(positions))
        object.__setattr__(self, "time_base", Fraction(self.time_base))
        object.__setattr__(
            self, "_key", (self.path, int(self.size), int(self.mtime_ns), int(self.stream_index))
        )

    def __len__(self) -> int:
        return len(self.pts) if self.pts is not None else self.frames

    @property
    def is_light(self) -> bool:
        """Whether this is a light index (:meth:`summary`): no timestamps, no seek positions."""
        return self.pts is None

    def summary(self) -> VideoIndex:
        """This index without the timestamps of every frame: what the row analysis needs.

        A client keeps one light index per video (its keyframes and frame count, a few KB for
        an hour-long video instead of ~1 MB); the read tasks on the workers find the full
        index with :meth:`full`.

        Examples
        --------
        >>> index = VideoIndex("/v.mp4", 64, 48, 24.0, np.arange(30), [0, 10, 20],
        ...                    Fraction(1, 24), "h264")
        >>> light = index.summary()
        >>> light.is_light, len(light), light.keyframe_at_or_before(15), light.pts
        (True, 30, 10, None)
        """
        if self.pts is None:
            return self
        return replace(self, pts=None, keyframe_pos=None, frames=len(self))

    def full(self) -> VideoIndex:
        """This index with every frame's timestamp: itself, or for a light index the full one,
        from this process's memory, else the cache in `cache_dir`, else by demuxing again.

        Raises
        ------
        VideoError
            If the file changed since it was indexed.
        """
        return self if self.pts is not None else _full_index(self)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, VideoIndex):
            return NotImplemented
        return (
            self._key == other._key
            and self.metadata == other.metadata
            and self.is_light == other.is_light
            and (self.is_light or np.array_equal(self.pts, other.pts))
            and np.array_equal(self.keyframes, other.keyframes)
        )

    def __hash__(self) -> int:
        return hash((self._key, len(self)))

    def __repr__(self) -> str:
        turn = f", rotation {self.rotation}" if self.rotation else ""
        flip = ", hflip" if self.hflip else ""
        return (
            f"VideoIndex({self.path!r}, {self.width}x{self.height}{turn}{flip}, {len(self)} "
            f"frames, {self.fps:.4g} fps, {len(self.keyframes)} keyframes, {self.codec})"
        )

    def __dask_tokenize__(self) -> tuple:
        return ("VideoIndex", self._key, self.track, len(self))

    @property
    def display_size(self) -> tuple[int, int]:
        """``(width, height)`` of the first frame as a player shows it (after `rotation`)."""
        if self.rotation in (90, 270):
            return self.height, self.width
        return self.width, self.height

    @property
    def metadata(self) -> dict[str, Any]:
        """What the index says about the video, as plain data.

        Examples
        --------
        >>> index = VideoIndex("/v.mp4", 64, 48, 24.0, np.arange(3), [0], Fraction(1, 24),
        ...                    "h264", rotation=90)
        >>> index.metadata["rotation"], index.metadata["display_size"]
        (90, (48, 64))
        """
        return {
            "path": self.path, "codec": self.codec, "width": self.width, "height": self.height,
            "display_size": self.display_size, "rotation": self.rotation, "hflip": self.hflip,
            "fps": self.fps, "frames": len(self), "keyframes": len(self.keyframes),
            "time_base": self.time_base, "stream_index": self.stream_index,
            "by_order": self.by_order, "damaged": self.damaged,
        }

    @property
    def duration(self) -> float:
        """Seconds from the first frame's start to the last frame's end (last frame: 1/fps);
        frames / fps for a light index."""
        if not len(self):
            return 0.0
        if self.by_order or self.is_light:
            return len(self) / self.fps if self.fps > 0 else 0.0
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

    def is_keyframe(self, row: int) -> bool:
        """Whether `row` is a keyframe's row."""
        k = int(np.searchsorted(self.keyframes, row))
        return k < len(self.keyframes) and int(self.keyframes[k]) == row


def orient(frame: np.ndarray, rotation: int, hflip: bool) -> np.ndarray:
    """A coded ``(H, W, C)`` frame as a player shows it (a view): turned, then mirrored.

    Examples
    --------
    >>> a = np.arange(6).reshape(2, 3, 1)
    >>> orient(a, 90, False)[..., 0].tolist()
    [[2, 5], [1, 4], [0, 3]]
    >>> orient(a, 0, True)[..., 0].tolist()
    [[2, 1, 0], [5, 4, 3]]
    """
    if rotation:
        frame = np.rot90(frame, rotation // 90)
    return frame[:, ::-1] if hflip else frame


def _orientation(matrix: np.ndarray) -> tuple[int, bool]:
    """``(rotation, hflip)`` from an FFmpeg display matrix (9 int32, 16.16 fixed point).

    Rotations are rounded to the nearest quarter turn.

    Examples
    --------
    >>> _orientation(np.array([0, -65536, 0, 65536, 0, 0, 0, 0, 1 << 30]))
    (90, False)
    >>> _orientation(np.array([0, 65536, 0, 65536, 0, 0, 0, 0, 1 << 30]))
    (270, True)
    """
    a, b, c, d = (float(matrix[i]) for i in (0, 1, 3, 4))
    hflip = a * d - b * c < 0
    if hflip:  # undo FFmpeg's av_display_matrix_flip(hflip): it negates the first column
        a, c = -a, -c
    degrees = math.degrees(math.atan2(c, a))  # av_display_rotation_set: [cos -sin; sin cos]
    return round(degrees / 90) % 4 * 90, hflip


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
                track: int = 0, storage_options: dict | None = None) -> VideoIndex:
    """Index a video file by demuxing it: frame timestamps and keyframes, no decoding.

    The frame count and the rows come from the packets, not from container metadata, so they
    are right for variable-frame-rate files and for files whose header lies. Costs one read of
    the file (I/O bound, no decoding but the first frame's); with `cache_dir` the index is
    stored there as a small file keyed by the absolute path and checked against size and
    ``mtime_ns``, so opening an unchanged file again costs a ``stat`` and one small read.

    A file cut short may end in frames the index counts but the decoder cannot give; reading
    them raises a :class:`VideoError` naming the first row that cannot be decoded.

    Parameters
    ----------
    path : str or os.PathLike
        The video file: a path, or an fsspec URL (``s3://bucket/movie.mp4``).
    cache_dir : str or os.PathLike, optional
        Folder for cached indexes (created if needed). ``None``: no cache.
    track : int
        Which video track, counting the file's video tracks from 0.
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
        If it is not a video, has no such video track, cannot be read or has no frames.

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
    track = int(track)
    options = dict(storage_options or {})
    st = _stat(abspath, options)
    cache_file = None
    if cache_dir is not None:
        cache_dir = location(cache_dir)
        cache_file = index_cache_path(abspath, cache_dir, track)
        cached = _load_cached_index(cache_file, abspath, st, track, cache_dir, options)
        if cached is not None:
            _log.debug("index of %r read from the cache %r", abspath, cache_file)
            return _remember(cached)
    index = _demux_index(abspath, st, track, options, cache_dir)
    if cache_file is not None:
        _save_cached_index(cache_file, index, options)
        _log.debug("indexed %r (%d frames), cached in %r", abspath, len(index), cache_file)
    return _remember(index)


def index_cache_path(path: str | os.PathLike, cache_dir: str | os.PathLike,
                     track: int = 0) -> str:
    """Where :func:`index_video` caches the index of ``path`` (video ``track``) in ``cache_dir``
    (a folder, or an fsspec URL such as a database's ``s3://bucket/db/.video-index``)."""
    abspath = location(path)
    key = abspath if not track else f"{abspath}#{int(track)}"
    digest = hashlib.sha1(key.encode("utf-8", "surrogatepass")).hexdigest()
    folder = location(cache_dir)
    join = posixpath.join if is_url(folder) else os.path.join
    return join(folder, digest + ".vidx")


_META_FIELDS = ("width", "height", "fps", "codec", "stream_index", "rotation", "hflip",
                "by_order", "damaged")


def _load_cached_index(cache_file: str, abspath: str, st: os.stat_result, track: int,
                       cache_dir: str, storage_options: dict) -> VideoIndex | None:
    """The cached index, checked against the file's path, size and time; ``None`` if absent,
    stale or not a cache of ours (it is data: read without pickles, every field checked)."""
    try:
        meta, arrays = _decode_cache(read_bytes(cache_file, storage_options))
    except Exception:  # absent, partial, foreign, unreachable: index again
        return None
    if (
        meta.get("version") != _CACHE_VERSION
        or meta.get("path") != abspath
        or meta.get("track") != track
        or meta.get("size") != st.st_size
        or meta.get("mtime_ns") != st.st_mtime_ns
    ):
        return None
    try:
        fields = {k: meta[k] for k in _META_FIELDS}
        return VideoIndex(path=abspath, time_base=Fraction(meta["time_base"]), size=st.st_size,
                          mtime_ns=st.st_mtime_ns, storage_options=_video_options(
                              abspath, storage_options), track=track, cache_dir=cache_dir,
                          **fields, **arrays)
    except (KeyError, ValueError, TypeError, ZeroDivisionError):
        return None


def _save_cached_index(cache_file: str, index: VideoIndex, storage_options: dict) -> None:
    meta = {k: getattr(index, k) for k in _META_FIELDS}
    meta.update(version=_CACHE_VERSION, path=index.path, size=index.size, track=index.track,
                mtime_ns=index.mtime_ns, time_base=str(index.time_base))
    data = _encode_cache(meta, {k: getattr(index, k) for k in _CACHE_ARRAYS})
    try:
        write_bytes(cache_file, data, storage_options)
    except (OSError, ScannerError) as exc:  # a cache that cannot be written only costs time
        _log.debug("cannot cache the index of %r in %r: %s", index.path, cache_file, exc)


_CACHE_MAGIC = b"scanner_nb video index\n"
_CACHE_ARRAYS = ("pts", "keyframes", "keyframe_pos")


def _encode_cache(meta: dict, arrays: dict[str, np.ndarray]) -> bytes:
    """A cache file: a magic line, a JSON header (``meta`` and the arrays' lengths), then the
    ``int64`` arrays, little-endian, as one zlib stream.

    Examples
    --------
    >>> data = _encode_cache({"v": 1}, {"pts": np.arange(3), "keyframes": np.array([0]),
    ...                                 "keyframe_pos": np.array([-1])})
    >>> meta, arrays = _decode_cache(data)
    >>> meta, arrays["pts"].tolist(), arrays["keyframe_pos"].tolist()
    ({'v': 1}, [0, 1, 2], [-1])
    """
    header = json.dumps(dict(meta, arrays=[len(arrays[k]) for k in _CACHE_ARRAYS])).encode()
    body = b"".join(np.asarray(arrays[k], dtype="<i8").tobytes() for k in _CACHE_ARRAYS)
    return _CACHE_MAGIC + len(header).to_bytes(4, "little") + header + zlib.compress(body, 1)


def _decode_cache(data: bytes) -> tuple[dict, dict[str, np.ndarray]]:
    """``(meta, arrays)`` of a cache file; ``ValueError`` for anything else (it is data from
    outside: sizes are checked, nothing is decompressed past what the header declares)."""
    start = len(_CACHE_MAGIC) + 4
    if not data.startswith(_CACHE_MAGIC) or len(data) < start:
        raise ValueError("not a video index cache")
    end = start + int.from_bytes(data[start - 4:start], "little")
    meta = json.loads(data[start:end])
    counts = [int(n) for n in meta.pop("arrays")]
    if len(counts) != len(_CACHE_ARRAYS) or min(counts) < 0:
        raise ValueError("bad array lengths")
    inflate = zlib.decompressobj()
    body = inflate.decompress(data[end:], 8 * sum(counts))
    if (len(body) != 8 * sum(counts) or not inflate.eof or inflate.unconsumed_tail
            or inflate.unused_data):
        raise ValueError("the arrays do not match their lengths")
    values = np.frombuffer(body, dtype="<i8").astype(np.int64)
    bounds = np.cumsum([0, *counts])
    return meta, {k: values[bounds[i]:bounds[i + 1]] for i, k in enumerate(_CACHE_ARRAYS)}


def _video_options(path: str, storage_options: dict) -> dict:
    """The fsspec options a video is opened with: none for a local file."""
    return dict(storage_options) if is_url(path) else {}


#: Full indexes this process holds for light ones (see VideoIndex.full), newest last.
_FULL: OrderedDict = OrderedDict()
_FULL_LOCK = threading.Lock()
_FULL_KEPT = 256


def _remember(index: VideoIndex) -> VideoIndex:
    """Keep a full index for :meth:`VideoIndex.full` in this process; returns it."""
    with _FULL_LOCK:
        _FULL[(index._key, index.track)] = index
        _FULL.move_to_end((index._key, index.track))
        while len(_FULL) > _FULL_KEPT:
            _FULL.popitem(last=False)
    return index


def _full_index(light: VideoIndex) -> VideoIndex:
    with _FULL_LOCK:
        index = _FULL.get((light._key, light.track))
    if index is None:
        index = index_video(light.path, light.cache_dir, light.track, light.storage_options)
    if index._key != light._key or len(index) != len(light):
        raise VideoError(f"video file {light.path!r} changed since it was indexed; index it again")
    return index


class _Orientation:
    """``(rotation, hflip)`` from the first decoded frame's display matrix (none: no turn),
    read while demuxing: packets are decoded until the first frame comes out."""

    def __init__(self) -> None:
        self.value: tuple[int, bool] | None = None

    def feed(self, packet: Any) -> None:
        if self.value is not None:
            return
        try:
            frames = packet.decode()
        except AV_ERRORS:
            return  # an undecodable first frame shows up when it is read
        for frame in frames:
            data = frame.side_data.get(SideDataType.DISPLAYMATRIX)  # PyAV 18 and 19 alike
            self.value = (0, False) if data is None else _orientation(
                np.frombuffer(bytes(data), dtype="<i4")[:9])
            return


def _demux_index(path: str, st: os.stat_result, track: int, storage_options: dict,
                 cache_dir: str | None) -> VideoIndex:
    options = _video_options(path, storage_options)
    container = open_container(path, options)
    damaged = False
    orientation = _Orientation()
    with container:
        stream = video_track(container, path, track)
        stream.thread_type = "NONE"  # only the first frame is decoded
        for other in container.streams:
            if other.index != stream.index:
                other.discard = av.stream.Discard.all  # skip other tracks' data
        pts: list[int] = []
        keys: list[bool] = []
        discard: list[bool] = []
        corrupt: list[bool] = []
        positions: list[int] = []
        try:
            for packet in container.demux(stream):
                if packet.size == 0:
                    continue  # the flush packet at the end
                t = packet.pts if packet.pts is not None else packet.dts
                pts.append(-(2**62) if t is None else t)
                keys.append(packet.is_keyframe)
                discard.append(packet.is_discard)
                corrupt.append(packet.is_corrupt)
                positions.append(-1 if packet.pos is None else packet.pos)
                orientation.feed(packet)
        except AV_ERRORS as e:
            if not pts:
                raise VideoError(f"cannot read video packets of {path!r}: {describe(e)}") from None
            damaged = True  # a damaged tail: index what could be read, as players do
        while corrupt and corrupt[-1]:  # a truncated file ends in a partial packet: not a frame
            pts.pop(), keys.pop(), discard.pop(), corrupt.pop(), positions.pop()
            damaged = True
        damaged = damaged or any(corrupt)
        codec = stream.codec_context.name
        width, height = stream.codec_context.width, stream.codec_context.height
        time_base = stream.time_base
        nominal = stream.average_rate or stream.guessed_rate or stream.base_rate
        stream_index = stream.index
        fmt = container.format.name
    if not width or not height:
        raise VideoError(f"{path!r}: the video track has no frame size (unsupported codec?)")
    if time_base is None:
        raise VideoError(f"{path!r}: the video track has no time base")
    rows = _rows_from_packets(
        np.asarray(pts, dtype=np.int64),
        np.asarray(keys, dtype=bool),
        np.asarray(discard, dtype=bool),
        np.asarray(positions, dtype=np.int64),
        path,
    )
    by_order = rows["by_order"]
    if damaged or fmt in _UNINDEXED_FORMATS:  # the tail may hold frames that cannot decode
        rows = _decodable(path, track, rows, options)
    rotation, hflip = orientation.value or (0, False)
    fps = (float(nominal) if by_order and nominal
           else _average_fps(rows["pts"], Fraction(time_base), nominal))
    return VideoIndex(
        path=path, width=int(width), height=int(height), fps=fps, time_base=Fraction(time_base),
        codec=str(codec), size=st.st_size, mtime_ns=st.st_mtime_ns,
        stream_index=int(stream_index), rotation=rotation, hflip=hflip, damaged=damaged,
        storage_options=options, track=track, cache_dir=cache_dir, **rows,
    )


#: Formats with no index of their frames: a cut-off file there looks whole to the demuxer.
_UNINDEXED_FORMATS = {"mpegts", "h264", "hevc", "mpegvideo", "m4v", "mpeg"}


def _decodable(path: str, track: int, rows: dict[str, Any],
               storage_options: dict | None = None) -> dict[str, Any]:
    """``rows`` cut before the first frame of the last GOP that the decoder does not give.

    Decodes the last two GOPs single-threaded (seeking lands at or before the last keyframe),
    so that ``len()`` counts the frames of a file cut off mid-GOP that decode. Where that
    cannot be told (timestamps shared, or the seek went wrong) the rows stay as they are.
    """
    pts, keyframes = rows["pts"], rows["keyframes"]
    if rows["by_order"]:
        return rows
    last_key = int(keyframes[-1])
    start = int(keyframes[-2]) if len(keyframes) > 1 else 0
    seen: list[int] = []
    try:
        with open_container(path, storage_options) as container:
            stream = video_track(container, path, track)
            stream.thread_type = "NONE"
            if start:
                container.seek(int(pts[start]), stream=stream, backward=True)
            for frame in container.decode(stream):
                if frame.pts is not None:
                    seen.append(int(frame.pts))
    except (VideoError, *AV_ERRORS):
        pass  # what decoded before the error counts
    got = np.isin(pts[last_key:], np.asarray(seen, dtype=np.int64))
    if not got[0] or got.all():
        return rows
    n = last_key + int(np.argmin(got))
    return dict(rows, pts=pts[:n])


def _rows_from_packets(pts: np.ndarray, keys: np.ndarray, discard: np.ndarray,
                       positions: np.ndarray, path: str = "<video>") -> dict[str, Any]:
    """Rows (timestamps in display order) and keyframe rows from packets in decode order.

    Packets before the first keyframe cannot be decoded, nor can frames shown before it
    (leading frames of an open GOP); packets flagged *discard* (before an edit list's start)
    are decoded but never shown, so they are no rows, and a GOP whose keyframe is discarded
    starts at its first shown frame (seeking there lands on the keyframe before it). Where
    timestamps are missing or shared, rows are the packets in decode order (``by_order``).

    Examples
    --------
    >>> def rows(pts, keys, discard):
    ...     r = _rows_from_packets(np.array(pts), np.array(keys, bool), np.array(discard, bool),
    ...                            np.arange(len(pts)))
    ...     return r["pts"].tolist(), r["keyframes"].tolist(), r["by_order"]
    >>> rows([0, 3, 1, 2, 4], [1, 0, 0, 0, 1], [0] * 5)
    ([0, 1, 2, 3, 4], [0, 4], False)
    >>> rows(list(range(-2, 6)), [1, 0, 0, 0, 1, 0, 0, 0], [1, 1, 0, 0, 0, 0, 0, 0])
    ([0, 1, 2, 3, 4, 5], [0, 2], False)
    >>> rows([0, 0, 2, 2, 4, 4], [1, 0, 0, 0, 1, 0], [0] * 6)
    ([0, 0, 2, 2, 4, 4], [0, 4], True)
    """
    if not len(pts):
        raise VideoError(f"{path!r} has a video track with no frames")
    if not keys.any():
        raise VideoError(f"{path!r}: the video track has no keyframe, so no frame can be decoded")
    first = int(np.argmax(keys))
    pts, keys, discard, positions = pts[first:], keys[first:], discard[first:], positions[first:]
    shown_pts = np.sort(pts[~discard])
    if np.any(pts == -(2**62)) or np.any(np.diff(shown_pts) == 0):
        keyframes = np.flatnonzero(keys)
        return {"pts": pts, "keyframes": keyframes, "by_order": True,
                "keyframe_pos": positions[keyframes]}
    keep = pts >= pts[0]
    pts, keys, discard = pts[keep], keys[keep], discard[keep]
    order = np.argsort(pts, kind="stable")
    pts, keys, discard = pts[order], keys[order], discard[order]
    # a keyframe marks the next shown frame (itself unless it is discarded)
    gop = np.cumsum(keys)  # GOP number of each frame in display order, from 1
    shown = ~discard
    if not shown.any():
        raise VideoError(f"{path!r} has a video track with no frames to show")
    keyframes = np.flatnonzero(np.diff(np.concatenate([[0], gop[shown]])) != 0)
    return {"pts": pts[shown], "keyframes": keyframes, "by_order": False, "keyframe_pos": None}


def _average_fps(pts: np.ndarray, time_base: Fraction, nominal: Fraction | None) -> float:
    """Frames per second from the timestamps; the container's rate where it agrees (it is exact)."""
    if len(pts) >= 2 and pts[-1] > pts[0]:
        measured = Fraction(len(pts) - 1) / (int(pts[-1] - pts[0]) * time_base)
        if nominal and abs(float(nominal) / float(measured) - 1) < 2e-3:
            return float(nominal)
        return float(measured)
    return float(nominal) if nominal else 0.0
