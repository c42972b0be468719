"""``MemoryStream``: in-memory elements as an input stream (and :class:`ListSource`, its base)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import xxhash
from dask.base import tokenize

from ..errors import ScannerTypeError
from ..types import Batch, lookup_type, stack_elements, type_of
from .base import Payload, Source, default_rows, frame_partition_rows, memory_partitions

__all__ = ["ListSource", "MemoryStream", "resolve_type"]


def resolve_type(type_: Any) -> str:
    """The registered name of an element type given as a class, ``typing.Any`` or a name."""
    stream_type = type_of(type_)
    if stream_type is None:
        raise ScannerTypeError(
            f"{type_!r} is not a stream element type; use sp.FrameType, bytes, typing.Any or a "
            f"type registered with sp.types.register_type")
    return lookup_type(stream_type.name).name


def _read_memory(stream: int, rows: np.ndarray, payload: Payload, out=None) -> Batch:
    """A partition of in-memory elements. The batch travels inside ``payload`` (so its type's
    serializer, not pickle, ships custom elements) and is handed out as a copy of what the
    user holds: a kernel may write into its input without the user's array seeing it."""
    batch = payload.value
    elements = batch.elements
    if isinstance(elements, np.ndarray) and out is not None:
        out[...] = elements
        elements = out
    elif isinstance(elements, np.ndarray):
        elements = elements.copy()
    elif batch.type_name == "FrameType":
        elements = [None if e is None else np.array(e) for e in elements]
    else:
        elements = list(elements)
    return Batch(stream, rows, elements, batch.nulls, batch.type_name)


class ListSource(Source):
    """In-memory elements (``sp.MemoryStream`` builds on it; doctests use it directly).

    Its token is a hash of the elements, so the same data gives the same graph keys.
    """

    def __init__(self, elements: Sequence, type_name: str = "Any", label: str = "MemoryStream"):
        self.elements = elements
        self.type_name = type_name
        self.label = label
        self._token: str | None = None

    @property
    def token(self) -> str:
        if self._token is None:
            self._token = _elements_token(self.elements, self.type_name)
        return self._token

    def __len__(self) -> int:
        return len(self.elements)

    @property
    def frame_bytes(self) -> int | None:
        if self.type_name != "FrameType" or not len(self.elements):
            return None
        first = self.elements[0]
        return int(first.nbytes) if isinstance(first, np.ndarray) else None

    @property
    def frame_shape(self) -> tuple | None:
        if isinstance(self.elements, np.ndarray) and self.elements.ndim == 4:
            return tuple(self.elements.shape[1:])
        return None

    def partition(self, rows, partition_size):
        if partition_size is None:
            partition_size = default_rows(len(rows))
            if self.frame_bytes:
                partition_size = min(partition_size, frame_partition_rows(self.frame_bytes))
        return memory_partitions(rows, partition_size)

    def read_task(self, stream: int, rows: np.ndarray, shared: Any, out=None,
                  after=None) -> tuple:
        """The read task with the partition's elements inside it, so a cluster ships only those."""
        return (_read_memory, stream, rows,
                Payload(Batch(stream, rows, self.read(rows), None, self.type_name)), out)

    def read(self, rows):
        elements = self.elements
        consecutive = len(rows) and rows[-1] - rows[0] + 1 == len(rows)
        if isinstance(elements, np.ndarray):  # consecutive rows: a view, no copy
            return elements[int(rows[0]):int(rows[-1]) + 1] if consecutive else elements[rows]
        if consecutive:
            return list(elements[int(rows[0]):int(rows[-1]) + 1])
        return [elements[r] for r in rows.tolist()]


def _elements_token(elements, type_name: str) -> str:
    """A hash of in-memory elements: bytes hashed directly (fast), anything else by Dask."""
    if type_name == "bytes" and isinstance(elements, list):
        digest = xxhash.xxh3_128()
        digest.update(np.fromiter(map(len, elements), np.int64, len(elements)).tobytes())
        digest.update(b"".join(elements))
        return digest.hexdigest()
    if type_name in ("Any", "FrameType") or isinstance(elements, np.ndarray):
        return tokenize(type_name, elements)
    stream_type = lookup_type(type_name)  # custom types: their own bytes
    return tokenize(type_name, [None if e is None else stream_type.serialize(e)
                                for e in elements])


class MemoryStream(ListSource):
    """A stream of in-memory elements, for ``sc.io.Input([...])``.

    Parameters
    ----------
    elements : sequence
        The elements (a list, or an ``(n, H, W, C)`` array of frames).
    type : type, optional
        The element type: ``typing.Any`` (default), ``bytes``, ``sp.FrameType`` or a registered
        type. An ``(n, H, W, C)`` ``uint8`` array defaults to ``sp.FrameType``.
    name : str, optional
        A name shown in reprs and previews.

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
        if not isinstance(elements, (list, tuple, np.ndarray)):
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
