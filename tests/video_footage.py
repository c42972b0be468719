"""Awkward real-world videos for the tests, made with PyAV and the imageio-ffmpeg binary.

Each maker writes one small file (64x48 .. 160x96, under 150 frames) whose frames carry their
own index (:func:`scanner_nb.samples.frame_index`), and returns its path. :func:`plain_decode`
is the reference every test compares with: a plain sequential PyAV decode, single-threaded,
with the corrupt flag of every frame.
"""

from __future__ import annotations

import os
import subprocess

import av
import numpy as np

from scanner_nb.samples import make_video


def ffmpeg(*args: str) -> None:
    """Run the imageio-ffmpeg binary (quiet; raises on failure)."""
    import imageio_ffmpeg

    subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-loglevel", "error",
                    "-y", *args], check=True, capture_output=True)


def rotated(folder: str, rotation: int = 90, hflip: bool = False, ext: str = "mp4") -> str:
    """A clip with a display matrix (as phones write): ``rotation`` degrees counterclockwise."""
    base = make_video(os.path.join(folder, f"rot-base-{rotation}-{hflip}.mp4"), n_frames=30,
                      width=64, height=48, gop=10)
    out = os.path.join(folder, f"rot{rotation}{'-hflip' if hflip else ''}.{ext}")
    ffmpeg("-display_rotation", str(rotation), *(["-display_hflip"] if hflip else []),
           "-i", base, "-c", "copy", out)
    return out


def resolution_change(folder: str) -> str:
    """An MPEG-TS whose frames go from 64x48 (rows 0-29) to 128x96 (rows 30-59)."""
    a = make_video(os.path.join(folder, "rc-a.mp4"), n_frames=30, width=64, height=48, gop=10)
    b = make_video(os.path.join(folder, "rc-b.mp4"), n_frames=30, width=128, height=96, gop=10)
    ta, tb = os.path.join(folder, "rc-a.ts"), os.path.join(folder, "rc-b.ts")
    ffmpeg("-i", a, "-c", "copy", "-muxdelay", "0", ta)
    ffmpeg("-i", b, "-c", "copy", "-muxdelay", "0", "-output_ts_offset", "1.25", tb)
    out = os.path.join(folder, "resolution-change.ts")
    with open(out, "wb") as f:
        for part in (ta, tb):
            with open(part, "rb") as p:
                f.write(p.read())
    return out


def _packet_positions(path: str) -> list[tuple[int, int, bool]]:
    """(byte position, size, keyframe) of every video packet, in file order."""
    with av.open(path) as c:
        return [(p.pos, p.size, p.is_keyframe) for p in c.demux(c.streams.video[0]) if p.size]


def damaged(folder: str) -> str:
    """An mp4 (GOP 40) with a few bytes overwritten inside the packet of frame 50."""
    path = make_video(os.path.join(folder, "damaged.mp4"), n_frames=120, width=160, height=96,
                      gop=40)
    pos, size, _ = _packet_positions(path)[50]
    with open(path, "r+b") as f:
        f.seek(pos + size // 3)
        f.write(bytes([0xFF, 0x00, 0xA5, 0x5A, 0xFF, 0x13, 0x37, 0x00]) * 2)
    return path


def broken_packet(folder: str) -> str:
    """An mp4 (GOP 40) whose packet of frame 50 is all noise: the decoder fails there (plain
    PyAV stops); ``broken-intact.mp4`` beside it is the file before the damage."""
    intact = make_video(os.path.join(folder, "broken-intact.mp4"), n_frames=120, width=160,
                        height=96, gop=40)
    pos, size, _ = _packet_positions(intact)[50]
    with open(intact, "rb") as f:
        data = bytearray(f.read())
    data[pos:pos + size] = np.random.default_rng(50).integers(0, 256, size, np.uint8).tobytes()
    path = os.path.join(folder, "broken.mp4")
    with open(path, "wb") as f:
        f.write(data)
    return path


def truncated(folder: str) -> str:
    """An MPEG-TS (GOP 40) cut off in the middle of its bytes, mid-GOP, mid-packet."""
    path = make_video(os.path.join(folder, "whole.ts"), n_frames=120, width=160, height=96,
                      gop=40)
    out = os.path.join(folder, "truncated.ts")
    with open(path, "rb") as f:
        data = f.read()
    with open(out, "wb") as f:
        f.write(data[: len(data) // 2 + 101])
    return out


def duplicated_timestamps(folder: str) -> str:
    """An mkv whose frames come in pairs sharing one timestamp (no B-frames)."""
    base = make_video(os.path.join(folder, "dup-base.mp4"), n_frames=60, width=64, height=48,
                      gop=10)
    out = os.path.join(folder, "duplicated.mkv")
    ffmpeg("-i", base, "-c", "copy", "-bsf:v", "setts=ts=24*trunc(N/2)",
           out)
    return out


def odd_size(folder: str) -> str:
    """An mpeg4 clip of 65x49 pixels."""
    return make_video(os.path.join(folder, "odd.mp4"), n_frames=24, width=65, height=49, gop=8,
                      codec="mpeg4")


def two_tracks(folder: str) -> str:
    """An mkv with two video tracks: 64x48 (30 frames), then 96x64 (20 frames)."""
    a = make_video(os.path.join(folder, "tt-a.mp4"), n_frames=30, width=64, height=48, gop=10)
    b = make_video(os.path.join(folder, "tt-b.mp4"), n_frames=20, width=96, height=64, gop=5)
    out = os.path.join(folder, "two-tracks.mkv")
    ffmpeg("-i", a, "-i", b, "-map", "0:v", "-map", "1:v", "-c", "copy", out)
    return out


def plain_decode(path: str, track: int = 0, threads: bool = False) -> list:
    """Every frame of a video track as ``(rgb array, corrupt flag, keyframe flag)``, in order."""
    out = []
    with av.open(path) as c:
        stream = c.streams.video[track]
        stream.thread_type = "AUTO" if threads else "NONE"
        try:
            for frame in c.decode(stream):
                out.append((frame.to_ndarray(format="rgb24"), bool(frame.is_corrupt),
                            bool(frame.key_frame)))
        except av.FFmpegError:
            pass
    return out


def display(frame: np.ndarray, rotation: int, hflip: bool) -> np.ndarray:
    """A coded frame as a player shows it: turned counterclockwise, then mirrored left-right."""
    frame = np.rot90(frame, rotation // 90)
    return np.ascontiguousarray(frame[:, ::-1] if hflip else frame)
