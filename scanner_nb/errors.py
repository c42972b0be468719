"""The exceptions scanner_nb raises.

Every error derives from :class:`ScannerError`; where a built-in exception fits, it derives from
that too, so ``except ValueError`` keeps working::

    ScannerError
    ├── ScannerValueError (ValueError)         wrong value or list length
    │   └── InvalidNameError                   stored stream name with "/", "..", ...
    ├── ScannerTypeError (TypeError)           wrong kind of argument, unknown keyword
    ├── OpNotFoundError (AttributeError)       ``sc.ops.X`` where no op X is registered
    ├── RowIndexError (IndexError)             a row outside a stream
    ├── KernelError                            a kernel raised: .op, .stream, .row
    ├── VideoError                             unreadable, corrupt or track-less video
    │   └── VideoNotFoundError (FileNotFoundError)
    ├── InputFileNotFoundError (FileNotFoundError)  a FilesStream / ImagesStream file is missing
    ├── DeviceUnavailableError                 a GPU-only op where no GPU is usable
    ├── StreamExistsError                      cache mode Error and the output exists
    ├── StreamNotFoundError (KeyError)         loading a stored stream that does not exist
    └── StorageError                           db_path not writable, unknown stored type

``ScannerException`` is Scanner's name for :class:`ScannerError` (the same class).
"""

from __future__ import annotations

__all__ = [
    "ScannerError",
    "ScannerValueError",
    "InvalidNameError",
    "ScannerTypeError",
    "OpNotFoundError",
    "ScannerException",
    "RowIndexError",
    "KernelError",
    "VideoError",
    "VideoNotFoundError",
    "InputFileNotFoundError",
    "DeviceUnavailableError",
    "StreamExistsError",
    "StreamNotFoundError",
    "StorageError",
]


class ScannerError(Exception):
    """Base class of every error scanner_nb raises."""


class ScannerValueError(ScannerError, ValueError):
    """A wrong value, such as a stream-config list of the wrong length."""


class InvalidNameError(ScannerValueError):
    """A stored stream name that is empty, has ``/``, ``..`` or control characters."""


class ScannerTypeError(ScannerError, TypeError):
    """A wrong kind of argument, a missing annotation or an unknown keyword."""


class OpNotFoundError(ScannerError, AttributeError):
    """``sc.ops.X`` where no op ``X`` is registered (the message names the module to import
    when a built-in op has that name)."""


ScannerException = ScannerError  # Scanner's spelling


class RowIndexError(ScannerError, IndexError):
    """A row index outside a stream."""


class VideoError(ScannerError):
    """A video that is missing, unreadable, corrupt or has no video track."""


class VideoNotFoundError(VideoError, FileNotFoundError):
    """A video file that does not exist."""


class InputFileNotFoundError(ScannerError, FileNotFoundError):
    """A file of a ``FilesStream`` or ``ImagesStream`` input that does not exist."""


class DeviceUnavailableError(ScannerError):
    """An op that can only run on a device (a GPU) that is not usable where the graph runs."""


class StreamExistsError(ScannerError):
    """An output stream exists and the cache mode is ``CacheMode.Error``."""


class StreamNotFoundError(ScannerError, KeyError):
    """A stored stream that does not exist."""

    def __str__(self) -> str:  # KeyError would show the repr of the message
        return str(self.args[0]) if self.args else ""


class StorageError(ScannerError):
    """The database cannot be written or a stored stream cannot be read back."""


class KernelError(ScannerError):
    """A kernel raised while computing.

    Attributes
    ----------
    op : str
        The op's registered name.
    stream : int
        Index of the stream (or slice) within the op's input.
    row : int
        The output row (for a batch its first row, for a stencil the output row).

    The kernel's own exception is chained as ``__cause__``, also across processes.
    """

    def __init__(self, op: str, stream: int, row: int, cause: BaseException | None = None):
        self.op, self.stream, self.row = op, stream, row
        detail = f": {type(cause).__name__}: {cause}" if cause is not None else ""
        super().__init__(f"op {op!r} failed on stream {stream}, row {row}{detail}")
        self.__cause__ = cause

    def __reduce__(self):
        return (type(self), (self.op, self.stream, self.row, self.__cause__))
