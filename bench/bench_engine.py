"""Engine benchmarks: per-element overhead and parallel speed-up, side by side with plain loops.

Run: ``.venv/bin/python bench/bench_engine.py`` (``--quick`` for a smaller run). Prints a table
of medians and ratios. Targets (issue 3): at most 1 us of overhead per element on the threaded
scheduler with the default partition size; at least 1.7x a sequential loop on 2 cores for a
CPU-heavy numpy op, on the threaded scheduler and on a LocalCluster. Issue 10: building a
graph is linear in streams (Stride over 1k, 4k, 16k streams: time per stream flat within 1.5x).
"""

from __future__ import annotations

import argparse
import statistics
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

import scanner_nb as sp


def median_times(fns, repeat: int) -> list[float]:
    """Median wall time of each function, runs interleaved so that load on the machine hits
    both sides alike."""
    times = [[] for _ in fns]
    for _ in range(repeat):
        for fn, out in zip(fns, times):
            start = time.perf_counter()
            fn()
            out.append(time.perf_counter() - start)
    return [statistics.median(t) for t in times]


def trivial(x):
    return x


@sp.register_python_op(name="bench_trivial")
def bench_trivial(config, x: bytes) -> bytes:
    return trivial(x)


def synth_frame(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 255, (360, 640, 3), dtype=np.uint8)


def heavy(frame: np.ndarray) -> np.ndarray:
    f = frame.astype(np.float32)
    for _ in range(6):
        f = np.sqrt(f * 1.01 + 1.0) * 15.0
    return np.clip(f, 0, 255).astype(np.uint8)


@sp.register_python_op(name="bench_synth")
def bench_synth(config, seed: Any) -> sp.FrameType:
    return synth_frame(seed)


@sp.register_python_op(name="bench_heavy")
def bench_heavy(config, frame: sp.FrameType) -> Any:
    return int(heavy(frame)[::64, ::64].sum())


def overhead(n: int, repeat: int, partition_size) -> dict:
    data = [bytes([i % 256]) * 4 for i in range(n)]

    def plain():
        return [trivial(x) for x in data]

    sc = sp.Client(show_progress=False, partition_size=partition_size)

    def engine():
        stream = sc.io.Input([sp.MemoryStream(data, type=bytes)])
        return sc.ops.bench_trivial(x=stream).compute()

    assert engine()[0] == plain()
    t_plain, t_engine = median_times([plain, engine], repeat)
    return {"plain_s": t_plain, "engine_s": t_engine,
            "overhead_us": (t_engine - t_plain) / n * 1e6}


def speedup(n: int, repeat: int, address=None, partition_size=None) -> dict:
    def plain():
        return [int(heavy(synth_frame(i))[::64, ::64].sum()) for i in range(n)]

    sc = sp.Client(address=address, show_progress=False, partition_size=partition_size)

    def engine(**kwargs):
        seeds = sc.io.Input([sp.MemoryStream(list(range(n)))])
        stream = sc.ops.bench_heavy(frame=sc.ops.bench_synth(seed=seeds))
        return sc.compute_collections([stream], progress=False, **kwargs)[0]

    def engine_one_thread():
        return engine(num_workers=1)

    def plain_in_a_thread():  # the same loop where the engine's work runs: not the main thread
        with ThreadPoolExecutor(1) as pool:
            return pool.submit(plain).result()

    expected = plain()
    assert engine()[0] == expected
    fns = [plain, plain_in_a_thread, engine] + ([engine_one_thread] if address is None else [])
    t_plain, t_thread, t_engine, *t_one = median_times(fns, repeat)
    sc.close()
    return {"plain_s": t_plain, "engine_s": t_engine, "thread_s": t_thread,
            "speedup": t_plain / t_engine, "speedup_thread": t_thread / t_engine,
            "parallel": t_one[0] / t_engine if t_one else None}


def build_time(n_streams: int) -> float:
    """Seconds to build the graph of Stride over ``n_streams`` in-memory streams at the default
    partition size (the row analysis and every task; nothing runs)."""
    sc = sp.Client(show_progress=False)
    streams = sc.io.Input([sp.MemoryStream([i, i + 1, i + 2, i + 3]) for i in range(n_streams)])
    start = time.perf_counter()
    sc.streams.Stride(streams, [2] * n_streams).__dask_graph__()
    return time.perf_counter() - start


def _speedups(r: dict) -> str:
    text = (f"{r['speedup']:.2f}x faster ({r['speedup_thread']:.2f}x the same loop in one "
            f"worker thread, {r['thread_s']:.3f}s")
    if r["parallel"]:
        text += f"; 2 threads vs 1: {r['parallel']:.2f}x"
    return text + ")"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="smaller sizes, fewer repeats")
    args = parser.parse_args()
    n_small, n_frames, repeat = (20_000, 200, 3) if args.quick else (200_000, 2000, 5)
    rows = []
    for size in (None, 1024, 16384):
        r = overhead(n_small, repeat, size)
        rows.append((f"{n_small:,} bytes, trivial op, partition_size={size or 'default'}",
                     r["plain_s"], r["engine_s"], f"{r['overhead_us']:.2f} us/element"))
    for size in (None, 16, 64):
        r = speedup(n_frames, max(1, repeat - 2), partition_size=size)
        rows.append((f"{n_frames} frames 360p heavy op, threads, partition_size={size or 'default'}",
                     r["plain_s"], r["engine_s"], _speedups(r)))
    from distributed import LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=":0",
                      silence_logs=40) as cluster:
        r = speedup(n_frames, max(1, repeat - 2), address=cluster)
        rows.append((f"{n_frames} frames 360p heavy op, LocalCluster 2x1", r["plain_s"],
                     r["engine_s"], _speedups(r)))
    base = None
    for n_streams in (1000, 4000) if args.quick else (1000, 4000, 16000):
        t = build_time(n_streams)
        base = base or t / n_streams
        result = (f"{t / n_streams * 1e6:.0f} us/stream, {t / n_streams / base:.2f}x the 1k "
                  f"per-stream time (target <= 1.5x)")
        rows.append((f"build Stride over {n_streams:,} streams, default partitions", 0.0, t,
                     result))
    width = max(len(r[0]) for r in rows)
    print(f"{'case':<{width}}  {'plain loop':>11}  {'scanner_nb':>11}  result")
    for name, plain, engine, result in rows:
        print(f"{name:<{width}}  {plain:>10.3f}s  {engine:>10.3f}s  {result}")


if __name__ == "__main__":
    main()
