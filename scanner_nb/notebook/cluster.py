"""A notebook's own ``LocalCluster`` that survives the kernel's interrupt button.

Jupyter interrupts a kernel by sending ``SIGINT`` to the kernel's whole *process group*
(jupyter_client's local provisioner uses ``killpg``). The worker processes a ``LocalCluster``
starts from the notebook are in that group, so the interrupt raises ``KeyboardInterrupt`` in
them too and they die; the scheduler is then left with no workers and the next compute waits
(scanner_nb's compute stops such a wait with a ``ScannerError`` after a few seconds).
``distributed`` has no option to start workers in their own group, so
:class:`KeepWorkersOnInterrupt`, a worker plugin, moves each worker process into a process
group of its own when it starts (and again in every worker the nanny restarts). An interrupt
then stops only the kernel's wait; scanner_nb cancels the interrupted compute's tasks, and the
workers stay ready for the next one. The nanny still stops its workers when the cluster closes.
"""

from __future__ import annotations

import os
from typing import Any

from distributed.diagnostics.plugin import WorkerPlugin

__all__ = ["KeepWorkersOnInterrupt", "keep_workers_on_interrupt"]


class KeepWorkersOnInterrupt(WorkerPlugin):
    """A worker plugin that puts each worker process in a process group of its own.

    Only for workers on the notebook's own machine (a ``LocalCluster``): a worker started from
    a terminal would no longer stop on that terminal's Ctrl-C.
    """

    name = "scanner-nb-keep-workers-on-interrupt"

    def setup(self, worker: Any) -> None:
        if hasattr(os, "setpgid") and os.getpid() != os.getpgrp():
            os.setpgid(0, 0)


def keep_workers_on_interrupt(cluster: Any) -> Any:
    """Keep ``cluster``'s workers alive when the notebook's kernel is interrupted.

    Parameters
    ----------
    cluster : distributed.LocalCluster or distributed.Client
        A cluster started by this notebook (its workers are this kernel's children).

    Returns
    -------
    The ``cluster`` given, so the call can wrap the constructor.

    Examples
    --------
    >>> import distributed                                                 # doctest: +SKIP
    >>> cluster = keep_workers_on_interrupt(                               # doctest: +SKIP
    ...     distributed.LocalCluster(n_workers=2, threads_per_worker=1))
    """
    import distributed

    if isinstance(cluster, distributed.Client):
        cluster.register_plugin(KeepWorkersOnInterrupt(), name=KeepWorkersOnInterrupt.name)
        return cluster
    with distributed.Client(cluster, set_as_default=False) as client:
        client.register_plugin(KeepWorkersOnInterrupt(), name=KeepWorkersOnInterrupt.name)
    return cluster
