"""From a plan and the rows asked for to a Dask graph: one task per partition per node.

Each node becomes one layer, built as ``dask.bag`` builds its layers: a readable name plus a
token, a dict of tasks, then a ``HighLevelGraph``. Stencils and warm-up read the rows they need
from neighbouring partitions (overlap, as ``dask.array.map_overlap`` does), so no partition is
computed twice.
"""

from __future__ import annotations

import hashlib
import operator
from dataclasses import dataclass

import numpy as np
from dask.base import tokenize
from dask.highlevelgraph import HighLevelGraph

from . import runtime
from .plan import Node, NodePlan, OpNode, Ref, SourceNode, analyze

__all__ = ["Built", "build_graph"]


@dataclass
class Built:
    """A built graph: the graph, the root's partition keys and rows per stream."""

    graph: HighLevelGraph
    keys: dict[int, list]  # stream -> partition keys of the root output
    rows: dict[int, list[np.ndarray]]  # stream -> rows of each of those partitions
    plans: dict[Node, NodePlan]


def _layer_name(node: Node, plan: NodePlan) -> str:
    """A readable name plus a token of the node and the partitions asked of it."""
    digest = hashlib.blake2b(node.token.encode(), digest_size=16)
    for s, sp in sorted(plan.streams.items()):
        digest.update(f"|{s}:{len(sp.parts)}|".encode())
        for part in sp.parts:
            digest.update(part.tobytes())
            digest.update(b",")
    label = node.label if node.kind != "source" else "input"
    return f"{label.lower()}-{digest.hexdigest()}"


def build_graph(root: Ref, requested: dict[int, np.ndarray], partition_size: int | None,
                session: str, instance_key, work_packet: int | None = None,
                in_place: bool = False) -> Built:
    """Build the Dask graph that computes ``requested`` rows of ``root``.

    Parameters
    ----------
    root : Ref
        The output asked for.
    requested : dict
        Stream -> sorted unique rows.
    partition_size : int or None
        Rows per partition; ``None`` lets each source choose.
    session : str
        The client's token (``fetch_resources`` runs once per machine per session).
    instance_key : callable
        ``OpNode -> str``: kernel instances are shared under this key.
    work_packet : int, optional
        Most rows handed to one ``execute`` call of a batch op.
    in_place : bool
        When the root reads video frames directly, decode each stream into one preallocated
        array (each partition into its slice), so the result needs no final concatenation.
        Only for results assembled in this process (``compute`` on local threads).
    """
    plans = analyze(root, requested, partition_size)
    names: dict[Node, str] = {}
    layers: dict[str, dict] = {}
    deps: dict[str, set] = {}

    def key(ref: Ref, stream: int, part: int):
        name = names[ref.node]
        if len(ref.node.types) > 1:
            return (f"{name}-out{ref.output}", stream, part)
        return (name, stream, part)

    def pieces(ref: Ref, plan_pieces) -> list:
        return [[key(ref, p.stream, p.part), p.positions] for p in plan_pieces]

    buffers = _result_buffers(root, plans) if in_place else {}
    pieces_of: dict[tuple, tuple] = {}  # chained source pieces (see _chain_pieces)
    for node, plan in plans.items():
        name = names[node] = _layer_name(node, plan)
        tasks: dict = {}
        dependencies = {names[ref.node] for ref in node.inputs}
        for s, sp in plan.streams.items():
            for p, rows in enumerate(sp.parts):
                if isinstance(node, SourceNode) and s in buffers and node is root.node:
                    start = int(np.searchsorted(plan.streams[s].rows, rows[0]))
                    out = buffers[s][start:start + len(rows)]
                    tasks[(name, s, p)] = node.sources[s].task(s, rows, out)
                    _note_piece(pieces_of, node.sources[s], name, s, p, sp.parts, out)
                elif isinstance(node, SourceNode):
                    tasks[(name, s, p)] = _source_task(node.sources[s], s, rows)
                    _note_piece(pieces_of, node.sources[s], name, s, p, sp.parts, None)
                elif isinstance(node, OpNode):
                    _op_tasks(tasks, node, name, s, p, sp, rows, pieces, session, instance_key,
                              work_packet)
                else:
                    tasks[(name, s, p)] = (runtime.sample, s, rows, node.types[0].name,
                                           pieces(node.inputs[0], sp.pieces[p][0]), sp.orders[p])
                for out in range(len(node.types)) if len(node.types) > 1 else ():
                    tasks[(f"{name}-out{out}", s, p)] = (operator.getitem, (name, s, p), out)
        for source in getattr(node, "sources", ()):
            if hasattr(source, "graph"):  # persisted partitions: their results join the graph
                layers[f"persisted-{source.token}"] = source.graph
                deps[f"persisted-{source.token}"] = set()
                dependencies.add(f"persisted-{source.token}")
        layers[name] = tasks
        deps[name] = dependencies
    _chain_pieces(layers, pieces_of)
    root_plan = plans[root.node]
    keys, rows = {}, {}
    for s, wanted in requested.items():
        sp = root_plan.streams.get(s)
        if sp is None:
            keys[s], rows[s] = [], []
            continue
        keys[s] = [key(root, s, p) for p in range(len(sp.parts))]
        rows[s] = list(sp.parts)
        if len(sp.rows) != len(wanted):  # the root computed more (unbounded state): keep asked
            name = f"select-{tokenize(names[root.node], wanted.tobytes())}"
            layer = layers.setdefault(name, {})
            deps[name] = {names[root.node]}
            pieces_ = [[k, np.flatnonzero(np.isin(r, wanted))] for k, r in zip(keys[s], rows[s])]
            layer[(name, s, 0)] = (runtime.take_rows, pieces_)
            keys[s], rows[s] = [(name, s, 0)], [np.asarray(wanted)]
    return Built(HighLevelGraph(layers, deps), keys, rows, plans)


def _result_buffers(root: Ref, plans) -> dict[int, np.ndarray]:
    """Per stream, one array the root's video partitions decode into (see ``in_place``)."""
    if not isinstance(root.node, SourceNode):
        return {}
    buffers = {}
    for s, sp in plans[root.node].streams.items():
        shape = getattr(root.node.sources[s], "frame_shape", None)
        if shape is not None:
            buffers[s] = runtime.result_buffer((len(sp.rows), *shape))
    return buffers


def _source_task(source, stream: int, rows: np.ndarray) -> tuple:
    if hasattr(source, "task"):
        return source.task(stream, rows)
    return (runtime.read_source, source, stream, rows)


def _note_piece(pieces_of: dict, source, name: str, stream: int, part: int, parts, out) -> None:
    """Remember a partition that continues the previous one's decoder (``source.follows``)."""
    follows = getattr(source, "follows", None)
    if part and follows is not None and follows(parts[part - 1], parts[part]):
        pieces_of[(name, stream, part)] = (source, parts[part], out)


def _chain_pieces(layers: dict[str, dict], pieces_of: dict) -> None:
    """Make each piece of a long group of pictures wait for the previous piece's consumers.

    A video source cuts a long GOP into pieces that one decoder reads in order, each continuing
    where the previous one stopped. Reading piece ``k + 1`` only after the tasks that consume
    piece ``k`` (and no later piece) keeps the pieces in order, on the worker holding the
    decoder, and keeps memory to a few pieces: decoding does not run ahead of the ops. Pieces
    of different GOPs run in parallel. Without such consumers, it waits for piece ``k``.
    """
    if not pieces_of:
        return
    watched = {(n, s, p - 1) for n, s, p in pieces_of} | set(pieces_of)
    consumers: dict[tuple, list] = {}
    for tasks in layers.values():
        for key, task in tasks.items():
            used = _keys_in(task, watched)
            if not used or key in watched:
                continue
            for piece in used:
                later = any(u[0] == piece[0] and u[1] == piece[1] and u[2] > piece[2]
                            for u in used)
                if not later:
                    consumers.setdefault(piece, []).append(key)
    for (name, stream, part), (source, rows, out) in pieces_of.items():
        previous = (name, stream, part - 1)
        after = consumers.get(previous) or [previous]
        layers[name][(name, stream, part)] = source.task(stream, rows, out, after)


def _keys_in(task, keys: set) -> set:
    """Which of ``keys`` a task refers to (anywhere in its arguments)."""
    found = set()
    stack = [task]
    while stack:
        item = stack.pop()
        if isinstance(item, tuple) and len(item) == 3 and isinstance(item[0], str):
            try:
                if item in keys:
                    found.add(item)
                    continue
            except TypeError:  # holds something unhashable: not a key
                pass
        if isinstance(item, (tuple, list)):
            stack.extend(item)
    return found


def _op_tasks(tasks, node: OpNode, name, s, p, sp, rows, pieces, session, instance_key,
              work_packet) -> None:
    ctx = runtime.OpContext(node.spec, node.init_args, node.config_args, node.device,
                            instance_key(node), session, work_packet, node.config_token)
    inputs = [pieces(ref, sp.pieces[p][i]) for i, ref in enumerate(node.inputs)]
    if not node.spec.unbounded_state:
        tasks[(name, s, p)] = (runtime.run_op, ctx, s, rows, inputs)
        return
    chain = f"{name}-chain"
    previous = (chain, s, p - 1) if p else None
    last = p == len(sp.parts) - 1
    tasks[(chain, s, p)] = (runtime.run_op, ctx, s, rows, inputs, previous, last)
    tasks[(name, s, p)] = (operator.getitem, (chain, s, p), 0)
