"""A small end-to-end example: ``python -m scanner_nb.demo``.

Makes a short video (nothing is downloaded), indexes it, runs built-in and user-defined ops and
stream operations over it on the local scheduler, stores a result, loads it back and prints
what it computed.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from typing import Any, Sequence

import numpy as np

import scanner_nb as sp
import scanner_nb.imgproc  # noqa: F401 - registers Resize, Blur, Histogram, ...
from scanner_nb.samples import frame_index, make_video


@sp.register_python_op(stencil=[-1, 0])
def motion(config, frame: Sequence[sp.FrameType]) -> Any:
    """Mean absolute difference between a frame and the one before it."""
    previous, current = frame
    return float(np.abs(current.astype(np.int16) - previous).mean())


def main(folder: str | None = None) -> dict:
    """Run the demo in ``folder`` (a temporary one by default); returns what it computed."""
    folder = folder or tempfile.mkdtemp(prefix="scanner_nb-demo-")
    start = time.perf_counter()
    path = make_video(os.path.join(folder, "clip.mp4"), n_frames=96, width=320, height=192,
                      fps=24, gop=24)
    with sp.Client(db_path=os.path.join(folder, "db"), show_progress=False) as sc:
        video = sp.NamedVideoStream(sc, "clip", path=path)
        frames = sc.io.Input([video])
        sampled = sc.streams.Stride(frames, [8])
        small = sc.ops.Resize(frame=sampled, width=[160], height=[96])
        scores = sc.ops.motion(frame=frames)
        (thumbs,) = small.compute()
        (stored,) = sc.run(sc.io.Output(small.lossless(), [sp.NamedVideoStream(sc, "thumbnails")]),
                           cache_mode=sp.CacheMode.Overwrite, show_progress=False)
        loaded = list(stored.load(rows=[0, len(stored) - 1]))
        result = {
            "frames": len(video),
            "keyframes": video.index.keyframes.tolist(),
            "sampled_rows": [frame_index(t) for t in thumbs],
            "thumbnail_shape": tuple(thumbs.shape),
            "motion_first": [round(x, 2) for x in scores.compute()[0][:4]],
            "stored": f"{stored.name}: {len(stored)} frames, zarr at {stored.zarr_path}",
            "round_trip_exact": bool(np.array_equal(loaded[-1], thumbs[-1])),
        }
    result["seconds"] = round(time.perf_counter() - start, 2)
    return result


if __name__ == "__main__":
    out = main(sys.argv[1] if len(sys.argv) > 1 else None)
    for key, value in out.items():
        print(f"{key:>16}: {value}")
    if out["sampled_rows"] != list(range(0, out["frames"], 8)) or not out["round_trip_exact"]:
        sys.exit("demo: unexpected result")
