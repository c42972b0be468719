"""``Session``: where graphs run. The only place that tells local threads from a cluster.

A session holds the ``distributed.Client`` (or ``None`` for the local threaded scheduler) and
answers everything that depends on it: which scheduler a collection defaults to, how a compute
runs (with Dask's own keywords passed through and ``dask.config`` honoured, progress shown by
:func:`scanner_nb.progress.compute`), the one-row synchronous path previews use, the workers
unbounded-state chains are pinned to, and closing what was made here.

Examples
--------
>>> session = Session()
>>> session.is_local
True
>>> session.close()
"""

from __future__ import annotations

import contextlib
import functools
import os
import uuid
from collections.abc import Callable, Sequence
from typing import Any

import dask
import dask.threaded

from . import progress as progress_
from . import runtime
from .errors import ScannerTypeError
from .log import get_logger

__all__ = ["Session", "connect"]

_CHAIN_ATTEMPTS = 3
_log = get_logger("cluster")


def _call_each(calls: list[Callable]) -> list:
    return [call() for call in calls]


def connect(address: Any):
    """``(distributed.Client or None, whether it was made here)`` for a Client's ``address``.

    A client made here from an address or a cluster becomes Dask's default client, so Dask
    collections made from streams (``to_delayed``, ``to_dask_array``) run on the cluster too.
    """
    if address is None:
        return None, False
    import distributed

    if isinstance(address, distributed.Client):
        return address, False
    if isinstance(address, (str, distributed.deploy.Cluster)):
        return distributed.Client(address, set_as_default=True), True
    raise ScannerTypeError(
        f"address must be None, a scheduler address, a distributed.Client or a cluster, "
        f"got {type(address).__name__}")


class Session:
    """Where graphs run: the local threaded scheduler, or a ``distributed.Client``.

    Parameters
    ----------
    address : None, str, distributed.Client or cluster
        As :class:`scanner_nb.Client` takes it.
    show_progress : bool
        Whether computes show a progress bar unless told otherwise.
    """

    def __init__(self, address: Any = None, show_progress: bool = False):
        self.token = uuid.uuid4().hex
        self.show_progress = show_progress
        self.distributed, self._owns_distributed = connect(address)
        self.closed = False

    @property
    def is_local(self) -> bool:
        """Whether graphs run on the local threaded scheduler."""
        return self.distributed is None

    @property
    def get(self) -> Callable:
        """The ``get`` function this session's collections default to."""
        return dask.threaded.get if self.distributed is None else self.distributed.get

    def _where(self, scheduler: Any) -> tuple[Any, Any]:
        """``(distributed client, scheduler)`` for a compute: an explicit ``scheduler=`` wins,
        then ``dask.config``'s scheduler, then this session's."""
        if scheduler is None:
            configured = dask.config.get("scheduler", None)
            if configured not in (None, "dask.distributed", "distributed"):
                scheduler = configured
        if scheduler is None:
            return self.distributed, (dask.threaded.get if self.distributed is None else None)
        if self.distributed is not None and scheduler is self.distributed:
            return self.distributed, None
        return None, scheduler

    def lands_here(self, scheduler: Any = None) -> bool:
        """Whether a compute with ``scheduler=`` runs in this process's memory (threads or
        synchronous), so tasks may write straight into one result array."""
        dclient, scheduler = self._where(scheduler)
        return dclient is None and (scheduler is dask.threaded.get or scheduler in (
            "threads", "threading", "sync", "synchronous", "single-threaded"))

    def compute(self, collections: Sequence, *, progress: bool | None = None,
                label: str = "scanner_nb", **kwargs) -> list:
        """Compute Dask collections where this session runs graphs.

        Parameters
        ----------
        collections : sequence
            Dask collections (Streams, delayed, arrays).
        progress : bool, optional
            Show a bar (default: the session's ``show_progress``).
        label : str
            The bar's label (the root op's name).
        **kwargs
            Dask's own compute keywords (``scheduler=``, ``optimize_graph=``, ``num_workers=``).
        """
        show = self.show_progress if progress is None else progress
        dclient, scheduler = self._where(kwargs.pop("scheduler", None))
        for attempt in range(_CHAIN_ATTEMPTS):
            try:
                return progress_.compute(collections, dclient=dclient, scheduler=scheduler,
                                         label=label, show=show, **kwargs)
            except runtime.ChainMoved:
                # a worker was lost (or a chain task moved): run again, every chain from its
                # first row on the workers there are now
                if dclient is None or attempt == _CHAIN_ATTEMPTS - 1:
                    raise
                _log.warning("%s: a worker running unbounded-state chains was lost; running "
                             "them again from their first rows (attempt %d of %d)", label,
                             attempt + 2, _CHAIN_ATTEMPTS)

    def map(self, calls: Sequence[tuple], label: str = "scanner_nb") -> list:
        """Run independent calls ``(function, *args)`` where graphs run, in parallel: on the
        cluster's workers, or on local threads. Returns their results in order; the first
        error is raised.

        The calls go in a few tasks per thread of the cluster (or core here), not one task
        each: a thousand quick calls (indexing short clips) cost no thousand round trips.
        """
        if not calls:
            return []
        slots = (os.cpu_count() or 1) if self.distributed is None else max(
            1, sum(self.distributed.nthreads().values()))
        size = -(-len(calls) // (4 * slots))
        tasks = [dask.delayed(_call_each, pure=False)(
            [functools.partial(*call) for call in calls[i:i + size]])
            for i in range(0, len(calls), size)]
        local = {} if self.distributed is not None else {"scheduler": "threads",
                                                          "num_workers": slots}
        results = self.compute(tasks, progress=False, label=label, **local)
        return [result for chunk in results for result in chunk]

    def compute_now(self, graph, keys: list) -> list:
        """Run a small graph synchronously here (one preview row): no pool, no round trips;
        on a cluster it goes to the cluster."""
        if self.distributed is None:
            from dask.local import get_sync

            return get_sync(graph, keys)
        return self.distributed.get(graph, keys, sync=True)

    def persist(self, collection, **kwargs):
        """Persist a collection where this session runs graphs (or where ``scheduler=`` says)."""
        dclient, scheduler = self._where(kwargs.pop("scheduler", None))
        (result,) = dask.persist(collection, scheduler=dclient or scheduler, **kwargs)
        return result

    def workers(self) -> list[str] | None:
        """The cluster's worker addresses, sorted (``None`` on local threads): graphs pin each
        unbounded-state chain to one of them, so its kernel instance stays in one process."""
        if self.distributed is None:
            return None
        return sorted(self.distributed.scheduler_info(n_workers=-1)["workers"])

    def run_everywhere(self, function: Callable, *args) -> None:
        """Call ``function(*args)`` here and, on a cluster, on every worker."""
        function(*args)
        if self.distributed is not None:
            with contextlib.suppress(Exception):
                self.distributed.run(function, *args)

    def close(self) -> None:
        """Close kernel instances (here and on the workers), remove this session's resource
        locks, and close a cluster client made here (never one the user passed in)."""
        if self.closed:
            return
        self.closed = True
        self.run_everywhere(runtime.close_instances)
        self.run_everywhere(runtime.forget_resources, self.token)
        if self.distributed is not None and self._owns_distributed:
            self.distributed.close()

    def __repr__(self) -> str:
        return "local threads" if self.distributed is None else repr(self.distributed)
