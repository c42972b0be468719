"""Random pipelines over in-memory ints, checked against a reference interpreter of API.md.

Hypothesis draws a pipeline (elementwise, stencil with any offsets, batch, bounded state 0-6,
unbounded state, two inputs, several outputs, every stream operation, Slice/Unslice, nulls)
and a partition size; the engine's answer on the threaded and synchronous schedulers and on a
LocalCluster must equal ``engine_reference``'s, one element at a time. Bounded and unbounded
state ops are drawn only over streams without nulls, so that their answers do not depend on
how the rows are partitioned (API.md: a reset at every partition start).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import dask
import engine_reference as ref
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

import scanner_nb as sp

STENCILS = [(-2, 0, 1), (-1,), (1, 3), (0,), (-3, -1), (-1, 0, 1, 4)]


def _weigh(window):
    return sum((i + 1) * (7 if v is None else v) for i, v in enumerate(window))


for _offsets in STENCILS:
    def _stencil(config, x: Sequence[Any]) -> Any:
        return _weigh(x)

    sp.register_python_op(_stencil, name=f"prop_stencil_{STENCILS.index(_offsets)}",
                          stencil=list(_offsets))


@sp.register_python_op()
def prop_add(config, x: Any, k: int = 1) -> Any:
    return x + k


@sp.register_python_op(batch=3)
def prop_batch(config, x: Sequence[Any]) -> Sequence[Any]:
    return [v * 2 + 1 for v in x]


@sp.register_python_op()
def prop_split(config, x: Any) -> tuple[Any, Any]:
    return x + 1, x * 3


@sp.register_python_op()
def prop_two(config, x: Any, y: Any) -> Any:
    return x * 10 + y


class _WindowSum(sp.Kernel):
    def __init__(self, config):
        self.seen: deque = deque()

    def reset(self):
        self.seen.clear()

    def execute(self, x: Any) -> Any:
        self.seen.append(x)
        while len(self.seen) > self.k + 1:
            self.seen.popleft()
        return sum(self.seen)


for _k in range(7):  # module attributes, so that workers find them by name
    globals()[f"PropWindow{_k}"] = sp.register_python_op(
        type(f"PropWindow{_k}", (_WindowSum,), {"k": _k, "__qualname__": f"PropWindow{_k}"}),
        bounded_state=_k)


@sp.register_python_op(unbounded_state=True)
class PropRunning(sp.Kernel):
    def __init__(self, config):
        self.total = 0

    def reset(self):
        self.total = 0

    def execute(self, x: Any) -> Any:
        self.total += x
        return self.total


@dataclass
class Built:
    """A stream and what the reference says it holds."""

    stream: Any
    value: list  # per stream, a list of ints and Nones
    nulls: bool = False  # may hold nulls
    parents: list | None = None  # after a Slice: the stream each slice came from
    n_parents: int = 0


def _step(data, sc, b: Built) -> Built:
    """One random op or stream operation applied to ``b``."""
    lengths = [len(s) for s in b.value]
    choices = ["add", "stencil", "batch", "split", "two", "stride", "range", "ranges",
               "strided_range", "gather", "repeat_null", "repeat"]
    if not b.nulls:
        choices += ["window", "window", "running", "running"]
    choices += ["unslice"] * 3 if b.parents is not None else ["slice"] * 2
    kind = data.draw(st.sampled_from(choices), label="step")
    event(kind)
    if kind == "add":
        k = data.draw(st.integers(-3, 3))
        return Built(sc.ops.prop_add(x=b.stream, k=k), ref.elementwise(b.value, lambda x: x + k),
                     b.nulls, b.parents, b.n_parents)
    if kind == "stencil":
        i = data.draw(st.integers(0, len(STENCILS) - 1))
        out = getattr(sc.ops, f"prop_stencil_{i}")(x=b.stream)
        return Built(out, ref.stencil(b.value, STENCILS[i], _weigh), b.nulls, b.parents,
                     b.n_parents)
    if kind == "batch":
        return Built(sc.ops.prop_batch(x=b.stream), ref.elementwise(b.value, lambda x: 2 * x + 1),
                     b.nulls, b.parents, b.n_parents)
    if kind in ("split", "two"):
        first, second = sc.ops.prop_split(x=b.stream)
        a = ref.elementwise(b.value, lambda x: x + 1)
        c = ref.elementwise(b.value, lambda x: x * 3)
        if kind == "split":
            pick = data.draw(st.booleans())
            return Built(second if pick else first, c if pick else a, b.nulls, b.parents,
                         b.n_parents)
        return Built(sc.ops.prop_two(x=first, y=second),
                     ref.two_inputs(a, c, lambda x, y: x * 10 + y), b.nulls, b.parents,
                     b.n_parents)
    if kind == "window":
        k = data.draw(st.integers(0, 6))
        return Built(getattr(sc.ops, f"PropWindow{k}")(x=b.stream), ref.window_sum(b.value, k),
                     False, b.parents, b.n_parents)
    if kind == "running":
        return Built(sc.ops.PropRunning(x=b.stream), ref.running_sum(b.value), False, b.parents,
                     b.n_parents)
    per = lambda strategy: [data.draw(strategy(n)) for n in lengths]
    if kind == "stride":
        ks = per(lambda n: st.integers(1, 4))
        return _sampled(sc.streams.Stride(b.stream, ks), ref.stride(b.value, ks), b)
    if kind == "range":
        bounds = per(lambda n: st.tuples(st.integers(0, n + 1), st.integers(0, n + 2)).map(sorted))
        bounds = [tuple(x) for x in bounds]
        return _sampled(sc.streams.Range(b.stream, bounds), ref.range_(b.value, bounds), b)
    if kind == "ranges":
        ivs = per(lambda n: st.lists(st.tuples(st.integers(0, n), st.integers(0, n + 1)).map(
            lambda t: tuple(sorted(t))), max_size=3))
        return _sampled(sc.streams.Ranges(b.stream, ivs), ref.ranges(b.value, ivs), b)
    if kind == "strided_range":
        args = per(lambda n: st.tuples(st.integers(0, n), st.integers(0, n + 1),
                                       st.integers(1, 3)).map(lambda t: (min(t[:2]), max(t[:2]), t[2])))
        return _sampled(sc.streams.StridedRange(b.stream, args),
                        ref.strided_range(b.value, args), b)
    if kind == "gather":
        idx = per(lambda n: st.lists(st.integers(0, max(0, n - 1)), max_size=8 if n else 0))
        return _sampled(sc.streams.Gather(b.stream, idx), ref.gather(b.value, idx), b)
    if kind == "repeat_null":
        ns = per(lambda n: st.integers(1, 3))
        out = _sampled(sc.streams.RepeatNull(b.stream, ns), ref.repeat_null(b.value, ns), b)
        out.nulls = out.nulls or any(n > 1 for n in ns)
        return out
    if kind == "repeat":
        ns = per(lambda n: st.integers(1, 3))
        return _sampled(sc.streams.Repeat(b.stream, ns), ref.repeat(b.value, ns), b)
    if kind == "slice":
        specs = per(lambda n: st.one_of(
            st.tuples(st.just("all"), st.tuples(st.integers(1, 5))),
            st.tuples(st.just("strided"), st.tuples(st.integers(1, 3), st.integers(1, 4))),
            st.tuples(st.just("ranges"), st.tuples(st.lists(st.tuples(
                st.integers(0, n), st.integers(0, n + 1)).map(lambda t: tuple(sorted(t))),
                max_size=3)))))
        parts = [getattr(sc.partitioner, kind_)(*args) for kind_, args in specs]
        value, parents = ref.slice_(b.value, specs)
        return Built(sc.streams.Slice(b.stream, parts), value, b.nulls, parents, len(b.value))
    return Built(sc.streams.Unslice(b.stream), ref.unslice(b.value, b.parents, b.n_parents),
                 b.nulls)


def _sampled(stream, value, b: Built) -> Built:
    return Built(stream, value, b.nulls, b.parents, b.n_parents)


def _pipeline(data, sc) -> list[Built]:
    lengths = data.draw(st.lists(st.integers(0, 12), min_size=1, max_size=3), label="lengths")
    value = [list(range(100 * i, 100 * i + n)) for i, n in enumerate(lengths)]
    b = Built(sc.io.Input([sp.MemoryStream(list(v)) for v in value]), value)
    outputs = []
    for _ in range(data.draw(st.integers(2, 7), label="steps")):
        b = _step(data, sc, b)
        if data.draw(st.booleans(), label="also an output"):
            outputs.append(b)
    return outputs + [b]


def _check(data, sc, **compute):
    outputs = _pipeline(data, sc)
    got = dask.compute(*[o.stream for o in outputs], **compute)
    for o, g in zip(outputs, got):
        assert [list(s) for s in g] == o.value


SIZES = st.one_of(st.none(), st.integers(1, 7))
COMMON = {"deadline": None, "suppress_health_check": list(HealthCheck), "derandomize": True}


@settings(max_examples=150, **COMMON)
@given(data=st.data(), size=SIZES)
def test_threaded_scheduler_matches_the_reference(data, size):
    with sp.Client(partition_size=size, show_progress=False) as sc:
        _check(data, sc, scheduler="threads")


@settings(max_examples=50, **COMMON)
@given(data=st.data(), size=SIZES)
def test_synchronous_scheduler_matches_the_reference(data, size):
    with sp.Client(partition_size=size, show_progress=False) as sc:
        _check(data, sc, scheduler="sync")


@pytest.mark.slow
@settings(max_examples=8, **COMMON)
@given(data=st.data(), size=SIZES)
def test_a_local_cluster_matches_the_reference(cluster, data, size):
    with sp.Client(address=cluster, partition_size=size, show_progress=False) as sc:
        _check(data, sc)
