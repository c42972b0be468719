"""Names of stored streams and where the database is: the checks made before any work.

Standard library only, so naming a stream (``sp.NamedStream(sc, "x")``) costs no import of the
storage stack.
"""

from __future__ import annotations

import os
import unicodedata

from .errors import InvalidNameError

__all__ = ["validate_name", "default_db_path"]

_MAX_NAME_BYTES = 255  # one path component on common filesystems


def validate_name(name: str) -> str:
    """Return ``name`` if it can name a stored stream, else raise :class:`InvalidNameError`.

    A name is one folder under the database: not empty, no ``/`` or ``\\``, no ``..``, no
    control characters, no leading or trailing whitespace, at most 255 bytes in UTF-8, and not
    starting with ``.`` (such names are the store's own files).

    Examples
    --------
    >>> validate_name("dets")
    'dets'
    >>> validate_name("a/b")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    scanner_nb.errors.InvalidNameError: invalid stream name 'a/b': it contains '/'; ...
    """
    if not isinstance(name, str):
        raise InvalidNameError(
            f"invalid stream name {name!r}: a name must be a str, not {type(name).__name__}"
        )
    why = _name_problem(name)
    if why:
        raise InvalidNameError(f"invalid stream name {name!r}: {why}")
    return name


def _name_problem(name: str) -> str | None:
    if not name:
        return "it is empty"
    for sep in ("/", "\\"):
        if sep in name:
            fixed = name.replace(sep, "_")
            return f"it contains {sep!r}; a name is one folder, use e.g. {fixed!r}"
    if ".." in name:
        return "it contains '..'"
    bad = [c for c in name if unicodedata.category(c) == "Cc"]
    if bad:
        return f"it contains the control character {bad[0]!r}"
    if name != name.strip():
        return "it has leading or trailing whitespace"
    if name.startswith("."):
        return "names starting with '.' are reserved for the store's own files"
    try:
        size = len(name.encode("utf-8"))
    except UnicodeEncodeError:
        return "it cannot be encoded as UTF-8"
    if size > _MAX_NAME_BYTES:
        return f"it is {size} bytes long in UTF-8; the limit is {_MAX_NAME_BYTES}"
    return None


def default_db_path() -> str:
    """The default database: ``$SCANNER_NB_DB`` if set, else ``~/.scanner_nb/db``.

    Examples
    --------
    >>> import os
    >>> default_db_path() == (os.environ.get("SCANNER_NB_DB")
    ...                       or os.path.expanduser("~/.scanner_nb/db"))
    True
    """
    return os.environ.get("SCANNER_NB_DB") or os.path.join(
        os.path.expanduser("~"), ".scanner_nb", "db"
    )
