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
    """``sc.ops.X`` where no op ``X`` is registered (``hasattr`` still works; the message names
    the module to import when a built-in op has that name)."""


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
    frames : list of (filename, lineno, function)
        Where the kernel raised: the cause's traceback without scanner_nb's own frames. Plain
        values, so they cross processes; the source lines are looked up where the error is
        shown (a notebook's cells are found there, not on a worker).

    The kernel's own exception is chained as ``__cause__``, also across processes. In IPython
    the error shows as the kernel's frames and one line naming op, stream and row;
    ``%xmode Verbose`` or :meth:`full_traceback` give the whole chain.
    """

    def __init__(self, op: str, stream: int, row: int, cause: BaseException | None = None,
                 frames: list | None = None):
        self.op, self.stream, self.row = op, stream, row
        detail = f": {type(cause).__name__}: {cause}" if cause is not None else ""
        super().__init__(f"op {op!r} failed on stream {stream}, row {row}{detail}")
        self.__cause__ = cause
        self.frames = frames if frames is not None else _kernel_frames(cause)

    def __reduce__(self):
        return (type(self), (self.op, self.stream, self.row, self.__cause__, self.frames))

    def full_traceback(self) -> str:
        """The whole chain as text: the kernel's frames, the cause, and this error."""
        import traceback

        return self._lost_frames() + "".join(traceback.format_exception(self))

    def _lost_frames(self) -> str:
        """The kernel's frames when the cause lost its traceback (it crossed processes)."""
        cause = self.__cause__
        return _format_frames(self.frames) if cause is None or cause.__traceback__ is None else ""

    def _render_traceback_(self) -> list[str]:
        """IPython's short form: the kernel's frames, then one line naming op, stream, row."""
        try:
            from IPython import get_ipython

            shell = get_ipython()
        except ImportError:
            shell = None
        if shell is not None and getattr(shell.InteractiveTB, "mode", "") == "Verbose":
            return [self._lost_frames(),
                    *shell.InteractiveTB.structured_traceback(type(self), self,
                                                              self.__traceback__)]
        lines = _format_frames(self.frames).rstrip("\n").split("\n") if self.frames else []
        return [*lines, f"\x1b[1;31m{type(self).__name__}\x1b[0m: {self}",
                "(the whole chain: %xmode Verbose, or the error's .full_traceback())"]


def _kernel_frames(cause: BaseException | None) -> list:
    """(filename, lineno, name) of the cause's frames after scanner_nb's own."""
    import os
    import traceback

    if cause is None or cause.__traceback__ is None:
        return []
    here = os.path.dirname(os.path.abspath(__file__))
    frames = [(f.filename, f.lineno, f.name) for f in traceback.extract_tb(cause.__traceback__)]
    while frames and os.path.abspath(frames[0][0]).startswith(here + os.sep):
        frames.pop(0)
    return frames


def _format_frames(frames: list) -> str:
    """Frames as Python prints them, source lines read here (where notebook cells are known)."""
    import linecache

    out = []
    for filename, lineno, name in frames:
        out.append(f'  File "{filename}", line {lineno}, in {name}\n')
        line = linecache.getline(filename, lineno).strip() if lineno else ""
        if line:
            out.append(f"    {line}\n")
    return ("Traceback of the kernel (most recent call last):\n" + "".join(out)) if out else ""
