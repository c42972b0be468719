"""GPU ops without a GPU: device choice, CPU fallback, the error, and the device data path.

Everything here runs on a CPU-only machine (CI) through the real engine (``sp.Client``):

- **Choice and fallback.** An op listing only GPU device sets raises
  ``sp.DeviceUnavailableError`` naming the op *at the op call*; an op listing both runs on the
  CPU, and its ``config.devices`` / ``config.device_type`` say so; ``SCANNER_NB_DISABLE_GPU``
  turns a usable GPU off.
- **CPU results.** The built-in image ops over a real (encoded, decoded) video give exactly the
  values of the pure numpy functions, and a CPU chain makes no host/device transfer.
- **The GPU data path, emulated.** ``devices.py`` asks ``devices._import_cupy()`` for the GPU
  array module wherever one is needed (``array_module(GPU)`` in the runtime and the image ops,
  ``array_module_of``). The ``emulated_gpu`` fixture makes that return :data:`emucupy`: numpy
  memory behind CuPy's interface *and its refusals* (``__cuda_array_interface__``, ``.get()``;
  ``numpy.asarray(device_array)`` and mixing a device array with a host array raise
  ``TypeError``, as CuPy does). The engine then runs its real GPU branch: ``to_device`` once per
  batch, device arrays handed from op to op, ``to_host`` for CPU ops and results, and the image
  ops' ``xp is not numpy`` code. The values must equal the CPU ones exactly (same arithmetic),
  and :func:`scanner_nb.devices.transfer_stats` counts every copy. The same checks against real
  CuPy are in ``tests/test_gpu_chain_gpu.py`` (marked ``gpu``).

Some tests pin down defects found while writing this file (stream-config args reaching a
reused instance, one host copy per partition, storing and pickling device frames).
"""

from __future__ import annotations

import pickle
import types
from typing import Any, Sequence

import dask
import numpy as np
import pytest

import scanner_nb as sp
import scanner_nb.imgproc  # noqa: F401  (registers the built-in image ops)
from scanner_nb import devices, runtime
from scanner_nb.devices import (
    DISABLE_GPU_ENV,
    DeviceType,
    is_device_array,
    reset_transfer_stats,
    transfer_stats,
)
from scanner_nb.imgproc import blur, convert_color, frame_difference, histogram, resize
from scanner_nb.samples import make_video
from scanner_nb.types import Batch

CPU, GPU = DeviceType.CPU, DeviceType.GPU
REAL_GPU = devices.gpu_available()  # probed once, before any test patches the probe
ZERO_STATS = dict.fromkeys(("host_to_device", "device_to_host", "host_to_device_bytes",
                            "device_to_host_bytes"), 0)


# =============================================================================================
# A CuPy stand-in: numpy memory behind CuPy's interface and refusals
# =============================================================================================

_REFUSAL = ("Implicit conversion to a NumPy array is not allowed. Please use `.get()` to "
            "construct a NumPy array explicitly.")  # CuPy's own words


def _unwrap(value: Any, allow_host: bool = False) -> Any:
    if isinstance(value, EmuArray):
        return value._a
    if isinstance(value, np.ndarray) and value.ndim > 0 and not allow_host:
        raise TypeError(f"Unsupported type {type(value)}")  # CuPy refuses host operands
    if isinstance(value, (list, tuple)):
        return type(value)(_unwrap(v, allow_host) for v in value)
    return value


def _wrap(value: Any) -> Any:
    if isinstance(value, (np.ndarray, np.generic)):
        return EmuArray(np.asarray(value))  # CuPy reductions give 0-d device arrays too
    if isinstance(value, tuple):
        return tuple(_wrap(v) for v in value)
    return value


class EmuArray(np.lib.mixins.NDArrayOperatorsMixin):
    """A 'device' array: ``devices.is_device_array`` says yes, numpy cannot read it implicitly."""

    __slots__ = ("_a",)

    def __init__(self, array: np.ndarray):
        self._a = array

    @property
    def __cuda_array_interface__(self) -> dict:
        return {"shape": self._a.shape, "typestr": self._a.dtype.str, "data": (0, False),
                "version": 3}

    shape = property(lambda self: self._a.shape)
    ndim = property(lambda self: self._a.ndim)
    dtype = property(lambda self: self._a.dtype)
    size = property(lambda self: self._a.size)
    nbytes = property(lambda self: self._a.nbytes)

    def __len__(self) -> int:
        return len(self._a)

    def __iter__(self):
        return (EmuArray(row) for row in self._a)

    def __getitem__(self, key):
        return _wrap(self._a[_unwrap(key, allow_host=True)])  # numpy index arrays are fine

    def __setitem__(self, key, value) -> None:
        self._a[_unwrap(key, allow_host=True)] = _unwrap(value, allow_host=True)

    def __array__(self, *args, **kwargs):
        raise TypeError(_REFUSAL)

    def __int__(self) -> int:
        return int(self._a)

    def __float__(self) -> float:
        return float(self._a)

    def __bool__(self) -> bool:
        return bool(self._a)

    def __repr__(self) -> str:
        return f"EmuArray({self._a!r})"

    def get(self) -> np.ndarray:
        return self._a.copy()

    def astype(self, dtype, copy: bool = True) -> EmuArray:
        return EmuArray(self._a.astype(dtype, copy=copy))

    def reshape(self, *shape) -> EmuArray:
        return EmuArray(self._a.reshape(*shape))

    def copy(self) -> EmuArray:
        return EmuArray(self._a.copy())

    def ravel(self) -> EmuArray:
        return EmuArray(self._a.ravel())

    def sum(self, *args, **kwargs):
        return _wrap(self._a.sum(*args, **kwargs))

    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        out = kwargs.get("out")
        if out is not None:
            kwargs["out"] = tuple(_unwrap(o) for o in out)
        result = getattr(ufunc, method)(*_unwrap(inputs), **kwargs)
        if out is not None:
            return out[0] if len(out) == 1 else out
        return _wrap(result)


class _EmuModule(types.ModuleType):
    """``emucupy.f(...)`` is ``numpy.f`` on the arrays' memory, returning device arrays."""

    def __getattr__(self, name: str) -> Any:
        value = getattr(np, name)
        if isinstance(value, type) or not callable(value):
            return value  # dtypes (emucupy.uint8), constants

        def call(*args, **kwargs):
            return _wrap(value(*_unwrap(args), **{k: _unwrap(v) for k, v in kwargs.items()}))

        call.__name__ = name
        return call


def _emu_asarray(array: Any, dtype: Any = None) -> EmuArray:
    """Host to 'device': a copy, as a real transfer makes."""
    if isinstance(array, EmuArray):
        return array if dtype is None else array.astype(dtype)
    return EmuArray(np.array(array, dtype=dtype))


emucupy = _EmuModule("emucupy")
emucupy.ndarray = EmuArray
emucupy.asarray = _emu_asarray


# =============================================================================================
# Fixtures and helpers
# =============================================================================================


@pytest.fixture
def no_gpu(monkeypatch):
    """This process has no usable GPU, whatever the machine (the probe says why not)."""
    monkeypatch.delenv(DISABLE_GPU_ENV, raising=False)
    monkeypatch.setattr(devices, "_probe_gpu", lambda: (False, "no CUDA device (test)"))
    devices._reset_gpu_probe()
    yield
    devices._reset_gpu_probe()


@pytest.fixture
def emulated_gpu(monkeypatch):
    """A usable 'GPU' whose array module is :data:`emucupy`; transfer counts start at zero."""
    monkeypatch.delenv(DISABLE_GPU_ENV, raising=False)
    monkeypatch.setattr(devices, "_probe_gpu", lambda: (True, None))
    monkeypatch.setattr(devices, "_import_cupy", lambda: emucupy)
    devices._reset_gpu_probe()
    reset_transfer_stats()
    yield emucupy
    devices._reset_gpu_probe()
    reset_transfer_stats()


@pytest.fixture
def stats():
    reset_transfer_stats()
    yield transfer_stats
    reset_transfer_stats()


@pytest.fixture(scope="module")
def video_path(tmp_path_factory):
    """A real H.264 clip: 36 frames of 96x64, a keyframe every 12 frames."""
    return make_video(tmp_path_factory.mktemp("video") / "clip.mp4", n_frames=36, width=96,
                      height=64, gop=12)


@pytest.fixture
def frames():
    return np.random.default_rng(3).integers(0, 256, (20, 24, 32, 3), dtype=np.uint8)


def make_client(tmp_path, partition_size=None) -> sp.Client:
    return sp.Client(db_path=str(tmp_path / "db"), partition_size=partition_size,
                     show_progress=False)


def device_of(stream: sp.Stream) -> str:
    """The device the engine chose for the op that made ``stream`` ("CPU" or "GPU")."""
    node = stream.summary()["nodes"][-1]
    assert node["kind"] == "op"
    return node["props"]["device"]


def fresh_compute(sc: sp.Client, *streams: sp.Stream) -> list:
    """Compute on fresh kernel instances.

    Works around the defect pinned by ``test_stream_config_params_reach_a_reused_instance``:
    an instance reused by another op call that differs only in stream-config params keeps the
    first call's values (``Resize`` to 40x30, then to 150x100, gives 40x30 twice).
    """
    runtime.close_instances()
    return list(dask.compute(*streams, scheduler=sc.scheduler))


def num_partitions(stream: sp.Stream) -> int:
    return sum(len(info["boundaries"]) for info in stream.partitions_info())


SEEN: list = []  # what kernels were handed (threaded scheduler: the same process)


@pytest.fixture(autouse=True)
def _fresh_state():
    """No record of earlier calls and no kernel instance made by an earlier test."""
    SEEN.clear()
    runtime.close_instances()
    yield
    SEEN.clear()


# ---- ops used below --------------------------------------------------------------------------


@sp.register_python_op(name="gpu_only_by_sets", device_sets=[(sp.DeviceType.GPU, 1)])
def gpu_only_by_sets(config, frame: sp.FrameType) -> sp.FrameType:
    SEEN.append(("gpu_only_by_sets", config.device_type, type(frame)))
    return frame


@sp.register_python_op(name="gpu_only_by_type", device_type=sp.DeviceType.GPU)
class GpuOnlyByType(sp.Kernel):
    def __init__(self, config):
        super().__init__(config)
        SEEN.append(("GpuOnlyByType.__init__", config.device_type))

    def execute(self, frame: sp.FrameType) -> sp.FrameType:
        return frame


@sp.register_python_op(name="where_am_i", device_sets=[(sp.DeviceType.CPU, 1),
                                                       (sp.DeviceType.GPU, 1)])
def where_am_i(config, frame: sp.FrameType) -> Any:
    """Reports the device the kernel was configured for and the kind of array it got."""
    return (config.device_type, tuple(config.devices), is_device_array(frame))


@sp.register_python_op(name="halve_batched", device_sets=[(sp.DeviceType.CPU, 1),
                                                          (sp.DeviceType.GPU, 1)], batch=4)
def halve_batched(config, frame: Sequence[sp.FrameType]) -> Sequence[sp.FrameType]:
    SEEN.append(("halve_batched", type(frame), tuple(frame.shape) if hasattr(frame, "shape")
                 else len(frame)))
    return frame // 2


@sp.register_python_op(name="plus_one", device_sets=[(sp.DeviceType.CPU, 1),
                                                     (sp.DeviceType.GPU, 1)])
def plus_one(config, frame: sp.FrameType) -> sp.FrameType:
    SEEN.append(("plus_one", type(frame), tuple(frame.shape)))
    return frame + 1


@sp.register_python_op(name="window_gpu", device_sets=[(sp.DeviceType.CPU, 1),
                                                       (sp.DeviceType.GPU, 1)],
                       stencil=[-1, 0, 1])
def window_gpu(config, frame: Sequence[sp.FrameType]) -> sp.FrameType:
    SEEN.append(("window_gpu", type(frame), tuple(type(f) for f in frame)))
    prev, cur, nxt = frame
    return (prev // 4 + cur // 2 + nxt // 4).astype("uint8")


@sp.register_python_op(name="cpu_identity")
def cpu_identity(config, frame: sp.FrameType) -> sp.FrameType:
    SEEN.append(("cpu_identity", type(frame)))
    return frame


# =============================================================================================
# The emulator itself must hold CuPy's boundaries, or the tests below prove nothing
# =============================================================================================


def test_emulated_device_arrays_refuse_the_host_like_cupy():
    host = np.arange(24, dtype=np.uint8).reshape(2, 2, 2, 3)
    dev = emucupy.asarray(host)
    assert is_device_array(dev) and not isinstance(dev, np.ndarray)
    with pytest.raises(TypeError, match="Implicit conversion"):
        np.asarray(dev)
    with pytest.raises(TypeError, match="Unsupported type"):
        dev + host  # mixing a device and a host array
    assert isinstance(dev + 1, EmuArray) and isinstance(dev[0], EmuArray)
    np.testing.assert_array_equal(dev.get(), host)
    # the image functions' GPU code (xp is not numpy) runs on it, with numpy's values
    np.testing.assert_array_equal(blur(resize(dev, 20, 12, emucupy), 5, 0, emucupy).get(),
                                  blur(resize(host, 20, 12, np), 5, 0, np))
    np.testing.assert_array_equal(histogram(dev, 8, emucupy).get(), histogram(host, 8, np))


# =============================================================================================
# Device choice at the op call
# =============================================================================================


@pytest.mark.parametrize("op", ["gpu_only_by_sets", "gpu_only_by_type"])
def test_gpu_only_op_raises_at_the_call_naming_the_op(tmp_path, no_gpu, frames, op):
    with make_client(tmp_path) as sc:
        stream = sc.io.Input([sp.MemoryStream(frames)])
        with pytest.raises(sp.DeviceUnavailableError) as info:
            getattr(sc.ops, op)(frame=stream)
    assert isinstance(info.value, sp.ScannerError)
    assert f"op {op!r}" in str(info.value)
    assert "GPU" in str(info.value) and "DeviceType.CPU" in str(info.value)  # says the fix
    assert SEEN == []  # raised while building: no kernel was made, nothing ran


def test_gpu_only_op_raises_at_the_call_on_a_cluster_without_gpus(tmp_path, cluster, frames):
    if REAL_GPU:
        pytest.skip("this machine has a usable GPU: the workers may have one too")
    with sp.Client(address=cluster, db_path=str(tmp_path / "db"), show_progress=False) as sc:
        assert sc.gpu_usable() is False  # asked of the workers
        with pytest.raises(sp.DeviceUnavailableError, match="'gpu_only_by_type'"):
            sc.ops.gpu_only_by_type(frame=sc.io.Input([sp.MemoryStream(frames)]))


def test_gpu_only_op_error_on_a_video_input(local_client, no_gpu, video_path):
    video = sp.NamedVideoStream(local_client, "clip", path=video_path)
    with pytest.raises(sp.DeviceUnavailableError, match="'gpu_only_by_sets'"):
        local_client.ops.gpu_only_by_sets(frame=local_client.io.Input([video]))


def test_op_with_both_device_sets_runs_on_the_cpu(client, no_gpu, frames):
    if REAL_GPU and client.distributed is not None:
        pytest.skip("this machine has a usable GPU: the workers would choose it")
    stream = client.ops.where_am_i(frame=client.io.Input([sp.MemoryStream(frames)]))
    assert device_of(stream) == "CPU"
    (got,) = stream.compute()
    assert got == [(CPU, (CPU,), False)] * len(frames)


def test_builtin_ops_fall_back_to_the_cpu(local_client, no_gpu, frames):
    stream = local_client.io.Input([sp.MemoryStream(frames)])
    small = local_client.ops.Resize(frame=stream, width=[16], height=[12])
    soft = local_client.ops.Blur(frame=small, kernel_size=3)
    assert device_of(small) == device_of(soft) == "CPU"
    np.testing.assert_array_equal(soft.compute()[0], blur(resize(frames, 16, 12, np), 3, 0, np))


@pytest.mark.parametrize("value, disabled", [("1", True), ("true", True), ("yes", True),
                                             ("0", False), ("", False), ("no", False)])
def test_env_var_disables_a_usable_gpu(tmp_path, emulated_gpu, monkeypatch, frames, value,
                                       disabled):
    monkeypatch.setenv(DISABLE_GPU_ENV, value)
    with make_client(tmp_path) as sc:
        stream = sc.io.Input([sp.MemoryStream(frames[:3])])
        both = sc.ops.where_am_i(frame=stream)
        if disabled:
            assert device_of(both) == "CPU"
            assert both.compute()[0] == [(CPU, (CPU,), False)] * 3
            with pytest.raises(sp.DeviceUnavailableError, match="'gpu_only_by_type'"):
                sc.ops.gpu_only_by_type(frame=stream)
        else:
            assert device_of(both) == "GPU"
            assert both.compute()[0] == [(GPU, (GPU,), True)] * 3
            assert device_of(sc.ops.gpu_only_by_type(frame=stream)) == "GPU"


def test_env_var_set_in_a_running_session_is_honoured(tmp_path, emulated_gpu, monkeypatch,
                                                      frames):
    with make_client(tmp_path) as sc:
        stream = sc.io.Input([sp.MemoryStream(frames[:2])])
        assert device_of(sc.ops.where_am_i(frame=stream)) == "GPU"
        monkeypatch.setenv(DISABLE_GPU_ENV, "1")  # a later notebook cell
        assert device_of(sc.ops.where_am_i(frame=stream)) == "CPU"


# =============================================================================================
# CPU results over a real video equal the pure numpy functions; no transfers
# =============================================================================================


@pytest.fixture
def video_frames(tmp_path, video_path):
    """A client on 12-row (one GOP) partitions, the clip as a Stream, and its decoded frames."""
    with make_client(tmp_path, partition_size=12) as sc:
        stream = sc.io.Input([sp.NamedVideoStream(sc, "clip", path=video_path)])
        (decoded,) = stream.compute()
        assert decoded.shape == (36, 64, 96, 3) and num_partitions(stream) == 3
        yield sc, stream, decoded


def test_builtin_ops_over_a_video_equal_the_numpy_functions(video_frames, no_gpu, stats):
    sc, video, frames = video_frames
    reset_transfer_stats()
    cases = [
        (sc.ops.Resize(frame=video, width=[40], height=[30]), resize(frames, 40, 30, np)),
        (sc.ops.Resize(frame=video, width=[150], height=[100]), resize(frames, 150, 100, np)),
        (sc.ops.ConvertColor(frame=video, conversion=["gray"]), convert_color(frames, "gray", np)),
        (sc.ops.ConvertColor(frame=video, conversion=["hsv"]), convert_color(frames, "hsv", np)),
        (sc.ops.ConvertColor(frame=video, conversion=["bgr"]), convert_color(frames, "bgr", np)),
        (sc.ops.Blur(frame=video, kernel_size=5), blur(frames, 5, 0, np)),
        (sc.ops.Blur(frame=video, kernel_size=9, sigma=2.0), blur(frames, 9, 2.0, np)),
        (sc.ops.Blur(frame=sc.ops.Resize(frame=video, width=[48], height=[32]), kernel_size=5),
         blur(resize(frames, 48, 32, np), 5, 0, np)),
    ]
    for stream, expected in cases:
        assert device_of(stream) == "CPU"
        ((got,),) = fresh_compute(sc, stream)
        assert isinstance(got, np.ndarray) and got.dtype == np.uint8
        # on the CPU the ops run OpenCV, whose fixed-point rounding differs by at most 1
        assert got.shape == expected.shape and np.abs(got.astype(np.int16) - expected).max() <= 1
    (hists,) = sc.ops.Histogram(frame=video, bins=16).compute()
    np.testing.assert_array_equal(np.stack(hists), histogram(frames, 16, np))
    (diffs,) = sc.ops.FrameDifference(frame=video).compute()  # a stencil across partitions
    expected = np.stack([frame_difference(frames[max(i - 1, 0)], frames[i], np)
                         for i in range(len(frames))])
    np.testing.assert_array_equal(diffs, expected)
    assert stats() == ZERO_STATS  # a CPU chain never touches a device


def test_stream_config_params_reach_a_reused_instance(tmp_path, no_gpu, frames):
    with make_client(tmp_path) as sc:
        stream = sc.io.Input([sp.MemoryStream(frames[:2])])
        assert sc.ops.Resize(frame=stream, width=[8], height=[6]).compute()[0].shape[1:3] == (
            6, 8)
        (got,) = sc.ops.Resize(frame=stream, width=[20], height=[10]).compute()
        assert got.shape[1:3] == (10, 20)


def test_cpu_chain_makes_no_transfers(tmp_path, no_gpu, stats, frames):
    with make_client(tmp_path, partition_size=8) as sc:
        stream = sc.io.Input([sp.MemoryStream(frames)])
        chain = sc.ops.Blur(frame=sc.ops.Resize(frame=stream, width=[16], height=[12]),
                            kernel_size=5)
        diffs = sc.ops.FrameDifference(frame=chain)
        hists = sc.ops.Histogram(frame=chain, bins=4)
        got_chain, got_diffs, got_hists = dask.compute(chain, diffs, hists,
                                                       scheduler=sc.scheduler)
    expected = blur(resize(frames, 16, 12, np), 5, 0, np)
    np.testing.assert_array_equal(got_chain[0], expected)
    np.testing.assert_array_equal(np.stack(got_hists[0]), histogram(expected, 4, np))
    assert got_diffs[0].shape == expected.shape
    assert transfer_stats() == ZERO_STATS


# =============================================================================================
# The GPU branch of the engine, on the emulated device
# =============================================================================================


def test_gpu_chain_keeps_frames_on_the_device(tmp_path, emulated_gpu, frames):
    """Resize -> Blur on the 'GPU': one upload per batch, nothing comes back between them."""
    with make_client(tmp_path, partition_size=8) as sc:
        stream = sc.io.Input([sp.MemoryStream(frames)])
        small = sc.ops.Resize(frame=stream, width=[16], height=[12])
        soft = sc.ops.Blur(frame=small, kernel_size=5)
        assert device_of(small) == device_of(soft) == "GPU"
        n_parts = num_partitions(soft)
        assert n_parts == 3
        kept = soft.persist()  # every partition computed and held where it was made
        after_ops = transfer_stats()
        assert after_ops["host_to_device"] == n_parts  # one per batch, not one per frame
        assert after_ops["host_to_device_bytes"] == frames.nbytes
        assert after_ops["device_to_host"] == 0  # no host round trip between the two ops
        (got,) = kept.compute()
    assert isinstance(got, np.ndarray)  # compute() returns numpy
    np.testing.assert_array_equal(got, blur(resize(frames, 16, 12, np), 5, 0, np))


def test_one_copy_back_per_partition_through_to_delayed(tmp_path, emulated_gpu, frames):
    with make_client(tmp_path, partition_size=8) as sc:
        stream = sc.io.Input([sp.MemoryStream(frames)])
        soft = sc.ops.Blur(frame=sc.ops.Resize(frame=stream, width=[16], height=[12]),
                           kernel_size=3)
        (parts,) = soft.to_delayed()
        lists = dask.compute(*parts, scheduler=sc.scheduler)
    assert all(isinstance(f, np.ndarray) for part in lists for f in part)
    got = np.stack([f for part in lists for f in part])
    np.testing.assert_array_equal(got, blur(resize(frames, 16, 12, np), 3, 0, np))
    assert transfer_stats()["host_to_device"] == len(parts) == 3
    assert transfer_stats()["device_to_host"] == len(parts)


def test_compute_copies_each_partition_to_the_host_once(tmp_path, emulated_gpu, frames):
    with make_client(tmp_path, partition_size=8) as sc:
        stream = sc.io.Input([sp.MemoryStream(frames)])
        soft = sc.ops.Blur(frame=sc.ops.Resize(frame=stream, width=[16], height=[12]),
                           kernel_size=3)
        soft.compute()
        assert transfer_stats()["device_to_host"] == num_partitions(soft)


def test_frames_reach_a_gpu_op_as_one_device_array_per_batch(tmp_path, emulated_gpu, frames):
    with make_client(tmp_path, partition_size=8) as sc:
        stream = sc.io.Input([sp.MemoryStream(frames)])
        out = sc.ops.halve_batched(frame=stream)
        assert device_of(out) == "GPU"
        (got,) = out.compute()
    np.testing.assert_array_equal(got, frames // 2)
    # partitions of 8, 8 and 4 rows, work packets of batch=4: five calls, each one stacked
    # (n, H, W, C) device array, sliced out of its partition's single upload
    assert SEEN == [("halve_batched", EmuArray, (4, 24, 32, 3))] * 5
    assert transfer_stats()["host_to_device"] == 3


def test_a_plain_gpu_op_gets_device_frames_from_one_upload_per_batch(tmp_path, emulated_gpu,
                                                                      frames):
    with make_client(tmp_path, partition_size=8) as sc:
        out = sc.ops.plus_one(frame=sc.io.Input([sp.MemoryStream(frames)]))
        (got,) = out.compute()
    np.testing.assert_array_equal(got, frames + 1)
    assert SEEN == [("plus_one", EmuArray, (24, 32, 3))] * len(frames)
    assert transfer_stats()["host_to_device"] == 3


def test_a_stencil_gpu_op_gets_a_sequence_of_device_frames(tmp_path, emulated_gpu, frames):
    with make_client(tmp_path, partition_size=8) as sc:
        stream = sc.io.Input([sp.MemoryStream(frames)])
        windows = sc.ops.window_gpu(frame=sc.ops.halve_batched(frame=stream))
        diffs = sc.ops.FrameDifference(frame=stream)
        (got,) = windows.compute()
        (got_diffs,) = diffs.compute()
    calls = [s for s in SEEN if s[0] == "window_gpu"]
    assert len(calls) == len(frames)
    assert all(kind is list and kinds == (EmuArray,) * 3 for _, kind, kinds in calls)
    half = frames // 2
    idx = np.arange(len(frames))
    prev, nxt = half[np.maximum(idx - 1, 0)], half[np.minimum(idx + 1, len(frames) - 1)]
    np.testing.assert_array_equal(got, prev // 4 + half // 2 + nxt // 4)
    expected = np.stack([frame_difference(frames[max(i - 1, 0)], frames[i], np)
                         for i in range(len(frames))])
    np.testing.assert_array_equal(got_diffs, expected)


def test_a_cpu_op_after_a_gpu_op_gets_numpy(tmp_path, emulated_gpu, frames):
    with make_client(tmp_path, partition_size=8) as sc:
        stream = sc.io.Input([sp.MemoryStream(frames)])
        small = sc.ops.Resize(frame=stream, width=[16], height=[12])
        back = sc.ops.cpu_identity(frame=small)
        assert device_of(small) == "GPU" and device_of(back) == "CPU"
        (parts,) = back.to_delayed()
        lists = dask.compute(*parts, scheduler=sc.scheduler)
    assert SEEN == [("cpu_identity", np.ndarray)] * len(frames)
    np.testing.assert_array_equal(np.stack([f for p in lists for f in p]),
                                  resize(frames, 16, 12, np))
    # one upload and one download per partition, the download feeding the CPU op
    assert transfer_stats()["host_to_device"] == transfer_stats()["device_to_host"] == 3


def test_a_cpu_op_between_gpu_ops_forces_a_round_trip(tmp_path, emulated_gpu, frames):
    """The counts are not vacuous: a CPU op in the middle of a GPU chain costs a round trip."""
    with make_client(tmp_path, partition_size=8) as sc:
        stream = sc.io.Input([sp.MemoryStream(frames)])
        small = sc.ops.Resize(frame=stream, width=[16], height=[12])
        soft = sc.ops.Blur(frame=sc.ops.cpu_identity(frame=small), kernel_size=5)
        assert device_of(soft) == "GPU"
        kept = soft.persist()
        assert transfer_stats()["host_to_device"] == 6  # source->Resize, identity->Blur
        assert transfer_stats()["device_to_host"] == 3  # Resize->identity
        (got,) = kept.compute()
    np.testing.assert_array_equal(got, blur(resize(frames, 16, 12, np), 5, 0, np))


def test_builtin_gpu_ops_over_a_video_equal_the_numpy_functions(tmp_path, emulated_gpu,
                                                               video_path):
    with make_client(tmp_path, partition_size=12) as sc:
        video = sc.io.Input([sp.NamedVideoStream(sc, "clip", path=video_path)])
        (frames,) = video.compute()
        chain = sc.ops.Blur(frame=sc.ops.Resize(frame=video, width=[48], height=[32]),
                            kernel_size=5)
        gray = sc.ops.ConvertColor(frame=video, conversion=["gray"])
        hsv = sc.ops.ConvertColor(frame=video, conversion=["hsv"])
        hists = sc.ops.Histogram(frame=video, bins=16)
        diffs = sc.ops.FrameDifference(frame=video)
        for stream in (chain, gray, hsv, hists, diffs):
            assert device_of(stream) == "GPU"
        got = [fresh_compute(sc, stream)[0] for stream in (chain, gray, hsv, hists, diffs)]
    np.testing.assert_array_equal(got[0][0], blur(resize(frames, 48, 32, np), 5, 0, np))
    np.testing.assert_array_equal(got[1][0], convert_color(frames, "gray", np))
    np.testing.assert_array_equal(got[2][0], convert_color(frames, "hsv", np))
    assert all(isinstance(h, np.ndarray) for h in got[3][0])  # small results come home
    np.testing.assert_array_equal(np.stack(got[3][0]), histogram(frames, 16, np))
    expected = np.stack([frame_difference(frames[max(i - 1, 0)], frames[i], np)
                         for i in range(len(frames))])
    np.testing.assert_array_equal(got[4][0], expected)


def test_storing_a_gpu_ops_output_stores_numpy(tmp_path, emulated_gpu, frames):
    with make_client(tmp_path, partition_size=8) as sc:
        stream = sc.io.Input([sp.MemoryStream(frames)])
        out = sc.ops.plus_one(frame=stream)
        (stored,) = sc.run(sc.io.Output(out.lossless(), [sp.NamedVideoStream(sc, "gpu-out")]),
                           show_progress=False)
        np.testing.assert_array_equal(np.stack(list(stored.load())), frames + 1)


def test_a_batch_of_device_frames_pickles_to_numpy(frames):
    batch = Batch(0, np.arange(4), emucupy.asarray(frames[:4]), None, "FrameType")
    back = pickle.loads(pickle.dumps(batch))
    assert isinstance(back.elements, np.ndarray)
    np.testing.assert_array_equal(back.elements, frames[:4])


def test_gpu_only_op_runs_where_a_gpu_is_usable(tmp_path, emulated_gpu, frames):
    with make_client(tmp_path, partition_size=8) as sc:
        stream = sc.io.Input([sp.MemoryStream(frames[:5])])
        a = sc.ops.gpu_only_by_sets(frame=stream)
        b = sc.ops.gpu_only_by_type(frame=a)
        assert device_of(a) == device_of(b) == "GPU"
        (got,) = b.compute()
    np.testing.assert_array_equal(got, frames[:5])
    assert ("GpuOnlyByType.__init__", GPU) in SEEN
    assert [s for s in SEEN if s[0] == "gpu_only_by_sets"] == [
        ("gpu_only_by_sets", GPU, EmuArray)] * 5
