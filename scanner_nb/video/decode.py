"""Decoding rows of a video file as RGB, through a per-process pool of positioned readers.

Costs, for a file of ``n`` frames in groups of pictures (GOPs) of ``g`` frames:
:func:`read_frames` seeks to the keyframe at or before the first row it needs and decodes
forward, so reaching a row costs O(g) decoded frames; a reader that already stands before the
row in the same GOP just decodes forward (reading row ``r + 1`` after row ``r`` decodes one
frame). Sparse rows cost one GOP prefix each.

Damage is found the same way on every path: every frame decoded on the way to a requested row
is checked, and a frame that decodes as corrupt taints the rest of its GOP (later frames are
predicted from it). Frame-threaded decoding does not flag damage deterministically, so a read
that meets damage is done again single-threaded, and that answer is the one returned.
"""

from __future__ import annotations

import collections
import os
import threading
from collections.abc import Iterable, Iterator
from typing import Any

import av
import numpy as np

from ..errors import ScannerTypeError, ScannerValueError, VideoError
from ..fsio import location
from ..log import get_logger
from ._av import AV_ERRORS, Converter, describe, open_container
from .index import VideoIndex, _stat, orient

__all__ = ["read_frames", "damaged_rows", "decode_stats", "reset_decode_stats",
           "close_readers", "SHORT_CLIP_FRAMES", "DAMAGED"]

_MAX_READERS_PER_FILE = max(4, os.cpu_count() or 1)
_MAX_FILES_WITH_IDLE_READERS = 16
_SEEK_RETRIES = 3
_log = get_logger("video")

#: Files of at most this many frames decode single-threaded: starting FFmpeg's frame threads
#: costs more than they save on a short clip (``bench/bench_video.py``, short clips row).
SHORT_CLIP_FRAMES = 64

_stats_lock = threading.Lock()
_decoded: collections.Counter[str] = collections.Counter()
_seeks: collections.Counter[str] = collections.Counter()
_rechecks: collections.Counter[str] = collections.Counter()


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
        _rechecks.clear()


def _seek_stats() -> dict[str, int]:
    """Seeks done in this process so far, per absolute path (for tests)."""
    with _stats_lock:
        return dict(_seeks)


def _recheck_stats() -> dict[str, int]:
    """Reads done again single-threaded after frame-threaded decoding met damage (for tests)."""
    with _stats_lock:
        return dict(_rechecks)


class _Suspect(Exception):
    """Frame-threaded decoding met damage: the read is done again single-threaded."""


class _Unreadable(Exception):
    """A row cannot be decoded; ``hard``: the decoder failed (an error, or no more frames)."""

    def __init__(self, why: str, hard: bool = False):
        super().__init__(why)
        self.hard = hard


class _Reader:
    """One open container and decoder for one file, used by one thread at a time.

    ``pos`` is the row of the next frame the decoder will give (``None`` when unknown: a seek
    is needed). Decoded frames are mapped to rows by their timestamps, or by counting from the
    keyframe a seek landed on (found by its byte position) where timestamps cannot tell frames
    apart. ``taint`` is the first row of the current GOP that decoded as corrupt; ``held`` a
    decoded frame and its row, given next (the decoder skipped the row asked before it).
    """

    def __init__(self, index: VideoIndex, threaded: bool):
        self.index = index
        self.threaded = threaded
        self.packets: Iterator[Any] | None = None
        self.pending: collections.deque[Any] = collections.deque()
        self.pos: int | None = None
        self.taint: int | None = None
        self.held: tuple[Any, int] | None = None
        self.decoded = 0  # frames decoded by the current read
        self.count: int | None = None  # next row by counting (``by_order`` files)
        self.last_used = 0
        self.convert = Converter()
        self._open()

    def _open(self) -> None:
        index = self.index
        self.container = open_container(index.path, index.storage_options)
        self.at_start = True  # nothing demuxed yet: decoding starts at the first packet
        try:
            self.stream = self.container.streams[index.stream_index]
            if self.stream.type != "video":
                raise VideoError(
                    f"{index.path!r} changed: its stream {index.stream_index} is not video"
                )
            self.stream.thread_type = "AUTO" if self.threaded else "NONE"
            for other in self.container.streams:
                if other.index != self.stream.index:
                    other.discard = av.stream.Discard.all
        except BaseException:
            self.container.close()
            raise

    def close(self) -> None:
        self.pending.clear()
        self.held = None
        if self.packets is not None:
            self.packets.close()  # type: ignore[attr-defined]
            self.packets = None
        self.container.close()

    # -- positioning ----------------------------------------------------------------------

    def spent(self) -> bool:
        """Whether no read continues this reader mid-GOP (unpositioned, at a keyframe, at the end)."""
        return self.pos is None or self.pos >= len(self.index) or self.index.is_keyframe(self.pos)

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
        self.pos = self.count = self.taint = self.held = None
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
            except AV_ERRORS:
                return self._seek(keyframe_row, earlier=len(index.keyframes) + 1)
        self.at_start = False
        with _stats_lock:
            _seeks[index.path] += 1
        self.packets = self.container.demux(self.stream)

    def _landed(self, packet: Any) -> bool:
        """Count rows from the keyframe packet a seek landed on (``by_order`` files)."""
        if not packet.is_keyframe:
            return False  # not decodable before a keyframe
        where = np.flatnonzero(self.index.keyframe_pos == (packet.pos if packet.pos is not None
                                                            else -2))
        if not len(where):  # an unknown keyframe: count from the very start instead
            self.packets.close()  # type: ignore[union-attr]
            self.container.close()
            self._open()
            self.at_start = False
            self.packets = self.container.demux(self.stream)
            self.count = 0
            return False
        self.count = int(self.index.keyframes[where[0]])
        return True

    def _next_frame(self) -> Any | None:
        """The next decoded frame, or ``None`` at the end of the stream."""
        while not self.pending:
            if self.packets is None:
                return None
            packet = next(self.packets, None)
            if packet is None:
                self.packets = None
                return None
            if (self.index.by_order and self.count is None and packet.size
                    and not self._landed(packet)):
                continue
            self.pending.extend(self.stream.codec_context.decode(packet))
        return self.pending.popleft()

    def _row_of(self, frame: Any) -> int | None:
        if self.index.by_order:
            r, self.count = self.count, (self.count or 0) + 1
            return r
        t = frame.pts
        if t is None:
            return self.pos  # no timestamp: assume it is the next frame
        pts = self.index.pts
        r = int(np.searchsorted(pts, t))
        if r < len(pts) and pts[r] == t:
            return r
        return None  # a frame the index does not know (dropped)

    # -- reading --------------------------------------------------------------------------

    def _frame_at(self, target: int) -> Any:
        """The decoded frame of row `target`; :class:`_Unreadable` if it cannot be decoded.

        After a seek, frames count only from the first one at a keyframe row: where the demuxer
        landed past the keyframe (some formats seek by approximate timestamps), the decoder
        skips ahead or gives the next GOP, and the reader seeks further back, finally from the
        start of the file.
        """
        index = self.index
        keyframe = index.keyframe_at_or_before(target)
        fresh = False  # just sought: wait for a frame at a keyframe row
        attempt = 0
        last = None
        if self.needs_seek(target):
            self._seek(keyframe, 0)
            fresh = True
        while True:
            if self.held is not None:  # decoded past a skipped row: the next row's frame
                (frame, r), self.held = self.held, None
            else:
                try:
                    frame = self._next_frame()
                except AV_ERRORS as e:
                    raise _Unreadable(f"the data is corrupt ({describe(e)})", hard=True) from None
                if frame is None:
                    if fresh and attempt < _SEEK_RETRIES:
                        attempt += 1
                        self._seek(keyframe, attempt if attempt < _SEEK_RETRIES else len(index))
                        continue
                    first_bad = keyframe if last is None else last + 1
                    raise _Unreadable(f"the decoder gives no frame from row {first_bad} on (the "
                                      f"file is truncated or corrupt)", hard=True)
                self.decoded += 1
                r = self._row_of(frame)
                if r is None:
                    continue
            if fresh:
                if not index.is_keyframe(r):
                    continue  # before decoding (re)starts at a keyframe: not trusted
                if r > target and attempt < _SEEK_RETRIES:
                    attempt += 1  # landed past the keyframe: seek further back
                    _log.debug("%r: a seek for row %d landed past its keyframe; seeking "
                               "further back (attempt %d)", index.path, target, attempt)
                    self._seek(keyframe, attempt if attempt < _SEEK_RETRIES else len(index))
                    continue
                fresh = False
            if r > target:  # kept for the rows after this one
                self.held, self.pos = (frame, r), r
                raise _Unreadable("the decoder skipped it (corrupt data)")
            if index.is_keyframe(r):
                self.taint = None
            if frame.is_corrupt and self.taint is None:
                self.taint = r  # later frames of the GOP are predicted from it
            self.pos, last = r + 1, r
            if r < target:
                continue  # decoded on the way, not needed
            if self.taint is not None:
                raise _Unreadable("it decodes as corrupt" if self.taint == r else
                                  f"it is predicted from row {self.taint}, which decodes as "
                                  f"corrupt")
            return frame

    def read(self, rows: np.ndarray, out: np.ndarray | None, rotate: bool, resize: bool,
             nulls: bool = False) -> tuple[dict[int, np.ndarray], list[int]]:
        """Decode `rows` (sorted, unique, in range) into `out`.

        Returns the frames whose size differs from `out`'s (the video changed resolution), by
        position, and the positions of the rows that cannot be decoded (with `nulls`; without,
        such a row is a :class:`VideoError`). A row that cannot be decoded because the decoder
        fails (an error, or no more frames) takes the rest of its GOP with it, as a read of
        each of those rows alone would. With ``out=None`` rows are decoded but not converted
        (to find the damaged ones).
        """
        index = self.index
        size = (index.width, index.height) if resize else None
        turn, flip = (index.rotation, index.hflip) if rotate else (0, False)
        odd: dict[int, np.ndarray] = {}
        bad: list[int] = []
        self.decoded = 0
        row_list = rows.tolist()
        gop_end = 0  # rows before it fall with the GOP a failed decode left
        try:
            for i, target in enumerate(row_list):
                if target < gop_end:
                    bad.append(i)
                    continue
                try:
                    frame = self._frame_at(target)
                except _Unreadable as e:
                    if self.threaded:
                        raise _Suspect(str(e)) from None
                    if not nulls:
                        raise VideoError(
                            f"cannot decode row {target} of {index.path!r}: {e}") from None
                    bad.append(i)
                    if e.hard:  # the decoder is lost: seek afresh for the next GOP
                        self.pos = self.taint = self.held = None
                        k = int(np.searchsorted(index.keyframes, target, side="right"))
                        gop_end = int(index.keyframes[k]) if k < len(index.keyframes) else len(
                            index)
                    continue
                if out is None:
                    continue
                rgb = orient(self.convert.rgb(frame, size), turn, flip)
                if rgb.shape == out.shape[1:]:
                    out[i] = rgb
                else:  # the video changed resolution: this frame keeps its own size
                    odd[i] = np.ascontiguousarray(rgb)
        finally:
            with _stats_lock:
                _decoded[index.path] += self.decoded
        return odd, bad


class _ReaderPool:
    """Open readers per file, each lent to one thread at a time; at most a few per file."""

    def __init__(self) -> None:
        self.forget()

    def acquire(self, index: VideoIndex, first_row: int, threaded: bool) -> _Reader:
        key = (index._key, threaded)
        with self.cond:
            while True:
                idle = self.idle.get(key, [])
                ready = [r for r in idle if not r.needs_seek(first_row)]
                if ready or (idle and self.count[key] >= _MAX_READERS_PER_FILE):
                    # a reader that reaches the row without seeking, closest first (the next
                    # piece of a GOP continues its reader); else, rather than take a reader
                    # another piece may continue, a new one; at the limit one that stands at
                    # no GOP's middle, else the idlest
                    reader = (max(ready, key=lambda r: r.pos) if ready
                              else min(idle, key=lambda r: (not r.spent(), r.last_used)))
                    idle.remove(reader)
                    if not idle:
                        del self.idle[key]
                    reader.index = index  # same file, same key: an equal index
                    return reader
                if self.count[key] < _MAX_READERS_PER_FILE:
                    self.count[key] += 1
                    break
                self.cond.wait()
        try:
            return _Reader(index, threaded)
        except BaseException:
            with self.cond:
                self.count[key] -= 1
                self.cond.notify()
            raise

    def release(self, reader: _Reader, keep: bool) -> None:
        key = (reader.index._key, reader.threaded)
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
            keys = [k for k in self.idle if path is None or k[0][0] == path]
            to_close = [r for k in keys for r in self.idle.pop(k)]
            for r in to_close:
                self.count[(r.index._key, r.threaded)] -= 1
        for r in to_close:
            r.close()

    def forget(self) -> None:  # in a forked child: the parent's readers are not ours to use
        self.cond = threading.Condition()
        self.idle: dict[tuple, list[_Reader]] = {}
        self.count: collections.Counter[tuple] = collections.Counter()
        self.clock = 0


_pool = _ReaderPool()
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_pool.forget)


def close_readers(path: str | os.PathLike | None = None) -> None:
    """Close the idle readers this process keeps open (of one file, or of all files).

    Readers in use by another thread are left alone. The next :func:`read_frames` opens the
    file again.
    """
    _pool.close(None if path is None else location(path))


def _read(index: VideoIndex, rows: np.ndarray, target: np.ndarray | None, rotate: bool,
          resize: bool, nulls: bool) -> tuple[dict[int, np.ndarray], list[int]]:
    """One reader's read of `rows` (see :meth:`_Reader.read`): frame-threaded for long
    undamaged files; where that meets damage, done again single-threaded, the answer every
    path gives."""
    threaded = not index.damaged and len(index) > SHORT_CLIP_FRAMES
    while True:
        reader = _pool.acquire(index, int(rows[0]), threaded)
        keep = False
        try:
            got = reader.read(rows, target, rotate, resize, nulls)
            keep = True
            return got
        except _Suspect:  # only frame-threaded reads raise it
            pass
        finally:
            _pool.release(reader, keep)
        threaded = False
        with _stats_lock:
            _rechecks[index.path] += 1


def _checked(index: VideoIndex, rows: Iterable[int] | np.ndarray) -> tuple[VideoIndex, np.ndarray]:
    """The full index and `rows` as ``int64``, checked: in range, and the file unchanged."""
    if not isinstance(index, VideoIndex):
        raise ScannerTypeError(f"index must be a VideoIndex, got {type(index).__name__}")
    index = index.full()
    rows_a = np.asarray(rows)
    if rows_a.dtype.kind not in "iu" and rows_a.size:
        raise ScannerTypeError(f"rows must be integers, got dtype {rows_a.dtype}")
    rows_a = rows_a.astype(np.int64, copy=False).reshape(-1)
    n = len(index)
    if rows_a.size and (rows_a.min() < 0 or rows_a.max() >= n):
        bad = int(rows_a[(rows_a < 0) | (rows_a >= n)][0])
        index.check_row(bad)
    if rows_a.size:
        # a file removed since indexing is "not found", not "corrupt"
        st = _stat(index.path, index.storage_options)
        if index.size and (st.st_size, st.st_mtime_ns) != (index.size, index.mtime_ns):
            raise VideoError(
                f"video file {index.path!r} changed since it was indexed; index it again"
            )
    return index, rows_a


#: What :func:`read_frames` does with a row that cannot be decoded.
DAMAGED = ("raise", "null")


def read_frames(
    index: VideoIndex,
    rows: Iterable[int] | np.ndarray,
    out: np.ndarray | None = None,
    *,
    rotate: bool = True,
    resize: bool = False,
    damaged: str = "raise",
) -> np.ndarray | list[np.ndarray | None]:
    """Decode the frames at `rows` as RGB, as a player shows them.

    Uses a reader from a small per-process pool of open decoders for the file (safe to call from
    several threads at once). A reader remembers where it stands: it seeks to the keyframe at or
    before the first row it needs only when that row is behind it or a keyframe lies between
    (seeking is O(GOP) decoded frames), and otherwise decodes forward, dropping frames that are
    not needed and stopping right after the last row. So reading row ``r + 1`` right after row
    ``r`` decodes one frame. Long files decode frame-threaded, short ones (at most
    :data:`SHORT_CLIP_FRAMES` frames) and damaged ones single-threaded.

    A row cannot be decoded when it decodes as corrupt, is predicted from a frame of its GOP
    that does, or the decoder skips it, fails or ends before it (a cut-off file). Which rows
    those are does not depend on the other rows read with it, nor on threads
    (:func:`damaged_rows` lists them).

    Parameters
    ----------
    index : VideoIndex
        From :func:`~scanner_nb.video.index_video`; full or light
        (:meth:`VideoIndex.summary`): a light one is made full here, once per process.
    rows : array_like of int
        Sorted, unique row indices (unsorted or repeated rows also work, at the cost of a copy).
    out : numpy.ndarray, optional
        Where to decode to: a writable ``(len(rows), H, W, 3)`` ``uint8`` array of the index's
        frame size (as shown), for instance a slice of a larger array that several calls fill
        in parallel (no copy afterwards). Default: a new array.
    rotate : bool
        Turn and mirror frames as the file's display matrix says (``index.rotation``,
        ``index.hflip``); ``False`` keeps the coded orientation.
    resize : bool
        Scale every frame to the first frame's size (``index.width`` x ``index.height``).
        Default: frames keep their own size where the video changes resolution.
    damaged : {"raise", "null"}
        A row that cannot be decoded raises a :class:`VideoError` naming it (``"raise"``), or
        comes back as ``None`` (``"null"``).

    Returns
    -------
    numpy.ndarray or list of numpy.ndarray or None
        ``(len(rows), H, W, 3)`` ``uint8`` RGB where all frames have one size, else a list of
        ``(H, W, 3)`` arrays; a list, with ``None`` for each damaged row, where rows are null.

    Raises
    ------
    RowIndexError
        If a row is outside the video.
    VideoNotFoundError
        If the file is gone.
    VideoError
        If the file changed since it was indexed (size or modification time), cannot be
        opened, or (``damaged="raise"``) a row cannot be decoded.

    Examples
    --------
    >>> import os, tempfile
    >>> from scanner_nb.samples import make_video, frame_index
    >>> from scanner_nb.video import index_video
    >>> index = index_video(make_video(os.path.join(tempfile.mkdtemp(), "a.mp4"), n_frames=30))
    >>> [frame_index(f) for f in read_frames(index, [5, 6, 29])]
    [5, 6, 29]
    >>> close_readers(index.path)
    """
    if damaged not in DAMAGED:
        raise ScannerValueError(f"damaged must be 'raise' or 'null', got {damaged!r}")
    index, rows_a = _checked(index, rows)
    width, height = index.display_size if rotate else (index.width, index.height)
    shape = (len(rows_a), height, width, 3)
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
        inverse = inverse.reshape(-1)
    target = out if out is not None and inverse is None else np.empty(
        (len(rows_a), height, width, 3), dtype=np.uint8)
    odd: dict[int, np.ndarray] = {}
    bad: list[int] = []
    if len(rows_a):
        odd, bad = _read(index, rows_a, target, rotate, resize, damaged == "null")
    if odd or bad:
        nulls = set(bad)
        frames = [None if i in nulls else odd.get(i, target[i]) for i in range(len(rows_a))]
        if inverse is not None:
            frames = [frames[j] for j in inverse.tolist()]
        if not nulls and len({f.shape for f in frames}) == 1:
            return np.stack(frames)
        return frames
    if inverse is None:
        return target
    if out is None:
        return target[inverse]
    np.take(target, inverse, axis=0, out=out)
    return out


def damaged_rows(index: VideoIndex, rows: Iterable[int] | np.ndarray | None = None,
                 step: int = 1024) -> np.ndarray:
    """The rows (of `rows`, default all) that cannot be decoded: where :func:`read_frames`
    raises, or with ``damaged="null"`` gives ``None``.

    Decodes them (no RGB conversion), `step` rows per read: a whole file costs one decode of
    it, the reads that meet damage a second, single-threaded one.

    Examples
    --------
    >>> import os, tempfile
    >>> from scanner_nb.samples import make_video
    >>> from scanner_nb.video import index_video
    >>> index = index_video(make_video(os.path.join(tempfile.mkdtemp(), "a.mp4"), n_frames=30))
    >>> damaged_rows(index).tolist()
    []
    >>> close_readers(index.path)
    """
    index, rows_a = _checked(index, np.arange(len(index.full())) if rows is None else rows)
    rows_a = np.unique(rows_a)
    bad = [piece[_read(index, piece, None, True, False, True)[1]]
           for piece in np.split(rows_a, range(step, len(rows_a), step))]
    return np.concatenate([np.zeros(0, np.int64), *bad])
