"""scanner_nb: Scanner's video-processing model in pure Python on Dask, made for notebooks.

``import scanner_nb as sp``; see the README and the notebooks for a tour. This module holds
the public names only (API.md); it imports nothing optional (no PyAV, CuPy, ipywidgets or
matplotlib at import time).
"""

from . import types
from .client import Client
from .devices import DeviceType
from .errors import (
    DeviceUnavailableError,
    InputFileNotFoundError,
    InvalidNameError,
    KernelError,
    OpNotFoundError,
    RowIndexError,
    ScannerError,
    ScannerException,
    ScannerTypeError,
    ScannerValueError,
    StorageError,
    StreamExistsError,
    StreamNotFoundError,
    VideoError,
    VideoNotFoundError,
)
from .kernel import Kernel, KernelConfig, register_python_op
from .run import CacheMode, PerfParams
from .sources import FilesStream, ImagesStream, MemoryStream, NamedStream, NamedVideoStream
from .stream import Stream, preview
from .streamops import SliceList
from .types import FrameType, NullElement

__version__ = "0.1.0"

__all__ = [
    "Client",
    "DeviceType",
    "DeviceUnavailableError",
    "FilesStream",
    "FrameType",
    "ImagesStream",
    "InputFileNotFoundError",
    "InvalidNameError",
    "Kernel",
    "KernelConfig",
    "KernelError",
    "MemoryStream",
    "NamedStream",
    "NamedVideoStream",
    "NullElement",
    "OpNotFoundError",
    "PerfParams",
    "CacheMode",
    "RowIndexError",
    "ScannerError",
    "ScannerException",
    "ScannerTypeError",
    "ScannerValueError",
    "SliceList",
    "StorageError",
    "Stream",
    "StreamExistsError",
    "StreamNotFoundError",
    "VideoError",
    "VideoNotFoundError",
    "preview",
    "register_python_op",
    "types",
]
