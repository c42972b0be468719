"""The built-in image ops: OpenCV on the CPU, the array functions of :mod:`.arrays` on a GPU.

Names and arguments are Scanner's (scannertools' ``imgproc``): ``Resize`` (stream-config
``width``, ``height``, ``interpolation``, ``min``, ``preserve_aspect``), ``ConvertColor``
(stream-config ``conversion``: OpenCV's ``COLOR_*`` names or ``gray``/``hsv``/``bgr``),
``Blur``, ``Histogram``, ``FrameDifference``, ``OpticalFlow`` (Farneback) and ``Montage``.

On the CPU each frame goes through one OpenCV call, written into a preallocated batch where the
shapes allow (no stacking copy). On a GPU the CuPy paths of :mod:`.arrays` run; what they do
not implement (an interpolation other than bilinear, a ``COLOR_*`` code other than the three
short ones) runs through OpenCV on the host for that batch.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any, Callable, Sequence

import numpy as np

from ..devices import DeviceType, array_module, to_device, to_host
from ..errors import ScannerTypeError, ScannerValueError
from ..kernel import Kernel, register_python_op
from ..types import FrameType
from . import arrays
from .arrays import _positive_int

__all__ = ["Resize", "ConvertColor", "Blur", "Histogram", "FrameDifference", "OpticalFlow",
           "Montage", "INTERPOLATIONS", "conversion_code"]

_ANY_DEVICE = [(DeviceType.CPU, 1), (DeviceType.GPU, 1)]
_BATCH = 32

#: ``interpolation=`` names (Scanner's, OpenCV's ``INTER_*``; lower-case short names too).
INTERPOLATIONS = ("INTER_NEAREST", "INTER_LINEAR", "INTER_CUBIC", "INTER_AREA", "INTER_LANCZOS4")
_SHORT_CONVERSIONS = {"gray": "COLOR_RGB2GRAY", "hsv": "COLOR_RGB2HSV", "bgr": "COLOR_RGB2BGR"}
_ARRAY_CONVERSIONS = {v: k for k, v in _SHORT_CONVERSIONS.items()}  # what the GPU path does


def _cv2() -> ModuleType:
    import cv2

    return cv2


def _interpolation(name: Any) -> str:
    if not isinstance(name, str):
        raise ScannerTypeError(f"interpolation must be one of {INTERPOLATIONS}, got {name!r}")
    full = name.strip().upper()
    full = full if full.startswith("INTER_") else f"INTER_{full}"
    if full not in INTERPOLATIONS:
        raise ScannerValueError(
            f"unknown interpolation {name!r}: choose one of {', '.join(INTERPOLATIONS)}")
    return full


def conversion_code(conversion: Any) -> str:
    """The OpenCV ``COLOR_*`` name of a conversion given as ``"gray"``/``"hsv"``/``"bgr"``
    (from RGB) or as any ``COLOR_*`` name ``cv2`` has.

    Examples
    --------
    >>> conversion_code("gray"), conversion_code("color_rgb2hsv")
    ('COLOR_RGB2GRAY', 'COLOR_RGB2HSV')
    >>> conversion_code("COLOR_RGB2YCrCb")  # OpenCV's own mixed-case spelling
    'COLOR_RGB2YCrCb'
    """
    if not isinstance(conversion, str):
        raise ScannerTypeError(
            f"conversion must be a string such as 'COLOR_RGB2GRAY' or 'gray', got {conversion!r}")
    name = conversion.strip()
    if name.lower() in _SHORT_CONVERSIONS:
        return _SHORT_CONVERSIONS[name.lower()]
    for candidate in (name, name.upper()):  # OpenCV spells some in mixed case: COLOR_RGB2YCrCb
        if candidate.upper().startswith("COLOR_") and hasattr(_cv2(), candidate):
            return candidate
    raise ScannerValueError(
        f"unknown conversion {conversion!r}: give an OpenCV name such as 'COLOR_RGB2GRAY' "
        f"or one of {', '.join(_SHORT_CONVERSIONS)}")


def _device_type(config: Any) -> DeviceType:
    return getattr(config, "device_type", None) or DeviceType.CPU


def _per_frame(function: Callable, frames: Any) -> Any:
    """``function(frame)`` for each frame, into one preallocated array when the input is an
    ``(m, H, W, C)`` array (OpenCV writes each result in place), else a list.

    Never over the input itself: the engine may hand one array to two tasks (overlapping
    ``Ranges`` or slices, a stencil's neighbouring partitions)."""
    if not (isinstance(frames, np.ndarray) and frames.ndim == 4):
        return [None if f is None else function(f) for f in frames]
    first = function(frames[0])
    out = np.empty((len(frames), *first.shape), first.dtype)
    out[0] = first
    for i in range(1, len(frames)):
        dst = out[i]
        got = function(frames[i], dst)
        if got.ctypes.data != dst.ctypes.data:  # OpenCV chose to allocate: copy it over
            dst[...] = got
    return out


def _as_3d(image: np.ndarray) -> np.ndarray:
    return image[..., None] if image.ndim == 2 else image


class _ImageOp(Kernel):
    """Shared by the built-in ops: the array module of the chosen device."""

    _scanner_nb_internal = True

    def __init__(self, config):
        super().__init__(config)
        self.xp = array_module(_device_type(config))

    @property
    def on_cpu(self) -> bool:
        return self.xp is np

    def on_host(self, frames: Any, function: Callable) -> Any:
        """Run an OpenCV ``function`` per frame on the host and give the result back on the
        op's device (the GPU path's fallback)."""
        out = _per_frame(function, to_host(frames))
        return out if self.on_cpu else to_device(out, self.xp)

    def on_device(self, frames: Any, function: Callable) -> Any:
        """Run an array ``function`` (of :mod:`.arrays`) on the device, batched."""
        frames = to_device(frames, self.xp)
        if hasattr(frames, "ndim") and frames.ndim == 4:
            return function(frames)
        return [function(frame) for frame in frames]


@register_python_op(device_sets=_ANY_DEVICE, batch=_BATCH)
class Resize(_ImageOp):
    """Resize each frame to ``width`` × ``height`` (stream-config: one value per stream).

    ``interpolation`` is OpenCV's (``"INTER_LINEAR"``, default; ``"INTER_AREA"`` for
    downscaling without aliasing, ...). With ``preserve_aspect`` a ``width`` (or ``height``) of
    0 follows from the other; with ``min`` a frame smaller than the target is kept as it is.

    Examples
    --------
    >>> small = sc.ops.Resize(frame=frames, width=[640], height=[360])  # doctest: +SKIP
    """

    @classmethod
    def check_args(cls, width, height, interpolation="INTER_LINEAR", min=False,
                   preserve_aspect=False):
        _target_size(width, height, preserve_aspect)
        _interpolation(interpolation)

    def new_stream(self, width, height, interpolation="INTER_LINEAR", min=False,
                   preserve_aspect=False):
        self.size = _target_size(width, height, preserve_aspect)
        self.interpolation = _interpolation(interpolation)
        self.min, self.preserve_aspect = bool(min), bool(preserve_aspect)

    def _size_for(self, shape: tuple) -> tuple[int, int]:
        width, height = self.size
        if self.preserve_aspect:
            if width == 0:
                width = max(1, shape[1] * height // shape[0])
            else:
                height = max(1, shape[0] * width // shape[1])
        if self.min and shape[1] <= width and shape[0] <= height:
            width, height = shape[1], shape[0]
        return width, height

    def execute(self, frame: Sequence[FrameType]) -> Sequence[FrameType]:
        first = next((f for f in frame if f is not None), None)
        if first is None:
            return list(frame)
        width, height = self._size_for(first.shape)
        if not self.on_cpu and self.interpolation == "INTER_LINEAR":
            return self.on_device(frame, lambda f: arrays.resize(f, width, height, self.xp))
        cv2 = _cv2()
        code = getattr(cv2, self.interpolation)

        def one(f, dst=None):
            return _as_3d(cv2.resize(f, self._size_for(f.shape), dst=dst, interpolation=code))

        return self.on_host(frame, one)


def _target_size(width: Any, height: Any, preserve_aspect: Any) -> tuple[int, int]:
    if preserve_aspect and (width == 0) != (height == 0):
        given = ("height", height) if width == 0 else ("width", width)
        _positive_int(given[1], f"Resize {given[0]}")
        return int(width), int(height)
    return _positive_int(width, "Resize width"), _positive_int(height, "Resize height")


@register_python_op(device_sets=_ANY_DEVICE, batch=_BATCH)
class ConvertColor(_ImageOp):
    """``cv2.cvtColor`` with ``conversion`` per stream: an OpenCV name (``"COLOR_RGB2GRAY"``,
    ``"COLOR_RGB2HSV"``, ``"COLOR_RGB2LAB"``, ...; frames are RGB) or ``"gray"`` (``H×W×1``,
    BT.601), ``"hsv"`` (OpenCV's scale, hue 0-179) or ``"bgr"``.

    Examples
    --------
    >>> gray = sc.ops.ConvertColor(frame=frames, conversion=["COLOR_RGB2GRAY"])  # doctest: +SKIP
    """

    @classmethod
    def check_args(cls, conversion):
        conversion_code(conversion)

    def new_stream(self, conversion):
        self.code = conversion_code(conversion)

    def execute(self, frame: Sequence[FrameType]) -> Sequence[FrameType]:
        if not self.on_cpu and self.code in _ARRAY_CONVERSIONS:
            name = _ARRAY_CONVERSIONS[self.code]
            return self.on_device(frame, lambda f: arrays.convert_color(f, name, self.xp))
        cv2 = _cv2()
        code = getattr(cv2, self.code)

        def one(f, dst=None):
            if dst is not None and dst.shape[-1] == 1:  # a gray H×W×1 view OpenCV sees as H×W
                cv2.cvtColor(f, code, dst=dst[..., 0])
                return dst
            return _as_3d(cv2.cvtColor(f, code, dst=dst))

        return self.on_host(frame, one)


@register_python_op(device_sets=_ANY_DEVICE, batch=_BATCH)
class Blur(_ImageOp):
    """Gaussian blur, ``cv2.GaussianBlur(frame, (k, k), sigma)`` with reflected borders
    (``BORDER_REFLECT_101``); ``sigma <= 0`` derives it from ``kernel_size`` as OpenCV does.

    Examples
    --------
    >>> soft = sc.ops.Blur(frame=frames, kernel_size=5, sigma=1.5)  # doctest: +SKIP
    """

    @classmethod
    def check_args(cls, kernel_size, sigma=0.0):
        arrays.gaussian_kernel(kernel_size, sigma)

    def __init__(self, config, kernel_size: int, sigma: float = 0.0):
        super().__init__(config)
        arrays.gaussian_kernel(kernel_size, sigma)  # validates both
        self.kernel_size, self.sigma = int(kernel_size), float(sigma)

    def execute(self, frame: Sequence[FrameType]) -> Sequence[FrameType]:
        if not self.on_cpu:
            return self.on_device(
                frame, lambda f: arrays.blur(f, self.kernel_size, self.sigma, self.xp))
        cv2 = _cv2()
        k, sigma = self.kernel_size, max(self.sigma, 0.0)

        def one(f, dst=None):
            if dst is not None and dst.shape[-1] == 1:
                cv2.GaussianBlur(f[..., 0], (k, k), sigma, dst=dst[..., 0],
                                 borderType=cv2.BORDER_REFLECT_101)
                return dst
            return _as_3d(cv2.GaussianBlur(f, (k, k), sigma, dst=dst,
                                           borderType=cv2.BORDER_REFLECT_101))

        return self.on_host(frame, one)


@register_python_op(device_sets=_ANY_DEVICE, batch=_BATCH)
class Histogram(_ImageOp):
    """Per-channel histograms of ``bins`` equal bins over 0..256: one ``int64`` ``3×bins``
    numpy array per frame (``cv2.calcHist``; on a GPU one ``bincount``, copied back).

    Examples
    --------
    >>> hists = sc.ops.Histogram(frame=frames, bins=16)  # doctest: +SKIP
    """

    @classmethod
    def check_args(cls, bins=16):
        _positive_int(bins, "Histogram bins")

    def __init__(self, config, bins: int = 16):
        super().__init__(config)
        self.bins = _positive_int(bins, "Histogram bins")

    def execute(self, frame: Sequence[FrameType]) -> Sequence[Any]:
        if not self.on_cpu:
            counts = self.on_device(frame, lambda f: arrays.histogram(f, self.bins, self.xp))
            return list(to_host(counts))
        cv2, bins = _cv2(), self.bins
        return [_channel_histograms(cv2, f, bins) for f in frame]


_JOINT_BINS = 32  # a joint histogram of 32**3 bins (128 KB) still fits a core's cache


def _channel_histograms(cv2: ModuleType, frame: np.ndarray, bins: int) -> np.ndarray:
    """``int64`` ``(C, bins)`` counts of one frame. Three channels in up to 32 bins: one joint
    ``calcHist`` summed over the other two axes, one pass over the pixels instead of three
    (half the time at 720p); otherwise one ``calcHist`` per channel."""
    if frame.shape[-1] == 3 and bins <= _JOINT_BINS:
        joint = cv2.calcHist([frame], [0, 1, 2], None, [bins] * 3, [0, 256] * 3)
        joint = joint.astype(np.int64)  # float32 counts, each exact below 2**24
        return np.stack([joint.sum(axis=(1, 2)), joint.sum(axis=(0, 2)), joint.sum(axis=(0, 1))])
    return np.stack([cv2.calcHist([frame], [c], None, [bins], [0, 256]).ravel()
                     for c in range(frame.shape[-1])]).astype(np.int64)


@register_python_op(device_sets=_ANY_DEVICE, stencil=[-1, 0], batch=_BATCH)
class FrameDifference(_ImageOp):
    """``|frame - previous frame|`` per pixel, ``uint8`` (zero at a stream's first row).

    Examples
    --------
    >>> motion = sc.ops.FrameDifference(frame=frames)  # doctest: +SKIP
    """

    def execute(self, frame: Sequence[Sequence[FrameType]]) -> Sequence[FrameType]:
        # a null before a row (prev None): nothing to compare with, the difference is zero
        pairs = [(cur if prev is None else prev, cur) for prev, cur in frame]
        if not self.on_cpu:
            return [arrays.frame_difference(*to_device(list(pair), self.xp), self.xp)
                    for pair in pairs]
        cv2 = _cv2()
        shape = pairs[0][1].shape
        if any(cur.shape != shape for _, cur in pairs):
            return [cv2.absdiff(prev, cur) for prev, cur in pairs]
        out = np.empty((len(pairs), *shape), np.uint8)
        for i, (prev, cur) in enumerate(pairs):
            dst = out[i]
            if cv2.absdiff(prev, cur, dst=dst).ctypes.data != dst.ctypes.data:
                dst[...] = cv2.absdiff(prev, cur)
        return out


@register_python_op(stencil=[0, 1])
class OpticalFlow(Kernel):
    """Dense optical flow from each frame to the next (scannertools' ``OpticalFlow``): OpenCV's
    Farneback on the gray frames, with scannertools' parameters (pyramid scale 0.5, 3 levels,
    window 15, 3 iterations, poly_n 5, poly_sigma 1.2). One ``float32`` ``H×W×2`` array of
    ``(dx, dy)`` per frame; the last row's flow is to itself (zero).

    Examples
    --------
    >>> flow = sc.ops.OpticalFlow(frame=frames)  # doctest: +SKIP
    """

    def execute(self, frame: Sequence[FrameType]) -> FrameType:
        cv2 = _cv2()
        cur, nxt = frame
        if nxt is None:
            nxt = cur
        gray = [cv2.cvtColor(to_host(f), cv2.COLOR_RGB2GRAY) for f in (cur, nxt)]
        return cv2.calcOpticalFlowFarneback(gray[0], gray[1], None, 0.5, 3, 15, 3, 5, 1.2, 0)


@register_python_op(unbounded_state=True)
class Montage(Kernel):
    """A grid of the stream's frames (scannertools' ``Montage``): each frame resized to
    ``target_width`` (height by the aspect ratio) and placed left to right, ``frames_per_row``
    a row, ``num_frames`` in all. Each row's output is the montage so far (the frames up to
    it), so the row ``num_frames - 1`` holds the whole grid; later rows start a new one.

    Examples
    --------
    >>> grid = sc.ops.Montage(frame=sc.streams.Stride(frames, [30]), num_frames=12,
    ...                       target_width=160, frames_per_row=4)  # doctest: +SKIP
    """

    def __init__(self, config, num_frames: int, target_width: int, frames_per_row: int):
        super().__init__(config)
        self.num_frames = _positive_int(num_frames, "Montage num_frames")
        self.target_width = _positive_int(target_width, "Montage target_width")
        self.frames_per_row = _positive_int(frames_per_row, "Montage frames_per_row")
        self.image: np.ndarray | None = None
        self.seen = 0

    def reset(self) -> None:
        self.image, self.seen = None, 0

    def execute(self, frame: FrameType) -> FrameType:
        cv2 = _cv2()
        frame = to_host(frame)
        height = max(1, frame.shape[0] * self.target_width // frame.shape[1])
        if self.image is None or self.seen == self.num_frames:
            rows = -(-self.num_frames // self.frames_per_row)
            self.image = np.zeros((rows * height, self.frames_per_row * self.target_width,
                                   frame.shape[2]), np.uint8)
            self.seen = 0
        y, x = divmod(self.seen, self.frames_per_row)
        tile = self.image[y * height:(y + 1) * height,
                          x * self.target_width:(x + 1) * self.target_width]
        tile[...] = _as_3d(cv2.resize(frame, (self.target_width, height),
                                      interpolation=cv2.INTER_AREA))
        self.seen += 1
        return self.image.copy()
