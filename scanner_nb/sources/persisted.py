"""``PersistedSource``: partitions already computed by ``Stream.persist()``, read back as input."""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np

from ..types import Batch, concat_batches
from .base import Source

__all__ = ["PersistedSource"]


def _take(stream: int, rows: np.ndarray, pieces: list) -> Batch:
    """Rows of persisted partitions: ``pieces`` are ``[batch, positions]``."""
    out = concat_batches([batch.take(positions) for batch, positions in pieces])
    return Batch(stream, rows, out.elements, out.nulls, out.type_name)


class PersistedSource(Source):
    """One stream of a persisted Stream: its partitions' keys (held in memory or on the
    cluster's workers), their rows, and the graph that holds them.

    Parameters
    ----------
    type_name : str
    length : int
        Rows of the stream.
    keys : list
        The persisted partitions' keys.
    parts : list of numpy.ndarray
        Rows of each partition.
    graph : dict
        Key -> persisted value (or future).
    """

    label = "persisted"

    def __init__(self, type_name: str, length: int, keys: list, parts: list[np.ndarray],
                 graph: dict):
        self.type_name, self.length, self.keys, self.parts, self.graph = (
            type_name, length, list(keys), list(parts), graph)
        digest = hashlib.blake2b(repr(self.keys).encode(), digest_size=16)
        self.token = f"persisted-{digest.hexdigest()}"
        self._starts = np.array([p[0] for p in self.parts], dtype=np.int64)

    def __len__(self) -> int:
        return self.length

    def partition(self, rows, partition_size):
        where = np.searchsorted(self._starts, rows, side="right") - 1
        return [rows[where == q] for q in np.unique(where).tolist()]

    def layers(self) -> dict[str, dict]:
        return {self.token: {k: self.graph[k] for k in self.keys}}

    def read_task(self, stream: int, rows: np.ndarray, shared: Any, out=None,
                  after=None) -> tuple:
        where = np.searchsorted(self._starts, rows, side="right") - 1
        pieces = [[self.keys[q], np.searchsorted(self.parts[q], rows[where == q])]
                  for q in np.unique(where).tolist()]
        return (_take, stream, rows, pieces)

    def read(self, rows: np.ndarray):
        from dask.local import get_sync

        graph = {**self.layers()[self.token], "read": self.read_task(0, rows, None)}
        return get_sync(graph, "read").elements
