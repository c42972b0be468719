"""Stored frames: bytes on disk and store/load speed of the default (compressed video),
``lossless()`` and ``compress_video(quality=...)``, against the source mp4 and numpy.save /
numpy.load; and the peak memory of ``sc.run`` over a 1080p video vs a streaming PyAV loop.

Usage::

    .venv/bin/python bench/bench_storage.py               # everything below, full size
    .venv/bin/python bench/bench_storage.py --quick       # smaller sizes, fewer repetitions
    .venv/bin/python bench/bench_storage.py --only formats   # one part: formats, memory
                                                             # or outputs

Part ``formats`` (the user's path): a 640x360 H.264 clip made once with
``scanner_nb.samples.make_video`` (keyframe every 30 frames, CRF 18, kept in ``bench/out/``)
is decoded to an ``(n, 360, 640, 3)`` array, the "decoded clip". Each way of storing it runs
``sc.run(sc.io.Output(sc.io.Input([sp.MemoryStream(frames)])[.choice()],
[sp.NamedVideoStream(sc, "clip")]), sp.PerfParams.manual(64, 64))`` on the threaded client
(all cores) and then iterates ``load()`` over every frame; numpy's row is ``numpy.save`` /
``numpy.load`` of the array (from the page cache). The last row stores the clip with film grain
(``--grain``, gaussian noise), which LZ4 barely shrinks, as camera footage. Columns: bytes on
disk (and x the source mp4), PSNR of what loads back against what was stored, store and load
frames/s (medians, runs interleaved), store and load seconds with the process's CPU seconds
(all threads; steadier than wall time on a busy machine), and load against ``numpy.load``.
Targets: the default is <= 1.5x the source's bytes at PSNR >= 40 dB, and store + load time
is no worse than the lossless path's.

Part ``memory``: the peak resident memory (``VmHWM`` of a fresh subprocess per case, so
each starts from nothing) of ``sc.run`` storing a 1080p H.264 clip through a trivial op
(identity, frames in and out) with ``PerfParams.estimate()``, next to a streaming PyAV loop
that decodes the same clip frame by frame. Target: under 1 GiB and flat as the clip grows
(900 vs 3,000 frames). ``--gop 250`` (x264's default) shows the cost of long GOPs at 1080p.

Part ``outputs``: ``sc.run`` of one ``sc.io.Output`` of N small streams (10 numbers each, N
= 30, 100, 300) on the threaded client, to a database on the local disk and on a local S3
server (moto, in a process of its own on 127.0.0.1, with ``storage_options``): the first store
(``CacheMode.Error``, the default) and overwrites (median). "compute" is the run's compute
phase (``profiling=True``: the first task's start to the last one's end), "client" the rest
of ``sc.run`` (existence checks, staging, commit, sweeps). Next to it, a plain loop that
writes the same numbers with ``numpy.save`` + fsspec ``pipe_file``, one file per output.
Targets: the client's time per output flat from the smallest N to the largest (within 1.5x),
and on S3 at the largest N no more than twice the compute phase. The moto server is one
Python process answering about one request at a time: on it every request costs its CPU
time, however many the client makes at once (it makes up to 32).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from benchlib import clip

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "out")


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    total = 0.0
    for start in range(0, len(a), 64):  # in pieces: float copies of a whole clip are large
        total += float(np.sum((a[start:start + 64].astype(np.float32)
                               - b[start:start + 64]) ** 2))
    mse = total / a.size
    return 10 * np.log10(255.0**2 / mse) if mse else float("inf")


def decoded(path: str) -> np.ndarray:
    import av

    with av.open(path) as container:
        return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])


def folder_bytes(path: str) -> int:
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(path)
               for f in files)


def timed(fn):
    """``fn()``'s result, wall seconds and process CPU seconds (all threads)."""
    cpu, t = time.process_time(), time.perf_counter()
    result = fn()
    return result, time.perf_counter() - t, time.process_time() - cpu


def run_numpy(frames, tmp):
    path = os.path.join(tmp, "frames.npy")
    _, store, store_cpu = timed(lambda: np.save(path, frames))
    back, load, load_cpu = timed(lambda: np.load(path))
    return store, load, os.path.getsize(path), back, store_cpu, load_cpu


def run_scanner(frames, tmp, choice):
    import scanner_nb as sp

    db = os.path.join(tmp, "db")
    with sp.Client(db_path=db, show_progress=False) as sc:
        source = sc.io.Input([sp.MemoryStream(frames)])
        source = choice(source) if choice else source
        (stored,), store, store_cpu = timed(lambda: sc.run(
            sc.io.Output(source, [sp.NamedVideoStream(sc, "clip")]),
            sp.PerfParams.manual(64, 64), cache_mode=sp.CacheMode.Overwrite,
            show_progress=False))

        def load():
            back = np.empty_like(frames)
            for i, frame in enumerate(stored.load()):
                back[i] = frame
            return back

        back, load, load_cpu = timed(load)
        nbytes = folder_bytes(os.path.join(db, "clip"))
    shutil.rmtree(db, ignore_errors=True)
    return store, load, nbytes, back, store_cpu, load_cpu


def film_grain(frames: np.ndarray, sigma: float) -> np.ndarray:
    """The clip with gaussian noise of ``sigma`` levels (a stand-in for camera footage, which
    LZ4 barely shrinks)."""
    rng = np.random.default_rng(0)
    out = np.empty_like(frames)
    for start in range(0, len(frames), 64):
        part = frames[start:start + 64].astype(np.float32)
        out[start:start + 64] = np.clip(part + rng.normal(0, sigma, part.shape), 0, 255)
    return out


def part_formats(args) -> bool:
    n = args.frames or (150 if args.quick else 600)
    reps = args.reps or (2 if args.quick else 3)
    os.makedirs(OUT, exist_ok=True)
    source = clip(OUT, n, 640, 360, gop=30)
    frames = decoded(source)
    grainy = film_grain(frames, args.grain)
    src_bytes = os.path.getsize(source)
    print(f"== formats: {n} frames 640x360 decoded from {os.path.basename(source)} "
          f"({src_bytes / 1e6:.2f} MB), sc.run + load() on the threaded client "
          f"({os.cpu_count()} cores), {reps} repetitions, medians")
    quality = args.quality
    from scanner_nb.storage import DEFAULT_CRF

    default_label = f"default (video, CRF {DEFAULT_CRF})"
    lossless_label = "lossless() (Zarr, Blosc LZ4)"
    grain_label = f"lossless(), film grain {args.grain:g}"
    configs = [  # label, how it is stored (None: numpy), the frames
        ("numpy.save / numpy.load", None, frames),
        (default_label, lambda s: s, frames),
        (lossless_label, lambda s: s.lossless(), frames),
        (f"compress_video(quality={quality})", lambda s: s.compress_video(quality=quality),
         frames),
        (grain_label, lambda s: s.lossless(), grainy),
    ]
    results = {label: [] for label, _, _ in configs}
    with tempfile.TemporaryDirectory(dir=args.dir, prefix="bench_storage-") as tmp:
        for rep in range(reps):
            for label, choice, data in configs:
                r = run_numpy(data, tmp) if choice is None else run_scanner(data, tmp, choice)
                results[label].append(r)
    header = (f"{'':32s} {'bytes':>9s} {'x mp4':>6s} {'PSNR':>6s} {'store fps':>9s} "
              f"{'load fps':>9s} {'store+load s':>12s} {'store s (cpu)':>14s} "
              f"{'load s (cpu)':>13s} {'load x numpy':>13s}")
    print(header)
    print("-" * len(header))
    print(f"{'source mp4 (CRF 18)':32s} {src_bytes / 1e6:7.2f}MB {1:5.2f}x")
    summary = {}
    for (label, _, data), rs in zip(configs, results.values()):
        store, load, store_cpu, load_cpu = (statistics.median(r[i] for r in rs)
                                            for i in (0, 1, 4, 5))
        nbytes, back = rs[-1][2], rs[-1][3]
        quality_db = psnr(back, data)
        summary[label] = (store + load, nbytes, quality_db, load, load_cpu)
        base = summary["numpy.save / numpy.load"]
        q = "exact" if quality_db == float("inf") else f"{quality_db:5.1f}"
        print(f"{label:32s} {nbytes / 1e6:7.2f}MB {nbytes / src_bytes:5.2f}x {q:>6s} "
              f"{n / store:9.0f} {n / load:9.0f} {store + load:12.2f} "
              f"{store:6.2f} ({store_cpu:5.2f}) {load:5.2f} ({load_cpu:5.2f}) "
              f"{load / base[3]:5.2f} ({load_cpu / base[4]:4.2f})")
    print("load x numpy: load() of every frame into one array, against numpy.load of the same "
          "array from the page cache: wall (process CPU)")
    total, nbytes, quality_db = summary[default_label][:3]
    lossless_total = summary[lossless_label][0]
    size_ok = nbytes <= 1.5 * src_bytes and quality_db >= 40
    time_ok = total <= lossless_total
    print(f"target: default <= 1.5x the source's bytes at PSNR >= 40 dB: "
          f"{'met' if size_ok else 'NOT met'} ({nbytes / src_bytes:.2f}x, {quality_db:.1f} dB); "
          f"store+load no slower than lossless: {'met' if time_ok else 'NOT met'} "
          f"({total:.2f} s vs {lossless_total:.2f} s)")
    return size_ok and time_ok


# -------------------------------------------------------------------------------- part: memory


def ensure_clip(n: int, width: int = 1920, height: int = 1080, gop: int = 30) -> str:
    """A 1080p test clip of ``n`` frames in bench/out (made once, ~0.1 s a frame)."""
    from scanner_nb.samples import make_video

    path = os.path.join(OUT, f"clip{height}-{n}-g{gop}.mp4")
    if not os.path.exists(path):
        os.makedirs(OUT, exist_ok=True)
        t = time.perf_counter()
        tmp = path + ".partial.mp4"
        make_video(tmp, n_frames=n, width=width, height=height, fps=30, gop=gop)
        os.replace(tmp, path)
        print(f"  made {path} in {time.perf_counter() - t:.0f} s")
    return path


def peak_rss() -> int:
    """This process's peak resident memory in bytes: ``VmHWM`` (Linux; it starts afresh at
    ``exec``, whereas ``ru_maxrss`` carries over the parent's peak at ``fork``), else
    ``ru_maxrss``."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    scale = 1 if sys.platform == "darwin" else 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale


def memory_case(case: str, video: str, db: str, op: str) -> dict:
    """Run one case in this (fresh) process; its peak RSS and time."""
    import av

    base = peak_rss()
    t = time.perf_counter()
    info: dict = {}
    if case == "pyav":  # the streaming baseline: decode frame by frame, apply the op, drop
        total = 0
        with av.open(video) as container:
            container.streams.video[0].thread_type = "AUTO"
            for frame in container.decode(video=0):
                array = frame.to_ndarray(format="rgb24")
                if op == "gray":
                    array = (array @ np.array([0.299, 0.587, 0.114], np.float32)).astype(np.uint8)
                total += 1
        info["frames"] = total
    else:
        import scanner_nb as sp
        import scanner_nb.imgproc

        @sp.register_python_op(name="bench_identity")
        def bench_identity(config, frame: sp.FrameType) -> sp.FrameType:
            return frame

        with sp.Client(db_path=db, show_progress=False) as sc:
            frames = sc.io.Input([sp.NamedVideoStream(sc, "clip", path=video)])
            out = (sc.ops.bench_identity(frame=frames) if op == "identity"
                   else sc.ops.ConvertColor(frame=frames, conversion=["gray"]))
            perf = sp.PerfParams.estimate()
            info["estimate_rows"] = perf.partition_size_for(frames)
            info["partitions"] = len(out.with_perf_params(perf).partitions_info()[0]["boundaries"])
            (stored,) = sc.run(sc.io.Output(out, [sp.NamedVideoStream(sc, "out")]), perf,
                               cache_mode=sp.CacheMode.Overwrite, show_progress=False)
            manifest = stored.manifest()
            info.update(frames=manifest["length"], chunk_rows=manifest["chunk_rows"])
        shutil.rmtree(db, ignore_errors=True)
    info.update(case=case, seconds=time.perf_counter() - t, base_rss=base, peak_rss=peak_rss())
    return info


def part_memory(args) -> bool:
    sizes = [150, 450] if args.quick else [900, 3000]
    gop = args.gop
    print(f"\n== memory: peak RSS of sc.run over a 1920x1080 clip (keyframe every {gop}), op "
          f"{args.op!r}, PerfParams.estimate(), threaded client on {os.cpu_count()} cores, vs a "
          f"streaming PyAV loop; one fresh process per case")
    clips = {n: ensure_clip(n, gop=gop) for n in sizes}
    results = []
    with tempfile.TemporaryDirectory(dir=args.dir, prefix="bench_storage-mem-") as tmp:
        for n in sizes:
            for case in ("pyav", "run"):
                cmd = [sys.executable, os.path.abspath(__file__), "--memory-case", case,
                       "--video", clips[n], "--db", os.path.join(tmp, f"db-{n}"), "--op", args.op]
                done = subprocess.run(cmd, capture_output=True, text=True, check=False)
                if done.returncode:
                    print(done.stdout, done.stderr, file=sys.stderr)
                    raise SystemExit(f"memory case {case} {n} failed")
                results.append((n, json.loads(done.stdout.strip().splitlines()[-1])))
    header = (f"{'frames':>6s} {'case':28s} {'peak RSS':>9s} {'at start':>9s} "
              f"{'time':>7s} {'fps':>5s}  partitions")
    print(header)
    print("-" * len(header))
    gib = 2**30
    for n, r in results:
        label = "streaming PyAV loop" if r["case"] == "pyav" else f"sc.run ({args.op} op)"
        parts = "" if r["case"] == "pyav" else (
            f"{r['partitions']} of {r['chunk_rows']} rows (estimate asked {r['estimate_rows']})")
        print(f"{n:6d} {label:28s} {r['peak_rss'] / gib:5.2f} GiB {r['base_rss'] / gib:5.2f} GiB "
              f"{r['seconds']:6.1f}s {n / r['seconds']:5.0f}  {parts}")
    runs = [r["peak_rss"] for _, r in results if r["case"] == "run"]
    under = max(runs) < gib
    flat = max(runs) <= 1.15 * min(runs)
    print(f"target: sc.run under 1 GiB: {'met' if under else 'NOT met'} "
          f"(max {max(runs) / gib:.2f} GiB); flat as the clip grows ({sizes[0]} -> {sizes[-1]} "
          f"frames, within 15%): {'met' if flat else 'NOT met'} "
          f"({runs[0] / gib:.2f} -> {runs[-1] / gib:.2f} GiB)")
    return under and flat


# -------------------------------------------------------------------------------- part: outputs


def moto_server() -> tuple[subprocess.Popen, dict]:
    """A moto S3 server in its own process on 127.0.0.1, with bucket ``bench``; its process
    and the storage options that reach it."""
    import boto3

    code = ("import logging, time; from moto.server import ThreadedMotoServer as S; "
            "logging.getLogger('werkzeug').setLevel(logging.WARNING); "
            "s = S(ip_address='127.0.0.1', port=0, verbose=False); s.start(); "
            "print(s.get_host_and_port()[1], flush=True); time.sleep(10**6)")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    endpoint = f"http://127.0.0.1:{int(proc.stdout.readline())}"
    options = {"key": "bench", "secret": "bench", "endpoint_url": endpoint,
               "client_kwargs": {"region_name": "us-east-1"}}
    boto3.client("s3", endpoint_url=endpoint, aws_access_key_id="bench",
                 aws_secret_access_key="bench", region_name="us-east-1").create_bucket(
        Bucket="bench")
    return proc, options


def time_run(sc, n: int, value: int, mode) -> tuple[float, float]:
    """Seconds of ``sc.run`` storing ``n`` streams, and of its compute phase."""
    import scanner_nb as sp

    streams = sc.io.Input([sp.MemoryStream([value + i] * 10) for i in range(n)])
    out = sc.io.Output(streams, [sp.NamedStream(sc, f"o{i}") for i in range(n)])
    t = time.perf_counter()
    job = sc.run(out, sp.PerfParams.manual(10, 10), cache_mode=mode, show_progress=False,
                 profiling=True)
    total = time.perf_counter() - t
    return total, sc.get_profile(job).wall_seconds


def time_plain(url: str, options: dict, n: int) -> float:
    """Seconds of a plain loop writing the same numbers, one ``numpy.save`` file per output."""
    import io

    import fsspec

    fs, root = fsspec.core.url_to_fs(url, **options)
    fs.makedirs(root, exist_ok=True)
    t = time.perf_counter()
    for i in range(n):
        buffer = io.BytesIO()
        np.save(buffer, np.full(10, i, dtype=np.int64))
        fs.pipe_file(f"{root}/o{i}.npy", buffer.getvalue())
    return time.perf_counter() - t


def part_outputs(args) -> bool:
    import scanner_nb as sp

    sizes = [30, 100] if args.quick else [30, 100, 300]
    reps = args.reps or (2 if args.quick else 3)
    print(f"\n== outputs: sc.run of N streams of 10 numbers in one Output, threaded client on "
          f"{os.cpu_count()} cores, local disk and a moto S3 server; overwrite: median of "
          f"{reps}")
    header = (f"{'N':>4s} {'where':6s} {'first s':>8s} {'overwrite s':>11s} {'compute s':>9s} "
              f"{'client s':>8s} {'client ms/output':>16s} {'plain loop s':>12s}")
    print(header)
    print("-" * len(header))
    proc, options = moto_server()
    rows = {}
    try:
        with tempfile.TemporaryDirectory(dir=args.dir, prefix="bench_storage-out-") as tmp:
            for n in sizes:
                for where in ("local", "s3"):
                    url = (os.path.join(tmp, f"db-{n}") if where == "local"
                           else f"s3://bench/db-{n}")
                    opts = options if where == "s3" else {}
                    with sp.Client(db_path=url, storage_options=opts or None,
                                   show_progress=False) as sc:
                        first = time_run(sc, n, 0, sp.CacheMode.Error)[0]
                        runs = [time_run(sc, n, rep + 1, sp.CacheMode.Overwrite)
                                for rep in range(reps)]
                        assert list(sp.NamedStream(sc, f"o{n - 1}").load()) == [reps + n - 1] * 10
                    total = statistics.median(r[0] for r in runs)
                    compute = statistics.median(r[1] for r in runs)
                    plain = time_plain(url + "-plain", opts, n)
                    client = total - compute
                    rows[n, where] = (client / n, compute)
                    print(f"{n:4d} {where:6s} {first:8.2f} {total:11.2f} {compute:9.2f} "
                          f"{client:8.2f} {1e3 * client / n:16.1f} {plain:12.2f}", flush=True)
    finally:
        proc.kill()
    small, large = sizes[0], sizes[-1]
    flat = all(rows[large, w][0] <= 1.5 * rows[small, w][0] for w in ("local", "s3"))
    client_s3 = rows[large, "s3"][0] * large
    compute_s3 = rows[large, "s3"][1]
    cheap = client_s3 <= 2 * compute_s3
    print(f"target: client time per output flat from N={small} to {large} (within 1.5x): "
          f"{'met' if flat else 'NOT met'} (local {1e3 * rows[small, 'local'][0]:.1f} -> "
          f"{1e3 * rows[large, 'local'][0]:.1f} ms, S3 {1e3 * rows[small, 's3'][0]:.1f} -> "
          f"{1e3 * rows[large, 's3'][0]:.1f} ms); on S3 at N={large} the client within 2x the "
          f"compute: {'met' if cheap else 'NOT met'} ({client_s3:.2f} s vs {compute_s3:.2f} s)")
    return flat and cheap


# -------------------------------------------------------------------------------- main


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="150 frames and 2 repetitions; 1080p clips of 150 and 450 frames; "
                             "30 and 100 outputs")
    parser.add_argument("--only", choices=["formats", "memory", "outputs"], action="append",
                        help="run only these parts (repeatable; default: all)")
    parser.add_argument("--frames", type=int, default=None)
    parser.add_argument("--reps", type=int, default=None)
    parser.add_argument("--quality", type=int, default=28,
                        help="formats part: the CRF of the compress_video row (default 28)")
    parser.add_argument("--grain", type=float, default=3.0,
                        help="formats part: the film-grain row's noise, in levels (default 3)")
    parser.add_argument("--gop", type=int, default=30,
                        help="memory part: keyframe interval of the 1080p clips (default 30)")
    parser.add_argument("--op", choices=["identity", "gray"], default="identity",
                        help="memory part: the op (identity, or ConvertColor gray)")
    parser.add_argument("--dir", default=None, help="folder for the temporary files")
    parser.add_argument("--memory-case", choices=["run", "pyav"], help=argparse.SUPPRESS)
    parser.add_argument("--video", help=argparse.SUPPRESS)
    parser.add_argument("--db", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.memory_case:  # one case of the memory part, in its own process
        print(json.dumps(memory_case(args.memory_case, args.video, args.db, args.op)))
        return 0
    parts = args.only or ["formats", "memory", "outputs"]
    met = {}
    if "formats" in parts:
        met["formats"] = part_formats(args)
    if "memory" in parts:
        met["memory"] = part_memory(args)
    if "outputs" in parts:
        met["outputs"] = part_outputs(args)
    print("\ntargets: " + ", ".join(f"{k} {'met' if v else 'NOT met'}" for k, v in met.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
