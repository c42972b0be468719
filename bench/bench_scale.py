"""Growth benchmark (issue 15): many short videos in one Input, and one long video, side by side
with a plain PyAV loop over the same files.

Run: ``.venv/bin/python bench/bench_scale.py`` (``--quick`` for a smaller run). Each case runs
in a fresh child process (a cold index cache, its own peak memory), the methods interleaved,
and the table shows medians. Both methods decode every frame to RGB and take its mean; the PyAV
loop opens each file in turn with PyAV's default threading.

1. 1, 10, 100, 1,000 one-second 160x90 clips in one ``sc.io.Input`` on the threaded scheduler:
   total time, time per video, the client's part before computing (indexing the videos, then
   building the graph), tasks, graph bytes (pickled) and the client's peak memory.
   Targets: cost per video flat from 10 to 1,000 videos (within 1.5x); building the graph
   under 10% of the total at 1,000 videos.
2. One 160x90 video of 1, 10 and 60 minutes: time and peak memory (RSS).
   Target: memory flat in the video's length.
3. Indexing 100 and 1,000 clips (``sc.io.Input``, a cold cache) on local threads and on a
   2-worker ``LocalCluster`` (the workers demux, the client keeps light indexes), against a
   plain PyAV loop that opens each file and reads every packet's timestamp.
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any

FPS = 30
WIDTH, HEIGHT = 160, 90


# ----------------------------------------------------------------------------------------------
# the two methods, each run in a child process
# ----------------------------------------------------------------------------------------------


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _warm_up(path: str) -> None:
    """PyAV's first decode and conversion in a process cost ~0.2 s: not part of either method."""
    import av

    with av.open(path) as container:
        for frame in container.decode(video=0):
            frame.to_ndarray(format="rgb24")


def run_scanner(paths: list[str]) -> dict:
    import cloudpickle
    import psutil

    import scanner_nb as sp

    @sp.register_python_op()
    def frame_mean(config, frame: sp.FrameType) -> Any:
        return float(frame.mean())

    _warm_up(paths[0])
    db = tempfile.mkdtemp(prefix="bench_scale_db_")  # a fresh index cache: cold indexing
    try:
        start = time.perf_counter()
        with sp.Client(db_path=db, show_progress=False) as sc:
            frames = sc.io.Input([sp.NamedVideoStream(sc, f"v{i}", path=p)
                                  for i, p in enumerate(paths)])
            indexed = time.perf_counter()
            means = sc.ops.frame_mean(frame=frames)
            graph = means.__dask_graph__()
            keys = means.__dask_keys__()
            built = time.perf_counter()
            rss_built = psutil.Process().memory_info().rss / 2**20
            result = means.compute()
            total = time.perf_counter() - start
            dsk = dict(graph)  # what a distributed client sends: the tasks, pickled
            graph_bytes = len(cloudpickle.dumps(dsk, protocol=pickle.HIGHEST_PROTOCOL))
            del keys
    finally:
        shutil.rmtree(db, ignore_errors=True)
    return {"total": total, "index": indexed - start, "graph": built - indexed,
            "tasks": len(dsk), "graph_bytes": graph_bytes, "rss_built": rss_built,
            "peak_rss": _peak_rss_mib(), "frames": sum(len(r) for r in result),
            "checksum": sum(sum(r) for r in result)}


def run_pyav(paths: list[str]) -> dict:
    import av

    _warm_up(paths[0])
    start = time.perf_counter()
    result = []
    for path in paths:
        with av.open(path) as container:
            stream = container.streams.video[0]
            result.append([float(f.to_ndarray(format="rgb24").mean())
                           for f in container.decode(stream)])
    return {"total": time.perf_counter() - start, "peak_rss": _peak_rss_mib(),
            "frames": sum(len(r) for r in result), "checksum": sum(sum(r) for r in result)}


def child(method: str, paths_file: str) -> None:
    with open(paths_file) as f:
        paths = json.load(f)
    out = run_scanner(paths) if method == "scanner" else run_pyav(paths)
    print(json.dumps(out))


def in_child(method: str, paths: list[str]) -> dict:
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump(paths, f)
    try:
        out = subprocess.run([sys.executable, __file__, "--child", method, f.name],
                             capture_output=True, text=True, check=False)
    finally:
        os.unlink(f.name)
    if out.returncode:
        raise RuntimeError(f"{method} child failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def measure(paths: list[str], repeat: int) -> dict[str, list[dict]]:
    runs: dict[str, list[dict]] = {"scanner": [], "pyav": []}
    for rep in range(repeat):
        for method in (["scanner", "pyav"] if rep % 2 == 0 else ["pyav", "scanner"]):
            runs[method].append(in_child(method, paths))
    a, b = runs["scanner"][0], runs["pyav"][0]
    if a["frames"] != b["frames"] or abs(a["checksum"] - b["checksum"]) > 1e-6 * b["frames"] * 255:
        raise AssertionError(f"the methods disagree: {a} vs {b}")
    return runs


def med(runs: list[dict], key: str) -> float:
    return statistics.median(r[key] for r in runs)


# ----------------------------------------------------------------------------------------------
# the cases
# ----------------------------------------------------------------------------------------------


def many_clips(folder: str, counts: list[int], repeat: int) -> None:
    from benchlib import clip

    one = clip(folder, FPS, WIDTH, HEIGHT, gop=FPS, fps=FPS)
    many = os.path.join(folder, "many")
    os.makedirs(many, exist_ok=True)
    paths = []
    for i in range(max(counts)):  # distinct files (each is indexed), same content
        path = os.path.join(many, f"clip{i:05d}.mp4")
        if not os.path.exists(path):
            shutil.copyfile(one, path)
        paths.append(path)
    print(f"\n1. N one-second {WIDTH}x{HEIGHT} clips in one Input (threaded scheduler; "
          f"medians of {repeat})")
    head = (f"{'videos':>7} {'scanner s':>10} {'ms/video':>9} {'PyAV s':>8} {'ms/video':>9} "
            f"{'ratio':>6} {'index s':>8} {'graph s':>8} {'graph %':>8} {'tasks':>6} "
            f"{'graph KiB':>10} {'peak MiB':>9} {'PyAV MiB':>9}")
    print(head)
    per_video = {}
    for n in counts:
        runs = measure(paths[:n], repeat)
        s, p = runs["scanner"], runs["pyav"]
        total, base = med(s, "total"), med(p, "total")
        per_video[n] = total / n
        print(f"{n:>7} {total:>10.2f} {1e3 * total / n:>9.2f} {base:>8.2f} {1e3 * base / n:>9.2f} "
              f"{total / base:>6.2f} {med(s, 'index'):>8.2f} {med(s, 'graph'):>8.3f} "
              f"{100 * med(s, 'graph') / total:>7.1f}% {s[0]['tasks']:>6} "
              f"{s[0]['graph_bytes'] / 1024:>10.0f} {med(s, 'peak_rss'):>9.0f} "
              f"{med(p, 'peak_rss'):>9.0f}", flush=True)
    small, large = min(c for c in counts if c >= 10), max(counts)
    if large > small:
        growth = per_video[large] / per_video[small]
        print(f"cost per video, {large} vs {small} videos: {growth:.2f}x (target <= 1.5x)")


def repeated(folder: str, minutes: int) -> str:
    """A ``minutes``-long clip: the one-minute clip's packets ``minutes`` times over (remuxed,
    timestamps shifted), for lengths past what ``make_video`` numbers (65,536 frames)."""
    import av
    from benchlib import clip

    one = clip(folder, 60 * FPS, WIDTH, HEIGHT, gop=2 * FPS, fps=FPS)
    path = os.path.join(folder, f"repeated_{minutes}min.mp4")
    if os.path.exists(path):
        return path
    tmp = path + ".part.mp4"
    with av.open(tmp, "w", format="mp4") as out:
        target, offset = None, 0
        for _ in range(minutes):
            with av.open(one) as source:
                stream = source.streams.video[0]
                target = target or out.add_stream_from_template(stream)
                end = 0
                for packet in source.demux(stream):
                    if packet.dts is None:
                        continue  # the flush packet
                    end = max(end, packet.pts + packet.duration)
                    packet.pts += offset
                    packet.dts += offset
                    packet.stream = target
                    out.mux(packet)
                offset += end
    os.replace(tmp, path)
    return path


def long_video(folder: str, minutes: list[float], repeat: int) -> None:
    from benchlib import clip

    print(f"\n2. one {WIDTH}x{HEIGHT} video, 2-second GOPs (medians of {repeat})")
    print(f"{'minutes':>8} {'frames':>8} {'scanner s':>10} {'PyAV s':>8} {'ratio':>6} "
          f"{'index s':>8} {'peak MiB':>9} {'PyAV MiB':>9}")
    for m in minutes:
        n = int(round(m * 60 * FPS))
        path = (clip(folder, n, WIDTH, HEIGHT, gop=2 * FPS, fps=FPS) if n <= 2**16
                else repeated(folder, int(m)))
        runs = measure([path], repeat)
        s, p = runs["scanner"], runs["pyav"]
        total, base = med(s, "total"), med(p, "total")
        print(f"{m:>8g} {n:>8} {total:>10.2f} {base:>8.2f} {total / base:>6.2f} "
              f"{med(s, 'index'):>8.2f} {med(s, 'peak_rss'):>9.0f} {med(p, 'peak_rss'):>9.0f}",
              flush=True)


def demux_loop(paths: list[str]) -> int:
    """The plain PyAV baseline of indexing: every packet's timestamp and keyframe flag."""
    import av

    packets = 0
    for path in paths:
        with av.open(path) as container:
            stream = container.streams.video[0]
            packets += len([(p.pts, p.is_keyframe) for p in container.demux(stream) if p.size])
    return packets


def indexing(folder: str, counts: list[int], repeat: int) -> None:
    import distributed

    import scanner_nb as sp

    many = os.path.join(folder, "many")  # made by many_clips
    paths = sorted(os.path.join(many, f) for f in os.listdir(many))
    print(f"\n3. indexing N clips in sc.io.Input, cold cache (medians of {repeat})")
    print(f"{'videos':>7} {'PyAV s':>8} {'threads s':>10} {'ratio':>6} {'cluster s':>10} "
          f"{'ratio':>6} {'client KiB':>11}")
    demux_loop(paths[:1])
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=":0",
                                  silence_logs=40) as cluster:
        for n in counts:
            times: dict[str, list[float]] = {"pyav": [], "threads": [], "cluster": []}
            kept = 0
            for _ in range(repeat):
                start = time.perf_counter()
                demux_loop(paths[:n])
                times["pyav"].append(time.perf_counter() - start)
                for where, address in (("threads", None), ("cluster", cluster)):
                    db = tempfile.mkdtemp(prefix="bench_scale_db_")
                    try:
                        with sp.Client(address=address, db_path=db, show_progress=False) as sc:
                            videos = [sp.NamedVideoStream(sc, f"v{i}", path=p)
                                      for i, p in enumerate(paths[:n])]
                            start = time.perf_counter()
                            sc.io.Input(videos)
                            times[where].append(time.perf_counter() - start)
                            if where == "cluster":  # what the client holds of the indexes
                                kept = len(pickle.dumps([v.index for v in videos]))
                    finally:
                        shutil.rmtree(db, ignore_errors=True)
            base = statistics.median(times["pyav"])
            t, c = statistics.median(times["threads"]), statistics.median(times["cluster"])
            print(f"{n:>7} {base:>8.2f} {t:>10.2f} {t / base:>6.2f} {c:>10.2f} {c / base:>6.2f} "
                  f"{kept / 1024:>11.0f}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer videos, shorter videos")
    parser.add_argument("--repeat", type=int, default=None, help="runs per case (default 3, "
                        "quick 1)")
    parser.add_argument("--long-only", action="store_true", help="only the long video cases")
    parser.add_argument("--data", default=os.path.join(tempfile.gettempdir(),
                                                       "scanner_nb_bench_scale"))
    parser.add_argument("--child", nargs=2, metavar=("METHOD", "PATHS_JSON"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(*args.child)
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    os.makedirs(args.data, exist_ok=True)
    repeat = args.repeat or (1 if args.quick else 3)
    if not args.long_only:
        many_clips(args.data, [1, 10, 100] if args.quick else [1, 10, 100, 1000], repeat)
    long_video(args.data, [1, 2, 5] if args.quick else [1, 10, 60], repeat)
    if not args.long_only:
        indexing(args.data, [100] if args.quick else [100, 1000], repeat)


if __name__ == "__main__":
    main()
