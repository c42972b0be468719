"""The image functions (numpy) against independent references, and the built-in ops' kernels.

Float ops (resize, blur) are computed in float32 and rounded half up; the references here are
float64 (or exact fractions), so on values within float32 error of a rounding tie they may
differ by one level: those tests allow a difference of at most 1 on under 1% of the values and
demand exact equality where the arithmetic is exact (dyadic weights). Integer-exact ops (gray,
hsv, bgr, histogram, difference) must match exactly.
"""

from __future__ import annotations

import colorsys
import math
from fractions import Fraction

import numpy as np
import pytest
import scipy.ndimage as ndi

from scanner_nb import imgproc
from scanner_nb.devices import DeviceType
from scanner_nb.errors import ScannerTypeError, ScannerValueError
from scanner_nb.imgproc import (
    blur,
    convert_color,
    frame_difference,
    gaussian_kernel,
    histogram,
    resize,
)


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


@pytest.fixture
def frames(rng):
    """Three small random RGB frames, 9×11."""
    return rng.integers(0, 256, (3, 9, 11, 3), dtype=np.uint8)


def round_half_up(values):
    return np.floor(np.asarray(values, dtype=np.float64) + 0.5)


def assert_close_uint8(actual, expected, max_fraction_off=0.01):
    """Equal but for rounding near ties: |diff| <= 1 on at most ``max_fraction_off`` of values."""
    assert actual.shape == expected.shape
    assert actual.dtype == np.uint8
    diff = np.abs(actual.astype(np.int64) - np.asarray(expected).astype(np.int64))
    assert diff.max(initial=0) <= 1
    assert np.mean(diff > 0) <= max_fraction_off


# --- resize -------------------------------------------------------------------------------------


def reference_resize(frame, width, height):
    """OpenCV INTER_LINEAR, one output pixel at a time, float64."""
    src_h, src_w, channels = frame.shape
    out = np.zeros((height, width, channels))
    for y in range(height):
        sy = min(max((y + 0.5) * src_h / height - 0.5, 0.0), src_h - 1)
        y0 = int(math.floor(sy))
        y1, fy = min(y0 + 1, src_h - 1), sy - y0
        for x in range(width):
            sx = min(max((x + 0.5) * src_w / width - 0.5, 0.0), src_w - 1)
            x0 = int(math.floor(sx))
            x1, fx = min(x0 + 1, src_w - 1), sx - x0
            for c in range(channels):
                top = frame[y0, x0, c] * (1 - fx) + frame[y0, x1, c] * fx
                bottom = frame[y1, x0, c] * (1 - fx) + frame[y1, x1, c] * fx
                out[y, x, c] = top * (1 - fy) + bottom * fy
    return round_half_up(out)


@pytest.mark.parametrize("width, height", [(22, 18), (5, 4), (4, 9), (11, 9), (17, 5), (1, 1),
                                           (3, 20), (30, 2)])
def test_resize_matches_per_pixel_reference(frames, width, height):
    out = resize(frames, width, height, np)
    assert out.shape == (3, height, width, 3) and out.dtype == np.uint8
    expected = np.stack([reference_resize(f, width, height) for f in frames])
    assert_close_uint8(out, expected)


def test_resize_exact_for_dyadic_scales(rng):
    frame = rng.integers(0, 256, (4, 6, 3), dtype=np.uint8)
    for width, height in [(12, 8), (24, 16), (3, 2)]:
        np.testing.assert_array_equal(
            resize(frame, width, height, np), reference_resize(frame, width, height)
        )


def test_resize_agrees_with_scipy_zoom(frames):
    # scipy's grid_mode=True is the pixel-centre convention; mode="nearest" clamps
    for height, width in [(18, 22), (4, 5), (9, 4)]:
        zoom = (1, height / 9, width / 11, 1)
        expected = ndi.zoom(frames.astype(np.float64), zoom, order=1, grid_mode=True,
                            mode="nearest")
        assert_close_uint8(resize(frames, width, height, np), round_half_up(expected), 0.02)


def test_resize_known_values():
    frame = np.array([[[0], [100]]], np.uint8)
    np.testing.assert_array_equal(resize(frame, 4, 1, np)[0, :, 0], [0, 25, 75, 100])
    np.testing.assert_array_equal(resize(frame, 1, 1, np)[0, :, 0], [50])
    flat = np.full((5, 7, 3), 77, np.uint8)
    assert (resize(flat, 13, 2, np) == 77).all()


def test_resize_single_frame_and_identity(frames):
    one = resize(frames[0], 5, 4, np)
    assert one.shape == (4, 5, 3)
    np.testing.assert_array_equal(one, resize(frames, 5, 4, np)[0])
    same = resize(frames, 11, 9, np)
    np.testing.assert_array_equal(same, frames)
    assert same is not frames
    assert resize(frames, 5, 4).shape == (3, 4, 5, 3)  # xp inferred from the input


@pytest.mark.parametrize(
    "args, error",
    [((0, 5), ScannerValueError), ((5, -1), ScannerValueError), ((2.5, 5), ScannerTypeError),
     ((True, 5), ScannerTypeError)],
)
def test_resize_rejects_sizes(frames, args, error):
    with pytest.raises(error):
        resize(frames, *args, np)


def test_frame_checks(frames):
    with pytest.raises(ScannerValueError, match="uint8"):
        resize(frames.astype(np.float32), 4, 4, np)
    with pytest.raises(ScannerValueError, match="shape"):
        blur(frames[0, :, :, 0], 3, 0, np)


# --- convert_color ------------------------------------------------------------------------------


def exact_round(fraction: Fraction) -> int:
    return math.floor(fraction + Fraction(1, 2))


def reference_hsv(r: int, g: int, b: int) -> tuple[int, int, int]:
    """OpenCV's 8-bit HSV from its definition, in exact fractions."""
    v, low = max(r, g, b), min(r, g, b)
    diff = v - low
    s = exact_round(Fraction(255 * diff, v)) if v else 0
    if diff == 0:
        return 0, s, v
    if v == r:
        hue = Fraction(60 * (g - b), diff)
    elif v == g:
        hue = 120 + Fraction(60 * (b - r), diff)
    else:
        hue = 240 + Fraction(60 * (r - g), diff)
    h = exact_round(hue / 2)
    return (h + 180 if h < 0 else h), s, v


SPECIAL_PIXELS = [
    (0, 0, 0), (255, 255, 255), (128, 128, 128), (255, 0, 0), (0, 255, 0), (0, 0, 255),
    (255, 255, 0), (0, 255, 255), (255, 0, 255), (255, 0, 1), (255, 1, 0), (200, 3, 4),
    (1, 0, 0), (10, 20, 30), (30, 20, 10), (254, 255, 255), (7, 7, 8),
]


@pytest.fixture
def pixels(rng):
    """Special colours plus random ones, as a (1, n, 3) frame."""
    random = rng.integers(0, 256, (200, 3)).tolist()
    return np.array([SPECIAL_PIXELS + [tuple(p) for p in random]], np.uint8)


def test_gray_matches_bt601_exactly(pixels, frames):
    out = convert_color(pixels, "gray", np)
    assert out.shape == pixels.shape[:2] + (1,) and out.dtype == np.uint8
    expected = [exact_round(Fraction(299 * r + 587 * g + 114 * b, 1000))
                for r, g, b in pixels[0].astype(int).tolist()]
    np.testing.assert_array_equal(out[0, :, 0], expected)
    batch = convert_color(frames, "gray", np)
    assert batch.shape == (3, 9, 11, 1)
    floats = frames.astype(np.float64) @ np.array([0.299, 0.587, 0.114])
    assert_close_uint8(batch[..., 0], round_half_up(floats))


def test_hsv_matches_definition_exactly(pixels):
    out = convert_color(pixels, "hsv", np)
    assert out.dtype == np.uint8 and out.shape == pixels.shape
    expected = [reference_hsv(*p) for p in pixels[0].astype(int).tolist()]
    np.testing.assert_array_equal(out[0], expected)
    assert out[..., 0].max() <= 179


def test_hsv_agrees_with_colorsys(pixels):
    out = convert_color(pixels, "hsv", np)[0].astype(int)
    for (r, g, b), (h, s, v) in zip(pixels[0].astype(int).tolist(), out.tolist()):
        ch, cs, cv = colorsys.rgb_to_hsv(r / 255, g / 255, b / 255)
        hue_off = abs(h - round(ch * 180) % 180)
        assert min(hue_off, 180 - hue_off) <= 1, (r, g, b)
        assert abs(s - round(cs * 255)) <= 1 and v == round(cv * 255), (r, g, b)


def test_hsv_known_values():
    pixels = np.array([[[255, 0, 0], [0, 255, 0], [0, 0, 255], [90, 90, 90]]], np.uint8)
    np.testing.assert_array_equal(
        convert_color(pixels, "hsv", np)[0],
        [[0, 255, 255], [60, 255, 255], [120, 255, 255], [0, 0, 90]],
    )


def test_bgr_swaps_channels(frames):
    out = convert_color(frames, "BGR", np)  # case-insensitive
    np.testing.assert_array_equal(out, frames[..., ::-1])
    assert out.flags.c_contiguous
    np.testing.assert_array_equal(convert_color(frames[1], "bgr", np), frames[1, ..., ::-1])


def test_convert_color_rejects(frames):
    with pytest.raises(ScannerValueError, match="gray, hsv, bgr"):
        convert_color(frames, "yuv", np)
    with pytest.raises(ScannerTypeError):
        convert_color(frames, 5, np)
    with pytest.raises(ScannerValueError, match="3-channel"):
        convert_color(frames[..., :1], "gray", np)


# --- blur ---------------------------------------------------------------------------------------


def test_gaussian_kernel_follows_opencv():
    # OpenCV's fixed kernels for ksize <= 7 with sigma <= 0
    assert gaussian_kernel(1, 0).tolist() == [1.0]
    assert gaussian_kernel(3, 0).tolist() == [0.25, 0.5, 0.25]
    assert gaussian_kernel(5, -1).tolist() == [0.0625, 0.25, 0.375, 0.25, 0.0625]
    assert gaussian_kernel(7, 0).sum() == 1.0
    # otherwise exp(-x^2 / 2 sigma^2), normalized; sigma <= 0 -> 0.3 ((k - 1) / 2 - 1) + 0.8
    for size, sigma in [(9, 0), (5, 1.3), (3, 2.0), (11, 0.5)]:
        used = sigma if sigma > 0 else 0.3 * ((size - 1) * 0.5 - 1) + 0.8
        x = np.arange(size) - size // 2
        expected = np.exp(-(x**2) / (2 * used**2))
        np.testing.assert_allclose(gaussian_kernel(size, sigma), expected / expected.sum(),
                                   rtol=1e-12)


@pytest.mark.parametrize("size", [0, 2, 4, -3])
def test_blur_rejects_kernel_sizes(frames, size):
    with pytest.raises(ScannerValueError, match="kernel_size"):
        blur(frames, size, 1.0, np)


def test_blur_rejects_bad_sigma(frames):
    with pytest.raises(ScannerTypeError):
        blur(frames, 3, "wide", np)
    with pytest.raises(ScannerTypeError):
        blur(frames, 3.0, 1.0, np)
    with pytest.raises(ScannerValueError):
        blur(frames, 3, float("nan"), np)


def reference_blur(frames, size, sigma):
    """Separable correlation with scipy, mode="mirror" (reflect-101), float64."""
    weights = gaussian_kernel(size, sigma)
    out = ndi.correlate1d(frames.astype(np.float64), weights, axis=-3, mode="mirror")
    out = ndi.correlate1d(out, weights, axis=-2, mode="mirror")
    return round_half_up(out)


@pytest.mark.parametrize("size, sigma", [(3, 0), (5, 0), (7, 0), (9, 0), (5, 1.3), (15, 3.0),
                                         (21, 0)])
def test_blur_matches_scipy_mirror(frames, size, sigma):
    # kernels wider than the 9x11 frame reflect more than once; scipy's mirror does the same
    assert_close_uint8(blur(frames, size, sigma, np), reference_blur(frames, size, sigma))


def test_blur_matches_gaussian_filter1d(frames):
    # an independent Gaussian: scipy's, with the same radius and sigma
    expected = ndi.gaussian_filter1d(frames.astype(np.float64), 1.7, axis=1, mode="mirror",
                                     radius=3)
    expected = ndi.gaussian_filter1d(expected, 1.7, axis=2, mode="mirror", radius=3)
    assert_close_uint8(blur(frames, 7, 1.7, np), round_half_up(expected))


def test_blur_borders_are_reflect_101():
    row = np.zeros((1, 5, 1), np.uint8)
    row[0, 0, 0] = 160  # an edge pixel is not repeated: d c b | a b c d
    # horizontal: [a, b, c] * [1/4, 1/2, 1/4] with x[-1] = x[1]; vertical: a 1-row frame reflects
    # onto itself
    np.testing.assert_array_equal(blur(row, 3, 0, np)[0, :, 0], [80, 40, 0, 0, 0])
    tiny = np.array([[[10], [250]]], np.uint8)  # wider kernel than the frame
    assert_close_uint8(blur(tiny, 5, 0, np), reference_blur(tiny, 5, 0), 0)


def test_blur_identity_and_flat(frames):
    out = blur(frames, 1, 0, np)
    np.testing.assert_array_equal(out, frames)
    assert out is not frames
    flat = np.full((2, 6, 7, 3), 201, np.uint8)
    assert (blur(flat, 9, 2.5, np) == 201).all()
    assert blur(frames[0], 5, 1.0, np).shape == frames[0].shape


# --- histogram ----------------------------------------------------------------------------------


@pytest.mark.parametrize("bins", [1, 2, 7, 16, 100, 256, 300])
def test_histogram_matches_numpy(frames, bins):
    out = histogram(frames, bins, np)
    assert out.shape == (3, 3, bins) and out.dtype == np.int64
    for f, frame in enumerate(frames):
        for c in range(3):
            expected, _ = np.histogram(frame[..., c], bins=bins, range=(0, 256))
            np.testing.assert_array_equal(out[f, c], expected)
    assert (out.sum(axis=-1) == 9 * 11).all()


def test_histogram_single_frame_and_edges():
    frame = np.array([[[0, 15, 16], [255, 240, 239]]], np.uint8)
    out = histogram(frame, 16, np)
    assert out.shape == (3, 16)
    assert out[0].tolist() == [1] + [0] * 14 + [1]
    assert out[1].tolist() == [1] + [0] * 14 + [1]
    assert out[2].tolist() == [0, 1] + [0] * 12 + [1, 0]
    assert histogram(frame).shape == (3, 16)  # default bins and xp


def test_histogram_rejects_bins(frames):
    with pytest.raises(ScannerValueError):
        histogram(frames, 0, np)
    with pytest.raises(ScannerTypeError):
        histogram(frames, 4.5, np)


# --- frame_difference ---------------------------------------------------------------------------


def test_frame_difference_matches_int16(frames):
    out = frame_difference(frames[0], frames[1], np)
    expected = np.abs(frames[1].astype(np.int16) - frames[0].astype(np.int16))
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out, expected)
    np.testing.assert_array_equal(frame_difference(frames[:2], frames[1:], np),
                                  np.abs(frames[1:].astype(np.int16) - frames[:2]))
    assert not frame_difference(frames[2], frames[2], np).any()


def test_frame_difference_rejects(frames):
    with pytest.raises(ScannerValueError, match="one shape"):
        frame_difference(frames[0], frames[0, :4], np)
    with pytest.raises(ScannerValueError, match="uint8"):
        frame_difference(frames[0].astype(np.int16), frames[1].astype(np.int16), np)


# --- the ops' kernels, run directly on the CPU ---------------------------------------------------


def make_kernel(name, **init_args):
    from scanner_nb.kernel import KernelConfig, lookup_op

    spec = lookup_op(name)
    return spec, spec.make_kernel(KernelConfig(init_args, DeviceType.CPU))


@pytest.mark.parametrize("name", ["Resize", "ConvertColor", "Blur", "Histogram",
                                  "FrameDifference"])
def test_ops_are_registered_for_cpu_and_gpu(name):
    from scanner_nb.kernel import lookup_op

    spec = lookup_op(name)
    assert set(spec.device_sets) == {(DeviceType.CPU, 1), (DeviceType.GPU, 1)}
    assert [p.name for p in spec.stream_params] == ["frame"]


def test_op_specs():
    from scanner_nb.kernel import lookup_op

    assert set(lookup_op("Resize").config_params) == {"width", "height", "interpolation", "min",
                                                      "preserve_aspect"}
    assert set(lookup_op("ConvertColor").config_params) == {"conversion"}
    assert set(lookup_op("Blur").init_params) == {"kernel_size", "sigma"}
    assert lookup_op("Histogram").init_params == {"bins": 16}
    assert lookup_op("FrameDifference").stencil == (-1, 0)
    assert lookup_op("Resize").batch > 1 and lookup_op("Histogram").outputs[0].name == "Any"


def within_one(a, b):
    """OpenCV's fixed-point arithmetic rounds a few pixels differently from the exact formulas
    of the array functions (the GPU paths): at most by 1."""
    assert a.shape == b.shape and a.dtype == b.dtype
    assert np.abs(a.astype(np.int16) - b).max() <= 1


def test_resize_kernel(frames):
    import cv2

    _, kernel = make_kernel("Resize")
    kernel.new_stream(width=5, height=4)
    out = kernel.execute(frames)
    within_one(out, resize(frames, 5, 4, np))
    np.testing.assert_array_equal(out[1], cv2.resize(frames[1], (5, 4)))
    kernel.new_stream(width=5, height=4, interpolation="INTER_AREA")
    np.testing.assert_array_equal(kernel.execute(frames)[2], cv2.resize(
        frames[2], (5, 4), interpolation=cv2.INTER_AREA))
    kernel.new_stream(width=22, height=0, preserve_aspect=True)
    assert kernel.execute(frames).shape == (3, 18, 22, 3)
    kernel.new_stream(width=50, height=50, min=True)
    np.testing.assert_array_equal(kernel.execute(frames), frames)
    kernel.new_stream(width=5, height=4)
    ragged = kernel.execute([frames[0], frames[1, :3]])
    assert [f.shape for f in ragged] == [(4, 5, 3), (4, 5, 3)]
    with pytest.raises(ScannerValueError):
        kernel.new_stream(width=0, height=4)


def test_convert_color_kernel(frames):
    import cv2

    before = frames.copy()
    _, kernel = make_kernel("ConvertColor")
    kernel.new_stream(conversion="gray")
    gray = kernel.execute(frames)
    assert gray.shape == (3, 9, 11, 1)
    within_one(gray, convert_color(frames, "gray", np))
    kernel.new_stream(conversion="COLOR_RGB2GRAY")
    np.testing.assert_array_equal(kernel.execute(frames), gray)
    kernel.new_stream(conversion="hsv")
    hsv = kernel.execute(frames)
    np.testing.assert_array_equal(hsv[0], cv2.cvtColor(frames[0], cv2.COLOR_RGB2HSV))
    within_one(hsv, convert_color(frames, "hsv", np))
    kernel.new_stream(conversion="COLOR_RGB2LAB")
    np.testing.assert_array_equal(kernel.execute(frames)[1],
                                  cv2.cvtColor(frames[1], cv2.COLOR_RGB2LAB))
    kernel.new_stream(conversion="COLOR_RGB2YCrCb")  # OpenCV's mixed-case names
    np.testing.assert_array_equal(kernel.execute(frames)[2],
                                  cv2.cvtColor(frames[2], cv2.COLOR_RGB2YCrCb))
    np.testing.assert_array_equal(frames, before)  # the kernel's input is left as it was
    with pytest.raises(ScannerValueError, match="COLOR_RGB2GRAY"):
        kernel.new_stream(conversion="COLOR_NOPE")
    with pytest.raises(ScannerValueError):
        kernel.new_stream(conversion="sepia")


def test_blur_kernel(frames):
    import cv2

    _, kernel = make_kernel("Blur", kernel_size=5, sigma=1.2)
    out = kernel.execute(frames)
    within_one(out, blur(frames, 5, 1.2, np))
    np.testing.assert_array_equal(out[0], cv2.GaussianBlur(frames[0], (5, 5), 1.2))
    with pytest.raises(ScannerValueError):
        make_kernel("Blur", kernel_size=4)


def test_histogram_kernel(frames):
    _, kernel = make_kernel("Histogram", bins=8)
    out = kernel.execute(frames)
    assert isinstance(out, list) and len(out) == 3
    assert all(isinstance(h, np.ndarray) and h.shape == (3, 8) and h.dtype == np.int64
               for h in out)
    np.testing.assert_array_equal(out[1], histogram(frames[1], 8, np))


@pytest.mark.parametrize("bins", [1, 7, 16, 32, 33, 256])
@pytest.mark.parametrize("channels", [1, 3, 4])
def test_histogram_kernel_counts_as_numpy(rng, bins, channels):
    # three channels in up to 32 bins go through one joint histogram, others channel by channel
    frames = rng.integers(0, 256, (2, 48, 64, channels), dtype=np.uint8)
    frames[1, :20] = 255  # a full top bin
    _, kernel = make_kernel("Histogram", bins=bins)
    for got, frame in zip(kernel.execute(frames), frames):
        assert got.shape == (channels, bins) and got.dtype == np.int64
        np.testing.assert_array_equal(got, [np.histogram(frame[..., c], bins, (0, 256))[0]
                                            for c in range(channels)])


def test_frame_difference_kernel(frames):
    _, kernel = make_kernel("FrameDifference")
    np.testing.assert_array_equal(kernel.execute([[frames[0], frames[1]]])[0],
                                  frame_difference(frames[0], frames[1], np))
    assert not kernel.execute([[None, frames[2]]])[0].any()  # a null before the row


def test_module_doctests():
    import doctest

    from scanner_nb.imgproc import arrays, images, ops

    for module in (imgproc, arrays, ops, images):
        failures, _ = doctest.testmod(module)
        assert failures == 0, module


def test_cpu_batches_are_processed_in_chunks_with_the_same_result(frames, monkeypatch):
    whole = [resize(frames, 7, 5, np), blur(frames, 5, 1.0, np),
             convert_color(frames, "hsv", np), convert_color(frames, "gray", np)]
    monkeypatch.setattr(imgproc.arrays, "_CPU_CHUNK_VALUES", frames[0].size * 2)  # 2 frames a step
    chunked = [resize(frames, 7, 5, np), blur(frames, 5, 1.0, np),
               convert_color(frames, "hsv", np), convert_color(frames, "gray", np)]
    for a, b in zip(whole, chunked):
        np.testing.assert_array_equal(a, b)
