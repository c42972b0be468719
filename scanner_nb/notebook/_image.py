"""Image-like values to uint8 arrays, and several images joined into one (for saved stills)."""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["join_images", "to_uint8_image"]


def to_uint8_image(value: Any) -> np.ndarray | None:
    """An H×W, H×W×3 or H×W×4 uint8 array for an image-like value, or None if it is not one.

    Floats are read as [0, 1], bools as {0, 255}, uint16 as [0, 65535], other integers are
    clipped to [0, 255]; H×W×1 becomes H×W. uint8 input is returned without a copy.

    >>> to_uint8_image(np.zeros((2, 3, 1), np.uint8)).shape
    (2, 3)
    >>> int(to_uint8_image(np.ones((2, 2), np.float32)).max())
    255
    >>> to_uint8_image(np.zeros(5)) is None, to_uint8_image("abc") is None
    (True, True)
    """
    if not isinstance(value, np.ndarray):
        if isinstance(value, (str, bytes)):
            return None
        if type(value).__module__.split(".")[0] == "cupy":  # a device array: copy to host
            try:
                value = value.get()
            except Exception:
                return None
        elif not (hasattr(value, "__array__") or hasattr(value, "__array_interface__")):
            return None  # not array-like (PIL images have __array_interface__)
        try:
            value = np.asarray(value)
        except Exception:
            return None
    a = value
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[..., 0]
    if a.ndim not in (2, 3) or (a.ndim == 3 and a.shape[2] not in (3, 4)) or 0 in a.shape:
        return None
    if a.dtype == np.uint8:
        return a
    if a.dtype == np.bool_:
        return a.astype(np.uint8) * 255
    if a.dtype == np.uint16:
        return (a >> 8).astype(np.uint8)
    if np.issubdtype(a.dtype, np.floating):
        return (np.clip(np.nan_to_num(a), 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    if np.issubdtype(a.dtype, np.integer):
        return np.clip(a, 0, 255).astype(np.uint8)
    return None


def join_images(pictures: list[np.ndarray], vertical: bool = False, gap: int = 8) -> np.ndarray:
    """Uint8 images side by side (or stacked) as one RGB image, on white, ``gap`` pixels apart.

    Gray images become RGB, alpha is dropped, and smaller ones are padded at their end.

    >>> join_images([np.zeros((2, 3), np.uint8), np.zeros((4, 1, 3), np.uint8)]).shape
    (4, 12, 3)
    >>> join_images([np.zeros((2, 3), np.uint8)] * 2, vertical=True, gap=1).shape
    (5, 3, 3)
    """
    rgb = [p[..., :3] if p.ndim == 3 else np.repeat(p[..., None], 3, axis=2) for p in pictures]
    across = 0 if vertical else 1  # the axis the pictures follow each other along
    side = max(p.shape[1 - across] for p in rgb)
    parts = []
    for p in rgb:
        shape = list(p.shape)
        shape[1 - across] = side
        padded = np.full(shape, 255, np.uint8)
        padded[: p.shape[0], : p.shape[1]] = p
        gap_shape = list(shape)
        gap_shape[across] = gap
        parts += [padded, np.full(gap_shape, 255, np.uint8)]
    return np.concatenate(parts[:-1], axis=across)
