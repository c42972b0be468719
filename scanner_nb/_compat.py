"""Optional imports with an error that says which pip extra brings them."""

from __future__ import annotations

import importlib
from types import ModuleType


def import_optional(name: str, extra: str) -> ModuleType:
    """Import ``name`` or raise an ``ImportError`` naming the extra that installs it.

    >>> import_optional("json", "none").__name__
    'json'
    """
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        raise ImportError(
            f"{name} is needed for this feature: pip install 'scanner_nb[{extra}]' ({exc})"
        ) from exc
