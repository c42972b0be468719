"""The engine on a scheduler in another process (conftest's ``cli_cluster``: ``dask scheduler``
and ``dask worker`` from the CLI): ``dask.compute`` of Streams sharing work runs the shared work
once there too, though that scheduler materializes (and so optimizes) the graph."""

from __future__ import annotations

from typing import Any

import dask
import pytest
from conftest import calls_in

import scanner_nb as sp


@sp.register_python_op(name="remote_logged")
def remote_logged(config, x: Any, log: str = "") -> Any:
    """Appends its input to the file ``log`` (on whichever worker runs it)."""
    with open(log, "a") as f:
        f.write(f"{x} ")
    return x


@sp.register_python_op(name="remote_shift")
def remote_shift(config, x: Any, by: int = 0) -> Any:
    return x + by


@pytest.mark.slow
def test_dask_compute_on_a_remote_scheduler_runs_shared_work_once(cli_cluster, tmp_path):
    address, _ = cli_cluster
    log = str(tmp_path / "calls")
    with sp.Client(address=address, partition_size=8, show_progress=False) as sc:
        sc.distributed.wait_for_workers(2, timeout=30)
        base = sc.ops.remote_logged(x=sc.io.Input([sp.MemoryStream(list(range(60)))]), log=log)
        every, few = base, sc.streams.Gather(base, [[3, 50, 7]])
        shifted = sc.ops.remote_shift(x=base, by=100)
        got_every, got_few, got_shifted = dask.compute(every, few, shifted)
    assert got_every == [list(range(60))] and got_few == [[3, 50, 7]]
    assert got_shifted == [list(range(100, 160))]
    assert sorted(map(int, calls_in(log))) == list(range(60))  # each kernel call once


@pytest.mark.slow
def test_stored_and_video_inputs_share_work_on_a_remote_scheduler(cli_cluster, tmp_path):
    from scanner_nb.samples import make_video

    address, _ = cli_cluster
    log, video_log = str(tmp_path / "calls"), str(tmp_path / "video_calls")
    path = make_video(str(tmp_path / "v.mp4"), n_frames=24, gop=8, width=64, height=48)
    with sp.Client(address=address, db_path=str(tmp_path / "db"), partition_size=8,
                   show_progress=False) as sc:
        sc.distributed.wait_for_workers(2, timeout=30)
        sc.run(sc.io.Output(sc.io.Input([sp.MemoryStream(list(range(40)))]),
                            [sp.NamedStream(sc, "numbers")]), show_progress=False)
        base = sc.ops.remote_logged(x=sc.io.Input([sp.NamedStream(sc, "numbers")]), log=log)
        got = dask.compute(base, sc.ops.remote_shift(x=base, by=1))
        frames = sc.io.Input([sp.NamedVideoStream(sc, "v", path=path)])
        sizes = sc.ops.remote_logged(x=sc.ops.remote_shape(frame=frames), log=video_log)
        got_sizes = dask.compute(sizes, sc.streams.Gather(sizes, [[0, 23]]))
    assert got == ([list(range(40))], [list(range(1, 41))])
    assert sorted(map(int, calls_in(log))) == list(range(40))  # once each, though two outputs
    assert got_sizes == ([[48] * 24], [[48, 48]])
    assert calls_in(video_log) == ["48"] * 24


@sp.register_python_op(name="remote_shape")
def remote_shape(config, frame: sp.FrameType) -> Any:
    return int(frame.shape[0])
