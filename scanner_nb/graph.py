"""From a plan and the rows asked for to a Dask graph: one task per partition per node.

Each node becomes one layer, built as ``dask.bag`` builds its layers: a readable name plus a
token, a dict of tasks, then a ``HighLevelGraph``. Names hash what a node computes (its
``token``: op code and arguments, source identity) and the partitions asked of it, so the same
pipeline gives the same keys in any cell. What many tasks share is ONE key they depend on: an op
node's context (its per-stream config) and a source's shared data (a video's index), so a
task's size is flat in the number of streams and the length of a video.
"""

from __future__ import annotations

import hashlib
import operator
import zlib
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import xxhash
from dask.highlevelgraph import HighLevelGraph, MaterializedLayer

from . import runtime
from .plan import Node, NodePlan, OpNode, Ref, SourceNode, analyze, pieces_for
from .sources.base import Payload, unbox

__all__ = ["Built", "View", "build_graph", "build_union"]


@dataclass(frozen=True, eq=False)
class View:
    """How a Stream is computed: which rows, in which partitions, in which work packets.

    Attributes
    ----------
    requested : dict or None
        Stream index -> sorted unique rows (``None``: every row of every stream).
    partition_size : int, None or "session"
        Rows per partition (``None``: each source's default; ``"session"``: the client's).
    work_packet : int or None
        Most rows handed to one ``execute`` call of a batch op.
    in_place : bool
        Read a frame source that is the root straight into one result array per stream (each
        partition into its slice), so the result needs no final concatenation. Set only by
        ``Stream.compute`` when results land in this process.
    """

    requested: dict | None = None
    partition_size: int | None | str = "session"
    work_packet: int | None = None
    in_place: bool = False


@dataclass
class Built:
    """A built graph: the graph, the root's partition keys and rows per stream."""

    graph: HighLevelGraph
    keys: dict[int, list]  # stream -> partition keys of the root output
    rows: dict[int, list[np.ndarray]]  # stream -> rows of each of those partitions
    plans: dict[Node, NodePlan]


def _layer_name(node: Node, plan: NodePlan) -> str:
    """A readable name plus a hash of what the node computes and the partitions asked of it."""
    digest = xxhash.xxh3_128(node.token.encode())
    for s, sp in sorted(plan.streams.items()):
        digest.update(f"|{s}:{len(sp.parts)}|".encode())
        for part in sp.parts:
            digest.update(part.tobytes())
            digest.update(b",")
    label = node.label if node.kind != "source" else "input"
    return f"{label.lower()}-{digest.hexdigest()}"


def build_graph(root: Ref, requested: dict[int, np.ndarray], partition_size: int | None,
                session: str, instance_key: Callable, work_packet: int | None = None,
                workers: Callable | None = None, in_place: bool = False) -> Built:
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
        The session's token (``fetch_resources`` runs once per machine per session).
    instance_key : callable
        ``OpNode -> str``: kernel instances are shared under this key.
    work_packet : int, optional
        Most rows handed to one ``execute`` call of a batch op.
    workers : callable, optional
        ``() -> list of str or None``: a cluster's workers (asked only when the plan has an
        unbounded-state op); each chain is pinned to one of them.
    in_place : bool
        See :class:`View`.
    """
    layers, deps, plans, key = _layers([(root, requested)], partition_size, session,
                                       instance_key, work_packet, workers, in_place)
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
            digest = hashlib.blake2b(keys[s][0][0].encode(), digest_size=16)
            digest.update(np.asarray(wanted).tobytes())
            name = f"select-{digest.hexdigest()}"
            layer = layers.setdefault(name, {})
            deps.setdefault(name, set()).add(keys[s][0][0])
            pieces_ = [[k, np.flatnonzero(np.isin(r, wanted))] for k, r in zip(keys[s], rows[s])]
            layer[(name, s, 0)] = (runtime.take_rows, [p for p in pieces_ if len(p[1])])
            keys[s], rows[s] = [(name, s, 0)], [np.asarray(wanted)]
    return Built(_hlg(layers, deps), keys, rows, plans)


def _hlg(layers: dict, deps: dict) -> HighLevelGraph:
    return HighLevelGraph({n: (t if isinstance(t, MaterializedLayer) else MaterializedLayer(t))
                           for n, t in layers.items()}, deps)


def build_union(requests: list[tuple[Ref, dict, dict, dict]], partition_size: int | None,
                session: str, instance_key: Callable, work_packet: int | None = None,
                workers: Callable | None = None) -> HighLevelGraph:
    """One graph computing several requests from ONE row analysis of what they all need, so a
    node two collections ask for different rows of runs once. Each request is ``(root,
    requested, keys, rows)``: the keys (and their rows) the collection declared; each becomes a
    task taking its rows from the union's partitions."""
    layers, deps, plans, key = _layers([(r, q) for r, q, _, _ in requests], partition_size,
                                       session, instance_key, work_packet, workers, False)
    aliases: dict = {}
    needed: set = set()
    for root, _, keys, rows in requests:
        root_plan = plans[root.node]
        for s in keys:
            for k, wanted in zip(keys[s], rows[s]):
                pieces = [[key(root, p.stream, p.part), p.positions]
                          for p in pieces_for(root_plan.streams[s], s, np.asarray(wanted))]
                if len(pieces) == 1 and pieces[0][1] is None and pieces[0][0] == k:
                    continue  # the union computes this very partition under this very key
                aliases[k] = (runtime.take_rows, pieces)
                needed.update(p[0][0] for p in pieces)
    if aliases:
        name = f"union-{hashlib.blake2b(repr(sorted(map(str, aliases))).encode(), digest_size=16).hexdigest()}"
        layers[name] = aliases
        deps[name] = needed
    return _hlg(layers, deps)


def _layers(requests: list[tuple[Ref, dict]], partition_size: int | None, session: str,
            instance_key: Callable, work_packet: int | None, workers: Callable | None,
            in_place: bool):
    """The layers computing ``requests``: ``(layers, deps, plans, key function)``."""
    plans = analyze(requests, partition_size)
    roots = {id(ref.node) for ref, _ in requests}
    names: dict[Node, str] = {}
    layers: dict[str, object] = {}
    deps: dict[str, set] = {}
    pieces_of: dict[tuple, tuple] = {}  # reads that continue the previous one's decoder

    def key(ref: Ref, stream: int, part: int):
        name = names[ref.node]
        if len(ref.node.types) > 1:
            return (f"{name}-out{ref.output}", stream, part)
        return (name, stream, part)

    def pieces(ref: Ref, plan_pieces) -> list:
        return [[key(ref, p.stream, p.part), p.positions] for p in plan_pieces]

    for node, plan in plans.items():
        name = names[node] = _layer_name(node, plan)
        tasks: dict = {}
        dependencies = {names[ref.node] if len(ref.node.types) == 1
                        else f"{names[ref.node]}-out{ref.output}" for ref in node.inputs}
        if isinstance(node, SourceNode):
            _source_tasks(node, name, plan, tasks, layers, deps, dependencies,
                          in_place and id(node) in roots, pieces_of)
        elif isinstance(node, OpNode):
            _op_tasks(node, name, plan, tasks, layers, deps, dependencies, pieces, session,
                      instance_key(node), work_packet, workers, plan.shared)
        else:
            for s, sp in plan.streams.items():
                for p, rows in enumerate(sp.parts):
                    tasks[(name, s, p)] = (runtime.sample, s, rows, node.types[0].name,
                                           pieces(node.inputs[0], sp.pieces[p][0]), sp.orders[p])
        layers[name] = tasks
        deps[name] = dependencies
        if len(node.types) > 1:  # each output of a multi-output op is a layer of its own
            for out in range(len(node.types)):
                out_name = f"{name}-out{out}"
                layers[out_name] = {(out_name, s, p): (operator.getitem, (name, s, p), out)
                                    for s, sp in plan.streams.items()
                                    for p in range(len(sp.parts))}
                deps[out_name] = {name}
    _chain_pieces(layers, pieces_of)
    return layers, deps, plans, key


def _source_tasks(node: SourceNode, name: str, plan: NodePlan, tasks: dict, layers: dict,
                  deps: dict, dependencies: set, in_place: bool, pieces_of: dict) -> None:
    """Read tasks; a source's shared data (a video's index) is one key they all depend on.
    Partitions that continue the previous one's reader are noted in ``pieces_of``."""
    for s, sp in plan.streams.items():
        source = node.sources[s]
        shape = source.frame_shape if in_place else None
        buffer = None if shape is None else runtime.result_buffer((len(sp.rows), *shape))
        for extra, extra_tasks in source.layers().items():  # persisted partitions
            layers[extra] = extra_tasks
            deps[extra] = set()
            dependencies.add(extra)
        shared = source.shared()
        shared_key = None
        if shared is not None:
            shared_name = f"shared-{hashlib.blake2b(source.token.encode(), digest_size=16).hexdigest()}"
            shared_key = (shared_name, 0)
            layers[shared_name] = {shared_key: (unbox, Payload(shared))}
            deps[shared_name] = set()
            dependencies.add(shared_name)
        start = 0
        for p, rows in enumerate(sp.parts):
            out = None if buffer is None else buffer[start:start + len(rows)]
            start += len(rows)
            tasks[(name, s, p)] = source.read_task(s, rows, shared_key, out)
            if p and source.follows(sp.parts[p - 1], rows):
                pieces_of[(name, s, p)] = (source, rows, shared_key, out)


def _chain_pieces(layers: dict, pieces_of: dict) -> None:
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
    for (name, stream, part), (source, rows, shared_key, out) in pieces_of.items():
        previous = (name, stream, part - 1)
        after = consumers.get(previous) or [previous]
        layers[name][(name, stream, part)] = source.read_task(stream, rows, shared_key, out,
                                                              after)


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


def _op_tasks(node: OpNode, name: str, plan: NodePlan, tasks: dict, layers: dict, deps: dict,
              dependencies: set, pieces: Callable, session: str, instance_key: str,
              work_packet: int | None, workers: Callable | None, inputs_shared: bool) -> None:
    """An op's tasks; its context (spec, init and per-stream config args) is one key."""
    ctx = runtime.OpContext(node.spec, node.init_args, node.config_args, node.device,
                            instance_key, session, work_packet, node.config_token, inputs_shared)
    ctx_name = f"ctx-{name}"
    ctx_key = (ctx_name, 0)
    layers[ctx_name] = {ctx_key: (unbox, Payload(ctx))}
    deps[ctx_name] = set()
    dependencies.add(ctx_name)
    chained = node.spec.unbounded_state
    chain_name = f"{name}-chain"
    chain_tasks: dict = {}
    for s, sp in plan.streams.items():
        chain = f"{chain_name}-{s}"
        for p, rows in enumerate(sp.parts):
            inputs = [pieces(ref, sp.pieces[p][i]) for i, ref in enumerate(node.inputs)]
            window = sp.windows[p]
            if not chained:
                tasks[(name, s, p)] = (runtime.run_op, ctx_key, s, rows, window, inputs)
                continue
            previous = (chain_name, s, p - 1) if p else None
            last = p == len(sp.parts) - 1
            chain_tasks[(chain_name, s, p)] = (runtime.run_chain, ctx_key, chain, p, last, s,
                                               rows, window, inputs, previous)
            tasks[(name, s, p)] = (operator.getitem, (chain_name, s, p), 1)
    if chained:
        annotations = None
        workers = workers() if workers is not None else None
        if workers:  # keep each stream's chain on one worker (others if that one is lost)
            first = zlib.crc32(chain_name.encode())
            pins = _Pins({s: [workers[(first + i) % len(workers)]]
                          for i, s in enumerate(plan.streams)})
            annotations = {"workers": pins, "allow_other_workers": True}
        layers[chain_name] = MaterializedLayer(chain_tasks, annotations=annotations)
        deps[chain_name] = set(dependencies)
        dependencies.add(chain_name)



class _Pins(dict):
    """Stream -> the worker its chain runs on, as a layer annotation (called with a key)."""

    def __call__(self, key: tuple) -> list:
        return self[key[1]]
