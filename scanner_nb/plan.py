"""The logical plan and its row analysis (pure Python and numpy; no Dask here).

A plan is a DAG of nodes, one per call: a :class:`SourceNode` per ``sc.io.Input``, an
:class:`OpNode` per op call and a :class:`SampleNode` per stream operation. Every node maps an
output row to the input rows it needs; :func:`analyze` walks the plan backwards from the rows
asked for and then splits each node's rows into partitions, forwards from the sources:

>>> import numpy as np
>>> from scanner_nb.types import lookup_type
>>> src = SourceNode([ListSource(list(range(10)))])
>>> stride = SampleNode(Ref(src), "Stride", "[3]", [(0, np.arange(0, 10, 3))])
>>> plan = analyze(Ref(stride), {0: np.arange(4)}, partition_size=2)
>>> plan[src].streams[0].rows.tolist()
[0, 3, 6, 9]
"""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass, field
from typing import Protocol, Sequence

import numpy as np

from .types import Batch, StreamType, lookup_type

__all__ = ["Source", "ListSource", "Ref", "Node", "SourceNode", "OpNode", "SampleNode",
           "StreamPlan", "NodePlan", "analyze", "memory_partitions"]


class Source(Protocol):
    """One input stream: what a :class:`SourceNode` reads from (memory, video, storage)."""

    type_name: str
    label: str
    token: str

    def __len__(self) -> int: ...

    def partition(self, rows: np.ndarray, partition_size: int | None) -> list[np.ndarray]:
        """Split sorted needed rows into partitions (a video aligns them to keyframes)."""

    def read(self, rows: np.ndarray) -> list | np.ndarray:
        """The elements at sorted ``rows``; runs where the task runs."""


#: Rows per partition when neither the client nor a source says otherwise: frames are sized
#: to about 64 MiB a partition, other elements to 4,096 rows (see README, "Partitions").
DEFAULT_ROWS = 4096
MIN_ROWS = 64
FRAME_PARTITION_BYTES = 64 << 20


def default_rows(n: int) -> int:
    """Rows per partition when nobody chose: enough partitions to keep every core busy
    (four per core), at least 64 rows each and at most :data:`DEFAULT_ROWS`.

    >>> default_rows(200_000), default_rows(100)
    (4096, 64)
    """
    per_core = -(-n // (4 * (os.cpu_count() or 1)))
    return int(min(DEFAULT_ROWS, max(MIN_ROWS, per_core)))


def memory_partitions(rows: np.ndarray, partition_size: int) -> list[np.ndarray]:
    """Consecutive groups of ``partition_size`` needed rows.

    >>> [p.tolist() for p in memory_partitions(np.arange(5), 2)]
    [[0, 1], [2, 3], [4]]
    """
    return [rows[i:i + partition_size] for i in range(0, len(rows), partition_size)]


class Payload:
    """Elements carried inside a task; an opaque box, so Dask does not walk through them."""

    __slots__ = ("value",)

    def __init__(self, value):
        self.value = value

    def __reduce__(self):
        return (Payload, (self.value,))


def _batch_of(stream: int, rows: np.ndarray, payload: Payload, type_name: str) -> Batch:
    return Batch(stream, rows, payload.value, None, type_name)


class ListSource:
    """In-memory elements (``sp.MemoryStream`` and the doctests use it)."""

    def __init__(self, elements: Sequence, type_name: str = "Any", label: str = "MemoryStream"):
        self.elements = elements
        self.type_name = type_name
        self.label = label
        self.token = uuid.uuid4().hex

    def __len__(self) -> int:
        return len(self.elements)

    def partition(self, rows, partition_size):
        if partition_size is None:
            partition_size = default_rows(len(rows))
            if self.type_name == "FrameType" and len(self.elements):
                frame_bytes = max(1, int(getattr(self.elements[0], "nbytes", 1)))
                partition_size = max(1, min(partition_size, FRAME_PARTITION_BYTES // frame_bytes))
        return memory_partitions(rows, partition_size)

    def task(self, stream: int, rows: np.ndarray) -> tuple:
        """The read task with the partition's elements inside it, so a cluster ships only those."""
        return (_batch_of, stream, rows, Payload(self.read(rows)), self.type_name)

    def read(self, rows):
        elements = self.elements
        consecutive = len(rows) and rows[-1] - rows[0] + 1 == len(rows)
        if isinstance(elements, np.ndarray):  # consecutive rows: a view, no copy
            return elements[int(rows[0]):int(rows[-1]) + 1] if consecutive else elements[rows]
        if consecutive:
            return list(elements[int(rows[0]):int(rows[-1]) + 1])
        return [elements[r] for r in rows.tolist()]


@dataclass(frozen=True)
class Ref:
    """An output of a node: the node and which of its outputs (multi-output ops have several)."""

    node: Node
    output: int = 0

    @property
    def type(self) -> StreamType:
        return self.node.types[self.output]


class Node:
    """A node of the logical plan."""

    kind = "node"

    def __init__(self, inputs: Sequence[Ref], lengths: Sequence[int], types: Sequence[StreamType],
                 label: str, slices: tuple | None = None):
        self.inputs = tuple(inputs)
        self.lengths = tuple(int(n) for n in lengths)
        self.types = tuple(types)
        self.label = label
        self.slices = slices  # per stream (parent stream, slice index) after a Slice
        self.token = uuid.uuid4().hex

    @property
    def n_streams(self) -> int:
        return len(self.lengths)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.label} streams={list(self.lengths)}>"


class SourceNode(Node):
    """``sc.io.Input([...])``: one source per stream."""

    kind = "source"

    def __init__(self, sources: Sequence[Source]):
        types = {s.type_name for s in sources}
        super().__init__([], [len(s) for s in sources], [lookup_type(sorted(types)[0])],
                         "Input")
        self.sources = tuple(sources)


class OpNode(Node):
    """An op call: ``spec`` with its init args, per-stream config args and chosen device."""

    kind = "op"

    def __init__(self, spec, inputs: Sequence[Ref], init_args: dict, config_args: dict,
                 device, slices=None):
        super().__init__(inputs, inputs[0].node.lengths, spec.outputs, spec.name,
                         slices if slices is not None else inputs[0].node.slices)
        self.spec = spec
        self.init_args = dict(init_args)
        self.config_args = dict(config_args)  # name -> list with one value per stream
        self.device = device
        self.config_token = uuid.uuid4().hex  # instances re-run new_stream for other args

    def window(self, rows: np.ndarray, length: int) -> np.ndarray:
        """Input rows the outputs at sorted ``rows`` need (stencil, warm-up), sorted unique."""
        spec = self.spec
        if not len(rows):
            return rows
        if spec.unbounded_state:
            return np.arange(int(rows[-1]) + 1, dtype=np.int64)
        if spec.bounded_state:
            warm = (rows[:, None] - np.arange(spec.bounded_state + 1)[None, :]).ravel()
            rows = np.unique(warm[warm >= 0])
        if spec.stencil is not None:
            offsets = np.asarray(spec.stencil, dtype=np.int64)
            rows = np.unique(np.clip(rows[:, None] + offsets[None, :], 0, length - 1))
        return rows


class SampleNode(Node):
    """A stream operation: each output row is one input row (or null).

    ``mapping`` has one entry per output stream: ``(in_stream, in_rows)`` where ``in_stream``
    is an int or an array (one per row, for ``Unslice``) and ``in_rows`` holds ``-1`` for nulls.
    """

    kind = "sample"

    def __init__(self, source: Ref, label: str, args: str, mapping: Sequence[tuple],
                 slices=None, keep_slices: bool = True):
        lengths = [len(rows) for _, rows in mapping]
        inherited = source.node.slices if keep_slices else None
        super().__init__([source], lengths, [source.type], label,
                         slices if slices is not None else inherited)
        self.args = args
        self.mapping = [(s if np.ndim(s) == 0 else np.asarray(s, dtype=np.int64),
                         np.asarray(rows, dtype=np.int64)) for s, rows in mapping]


@dataclass
class Piece:
    """Rows a task takes from one input partition: ``(stream, partition, positions)``.

    ``positions`` is ``None`` when the whole partition is taken in order.
    """

    stream: int
    part: int
    positions: np.ndarray | None


@dataclass
class StreamPlan:
    """One stream of one node: its needed rows, their partitions and each partition's inputs."""

    rows: np.ndarray
    parts: list[np.ndarray] = field(default_factory=list)
    starts: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    pieces: list[list[list[Piece]]] = field(default_factory=list)  # part -> input -> pieces
    orders: list[np.ndarray] = field(default_factory=list)  # sample nodes: part -> order

    def locate(self, rows: np.ndarray) -> np.ndarray:
        """The partition holding each of ``rows``."""
        return np.searchsorted(self.starts, rows, side="right") - 1


@dataclass
class NodePlan:
    """The analysis of one node: a :class:`StreamPlan` per stream that has needed rows."""

    node: Node
    streams: dict[int, StreamPlan]


def _topological(root: Node) -> list[Node]:
    order, seen, stack = [], set(), [(root, False)]
    while stack:
        node, done = stack.pop()
        if done:
            order.append(node)
            continue
        if id(node) in seen:
            continue
        seen.add(id(node))
        stack.append((node, True))
        stack.extend((ref.node, False) for ref in node.inputs if id(ref.node) not in seen)
    return order


def analyze(root: Ref, requested: dict[int, np.ndarray],
            partition_size: int | None) -> dict[Node, NodePlan]:
    """Row analysis: the rows, partitions and partition inputs of every node ``root`` needs.

    Parameters
    ----------
    root : Ref
        The output asked for.
    requested : dict
        Stream index -> sorted unique rows asked for.
    partition_size : int or None
        Rows per partition (``None``: each source's default).
    """
    order = _topological(root.node)
    needs: dict[int, dict[int, list[np.ndarray]]] = {id(n): {} for n in order}
    for s, rows in requested.items():
        needs[id(root.node)].setdefault(s, []).append(np.asarray(rows, dtype=np.int64))
    needed: dict[int, dict[int, np.ndarray]] = {}
    for node in reversed(order):
        mine = {s: _union(parts) for s, parts in needs[id(node)].items()}
        if isinstance(node, OpNode) and node.spec.unbounded_state:
            mine = {s: np.arange(int(r[-1]) + 1, dtype=np.int64) if len(r) else r
                    for s, r in mine.items()}
        needed[id(node)] = mine
        for s, rows in mine.items():
            _push_needs(node, s, rows, needs)
    plans: dict[Node, NodePlan] = {}
    for node in order:
        streams = {}
        for s, rows in needed[id(node)].items():
            if not len(rows):
                continue
            if isinstance(node, SourceNode):
                parts = node.sources[s].partition(rows, partition_size)
                streams[s] = _stream_plan(rows, [p for p in parts if len(p)])
            elif isinstance(node, OpNode):
                streams[s] = _plan_op(node, s, rows, plans)
            else:
                streams[s] = _plan_sample(node, s, rows, plans, partition_size)
        plans[node] = NodePlan(node, streams)
    return plans


def _union(arrays: list[np.ndarray]) -> np.ndarray:
    if len(arrays) == 1:
        rows = arrays[0]
        if len(rows) < 2 or np.all(rows[1:] > rows[:-1]):
            return rows
    return np.unique(np.concatenate(arrays)) if arrays else np.zeros(0, np.int64)


def _push_needs(node: Node, s: int, rows: np.ndarray, needs) -> None:
    if isinstance(node, OpNode):
        window = node.window(rows, node.lengths[s])
        for ref in node.inputs:
            needs[id(ref.node)].setdefault(s, []).append(window)
    elif isinstance(node, SampleNode):
        in_stream, in_rows = node.mapping[s]
        source = node.inputs[0].node
        taken = in_rows[rows]
        if np.ndim(in_stream) == 0:
            needs[id(source)].setdefault(int(in_stream), []).append(taken[taken >= 0])
        else:
            streams = in_stream[rows]
            for u in np.unique(streams[taken >= 0]).tolist():
                needs[id(source)].setdefault(u, []).append(taken[(streams == u) & (taken >= 0)])


def _stream_plan(rows: np.ndarray, parts: list[np.ndarray]) -> StreamPlan:
    starts = np.array([0] + [int(p[0]) for p in parts[1:]], dtype=np.int64)
    return StreamPlan(rows=rows, parts=parts, starts=starts)


def _pieces_for(plan: StreamPlan, stream: int, rows: np.ndarray) -> list[Piece]:
    """Pieces of ``plan``'s partitions that hold ``rows`` (sorted unique), in row order."""
    where = plan.locate(rows)
    pieces = []
    for q in np.unique(where).tolist():
        wanted = rows[where == q]
        part = plan.parts[q]
        if len(wanted) == len(part):
            pieces.append(Piece(stream, q, None))
        else:
            pieces.append(Piece(stream, q, np.searchsorted(part, wanted)))
    return pieces


def _plan_op(node: OpNode, s: int, rows: np.ndarray, plans) -> StreamPlan:
    home = plans[node.inputs[0].node].streams[s]
    where = home.locate(rows)
    cuts = np.flatnonzero(np.diff(where)) + 1
    parts = np.split(rows, cuts)
    plan = _stream_plan(rows, parts)
    length = node.lengths[s]
    for part in parts:
        window = node.window(part, length)
        plan.pieces.append([_pieces_for(plans[ref.node].streams[s], s, window)
                            for ref in node.inputs])
    return plan


def _plan_sample(node: SampleNode, t: int, rows: np.ndarray, plans,
                 partition_size: int | None) -> StreamPlan:
    in_stream, in_rows = node.mapping[t]
    source = plans[node.inputs[0].node].streams
    taken = in_rows[rows]
    streams = np.full(len(rows), int(in_stream)) if np.ndim(in_stream) == 0 else in_stream[rows]
    valid = taken >= 0
    keys = _part_keys(streams, taken, valid, source)
    size = partition_size or max((len(p) for plan in source.values() for p in plan.parts),
                                 default=DEFAULT_ROWS)
    bounds = _group_bounds(keys, size)
    parts = [rows[a:b] for a, b in bounds]
    plan = _stream_plan(rows, parts)
    for a, b in bounds:
        pieces, order = [], np.full(b - a, -1, dtype=np.int64)
        offset = 0
        seg_streams, seg_taken, seg_valid = streams[a:b], taken[a:b], valid[a:b]
        for u in np.unique(seg_streams[seg_valid]).tolist():
            sel = seg_valid & (seg_streams == u)
            wanted = np.unique(seg_taken[sel])
            for piece in _pieces_for(source[u], u, wanted):
                got = source[u].parts[piece.part]
                got = got if piece.positions is None else got[piece.positions]
                hit = sel & np.isin(seg_taken, got)
                order[hit] = offset + np.searchsorted(got, seg_taken[hit])
                offset += len(got)
                pieces.append(piece)
        plan.pieces.append([pieces])
        plan.orders.append(order)
    return plan


def _group_bounds(keys: np.ndarray, size: int) -> list[tuple[int, int]]:
    """Cut rows into groups of at most ``size``, preferring cuts where ``keys`` change.

    A group closes when it holds ``size`` rows, or when the input partition changes and it
    holds at least ``size // 8`` rows (so one output partition reads few input partitions).

    >>> _group_bounds(np.array([0, 0, 0, 1, 1, 2]), 8)
    [(0, 3), (3, 5), (5, 6)]
    >>> _group_bounds(np.zeros(5, int), 2)
    [(0, 2), (2, 4), (4, 5)]
    """
    changes = np.flatnonzero(np.diff(keys)) + 1
    bounds, start, small = [], 0, max(1, size // 8)
    for cut in [*changes.tolist(), len(keys)]:
        while cut - start > size:
            bounds.append((start, start + size))
            start += size
        if cut - start >= small or cut == len(keys):
            if cut > start:
                bounds.append((start, cut))
            start = cut
    return bounds


def _part_keys(streams, taken, valid, source) -> np.ndarray:
    """A key per output row naming the input partition it reads; nulls repeat the previous."""
    keys = np.full(len(taken), -1, dtype=np.int64)
    for u in np.unique(streams[valid]).tolist():
        sel = valid & (streams == u)
        keys[sel] = source[u].locate(taken[sel]) + (u << 32)
    idx = np.where(keys >= 0, np.arange(len(keys)), -1)
    idx = np.maximum.accumulate(idx) if len(idx) else idx
    return np.where(idx >= 0, keys[np.maximum(idx, 0)], -1)
