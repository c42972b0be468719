"""scanner_nb's messages: ``logging.getLogger("scanner_nb")`` and its children, silent by default.

What a user may want to see, never on the normal path's every row:

=========================  ====================================================  =========
logger                     what                                                  level
=========================  ====================================================  =========
``scanner_nb.devices``     an op that lists GPU and CPU falls back to the CPU    INFO
``scanner_nb.video``       a video index read from the cache, or built anew      DEBUG
``scanner_nb.video``       a seek that landed past its keyframe, tried again     DEBUG
``scanner_nb.storage``     versions nothing reads swept (replaced, failed runs)  INFO
``scanner_nb.cluster``     a worker lost mid-run: the partitions computed again  WARNING
``scanner_nb.cluster``     unbounded-state chains run again after a lost worker  WARNING
=========================  ====================================================  =========

As a library should, scanner_nb only adds a :class:`logging.NullHandler` to its logger and sets
no level: nothing is printed until the application configures :mod:`logging`, for instance
``logging.basicConfig(level=logging.INFO)``, or :func:`enable` in a notebook. On a
``dask.distributed`` cluster the messages of tasks are logged on the workers (those of
``scanner_nb.cluster`` on the client);
``sc.distributed.forward_logging("scanner_nb", logging.INFO)`` sends them to the client too.

Examples
--------
>>> import logging
>>> handler = enable(logging.DEBUG)
>>> get_logger("video").name
'scanner_nb.video'
>>> logging.getLogger("scanner_nb").removeHandler(handler)
"""

from __future__ import annotations

import logging
from typing import IO

__all__ = ["logger", "get_logger", "enable"]

#: The library's root logger; every module logs to a child of it.
logger = logging.getLogger("scanner_nb")
logger.addHandler(logging.NullHandler())
_ENABLED: list[logging.Handler] = []  # the handler enable() added, if any


def get_logger(name: str) -> logging.Logger:
    """The child logger ``scanner_nb.<name>`` a module logs to.

    Parameters
    ----------
    name : str
        The module's short name (``"video"``, ``"storage"``, ...).

    Examples
    --------
    >>> get_logger("storage").parent is logger
    True
    """
    return logger.getChild(name)


def enable(level: int = logging.INFO, stream: IO[str] | None = None) -> logging.Handler:
    """Print scanner_nb's messages of ``level`` and above (to ``stream``, default stderr).

    A convenience for notebooks and scripts that configure no logging of their own; calling it
    again replaces the handler it added before. Returns the handler (remove it with
    ``logging.getLogger("scanner_nb").removeHandler(handler)``).

    Parameters
    ----------
    level : int
        ``logging.INFO`` (default) shows fallbacks and sweeps; ``logging.DEBUG`` adds index
        cache use and seek retries.
    stream : file-like, optional
        Where to write; default ``sys.stderr``.

    Examples
    --------
    >>> import io, logging
    >>> out = io.StringIO()
    >>> handler = enable(logging.INFO, out)
    >>> get_logger("devices").info("op %r falls back to the CPU", "Blur")
    >>> out.getvalue()
    "scanner_nb.devices INFO: op 'Blur' falls back to the CPU\\n"
    >>> logger.removeHandler(handler)
    """
    while _ENABLED:
        logger.removeHandler(_ENABLED.pop())
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(name)s %(levelname)s: %(message)s"))
    logger.addHandler(handler)
    _ENABLED.append(handler)
    logger.setLevel(level)
    return handler
