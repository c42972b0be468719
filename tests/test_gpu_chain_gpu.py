"""A chain of GPU ops over a real video, on a real GPU: same results as the CPU, no round trip.

``Resize -> Blur`` runs with both ops on the GPU (CuPy arrays from op to op) and again with
both on the CPU (``SCANNER_NB_DISABLE_GPU=1``). Tolerance, as in ``test_imgproc_gpu.py``:
resize and blur are float32 sums rounded at the end, and the GPU may order or fuse them
differently, so a value within float32 error of a rounding tie may differ by 1: at most 1 level,
on at most 0.1% of values.

Transfers are counted by :func:`scanner_nb.devices.transfer_stats`: one host-to-device copy per
input partition (a stacked ``(n, H, W, C)`` batch), none back between the two ops, one back per
partition at the end. The same logic runs without a GPU in ``test_gpu_fallback.py``.

Skipped where no GPU is usable (no CuPy, no CUDA device, or ``SCANNER_NB_DISABLE_GPU`` set).
"""

from __future__ import annotations

from typing import Sequence

import dask
import numpy as np
import pytest

import scanner_nb as sp
import scanner_nb.imgproc  # noqa: F401  (registers the built-in image ops)
from scanner_nb import devices, runtime
from scanner_nb.devices import DISABLE_GPU_ENV, DeviceType, reset_transfer_stats, transfer_stats
from scanner_nb.imgproc import blur, resize
from scanner_nb.samples import make_video

pytestmark = pytest.mark.gpu

if not devices.gpu_available():
    pytest.skip(f"no usable GPU: {devices.gpu_unavailable_reason()}", allow_module_level=True)

cupy = devices.array_module(DeviceType.GPU)

N_FRAMES, WIDTH, HEIGHT, GOP = 48, 640, 360, 12
SMALL = (320, 180)
KERNEL = 5

SEEN: list = []


@sp.register_python_op(name="gpu_chain_halve", device_type=sp.DeviceType.GPU, batch=8)
def gpu_chain_halve(config, frame: Sequence[sp.FrameType]) -> Sequence[sp.FrameType]:
    SEEN.append(("halve", type(frame), getattr(frame, "shape", None)))
    return frame // 2


@sp.register_python_op(name="gpu_chain_window", device_type=sp.DeviceType.GPU, stencil=[-1, 0])
def gpu_chain_window(config, frame: Sequence[sp.FrameType]) -> sp.FrameType:
    SEEN.append(("window", type(frame), tuple(type(f) for f in frame)))
    prev, cur = frame
    return cupy.maximum(prev, cur) - cupy.minimum(prev, cur)


@pytest.fixture(scope="module")
def video_path(tmp_path_factory):
    return make_video(tmp_path_factory.mktemp("video") / "clip.mp4", n_frames=N_FRAMES,
                      width=WIDTH, height=HEIGHT, gop=GOP)


@pytest.fixture
def gpu_client(tmp_path, monkeypatch):
    """A client whose ops with a GPU device set run on the GPU; fresh instances and counts."""
    monkeypatch.delenv(DISABLE_GPU_ENV, raising=False)
    runtime.close_instances()  # instances idle from other tests may hold other stream configs
    SEEN.clear()
    with sp.Client(db_path=str(tmp_path / "db"), partition_size=GOP, show_progress=False) as sc:
        assert sc.gpu_usable()
        yield sc
    SEEN.clear()


def chain(sc: sp.Client, video_path) -> tuple[sp.Stream, sp.Stream]:
    video = sc.io.Input([sp.NamedVideoStream(sc, "clip", path=str(video_path))])
    small = sc.ops.Resize(frame=video, width=[SMALL[0]], height=[SMALL[1]])
    return video, sc.ops.Blur(frame=small, kernel_size=KERNEL)


def device_of(stream: sp.Stream) -> str:
    return stream.summary()["nodes"][-1]["props"]["device"]


def assert_close_uint8(actual: np.ndarray, expected: np.ndarray, max_fraction_off=0.001):
    assert isinstance(actual, np.ndarray) and actual.dtype == np.uint8
    assert actual.shape == expected.shape
    diff = np.abs(actual.astype(np.int16) - expected.astype(np.int16))
    assert diff.max(initial=0) <= 1
    assert np.mean(diff > 0) <= max_fraction_off


def test_gpu_chain_equals_the_cpu_ops(gpu_client, video_path, tmp_path, monkeypatch):
    video, soft = chain(gpu_client, video_path)
    assert device_of(soft) == "GPU"
    assert soft.summary()["nodes"][-2]["props"]["device"] == "GPU"  # Resize
    (on_gpu,) = soft.compute()

    monkeypatch.setenv(DISABLE_GPU_ENV, "1")
    runtime.close_instances()
    with sp.Client(db_path=str(tmp_path / "db-cpu"), partition_size=GOP,
                   show_progress=False) as cpu:
        frames_cpu, soft_cpu = chain(cpu, video_path)
        assert device_of(soft_cpu) == "CPU"
        (on_cpu,) = soft_cpu.compute()
        (frames,) = frames_cpu.compute()

    assert on_gpu.shape == (N_FRAMES, SMALL[1], SMALL[0], 3)
    assert_close_uint8(on_gpu, on_cpu)
    np.testing.assert_array_equal(on_cpu, blur(resize(frames, *SMALL, np), KERNEL, 0, np))


def test_one_upload_per_batch_and_no_round_trip_between_the_ops(gpu_client, video_path):
    video, soft = chain(gpu_client, video_path)
    n_parts = len(soft.partitions_info()[0]["boundaries"])
    assert n_parts == N_FRAMES // GOP
    reset_transfer_stats()
    kept = soft.persist()  # both ops ran; every partition stays where it was made
    stats = transfer_stats()
    assert stats["host_to_device"] == n_parts  # one stacked batch per partition
    assert stats["host_to_device_bytes"] == N_FRAMES * HEIGHT * WIDTH * 3
    assert stats["device_to_host"] == 0  # nothing came back between Resize and Blur
    (parts,) = kept.to_delayed()
    lists = dask.compute(*parts, scheduler=gpu_client.scheduler)
    assert all(isinstance(f, np.ndarray) for part in lists for f in part)
    stats = transfer_stats()
    assert stats["host_to_device"] == n_parts
    assert stats["device_to_host"] == n_parts  # only the final copy, one per partition
    assert stats["device_to_host_bytes"] == N_FRAMES * SMALL[0] * SMALL[1] * 3


def test_one_download_per_partition_from_scratch(gpu_client, video_path):
    _, soft = chain(gpu_client, video_path)
    (parts,) = soft.to_delayed()
    reset_transfer_stats()
    dask.compute(*parts, scheduler=gpu_client.scheduler)
    assert transfer_stats()["host_to_device"] == len(parts)
    assert transfer_stats()["device_to_host"] == len(parts)


def test_gpu_ops_get_cupy_batches_and_windows(gpu_client, video_path):
    video = gpu_client.io.Input([sp.NamedVideoStream(gpu_client, "clip", path=str(video_path))])
    halved = gpu_client.ops.gpu_chain_halve(frame=video)
    diffs = gpu_client.ops.gpu_chain_window(frame=halved)
    reset_transfer_stats()
    (got,) = diffs.compute()
    (frames,) = video.compute()
    assert isinstance(got, np.ndarray) and got.shape == frames.shape
    half = frames // 2
    prev = half[np.maximum(np.arange(N_FRAMES) - 1, 0)]
    np.testing.assert_array_equal(got, np.maximum(prev, half) - np.minimum(prev, half))
    batches = [s for s in SEEN if s[0] == "halve"]
    assert batches and all(kind is cupy.ndarray and len(shape) == 4 for _, kind, shape in batches)
    windows = [s for s in SEEN if s[0] == "window"]
    assert len(windows) == N_FRAMES
    assert all(kinds == (cupy.ndarray, cupy.ndarray) for _, _, kinds in windows)
    assert transfer_stats()["host_to_device"] == N_FRAMES // GOP  # windows reuse device data
