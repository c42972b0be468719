"""The engine end to end on in-memory streams, on the threaded scheduler and a LocalCluster."""

from __future__ import annotations

import os
from typing import Any, Sequence, Tuple

import dask
import numpy as np
import pytest
from conftest import calls_in
from engine_ops import Counting, Summing

import scanner_nb as sp


@sp.register_python_op()
def add(config, x: Any, by: int = 1) -> Any:
    return x + by


@sp.register_python_op(stencil=[-2, 0, 1])
def window(config, x: Sequence[Any]) -> Any:
    return tuple(x)


@sp.register_python_op(bounded_state=3)
class Counter(Counting):
    pass


@sp.register_python_op(unbounded_state=True)
class RunningSum(Summing):
    def new_stream(self, start):
        self.start = start


@sp.register_python_op(batch=4)
def batch_sum(config, x: Sequence[Any], y: Sequence[Any]) -> Sequence[Any]:
    return [a * 100 + b for a, b in zip(x, y)]


@sp.register_python_op()
def split(config, x: Any) -> Tuple[Any, bytes]:
    return x * 2, str(x).encode()


@sp.register_python_op()
def concat(config, *xs: Any) -> Any:
    return sum(xs)


def numbers(sc, *lengths):
    return sc.io.Input([sp.MemoryStream(list(range(100 * i, 100 * i + n)))
                        for i, n in enumerate(lengths)])


def clamp(i, n):
    return min(max(i, 0), n - 1)


def test_plain_op_and_rates(client):
    s = numbers(client, 10, 5)
    assert client.ops.add(x=s, by=3).compute() == [list(range(3, 13)), list(range(103, 108))]
    assert client.ops.add(x=s).compute()[1] == list(range(101, 106))


@pytest.mark.parametrize("partition_size", [1, 2, 3, 7, 64])
def test_stencil_windows_at_ends_and_partition_edges(local_client, partition_size):
    sc = sp.Client(partition_size=partition_size, show_progress=False)
    s = numbers(sc, 17, 2)
    got = sc.ops.window(x=s).compute()
    for base, n, out in ((0, 17, got[0]), (100, 2, got[1])):
        assert out == [tuple(base + clamp(i + o, n) for o in (-2, 0, 1)) for i in range(n)]


def test_stencil_on_cluster_matches(client):
    sc = sp.Client(address=client.distributed, partition_size=4, show_progress=False) \
        if client.distributed else sp.Client(partition_size=4, show_progress=False)
    got = sc.ops.window(x=numbers(sc, 11)).compute()[0]
    assert got == [tuple(clamp(i + o, 11) for o in (-2, 0, 1)) for i in range(11)]


def test_bounded_state_warm_up_as_in_scanner(client):
    counted = client.ops.Counter(x=numbers(client, 40))
    assert client.streams.Gather(counted, [[0, 10, 25, 26, 27]]).compute() == [[0, 3, 3, 4, 5]]


def test_bounded_state_exact_values():
    sc = sp.Client(partition_size=4, show_progress=False)
    got = sc.ops.Counter(x=numbers(sc, 12)).compute()[0]
    # partitions [0,4) [4,8) [8,12): the first partition runs from row 0; later ones reset and
    # warm up on 3 rows, so their first row counts 3 and then continue
    assert got == [0, 1, 2, 3, 3, 4, 5, 6, 3, 4, 5, 6]


def test_unbounded_state_sees_stream_in_order(client):
    sc = sp.Client(address=client.distributed, partition_size=3, show_progress=False) \
        if client.distributed else sp.Client(partition_size=3, show_progress=False)
    s = numbers(sc, 10, 4)
    got = sc.ops.RunningSum(x=s, start=[1000, 0]).compute()
    assert got == [list(1000 + np.cumsum(range(10))), list(np.cumsum(range(100, 104)))]
    # a later row alone still sees every row before it
    assert sc.ops.RunningSum(x=s, start=[0, 0]).row(0, 6) == sum(range(7))


def test_batch_and_multiple_inputs(client):
    a, b = numbers(client, 10), client.io.Input([sp.MemoryStream(list(range(10)))])
    assert client.ops.batch_sum(x=a, y=b).compute() == [[i * 100 + i for i in range(10)]]


def test_multiple_outputs_and_types(client):
    doubled, text = client.ops.split(x=numbers(client, 4))
    assert doubled.compute() == [[0, 2, 4, 6]]
    assert text.type_name == "bytes"
    assert text.compute() == [[b"0", b"1", b"2", b"3"]]


def test_variadic(client):
    s = numbers(client, 5)
    assert client.ops.concat(s, s, s).compute() == [[3 * i for i in range(5)]]


def test_nulls_skip_kernels(client, tmp_path):
    log = str(tmp_path / "calls")

    @sp.register_python_op(name="logged_add")
    def logged_add(config, x: Any) -> Any:
        with open(log, "a") as f:
            f.write(f"{x} ")
        return x + 1

    sparse = client.streams.RepeatNull(numbers(client, 3), [3])
    assert client.ops.logged_add(x=sparse).compute() == [[1, None, None, 2, None, None, 3, None, None]]
    assert sorted(calls_in(log)) == ["0", "1", "2"]


def test_lifecycle_counts(client, tmp_path):
    log = str(tmp_path / "life")

    class Life(sp.Kernel):
        def __init__(self, config, tag):
            self.tag = tag

        def fetch_resources(self):
            with open(log, "a") as f:
                f.write("fetch ")

        def setup_with_resources(self):
            with open(log, "a") as f:
                f.write("setup ")

        def new_stream(self, scale):
            self.scale = scale

        def execute(self, x: Any) -> Any:
            return (self.tag, x * self.scale)

    sp.register_python_op(Life)
    sc = sp.Client(address=client.distributed, partition_size=2, show_progress=False) \
        if client.distributed else sp.Client(partition_size=2, show_progress=False)
    got = sc.ops.Life(x=numbers(sc, 6, 3), tag="t", scale=[1, 10]).compute()
    assert got == [[("t", i) for i in range(6)], [("t", 10 * (100 + i)) for i in range(3)]]
    calls = calls_in(log)
    assert calls.count("fetch") == 1  # once per machine, for all processes
    assert 1 <= calls.count("setup") <= 2  # once per instance; an instance per worker/thread
    sc.ops.Life(x=numbers(sc, 6), tag="t", scale=[1]).compute()
    assert calls_in(log).count("fetch") == 1


def test_kernel_error_names_op_stream_row(client):
    @sp.register_python_op(name="fails_at_517")
    def fails(config, x: Any) -> Any:
        if x == 517:
            raise ZeroDivisionError("boom")
        return x

    s = client.io.Input([sp.MemoryStream([0]), sp.MemoryStream(list(range(1000)))])
    with pytest.raises(sp.KernelError) as info:
        client.ops.fails_at_517(x=s).compute()
    err = info.value
    assert (err.op, err.stream, err.row) == ("fails_at_517", 1, 517)
    assert isinstance(err.__cause__, ZeroDivisionError)
    assert "fails_at_517" in str(err) and "517" in str(err) and "stream 1" in str(err)


def test_stencil_batch_error_row():
    @sp.register_python_op(name="batch_fail", batch=3)
    def batch_fail(config, x: Sequence[Any]) -> Sequence[Any]:
        if 7 in x:
            raise ValueError("seven")
        return list(x)

    sc = sp.Client(show_progress=False)
    with pytest.raises(sp.KernelError) as info:
        sc.ops.batch_fail(x=numbers(sc, 10)).compute()
    assert info.value.row == 6  # first row of the batch [6, 7, 8]


def test_wrong_batch_output_count():
    @sp.register_python_op(name="short_batch", batch=4)
    def short(config, x: Sequence[Any]) -> Sequence[Any]:
        return list(x)[:-1]

    sc = sp.Client(show_progress=False)
    with pytest.raises(sp.KernelError, match="returned 3 elements, expected 4"):
        sc.ops.short_batch(x=numbers(sc, 8)).compute()


def test_dask_compute_shares_work(tmp_path):
    log = str(tmp_path / "shared")

    @sp.register_python_op(name="counted")
    def counted(config, x: Any) -> Any:
        with open(log, "a") as f:
            f.write("x ")
        return x

    sc = sp.Client(show_progress=False)
    base = sc.ops.counted(x=numbers(sc, 20))
    a, b = sc.ops.add(x=base, by=1), sc.ops.add(x=base, by=2)
    got_a, got_b = dask.compute(a, b, scheduler="threads")
    assert got_a == [list(range(1, 21))] and got_b == [list(range(2, 22))]
    assert len(calls_in(log)) == 20


def test_persist_to_delayed_partitions_info(client):
    sc = sp.Client(address=client.distributed, partition_size=4, show_progress=False) \
        if client.distributed else sp.Client(partition_size=4, show_progress=False)
    s = sc.ops.add(x=numbers(sc, 10), by=1)
    assert s.partitions_info() == [{"length": 10, "boundaries": [(0, 4), (4, 8), (8, 10)]}]
    kept = s.persist()
    assert kept.compute() == [list(range(1, 11))]
    assert sc.ops.add(x=kept, by=10).compute() == [list(range(11, 21))]
    parts = s.to_delayed()
    assert len(parts) == 1 and len(parts[0]) == 3
    assert dask.compute(*parts[0], scheduler=sc.scheduler) == ([1, 2, 3, 4], [5, 6, 7, 8], [9, 10])


def test_frames_and_to_dask_array(client):
    frames = np.random.default_rng(0).integers(0, 255, (6, 8, 10, 3), dtype=np.uint8)

    @sp.register_python_op(name="invert")
    def invert(config, frame: sp.FrameType) -> sp.FrameType:
        return 255 - frame

    s = client.io.Input([sp.MemoryStream(frames, type=sp.FrameType)])
    out = client.ops.invert(frame=s)
    (got,) = out.compute()
    assert got.dtype == np.uint8 and got.shape == (6, 8, 10, 3)
    np.testing.assert_array_equal(got, 255 - frames)
    (array,) = out.to_dask_array()
    assert array.shape == (6, 8, 10, 3)
    np.testing.assert_array_equal(array.compute(scheduler=client.scheduler), 255 - frames)


def test_custom_type_round_trips_across_processes(client):
    @sp.types.register_type
    class Point:
        def serialize(p):
            return np.asarray(p, dtype=np.float32).tobytes()

        def deserialize(data):
            return tuple(np.frombuffer(data, dtype=np.float32).tolist())

    @sp.register_python_op(name="to_point")
    def to_point(config, x: Any) -> Point:
        return (float(x), float(x) / 2)

    assert client.ops.to_point(x=numbers(client, 3)).compute() == [[(0.0, 0.0), (1.0, 0.5), (2.0, 1.0)]]


def test_stream_operations_on_memory(client):
    s = numbers(client, 10)
    ops = client.streams
    assert ops.Stride(s, [3]).compute() == [[0, 3, 6, 9]]
    assert ops.Range(s, [(2, 50)]).compute() == [list(range(2, 10))]
    assert ops.Ranges(s, [[(0, 2), (1, 3)]]).compute() == [[0, 1, 1, 2]]
    assert ops.StridedRange(s, [(1, 9, 4)]).compute() == [[1, 5]]
    assert ops.Gather(s, [[9, 0, 9]]).compute() == [[9, 0, 9]]
    assert ops.Repeat(s, [2]).compute()[0][:4] == [0, 0, 1, 1]
    assert ops.All(s).compute() == [list(range(10))]


def test_slices_restart_state_and_stencils(client):
    sc = sp.Client(address=client.distributed, partition_size=3, show_progress=False) \
        if client.distributed else sp.Client(partition_size=3, show_progress=False)
    s = numbers(sc, 7)
    sliced = sc.streams.Slice(s, [sc.partitioner.all(4)])
    assert sliced.lengths == [4, 3]
    summed = sc.ops.RunningSum(x=sliced, start=[sp.SliceList([0, 1000])])
    assert sc.streams.Unslice(summed).compute() == [[0, 1, 3, 6, 1004, 1009, 1015]]
    windows = sc.streams.Unslice(sc.ops.window(x=sliced)).compute()[0]
    assert windows[4] == (4, 4, 5) and windows[3] == (1, 3, 3)


def test_partitioners(local_client):
    sc = local_client
    s = numbers(sc, 10)
    p = sc.partitioner
    assert sc.streams.Slice(s, [p.strided(3, 2)]).compute() == [[0, 3], [6, 9]]
    assert sc.streams.Slice(s, [p.range(2, 5)]).compute() == [[2, 3, 4]]
    assert sc.streams.Slice(s, [p.ranges([(0, 2), (1, 3)])]).compute() == [[0, 1], [1, 2]]
    assert sc.streams.Slice(s, [p.strided_range(0, 10, 5)]).compute() == [[0, 5]]


def test_cluster_workers_get_fast_numpy_allocations(cluster):
    """Dask sets MALLOC_TRIM_THRESHOLD_ for its workers; the runtime retunes glibc there."""
    import distributed

    from scanner_nb import runtime

    with distributed.Client(cluster, set_as_default=False) as dc:
        env = dc.run(lambda: os.environ.get("MALLOC_TRIM_THRESHOLD_"))
        assert set(env.values()) == {"65536"}
        assert all(dc.run(runtime.tune_allocator).values())


def test_perf_params_set_partitions_and_work_packets():
    sizes = []

    @sp.register_python_op(name="batch_sizes", batch=8)
    def batch_sizes(config, x: Sequence[Any]) -> Sequence[Any]:
        sizes.append(len(x))
        return list(x)

    sc = sp.Client(show_progress=False)
    s = sc.ops.batch_sizes(x=numbers(sc, 20))
    assert s.compute(perf_params=sp.PerfParams.manual(3, 10)) == [list(range(20))]
    assert sorted(sizes) == [1, 1, 3, 3, 3, 3, 3, 3]
    assert s.with_perf_params(sp.PerfParams.manual(3, 10)).partitions_info()[0]["boundaries"] == [
        (0, 10), (10, 20)]
    with pytest.raises(sp.ScannerValueError, match="work_packet_size 5 is larger"):
        sp.PerfParams.manual(5, 2)
