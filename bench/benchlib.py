"""Pieces the benchmarks share (run them as ``python bench/NAME.py``; this folder is on the path)."""

from __future__ import annotations

import os
import time

from scanner_nb.samples import make_video


def clip(folder: str, n: int, width: int, height: int, gop: int, fps: int = 30) -> str:
    """A make_video clip, made once and kept (its name holds its parameters)."""
    path = os.path.join(folder, f"clip_{width}x{height}_{n}f_gop{gop}_{fps}fps.mp4")
    if not os.path.exists(path):
        start = time.perf_counter()
        tmp = path + ".part.mp4"
        make_video(tmp, n_frames=n, width=width, height=height, fps=fps, gop=gop)
        os.replace(tmp, path)
        print(f"  made {os.path.basename(path)} in {time.perf_counter() - start:.1f}s",
              flush=True)
    return path
