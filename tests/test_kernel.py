"""Registering ops: signatures, rates, properties and the errors at the call that made them."""

from __future__ import annotations

import subprocess
import sys
from typing import Any, Sequence, Tuple

import numpy as np
import pytest

import scanner_nb as sp


@pytest.fixture
def sc():
    with sp.Client(show_progress=False) as client:
        yield client


def nums(sc, *lengths):
    return sc.io.Input([sp.MemoryStream(list(range(n))) for n in lengths])


def test_decorator_with_and_without_parentheses(sc):
    @sp.register_python_op
    def bare(config, x: Any) -> Any:
        return x * 2

    @sp.register_python_op(name="renamed")
    def original(config, x: Any) -> Any:
        return -x

    assert sc.ops.bare(x=nums(sc, 3)).compute() == [[0, 2, 4]]
    assert sc.ops.renamed(x=nums(sc, 2)).compute() == [[0, -1]]
    with pytest.raises(AttributeError, match="no op named 'original'"):
        sc.ops.original


def test_reregistering_replaces(sc):
    @sp.register_python_op(name="twice")
    def first(config, x: Any) -> Any:
        return 1

    @sp.register_python_op(name="twice")
    def second(config, x: Any) -> Any:
        return 2

    assert sc.ops.twice(x=nums(sc, 1)).compute() == [[2]]


def test_undecorated_subclass_registered_by_name(sc):
    class Plain(sp.Kernel):
        def execute(self, x: Any) -> Any:
            return x + 1

    assert sc.ops.Plain(x=nums(sc, 2)).compute() == [[1, 2]]

    class Unannotated(sp.Kernel):
        def execute(self, x):
            return x

    with pytest.raises(sp.ScannerTypeError, match="'x' of execute has no type annotation"):
        sc.ops.Unannotated(x=nums(sc, 1))


def test_signature_errors_at_registration():
    with pytest.raises(sp.ScannerTypeError, match="no type annotation"):
        @sp.register_python_op
        class NoAnnotation(sp.Kernel):
            def execute(self, frame) -> sp.FrameType:
                return frame
    with pytest.raises(sp.ScannerTypeError, match="return value has no type annotation"):
        @sp.register_python_op
        def no_return(config, x: Any):
            return x
    with pytest.raises(sp.ScannerTypeError, match="Sequence"):
        @sp.register_python_op
        def seq_without_batch(config, x: Sequence[Any]) -> Any:
            return x
    with pytest.raises(sp.ScannerTypeError, match="needs at least one stream param"):
        @sp.register_python_op
        def no_streams(config, x: int) -> Any:
            return x
    with pytest.raises(sp.ScannerValueError, match="sorted list"):
        @sp.register_python_op(stencil=[1, 0])
        def unsorted(config, x: Sequence[Any]) -> Any:
            return x
    with pytest.raises(sp.ScannerValueError, match="sorted list"):
        @sp.register_python_op(stencil=[0, "1"])
        def not_ints(config, x: Sequence[Any]) -> Any:
            return x
    with pytest.raises(sp.ScannerValueError, match="batch must be"):
        @sp.register_python_op(batch=0)
        def zero_batch(config, x: Any) -> Any:
            return x


def test_rates_read_from_signatures(sc):
    @sp.register_python_op
    class Rated(sp.Kernel):
        def __init__(self, config, scale, offset=0):
            self.scale, self.offset = scale, offset
            assert config.args == {"scale": scale, **({"offset": offset} if offset else {})}

        def new_stream(self, threshold):
            self.threshold = threshold

        def execute(self, x: Any) -> Any:
            return x * self.scale + self.offset > self.threshold

    s = nums(sc, 3, 3)
    assert sc.ops.Rated(x=s, scale=2, threshold=[1, 3]).compute() == [
        [False, True, True], [False, False, True]]
    with pytest.raises(sp.ScannerValueError, match="'threshold'.*1 value.*2 stream"):
        sc.ops.Rated(x=s, scale=2, threshold=[1])
    with pytest.raises(sp.ScannerTypeError, match="one value per stream"):
        sc.ops.Rated(x=s, scale=2, threshold=0.5)
    with pytest.raises(sp.ScannerTypeError, match="unknown keyword argument 'scael'"):
        sc.ops.Rated(x=s, scael=2, threshold=[1, 2])
    with pytest.raises(sp.ScannerTypeError, match="missing init param 'scale'"):
        sc.ops.Rated(x=s, threshold=[1, 2])
    with pytest.raises(sp.ScannerTypeError, match="takes a Stream.*got list"):
        sc.ops.Rated(x=[1, 2], scale=1, threshold=[1, 2])
    with pytest.raises(sp.ScannerTypeError, match="missing stream param 'x'"):
        sc.ops.Rated(scale=1, threshold=[1, 2])


def test_multiple_inputs_must_match(sc):
    @sp.register_python_op
    def pair(config, a: Any, b: Any) -> Any:
        return a + b

    with pytest.raises(sp.ScannerValueError, match="lengths \\[4\\].*\\[3\\]"):
        sc.ops.pair(a=nums(sc, 3), b=nums(sc, 4))
    with pytest.raises(sp.ScannerValueError, match="count and length"):
        sc.ops.pair(a=nums(sc, 3), b=nums(sc, 3, 3))


def test_stream_type_checked_at_call(sc):
    @sp.register_python_op
    def frames_only(config, frame: sp.FrameType) -> sp.FrameType:
        return frame

    raw = sc.io.Input([sp.MemoryStream([b"x"], type=bytes)])
    with pytest.raises(sp.ScannerTypeError, match="takes FrameType elements, got a stream of bytes"):
        sc.ops.frames_only(frame=raw)


def test_batch_with_stencil_and_tuple_outputs(sc):
    @sp.register_python_op(batch=3, stencil=[-1, 0])
    def diffs(config, x: Sequence[Sequence[Any]]) -> Tuple[Sequence[Any], Sequence[Any]]:
        return [w[1] - w[0] for w in x], [w[0] for w in x]

    d, prev = sc.ops.diffs(x=nums(sc, 5))
    assert d.compute() == [[0, 1, 1, 1, 1]]
    assert prev.compute() == [[0, 0, 1, 2, 3]]


def test_batch_of_frames_arrives_as_one_array(sc):
    seen = []

    @sp.register_python_op(batch=4)
    def shapes(config, frame: Sequence[sp.FrameType]) -> Sequence[Any]:
        seen.append(type(frame).__name__)
        return [f.shape for f in frame]

    frames = np.zeros((6, 4, 5, 3), np.uint8)
    out = sc.ops.shapes(frame=sc.io.Input([sp.MemoryStream(frames)])).compute()
    assert out == [[(4, 5, 3)] * 6] and set(seen) == {"ndarray"}


def test_register_type_needs_serializers():
    class Broken:
        pass

    with pytest.raises(sp.ScannerTypeError, match="serialize and deserialize"):
        sp.types.register_type(Broken)


def test_import_pulls_nothing_optional():
    code = ("import sys, scanner_nb; bad = [m for m in ('av', 'cupy', 'ipywidgets', 'matplotlib', "
            "'zarr', 'distributed') if m in sys.modules]; print(bad)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_all_is_honest():
    import types as pytypes

    public = {n for n in dir(sp) if not n.startswith("_")
              and not isinstance(getattr(sp, n), pytypes.ModuleType)}
    assert set(sp.__all__) == public | {"types"}
    for name in sp.__all__:
        assert getattr(sp, name) is not None
