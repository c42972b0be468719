"""Kernels shared by the engine's tests: each test module registers them with its own options.

Subclass one and register the subclass (``@sp.register_python_op(bounded_state=3)``); a
subclass defined at module level is found by name on cluster workers.
"""

from __future__ import annotations

from typing import Any

import scanner_nb as sp


class Counting(sp.Kernel):
    """Yields how many rows it executed since its last ``reset`` (0, 1, 2, ...)."""

    def __init__(self, config):
        self.n = 0

    def reset(self):
        self.n = 0

    def execute(self, x: Any) -> Any:
        self.n += 1
        return self.n - 1


class Summing(sp.Kernel):
    """Yields the running sum of its input since its last ``reset``, from ``self.start``."""

    start = 0

    def __init__(self, config):
        self.total = 0

    def reset(self):
        self.total = self.start

    def execute(self, x: Any) -> Any:
        self.total += x
        return self.total
