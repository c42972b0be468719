"""Video I/O: index a file by demuxing, decode rows, encode H.264 mp4 (PyAV / FFmpeg).

A leaf adapter: numpy, PyAV and the standard library only. FFmpeg's exceptions never leave this
package; they become :class:`~scanner_nb.errors.VideoError` (``from None``) naming the file and,
while decoding, the row.

- :mod:`.index`: :func:`index_video` reads every packet once (no decoding): O(n) packet reads,
  cached in a small ``.npz`` file. Rows are frames as a player shows them; the display matrix
  (rotation, mirroring) is part of the index.
- :mod:`.decode`: :func:`read_frames` seeks to the keyframe at or before the first row it
  needs and decodes forward: reaching a row costs O(GOP) decoded frames, continuing costs one.
  A row that cannot be decoded raises, or with ``damaged="null"`` comes back as ``None``;
  :func:`damaged_rows` lists such rows.
- :mod:`.partitions`: :func:`plan_partitions` cuts rows into partitions of bounded size, at
  GOPs where they fit and into chained pieces of a GOP where not.
- :mod:`.encode`: :func:`encode_mp4`.

Examples
--------
>>> import os, tempfile
>>> import numpy as np
>>> from scanner_nb.samples import make_video, frame_index
>>> path = make_video(os.path.join(tempfile.mkdtemp(), "clip.mp4"), n_frames=48, gop=12)
>>> index = index_video(path)
>>> len(index), index.keyframes.tolist(), index.rotation
(48, [0, 12, 24, 36], 0)
>>> frames = read_frames(index, np.array([0, 13, 47]))
>>> frames.shape, [frame_index(f) for f in frames]
((3, 96, 160, 3), [0, 13, 47])
>>> close_readers(path)
"""

from __future__ import annotations

from .decode import (
    DAMAGED,
    SHORT_CLIP_FRAMES,
    close_readers,
    damaged_rows,
    decode_stats,
    read_frames,
    reset_decode_stats,
)
from .encode import encode_mp4
from .index import VideoIndex, index_cache_path, index_video, orient
from .partitions import plan_partitions

__all__ = [
    "VideoIndex",
    "index_video",
    "read_frames",
    "damaged_rows",
    "decode_stats",
    "reset_decode_stats",
    "plan_partitions",
    "encode_mp4",
    "close_readers",
    "index_cache_path",
    "orient",
    "SHORT_CLIP_FRAMES",
    "DAMAGED",
]
