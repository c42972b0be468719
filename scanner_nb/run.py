"""Storing results: ``sc.io.Output``, ``sc.run``, cache modes and performance parameters.

A run computes each output stream partition by partition; the worker that computed a chunk
writes it, and the last task, which gathers their infos on a worker, checks each output's
staged files and makes its manifest (all outputs at once); then all are committed together by
one run record written last (:mod:`scanner_nb.storage.commit`). A run that fails, is killed
or meets a full disk commits none of its outputs and leaves earlier streams as they were. The
client's own store requests (existence checks, staging locks, manifests, sweeps) are made for
all outputs at once, so on an object store a run of hundreds of outputs costs a few round
trips, not a few per output.
"""

from __future__ import annotations

import enum
import os
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import numpy as np
from dask.base import tokenize
from dask.delayed import Delayed
from dask.highlevelgraph import HighLevelGraph

from . import runtime
from .profile import note_built
from .errors import ScannerTypeError, ScannerValueError, StreamExistsError
from .sources import NamedStream, NamedVideoStream
from .storage import fs as fs_
from .storage.commit import new_run
from .stream import Stream

if TYPE_CHECKING:
    from .client import Client

__all__ = ["CacheMode", "Output", "PerfParams", "run_outputs"]


class CacheMode(enum.Enum):
    """What ``sc.run`` does with an output stream that exists already."""

    Error = "error"  #: refuse before any work starts (default)
    Ignore = "ignore"  #: skip that output, keep the stored one
    Overwrite = "overwrite"  #: replace it, once the new content is complete


@dataclass(frozen=True)
class PerfParams:
    """How a run is cut into work: ``io_packet_size`` rows per partition, at most
    ``work_packet_size`` rows per ``execute`` step of a batch op.

    Examples
    --------
    >>> PerfParams.manual(8, 64).io_packet_size
    64
    """

    work_packet_size: int | None = None
    io_packet_size: int | None = None
    memory_fraction: float | None = None
    pipeline_instances_per_node: int | None = None
    total_memory: int | None = None

    @classmethod
    def manual(cls, work_packet_size: int, io_packet_size: int, *,
               pipeline_instances_per_node: int | None = None, cpu_pool: str | None = None,
               gpu_pool: str | None = None, load_sparsity_threshold: int = 8,
               queue_size_per_pipeline: int = 4) -> PerfParams:
        """Fixed sizes: rows per ``execute`` step and rows per partition.

        ``pipeline_instances_per_node`` (Scanner's name) is how many partitions one machine
        computes at once: the threads of the local scheduler (a cluster's workers keep their
        own). Scanner's ``cpu_pool``, ``gpu_pool``, ``load_sparsity_threshold`` and
        ``queue_size_per_pipeline`` are accepted and have no effect (Dask schedules the tasks).
        """
        for name, value in (("work_packet_size", work_packet_size),
                            ("io_packet_size", io_packet_size)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ScannerValueError(
                    f"PerfParams.manual: {name} must be an int >= 1, got {value!r}")
        if work_packet_size > io_packet_size:
            raise ScannerValueError(
                f"PerfParams.manual: work_packet_size {work_packet_size} is larger than "
                f"io_packet_size {io_packet_size}")
        return cls(work_packet_size, io_packet_size,
                   pipeline_instances_per_node=_instances(pipeline_instances_per_node))

    @classmethod
    def estimate(cls, memory_fraction: float | None = None, *,
                 max_memory_util: float | None = None, total_memory: int | None = None,
                 work_io_ratio: float = 0.2, queue_size_per_pipeline: int = 4,
                 pipeline_instances_per_node: int | None = None, cpu_pool: str | None = None,
                 gpu_pool: str | None = None, load_sparsity_threshold: int = 8) -> PerfParams:
        """Sizes chosen per run from the frame size and the memory at hand.

        Partitions of frames are sized so that two in flight per core use at most
        ``memory_fraction`` (Scanner: ``max_memory_util``) of the available memory, or of
        ``total_memory`` bytes when given (and never more than 64 MiB each). A run's
        memory is then bounded by the partitions in flight (about two partitions' frames per
        thread: the input and an op's output), whatever the length of the video. A video's
        partitions hold whole groups of pictures, so with long ones (x264's default of 250
        frames is 1.5 GB at 1080p) the keyframe interval, not this estimate, sets the size.
        ``pipeline_instances_per_node`` is as in :meth:`manual`; Scanner's ``work_io_ratio``,
        ``queue_size_per_pipeline``, ``cpu_pool``, ``gpu_pool`` and ``load_sparsity_threshold``
        are accepted and have no effect.
        """
        if memory_fraction is not None and max_memory_util is not None:
            raise ScannerValueError("PerfParams.estimate: give memory_fraction or "
                                    "max_memory_util (Scanner's name), not both")
        fraction = memory_fraction if memory_fraction is not None else max_memory_util
        if fraction is not None and not 0 < float(fraction) <= 1:
            raise ScannerValueError(
                f"PerfParams.estimate: the memory fraction must be in (0, 1], got {fraction!r}")
        if total_memory is not None and (not isinstance(total_memory, int) or total_memory < 1):
            raise ScannerValueError(
                f"PerfParams.estimate: total_memory must be a number of bytes, got {total_memory!r}")
        return cls(None, None, 0.25 if fraction is None else float(fraction),
                   pipeline_instances_per_node=_instances(pipeline_instances_per_node),
                   total_memory=total_memory)

    def partition_size_for(self, stream: Stream) -> int | None:
        """Rows per partition for computing ``stream``."""
        if self.io_packet_size is not None:
            return self.io_packet_size
        frame_bytes = _frame_bytes(stream)
        if frame_bytes is None or stream.client.partition_size is not None:
            return stream.client.partition_size
        budget = self.memory() * (self.memory_fraction or 0.25) / (2 * (os.cpu_count() or 1))
        budget = min(budget, 64 << 20)
        return max(1, int(budget // frame_bytes))


    def memory(self) -> int:
        """The memory a run may plan with: ``total_memory``, else what is available now."""
        return self.total_memory or _available_memory()


def _instances(value) -> int | None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise ScannerValueError(f"pipeline_instances_per_node must be an int >= 1, got {value!r}")
    return value


def _available_memory() -> int:
    import psutil

    return int(psutil.virtual_memory().available)


def _frame_bytes(stream: Stream) -> int | None:
    """Bytes of one source frame of ``stream``'s plan, if it reads frames."""
    node = stream._ref.node
    while node.inputs:
        node = node.inputs[0].node
    return next((s.frame_bytes for s in node.sources if s.frame_bytes), None)


class Output:
    """``sc.io.Output(stream, [NamedStream, ...])``: where each stream of ``stream`` is stored."""

    def __init__(self, stream: Stream, targets: Sequence[NamedStream]):
        if not isinstance(stream, Stream):
            raise ScannerTypeError(f"sc.io.Output takes a Stream, got {type(stream).__name__}")
        targets = list(targets) if isinstance(targets, (list, tuple)) else targets
        if not isinstance(targets, list) or not all(isinstance(t, NamedStream) for t in targets):
            raise ScannerTypeError(
                "sc.io.Output takes a list of sp.NamedStream / sp.NamedVideoStream, one per stream")
        if len(targets) != stream.num_streams:
            raise ScannerValueError(
                f"sc.io.Output: {len(targets)} name(s) for {stream.num_streams} stream(s); give "
                f"one sp.NamedStream per stream")
        for t in targets:  # a NamedVideoStream may name other elements too, as in Scanner
            if isinstance(t, NamedVideoStream) and t.path is not None:
                raise ScannerValueError(
                    f"sc.io.Output: {t.name!r} names a video file; outputs are stored in the "
                    f"database: use sp.NamedVideoStream(sc, name) without path")
        self.stream, self.targets = stream, targets


def run_outputs(client: Client, outputs, perf_params: PerfParams | None, cache_mode: CacheMode,
                show_progress: bool) -> list[NamedStream]:
    """``sc.run``: store every output; returns the stored streams in order (skipped included)."""
    outputs = [outputs] if isinstance(outputs, Output) else list(outputs)
    if not outputs or not all(isinstance(o, Output) for o in outputs):
        raise ScannerTypeError("sc.run takes an sc.io.Output or a list of them")
    if not isinstance(cache_mode, CacheMode):
        raise ScannerTypeError(f"cache_mode must be an sp.CacheMode, got {cache_mode!r}")
    jobs = [(o.stream, s, t) for o in outputs for s, t in enumerate(o.targets)]
    names = [t.name for _, _, t in jobs]
    if len(set(names)) != len(names):
        raise ScannerValueError(f"sc.run: an output name is used twice in {names}")
    client.db.check_writable()
    existing = [] if cache_mode is CacheMode.Overwrite else client.db.existing(names)
    if existing and cache_mode is CacheMode.Error:
        raise StreamExistsError(
            f"stored stream(s) {existing} exist; pass cache_mode=sp.CacheMode.Overwrite to replace "
            f"them or sp.CacheMode.Ignore to keep them")
    todo = [job for job in jobs if job[2].name not in existing]
    if not todo:
        return [t for _, _, t in jobs]
    perf = perf_params or PerfParams.estimate()
    run = new_run()
    writers, targets, layers, deps, keys, views, largest = [], [], {}, {}, [], {}, 0
    try:
        for stream, s, target in todo:
            if id(stream) not in views:  # the streams of one Output share one graph
                views[id(stream)] = stream.with_perf_params(perf)
            built = views[id(stream)]._build()
            note_built(built)  # for the run's profile
            parts = built.rows[s]
            largest = max(largest, max((len(r) for r in parts), default=0) *
                          (_frame_bytes(stream) or 0))
            chunk_rows = max((len(r) for r in parts), default=1)
            fps = stream.fps(s) if stream.type_name == "FrameType" else None
            writer = client.db.writer(target.name, stream.type_name, stream.lengths[s],
                                      chunk_rows, storage=stream.storage_hint, fps=fps)
            writers.append(writer)
            targets.append(target)
            layers.update(built.graph.layers)
            for name, dep in built.graph.dependencies.items():
                deps.setdefault(name, set()).update(dep)
            name = f"store-{target.name}-{tokenize(writer.version)}"
            layers[name] = _write_tasks(name, writer, built.keys[s], parts, stream.lengths[s],
                                        chunk_rows)
            deps[name] = {k[0] for k in built.keys[s]}
            keys.append([(name, k) for k in range(writer.num_chunks)])
        final = f"run-{run}"
        layers[final] = {(final, 0): (_seal, writers, run, keys)}
        deps[final] = {k[0][0] for k in keys if k}
        graph = HighLevelGraph(layers, deps)
        threads = _threads_within_budget(client, perf, largest)
        stored = [t.name for t in targets]
        label = "sc.run " + ", ".join(stored[:3]) + (f" (+{len(stored) - 3})" if len(stored) > 3
                                                      else "")
        client.db.stage(writers)  # one round of requests on a remote store
        (sealed,) = client.compute_collections([Delayed((final, 0), graph, layer=final)],
                                               progress=show_progress, label=label,
                                               **({"num_workers": threads} if threads else {}))
    except BaseException:
        client.db.abort(writers)
        raise
    _commit(client, writers, targets, sealed, cache_mode)
    return [t for _, _, t in jobs]


def _threads_within_budget(client: Client, perf: PerfParams, partition_bytes: int) -> int | None:
    """Threads that keep ``estimate()``'s memory budget on the threaded scheduler, or ``None``
    for all of them.

    A video partition holds whole groups of pictures, so it can be far larger than the
    estimate asked for (a 250-frame GOP at 1080p is 1.5 GB). Each thread then holds about two
    such partitions (an op's input and output): run fewer threads rather than more memory
    than ``memory_fraction`` of what is available. A cluster's workers manage their own memory.
    """
    if client.distributed is not None:
        return None
    if perf.pipeline_instances_per_node is not None:
        return perf.pipeline_instances_per_node
    if perf.io_packet_size is not None or not partition_bytes:
        return None
    cores = os.cpu_count() or 1
    budget = perf.memory() * (perf.memory_fraction or 0.25)
    threads = int(budget // (2 * partition_bytes))
    return None if threads >= cores else max(1, threads)


def _commit(client: Client, writers: list, targets: list, sealed: list,
            cache_mode: CacheMode) -> None:
    """Publish every output together. A stream another run stored while this one computed is
    replaced only with ``Overwrite``: ``Ignore`` keeps it (this run's version of it is
    dropped), ``Error`` raises ``StreamExistsError`` and commits nothing."""
    for target in targets:
        target.forget()  # the run has read it; the handle re-reads the stream from now on
    try:
        client.db.publish(writers, sealed, replace=cache_mode is CacheMode.Overwrite,
                          skip_existing=cache_mode is CacheMode.Ignore)
    finally:
        client.db.abort(writers)  # does nothing to a committed writer


def _seal(writers: list, run: str, infos: list) -> list[tuple[dict, dict | None]]:
    """:meth:`StreamWriter.seal` of each writer with its chunks' infos (on a worker)."""
    return fs_.each(writers[0]._fs, lambda pair: pair[0].seal(pair[1], run), zip(writers, infos))


def _write_tasks(name: str, writer, part_keys: list, parts: list[np.ndarray], length: int,
                 chunk_rows: int) -> dict:
    """One write task per chunk of ``chunk_rows`` rows, taking rows from the partitions."""
    starts = np.array([p[0] for p in parts], dtype=np.int64)
    ends = np.array([p[-1] + 1 for p in parts], dtype=np.int64)
    tasks = {}
    for k in range(-(-length // chunk_rows)):
        lo, hi = k * chunk_rows, min(length, (k + 1) * chunk_rows)
        pieces = []
        for q in np.flatnonzero((starts < hi) & (ends > lo)).tolist():
            rows = parts[q]
            sel = np.flatnonzero((rows >= lo) & (rows < hi))
            pieces.append([part_keys[q], None if len(sel) == len(rows) else sel])
        tasks[(name, k)] = (_write_chunk, writer, k, pieces)
    return tasks


def _write_chunk(writer, k: int, pieces) -> dict:
    batch = runtime.take_rows(pieces)  # frames of a GPU op come back to the host to be stored
    return writer.write_chunk(k, replace(batch, elements=runtime.on_host(batch.elements)))
