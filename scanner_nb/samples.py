"""Small synthetic videos for tests, demos, notebooks and benchmarks, made locally.

Every frame made by :func:`make_video` carries its own index, drawn as large black and white
blocks (the index in binary, and every bit again inverted), above a smoothly moving colour
gradient. :func:`frame_index` reads it back, so a test can check *which* frame a decoder
returned, not just how many. The blocks are big and compared with their own inverse, so the
index survives lossy coding, a colour conversion and a bilinear resize to another size.

Examples
--------
>>> import os, tempfile
>>> from scanner_nb.samples import make_video, frame_index
>>> path = make_video(os.path.join(tempfile.mkdtemp(), "clip.mp4"), n_frames=24, gop=6)
>>> import av
>>> with av.open(path) as c:
...     [frame_index(f.to_ndarray(format="rgb24")) for f in c.decode(video=0)][:4]
[0, 1, 2, 3]
"""

from __future__ import annotations

import os
from fractions import Fraction

import av
import numpy as np

__all__ = ["make_video", "make_audio", "draw_frame", "frame_index", "INDEX_BITS"]

#: Bits of the index drawn into each frame: indices ``0 … 2**INDEX_BITS - 1``.
INDEX_BITS = 16
_CELLS = 8  # cells per band; 16 bits = 2 bands, plus 2 bands holding the inverted bits
_BANDS = 2 * INDEX_BITS // _CELLS  # 4
_CODE_FRACTION = 0.5  # the top half of the frame holds the code, the bottom half the gradient
_LIGHT, _DARK = 235, 20


def _band_edges(height: int) -> np.ndarray:
    code_h = max(_BANDS, int(round(height * _CODE_FRACTION)))
    return np.linspace(0, code_h, _BANDS + 1).round().astype(int)


def _cell_edges(width: int) -> np.ndarray:
    return np.linspace(0, width, _CELLS + 1).round().astype(int)


def draw_frame(index: int, width: int = 160, height: int = 96) -> np.ndarray:
    """Draw frame number `index`: an ``(height, width, 3)`` uint8 RGB image.

    Parameters
    ----------
    index : int
        The number to draw, ``0 <= index < 2**16``.
    width, height : int
        Size in pixels; at least 8 x 8 (16 x 16 or more to survive lossy coding).

    Examples
    --------
    >>> frame_index(draw_frame(1234))
    1234
    >>> draw_frame(0, 33, 17).shape
    (17, 33, 3)
    """
    index = int(index)
    if not 0 <= index < 2**INDEX_BITS:
        raise ValueError(f"index {index} outside 0..{2**INDEX_BITS - 1}")
    if width < 8 or height < 8:
        raise ValueError(f"frame size {width}x{height} is too small; use at least 8x8")
    y = np.arange(height, dtype=np.float32)[:, None]
    x = np.arange(width, dtype=np.float32)[None, :]
    t = index / 48.0
    frame = np.empty((height, width, 3), dtype=np.uint8)
    frame[..., 0] = 128 + 90 * np.sin(2 * np.pi * (x / width + t))
    frame[..., 1] = 128 + 90 * np.sin(2 * np.pi * (y / height + 0.7 * t))
    frame[..., 2] = 128 + 90 * np.cos(2 * np.pi * ((x + y) / (width + height) - 0.5 * t))
    bits = [(index >> b) & 1 for b in range(INDEX_BITS)]
    bits += [1 - v for v in bits]
    rows, cols = _band_edges(height), _cell_edges(width)
    for k, bit in enumerate(bits):
        band, cell = divmod(k, _CELLS)
        frame[rows[band] : rows[band + 1], cols[cell] : cols[cell + 1]] = _LIGHT if bit else _DARK
    return frame


def frame_index(frame: np.ndarray) -> int:
    """Read back the index that :func:`make_video` drew into a frame.

    Each bit is decided by comparing its block with the block holding the inverted bit, so no
    fixed threshold is involved: lossy coding, gray conversion and resizing (bilinear, to a size
    of roughly 32 x 32 or more) keep the answer.

    Parameters
    ----------
    frame : numpy.ndarray
        ``H x W x 3`` RGB, ``H x W x 1`` or ``H x W`` gray, any real dtype.

    Returns
    -------
    int
        The frame's index.

    Raises
    ------
    ValueError
        If the frame carries no index (a block and its inverse look alike): not one of ours,
        or badly damaged.

    Examples
    --------
    >>> frame_index(draw_frame(77, 64, 48))
    77
    """
    a = np.asarray(frame)
    if a.ndim == 3:
        a = a.astype(np.float32).mean(axis=2)
    elif a.ndim == 2:
        a = a.astype(np.float32)
    else:
        raise ValueError(f"expected an HxW or HxWxC image, got shape {a.shape}")
    height, width = a.shape
    rows, cols = _band_edges(height), _cell_edges(width)
    means = np.empty(2 * INDEX_BITS, dtype=np.float32)
    for k in range(2 * INDEX_BITS):
        band, cell = divmod(k, _CELLS)
        r0, r1, c0, c1 = rows[band], rows[band + 1], cols[cell], cols[cell + 1]
        # the middle half of the block, away from edges that coding or resizing blur
        dr, dc = (r1 - r0) // 4, (c1 - c0) // 4
        block = a[r0 + dr : max(r1 - dr, r0 + dr + 1), c0 + dc : max(c1 - dc, c0 + dc + 1)]
        means[k] = block.mean()
    diff = means[:INDEX_BITS] - means[INDEX_BITS:]
    if np.min(np.abs(diff)) < 0.25 * (_LIGHT - _DARK):
        raise ValueError("the frame carries no readable index (not made by make_video, or damaged)")
    return int(sum(1 << b for b in range(INDEX_BITS) if diff[b] > 0))


def _rate(fps: float) -> Fraction:
    rate = Fraction(fps).limit_denominator(1001)
    if rate <= 0:
        raise ValueError(f"fps must be positive, got {fps}")
    return rate


def make_video(
    path: str | os.PathLike,
    n_frames: int = 120,
    width: int = 160,
    height: int = 96,
    fps: float = 24,
    gop: int = 12,
    codec: str = "h264",
    vfr: bool = False,
    bframes: int = 0,
    crf: int = 18,
) -> str:
    """Encode a test video whose frames carry their own index.

    Parameters
    ----------
    path : str or os.PathLike
        Where to write; the container follows the extension (``.mp4``, ``.mkv``, ``.mov``,
        ``.avi``, ``.ts``). An existing file is replaced.
    n_frames : int
        Number of frames, at most ``2**16``.
    width, height : int
        Frame size. Odd sizes are fine for ``mpeg4``; H.264 in 4:2:0 needs even sizes and
        gets them padded by the encoder's scaler (the drawn content is resized, the index
        survives).
    fps : float
        Frame rate (the average one when `vfr`).
    gop : int
        A keyframe every `gop` frames, exactly (frames ``0, gop, 2*gop, …``): scene-cut
        detection is off.
    codec : {"h264", "mpeg4"}
        ``h264`` uses libx264, ``mpeg4`` FFmpeg's MPEG-4 part 2 encoder.
    vfr : bool
        Variable frame rate: frame durations cycle through 0.5, 1, 1.5 and 1 frame periods.
    bframes : int
        B-frames between reference frames (0: decode order equals display order).
    crf : int
        Quality for ``h264`` (lower is better).

    Returns
    -------
    str
        `path`, as a string.

    Examples
    --------
    >>> import os, tempfile
    >>> p = make_video(os.path.join(tempfile.mkdtemp(), "v.mkv"), n_frames=10, gop=5)
    >>> os.path.getsize(p) > 0
    True
    """
    path = os.fspath(path)
    n_frames, gop, bframes = int(n_frames), int(gop), int(bframes)
    if not 0 < n_frames <= 2**INDEX_BITS:
        raise ValueError(f"n_frames must be in 1..{2**INDEX_BITS}, got {n_frames}")
    if gop < 1:
        raise ValueError(f"gop must be at least 1, got {gop}")
    if bframes < 0:
        raise ValueError(f"bframes must be >= 0, got {bframes}")
    rate = _rate(fps)
    # a fine time base so that variable durations are exact: 1/(6*fps) per tick
    tick = 1 / (rate * 12)
    durations = [6, 12, 18, 12] if vfr else [12]
    pts = np.concatenate([[0], np.cumsum([durations[i % len(durations)] for i in range(n_frames)])])
    with av.open(path, mode="w") as container:
        if codec == "h264":
            stream = container.add_stream("libx264", rate=rate)
            # 4:2:0 needs even sizes; odd ones are kept exact in 4:4:4
            stream.pix_fmt = "yuv420p" if width % 2 == 0 and height % 2 == 0 else "yuv444p"
            stream.options = {
                "crf": str(crf),
                "preset": "veryfast",
                "x264-params": (
                    f"keyint={gop}:min-keyint={gop}:scenecut=0:bframes={bframes}"
                    f":open-gop=0:b-pyramid=none"
                ),
            }
        elif codec == "mpeg4":
            stream = container.add_stream("mpeg4", rate=rate)
            stream.pix_fmt = "yuv420p"
            stream.codec_context.gop_size = gop
            stream.codec_context.max_b_frames = bframes
            stream.options = {"qscale": "3", "sc_threshold": "1000000000", "g": str(gop)}
            stream.codec_context.qscale = 3
        else:
            raise ValueError(f"codec must be 'h264' or 'mpeg4', got {codec!r}")
        stream.width, stream.height = width, height
        stream.codec_context.time_base = tick
        stream.time_base = tick
        for i in range(n_frames):
            frame = av.VideoFrame.from_ndarray(draw_frame(i, width, height), format="rgb24")
            frame.pts = int(pts[i])
            frame.time_base = tick
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return path


def make_audio(path: str | os.PathLike, seconds: float = 1.0, codec: str = "aac") -> str:
    """Encode an audio-only file (a 440 Hz tone): a file with no video track, for tests.

    Examples
    --------
    >>> import os, tempfile
    >>> p = make_audio(os.path.join(tempfile.mkdtemp(), "tone.m4a"), seconds=0.2)
    >>> os.path.getsize(p) > 0
    True
    """
    path = os.fspath(path)
    sample_rate = 48000
    with av.open(path, mode="w") as container:
        stream = container.add_stream(codec, rate=sample_rate)
        stream.layout = "mono"
        n = int(seconds * sample_rate)
        t = np.arange(n, dtype=np.float32) / sample_rate
        tone = (0.2 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)[None, :]
        fmt = stream.codec_context.format.name
        chunk = stream.codec_context.frame_size or 1024
        for start in range(0, n, chunk):
            data = tone[:, start : start + chunk]
            if fmt == "s16" or fmt == "s16p":
                data = (data * 32767).astype(np.int16)
            frame = av.AudioFrame.from_ndarray(
                np.ascontiguousarray(data), format=fmt, layout="mono"
            )
            frame.sample_rate = sample_rate
            frame.pts = start
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return path
