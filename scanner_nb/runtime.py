"""Worker-side task functions: read a source, run a kernel over a partition, take rows.

Plain functions with no graph in sight (the ``dask/bag/chunk.py`` analogue), each taking and
returning :class:`~scanner_nb.types.Batch` objects. Kernel instances are made once per
(process, op, init args, device) and reused across partitions.
"""

from __future__ import annotations

import ctypes
import fcntl
import hashlib
import os
import tempfile
import threading
import weakref
from dataclasses import dataclass, replace
from typing import Any, Sequence

import numpy as np

from .devices import DeviceType, array_module, is_device_array, to_device, to_host
from .errors import KernelError
from .kernel import Kernel, KernelConfig, OpSpec
from .types import Batch, concat_batches, stack_elements

__all__ = ["OpContext", "read_source", "run_op", "sample", "batch_to_list", "assemble_stream",
           "close_instances", "take_rows"]


@dataclass
class OpContext:
    """What a task needs to run one op node; sent with the graph to the workers."""

    spec: OpSpec
    init_args: dict
    config_args: dict  # name -> list with one value per stream
    device: DeviceType
    instance_key: str  # op, version and init args: instances are shared under it
    session: str  # the client's token: fetch_resources runs once per machine per session
    work_packet: int | None = None  # most rows handed to one execute call of a batch op
    config_token: str = ""  # the stream-config args: a reused instance given others re-runs new_stream

    def config_for(self, stream: int) -> dict:
        return {name: values[stream] for name, values in self.config_args.items()}


# ---------------------------------------------------------------- kernel instances

_LOCK = threading.RLock()
_RELEASED = threading.Condition(_LOCK)
_IDLE: dict[str, list[Kernel]] = {}
_MADE: dict[str, list[Kernel]] = {}
_FETCHED: set[str] = set()
_FETCH_LOCKS: dict[str, threading.Lock] = {}


def _fetch_once(ctx: OpContext, kernel: Kernel) -> None:
    """Run ``fetch_resources`` once per machine: other processes wait on a lock file and skip."""
    key = f"{ctx.session}-{ctx.instance_key}"
    with _LOCK:
        if key in _FETCHED:
            return
        thread_lock = _FETCH_LOCKS.setdefault(key, threading.Lock())
    with thread_lock:
        if key in _FETCHED:
            return
        folder = os.path.join(tempfile.gettempdir(), "scanner_nb-resources")
        os.makedirs(folder, exist_ok=True)
        digest = hashlib.sha1(key.encode()).hexdigest()
        marker = os.path.join(folder, digest + ".done")
        with open(os.path.join(folder, digest + ".lock"), "w") as lock_file:
            fcntl.flock(lock_file, fcntl.LOCK_EX)
            try:
                if not os.path.exists(marker):
                    kernel.fetch_resources()
                    with open(marker, "w"):
                        pass
            finally:
                fcntl.flock(lock_file, fcntl.LOCK_UN)
        with _LOCK:
            _FETCHED.add(key)


_TUNED = []


def tune_allocator() -> bool:
    """Undo the slow-down glibc's defaults give frame-sized arrays in threads (once per process).

    Dask's nanny starts workers with ``MALLOC_TRIM_THRESHOLD_=65536``. Setting any such glibc
    variable also freezes the mmap threshold at 128 KiB, so every frame-sized numpy temporary is
    mmapped, page-faulted and unmapped again: a 360p float op measured 26 ms a frame instead of
    5 ms. Without it, the threads of the local scheduler still return each partition's frames
    to the system (their arenas trim at twice the mmap threshold) and page-fault them again: an
    OpenCV decode of 720p JPEGs ran 1.6x its main-thread loop. Unless the user set
    ``MALLOC_MMAP_THRESHOLD_``, raise the mmap threshold to 32 MiB and the trim threshold to
    64 MiB (memory above that is still returned to the system). Returns whether it tuned.
    """
    if _TUNED:
        return _TUNED[0]
    tuned = False
    if "MALLOC_MMAP_THRESHOLD_" not in os.environ:
        try:
            libc = ctypes.CDLL("libc.so.6")
            tuned = bool(libc.mallopt(_M_MMAP_THRESHOLD, 32 << 20)) and bool(
                libc.mallopt(_M_TRIM_THRESHOLD, 64 << 20))
        except (OSError, AttributeError):  # not glibc
            tuned = False
    _TUNED.append(tuned)
    return tuned


_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3


def _acquire(ctx: OpContext, stream: int, row: int) -> Kernel:
    """An idle instance of the op, or a new one; a GPU op keeps one instance per process
    (one per GPU per worker), which its threads take in turn."""
    with _RELEASED:
        idle = _IDLE.setdefault(ctx.instance_key, [])
        one_per_process = ctx.device is DeviceType.GPU and not ctx.spec.unbounded_state
        while not idle and one_per_process and _MADE.get(ctx.instance_key):
            _RELEASED.wait()
        if idle:
            return idle.pop()
        _MADE.setdefault(ctx.instance_key, [])
    tune_allocator()
    try:
        kernel = ctx.spec.make_kernel(KernelConfig(ctx.init_args, ctx.device))
        _fetch_once(ctx, kernel)
        kernel.setup_with_resources()
    except Exception as exc:
        raise KernelError(ctx.spec.name, stream, row, exc) from exc
    kernel._scanner_nb_stream = None
    with _LOCK:
        _MADE.setdefault(ctx.instance_key, []).append(kernel)
    return kernel


def _release(ctx: OpContext, kernel: Kernel) -> None:
    with _RELEASED:
        _IDLE.setdefault(ctx.instance_key, []).append(kernel)
        _RELEASED.notify_all()


def close_instances() -> int:
    """Close every kernel instance made in this process; returns how many were closed."""
    with _LOCK:
        made = [k for kernels in _MADE.values() for k in kernels]
        _MADE.clear()
        _IDLE.clear()
    for kernel in made:
        try:
            kernel.close()
        except Exception:  # closing must not fail the client's close
            pass
    return len(made)


def _enter_stream(ctx: OpContext, kernel: Kernel, stream: int, row: int) -> None:
    """Call ``new_stream`` when the instance moves to another stream or other config args."""
    where = (ctx.config_token, stream)
    if kernel._scanner_nb_stream == where:
        return
    try:
        kernel.new_stream(**ctx.config_for(stream))
    except Exception as exc:
        raise KernelError(ctx.spec.name, stream, row, exc) from exc
    kernel._scanner_nb_stream = where


# ---------------------------------------------------------------- tasks

def read_source(source: Any, stream: int, rows: np.ndarray) -> Batch:
    """Read ``rows`` of a source into a batch."""
    return Batch(stream, rows, source.read(rows), None, source.type_name)


def take_rows(pieces: Sequence) -> Batch:
    """Concatenate ``[batch, positions]`` pieces (``positions`` None: the whole batch)."""
    taken = [b if pos is None else b.take(pos) for b, pos in pieces]
    return concat_batches(taken)


def sample(stream: int, rows: np.ndarray, type_name: str, pieces: Sequence,
           order: np.ndarray) -> Batch:
    """A stream operation's partition: row ``i`` is element ``order[i]`` of the pieces, or null."""
    nulls = order < 0
    if not pieces:
        return Batch(stream, rows, [None] * len(rows), np.ones(len(rows), bool), type_name)
    joined = take_rows(pieces)
    if nulls.any():
        out = joined.take(np.maximum(order, 0))
        elements = out.element_list()
        for i in np.flatnonzero(nulls).tolist():
            elements[i] = None
        masked = nulls if out.nulls is None else (nulls | out.nulls)
        return Batch(stream, rows, elements, masked, type_name)
    if len(order) == len(joined) and np.array_equal(order, np.arange(len(order))):
        out = joined
    else:
        out = joined.take(order)
    return Batch(stream, rows, out.elements, out.nulls, type_name)


def run_op(ctx: OpContext, stream: int, rows: np.ndarray, inputs: Sequence[Sequence],
           carry: tuple | None = None, last: bool = True):
    """Run an op over the output ``rows`` of one partition.

    ``inputs`` holds, per stream param, the ``[batch, positions]`` pieces covering the rows the
    outputs need (stencil windows and warm-up included). Returns a batch (a tuple of batches for
    several outputs; with unbounded state, ``(outputs, kernel)`` for the next partition).
    """
    spec = ctx.spec
    joined = [take_rows(pieces) for pieces in inputs]
    first_row = int(rows[0]) if len(rows) else 0
    if spec.unbounded_state and carry is not None:
        kernel = carry[1]
    else:
        kernel = _acquire(ctx, stream, first_row)
    try:
        if spec.unbounded_state and carry is None:  # a stream starts: new_stream, then reset
            kernel._scanner_nb_stream = None
            _enter_stream(ctx, kernel, stream, first_row)
            _call(ctx, kernel.reset, stream, first_row)
        else:
            _enter_stream(ctx, kernel, stream, first_row)
        outputs = _execute(ctx, kernel, stream, rows, joined)
    except BaseException:
        if not spec.unbounded_state:
            _release(ctx, kernel)
        raise
    batches = tuple(
        _make_batch(stream, rows, elements, nulls, t.name)
        for (elements, nulls), t in zip(outputs, spec.outputs)
    )
    result = batches[0] if len(batches) == 1 else batches
    if spec.unbounded_state:
        if last:
            _release(ctx, kernel)
        return result, kernel
    _release(ctx, kernel)
    return result


def _call(ctx: OpContext, method, stream: int, row: int, *args):
    try:
        return method(*args)
    except Exception as exc:
        raise KernelError(ctx.spec.name, stream, row, exc) from exc


def _make_batch(stream, rows, elements, nulls, type_name) -> Batch:
    if type_name == "FrameType" and nulls is None and not isinstance(elements, np.ndarray):
        elements = _stack(elements)
    return Batch(stream, rows, elements, nulls, type_name)


def _stack(elements):
    if elements and all(hasattr(e, "__cuda_array_interface__") for e in elements):
        xp = array_module(DeviceType.GPU)
        first = elements[0]
        if all(e.shape == first.shape for e in elements):
            return xp.stack(elements)
        return list(elements)
    return stack_elements(elements, True)


def _execute(ctx: OpContext, kernel: Kernel, stream: int, rows: np.ndarray,
             joined: list[Batch]) -> list[tuple[list, np.ndarray | None]]:
    """Feed rows to ``kernel`` (warm-up, stencil windows, batches, nulls) and collect outputs."""
    spec = ctx.spec
    n_out = len(spec.outputs)
    xp = array_module(ctx.device)
    elements = [to_device(b.elements, xp) if ctx.device is DeviceType.GPU else on_host(b.elements)
                for b in joined]
    if (len(joined) == 1 and spec.stencil is None and not spec.batched and not spec.bounded_state
            and n_out == 1 and joined[0].nulls is None and np.array_equal(joined[0].rows, rows)):
        return [(_execute_plain(spec, kernel.execute, elements[0], stream, rows), None)]
    feed = _window_rows(ctx, rows) if spec.bounded_state else rows
    keep = np.isin(feed, rows) if spec.bounded_state else np.ones(len(feed), bool)
    restart = np.zeros(len(feed), bool)
    if spec.bounded_state and len(feed):
        restart[0] = True
        restart[1:] = np.diff(feed) != 1
    centre = spec.stencil.index(0) if spec.stencil and 0 in spec.stencil else None
    positions, null_rows = [], np.zeros(len(feed), bool)
    for b in joined:
        if spec.stencil is not None:
            # offsets past the stream's ends read its first/last row: the largest row <= target
            win = np.clip(feed[:, None] + np.asarray(spec.stencil)[None, :], 0, None)
            pos = np.searchsorted(b.rows, win, side="right") - 1
        else:
            pos = np.searchsorted(b.rows, feed)
        positions.append(pos)
        if b.nulls is not None:
            if pos.ndim == 1:
                null_rows |= b.nulls[pos]
            elif centre is not None:
                null_rows |= b.nulls[pos[:, centre]]

    def argument(k: int, i: int):
        pos, elems, mask = positions[k][i], elements[k], joined[k].nulls
        if pos.ndim == 0:
            return elems[int(pos)]
        return [None if (mask is not None and mask[p]) else elems[p] for p in pos.tolist()]

    out_elements = [[None] * len(feed) for _ in range(n_out)]
    # a batch op returning one numpy array per chunk: keep the arrays, no split and re-stack
    arrays: list | None = [] if spec.output_layout == "seq" else None
    chunk = min(spec.batch, ctx.work_packet or spec.batch) if spec.batched else 1
    i = 0
    while i < len(feed):
        if restart[i]:
            _call(ctx, kernel.reset, stream, int(feed[i]))
        j = i + 1
        while j < len(feed) and j - i < chunk and not restart[j]:
            j += 1
        live = [r for r in range(i, j) if not null_rows[r]]
        if live:
            args = [_arguments(argument, k, live, spec.batched, elements[k], positions[k])
                    for k in range(len(joined))]
            row = int(feed[live[0]])
            try:
                produced = kernel.execute(*args)
            except Exception as exc:
                raise KernelError(spec.name, stream, row, exc) from exc
            _store(spec, produced, live, out_elements, stream, row)
            if arrays is not None and isinstance(produced, np.ndarray) and produced.ndim > 1:
                arrays.append(produced)
            else:
                arrays = None
        i = j
    if arrays and keep.all() and not null_rows.any() and len(
            {a.shape[1:] + (a.dtype,) for a in arrays}) == 1:
        return [(arrays[0] if len(arrays) == 1 else np.concatenate(arrays), None)]
    kept = np.flatnonzero(keep)
    nulls = null_rows[kept]
    result = []
    for k in range(n_out):
        elems = out_elements[k]
        result.append(([elems[p] for p in kept.tolist()], nulls if nulls.any() else None))
    return result


def _execute_plain(spec: OpSpec, execute, elements, stream: int, rows: np.ndarray) -> list:
    out = []
    append = out.append
    try:
        for element in elements:
            append(execute(element))
    except Exception as exc:
        raise KernelError(spec.name, stream, int(rows[len(out)]), exc) from exc
    return out


def _window_rows(ctx: OpContext, rows: np.ndarray) -> np.ndarray:
    """The rows a bounded-state instance is fed: each requested row after its warm-up rows."""
    k = ctx.spec.bounded_state
    warm = (rows[:, None] - np.arange(0, k + 1)[None, :]).ravel()
    return np.unique(warm[warm >= 0])


def _arguments(argument, k: int, live: list[int], batched: bool, elems, pos):
    """Execute's argument for stream param ``k``: one element, a window, or a batch of them."""
    if not batched:
        return argument(k, live[0])
    if pos.ndim == 1 and not isinstance(elems, list):  # frames as one array: slice, no copy
        p = pos[live]
        if p[-1] - p[0] + 1 == len(p):
            return elems[int(p[0]):int(p[-1]) + 1]
        return elems[p]
    return [argument(k, r) for r in live]


def _store(spec: OpSpec, produced, live: list[int], out_elements, stream: int, row: int) -> None:
    n_out, count = len(spec.outputs), len(live)
    layout = spec.output_layout
    try:
        if layout == "single":
            values = [[produced]]
        elif layout == "tuple":
            values = [[v] for v in _check_len(produced, n_out, "outputs")]
        elif layout == "seq":
            values = [list(_check_len(produced, count, "elements"))]
        elif layout == "seq-of-tuple":
            rows = _check_len(produced, count, "elements")
            values = [[_check_len(r, n_out, "outputs")[k] for r in rows] for k in range(n_out)]
        else:  # tuple-of-seq
            values = [list(_check_len(v, count, "elements"))
                      for v in _check_len(produced, n_out, "outputs")]
    except ValueError as exc:
        raise KernelError(spec.name, stream, row, exc) from exc
    for k in range(n_out):
        for position, value in zip(live, values[k]):
            out_elements[k][position] = value


def _check_len(value, n: int, what: str):
    try:
        got = len(value)
    except TypeError:
        raise ValueError(f"execute returned {type(value).__name__}, expected {n} {what}") from None
    if got != n:
        raise ValueError(f"execute returned {got} {what}, expected {n}")
    return value


# ---------------------------------------------------------------- results

def on_host(elements):
    """``elements`` with device arrays moved to the host; host data is returned as it is.

    Only the first element of a list is looked at: a partition's elements come from one device.
    """
    if isinstance(elements, np.ndarray):
        return elements
    if is_device_array(elements):
        return to_host(elements)
    first = next((e for e in elements if e is not None), None) if isinstance(elements, list) else None
    return to_host(elements) if first is not None and is_device_array(first) else elements


_RESULT_BUFFERS: weakref.WeakValueDictionary = weakref.WeakValueDictionary()


def result_buffer(shape: tuple, dtype=np.uint8) -> np.ndarray:
    """An array partitions decode into, returned whole by :func:`assemble_stream`."""
    buffer = np.empty(shape, dtype=dtype)
    _RESULT_BUFFERS[id(buffer)] = buffer
    return buffer


def _one_base(batches: Sequence[Batch]) -> np.ndarray | None:
    """The result buffer the batches' frames are back-to-back slices of, covering all of it."""
    arrays = [b.elements for b in batches]
    if not arrays or not all(isinstance(a, np.ndarray) for a in arrays):
        return None
    base = arrays[0].base
    if base is None or _RESULT_BUFFERS.get(id(base)) is not base or any(
            a.base is not base for a in arrays):
        return None
    address = base.__array_interface__["data"][0]
    for a in arrays:
        if not a.flags.c_contiguous or a.__array_interface__["data"][0] != address:
            return None
        address += a.nbytes
    return base if address == base.__array_interface__["data"][0] + base.nbytes else None


def batch_to_list(batch: Batch) -> list:
    """A partition's elements as a list on the host (nulls as ``None``)."""
    elements = on_host(batch.elements)
    if batch.nulls is None:
        return elements if isinstance(elements, list) else list(elements)
    return [None if null else e for e, null in zip(elements, batch.nulls)]


def assemble_stream(batches: Sequence[Batch], type_name: str) -> np.ndarray | list:
    """One stream's result: frames as an ``(n, H, W, C)`` array where shapes agree, else a list."""
    batches = [replace(b, elements=on_host(b.elements)) for b in batches]
    whole = _one_base(batches) if type_name == "FrameType" else None
    if whole is not None:
        return whole
    if type_name == "FrameType" and all(b.nulls is None for b in batches):
        arrays = [b.elements for b in batches]
        if arrays and all(isinstance(a, np.ndarray) for a in arrays) and len(
                {a.shape[1:] for a in arrays}) == 1:
            if len(arrays) == 1:  # a view of a user's array comes back as a copy
                return arrays[0] if arrays[0].base is None else arrays[0].copy()
            return np.concatenate(arrays)
        return stack_elements([e for b in batches for e in batch_to_list(b)], True)
    return [e for b in batches for e in batch_to_list(b)]
