"""Worker-side task functions: take rows, run a kernel over a partition, sample rows.

Plain functions with no graph in sight (the ``dask/bag/chunk.py`` analogue), each taking and
returning :class:`~scanner_nb.types.Batch` objects. Which rows feed which output row is decided
by the plan (:class:`~scanner_nb.plan.Window`); these functions follow it and fail loudly when
an input does not hold the rows the plan said it would.
"""

from __future__ import annotations

import uuid
import weakref
from collections.abc import Sequence
from dataclasses import replace

import numpy as np

from ..devices import DeviceType, array_module, is_device_array, to_device, to_host
from ..errors import KernelError, ScannerError
from ..kernel import Kernel, OpSpec
from ..plan import Window
from ..types import Batch, concat_batches, stack_elements
from .instances import (
    OpContext,
    acquire,
    chain_instance,
    end_chain,
    enter_stream,
    release,
)

__all__ = [
    "assemble_stream",
    "batch_to_list",
    "on_host",
    "result_buffer",
    "run_chain",
    "run_op",
    "sample",
    "take_rows",
]


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


def _joined(ctx: OpContext, stream: int, window: Window, inputs: Sequence[Sequence]) -> list:
    """Each input's pieces joined; exactly the rows the plan's window names, or a loud error."""
    joined = []
    for pieces in inputs:
        batch = take_rows(pieces)
        if not np.array_equal(batch.rows, window.rows):
            missing = np.setdiff1d(window.rows, batch.rows)
            raise ScannerError(
                f"op {ctx.spec.name!r}, stream {stream}: its input partitions do not hold the "
                f"rows the plan gave this task (missing rows {missing[:8].tolist()}); this is "
                f"a bug in scanner_nb's plan")
        if ctx.copy_inputs and _aliases(batch, pieces):  # others see it too: a copy
            batch = _copied(batch)
        joined.append(batch)
    return joined


def _aliases(batch: Batch, pieces: Sequence) -> bool:
    """Whether ``batch`` (joined from ``pieces``) may hold an input partition's own memory:
    one numpy array that is, or views, a piece's; lists of frames and device arrays may."""
    elements = batch.elements
    if not isinstance(elements, np.ndarray):
        return True
    return any(isinstance(b.elements, np.ndarray) and np.may_share_memory(elements, b.elements)
               for b, _ in pieces)


def _copied(batch: Batch) -> Batch:
    elements = batch.elements
    if isinstance(elements, np.ndarray) or is_device_array(elements):
        elements = elements.copy()
    elif batch.type_name == "FrameType":
        elements = [e if e is None else e.copy() for e in elements]
    return replace(batch, elements=elements)


def run_op(ctx: OpContext, stream: int, rows: np.ndarray, window: Window,
           inputs: Sequence[Sequence]):
    """Run an op over the output ``rows`` of one partition.

    ``inputs`` holds, per stream param, the ``[batch, positions]`` pieces joining into
    ``window.rows``. Returns a batch (a tuple of batches for several outputs).
    """
    joined = _joined(ctx, stream, window, inputs)
    first_row = int(rows[0]) if len(rows) else 0
    kernel = acquire(ctx, stream, first_row)
    try:
        enter_stream(ctx, kernel, stream, first_row)
        outputs = _execute(ctx, kernel, stream, rows, window, joined)
    finally:
        release(ctx, kernel)
    return _results(ctx, stream, rows, outputs)


def run_chain(ctx: OpContext, chain: str, part: int, last: bool, stream: int, rows: np.ndarray,
              window: Window, inputs: Sequence[Sequence], previous=None):
    """Partition ``part`` of an unbounded-state chain: the instance stays in this process
    (see :mod:`~scanner_nb.runtime.instances`); ``previous`` is the chain's previous link.
    Returns ``(run, result)``: ``run`` names this run of the chain (made at partition 0), so a
    partition never continues another run's instance."""
    joined = _joined(ctx, stream, window, inputs)
    first_row = int(rows[0]) if len(rows) else 0
    run = uuid.uuid4().hex if part == 0 else previous[0]
    kernel = chain_instance(ctx, chain, part, stream, first_row, run)
    try:
        outputs = _execute(ctx, kernel, stream, rows, window, joined)
    except BaseException:
        release(ctx, kernel)
        raise
    end_chain(ctx, chain, part, kernel, last, run)
    return run, _results(ctx, stream, rows, outputs)


def _results(ctx: OpContext, stream: int, rows: np.ndarray, outputs):
    batches = tuple(_make_batch(stream, rows, elements, nulls, t.name)
                    for (elements, nulls), t in zip(outputs, ctx.spec.outputs))
    return batches[0] if len(batches) == 1 else batches


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


def _execute(ctx: OpContext, kernel: Kernel, stream: int, rows: np.ndarray, window: Window,
             joined: list[Batch]) -> list[tuple[list, np.ndarray | None]]:
    """Feed the window's rows to ``kernel`` (resets, stencil taps, batches, nulls); collect
    the outputs at the rows the window keeps."""
    spec = ctx.spec
    n_out = len(spec.outputs)
    elements = [to_device(b.elements, array_module(ctx.device)) if ctx.device is DeviceType.GPU
                else on_host(b.elements) for b in joined]
    if window.plain and joined[0].nulls is None:
        return [(_execute_plain(spec, kernel.execute, elements[0], stream, rows), None)]
    feed, taps = window.feed, window.taps
    null_rows = np.zeros(len(feed), bool)
    for b in joined:  # null where an input at the fed row itself is null
        if b.nulls is not None:
            null_rows |= b.nulls[feed]
    fed_rows = window.rows[feed]

    def argument(k: int, i: int):
        elems, mask = elements[k], joined[k].nulls
        if taps is None:
            return elems[int(feed[i])]
        return [None if (mask is not None and mask[p]) else elems[p] for p in taps[i].tolist()]

    out_elements = [[None] * len(feed) for _ in range(n_out)]
    # a batch op returning one numpy array per chunk: keep the arrays, no split and re-stack
    arrays: list | None = [] if spec.output_layout == "seq" else None
    restart = window.restart
    chunk = min(spec.batch, ctx.work_packet or spec.batch) if spec.batched else 1
    i = 0
    while i < len(feed):
        if restart is not None and restart[i]:
            _call(ctx, kernel.reset, stream, int(fed_rows[i]))
        j = i + 1
        while j < len(feed) and j - i < chunk and not (restart is not None and restart[j]):
            j += 1
        live = [r for r in range(i, j) if not null_rows[r]]
        if live:
            args = [_arguments(argument, k, live, spec.batched, elements[k],
                               feed if taps is None else None) for k in range(len(joined))]
            row = int(fed_rows[live[0]])
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
    if arrays and (window.keep is None or window.keep.all()) and not null_rows.any() and len(
            {a.shape[1:] + (a.dtype,) for a in arrays}) == 1:
        return [(arrays[0] if len(arrays) == 1 else np.concatenate(arrays), None)]
    kept = np.flatnonzero(window.keep) if window.keep is not None else np.arange(len(feed))
    nulls = null_rows[kept]
    return [([elems[p] for p in kept.tolist()], nulls if nulls.any() else None)
            for elems in out_elements]


def _execute_plain(spec: OpSpec, execute, elements, stream: int, rows: np.ndarray) -> list:
    out = []
    append = out.append
    try:
        for element in elements:
            append(execute(element))
    except Exception as exc:
        raise KernelError(spec.name, stream, int(rows[len(out)]), exc) from exc
    return out


def _arguments(argument, k: int, live: list[int], batched: bool, elems, feed):
    """Execute's argument for stream param ``k``: one element, a window, or a batch of them."""
    if not batched:
        return argument(k, live[0])
    if feed is not None and not isinstance(elems, list):  # frames as one array: slice, no copy
        p = feed[live]
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
