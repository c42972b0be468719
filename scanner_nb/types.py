"""Element types of streams, their serializers, and the ``Batch`` a partition travels in.

A stream's elements have one type: ``FrameType`` (``uint8`` ``H×W×C`` arrays, RGB), ``bytes``,
``typing.Any`` (any picklable object) or a type registered with :func:`register_type`.
Serialization is used whenever elements leave a process or are stored.
"""

from __future__ import annotations

import collections.abc
import pickle
import typing
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np

from .errors import ScannerTypeError

__all__ = ["FrameType", "NullElement", "StreamType", "register_type", "lookup_type", "type_of",
           "Batch"]


class FrameType:
    """A video frame: a ``numpy.uint8`` array of shape ``(H, W, C)``, RGB (CuPy on GPU ops).

    Use it as the annotation of a stream parameter or a return value::

        def execute(self, frame: sp.FrameType) -> sp.FrameType: ...
    """


@dataclass(frozen=True)
class StreamType:
    """A registered element type: its name and how its elements become bytes and back."""

    name: str
    serialize: Callable[[Any], bytes]
    deserialize: Callable[[bytes], Any]
    annotation: Any = field(default=None, compare=False)

    @property
    def is_frame(self) -> bool:
        return self.name == "FrameType"

    def __reduce__(self):
        return (_known_type, (self.name, self.serialize, self.deserialize, self.annotation))


def _frame_to_bytes(frame: np.ndarray) -> bytes:
    frame = np.ascontiguousarray(frame)
    header = np.array([frame.ndim, *frame.shape], dtype=np.int64).tobytes()
    return np.dtype(frame.dtype).str.encode().ljust(8) + header + frame.tobytes()


def _frame_from_bytes(data: bytes) -> np.ndarray:
    dtype = np.dtype(data[:8].strip().decode())
    ndim = int(np.frombuffer(data, np.int64, 1, 8)[0])
    shape = tuple(int(n) for n in np.frombuffer(data, np.int64, ndim, 16))
    return np.frombuffer(data, dtype, offset=16 + 8 * ndim).reshape(shape).copy()



class _NullMeta(type):
    def __instancecheck__(cls, value) -> bool:
        return value is None or type.__instancecheck__(cls, value)


class NullElement(metaclass=_NullMeta):
    """Scanner's null element. Nulls (from ``RepeatNull``) are ``None`` here; Scanner code's
    ``isinstance(x, sp.NullElement)`` is true for them.

    Examples
    --------
    >>> isinstance(None, NullElement), isinstance(0, NullElement)
    (True, False)
    """


_REGISTRY: dict[str, StreamType] = {}


def _register(name: str, serialize, deserialize, annotation) -> StreamType:
    stream_type = StreamType(name, serialize, deserialize, annotation)
    _REGISTRY[name] = stream_type
    return stream_type


def _known_type(name: str, serialize, deserialize, annotation) -> StreamType:
    """Unpickle a type shipped with an op or a batch: a process that never registered it
    (a worker) knows it from then on; a name registered here already keeps its registration."""
    known = _REGISTRY.get(name)
    return known if known is not None else _register(name, serialize, deserialize, annotation)


_register("FrameType", _frame_to_bytes, _frame_from_bytes, FrameType)
_register("bytes", bytes, bytes, bytes)
_register("Any", pickle.dumps, pickle.loads, Any)


def register_type(cls: type) -> type:
    """Register ``cls`` as a stream element type under ``cls.__name__``.

    ``cls`` must define ``serialize(element) -> bytes`` and ``deserialize(data) -> element``
    (plain functions in the class body, as in Scanner). Registering a name again replaces it.
    Works as a call or as a decorator and returns ``cls``.

    Examples
    --------
    >>> @register_type
    ... class Float32Array:
    ...     def serialize(array): return array.astype("float32").tobytes()
    ...     def deserialize(data): return np.frombuffer(data, dtype="float32")
    >>> lookup_type("Float32Array").deserialize(b"\\x00\\x00\\x80?")
    array([1.], dtype=float32)
    """
    if not isinstance(cls, type):
        raise ScannerTypeError(f"register_type expects a class, got {cls!r}")
    missing = [m for m in ("serialize", "deserialize") if not callable(getattr(cls, m, None))]
    if missing:
        raise ScannerTypeError(
            f"type {cls.__name__!r} must define {' and '.join(missing)} to be registered"
        )
    if cls.__name__ in ("FrameType", "bytes", "Any"):
        raise ScannerTypeError(f"{cls.__name__!r} is a built-in type and cannot be replaced")
    _register(cls.__name__, cls.serialize, cls.deserialize, cls)
    return cls


def lookup_type(name: str) -> StreamType:
    """The registered type called ``name``; a :class:`ScannerTypeError` if there is none."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ScannerTypeError(
            f"element type {name!r} is not registered in this process; "
            f"register it with sp.types.register_type before using it"
        ) from None


def type_of(annotation: Any) -> StreamType | None:
    """The stream type an annotation names, or ``None`` if it names no stream type."""
    if annotation is Any:
        return _REGISTRY["Any"]
    if isinstance(annotation, str):
        return _REGISTRY.get(annotation.rsplit(".", 1)[-1])
    name = getattr(annotation, "__name__", None)
    registered = _REGISTRY.get(name) if name else None
    if registered is not None and registered.annotation in (annotation, None):
        return registered
    if registered is not None and getattr(annotation, "__qualname__", None) == getattr(
        registered.annotation, "__qualname__", ""
    ):
        return registered  # the same class re-defined by a re-run notebook cell
    return None


def sequence_depth(annotation: Any) -> tuple[int, Any]:
    """How many ``Sequence[...]`` wrap an annotation, and what is inside.

    >>> sequence_depth(Sequence[Sequence[bytes]])
    (2, <class 'bytes'>)
    """
    depth = 0
    while typing.get_origin(annotation) in (collections.abc.Sequence, list):
        (annotation,) = typing.get_args(annotation) or (Any,)
        depth += 1
    return depth, annotation


@dataclass
class Batch:
    """A partition: consecutive requested rows of one stream and their elements.

    Parameters
    ----------
    stream : int
        Index of the stream within its node.
    rows : numpy.ndarray
        Sorted row indices (into the stream) the elements belong to.
    elements : list or numpy.ndarray
        One element per row: an ``(n, H, W, C)`` array for frames whose shapes agree, else a list.
    nulls : numpy.ndarray or None
        Boolean mask of null rows (their element is ``None``); ``None`` when no row is null.
    type_name : str
        The registered element type; it serializes the elements when the batch is pickled.
    """

    stream: int
    rows: np.ndarray
    elements: list | np.ndarray
    nulls: np.ndarray | None = None
    type_name: str = "Any"

    def __len__(self) -> int:
        return len(self.rows)

    def element_list(self) -> list:
        """The elements as a list (frames stay numpy arrays)."""
        return list(self.elements)

    def take(self, positions: np.ndarray) -> Batch:
        """A new batch with the elements at ``positions`` (indices into this batch)."""
        positions = np.asarray(positions, dtype=np.int64)
        if isinstance(self.elements, np.ndarray) or hasattr(self.elements, "__cuda_array_interface__"):
            elements = self.elements[positions]
        else:
            elements = [self.elements[p] for p in positions.tolist()]
        nulls = None if self.nulls is None else self.nulls[positions]
        if nulls is not None and not nulls.any():
            nulls = None
        return Batch(self.stream, self.rows[positions], elements, nulls, self.type_name)

    def __reduce__(self):
        stream_type = lookup_type(self.type_name)
        elements = self.elements
        if hasattr(elements, "__cuda_array_interface__"):  # device frames travel as numpy
            elements = elements.get()
        elif isinstance(elements, list) and any(hasattr(e, "__cuda_array_interface__")
                                                for e in elements[:1]):
            elements = [None if e is None else e.get() for e in elements]
        if stream_type.name in ("Any", "bytes") or isinstance(elements, np.ndarray):
            payload = elements
        else:
            payload = [None if e is None else stream_type.serialize(e) for e in elements]
        builtin = stream_type.name in ("FrameType", "bytes", "Any")
        return (_rebuild_batch, (self.stream, self.rows, payload, self.nulls, self.type_name,
                                 None if builtin else stream_type))


def _rebuild_batch(stream, rows, payload, nulls, type_name, stream_type=None) -> Batch:
    stream_type = stream_type or lookup_type(type_name)
    if stream_type.name in ("Any", "bytes") or isinstance(payload, np.ndarray):
        elements = payload
    else:
        elements = [None if e is None else stream_type.deserialize(e) for e in payload]
    return Batch(stream, rows, elements, nulls, type_name)


def stack_elements(elements: Sequence, is_frame: bool) -> list | np.ndarray:
    """Frames whose shapes and dtypes agree as one ``(n, ...)`` array; anything else as a list."""
    if is_frame and elements and all(isinstance(e, np.ndarray) for e in elements):
        first = elements[0]
        if all(e.shape == first.shape and e.dtype == first.dtype for e in elements):
            return np.stack(elements)
    return list(elements)


def concat_batches(batches: Sequence[Batch]) -> Batch:
    """One batch holding the rows of ``batches`` in the order given."""
    if len(batches) == 1:
        return batches[0]
    first = batches[0]
    rows = np.concatenate([b.rows for b in batches]) if batches else np.empty(0, np.int64)
    if batches and all(isinstance(b.elements, np.ndarray) for b in batches) and len(
        {b.elements.shape[1:] for b in batches}
    ) == 1:
        elements = np.concatenate([b.elements for b in batches])
    else:
        elements = [e for b in batches for e in b.elements]
    masks = [b.nulls if b.nulls is not None else np.zeros(len(b), bool) for b in batches]
    nulls = np.concatenate(masks) if any(b.nulls is not None for b in batches) else None
    return Batch(first.stream, rows, elements, nulls, first.type_name)
