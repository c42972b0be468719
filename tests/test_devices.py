"""Device sets, device choice, GPU detection and host/device moves, run on the CPU.

The moves are tested with ``xp=numpy`` (the identity) and with a fake device module whose
arrays expose ``__cuda_array_interface__`` and ``get()``, so the batching and counting logic runs
without a GPU.
"""

from __future__ import annotations

import importlib.util
import sys
import types

import numpy as np
import pytest

from scanner_nb import devices
from scanner_nb.devices import (
    DeviceType,
    array_module,
    choose_device,
    is_device_array,
    normalize_device_sets,
    reset_transfer_stats,
    to_device,
    to_host,
    transfer_stats,
)
from scanner_nb.errors import DeviceUnavailableError, ScannerTypeError, ScannerValueError
from scanner_nb.types import Batch

CPU, GPU = DeviceType.CPU, DeviceType.GPU
HAS_CUPY = importlib.util.find_spec("cupy") is not None


@pytest.fixture
def fresh_probe():
    """Forget the cached GPU probe before and after the test."""
    devices._reset_gpu_probe()
    yield
    devices._reset_gpu_probe()


@pytest.fixture
def stats():
    reset_transfer_stats()
    yield transfer_stats
    reset_transfer_stats()


# --- a fake GPU array module --------------------------------------------------------------------


class FakeDeviceArray:
    """Looks like a CuPy array to devices.py: ``__cuda_array_interface__`` and ``get()``."""

    def __init__(self, host: np.ndarray):
        self.host = np.array(host)  # a copy, as a real transfer makes

    @property
    def __cuda_array_interface__(self):
        return {"shape": self.host.shape, "typestr": self.host.dtype.str, "version": 3}

    @property
    def nbytes(self):
        return self.host.nbytes

    def get(self):
        return self.host.copy()


fake_xp = types.SimpleNamespace(__name__="fakecupy", asarray=FakeDeviceArray)


# --- device sets --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "device_sets, device_type, expected",
    [
        (None, None, ((CPU, 1),)),
        (None, GPU, ((GPU, 1),)),
        (None, CPU, ((CPU, 1),)),
        ([(CPU, 1), (GPU, 1)], None, ((CPU, 1), (GPU, 1))),
        ([(GPU, 2)], None, ((GPU, 2),)),
        ([GPU, (CPU, 1)], None, ((GPU, 1), (CPU, 1))),  # a bare DeviceType is a count of 1
        ((GPU, 1), None, ((GPU, 1),)),  # a lone pair
        (GPU, None, ((GPU, 1),)),
        ([(CPU, 1), [CPU, 1], (GPU, np.int64(1))], None, ((CPU, 1), (GPU, 1))),  # duplicates go
    ],
)
def test_normalize_device_sets(device_sets, device_type, expected):
    result = normalize_device_sets(device_sets, device_type)
    assert result == expected
    assert all(type(count) is int for _, count in result)


@pytest.mark.parametrize(
    "device_sets, device_type, error, words",
    [
        (None, "GPU", ScannerTypeError, "DeviceType"),
        ([("GPU", 1)], None, ScannerTypeError, "device_sets[0]"),
        ([(CPU, 1), (GPU, 0)], None, ScannerValueError, "at least 1"),
        ([(GPU, -2)], None, ScannerValueError, "-2"),
        ([(GPU, "1")], None, ScannerTypeError, "count must be an int"),
        ([(GPU, True)], None, ScannerTypeError, "count must be an int"),
        ([(GPU, 1.0)], None, ScannerTypeError, "count must be an int"),
        ([(GPU, 1, 2)], None, ScannerTypeError, "(DeviceType, count) pair"),
        ([], None, ScannerValueError, "empty"),
        ("GPU", None, ScannerTypeError, "list of (DeviceType, count)"),
        (42, None, ScannerTypeError, "list of (DeviceType, count)"),
        ([(GPU, 1)], GPU, ScannerValueError, "not both"),
    ],
)
def test_normalize_device_sets_rejects(device_sets, device_type, error, words):
    with pytest.raises(error) as info:
        normalize_device_sets(device_sets, device_type)
    assert words in str(info.value)


def test_errors_derive_from_builtins():
    with pytest.raises(TypeError):
        normalize_device_sets([("CPU", 1)], None)
    with pytest.raises(ValueError):
        normalize_device_sets([(CPU, 0)], None)


# --- choosing a device --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "device_sets, gpu_usable, expected",
    [
        (((CPU, 1), (GPU, 1)), True, GPU),
        (((GPU, 1), (CPU, 1)), True, GPU),
        (((CPU, 1), (GPU, 1)), False, CPU),
        (((CPU, 1),), True, CPU),
        (((CPU, 1),), False, CPU),
        (((GPU, 1),), True, GPU),
    ],
)
def test_choose_device(device_sets, gpu_usable, expected):
    assert choose_device("Op", device_sets, gpu_usable) is expected


def test_gpu_only_op_without_gpu_names_the_op_and_the_fixes():
    with pytest.raises(DeviceUnavailableError) as info:
        choose_device("PersonDetector", ((GPU, 1),), gpu_usable=False, reason="CuPy is missing")
    message = str(info.value)
    assert "op 'PersonDetector' runs only on GPU" in message
    assert "no GPU is usable" in message
    assert "CuPy is missing" in message
    assert "scanner_nb[gpu]" in message
    assert "CPU device set" in message


# --- GPU detection ------------------------------------------------------------------------------


def test_env_var_disables_gpu(monkeypatch, fresh_probe):
    monkeypatch.setattr(devices, "_probe_gpu", lambda: (True, None))  # pretend a GPU works
    assert devices.gpu_available() is True
    monkeypatch.setenv("SCANNER_NB_DISABLE_GPU", "1")
    assert devices.gpu_available() is False
    assert "SCANNER_NB_DISABLE_GPU" in devices.gpu_unavailable_reason()
    monkeypatch.setenv("SCANNER_NB_DISABLE_GPU", "0")
    assert devices.gpu_available() is True
    assert devices.gpu_unavailable_reason() is None


def test_probe_runs_once(monkeypatch, fresh_probe):
    calls = []
    monkeypatch.delenv("SCANNER_NB_DISABLE_GPU", raising=False)
    monkeypatch.setattr(devices, "_probe_gpu", lambda: calls.append(1) or (False, "no CUDA"))
    assert [devices.gpu_available() for _ in range(3)] == [False] * 3
    assert devices.gpu_unavailable_reason() == "no CUDA"
    assert len(calls) == 1


@pytest.mark.skipif(HAS_CUPY, reason="CuPy is installed here")
def test_no_cupy_means_no_gpu(monkeypatch, fresh_probe):
    monkeypatch.delenv("SCANNER_NB_DISABLE_GPU", raising=False)
    assert devices.gpu_available() is False
    assert "CuPy is not importable" in devices.gpu_unavailable_reason()
    with pytest.raises(DeviceUnavailableError, match=r"scanner_nb\[gpu\]"):
        array_module(GPU)


def _fake_cupy(device_count):
    cupy = types.ModuleType("cupy")

    def get_device_count():
        if isinstance(device_count, Exception):
            raise device_count
        return device_count

    runtime = types.SimpleNamespace(getDeviceCount=get_device_count)
    cupy.cuda = types.SimpleNamespace(runtime=runtime)
    cupy.uint8 = np.uint8
    cupy.arange = np.arange
    return cupy


@pytest.mark.parametrize(
    "device_count, usable, words",
    [
        (0, False, "no CUDA device"),
        (RuntimeError("cudaErrorNoDevice"), False, "cudaErrorNoDevice"),
        (1, True, None),
    ],
)
def test_probe_with_a_fake_cupy(monkeypatch, device_count, usable, words):
    monkeypatch.setitem(sys.modules, "cupy", _fake_cupy(device_count))
    ok, reason = devices._probe_gpu()
    assert ok is usable
    if words is None:
        assert reason is None
    else:
        assert words in reason


def test_array_module():
    assert array_module(CPU) is np
    with pytest.raises(ScannerTypeError, match="DeviceType"):
        array_module("CPU")
    assert devices.array_module_of(np.zeros(2), [1]) is np


# --- moving data --------------------------------------------------------------------------------


def test_to_device_with_numpy_is_the_identity(stats):
    batch = np.zeros((4, 6, 8, 3), np.uint8)
    assert to_device(batch, np) is batch
    frames = [np.ones((2, 2, 3), np.uint8), None, np.zeros((3, 3, 3), np.uint8)]
    moved = to_device(frames, np)
    assert isinstance(moved, list) and len(moved) == 3
    assert moved[0] is frames[0] and moved[1] is None and moved[2] is frames[2]
    windows = [[frames[0], frames[2]], (frames[2], None)]  # stencil windows nest
    moved = to_device(windows, np)
    assert moved[0][0] is frames[0] and moved[1][0] is frames[2] and moved[1][1] is None
    assert isinstance(moved[1], tuple)
    assert to_device("not an array", np) == "not an array"
    assert stats()["host_to_device"] == 0 and stats()["device_to_host"] == 0


def test_to_host_passes_numpy_through(stats):
    batch = np.arange(24, dtype=np.uint8).reshape(1, 2, 4, 3)
    assert to_host(batch) is batch
    assert to_host([batch, None, 3])[0] is batch
    assert stats() == dict.fromkeys(stats(), 0)


def test_batch_elements_move(stats):
    frames = np.zeros((2, 2, 2, 3), np.uint8)
    batch = Batch(0, np.arange(2), frames, None, "FrameType")
    assert to_device(batch, np).elements is frames
    on_device = to_device(batch, fake_xp)
    assert isinstance(on_device, Batch) and is_device_array(on_device.elements)
    assert on_device.rows is batch.rows
    assert stats()["host_to_device"] == 1


def test_one_transfer_per_stacked_batch(stats):
    batch = np.random.default_rng(0).integers(0, 256, (5, 4, 6, 3), dtype=np.uint8)
    on_device = to_device(batch, fake_xp)
    assert is_device_array(on_device)
    assert stats()["host_to_device"] == 1
    assert stats()["host_to_device_bytes"] == batch.nbytes
    assert to_device(on_device, fake_xp) is on_device  # already there: no transfer
    assert stats()["host_to_device"] == 1
    back = to_host(on_device)
    assert isinstance(back, np.ndarray) and np.array_equal(back, batch)
    assert stats()["device_to_host"] == 1
    assert stats()["device_to_host_bytes"] == batch.nbytes
    reset_transfer_stats()
    assert transfer_stats() == dict.fromkeys(transfer_stats(), 0)


def test_lists_move_elementwise(stats):
    frames = [np.zeros((2, 2, 3), np.uint8), None, np.ones((3, 3, 3), np.uint8), "meta"]
    moved = to_device(frames, fake_xp)
    assert is_device_array(moved[0]) and moved[1] is None and is_device_array(moved[2])
    assert moved[3] == "meta"
    assert stats()["host_to_device"] == 2
    back = to_device(moved, np)  # xp=numpy brings device arrays home, like to_host
    assert isinstance(back[0], np.ndarray) and np.array_equal(back[2], frames[2])
    assert stats()["device_to_host"] == 2


def test_is_device_array():
    assert not is_device_array(np.zeros(3))
    assert not is_device_array([1, 2])
    assert not is_device_array({"get": 1})
    assert is_device_array(FakeDeviceArray(np.zeros(3)))


def test_module_doctests():
    import doctest

    failures, _ = doctest.testmod(devices)
    assert failures == 0
