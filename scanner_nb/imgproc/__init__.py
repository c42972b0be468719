"""Built-in image ops, as in Scanner's scannertools: ``import scanner_nb.imgproc`` registers
``Resize``, ``ConvertColor``, ``Blur``, ``Histogram``, ``FrameDifference``, ``OpticalFlow``,
``Montage``, ``ShotBoundaries``, ``ImageDecoder`` and ``ImageEncoder``.

- :mod:`.arrays`: the image functions on numpy or CuPy arrays (the GPU paths, and the reference).
- :mod:`.ops`: the ops: OpenCV on the CPU, :mod:`.arrays` on a GPU.
- :mod:`.images`: image files in and out (``ImageDecoder``, ``ImageEncoder``).
- :mod:`.shots`: scannertools' shot detection (``shot_boundaries``, ``ShotBoundaries``).

The examples of the image functions are in :mod:`.arrays`.
"""

from .arrays import (
    CONVERSIONS,
    blur,
    convert_color,
    frame_difference,
    gaussian_kernel,
    histogram,
    resize,
)
from .images import ImageDecoder, ImageEncoder, decode_image, encode_image
from .ops import (
    INTERPOLATIONS,
    Blur,
    ConvertColor,
    FrameDifference,
    Histogram,
    Montage,
    OpticalFlow,
    Resize,
    conversion_code,
)
from .shots import ShotBoundaries, shot_boundaries

__all__ = [
    "resize",
    "convert_color",
    "blur",
    "gaussian_kernel",
    "histogram",
    "frame_difference",
    "CONVERSIONS",
    "INTERPOLATIONS",
    "conversion_code",
    "decode_image",
    "encode_image",
    "Resize",
    "ConvertColor",
    "Blur",
    "Histogram",
    "FrameDifference",
    "OpticalFlow",
    "Montage",
    "ImageDecoder",
    "ImageEncoder",
    "ShotBoundaries",
    "shot_boundaries",
]
