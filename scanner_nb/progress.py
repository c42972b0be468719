"""Computing with a progress bar, locally or on a cluster, in Jupyter or in a terminal.

The session decides where a graph runs; this module runs it and watches it. :func:`compute` is
the one entry point: the session passes the collections, the ``distributed.Client`` (or
``None``) and the local scheduler's ``get``; it returns the computed results in order.

The bar counts the *partitions of the requested output* (the keys of the collections), named
after the op that produces them, not Dask's tasks: ``Blur: 3/9 partitions``. It is a tqdm bar
(``tqdm.auto``: a widget in Jupyter, text on stderr in a terminal), updated from the calling
thread:

- locally, from a Dask callback as each output partition finishes;
- on a cluster, from the per-partition futures as they complete (``distributed.wait``), so it
  moves while the kernel waits; ``distributed.progress`` needs the kernel's event loop, which a
  blocking ``gather`` holds, so it drew nothing.

In Jupyter the bar is displayed with a display id and, once finished, its output is replaced by
the same widget plus its final state as ``text/plain`` and ``text/html``, so a saved notebook
(GitHub, nbviewer, nbconvert) shows ``Blur: 100%|...| 9/9`` rather than ``0%``.

On a cluster every compute also gets: a :class:`ScannerError` within ``NO_WORKERS_TIMEOUT``
seconds when the cluster has no live worker (instead of waiting forever); Dask's cluster failures
(``KilledWorker``, a lost scheduler, cancelled futures) as a :class:`ScannerError` naming the op
of the failed partition; its tasks cancelled when the user interrupts; and a worker log filter
so a :class:`KernelError` is reported once, by the exception, not also by each worker's
``distributed.worker - ERROR - Compute Failed`` log line.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import sys
import time
import weakref
from typing import Any, Callable, Sequence

import dask
from dask.base import is_dask_collection
from dask.callbacks import Callback
from dask.core import flatten
from dask.utils import key_split

from .errors import KernelError, ScannerError
from .log import get_logger

__all__ = ["compute"]

NO_WORKERS_TIMEOUT = 5.0  # seconds a cluster may have no live worker before a compute fails
POLL = 0.5  # seconds between looks at the cluster while waiting for partitions
UNIT = "partition"
_log = get_logger("cluster")


def compute(collections: Sequence, *, dclient: Any = None, scheduler: Callable | None = None,
            label: str = "scanner_nb", show: bool = True, **kwargs) -> list:
    """Compute ``collections`` and return their results in order.

    Parameters
    ----------
    collections : sequence of Dask collections
        Usually ``Stream`` objects; any Dask collection works.
    dclient : distributed.Client, optional
        Run on this cluster; ``None`` runs locally with ``scheduler``.
    scheduler : callable, optional
        The local scheduler's ``get`` (e.g. ``dask.threaded.get``).
    label : str
        The bar's name: the op whose output is computed.
    show : bool
        Whether to show a bar.
    **kwargs
        Dask's own compute keywords (locally), or ``Client.get`` keywords on a cluster.

    Returns
    -------
    list
        One result per collection.

    Examples
    --------
    >>> import dask.bag as db
    >>> compute([db.from_sequence(range(4), npartitions=2).map(abs)],
    ...         scheduler=dask.get, show=False)
    [[0, 1, 2, 3]]
    """
    if dclient is not None:
        return _on_cluster(list(collections), dclient, label, show, kwargs)
    if not show:
        return list(dask.compute(*collections, scheduler=scheduler, **kwargs))
    keys = set(_counted_keys(collections))
    with _Bar(len(keys), label) as bar, _CountOutputs(keys, bar.update):
        return list(dask.compute(*collections, scheduler=scheduler, **kwargs))


def _counted_keys(collections: Sequence) -> list:
    """The keys the bar counts: the output partitions; for a single output key that gathers
    others (a run's commit gathers its partitions' writes), the keys it gathers."""
    from dask.core import get_dependencies

    wanted = [c for c in collections if is_dask_collection(c)]
    keys = [k for c in wanted for k in flatten(c.__dask_keys__())]
    if len(keys) == 1:
        try:
            gathered = get_dependencies(wanted[0].__dask_graph__(), keys[0])
        except Exception:  # a graph this rule does not understand: count the one key
            gathered = ()
        if len(gathered) > 1:
            return sorted(gathered, key=str)
    return keys


# -- the bar --------------------------------------------------------------------------------


class _Bar:
    """A tqdm bar (widget in Jupyter, text in a terminal) that leaves a meaningful saved output.

    In Jupyter the widget is displayed with a display id; ``close`` replaces that output by the
    widget plus its final state as text, which is what a saved notebook shows without widgets.
    """

    def __init__(self, total: int, label: str):
        from tqdm.auto import tqdm
        from tqdm.notebook import tqdm as notebook_tqdm

        self._handle = None
        options = dict(total=total, desc=label, unit=UNIT, leave=True, dynamic_ncols=True)
        if issubclass(tqdm, notebook_tqdm):  # in a Jupyter kernel with ipywidgets
            from IPython.display import display

            self.tqdm = tqdm(display=False, **options)
            self._handle = display(self._bundle(final=False), raw=True, display_id=True)
        else:
            self.tqdm = tqdm(file=sys.stderr, **options)

    def update(self, n: int = 1) -> None:
        self.tqdm.update(n)

    def finish(self) -> None:
        """Mark every partition done (some keys may be computed under other names)."""
        self.tqdm.update(max(self.tqdm.total - self.tqdm.n, 0))

    def _bundle(self, final: bool) -> dict:
        bar = self.tqdm
        text = bar.format_meter(**{**bar.format_dict, "ascii": True})
        if final and bar.n < (bar.total or 0):
            text += " (stopped)"
        bundle = {"text/plain": text,
                  "text/html": f'<pre class="scanner-nb-progress">{_escape(text)}</pre>'}
        container = getattr(bar, "container", None)
        if container is not None:
            bundle["application/vnd.jupyter.widget-view+json"] = {
                "version_major": 2, "version_minor": 0, "model_id": container.model_id}
        return bundle

    def __enter__(self) -> _Bar:
        return self

    def __exit__(self, exc_type, *_) -> None:
        if exc_type is None:
            self.finish()
        self.tqdm.close()
        if self._handle is not None:
            self._handle.update(self._bundle(final=True), raw=True)


def _escape(text: str) -> str:
    import html

    return html.escape(text, quote=False)


class _CountOutputs(Callback):
    """A local Dask callback that calls ``tick()`` as each output partition finishes."""

    def __init__(self, keys: set, tick: Callable[[], None]):
        super().__init__()
        self._keys, self._tick = keys, tick

    def _posttask(self, key, result, dsk, state, worker_id) -> None:
        if key in self._keys:  # called on the thread that called dask.compute
            self._tick()


# -- on a cluster ---------------------------------------------------------------------------


def _on_cluster(collections: list, dclient: Any, label: str, show: bool, kwargs: dict) -> list:
    """Submit the output partitions as futures, wait for them with a bar, finalize here."""
    from dask.highlevelgraph import HighLevelGraph

    _quiet_kernel_errors(dclient)
    workers = _require_workers(dclient)
    kwargs.pop("optimize_graph", None)  # the row analysis already built only what is needed
    kwargs.pop("traverse", None)
    wanted = [c for c in collections if is_dask_collection(c)]
    graph = HighLevelGraph.merge(*[c.__dask_graph__() for c in wanted])
    keys = [c.__dask_keys__() for c in wanted]
    counted = _counted_keys(wanted)
    try:
        futures, watched = dclient.get(graph, [keys, counted], sync=False, **kwargs)
    except (OSError, RuntimeError) as exc:  # a closed client or a lost scheduler
        raise ScannerError(f"could not submit {label!r} to the cluster: {exc}") from exc
    flat = list({id(f): f for f in [*flatten(futures), *watched]}.values())
    try:
        with (_Bar(len(watched), label) if show else contextlib.nullcontext()) as bar:
            _wait(dclient, flat, {id(f) for f in watched}, bar.update if show else None, label,
                  workers)
        parts = dclient.gather(futures)
    except BaseException as exc:
        dclient.cancel(flat)
        if isinstance(exc, KernelError):
            exc.frames = _with_local_files(exc.op, exc.frames)
        error = _cluster_error(exc, label)
        if error is None:  # a task's own exception (a KernelError, ...) or an interrupt
            raise
        raise error from exc
    finally:
        for f in flat:
            f.release()
    done = iter(parts)
    results = []
    for c in collections:
        if is_dask_collection(c):
            finalize, extra = c.__dask_postcompute__()
            results.append(finalize(next(done), *extra))
        else:
            results.append(c)
    return results


def _wait(dclient: Any, futures: list, counted: set, tick: Callable[[int], None] | None,
          label: str, workers: set[str]) -> None:
    """Wait for every future, ticking per finished one whose ``id`` is in ``counted``; raise
    the first failure at once.

    Every ``POLL`` seconds the cluster's workers are looked at (``workers``: those there at
    the start): one that left is logged
    (``scanner_nb.cluster``) with what Dask now computes again, and with no worker for
    ``NO_WORKERS_TIMEOUT`` seconds the wait ends with a :class:`ScannerError` rather than
    waiting forever.
    """
    finished: queue.Queue = queue.Queue()  # done callbacks run on the client's loop thread
    for f in futures:
        f.add_done_callback(finished.put)
    pending = {id(f): f for f in futures}
    looked = time.monotonic()
    alone_since = None
    while pending:
        try:
            done = [finished.get(timeout=POLL)]
        except queue.Empty:
            done = []
        while True:
            try:
                done.append(finished.get_nowait())
            except queue.Empty:
                break
        for f in done:
            pending.pop(id(f), None)
            if f.status != "finished":
                f.result()  # raises the task's exception (a KernelError, a KilledWorker, ...)
        if done and tick is not None:
            tick(sum(id(f) in counted for f in done))
        if time.monotonic() - looked < POLL:
            continue
        now, looked = _live_workers(dclient), time.monotonic()
        for worker in sorted(workers - now):
            _log.warning("worker %s left the cluster while computing %r: Dask computes the "
                         "partitions it held again on the other workers (%d of %d partitions "
                         "left, of %s)", worker, label, len(pending), len(futures),
                         ", ".join(sorted({key_split(f.key) for f in pending.values()})))
        workers = now
        if now:
            alone_since = None
        elif alone_since is None:
            alone_since = time.monotonic()
        elif time.monotonic() - alone_since > NO_WORKERS_TIMEOUT:
            raise _no_workers(dclient)


def _with_local_files(op: str, frames: list) -> list:
    """Frames with the op's own file names back: cloudpickle ships an op defined in a notebook
    with its code's file name replaced by ``<dynamic-code>``, so the line could not be shown."""
    from .kernel import lookup_op

    try:
        spec = lookup_op(op)
    except Exception:
        return frames
    owner = spec.function if spec.function is not None else spec.kernel_cls
    functions = [owner, *vars(owner).values()] if isinstance(owner, type) else [owner]
    files = {f.__code__.co_name: f.__code__.co_filename for f in functions
             if hasattr(f, "__code__")}
    return [(files.get(name, filename) if filename == "<dynamic-code>" else filename, line, name)
            for filename, line, name in frames]


def _live_workers(dclient: Any) -> set[str]:
    """The addresses of the cluster's workers now."""
    try:
        return set(dclient.nthreads())
    except Exception as exc:  # the scheduler is gone
        raise ScannerError(f"lost the connection to the Dask scheduler "
                           f"{_address(dclient)}: {exc}") from exc


def _require_workers(dclient: Any) -> set[str]:
    """The cluster's workers, waiting up to ``NO_WORKERS_TIMEOUT`` for one."""
    workers = _live_workers(dclient)
    if workers:
        return workers
    try:
        dclient.wait_for_workers(1, timeout=NO_WORKERS_TIMEOUT)
    except (TimeoutError, OSError) as exc:
        raise _no_workers(dclient) from exc
    return _live_workers(dclient)


def _no_workers(dclient: Any) -> ScannerError:
    return ScannerError(
        f"the Dask cluster at {_address(dclient)} has no live workers (none for "
        f"{NO_WORKERS_TIMEOUT:g} s). Start workers or a new cluster; if an interrupt killed "
        "a notebook's LocalCluster workers, see scanner_nb.notebook.keep_workers_on_interrupt")


def _address(dclient: Any) -> str:
    try:
        return str(dclient.scheduler.address)
    except Exception:
        return "?"


_CLUSTER_FAILURES = ("KilledWorker", "CancelledError", "FutureCancelledError",
                     "CommClosedError", "FutureLostError")


def _cluster_error(exc: BaseException, label: str) -> ScannerError | None:
    """A ScannerError for a failure of the cluster itself (not of a task's code), naming the op
    of the failed partition where known; None for anything else."""
    name = type(exc).__name__
    if name not in _CLUSTER_FAILURES:
        return None
    key = getattr(exc, "task", None) or getattr(exc, "key", None)
    where = f"op {key_split(key)!r} (partition {key!r})" if key is not None else repr(label)
    if name == "KilledWorker":
        return ScannerError(
            f"{where}: the workers running it died ({exc}). A kernel that crashes its process "
            "or runs out of memory does this; try a smaller partition_size")
    if "Cancelled" in name or name == "FutureLostError":
        return ScannerError(f"{where}: the computation was cancelled on the cluster, e.g. "
                            f"because the scheduler or its workers went away ({exc})")
    return ScannerError(f"computing {where} on the cluster failed: {name}: {exc}")


# -- worker housekeeping --------------------------------------------------------------------

_QUIETED: weakref.WeakSet = weakref.WeakSet()


class _DropKernelErrorLogs(logging.Filter):
    """Drop ``distributed.worker``'s "Compute Failed" record for a KernelError (the exception
    itself reaches the user, naming op, stream and row)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not str(record.msg).startswith("Compute Failed"):
            return True
        args = record.args if isinstance(record.args, tuple) else ()
        names = {cls.__name__ for cls in (KernelError, *KernelError.__subclasses__())}
        return not any(isinstance(a, str) and a.split("(", 1)[0] in names for a in args)


def _install_filter(dask_worker: Any = None) -> None:
    logger = logging.getLogger("distributed.worker")
    if not any(isinstance(f, _DropKernelErrorLogs) for f in logger.filters):
        logger.addFilter(_DropKernelErrorLogs())


def _quiet_kernel_errors(dclient: Any) -> None:
    """Install the filter on the client's workers (and future ones), once per client."""
    if dclient in _QUIETED:
        return
    from distributed.diagnostics.plugin import WorkerPlugin

    class QuietKernelErrors(WorkerPlugin):
        name = "scanner-nb-quiet-kernel-errors"

        def setup(self, worker):
            _install_filter(worker)

    try:
        dclient.register_plugin(QuietKernelErrors(), name=QuietKernelErrors.name)
    except Exception:  # old workers or a closed client: the log line stays, nothing breaks
        return
    _QUIETED.add(dclient)
