"""Devices: which ones an op may run on, whether a GPU is usable, and moving data there and back.

This is the only module that imports CuPy, and only lazily (never at ``import scanner_nb``).
Everything else is written against an *array module* ``xp`` (``numpy`` or ``cupy``) passed in,
so the CPU test suite runs the same batching and transfer logic with ``xp=numpy``, where moving
data is the identity.

Costs: :func:`to_device` moves a stacked ``(n, H, W, C)`` batch in one host-to-device copy, a
list of frames in one copy per frame; keep frames stacked to pay one PCIe transfer per batch.
:func:`transfer_stats` counts the copies made in this process, which is how tests check that
consecutive GPU ops keep their data on the device.

Examples
--------
>>> sets = normalize_device_sets([(DeviceType.CPU, 1), (DeviceType.GPU, 1)], None)
>>> choose_device("Resize", sets, gpu_usable=False)
<DeviceType.CPU: 'CPU'>
>>> import numpy as np
>>> batch = np.zeros((2, 4, 4, 3), np.uint8)
>>> to_device(batch, array_module(DeviceType.CPU)) is batch
True
"""

from __future__ import annotations

import contextlib
import dataclasses
import enum
import importlib
import os
import threading
import warnings
from collections.abc import Iterable
from types import ModuleType
from typing import Any

import numpy as np

from .errors import DeviceUnavailableError, ScannerTypeError, ScannerValueError
from .log import get_logger

_log = get_logger("devices")

__all__ = [
    "DeviceType",
    "gpu_available",
    "gpu_unavailable_reason",
    "normalize_device_sets",
    "choose_device",
    "array_module",
    "array_module_of",
    "ndimage_module",
    "device_context",
    "to_device",
    "to_host",
    "is_device_array",
    "transfer_stats",
    "reset_transfer_stats",
]

DISABLE_GPU_ENV = "SCANNER_NB_DISABLE_GPU"


class DeviceType(enum.Enum):
    """Where an op's kernel runs: ``DeviceType.CPU`` (numpy) or ``DeviceType.GPU`` (CuPy)."""

    CPU = "CPU"
    GPU = "GPU"


DeviceSets = tuple[tuple[DeviceType, int], ...]

# ---------------------------------------------------------------------------------------------
# GPU detection
# ---------------------------------------------------------------------------------------------

_probe_lock = threading.Lock()
_probe_result: tuple[bool, str | None] | None = None


def _gpu_disabled_by_env() -> bool:
    return os.environ.get(DISABLE_GPU_ENV, "").strip().lower() not in ("", "0", "false", "no")


def _probe_gpu() -> tuple[bool, str | None]:
    """Import CuPy, count CUDA devices and make a tiny allocation: (usable, why not)."""
    with warnings.catch_warnings():  # a CuPy without CUDA warns on import; a probe stays quiet
        warnings.simplefilter("ignore")
        try:
            cupy = importlib.import_module("cupy")
        except Exception as exc:  # ImportError, or a broken CUDA install raising anything
            return False, f"CuPy is not importable ({type(exc).__name__}: {exc})"
        try:
            count = int(cupy.cuda.runtime.getDeviceCount())
        except Exception as exc:
            return False, f"the CUDA runtime reports no device ({type(exc).__name__}: {exc})"
        if count < 1:
            return False, "CuPy is installed but there is no CUDA device"
        try:
            probe = cupy.arange(4, dtype=cupy.uint8) + 1
            if int(probe.sum()) != 10:
                return False, "a test computation on the GPU gave a wrong result"
        except Exception as exc:
            return False, f"a tiny allocation on the GPU failed ({type(exc).__name__}: {exc})"
    return True, None


def _gpu_probe() -> tuple[bool, str | None]:
    global _probe_result
    if _probe_result is None:
        with _probe_lock:
            if _probe_result is None:
                _probe_result = _probe_gpu()
    return _probe_result


def gpu_available() -> bool:
    """Whether GPU ops can run in this process: CuPy imports and a CUDA device works.

    The probe (import CuPy, count devices, one tiny allocation) runs once per process and is
    cached; the environment variable ``SCANNER_NB_DISABLE_GPU=1`` makes it ``False`` regardless
    (read on every call, so it can be set in a running notebook).

    Examples
    --------
    >>> isinstance(gpu_available(), bool)
    True
    """
    if _gpu_disabled_by_env():
        return False
    return _gpu_probe()[0]


def gpu_unavailable_reason() -> str | None:
    """Why :func:`gpu_available` is ``False`` here, in words; ``None`` when a GPU is usable."""
    if _gpu_disabled_by_env():
        return f"{DISABLE_GPU_ENV} is set"
    return _gpu_probe()[1]


def _reset_gpu_probe() -> None:
    """Forget the cached probe (tests, or after installing CuPy in a running kernel)."""
    global _probe_result
    with _probe_lock:
        _probe_result = None


# ---------------------------------------------------------------------------------------------
# Device sets
# ---------------------------------------------------------------------------------------------


def _coerce_count(count: Any, where: str) -> int:
    if isinstance(count, bool) or not isinstance(count, (int, np.integer)):
        raise ScannerTypeError(
            f"{where}: the device count must be an int, got {count!r} "
            f"(write e.g. (DeviceType.GPU, 1))"
        )
    if count < 1:
        raise ScannerValueError(f"{where}: the device count must be at least 1, got {count}")
    return int(count)


def _coerce_device_type(value: Any, where: str) -> DeviceType:
    if not isinstance(value, DeviceType):
        raise ScannerTypeError(
            f"{where}: expected a DeviceType (DeviceType.CPU or DeviceType.GPU), got {value!r}"
        )
    return value


def normalize_device_sets(device_sets: Any, device_type: Any) -> DeviceSets:
    """The decorator's ``device_sets`` / ``device_type`` arguments as a tuple of device sets.

    Parameters
    ----------
    device_sets : sequence of (DeviceType, int), or None
        The device sets the op may run on, in order of preference as listed; a bare
        ``DeviceType`` item means a count of 1, and a lone pair ``(DeviceType.GPU, 1)`` is
        accepted as one set.
    device_type : DeviceType or None
        Shorthand for ``device_sets=[(device_type, 1)]``; give one of the two, not both.

    Returns
    -------
    tuple of (DeviceType, int)
        ``((DeviceType.CPU, 1),)`` when both are ``None``. Exact duplicates are dropped.

    Raises
    ------
    ScannerTypeError
        An item that is not a ``DeviceType`` or a count that is not an int.
    ScannerValueError
        An empty list, a count below 1, or both arguments given.

    Examples
    --------
    >>> normalize_device_sets(None, None)
    ((<DeviceType.CPU: 'CPU'>, 1),)
    >>> normalize_device_sets(None, DeviceType.GPU)
    ((<DeviceType.GPU: 'GPU'>, 1),)
    >>> normalize_device_sets([(DeviceType.GPU, 1), DeviceType.CPU], None)
    ((<DeviceType.GPU: 'GPU'>, 1), (<DeviceType.CPU: 'CPU'>, 1))
    """
    if device_sets is None:
        if device_type is None:
            return ((DeviceType.CPU, 1),)
        return ((_coerce_device_type(device_type, "device_type"), 1),)
    if device_type is not None:
        raise ScannerValueError(
            f"give device_sets or device_type, not both (got device_sets={device_sets!r}, "
            f"device_type={device_type!r})"
        )
    if isinstance(device_sets, DeviceType):
        device_sets = [device_sets]
    elif (
        isinstance(device_sets, tuple)
        and len(device_sets) == 2
        and isinstance(device_sets[0], DeviceType)
        and not isinstance(device_sets[1], DeviceType)
    ):
        device_sets = [device_sets]  # a lone (DeviceType.GPU, 1)
    if isinstance(device_sets, (str, bytes)) or not isinstance(device_sets, Iterable):
        raise ScannerTypeError(
            f"device_sets must be a list of (DeviceType, count) pairs, got {device_sets!r}"
        )
    result: list[tuple[DeviceType, int]] = []
    for i, item in enumerate(device_sets):
        where = f"device_sets[{i}]"
        if isinstance(item, DeviceType):
            pair = (item, 1)
        elif isinstance(item, (tuple, list)) and len(item) == 2:
            pair = (_coerce_device_type(item[0], where), _coerce_count(item[1], where))
        else:
            raise ScannerTypeError(
                f"{where} must be a (DeviceType, count) pair such as (DeviceType.GPU, 1), "
                f"got {item!r}"
            )
        if pair not in result:
            result.append(pair)
    if not result:
        raise ScannerValueError(
            "device_sets is empty: list at least one, e.g. [(DeviceType.CPU, 1)]"
        )
    return tuple(result)


def choose_device(
    op_name: str, device_sets: DeviceSets, gpu_usable: bool, reason: str | None = None
) -> DeviceType:
    """The device an op runs on: GPU when it lists one and a GPU is usable, else CPU.

    Parameters
    ----------
    op_name : str
        The op's name, used in the error message.
    device_sets : tuple of (DeviceType, int)
        As returned by :func:`normalize_device_sets`.
    gpu_usable : bool
        Whether a GPU is usable where the graph runs (:func:`gpu_available` on this machine,
        or as the workers report on a cluster).
    reason : str, optional
        Why no GPU is usable (e.g. :func:`gpu_unavailable_reason`), added to the message.

    Raises
    ------
    DeviceUnavailableError
        The op lists only GPU device sets and ``gpu_usable`` is false.

    Examples
    --------
    >>> sets = normalize_device_sets([(DeviceType.CPU, 1), (DeviceType.GPU, 1)], None)
    >>> choose_device("Blur", sets, gpu_usable=True)
    <DeviceType.GPU: 'GPU'>
    """
    kinds = {device_type for device_type, _ in device_sets}
    if DeviceType.GPU in kinds and gpu_usable:
        return DeviceType.GPU
    if DeviceType.CPU in kinds:
        if DeviceType.GPU in kinds:
            _log.info("op %r falls back to the CPU: no GPU is usable where the graph runs%s",
                      op_name, f" ({reason})" if reason else "")
        return DeviceType.CPU
    why = f" ({reason})" if reason else ""
    raise DeviceUnavailableError(
        f"op {op_name!r} runs only on GPU but no GPU is usable where the graph runs{why}: "
        f"install scanner_nb[gpu] (CuPy) on a machine with a CUDA GPU, or add a CPU device set, "
        f"device_sets=[(DeviceType.CPU, 1), (DeviceType.GPU, 1)]"
    )


# ---------------------------------------------------------------------------------------------
# Array modules
# ---------------------------------------------------------------------------------------------


def _import_cupy() -> ModuleType:
    try:
        return importlib.import_module("cupy")
    except ImportError as exc:
        raise DeviceUnavailableError(
            f"a GPU op needs CuPy, which is not importable here ({exc}): "
            f"pip install 'scanner_nb[gpu]'"
        ) from exc


def array_module(device: DeviceType) -> ModuleType:
    """``numpy`` for ``DeviceType.CPU``, ``cupy`` for ``DeviceType.GPU``.

    Raises :class:`DeviceUnavailableError` for the GPU when CuPy cannot be imported.

    Examples
    --------
    >>> array_module(DeviceType.CPU).__name__
    'numpy'
    """
    device = _coerce_device_type(device, "array_module")
    if device is DeviceType.CPU:
        return np
    return _import_cupy()


def array_module_of(*arrays: Any) -> ModuleType:
    """``cupy`` if any of ``arrays`` is on a GPU, else ``numpy`` (as ``cupy.get_array_module``).

    >>> array_module_of(np.zeros(3)).__name__
    'numpy'
    """
    if any(is_device_array(a) for a in arrays):
        return _import_cupy()
    return np


def ndimage_module(xp: ModuleType) -> ModuleType | None:
    """``scipy.ndimage`` for numpy, ``cupyx.scipy.ndimage`` for CuPy; ``None`` if not installed."""
    name = "scipy.ndimage" if xp is np else "cupyx.scipy.ndimage"
    try:
        return importlib.import_module(name)
    except ImportError:
        return None


def device_context(device: DeviceType, device_id: int = 0):
    """A context manager making ``device_id`` the current GPU; a no-op for the CPU."""
    if device is DeviceType.GPU:
        return _import_cupy().cuda.Device(int(device_id))
    return contextlib.nullcontext()


# ---------------------------------------------------------------------------------------------
# Moving data
# ---------------------------------------------------------------------------------------------

_stats_lock = threading.Lock()
_STAT_KEYS = ("host_to_device", "device_to_host", "host_to_device_bytes", "device_to_host_bytes")
_stats: dict[str, int] = dict.fromkeys(_STAT_KEYS, 0)


def _count(direction: str, nbytes: int) -> None:
    with _stats_lock:
        _stats[direction] += 1
        _stats[direction + "_bytes"] += int(nbytes)


def transfer_stats() -> dict[str, int]:
    """Copies between host and device made by this module in this process (a snapshot).

    Keys: ``host_to_device``, ``device_to_host`` (number of copies) and ``..._bytes``.

    Examples
    --------
    >>> reset_transfer_stats()
    >>> transfer_stats()["host_to_device"]
    0
    """
    with _stats_lock:
        return dict(_stats)


def reset_transfer_stats() -> None:
    """Set the counts of :func:`transfer_stats` back to zero."""
    with _stats_lock:
        for key in _STAT_KEYS:
            _stats[key] = 0


def is_device_array(x: Any) -> bool:
    """Whether ``x`` is a GPU array (exposes ``__cuda_array_interface__``), without importing CuPy.

    >>> is_device_array(np.zeros(2))
    False
    """
    return not isinstance(x, np.ndarray) and hasattr(x, "__cuda_array_interface__")


def _batch_class():
    from .types import Batch

    return Batch


def to_device(elements: Any, xp: ModuleType) -> Any:
    """Move frames to the array module ``xp``'s device.

    Parameters
    ----------
    elements : numpy.ndarray, list, tuple, Batch or device array
        An ``(n, H, W, C)`` array moves in **one** transfer; a list (or tuple) moves each
        ndarray in it (recursively, so stencil windows work), keeping ``None`` and other objects;
        a ``Batch`` gets its elements moved. Arrays already on the device pass through.
    xp : module
        ``cupy`` to move to the GPU; ``numpy`` to make sure the data is on the host (the
        identity, without a copy, for numpy input; the same as :func:`to_host` otherwise).

    Examples
    --------
    >>> frames = [np.zeros((2, 2, 3), np.uint8), None]
    >>> moved = to_device(frames, np)
    >>> moved[0] is frames[0] and moved[1] is None
    True
    """
    if xp is np:
        return to_host(elements)
    return _move(elements, lambda a: _host_to_device(a, xp))


def to_host(elements: Any) -> Any:
    """Move GPU arrays back to numpy; lists, tuples and a ``Batch`` elementwise.

    numpy arrays and other objects pass through unchanged (no copy).

    Examples
    --------
    >>> a = np.ones(3)
    >>> to_host(a) is a
    True
    """
    return _move(elements, _device_to_host)


def _move(elements: Any, move_array):
    if isinstance(elements, np.ndarray) or is_device_array(elements):
        return move_array(elements)
    if isinstance(elements, list):
        return [_move(e, move_array) for e in elements]
    if isinstance(elements, tuple):
        return tuple(_move(e, move_array) for e in elements)
    Batch = _batch_class()
    if isinstance(elements, Batch):
        return dataclasses.replace(elements, elements=_move(elements.elements, move_array))
    return elements


def _host_to_device(array: Any, xp: ModuleType) -> Any:
    if is_device_array(array):
        return array
    if array.dtype == object:  # a ragged object array is not a frame batch
        return [_move(e, lambda a: _host_to_device(a, xp)) for e in array]
    moved = xp.asarray(array)
    _count("host_to_device", array.nbytes)
    return moved


def _device_to_host(array: Any) -> Any:
    if not is_device_array(array):
        return array
    get = getattr(array, "get", None)
    if callable(get):
        host = get()
    else:  # another library's device array (Numba, PyTorch, ...): view it through CuPy
        host = _import_cupy().asarray(array).get()
    _count("device_to_host", host.nbytes)
    return host
