"""The seams of the engine (issue 10): each test failed on the engine before this round."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from typing import Any, Sequence

import dask
import numpy as np
import pytest
from conftest import calls_in
from engine_ops import Counting

import scanner_nb as sp
from scanner_nb.plan import OpNode
from scanner_nb.samples import make_video


def numbers(sc, *lengths):
    return sc.io.Input([sp.MemoryStream(list(range(100 * i, 100 * i + n)))
                        for i, n in enumerate(lengths)])


def on(client, **kwargs):
    """A client on the same scheduler as ``client`` with other options."""
    return sp.Client(address=client.distributed, db_path=client._db_path, show_progress=False,
                     **kwargs)


@sp.register_python_op()
def seam_split(config, frame: sp.FrameType) -> tuple[sp.FrameType, Any]:
    return frame[::2, ::2].copy(), int(frame.sum())


@sp.register_python_op(stencil=[-1])
def seam_previous(config, x: Sequence[Any]) -> Any:
    return ("ran", x[0])


@sp.register_python_op(bounded_state=0)
class SeamCounter0(Counting):
    pass


@sp.register_python_op(unbounded_state=True)
class SeamLockedSum(sp.Kernel):
    """Holds a lock: it cannot be pickled, so it must never travel between tasks."""

    def __init__(self, config, die_at=-1, marker=""):
        self.lock = threading.Lock()
        self.total = 0
        self.die_at, self.marker = die_at, marker

    def reset(self):
        self.total = 0

    def execute(self, x: Any) -> Any:
        if x == self.die_at and self.marker and not os.path.exists(self.marker):
            open(self.marker, "w").close()
            os._exit(1)  # the worker dies in the middle of the chain, once
        with self.lock:
            self.total += x
        return self.total


@sp.register_python_op()
def seam_scribble(config, frame: sp.FrameType) -> sp.FrameType:
    frame[...] = 7  # draws into its input, as Scanner's pose-drawing app does
    return frame


@sp.register_python_op()
def seam_mean(config, frame: sp.FrameType) -> Any:
    return float(frame.mean())


@sp.register_python_op()
def seam_where(config, x: Any) -> Any:
    return (os.getpid(), threading.current_thread().name)


def frames(n=6, h=8, w=10):
    return np.stack([np.full((h, w, 3), i, np.uint8) for i in range(n)])


# 1 ---------------------------------------------------------------- multi-output layers
def test_an_output_of_a_multi_output_op_is_a_full_collection(client, tmp_path):
    sc = on(client, partition_size=2)
    small, sums = sc.ops.seam_split(frame=sc.io.Input([sp.MemoryStream(frames())]))
    graph = small.__dask_graph__()
    assert set(small.__dask_layers__()) <= set(graph.layers)
    (delayed,) = sums.to_delayed()
    assert [x for part in dask.compute(*delayed) for x in part] == [i * 240 for i in range(6)]
    (array,) = small.to_dask_array()
    assert array.sum().compute() == sum(i * 60 for i in range(6))
    (stored,) = sc.run(sc.io.Output(sums, [sp.NamedStream(sc, "sums")]), show_progress=False)
    assert list(stored.load()) == [i * 240 for i in range(6)]
    path = small.save_mp4(str(tmp_path / "small.mp4"))
    assert os.path.getsize(path) > 0


# 2 ---------------------------------------------------------------- unbounded state reads rows once
def test_unbounded_state_partitions_read_only_their_rows():
    sc = sp.Client(partition_size=4, show_progress=False)
    summed = sc.ops.SeamLockedSum(x=numbers(sc, 20))
    built = summed._build()
    plan = next(p for n, p in built.plans.items() if isinstance(n, OpNode)).streams[0]
    for part, window in zip(plan.parts, plan.windows):
        assert window.rows.tolist() == part.tolist()
    assert summed.compute()[0] == list(np.cumsum(range(20)))
    assert sc.streams.Gather(summed, [[5, 17]]).compute() == [[15, 153]]


# 3 ---------------------------------------------------------------- unpicklable chains on a cluster
def test_unbounded_state_with_an_unpicklable_kernel_on_a_cluster(cluster):
    with pytest.raises(TypeError):
        pickle.dumps(threading.Lock())
    with sp.Client(address=cluster, partition_size=3, show_progress=False) as sc:
        got = sc.ops.SeamLockedSum(x=numbers(sc, 13, 7)).compute()
    assert got == [list(np.cumsum(range(13))), list(np.cumsum(range(100, 107)))]


@pytest.mark.slow
def test_a_lost_worker_restarts_the_chain_with_the_same_result(tmp_path):
    distributed = pytest.importorskip("distributed")
    marker = str(tmp_path / "died")
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=":0",
                                  silence_logs=50) as cluster, \
            sp.Client(address=cluster, partition_size=4, show_progress=False) as sc:
        got = sc.ops.SeamLockedSum(x=numbers(sc, 30), die_at=17, marker=marker).compute()
    assert os.path.exists(marker)  # the worker did die
    assert got == [list(np.cumsum(range(30)))]


# 4 ---------------------------------------------------------------- stencil without offset 0 at nulls
def test_a_stencil_without_offset_zero_is_null_where_its_input_is(local_client):
    sc = local_client
    nulls = sc.streams.RepeatNull(numbers(sc, 3), [2])  # 0, None, 1, None, 2, None
    assert sc.ops.seam_previous(x=nulls).compute() == [
        [("ran", 0), None, ("ran", None), None, ("ran", None), None]]


# 5 ---------------------------------------------------------------- bounded_state=0 resets
def test_bounded_state_zero_resets_at_every_discontinuity():
    sc = sp.Client(partition_size=4, show_progress=False)
    counted = sc.ops.SeamCounter0(x=numbers(sc, 10))
    assert counted.compute() == [[0, 1, 2, 3, 0, 1, 2, 3, 0, 1]]
    assert sc.streams.Gather(counted, [[0, 1, 5, 6, 9]]).compute() == [[0, 1, 0, 1, 0]]


# 6 ---------------------------------------------------------------- deterministic keys
def test_the_same_pipeline_gets_the_same_keys_and_a_changed_body_others():
    def pipeline(sc):
        s = sc.io.Input([sp.MemoryStream(list(range(50)))])
        return sc.streams.Stride(sc.ops.seam_keyed(x=s), [3])

    @sp.register_python_op(name="seam_keyed")
    def first(config, x: Any) -> Any:
        return x + 1

    sc1, sc2 = sp.Client(show_progress=False), sp.Client(show_progress=False)
    keys = pipeline(sc1).__dask_keys__()
    assert pipeline(sc2).__dask_keys__() == keys
    assert dask.base.tokenize(pipeline(sc1)) == dask.base.tokenize(pipeline(sc2))

    @sp.register_python_op(name="seam_keyed")
    def second(config, x: Any) -> Any:
        return x + 2

    assert pipeline(sc1).__dask_keys__() != keys
    assert pipeline(sc1).compute() == [list(range(2, 52, 3))]


def test_dask_compute_shares_a_node_asked_for_different_rows(tmp_path):
    log = str(tmp_path / "calls")

    @sp.register_python_op(name="seam_logged")
    def logged(config, x: Any) -> Any:
        with open(log, "a") as f:
            f.write(f"{x} ")
        return x

    sc = sp.Client(show_progress=False)
    base = sc.ops.seam_logged(x=numbers(sc, 40))
    every, few = base, sc.streams.Gather(base, [[3, 30, 7]])
    got_every, got_few = dask.compute(every, few)
    assert got_every == [list(range(40))] and got_few == [[3, 30, 7]]
    assert sorted(map(int, calls_in(log))) == list(range(40))


# 7 ---------------------------------------------------------------- inputs are never mutated
def test_a_kernel_writing_into_its_input_changes_nothing_else(client):
    sc = on(client, partition_size=4)
    data = frames(10)
    original = data.copy()
    source = sc.io.Input([sp.MemoryStream(data)])
    scribbled, means = sc.ops.seam_scribble(frame=source), sc.ops.seam_mean(frame=source)
    got_scribbled, got_means, got_source = dask.compute(scribbled, means, source)
    assert np.array_equal(data, original)  # the user's array
    assert got_means == [[float(i) for i in range(10)]]  # the other consumer
    assert np.array_equal(got_source[0], original)
    assert (got_scribbled[0] == 7).all()


@sp.register_python_op()
def seam_add_one(config, frame: sp.FrameType) -> sp.FrameType:
    frame += 1  # writes into its input
    return frame


@sp.register_python_op(stencil=[0, 1])
def seam_step(config, frame: Sequence[sp.FrameType]) -> Any:
    current, following = frame
    step = int(following[0, 0, 0]) - int(current[0, 0, 0])
    current[...] = 0  # writes into its input, which the previous task's window holds too
    return step


@sp.register_python_op(stencil=[0, 1])
def seam_step_reference(config, frame: Sequence[sp.FrameType]) -> Any:
    current, following = frame
    return int(following[0, 0, 0]) - int(current[0, 0, 0])


def test_a_kernel_writing_into_its_input_under_overlaps_and_stencils(client):
    sc = on(client, partition_size=4)
    data = frames(10)
    source = sc.io.Input([sp.MemoryStream(data)])
    twice = sc.streams.Ranges(source, [[(0, 6), (2, 9)]])
    (got,) = sc.ops.seam_add_one(frame=twice).compute()
    assert [int(f[0, 0, 0]) for f in got] == [i + 1 for i in [*range(6), *range(2, 9)]]
    sliced = sc.streams.Slice(source, [sc.partitioner.ranges([(0, 5), (3, 10)])])
    (got,) = sc.streams.Unslice(sc.ops.seam_add_one(frame=sliced)).compute()
    assert [int(f[0, 0, 0]) for f in got] == [i + 1 for i in [*range(5), *range(3, 10)]]
    (expected,) = sc.ops.seam_step_reference(frame=source).compute()
    assert expected[:9] == [1] * 9
    for _ in range(3):  # every window sees its frames as they were, whichever task runs first
        assert sc.ops.seam_step(frame=source).compute() == [expected]
    steps, again = dask.compute(sc.ops.seam_step(frame=source), source)
    assert steps == [expected] and np.array_equal(again[0], data)


def test_results_never_alias_the_users_array(local_client):
    sc = local_client
    data = frames(4)
    with_nulls = sc.streams.RepeatNull(sc.io.Input([sp.MemoryStream(data)]), [2])
    (got,) = with_nulls.compute()
    assert isinstance(got, list) and got[1] is None
    got[0][...] = 99
    (whole,) = sc.io.Input([sp.MemoryStream(data)]).compute()
    whole[...] = 98
    assert np.array_equal(data, frames(4))


# 8 ---------------------------------------------------------------- Unslice keeps empty streams
def test_unslice_keeps_a_stream_that_has_no_slice(local_client):
    sc = local_client
    s = numbers(sc, 5, 4)
    sliced = sc.streams.Slice(s, [sc.partitioner.ranges([]), sc.partitioner.all(2)])
    back = sc.streams.Unslice(sliced)
    assert back.num_streams == 2 and back.lengths == [0, 4]
    got = back.compute()
    assert got == [[], [100, 101, 102, 103]]


# 9 ---------------------------------------------------------------- Dask keywords and config
def test_compute_takes_dask_keywords_and_honours_dask_config(local_client):
    sc = local_client
    where = sc.ops.seam_where(x=numbers(sc, 3))
    got = where.compute(scheduler="sync")[0]
    assert {name for _, name in got} == {threading.current_thread().name}
    with dask.config.set(scheduler="sync"):
        got = where.compute()[0]
    assert {name for _, name in got} == {threading.current_thread().name}
    assert sc.io.Input([sp.MemoryStream([1, 2])]).compute(optimize_graph=False) == [[1, 2]]


def test_delayed_and_arrays_of_a_cluster_client_run_on_the_workers(cluster):
    with sp.Client(address=cluster, show_progress=False) as sc:
        (delayed,) = sc.ops.seam_where(x=numbers(sc, 3)).to_delayed()
        pids = {pid for part in dask.compute(*delayed) for pid, _ in part}
        assert os.getpid() not in pids
        stream = sc.ops.seam_scribble(frame=sc.io.Input([sp.MemoryStream(frames(3))]))
        (array,) = stream.to_dask_array()
        assert int(array.sum().compute()) == 7 * array.size


# 10 --------------------------------------------------------------- errors and custom types
def test_an_unknown_op_is_a_scanner_error_and_hasattr_works(local_client):
    with pytest.raises(sp.ScannerError):
        _ = local_client.ops.NoSuchOp
    with pytest.raises(AttributeError):
        _ = local_client.ops.NoSuchOp
    assert not hasattr(local_client.ops, "NoSuchOp")


@sp.types.register_type
class SeamBox:
    """An element type whose values refuse pickling: only its serializer ships them."""

    def __init__(self, value):
        self.value = value

    def __reduce__(self):
        raise TypeError("SeamBox refuses pickling")

    @staticmethod
    def serialize(box):
        return str(box.value).encode()

    @staticmethod
    def deserialize(data):
        return SeamBox(int(data))


@sp.register_python_op()
def seam_unbox(config, box: SeamBox) -> Any:
    return box.value * 2


def test_custom_elements_in_memory_travel_by_their_serializer(client):
    sc = on(client, partition_size=2)
    boxes = sc.io.Input([sp.MemoryStream([SeamBox(i) for i in range(5)], type=SeamBox)])
    assert sc.ops.seam_unbox(box=boxes).compute() == [[0, 2, 4, 6, 8]]


# 11, 12 ----------------------------------------------------------- graph bytes per task
@sp.register_python_op()
class SeamConfigured(sp.Kernel):
    def new_stream(self, label):
        self.label = label

    def execute(self, x: Any) -> Any:
        return x


def _largest_task(stream, layer_prefix: str) -> int:
    graph = stream.__dask_graph__()
    sizes = [len(pickle.dumps(task)) for name, layer in graph.layers.items()
             if name.startswith(layer_prefix) for task in layer.values()]
    return max(sizes)


def test_op_tasks_do_not_grow_with_the_number_of_streams():
    sc = sp.Client(show_progress=False)

    def op(n):
        s = sc.io.Input([sp.MemoryStream([i]) for i in range(n)])
        return sc.ops.SeamConfigured(x=s, label=["x" * 100] * n)

    small, large = _largest_task(op(10), "seamconfigured"), _largest_task(op(1000), "seamconfigured")
    assert large < 1.2 * small + 64


def test_video_read_tasks_do_not_grow_with_the_length_of_the_video(tmp_path):
    short = make_video(tmp_path / "short.mp4", n_frames=24, width=32, height=32, gop=12)
    long = make_video(tmp_path / "long.mp4", n_frames=2400, width=32, height=32, gop=12)
    sc = sp.Client(db_path=str(tmp_path / "db"), partition_size=12, show_progress=False)

    def task_bytes(path, name):
        video = sc.io.Input([sp.NamedVideoStream(sc, name, path=path)])
        return _largest_task(sc.streams.Stride(video, [12]), "input")

    assert task_bytes(long, "long") < 1.2 * task_bytes(short, "short") + 64


# 13 --------------------------------------------------------------- linear graph building
@pytest.mark.slow
def test_building_stream_operations_is_linear_in_streams():
    sc = sp.Client(show_progress=False)

    def per_stream(n):
        s = sc.io.Input([sp.MemoryStream([1, 2, 3]) for _ in range(n)])
        start = time.perf_counter()
        sc.streams.Unslice(sc.streams.Slice(sc.streams.Stride(s, [2] * n),
                                            [sc.partitioner.all(1)] * n))._build()
        return (time.perf_counter() - start) / n

    per_stream(200)  # warm up
    # best of three: on a loaded machine one slow build is noise, a quadratic one is 4x always
    assert min(per_stream(4000) for _ in range(3)) < 2.5 * min(per_stream(1000) for _ in range(3))


# 14 --------------------------------------------------------------- partition_size and estimate()
def test_client_partition_size_is_kept_by_estimate(tmp_path):
    sc = sp.Client(db_path=str(tmp_path / "db"), partition_size=250, show_progress=False)
    video = sc.io.Input([sp.MemoryStream(np.zeros((2000, 4, 4, 3), np.uint8))])
    assert sp.PerfParams.estimate().partition_size_for(video) == 250
    (stored,) = sc.run(sc.io.Output(video, [sp.NamedStream(sc, "frames")]), show_progress=False)
    assert len(stored) == 2000
    assert len(video.with_perf_params(sp.PerfParams.estimate()).partitions_info()[0][
        "boundaries"]) == 8


# locks ------------------------------------------------------------- fetch_resources locks
def test_the_package_imports_without_fcntl():
    code = "import sys; sys.modules['fcntl'] = None; import scanner_nb, scanner_nb.runtime"
    subprocess.run([sys.executable, "-c", code], check=True,
                   env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})


@sp.register_python_op()
class SeamFetches(sp.Kernel):
    def fetch_resources(self):
        pass

    def execute(self, x: Any) -> Any:
        return x


def test_resource_locks_are_private_and_removed_at_close():
    from scanner_nb.runtime.instances import resource_folder

    sc = sp.Client(show_progress=False)
    assert sc.ops.SeamFetches(x=numbers(sc, 3)).compute() == [[0, 1, 2]]
    folder = resource_folder(sc.token)
    assert os.stat(folder).st_mode & 0o777 == 0o700 and os.listdir(folder)
    sc.close()
    assert not os.path.exists(folder)
