"""Kernel instances in one process: the pool, ``fetch_resources`` once per machine, and the
registry that keeps an unbounded-state chain's instance in the process running its chain.

Instances are made once per (process, op, init args, device) and reused across partitions. An
unbounded-state stream (or slice) is a *chain*: its partitions run in order, and its instance
stays here, in :data:`_CHAINS` under the chain's id; tasks carry only that id, never the
instance (which may hold a lock, a model or a file handle that cannot be pickled).
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import threading
from dataclasses import dataclass

from ..devices import DeviceType
from ..errors import KernelError, ScannerError
from ..kernel import Kernel, KernelConfig, OpSpec

__all__ = [
    "ChainMoved",
    "OpContext",
    "acquire",
    "chain_instance",
    "close_instances",
    "end_chain",
    "enter_stream",
    "forget_resources",
    "release",
    "resource_folder",
    "tune_allocator",
]


class ChainMoved(ScannerError):
    """A partition of an unbounded-state chain ran in a process that does not hold the chain's
    instance (its worker was lost, or the scheduler moved the task); the session re-runs the
    graph, so every chain restarts from its first row."""


@dataclass
class OpContext:
    """What a task needs to run one op node: ONE graph key per op node, which every task of
    the node depends on (so the per-stream config is in the graph once, not once a task)."""

    spec: OpSpec
    init_args: dict
    config_args: dict  # name -> list with one value per stream
    device: DeviceType
    instance_key: str  # op, version and init args: instances are shared under it
    session: str  # the session's token: fetch_resources runs once per machine per session
    work_packet: int | None = None  # most rows handed to one execute call of a batch op
    config_token: str = ""  # the stream-config args: a reused instance given others re-runs new_stream
    copy_inputs: bool = False  # the op's input reaches others too: hand the kernel a copy

    def config_for(self, stream: int) -> dict:
        return {name: values[stream] for name, values in self.config_args.items()}


_LOCK = threading.RLock()
_RELEASED = threading.Condition(_LOCK)
_IDLE: dict[str, list[Kernel]] = {}
_MADE: dict[str, list[Kernel]] = {}
_FETCHED: set[str] = set()
_FETCH_LOCKS: dict[str, threading.Lock] = {}
_CHAINS: dict[str, tuple[Kernel, int, str]] = {}  # chain id -> (instance, next part, run)
_TUNED: list[bool] = []
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3


def resource_folder(session: str) -> str:
    """This user's private folder (0700) for a session's fetch-once locks and markers."""
    from platformdirs import user_cache_dir

    folder = os.path.join(user_cache_dir("scanner_nb"), "resources", session)
    os.makedirs(folder, mode=0o700, exist_ok=True)
    return folder


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
        from filelock import FileLock

        folder = resource_folder(ctx.session)
        digest = hashlib.sha1(key.encode()).hexdigest()
        marker = os.path.join(folder, digest + ".done")
        with FileLock(os.path.join(folder, digest + ".lock")):
            if not os.path.exists(marker):
                kernel.fetch_resources()
                with open(marker, "w"):
                    pass
        with _LOCK:
            _FETCHED.add(key)


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


def acquire(ctx: OpContext, stream: int, row: int) -> Kernel:
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


def release(ctx: OpContext, kernel: Kernel) -> None:
    """Give an instance back to the pool."""
    with _RELEASED:
        _IDLE.setdefault(ctx.instance_key, []).append(kernel)
        _RELEASED.notify_all()


def enter_stream(ctx: OpContext, kernel: Kernel, stream: int, row: int) -> None:
    """Call ``new_stream`` when the instance moves to another stream or other config args."""
    where = (ctx.config_token, stream)
    if kernel._scanner_nb_stream == where:
        return
    try:
        kernel.new_stream(**ctx.config_for(stream))
    except Exception as exc:
        raise KernelError(ctx.spec.name, stream, row, exc) from exc
    kernel._scanner_nb_stream = where


def chain_instance(ctx: OpContext, chain: str, part: int, stream: int, row: int,
                   run: str) -> Kernel:
    """The instance running ``chain`` at its partition ``part``: a fresh start (``new_stream``,
    ``reset``) at partition 0, else the one that ran partition ``part - 1`` of the same run
    (``run``: made by partition 0, passed along the chain) in this process."""
    if part == 0:
        with _LOCK:
            stale = _CHAINS.pop(chain, None)
        if stale is not None:  # a chain restarted here (a lost worker's chain re-run)
            release(ctx, stale[0])
        kernel = acquire(ctx, stream, row)
        kernel._scanner_nb_stream = None
        try:
            enter_stream(ctx, kernel, stream, row)
            kernel.reset()
        except KernelError:
            release(ctx, kernel)
            raise
        except Exception as exc:
            release(ctx, kernel)
            raise KernelError(ctx.spec.name, stream, row, exc) from exc
        return kernel
    with _LOCK:
        kernel, expected, started = _CHAINS.pop(chain, (None, -1, ""))
    if kernel is not None and (expected != part or started != run):
        release(ctx, kernel)  # another run's instance: not this chain's state
        kernel = None
    if kernel is None:
        raise ChainMoved(
            f"op {ctx.spec.name!r} (unbounded state), stream {stream}: partition {part} of its "
            f"chain ran in a process that does not hold the chain's instance (expected partition "
            f"{expected}); the chain must run in one process, and its worker was lost or the "
            f"task moved. A Stream's compute() and sc.run run the chain again from its first "
            f"row on their own; after a plain dask.compute, call it again")
    return kernel


def end_chain(ctx: OpContext, chain: str, part: int, kernel: Kernel, last: bool,
              run: str) -> None:
    """After a chain's partition ran: keep the instance for the next one, or pool it."""
    if last:
        release(ctx, kernel)
    else:
        with _LOCK:
            _CHAINS[chain] = (kernel, part + 1, run)


def close_instances() -> int:
    """Close every kernel instance made in this process; returns how many were closed."""
    with _LOCK:
        made = [k for kernels in _MADE.values() for k in kernels]
        _MADE.clear()
        _IDLE.clear()
        _CHAINS.clear()
        _FETCHED.clear()
    for kernel in made:
        try:
            kernel.close()
        except Exception:  # closing must not fail the client's close
            pass
    return len(made)


def forget_resources(session: str) -> None:
    """Remove a session's fetch-once lock and marker files (when its client closes)."""
    import shutil

    from platformdirs import user_cache_dir

    with _LOCK:
        for key in [k for k in _FETCHED if k.startswith(f"{session}-")]:
            _FETCHED.discard(key)
    shutil.rmtree(os.path.join(user_cache_dir("scanner_nb"), "resources", session),
                  ignore_errors=True)
