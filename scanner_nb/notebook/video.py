"""Frames as an inline HTML5 ``<video>``: H.264 mp4, base64, built as a pure string.

:func:`show_video_html` encodes in process with :func:`scanner_nb.video.encode_mp4` (PyAV's
libx264, yuv420p, which every browser plays) into memory and returns a :class:`VideoHTML`, an
object that displays itself in a notebook (``_repr_html_``) and keeps the string (``.html``),
so it is testable without a browser.

The size guard: a notebook holding a 200 MB base64 video becomes unusable, so the encoded clip
is kept under ``max_bytes``. The first ``PROBE`` frames are encoded alone; their packet sizes
give the bytes per frame, hence how many frames fit (a short clip is done after the probe).
Only that many frames are then read and encoded (the rest are never computed), and if the clip
is still over ``max_bytes`` its packets are cut (a stream copy, no re-encoding) at the longest
prefix that fits and plays without holes. A visible note under the video says what was cut.
Cost: one encode of the frames shown plus the probe's ``PROBE`` frames, one base64; memory: the
probe's frames and the clip. (``encode_mp4`` writes a buffer in one go at the end, so the
bytes cannot be watched while it encodes; hence the estimate.)
"""

from __future__ import annotations

import base64
import html
import io
import itertools
from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np

from scanner_nb.notebook._image import to_uint8_image

__all__ = ["VideoHTML", "show_video_html"]

GUARD = 0.9  # aim the estimate at this share of max_bytes
PROBE = 16  # frames encoded first to measure the clip's bytes per frame
KEYINT = 250  # x264's default keyframe interval
HEADER_BYTES = 2048  # ftyp + moov boxes, roughly
MIN_WIDTH = 480  # narrower clips are shown a whole factor larger (controls cover less)


class VideoHTML:
    """An encoded clip that displays as an inline ``<video>`` in a notebook.

    Attributes
    ----------
    html : str
        The ``<video>`` element (base64 data URI) and, if the clip was cut, a note under it.
    data : bytes
        The mp4 itself (write it to a file to keep it).
    nbytes : int
        Size of the mp4 in bytes (the HTML is about 4/3 of it).
    frames : int
        Frames in the clip.
    total : int or None
        Frames offered, when known (``len(frames)``, or the ``total=`` given).
    width, height : int
        The frames' size, used for the ``<video>`` element.
    fps : float
    note : str
        What was done when the clip was cut (empty when nothing was).
    """

    def __init__(
        self,
        html: str,
        data: bytes,
        frames: int,
        total: int | None,
        width: int,
        height: int,
        fps: float,
        note: str = "",
    ):
        self.html = html
        self.data = data
        self.nbytes = len(data)
        self.frames = frames
        self.total = total
        self.width = width
        self.height = height
        self.fps = fps
        self.note = note

    def _repr_html_(self) -> str:
        return self.html

    def __repr__(self) -> str:
        cut = f", {self.note}" if self.note else ""
        return (
            f"VideoHTML({self.frames} frames, {self.width}x{self.height} at {self.fps:g} fps, "
            f"{self.nbytes:,} bytes mp4{cut})"
        )

    def save(self, path: Any) -> None:
        """Write the mp4 to ``path``."""
        with open(path, "wb") as f:
            f.write(self.data)


def video_html(data: bytes, width: int, height: int, note: str = "") -> str:
    """The HTML for an mp4: ``<video controls autoplay loop muted playsinline>`` plus a note.

    The element has the frames' own ``width``/``height`` and ``max-width:100%; height:auto``,
    so a wide clip is scaled down to the cell, keeping its aspect; a clip narrower than
    ``MIN_WIDTH`` is shown a whole factor larger with square pixels (``image-rendering:
    pixelated``), so the player's controls do not cover it.

    >>> h = video_html(b"mp4", 64, 48, note="cut <here>")
    >>> 'type="video/mp4"' in h and 'width="512"' in h and "cut &lt;here&gt;" in h
    True
    """
    b64 = base64.b64encode(data).decode("ascii")
    parts = ['<div class="scanner-nb-video">']
    if data:
        k = -(-MIN_WIDTH // int(width)) if 0 < int(width) < MIN_WIDTH else 1
        parts.append(
            f'<video controls autoplay loop muted playsinline width="{int(width) * k}" '
            f'height="{int(height) * k}" style="max-width:100%;height:auto;display:block;'
            'image-rendering:pixelated">'
            f'<source src="data:video/mp4;base64,{b64}" type="video/mp4">'
            "Your browser does not support the video tag.</video>"
        )
    if note:
        parts.append(
            '<div class="scanner-nb-video-note" style="color:#b26a00;font-size:12px;'
            f'margin-top:2px">{html.escape(note, quote=False)}</div>'
        )
    parts.append("</div>")
    return "".join(parts)


def _length_of(frames: Any) -> int | None:
    try:
        return len(frames)
    except Exception:
        return None


def _frame_bytes(i: int, frame: Any) -> np.ndarray:
    a = to_uint8_image(frame)
    if a is None:
        shape = getattr(frame, "shape", None)
        raise ValueError(
            f"frame {i} is not an image (shape {shape}, type {type(frame).__name__}); "
            "show_video needs HxW, HxWx1, HxWx3 or HxWx4 arrays"
        )
    return a


def _trim_mp4(data: bytes, max_bytes: int) -> tuple[bytes, int]:
    """Cut an mp4 to the longest prefix of packets that fits ``max_bytes`` (stream copy).

    The prefix is taken in decode order and ends only where it holds exactly the first ``k``
    frames in presentation order (a "closed" prefix: with B-frames, a frame may depend on a
    later one), so the clip has no holes. Returns (mp4 bytes, frames); (b"", 0) when not even
    the first closed prefix fits.
    """
    import av

    with av.open(io.BytesIO(data), mode="r") as inp:
        stream = inp.streams.video[0]
        packets = [p for p in inp.demux(stream) if p.size and p.pts is not None]
        pts_rank = {pts: r for r, pts in enumerate(sorted(p.pts for p in packets))}
        # Closed prefixes: after packet j, max presentation rank seen == j.
        best, total, seen_max = 0, 0, -1
        budget = max_bytes - 2048  # ftyp + moov headers, grown below per packet
        for j, p in enumerate(packets):
            total += p.size
            seen_max = max(seen_max, pts_rank[p.pts])
            if total + 32 * (j + 1) > budget:
                break
            if seen_max == j:
                best = j + 1
        while best:
            out_buf = io.BytesIO()
            with av.open(out_buf, mode="w", format="mp4") as out:
                ostream = out.add_stream_from_template(stream)
                for p in packets[:best]:
                    p.stream = ostream
                    out.mux(p)
            result = out_buf.getvalue()
            if len(result) <= max_bytes:
                return result, best
            # headers bigger than guessed: step back to the previous closed prefix
            seen_max, prev = -1, 0
            for j, p in enumerate(packets[: best - 1]):
                seen_max = max(seen_max, pts_rank[p.pts])
                if seen_max == j:
                    prev = j + 1
            best = prev
    return b"", 0


def _packet_sizes(data: bytes) -> list[int]:
    """Sizes of an mp4's video packets, in decode order (a demux, no decoding)."""
    import av

    with av.open(io.BytesIO(data), mode="r") as inp:
        return [p.size for p in inp.demux(inp.streams.video[0]) if p.size]


def _frames_that_fit(probe: bytes, budget: float) -> int:
    """Estimate how many frames fit ``budget`` bytes from a probe clip's packet sizes.

    The first packet is the keyframe (x264 repeats one every ``KEYINT`` frames), the others
    give the mean size of the rest.

    >>> _frames_that_fit(b"", 1000)
    0
    """
    if not probe:
        return 0
    sizes = _packet_sizes(probe)
    if not sizes:
        return 0
    key = sizes[0]
    rest = (sum(sizes[1:]) / (len(sizes) - 1)) if len(sizes) > 1 else key
    per_frame = rest + key / KEYINT + 16  # + sample-table entries
    n = 1 + (budget - HEADER_BYTES - key) / per_frame
    return max(int(n), 0)


def show_video_html(
    frames: Iterable[np.ndarray],
    fps: float,
    max_bytes: int = 20_000_000,
    max_frames: int | None = None,
    *,
    total: int | None = None,
    crf: int = 20,
    preset: str = "veryfast",
) -> VideoHTML:
    """Encode frames to an in-memory H.264 mp4 and wrap it as an inline HTML5 video.

    Parameters
    ----------
    frames : iterable of numpy.ndarray
        H×W×3 RGB, H×W×4 (alpha dropped), H×W×1 or H×W gray; uint8, or floats in [0, 1].
        Read one at a time: frames past the cut are never asked for (but one, to know that
        there are more, when ``frames`` has no ``len`` and no ``total`` is given).
    fps : float
        Playback rate.
    max_bytes : int
        Largest mp4 to embed (the HTML is about 4/3 of it). A longer clip is cut, with a
        visible note saying so.
    max_frames : int, optional
        Show at most this many frames (also noted when it cuts).
    total : int, optional
        How many frames ``frames`` holds, for the note, when it has no ``len``.
    crf, preset : int, str
        x264 quality and speed (see :func:`scanner_nb.video.encode_mp4`).

    Returns
    -------
    VideoHTML
        Displays as ``<video controls autoplay loop muted playsinline>`` in a notebook; its
        ``.html``, ``.nbytes``, ``.frames`` and ``.note`` say what it holds.

    Examples
    --------
    >>> frames = [np.full((48, 64, 3), 20 * i, np.uint8) for i in range(10)]
    >>> v = show_video_html(frames, fps=10)
    >>> v.frames, v.note, v.html.count("<video")
    (10, '', 1)
    >>> v = show_video_html(frames, fps=10, max_frames=4)
    >>> v.frames, v.note
    (4, 'showing first 4 of 10 frames (max_frames=4); use save_mp4 for the whole clip')
    """
    from scanner_nb.video import encode_mp4

    if total is None:
        total = _length_of(frames)
    if max_bytes <= 0:
        raise ValueError(f"max_bytes must be positive, got {max_bytes!r}")
    limit = None if max_frames is None else max(int(max_frames), 0)
    it = iter(frames)
    taken = 0  # frames read from ``frames``

    def take(k: int) -> Iterator[np.ndarray]:
        """Up to ``k`` more frames (fewer at the end or at max_frames), read lazily."""
        nonlocal taken
        for _ in range(k):
            if limit is not None and taken >= limit:
                return
            try:
                frame = next(it)
            except StopIteration:
                return
            a = _frame_bytes(taken, frame)
            taken += 1
            yield a

    def more_left() -> bool:
        """Whether frames remain after ``taken`` (peeks one frame when the length is unknown)."""
        if total is not None:
            return total > taken
        try:
            next(it)
        except StopIteration:
            return False
        return True

    def encode(chunks: Iterable[np.ndarray]) -> tuple[bytes, int]:
        buf = io.BytesIO()
        n, _ = encode_mp4(chunks, buf, fps=fps, crf=crf, preset=preset, pad_odd=True)
        return buf.getvalue(), n

    # Probe: encode the first PROBE frames. A short clip ends here; a longer one gets the
    # number of frames that fit max_bytes estimated from the probe's packet sizes, so frames
    # beyond the cut are never computed. The exact cut, if still needed, is a stream copy.
    probe = list(take(PROBE))
    if not probe:
        note = "no frames to show (max_frames=0)" if limit == 0 else "no frames to show"
        return VideoHTML(video_html(b"", 0, 0, note), b"", 0, total, 0, 0, float(fps), note)
    h, w = probe[0].shape[:2]
    data, n = encode(probe)
    exhausted = len(probe) < PROBE and (limit is None or taken < limit)  # frames ran out
    if len(probe) == PROBE and len(data) < GUARD * max_bytes:
        fit = _frames_that_fit(data, GUARD * max_bytes)
        if limit is not None:
            fit = min(fit, limit)
        if fit > len(probe):
            want, before = fit - len(probe), taken
            data, n = encode(itertools.chain(probe, take(want)))
            exhausted = taken - before < want and (limit is None or taken < limit)
    del probe
    by = ""
    if not exhausted and more_left():
        by = "max_frames" if limit is not None and taken >= limit else "max_bytes"
    if len(data) > max_bytes:
        data, n = _trim_mp4(data, max_bytes)
        by = "max_bytes"

    if not by:
        note = ""
    elif n == 0:
        note = (
            f"the first frame alone is over max_bytes={max_bytes:,}; nothing embedded. "
            "Use save_mp4 to write the clip to a file"
        )
    else:
        of = f" of {total:,}" if total is not None else ""
        if by == "max_frames" and n == limit:
            why = f"(max_frames={limit})"
        else:
            why = f"(the clip is too long to embed: max_bytes={max_bytes:,})"
        note = f"showing first {n:,}{of} frames {why}; use save_mp4 for the whole clip"
    return VideoHTML(video_html(data, w, h, note), data, n, total, w, h, float(fps), note)
