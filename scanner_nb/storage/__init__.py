"""Stored (named) streams: one folder per stream under a database folder at any fsspec URL.

One concept a module: :mod:`.fs` (fsspec primitives, atomic writes), :mod:`.codecs` (video,
Zarr and element chunks), :mod:`.manifest` (what a manifest says, checked and signed),
:mod:`.commit` (staging, the run commit, sweeping old versions) and :mod:`.db` (the
``Database`` and reading). ``NamedStream`` and ``NamedVideoStream`` are importable from here,
as in Scanner (``from scanner_nb.storage import NamedStream``).
"""

from __future__ import annotations

from ..names import default_db_path, validate_name
from .codecs import DEFAULT_CRF, video_options
from .commit import StreamWriter
from .db import Database

__all__ = [
    "DEFAULT_CRF",
    "Database",
    "NamedStream",
    "NamedVideoStream",
    "StreamWriter",
    "default_db_path",
    "validate_name",
    "video_options",
]


def __getattr__(name: str):
    if name in ("NamedStream", "NamedVideoStream"):  # sources sit above storage: import late
        from .. import sources

        return getattr(sources, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
