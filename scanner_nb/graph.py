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
from dataclasses import dataclass
from typing import Callable

import numpy as np
from dask.highlevelgraph import HighLevelGraph, MaterializedLayer

from . import runtime
from .plan import Node, NodePlan, OpNode, Ref, SourceNode, analyze
from .sources.base import Payload, unbox

__all__ = ["Built", "View", "build_graph"]


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
    """

    requested: dict | None = None
    partition_size: int | None | str = "session"
    work_packet: int | None = None


@dataclass
class Built:
    """A built graph: the graph, the root's partition keys and rows per stream."""

    graph: HighLevelGraph
    keys: dict[int, list]  # stream -> partition keys of the root output
    rows: dict[int, list[np.ndarray]]  # stream -> rows of each of those partitions
    plans: dict[Node, NodePlan]


def _layer_name(node: Node, plan: NodePlan) -> str:
    """A readable name plus a hash of what the node computes and the partitions asked of it."""
    digest = hashlib.blake2b(node.token.encode(), digest_size=16)
    for s, sp in sorted(plan.streams.items()):
        digest.update(f"|{s}:{len(sp.parts)}|".encode())
        for part in sp.parts:
            digest.update(part.tobytes())
            digest.update(b",")
    label = node.label if node.kind != "source" else "input"
    return f"{label.lower()}-{digest.hexdigest()}"


def build_graph(root: Ref, requested: dict[int, np.ndarray], partition_size: int | None,
                session: str, instance_key: Callable, work_packet: int | None = None,
                workers: list | None = None) -> Built:
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
    workers : list of str, optional
        A cluster's workers: each unbounded-state chain is pinned to one of them.
    """
    plans = analyze([(root, requested)], partition_size)
    names: dict[Node, str] = {}
    layers: dict[str, object] = {}
    deps: dict[str, set] = {}

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
            _source_tasks(node, name, plan, tasks, layers, deps, dependencies)
        elif isinstance(node, OpNode):
            shared = any(plans[ref.node].shared for ref in node.inputs)
            _op_tasks(node, name, plan, tasks, layers, deps, dependencies, pieces, session,
                      instance_key(node), work_packet, workers, shared)
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
    graph_layers = {n: (t if isinstance(t, MaterializedLayer) else MaterializedLayer(t))
                    for n, t in layers.items()}
    return Built(HighLevelGraph(graph_layers, deps), keys, rows, plans)


def _source_tasks(node: SourceNode, name: str, plan: NodePlan, tasks: dict, layers: dict,
                  deps: dict, dependencies: set) -> None:
    """Read tasks; a source's shared data (a video's index) is one key they all depend on."""
    for s, sp in plan.streams.items():
        source = node.sources[s]
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
        for p, rows in enumerate(sp.parts):
            tasks[(name, s, p)] = source.read_task(s, rows, shared_key)


def _op_tasks(node: OpNode, name: str, plan: NodePlan, tasks: dict, layers: dict, deps: dict,
              dependencies: set, pieces: Callable, session: str, instance_key: str,
              work_packet: int | None, workers: list | None, inputs_shared: bool) -> None:
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
        if workers:  # keep each stream's chain on one worker (others if that one is lost)
            pins = _Pins({s: [workers[zlib.crc32(f"{chain_name}-{s}".encode()) % len(workers)]]
                          for s in plan.streams})
            annotations = {"workers": pins, "allow_other_workers": True}
        layers[chain_name] = MaterializedLayer(chain_tasks, annotations=annotations)
        deps[chain_name] = set(dependencies)
        dependencies.add(chain_name)



class _Pins(dict):
    """Stream -> the worker its chain runs on, as a layer annotation (called with a key)."""

    def __call__(self, key: tuple) -> list:
        return self[key[1]]
