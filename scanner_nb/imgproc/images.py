"""Image files in and out: ``ImageDecoder`` (bytes -> RGB frame) and ``ImageEncoder`` (frame ->
bytes), as in Scanner's tutorial on sources and sinks.

OpenCV decodes and encodes the common formats (JPEG, PNG, BMP, TIFF, WebP, ...); imageio serves
whatever else it reads or writes (GIF, ...). Frames are RGB ``uint8`` ``H×W×3``: gray images are
expanded to three channels and alpha is dropped, as Scanner's decoder did.
"""

from __future__ import annotations

import io
from typing import Any, Sequence

import numpy as np

from ..devices import to_host
from ..errors import ScannerTypeError, ScannerValueError
from ..kernel import Kernel, register_python_op
from ..types import FrameType

__all__ = ["ImageDecoder", "ImageEncoder", "decode_image", "encode_image"]


def _to_rgb(image: np.ndarray) -> np.ndarray:
    if image.dtype != np.uint8:  # 16-bit or float files: scale to 8 bits
        top = 65535 if image.dtype == np.uint16 else max(float(image.max()), 1.0)
        image = np.clip(image.astype(np.float32) * (255 / top) + 0.5, 0, 255).astype(np.uint8)
    if image.ndim == 2:
        image = image[..., None]
    if image.shape[-1] == 1:
        return np.repeat(image, 3, axis=-1)
    return np.ascontiguousarray(image[..., :3])


def decode_image(data: bytes) -> np.ndarray:
    """An image file's bytes as an RGB ``uint8`` ``H×W×3`` frame (the first frame of an
    animation).

    Examples
    --------
    >>> frame = np.full((2, 3, 3), (255, 0, 0), np.uint8)
    >>> decode_image(encode_image(frame, "png"))[0, 0]
    array([255,   0,   0], dtype=uint8)
    """
    import cv2

    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise ScannerTypeError(f"ImageDecoder takes bytes, got {type(data).__name__}")
    buffer = np.frombuffer(data, np.uint8)
    image = cv2.imdecode(buffer, cv2.IMREAD_COLOR_RGB) if buffer.size else None
    if image is not None:
        return image
    import imageio.v3 as iio

    try:
        image = iio.imread(bytes(data), index=0)
    except Exception as exc:  # imageio raises several kinds for data it cannot read
        raise ScannerValueError(
            f"cannot decode {len(data)} bytes as an image (starting {bytes(data[:8])!r}): "
            f"{exc}") from None
    return _to_rgb(np.asarray(image))


def encode_image(frame: Any, format: str = "png", quality: int | None = None) -> bytes:
    """An RGB frame as the bytes of an image file of ``format`` (``"jpg"``, ``"png"``, ...).

    ``quality`` (1-100) applies to JPEG and WebP.

    Examples
    --------
    >>> encode_image(np.zeros((2, 2, 3), np.uint8), "png")[:4]
    b'\\x89PNG'
    """
    import cv2

    extension = "." + str(format).lower().lstrip(".")
    frame = np.asarray(to_host(frame))
    if frame.ndim != 3 or frame.dtype != np.uint8:
        raise ScannerValueError(
            f"ImageEncoder takes uint8 H×W×C frames, got {frame.dtype} of shape {frame.shape}")
    params = []
    if quality is not None and extension in (".jpg", ".jpeg", ".webp"):
        flag = cv2.IMWRITE_WEBP_QUALITY if extension == ".webp" else cv2.IMWRITE_JPEG_QUALITY
        params = [flag, int(quality)]
    if frame.shape[-1] in (1, 3) and cv2.haveImageWriter("x" + extension):
        image = frame if frame.shape[-1] == 1 else cv2.cvtColor(frame, cv2.COLOR_RGB2BGR)
        ok, encoded = cv2.imencode(extension, image, params)
        if ok:
            return encoded.tobytes()
    import imageio.v3 as iio

    out = io.BytesIO()
    try:
        iio.imwrite(out, frame, extension=extension)
    except Exception as exc:  # an unknown format
        raise ScannerValueError(f"cannot encode a frame as {format!r}: {exc}") from None
    return out.getvalue()


@register_python_op(batch=8)
class ImageDecoder(Kernel):
    """Decode image files (bytes, e.g. from ``sp.FilesStream``) to RGB frames.

    Examples
    --------
    >>> frames = sc.ops.ImageDecoder(img=sc.io.Input([sp.FilesStream(paths)]))  # doctest: +SKIP
    """

    def execute(self, img: Sequence[bytes]) -> Sequence[FrameType]:
        return [decode_image(data) for data in img]


@register_python_op(batch=8)
class ImageEncoder(Kernel):
    """Encode frames as image files of ``format`` (``"png"`` default, ``"jpg"``, ``"bmp"``,
    ``"webp"``, or any format imageio writes); ``quality`` for JPEG and WebP.

    Examples
    --------
    >>> files = sc.ops.ImageEncoder(frame=frames, format="jpg")  # doctest: +SKIP
    """

    @classmethod
    def check_args(cls, format="png", quality=None):
        encode_image(np.zeros((2, 2, 3), np.uint8), format, quality)

    def __init__(self, config, format: str = "png", quality: int | None = None):
        super().__init__(config)
        self.format, self.quality = format, quality

    def execute(self, frame: Sequence[FrameType]) -> Sequence[bytes]:
        return [encode_image(f, self.format, self.quality) for f in frame]
