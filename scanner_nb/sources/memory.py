"""``MemoryStream``: in-memory elements as an input stream."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from ..errors import ScannerTypeError
from ..plan import ListSource
from ..types import lookup_type, stack_elements, type_of

__all__ = ["MemoryStream", "resolve_type"]


def resolve_type(type_: Any) -> str:
    """The registered name of an element type given as a class, ``typing.Any`` or a name."""
    stream_type = type_of(type_)
    if stream_type is None:
        raise ScannerTypeError(
            f"{type_!r} is not a stream element type; use sp.FrameType, bytes, typing.Any or a "
            f"type registered with sp.types.register_type")
    return lookup_type(stream_type.name).name


class MemoryStream(ListSource):
    """A stream of in-memory elements, for ``sc.io.Input([...])``.

    Parameters
    ----------
    elements : sequence
        The elements (a list, or an ``(n, H, W, C)`` array of frames).
    type : type, optional
        The element type: ``typing.Any`` (default), ``bytes``, ``sp.FrameType`` or a registered
        type. An ``(n, H, W, C)`` ``uint8`` array defaults to ``sp.FrameType``.

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
        if not hasattr(elements, "__getitem__") or not hasattr(elements, "__len__"):
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
