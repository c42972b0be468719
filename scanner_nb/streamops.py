"""``sc.streams`` and ``sc.partitioner``: stream operations as plan nodes.

Every operation takes one argument per stream (a list) and maps each output row to one input
row (or a null). Arguments are checked at the call: a bad value is an error naming the
operation, the stream and the value, before anything runs.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Sequence

import numpy as np

from .errors import RowIndexError, ScannerTypeError, ScannerValueError
from .plan import Ref, SampleNode

if TYPE_CHECKING:
    from .stream import Stream

__all__ = ["SliceList", "Partitioner", "StreamOps", "per_stream"]


class SliceList(list):
    """One value per slice of a stream, for a stream-config param after ``Slice``.

    Examples
    --------
    >>> SliceList([0.5, 0.7])
    SliceList([0.5, 0.7])
    """

    def __repr__(self) -> str:
        return f"SliceList({list(self)!r})"


def per_stream(values: Any, stream: Stream, what: str) -> list:
    """Expand a per-stream argument list to one value per (slice) stream.

    A plain list has one value per stream; after a ``Slice`` it has one value per sliced
    stream, each either a plain value (for all its slices) or a :class:`SliceList`.
    """
    node = stream._ref.node
    if not isinstance(values, (list, tuple)) or isinstance(values, SliceList):
        raise ScannerTypeError(
            f"{what} takes a list with one value per stream ({stream.num_streams}), got {values!r}")
    if node.slices is None:
        if len(values) != node.n_streams:
            raise ScannerValueError(
                f"{what} has {len(values)} value(s) but the input has {node.n_streams} stream(s); "
                f"give one value per stream")
        return list(values)
    if len(values) == node.n_streams and not any(isinstance(v, SliceList) for v in values):
        return list(values)
    if len(values) != node.n_parents:
        raise ScannerValueError(
            f"{what} has {len(values)} value(s) but the sliced input comes from {node.n_parents} "
            f"stream(s); give one value (or sp.SliceList) per stream")
    counts = np.bincount([p for p, _ in node.slices], minlength=node.n_parents)
    out = []
    for p, j in node.slices:
        value = values[p]
        if isinstance(value, SliceList):
            count = int(counts[p])
            if len(value) != count:
                raise ScannerValueError(
                    f"{what}: the SliceList for stream {p} has {len(value)} value(s) but the "
                    f"stream has {count} slice(s)")
            value = value[j]
        out.append(value)
    return out


def _int(value: Any, what: str, minimum: int | None = None) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise ScannerTypeError(f"{what} must be an int, got {value!r}")
    if minimum is not None and value < minimum:
        raise ScannerValueError(f"{what} must be >= {minimum}, got {value}")
    return int(value)


def _interval(value: Any, n: int, what: str) -> np.ndarray:
    if not isinstance(value, (list, tuple)) or len(value) not in (2, 3):
        raise ScannerTypeError(f"{what} must be (start, end) or (start, end, step), got {value!r}")
    start = _int(value[0], f"{what} start", 0)
    end = _int(value[1], f"{what} end", 0)
    step = _int(value[2], f"{what} step", 1) if len(value) == 3 else 1
    if start > end:
        raise ScannerValueError(f"{what}: start {start} is past end {end}")
    return np.arange(min(start, n), min(end, n), step, dtype=np.int64)


def _scanner_keywords(**aliases: str):
    """Accept Scanner's keyword names (``input=``, ``spacings=``, ``partitions=``) for a stream
    operation's parameters as well as this library's."""
    def decorate(method):
        @functools.wraps(method)
        def wrapper(self, *args, **kwargs):
            for alias, name in aliases.items():
                if alias in kwargs:
                    if name in kwargs:
                        raise ScannerTypeError(
                            f"sc.streams.{method.__name__} got both {alias!r} and {name!r}")
                    kwargs[name] = kwargs.pop(alias)
            return method(self, *args, **kwargs)

        return wrapper

    return decorate


@dataclass(frozen=True)
class _PartitionerSpec:
    """How a stream is cut into slices; ``rows_of(n)`` gives each slice's rows."""

    label: str
    rows_of: Callable[[int], list[np.ndarray]]

    def __repr__(self) -> str:
        return f"sc.partitioner.{self.label}"


class Partitioner:
    """``sc.partitioner``: ways to cut a stream into slices for ``sc.streams.Slice``."""

    @staticmethod
    def all(size: int) -> _PartitionerSpec:
        """Consecutive groups of ``size`` rows."""
        size = _int(size, "partitioner.all size", 1)
        return _PartitionerSpec(f"all({size})", lambda n: [
            np.arange(i, min(i + size, n), dtype=np.int64) for i in range(0, max(n, 1), size)
            if i < n] or [np.zeros(0, np.int64)])

    @staticmethod
    def strided(stride: int, size: int) -> _PartitionerSpec:
        """Rows ``0, k, 2k, …`` in groups of ``size``."""
        stride = _int(stride, "partitioner.strided stride", 1)
        size = _int(size, "partitioner.strided size", 1)

        def rows_of(n):
            rows = np.arange(0, n, stride, dtype=np.int64)
            return [rows[i:i + size] for i in range(0, len(rows), size)] or [rows]

        return _PartitionerSpec(f"strided({stride}, {size})", rows_of)

    @staticmethod
    def range(start: int, end: int) -> _PartitionerSpec:
        """One slice: rows ``start:end``."""
        return _PartitionerSpec(f"range({start}, {end})",
                                lambda n: [_interval((start, end), n, "partitioner.range")])

    @staticmethod
    def ranges(intervals: Sequence[tuple[int, int]]) -> _PartitionerSpec:
        """One slice per ``(start, end)`` interval; intervals may overlap."""
        intervals = list(intervals)
        return _PartitionerSpec(f"ranges({intervals})", lambda n: [
            _interval(iv, n, "partitioner.ranges interval") for iv in intervals])

    @staticmethod
    def strided_range(start: int, end: int, stride: int) -> _PartitionerSpec:
        """One slice: rows ``start:end:stride``."""
        return _PartitionerSpec(f"strided_range({start}, {end}, {stride})", lambda n: [
            _interval((start, end, stride), n, "partitioner.strided_range")])


    @staticmethod
    def strided_ranges(intervals: Sequence[tuple[int, int]], stride: int) -> _PartitionerSpec:
        """One slice per ``(start, end)`` interval, every ``stride``-th row of it."""
        intervals, stride = list(intervals), _int(stride, "partitioner.strided_ranges stride", 1)
        return _PartitionerSpec(f"strided_ranges({intervals}, {stride})", lambda n: [
            _interval((*iv, stride), n, "partitioner.strided_ranges interval")
            for iv in intervals])

    @staticmethod
    def gather(groups: Sequence[Sequence[int]]) -> _PartitionerSpec:
        """One slice per group of rows, in the order given."""
        groups = [list(g) for g in groups]

        def rows_of(n):
            out = []
            for g in groups:
                rows = np.asarray(g, dtype=np.int64)
                bad = rows[(rows < 0) | (rows >= n)]
                if bad.size:
                    raise RowIndexError(f"partitioner.gather: row {int(bad[0])} is outside the "
                                        f"stream (length {n})")
                out.append(rows)
            return out

        return _PartitionerSpec(f"gather({groups})", rows_of)


#: Scanner's keyword names of each stream operation's per-stream arguments, in order: a
#: stream's argument may be a dict of them (``Range(frames, [{"start": 0, "end": 100}])``).
_KEYWORDS = {"Stride": ("stride",), "Range": ("start", "end"), "Ranges": ("intervals",),
             "StridedRange": ("start", "end", "stride"), "Gather": ("rows",),
             "RepeatNull": ("spacing",), "Repeat": ("spacing",)}


def _positional(label: str, value: Any, stream: int) -> Any:
    """A stream's argument given as Scanner's keyword dict, in its positional form.

    Examples
    --------
    >>> _positional("Range", {"start": 0, "end": 10}, 0), _positional("Stride", 3, 0)
    ((0, 10), 3)
    """
    if not isinstance(value, dict) or label not in _KEYWORDS:
        return value
    names = _KEYWORDS[label]
    if set(value) != set(names):
        raise ScannerTypeError(
            f"sc.streams.{label} of stream {stream} takes keywords {list(names)}, got "
            f"{sorted(value)}")
    return value[names[0]] if len(names) == 1 else tuple(value[n] for n in names)


def _stream_class():
    from .stream import Stream

    return Stream


class StreamOps:
    """``sc.streams``: Stride, Range, Ranges, StridedRange, StridedRanges, Gather, RepeatNull,
    Repeat, All, Slice and Unslice, each taking one argument per stream (Scanner's keyword
    names ``input=``, ``spacings=`` and ``partitions=`` work too)."""

    def __init__(self, client):
        self._client = client

    def _sample(self, stream: Stream, label: str, args: list, rows_for, slices=None,
                keep_slices=True) -> Stream:
        from .stream import Stream

        if not isinstance(stream, Stream):
            raise ScannerTypeError(f"sc.streams.{label} takes a Stream, got {type(stream).__name__}")
        values = [_positional(label, v, s)
                  for s, v in enumerate(per_stream(args, stream, f"sc.streams.{label}"))]
        mapping = [(s, rows_for(s, v, n)) for s, (v, n) in enumerate(zip(values, stream.lengths))]
        node = SampleNode(stream._ref, label, repr(args), mapping, slices, keep_slices)
        return Stream(self._client, Ref(node))

    @_scanner_keywords(input="stream")
    def Stride(self, stream: Stream, strides: Sequence[int]) -> Stream:
        """Every ``k``-th row: output length ⌈n/k⌉."""
        return self._sample(stream, "Stride", strides, lambda s, k, n: np.arange(
            0, n, _int(k, f"Stride of stream {s}", 1), dtype=np.int64))

    @_scanner_keywords(input="stream")
    def Range(self, stream: Stream, ranges: Sequence[tuple[int, int]]) -> Stream:
        """Rows ``start:end`` (half-open; an end past the stream is cut to its length)."""
        return self._sample(stream, "Range", ranges,
                            lambda s, r, n: _interval(r, n, f"Range of stream {s}"))

    @_scanner_keywords(input="stream")
    def Ranges(self, stream: Stream, intervals: Sequence[Sequence[tuple[int, int]]]) -> Stream:
        """The intervals concatenated in the given order (overlaps repeat rows)."""
        def rows_for(s, ivs, n):
            if not isinstance(ivs, (list, tuple)):
                raise ScannerTypeError(f"Ranges of stream {s} takes a list of (start, end)")
            parts = [_interval(iv, n, f"Ranges of stream {s}") for iv in ivs]
            return np.concatenate(parts) if parts else np.zeros(0, np.int64)

        return self._sample(stream, "Ranges", intervals, rows_for)

    @_scanner_keywords(input="stream")
    def StridedRange(self, stream: Stream, ranges: Sequence[tuple[int, int, int]]) -> Stream:
        """Rows ``start:end:k``."""
        def rows_for(s, r, n):
            if not isinstance(r, (list, tuple)) or len(r) != 3:
                raise ScannerTypeError(f"StridedRange of stream {s} takes (start, end, stride)")
            return _interval(r, n, f"StridedRange of stream {s}")

        return self._sample(stream, "StridedRange", ranges, rows_for)

    @_scanner_keywords(input="stream")
    def StridedRanges(self, stream: Stream, intervals: Sequence, stride: int | Sequence[int]
                      ) -> Stream:
        """Scanner's ``StridedRanges``: every ``stride``-th row of each ``(start, end)``
        interval, concatenated. ``intervals`` is one list of intervals for every stream (or
        one list per stream), ``stride`` an int (or one per stream)."""
        n = stream.num_streams if isinstance(stream, _stream_class()) else 1
        if isinstance(intervals, (list, tuple)) and intervals and all(
                isinstance(v, (list, tuple)) and len(v) == 2 and all(
                    isinstance(x, (int, np.integer)) for x in v) for v in intervals):
            intervals = [intervals] * n
        strides = stride if isinstance(stride, (list, tuple)) else [stride] * n

        def rows_for(s, args, n_rows):
            ivs, k = args
            k = _int(k, f"StridedRanges stride of stream {s}", 1)
            parts = [_interval((*iv, k), n_rows, f"StridedRanges of stream {s}") for iv in ivs]
            return np.concatenate(parts) if parts else np.zeros(0, np.int64)

        if not isinstance(intervals, (list, tuple)) or len(intervals) != len(strides):
            raise ScannerValueError(
                f"sc.streams.StridedRanges: {len(strides)} stride(s) for intervals {intervals!r}")
        return self._sample(stream, "StridedRanges", list(zip(intervals, strides)), rows_for)

    @_scanner_keywords(input="stream")
    def Gather(self, stream: Stream, indices: Sequence[Sequence[int]]) -> Stream:
        """The rows at ``indices`` in the order given (repeats allowed)."""
        def rows_for(s, idx, n):
            rows = np.asarray(list(idx) if not isinstance(idx, np.ndarray) else idx)
            if rows.size and not np.issubdtype(rows.dtype, np.integer):
                raise ScannerTypeError(f"Gather of stream {s} takes integer rows, got {idx!r}")
            rows = rows.astype(np.int64).ravel()
            bad = rows[(rows < 0) | (rows >= n)]
            if bad.size:
                raise RowIndexError(
                    f"Gather of stream {s}: row {int(bad[0])} is outside the stream (length {n})")
            return rows

        return self._sample(stream, "Gather", indices, rows_for)

    @_scanner_keywords(input="stream", spacings="counts")
    def RepeatNull(self, stream: Stream, counts: Sequence[int]) -> Stream:
        """Each element followed by ``n - 1`` nulls."""
        def rows_for(s, k, n):
            k = _int(k, f"RepeatNull of stream {s}", 1)
            rows = np.full((n, k), -1, dtype=np.int64)
            rows[:, 0] = np.arange(n)
            return rows.ravel()

        return self._sample(stream, "RepeatNull", counts, rows_for)

    @_scanner_keywords(input="stream", spacings="counts")
    def Repeat(self, stream: Stream, counts: Sequence[int]) -> Stream:
        """Each element repeated ``n`` times."""
        return self._sample(stream, "Repeat", counts, lambda s, k, n: np.repeat(
            np.arange(n, dtype=np.int64), _int(k, f"Repeat of stream {s}", 1)))

    @_scanner_keywords(input="stream")
    def All(self, stream: Stream) -> Stream:
        """Every row (Scanner's ``All``): the stream itself."""
        return stream

    @_scanner_keywords(input="stream", partitions="partitioners")
    def Slice(self, stream: Stream, partitioners: Sequence[_PartitionerSpec]) -> Stream:
        """Cut each stream into slices processed as independent streams (see ``Unslice``)."""
        from .stream import Stream

        if not isinstance(stream, Stream):
            raise ScannerTypeError(f"sc.streams.Slice takes a Stream, got {type(stream).__name__}")
        if stream._ref.node.slices is not None:
            raise ScannerValueError("Slice of a sliced stream: Unslice it first")
        values = per_stream(partitioners, stream, "sc.streams.Slice")
        mapping, slices = [], []
        for s, (spec, n) in enumerate(zip(values, stream.lengths)):
            if not isinstance(spec, _PartitionerSpec):
                raise ScannerTypeError(
                    f"Slice of stream {s} takes a sc.partitioner value, got {spec!r}")
            for j, rows in enumerate(spec.rows_of(n)):
                mapping.append((s, rows))
                slices.append((s, j))
        node = SampleNode(stream._ref, "Slice", repr(list(values)), mapping, tuple(slices),
                          n_parents=stream.num_streams)
        return Stream(self._client, Ref(node))

    @_scanner_keywords(input="stream")
    def Unslice(self, stream: Stream) -> Stream:
        """Concatenate the slices' outputs in order, back to one stream per sliced stream."""
        from .stream import Stream

        if not isinstance(stream, Stream):
            raise ScannerTypeError(f"sc.streams.Unslice takes a Stream, got {type(stream).__name__}")
        node = stream._ref.node
        if node.slices is None:
            raise ScannerValueError("Unslice of a stream that is not sliced")
        members: list[list[int]] = [[] for _ in range(node.n_parents)]
        for t, (p, _) in enumerate(node.slices):  # every parent, also one with no slice
            members[p].append(t)
        mapping = []
        for ts in members:
            in_streams = np.concatenate([np.full(node.lengths[t], t, np.int64) for t in ts] or
                                        [np.zeros(0, np.int64)])
            in_rows = np.concatenate([np.arange(node.lengths[t], dtype=np.int64) for t in ts] or
                                     [np.zeros(0, np.int64)])
            mapping.append((in_streams, in_rows))
        out = SampleNode(stream._ref, "Unslice", "", mapping, keep_slices=False)
        return Stream(self._client, Ref(out))
