"""The logical plan and its row analysis (pure Python and numpy; no Dask here).

A plan is a DAG of nodes, one per call: a :class:`SourceNode` per ``sc.io.Input``, an
:class:`OpNode` per op call and a :class:`SampleNode` per stream operation. Every node maps an
output row to the input rows it needs; :func:`analyze` walks the plan backwards from the rows
asked for and then splits each node's rows into partitions, forwards from the sources.

This module is the ONE place that decides which input rows feed which output row: stencil
windows clamped to each stream's (or slice's) ends, bounded-state warm-up and its resets, the
rows an unbounded-state chain runs, null propagation and slice edges. An op partition's
:class:`Window` says all of it; the runtime only follows it.

>>> import numpy as np
>>> from scanner_nb.sources.memory import ListSource
>>> src = SourceNode([ListSource(list(range(10)))])
>>> stride = SampleNode(Ref(src), "Stride", "[3]", [(0, np.arange(0, 10, 3))])
>>> plan = analyze([(Ref(stride), {0: np.arange(4)})], partition_size=2)
>>> plan[src].streams[0].rows.tolist()
[0, 3, 6, 9]
"""

from __future__ import annotations

import marshal
import types as pytypes
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import xxhash
from dask.base import tokenize

from .sources.base import DEFAULT_ROWS, FRAME_PARTITION_BYTES, Source
from .types import StreamType, lookup_type

__all__ = [
    "FRAME_PARTITION_BYTES",
    "Node",
    "NodePlan",
    "OpNode",
    "Ref",
    "SampleNode",
    "Source",
    "SourceNode",
    "StreamPlan",
    "Window",
    "analyze",
    "code_token",
    "topological",
]


def code_token(target: Any) -> str:
    """A hash of an op's code: its name and the bytecode, constants and names of its function
    or of every method of its class (not file names or line numbers, so re-running an
    unchanged notebook cell gives the same token, while a changed body gives another).

    >>> def f(x): return x + 1
    >>> def g(x): return x + 2
    >>> code_token(f) == code_token(f), code_token(f) == code_token(g)
    (True, False)
    """
    digest = xxhash.xxh3_128()
    digest.update(f"{getattr(target, '__module__', '')}.{target.__qualname__}".encode())
    if isinstance(target, type):
        functions = [(name, value) for cls in reversed(target.__mro__)
                     if cls.__module__ not in ("builtins", "scanner_nb.kernel")
                     for name, value in sorted(vars(cls).items())]
    else:
        functions = [("", target)]
    for name, value in functions:
        value = getattr(value, "__func__", value)  # staticmethod, classmethod
        code = getattr(value, "__code__", None)
        if code is not None:
            digest.update(name.encode())
            _hash_code(digest, code)
            digest.update(repr(getattr(value, "__defaults__", None)).encode())
    return digest.hexdigest()


def _hash_code(digest, code: pytypes.CodeType) -> None:
    digest.update(code.co_code)
    digest.update(repr((code.co_names, code.co_varnames)).encode())
    for const in code.co_consts:
        if isinstance(const, pytypes.CodeType):
            _hash_code(digest, const)
        else:
            try:
                digest.update(marshal.dumps(const))
            except ValueError:
                digest.update(repr(const).encode())


def _digest(*parts: Any) -> str:
    digest = xxhash.xxh3_128()
    for part in parts:
        if isinstance(part, np.ndarray):
            digest.update(np.ascontiguousarray(part).tobytes())
        else:
            digest.update(str(part).encode())
        digest.update(b"|")
    return digest.hexdigest()


@dataclass(frozen=True)
class Ref:
    """An output of a node: the node and which of its outputs (multi-output ops have several)."""

    node: Node
    output: int = 0

    @property
    def type(self) -> StreamType:
        return self.node.types[self.output]


class Node:
    """A node of the logical plan.

    ``token`` identifies what the node computes (its kind, arguments, code and inputs), so the
    same pipeline over the same inputs gets the same graph keys in any cell or process.
    """

    kind = "node"

    def __init__(self, inputs: Sequence[Ref], lengths: Sequence[int], types: Sequence[StreamType],
                 label: str, slices: tuple | None = None, n_parents: int | None = None):
        self.inputs = tuple(inputs)
        self.lengths = tuple(int(n) for n in lengths)
        self.types = tuple(types)
        self.label = label
        self.slices = slices  # per stream (parent stream, slice index) after a Slice
        self.n_parents = n_parents  # streams before the Slice (some may have no slice)
        self._token: str | None = None

    @property
    def token(self) -> str:
        if self._token is None:
            self._token = _digest(self.kind, self.label, self._identity(), self.lengths,
                                  self.slices, *(f"{r.node.token}:{r.output}" for r in self.inputs))
        return self._token

    def _identity(self) -> str:
        return ""

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
        super().__init__([], [len(s) for s in sources], [lookup_type(min(types))],
                         "Input")
        self.sources = tuple(sources)

    def _identity(self) -> str:
        return _digest(*(s.token for s in self.sources))


class OpNode(Node):
    """An op call: ``spec`` with its init args, per-stream config args and chosen device."""

    kind = "op"

    def __init__(self, spec, inputs: Sequence[Ref], init_args: dict, config_args: dict,
                 device, slices=None):
        parent = inputs[0].node
        super().__init__(inputs, parent.lengths, spec.outputs, spec.name,
                         slices if slices is not None else parent.slices, parent.n_parents)
        self.spec = spec
        self.init_args = dict(init_args)
        self.config_args = dict(config_args)  # name -> list with one value per stream
        self.device = device

    def _identity(self) -> str:
        spec = self.spec
        code = code_token(spec.function if spec.function is not None else spec.kernel_cls)
        return _digest(code, spec.properties, spec.output_layout, self.device.value,
                       tokenize(self.init_args), self.config_token)

    @property
    def config_token(self) -> str:
        """Identity of the per-stream config args: instances given others re-run new_stream."""
        if "_config_token" not in self.__dict__:
            self._config_token = tokenize(self.config_args)
        return self._config_token

    def window(self, rows: np.ndarray, length: int) -> np.ndarray:
        """Input rows the outputs at sorted ``rows`` need, sorted unique: the rows themselves
        (null checks), stencil windows clamped to the stream's ends, and warm-up rows."""
        spec = self.spec
        if not len(rows):
            return rows
        feed = self.feed(rows)
        if spec.stencil is None:
            return feed
        offsets = np.asarray(spec.stencil, dtype=np.int64)
        window = np.clip(feed[:, None] + offsets[None, :], 0, length - 1)
        return np.union1d(window.ravel(), feed)

    def feed(self, rows: np.ndarray) -> np.ndarray:
        """The rows an instance is fed for output ``rows``: each after its warm-up rows."""
        k = self.spec.bounded_state
        if k is None or k == 0 or not len(rows):
            return rows
        warm = (rows[:, None] - np.arange(k + 1)[None, :]).ravel()
        return np.unique(warm[warm >= 0])


class SampleNode(Node):
    """A stream operation: each output row is one input row (or null).

    ``mapping`` has one entry per output stream: ``(in_stream, in_rows)`` where ``in_stream``
    is an int or an array (one per row, for ``Unslice``) and ``in_rows`` holds ``-1`` for nulls.
    """

    kind = "sample"

    def __init__(self, source: Ref, label: str, args: str, mapping: Sequence[tuple],
                 slices=None, keep_slices: bool = True, n_parents: int | None = None):
        lengths = [len(rows) for _, rows in mapping]
        parent = source.node
        inherited = (parent.slices, parent.n_parents) if keep_slices else (None, None)
        super().__init__([source], lengths, [source.type], label,
                         slices if slices is not None else inherited[0],
                         n_parents if slices is not None else inherited[1])
        self.args = args
        self.mapping = [(s if np.ndim(s) == 0 else np.asarray(s, dtype=np.int64),
                         np.asarray(rows, dtype=np.int64)) for s, rows in mapping]

    def _identity(self) -> str:
        digest = xxhash.xxh3_128()
        for s, rows in self.mapping:
            digest.update(np.asarray(s, dtype=np.int64).tobytes())
            digest.update(rows.tobytes())
            digest.update(b"|")
        return digest.hexdigest()


@dataclass
class Piece:
    """Rows a task takes from one input partition: ``(stream, partition, positions)``.

    ``positions`` is ``None`` when the whole partition is taken in order.
    """

    stream: int
    part: int
    positions: np.ndarray | None


@dataclass(frozen=True)
class Window:
    """What one op task feeds its kernel, decided by the plan alone.

    Attributes
    ----------
    rows : numpy.ndarray
        The input rows the task's pieces join into (every input of the op the same), sorted.
        The runtime checks its joined inputs hold exactly these and fails loudly otherwise.
    feed : numpy.ndarray
        Positions (into ``rows``) of the rows the kernel runs at, in order: warm-up included.
    taps : numpy.ndarray or None
        Stencil ops: ``(len(feed), len(stencil))`` positions of each fed row's window, clamped
        to the stream's (or slice's) ends.
    keep : numpy.ndarray or None
        Mask over ``feed`` of the rows that are outputs (``None``: all).
    restart : numpy.ndarray or None
        Mask over ``feed``: call ``reset()`` before this row (bounded state).
    plain : bool
        One input, no stencil, batch or state, the output rows are the input rows.
    """

    rows: np.ndarray
    feed: np.ndarray
    taps: np.ndarray | None = None
    keep: np.ndarray | None = None
    restart: np.ndarray | None = None
    plain: bool = False


def op_window(node: OpNode, out_rows: np.ndarray, length: int) -> Window:
    """The :class:`Window` of an op partition computing ``out_rows`` of a stream of ``length``."""
    spec = node.spec
    rows = node.window(out_rows, length)
    fed = node.feed(out_rows)
    feed = np.arange(len(rows)) if fed is rows else np.searchsorted(rows, fed)
    taps = keep = restart = None
    if spec.stencil is not None:
        offsets = np.asarray(spec.stencil, dtype=np.int64)
        taps = np.searchsorted(rows, np.clip(fed[:, None] + offsets[None, :], 0, length - 1))
    if spec.bounded_state is not None:
        keep = np.isin(fed, out_rows)
        restart = np.ones(len(fed), bool)
        restart[1:] = np.diff(fed) != 1
    plain = (len(node.inputs) == 1 and spec.stencil is None and not spec.batched
             and spec.bounded_state is None and len(spec.outputs) == 1)
    return Window(rows, feed, taps, keep, restart, plain)


@dataclass
class StreamPlan:
    """One stream of one node: its needed rows, their partitions and each partition's inputs."""

    rows: np.ndarray
    parts: list[np.ndarray] = field(default_factory=list)
    starts: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    pieces: list[list[list[Piece]]] = field(default_factory=list)  # part -> input -> pieces
    orders: list[np.ndarray] = field(default_factory=list)  # sample nodes: part -> order
    windows: list[Window] = field(default_factory=list)  # op nodes: part -> window

    def locate(self, rows: np.ndarray) -> np.ndarray:
        """The partition holding each of ``rows``."""
        return np.searchsorted(self.starts, rows, side="right") - 1


@dataclass
class NodePlan:
    """The analysis of one node: a :class:`StreamPlan` per stream that has needed rows.

    ``shared`` (op nodes): whether a partition this op reads is read by another task too
    (another op, a neighbour's stencil, an overlapping range, the result), followed through
    stream operations that pass elements on; the op then hands its kernel a copy where its
    input would be that partition's own array, so a kernel writing into its input changes
    nothing anybody else sees.
    """

    node: Node
    streams: dict[int, StreamPlan]
    shared: bool = False


def topological(roots: Sequence[Node]) -> list[Node]:
    """The nodes ``roots`` depend on (themselves included), inputs first."""
    order, seen, stack = [], set(), [(root, False) for root in reversed(list(roots))]
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


def analyze(requests: Sequence[tuple[Ref, dict[int, np.ndarray]]],
            partition_size: int | None) -> dict[Node, NodePlan]:
    """Row analysis: the rows, partitions and partition inputs of every node the requests need.

    Parameters
    ----------
    requests : list of (Ref, dict)
        Each output asked for, with its stream index -> sorted unique rows. Several requests
        are analysed together: a node two of them need is planned once, for the union of rows.
    partition_size : int or None
        Rows per partition (``None``: each source's default).
    """
    order = topological([ref.node for ref, _ in requests])
    needs: dict[int, dict[int, list[np.ndarray]]] = {id(n): {} for n in order}
    for ref, requested in requests:
        for s, rows in requested.items():
            needs[id(ref.node)].setdefault(s, []).append(np.asarray(rows, dtype=np.int64))
    needed: dict[int, dict[int, np.ndarray]] = {}
    for node in reversed(order):
        mine = {s: _union(parts) for s, parts in needs[id(node)].items()}
        if isinstance(node, OpNode) and node.spec.unbounded_state:
            # one instance runs each stream from its first row, each partition its own rows
            mine = {s: np.arange(int(r[-1]) + 1, dtype=np.int64) if len(r) else r
                    for s, r in mine.items()}
        needed[id(node)] = mine
        for s, rows in mine.items():
            _push_needs(node, s, rows, needs)
    plans: dict[Node, NodePlan] = {}
    for node in order:
        streams = {}
        size = partition_size
        if isinstance(node, SampleNode) and size is None:  # once per node: linear in streams
            size = max((len(p) for plan in plans[node.inputs[0].node].streams.values()
                        for p in plan.parts), default=DEFAULT_ROWS)
        for s, rows in needed[id(node)].items():
            if not len(rows):
                continue
            if isinstance(node, SourceNode):
                parts = node.sources[s].partition(rows, partition_size)
                streams[s] = _stream_plan(rows, [p for p in parts if len(p)])
            elif isinstance(node, OpNode):
                streams[s] = _plan_op(node, s, rows, plans)
            else:
                streams[s] = _plan_sample(node, s, rows, plans, size)
        plans[node] = NodePlan(node, streams)
    _mark_shared(order, plans, [ref for ref, _ in requests])
    return plans


def _mark_shared(order: list[Node], plans: dict[Node, NodePlan], roots: list[Ref]) -> None:
    """Set ``NodePlan.shared`` on each op whose input partitions reach another task too.

    A partition is followed through stream operations (which pass its elements on) to the
    partition that holds them; it is shared when more than one task reads it: two ops, two
    tasks of one op (a stencil's neighbours, overlapping ``Ranges`` or slices), or an op and
    the result asked for.
    """
    held: dict[tuple, list[tuple]] = {}

    def holders(ref: Ref, stream: int, part: int) -> list[tuple]:
        key = (id(ref.node), ref.output, stream, part)
        if key not in held:
            node = ref.node
            held[key] = ([h for piece in plans[node].streams[stream].pieces[part][0]
                          for h in holders(node.inputs[0], piece.stream, piece.part)]
                         if isinstance(node, SampleNode) else [key])
        return held[key]

    reads: dict[tuple, int] = {}
    read_by: dict[Node, set] = {}
    for node in order:
        if not isinstance(node, OpNode):
            continue
        mine = read_by.setdefault(node, set())
        for sp in plans[node].streams.values():
            for task in sp.pieces:
                for ref, input_pieces in zip(node.inputs, task):
                    for piece in input_pieces:
                        for h in holders(ref, piece.stream, piece.part):
                            reads[h] = reads.get(h, 0) + 1
                            mine.add(h)
    for root in roots:
        for s, sp in plans[root.node].streams.items():
            for p in range(len(sp.parts)):
                for h in holders(root, s, p):
                    reads[h] = reads.get(h, 0) + 1
    for node, mine in read_by.items():
        plans[node].shared = any(reads[h] > 1 for h in mine)


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


def pieces_for(plan: StreamPlan, stream: int, rows: np.ndarray) -> list[Piece]:
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
        window = op_window(node, part, length)
        plan.windows.append(window)
        plan.pieces.append([pieces_for(plans[ref.node].streams[s], s, window.rows)
                            for ref in node.inputs])
    return plan


def _plan_sample(node: SampleNode, t: int, rows: np.ndarray, plans, size: int) -> StreamPlan:
    in_stream, in_rows = node.mapping[t]
    source = plans[node.inputs[0].node].streams
    taken = in_rows[rows]
    streams = np.full(len(rows), int(in_stream)) if np.ndim(in_stream) == 0 else in_stream[rows]
    valid = taken >= 0
    keys = _part_keys(streams, taken, valid, source)
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
            for piece in pieces_for(source[u], u, wanted):
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
