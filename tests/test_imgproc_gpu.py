"""The image functions and ops on CuPy equal their numpy results; data stays on the device.

Tolerance: gray, hsv, bgr, histogram and difference are exact integer results on both devices
(float32 division is correctly rounded on CUDA too), so they must be equal. resize and blur are
float32 sums rounded at the end; the GPU may order or fuse them differently, so a value within
float32 error of a rounding tie may differ by 1: we allow |diff| <= 1 on at most 0.1% of values.
"""

from __future__ import annotations

import numpy as np
import pytest

from scanner_nb import devices
from scanner_nb.devices import DeviceType, reset_transfer_stats, to_device, to_host, transfer_stats
from scanner_nb.imgproc import blur, convert_color, frame_difference, histogram, resize

pytestmark = pytest.mark.gpu

if not devices.gpu_available():
    pytest.skip(f"no usable GPU: {devices.gpu_unavailable_reason()}", allow_module_level=True)

cupy = devices.array_module(DeviceType.GPU)


@pytest.fixture
def frames():
    return np.random.default_rng(7).integers(0, 256, (4, 45, 64, 3), dtype=np.uint8)


@pytest.fixture
def gpu_frames(frames):
    return cupy.asarray(frames)


def assert_close_uint8(actual, expected, max_fraction_off=0.001):
    assert isinstance(actual, cupy.ndarray)
    actual = actual.get()
    assert actual.dtype == np.uint8 and actual.shape == expected.shape
    diff = np.abs(actual.astype(np.int64) - expected.astype(np.int64))
    assert diff.max(initial=0) <= 1
    assert np.mean(diff > 0) <= max_fraction_off


def assert_equal_on_device(actual, expected):
    assert isinstance(actual, cupy.ndarray)
    np.testing.assert_array_equal(actual.get(), expected)


@pytest.mark.parametrize("width, height", [(32, 20), (128, 90), (17, 61), (64, 45)])
def test_resize(frames, gpu_frames, width, height):
    assert_close_uint8(resize(gpu_frames, width, height, cupy), resize(frames, width, height, np))


@pytest.mark.parametrize("conversion", ["gray", "hsv", "bgr"])
def test_convert_color(frames, gpu_frames, conversion):
    assert_equal_on_device(convert_color(gpu_frames, conversion, cupy),
                           convert_color(frames, conversion, np))


@pytest.mark.parametrize("size, sigma", [(3, 0), (5, 0), (9, 0), (7, 1.7), (31, 0)])
def test_blur(frames, gpu_frames, size, sigma):
    assert_close_uint8(blur(gpu_frames, size, sigma, cupy), blur(frames, size, sigma, np))


@pytest.mark.parametrize("bins", [1, 7, 16, 256])
def test_histogram(frames, gpu_frames, bins):
    assert_equal_on_device(histogram(gpu_frames, bins, cupy), histogram(frames, bins, np))


def test_frame_difference(frames, gpu_frames):
    assert_equal_on_device(frame_difference(gpu_frames[0], gpu_frames[1], cupy),
                           frame_difference(frames[0], frames[1], np))


def test_xp_is_inferred_from_the_input(gpu_frames):
    assert isinstance(resize(gpu_frames, 8, 8), cupy.ndarray)


def test_one_transfer_each_way_per_batch(frames):
    reset_transfer_stats()
    on_device = to_device(frames, cupy)
    assert isinstance(on_device, cupy.ndarray)
    assert transfer_stats()["host_to_device"] == 1
    # consecutive GPU functions: no host round trip
    out = blur(convert_color(resize(on_device, 32, 24, cupy), "bgr", cupy), 5, 0, cupy)
    assert transfer_stats()["device_to_host"] == 0
    back = to_host(out)
    assert isinstance(back, np.ndarray) and back.shape == (4, 24, 32, 3)
    assert transfer_stats()["host_to_device"] == 1 and transfer_stats()["device_to_host"] == 1


def test_gpu_kernels(frames, gpu_frames):
    from scanner_nb.kernel import KernelConfig, lookup_op

    def make(name, **args):
        return lookup_op(name).make_kernel(KernelConfig(args, DeviceType.GPU))

    resize_kernel = make("Resize")
    resize_kernel.new_stream(width=32, height=24)
    reset_transfer_stats()
    out = resize_kernel.execute(gpu_frames)
    assert isinstance(out, cupy.ndarray) and transfer_stats()["device_to_host"] == 0
    hists = make("Histogram", bins=8).execute(gpu_frames)
    assert all(isinstance(h, np.ndarray) for h in hists)  # small results come home
    np.testing.assert_array_equal(np.stack(hists), histogram(frames, 8, np))
    (diff,) = make("FrameDifference").execute([[gpu_frames[0], gpu_frames[1]]])
    assert_equal_on_device(diff, frame_difference(frames[0], frames[1], np))
