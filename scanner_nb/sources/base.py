"""The Source protocol: what every input stream of a plan is (memory, video, stored, persisted).

The engine (``plan``, ``graph``, ``stream``, ``client``) talks to inputs only through this
class; it never probes them with ``getattr``/``hasattr``. A source is one stream:

================  ====================================================================
``type_name``     the registered element type (``"FrameType"``, ``"bytes"``, ``"Any"``, ...)
``__len__``       its number of rows
``label``         a short human name for reprs and errors (``NamedVideoStream 'movie'``)
``name``          the user's name for it, or ``None``
``token``         its identity: equal tokens mean equal elements (file path + size + mtime,
                  the in-memory elements' hash, a stored version); graph keys are built on it
``fps``           frames per second of the video it comes from, or ``None``
``frame_bytes``   bytes of one frame (frame sources), or ``None``: sizes default partitions
``frame_shape``   ``(H, W, C)`` when every frame has it, or ``None``
``check_call()``  the slow part of checking (a video's demux) as a picklable call, run for
                  all sources at once on the workers or local threads; ``checked()`` takes
                  its result
``check()``       validate now (at ``sc.io.Input``), so a bad input fails at the call
``fixed()``       the source a plan keeps: itself, or a stored stream fixed at its version
``partition()``   split sorted needed rows into partitions (a video aligns them to keyframes)
``shared()``      data every read task needs (a video's index), put in the graph ONCE as its
                  own key, or ``None``
``read_task()``   the Dask task that reads one partition into a :class:`~scanner_nb.types.Batch`
``follows()``     whether a partition continues the previous one's reader (ordered reads)
``layers()``      extra graph layers the read tasks depend on (persisted partitions)
``read()``        the elements at rows, here and now (``load()``, tests)
================  ====================================================================

Examples
--------
>>> from scanner_nb.sources.memory import ListSource
>>> src = ListSource([10, 11, 12])
>>> len(src), src.type_name, [p.tolist() for p in src.partition(np.arange(3), 2)]
(3, 'Any', [[0, 1], [2]])
"""

from __future__ import annotations

import abc
import os
from typing import Any

import numpy as np

__all__ = [
    "DEFAULT_ROWS",
    "FRAME_PARTITION_BYTES",
    "MIN_ROWS",
    "Payload",
    "Source",
    "check_sources",
    "default_rows",
    "frame_partition_rows",
    "memory_partitions",
]

#: Rows per partition when neither the client nor a source says otherwise: frames are sized
#: to about 64 MiB a partition, other elements to 4,096 rows (see README, "Partitions").
DEFAULT_ROWS = 4096
MIN_ROWS = 64
FRAME_PARTITION_BYTES = 64 << 20


def default_rows(n: int) -> int:
    """Rows per partition when nobody chose: enough partitions to keep every core busy
    (four per core), at least 64 rows each and at most :data:`DEFAULT_ROWS`.

    >>> default_rows(200_000), default_rows(100)
    (4096, 64)
    """
    per_core = -(-n // (4 * (os.cpu_count() or 1)))
    return int(min(DEFAULT_ROWS, max(MIN_ROWS, per_core)))


def frame_partition_rows(frame_bytes: int) -> int:
    """Frames per partition of about :data:`FRAME_PARTITION_BYTES`.

    >>> frame_partition_rows(360 * 640 * 3)
    97
    """
    return max(1, FRAME_PARTITION_BYTES // max(1, int(frame_bytes)))


def check_sources(sources: list[Source], session: Any) -> None:
    """Check ``sources`` (``sc.io.Input``): their :meth:`Source.check_call` calls run at once
    through ``session.map`` (a cluster's workers, or local threads), then each source's
    :meth:`Source.check`."""
    remote = not session.is_local
    calls = {i: call for i, s in enumerate(sources)
             if (call := s.check_call(remote)) is not None}
    for i, result in zip(calls, session.map(list(calls.values()), label="check inputs")):
        sources[i].checked(result)
    for s in sources:
        s.check()


def memory_partitions(rows: np.ndarray, partition_size: int) -> list[np.ndarray]:
    """Consecutive groups of ``partition_size`` needed rows.

    >>> [p.tolist() for p in memory_partitions(np.arange(5), 2)]
    [[0, 1], [2, 3], [4]]
    """
    return [rows[i:i + partition_size] for i in range(0, len(rows), partition_size)]


class Payload:
    """Data carried inside a task; an opaque box, so Dask does not walk through it."""

    __slots__ = ("value",)

    def __init__(self, value):
        self.value = value

    def __reduce__(self):
        return (Payload, (self.value,))


def unbox(payload: Payload) -> Any:
    """The task that makes a :class:`Payload` a graph key's value."""
    return payload.value


class Source(abc.ABC):
    """One input stream of a plan. Subclasses implement the abstract members; the others have
    defaults that fit a source with no frames, no video and nothing shared between tasks."""

    #: The registered element type (``"FrameType"``, ``"bytes"``, ``"Any"``, ...).
    type_name: str
    #: A short human name for reprs and errors.
    label: str = "source"
    #: The user's name for this stream, if any.
    name: str | None = None
    #: The identity of the elements: the same input gives the same token (a file's path, size
    #: and mtime; in-memory elements' hash; a stored version). Graph keys are built on it.
    token: str

    @abc.abstractmethod
    def __len__(self) -> int:
        """The number of rows."""

    @property
    def fps(self) -> float | None:
        """Frames per second of the video the rows come from, if any."""
        return None

    @property
    def frame_bytes(self) -> int | None:
        """Bytes of one frame, for frame sources whose frames share a size."""
        return None

    @property
    def frame_shape(self) -> tuple | None:
        """``(H, W, C)`` of every frame, when they share one."""
        return None

    def check_call(self, remote: bool) -> tuple | None:
        """The slow part of :meth:`check` as a picklable call ``(function, *args)``, or ``None``.

        :func:`check_sources` runs the calls of all the sources of an ``sc.io.Input`` at once
        where the session runs graphs (many videos are indexed in parallel on a cluster's
        workers) and hands each result to :meth:`checked`. ``remote``: the call runs in another
        process, so its result should hold only what this process needs.
        """
        return None

    def checked(self, result: Any) -> None:
        """Take the result of :meth:`check_call`'s call; :meth:`check` runs after it."""

    def check(self) -> None:
        """Validate the input now (``sc.io.Input`` calls it); raise a ScannerError if bad."""

    def fixed(self) -> Source:
        """What a plan reads from now on (``sc.io.Input`` calls it after :meth:`check`): this
        source, or one fixed at the content it names now (a stored stream's current version),
        so that a Stream's lengths, keys and data always come from one content."""
        return self

    @abc.abstractmethod
    def partition(self, rows: np.ndarray, partition_size: int | None) -> list[np.ndarray]:
        """Split sorted unique needed ``rows`` into partitions (``None``: this source's default)."""

    def shared(self) -> Any:
        """Data every read task of this source needs, stored once in the graph (or ``None``)."""
        return None

    @abc.abstractmethod
    def read_task(self, stream: int, rows: np.ndarray, shared: Any,
                  out: np.ndarray | None = None, after: list | None = None) -> tuple:
        """A Dask task reading ``rows`` into a Batch of stream index ``stream``.

        ``shared`` is the graph key holding :meth:`shared` (``None`` when it returned ``None``);
        put it in the task as an argument and Dask passes its value. ``out``, given only for
        frame sources with a ``frame_shape`` computed on local threads, is the slice of the
        result array to read the frames into (no final concatenation). ``after``, given only
        where :meth:`follows` said so, lists keys the read must wait for (put them in the task).
        """

    def follows(self, previous: np.ndarray, rows: np.ndarray) -> bool:
        """Whether partition ``rows`` continues the reader partition ``previous`` left (a long
        group of pictures cut in pieces): the graph then orders such reads (``after``)."""
        return False

    def layers(self) -> dict[str, dict]:
        """Graph layers (name -> tasks) the read tasks depend on (persisted partitions)."""
        return {}

    @abc.abstractmethod
    def read(self, rows: np.ndarray) -> list | np.ndarray:
        """The elements at sorted ``rows``, read here and now."""

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.label} rows={len(self)}>"
