"""GPU benchmark: a 1080p clip through Resize (to 960x540) + Blur (k=5), GPU ops vs CPU ops.

Run: ``.venv/bin/python bench/bench_gpu.py`` (``--quick`` for a shorter clip and fewer
repeats). Rows, each the median of ``--repeat`` timed runs after one untimed warm-up run (CuPy
compiles its kernels on first use), in frames per second of the whole computation
(``stream.compute()``, decoding included):

- ``decode only``: the clip decoded by the engine, no op (the floor for every row below);
- ``numpy functions``: ``imgproc.resize`` + ``imgproc.blur`` on the decoded frames in one
  thread, no engine and no decode (the cost of the arithmetic alone);
- ``CPU ops``: the built-in ops on the CPU (numpy), through the engine, all cores;
- ``GPU ops``: the same ops on the GPU (CuPy): one upload per partition, the frames stay on the
  device from Resize to Blur, the result comes back at the end;
- ``GPU ops + host round trip``: a CPU identity op between Resize and Blur, which forces a
  copy back to the host and another upload per partition: what keeping the frames on the
  device saves.

Without a usable GPU (no CuPy or no CUDA device, or ``SCANNER_NB_DISABLE_GPU`` set) the GPU
rows are skipped and say why. GPU rows also print the host/device copies counted by
:func:`scanner_nb.devices.transfer_stats` per run.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time

import numpy as np

import scanner_nb as sp
import scanner_nb.imgproc  # noqa: F401  (registers the built-in image ops)
from scanner_nb import devices, runtime
from scanner_nb.devices import DISABLE_GPU_ENV, reset_transfer_stats, transfer_stats
from scanner_nb.imgproc import blur, resize
from scanner_nb.samples import make_video

WIDTH, HEIGHT = 1920, 1080
SMALL = (960, 540)
KERNEL = 5


@sp.register_python_op(name="bench_gpu_host_identity")
def bench_gpu_host_identity(config, frame: sp.FrameType) -> sp.FrameType:
    """A CPU op: its input is copied to the host, its output uploaded again by a GPU op."""
    return frame


def median_time(fn, repeat: int) -> tuple[float, object]:
    fn()  # warm-up: CuPy kernel compilation, first touch of memory, the video index
    times, result = [], None
    for _ in range(repeat):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def make_client(db: str, partition_size: int | None, gpu: bool) -> sp.Client:
    """A client whose ops run on the GPU when ``gpu`` (and one is usable), else on the CPU."""
    if gpu:
        os.environ.pop(DISABLE_GPU_ENV, None)
    else:
        os.environ[DISABLE_GPU_ENV] = "1"
    runtime.close_instances()
    return sp.Client(db_path=db, partition_size=partition_size, show_progress=False)


def pipeline(sc: sp.Client, path: str, round_trip: bool = False) -> sp.Stream:
    video = sc.io.Input([sp.NamedVideoStream(sc, "clip", path=path)])
    small = sc.ops.Resize(frame=video, width=[SMALL[0]], height=[SMALL[1]])
    if round_trip:
        small = sc.ops.bench_gpu_host_identity(frame=small)
    return sc.ops.Blur(frame=small, kernel_size=KERNEL)


def devices_of(stream: sp.Stream) -> str:
    return "+".join(n["props"]["device"] for n in stream.summary()["nodes"] if n["kind"] == "op")


def check_close(actual: np.ndarray, expected: np.ndarray) -> str:
    diff = np.abs(actual.astype(np.int16) - expected.astype(np.int16))
    return f"max |diff| {int(diff.max(initial=0))}, {100 * np.mean(diff > 0):.3f}% of values off"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="24 frames, 1 timed run")
    parser.add_argument("--frames", type=int, default=None, help="clip length (default 120)")
    parser.add_argument("--repeat", type=int, default=None, help="timed runs (default 3)")
    parser.add_argument("--partition-size", type=int, default=None,
                        help="rows per partition (default: the client's, whole GOPs)")
    parser.add_argument("--gop", type=int, default=24, help="keyframe interval of the clip")
    parser.add_argument("--dir", default=None, help="folder for the clip and database")
    args = parser.parse_args(argv)
    n = args.frames or (24 if args.quick else 120)
    repeat = args.repeat or (1 if args.quick else 3)
    disabled_before = os.environ.get(DISABLE_GPU_ENV)
    gpu = devices.gpu_available()
    why_not = None if gpu else devices.gpu_unavailable_reason()

    with tempfile.TemporaryDirectory(dir=args.dir, prefix="bench_gpu-") as tmp:
        start = time.perf_counter()
        path = make_video(os.path.join(tmp, "clip.mp4"), n_frames=n, width=WIDTH,
                          height=HEIGHT, gop=args.gop)
        print(f"{n} frames {WIDTH}x{HEIGHT} H.264 (gop {args.gop}), made in "
              f"{time.perf_counter() - start:.1f} s; Resize to {SMALL[0]}x{SMALL[1]} + Blur "
              f"k={KERNEL}; {os.cpu_count()} CPU cores; median of {repeat} run(s) after a "
              f"warm-up")
        db = os.path.join(tmp, "db")
        rows = []

        sc = make_client(db, args.partition_size, gpu=False)
        video = sc.io.Input([sp.NamedVideoStream(sc, "clip", path=path)])
        t, (frames,) = median_time(video.compute, repeat)
        parts = len(video.partitions_info()[0]["boundaries"])
        rows.append(("decode only (engine)", t, "", f"{parts} partitions"))

        t, expected = median_time(lambda: blur(resize(frames, *SMALL, np), KERNEL, 0, np),
                                  repeat)
        rows.append(("numpy functions, 1 thread, no decode", t, "", ""))

        cpu = pipeline(sc, path)
        t, (got_cpu,) = median_time(cpu.compute, repeat)
        assert np.array_equal(got_cpu, expected), "CPU ops differ from the numpy functions"
        rows.append(("CPU ops (numpy), engine", t, devices_of(cpu), ""))
        t_cpu = t
        sc.close()

        if gpu:
            for label, round_trip in (("GPU ops (CuPy), engine", False),
                                      ("GPU ops + host round trip", True)):
                sc = make_client(db, args.partition_size, gpu=True)
                stream = pipeline(sc, path, round_trip)
                t, (got,) = median_time(stream.compute, repeat)
                reset_transfer_stats()
                stream.compute()
                s = transfer_stats()
                note = (f"{s['host_to_device']} up ({s['host_to_device_bytes'] / 1e6:.0f} MB), "
                        f"{s['device_to_host']} down ({s['device_to_host_bytes'] / 1e6:.0f} MB)"
                        f"; vs CPU: {check_close(got, got_cpu)}")
                rows.append((label, t, devices_of(stream), note))
                sc.close()

    if disabled_before is None:
        os.environ.pop(DISABLE_GPU_ENV, None)
    else:
        os.environ[DISABLE_GPU_ENV] = disabled_before

    width = max(len(r[0]) for r in rows)
    print(f"{'case':<{width}}  {'seconds':>8}  {'frames/s':>9}  {'x CPU ops':>9}  devices")
    for label, t, where, note in rows:
        print(f"{label:<{width}}  {t:8.3f}  {n / t:9.1f}  {t_cpu / t:8.2f}x  {where}"
              + (f"  [{note}]" if note else ""))
    by_label = {r[0]: r[1] for r in rows}
    if gpu:
        gpu_t = by_label["GPU ops (CuPy), engine"]
        trip_t = by_label["GPU ops + host round trip"]
        print(f"GPU ops vs CPU ops: {t_cpu / gpu_t:.2f}x; keeping frames on the device vs a "
              f"host round trip between the ops: {trip_t / gpu_t:.2f}x")
    else:
        print(f"GPU rows skipped: no usable GPU here ({why_not}).")


if __name__ == "__main__":
    main()
