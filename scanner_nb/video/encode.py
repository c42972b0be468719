"""Encoding frames as an H.264 mp4 (PyAV / FFmpeg)."""

from __future__ import annotations

import io
import os
import tempfile
from collections.abc import Iterable, Iterator
from fractions import Fraction
from typing import Any

import av
import numpy as np

from ..errors import ScannerTypeError, ScannerValueError, VideoError
from ._av import AV_ERRORS, Converter, describe

__all__ = ["encode_mp4"]


def _as_rgb(frame: Any, i: int) -> np.ndarray:
    a = np.asarray(frame)
    if a.dtype != np.uint8:
        raise ScannerValueError(f"frame {i}: expected uint8 pixels, got dtype {a.dtype}")
    if a.ndim == 2:
        a = a[:, :, None]
    if a.ndim != 3 or a.shape[2] not in (1, 3, 4) or a.shape[0] < 1 or a.shape[1] < 1:
        raise ScannerValueError(
            f"frame {i}: expected an HxWx3 RGB, HxWx1 or HxW gray image, got shape {a.shape}"
        )
    if a.shape[2] == 1:
        a = np.repeat(a, 3, axis=2)
    elif a.shape[2] == 4:
        a = a[:, :, :3]  # RGBA: alpha dropped
    return a


def _pad_even(a: np.ndarray, pad: bool) -> np.ndarray:
    h, w = a.shape[:2]
    if pad and (h % 2 or w % 2):
        a = np.pad(a, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge")
    return np.ascontiguousarray(a)


def encode_mp4(
    frames: Iterable[np.ndarray],
    dest: str | os.PathLike | io.BytesIO,
    fps: float = 30.0,
    crf: int = 20,
    preset: str = "veryfast",
    pad_odd: bool = False,
) -> tuple[int, int]:
    """Encode frames as an H.264 mp4 that browsers play (yuv420p), keeping their exact size.

    Frames are encoded as they come (a generator is never held in memory). 4:2:0 chroma needs
    even widths and heights (H.264 crops in steps of two pixels there), so frames of an odd
    size are encoded in 4:4:4 (High 4:4:4 profile), which decodes to exactly their size; with
    `pad_odd` they are instead padded to even by repeating the last row / column and stay
    4:2:0 (what every browser plays). When writing a file, the
    file is written next to `dest` and renamed into place, with the index (``moov``) at the
    front so playback can start before the download ends.

    Parameters
    ----------
    frames : iterable of numpy.ndarray
        ``uint8`` ``H x W x 3`` RGB, or ``H x W x 1`` / ``H x W`` gray; all the same size.
    dest : str, os.PathLike or io.BytesIO
        Exactly where to write (no extension is added); a buffer (any object with ``write``)
        gets the whole file written at its current position.
    fps : float
        Frame rate.
    crf : int
        x264 constant rate factor, 0 (lossless) to 51; 20 is visually near lossless.
    preset : str
        x264 speed preset (``"ultrafast"`` … ``"veryslow"``).
    pad_odd : bool
        Pad odd sizes to even and encode 4:2:0, rather than keep them in 4:4:4.

    Returns
    -------
    (int, int)
        Frames written, bytes written.

    Raises
    ------
    ScannerValueError
        If there are no frames, or a frame has the wrong dtype, shape or size.

    Examples
    --------
    >>> import io
    >>> frames = [np.full((48, 64, 3), 16 * i, np.uint8) for i in range(10)]
    >>> buf = io.BytesIO()
    >>> n, nbytes = encode_mp4(frames, buf, fps=10)
    >>> n, nbytes == len(buf.getvalue())
    (10, True)
    >>> n, _ = encode_mp4([np.zeros((241, 321, 3), np.uint8)] * 2, buf)
    >>> with av.open(io.BytesIO(buf.getvalue()[nbytes:])) as c:
    ...     [(f.width, f.height) for f in c.decode(video=0)]
    [(321, 241), (321, 241)]
    """
    try:
        rate = Fraction(fps).limit_denominator(1001)
    except (TypeError, ValueError):
        raise ScannerValueError(f"fps must be a positive number, got {fps!r}") from None
    if not rate > 0:
        raise ScannerValueError(f"fps must be positive, got {fps!r}")
    if isinstance(crf, bool) or not isinstance(crf, (int, np.integer)) or not 0 <= crf <= 51:
        raise ScannerValueError(f"crf must be an integer from 0 to 51, got {crf!r}")
    iterator = iter(frames)
    try:
        first = next(iterator)
    except StopIteration:
        raise ScannerValueError("encode_mp4 needs at least one frame, got none") from None
    first_rgb = _as_rgb(first, 0)

    if isinstance(dest, (str, os.PathLike)):
        final = os.path.abspath(os.fspath(dest))
        try:
            fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".mp4", dir=os.path.dirname(final))
        except OSError as e:
            raise VideoError(f"cannot write {final!r}: {e.strerror or e}") from None
        os.close(fd)
        try:
            n = _encode(first_rgb, iterator, tmp, rate, int(crf), preset, True, pad_odd)
            os.replace(tmp, final)
        except BaseException:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise
        return n, os.path.getsize(final)
    if not hasattr(dest, "write"):
        raise ScannerTypeError(
            f"dest must be a path or a writable binary buffer, got {type(dest).__name__}"
        )
    # Encode into a private buffer, then write it out in one go: the mp4 muxer seeks to absolute
    # offsets, which would be wrong in a buffer that does not start empty. (FFmpeg can move the
    # index to the front only in files, so a buffer gets it at the end; a data: URL or a
    # download holds the whole file anyway.)
    scratch = io.BytesIO()
    n = _encode(first_rgb, iterator, scratch, rate, int(crf), preset, False, pad_odd)
    data = scratch.getbuffer()
    dest.write(data)
    return n, len(data)


def _encode(
    first: np.ndarray,
    rest: Iterator[np.ndarray],
    target: Any,
    rate: Fraction,
    crf: int,
    preset: str,
    faststart: bool,
    pad_odd: bool,
) -> int:
    h, w = first.shape[:2]
    even = w % 2 == 0 and h % 2 == 0
    pix_fmt = "yuv420p" if even or pad_odd else "yuv444p"
    options = {"movflags": "+faststart"} if faststart else {}
    try:
        container = av.open(target, mode="w", format="mp4", options=options)
    except AV_ERRORS as e:
        raise VideoError(f"cannot write mp4 to {target!r}: {describe(e)}") from None
    n = 0
    with container:
        stream = container.add_stream("libx264", rate=rate)
        stream.width, stream.height = (w + w % 2, h + h % 2) if pix_fmt == "yuv420p" else (w, h)
        stream.pix_fmt = pix_fmt
        stream.options = {"crf": str(crf), "preset": str(preset)}
        cc = stream.codec_context
        # tag what the RGB -> YUV conversion below does: BT.601 matrix, limited range
        cc.color_range = 1  # AVCOL_RANGE_MPEG
        cc.colorspace = 6  # AVCOL_SPC_SMPTE170M
        cc.color_primaries = 6  # AVCOL_PRI_SMPTE170M
        cc.color_trc = 6  # AVCOL_TRC_SMPTE170M
        frame_time_base = 1 / rate
        convert = Converter()  # one scaler for every frame (see Converter)

        def put(a: np.ndarray) -> None:
            nonlocal n
            vf = av.VideoFrame.from_ndarray(_pad_even(a, pix_fmt == "yuv420p"), format="rgb24")
            vf = convert(vf, format=pix_fmt, dst_colorspace="ITU601", dst_color_range="MPEG")
            vf.pts = n
            vf.time_base = frame_time_base
            try:
                for packet in stream.encode(vf):
                    container.mux(packet)
            except AV_ERRORS as e:
                raise VideoError(f"H.264 encoding failed at frame {n}: {describe(e)}") from None
            n += 1

        put(first)
        for i, frame in enumerate(rest, start=1):
            a = _as_rgb(frame, i)
            if a.shape[:2] != (h, w):
                raise ScannerValueError(
                    f"frame {i} is {a.shape[1]}x{a.shape[0]}, but the video is {w}x{h}: "
                    f"all frames must have one size (resize them first)"
                )
            put(a)
        try:
            for packet in stream.encode(None):
                container.mux(packet)
        except AV_ERRORS as e:
            raise VideoError(f"H.264 encoding failed at the end: {describe(e)}") from None
    return n
