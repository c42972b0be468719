"""scanner_nb.progress: the bar counts output partitions by op name, locally and on a real
LocalCluster (moving while the compute runs), and cluster failures become ScannerErrors."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
import time
from typing import Any

import pytest

import scanner_nb as sp
from scanner_nb import progress


@sp.register_python_op(name="progress_slow")
def slow(config, x: Any) -> Any:
    time.sleep(0.3)
    return x * 2


@sp.register_python_op(name="progress_fragile")
def fragile(config, x: Any) -> Any:
    if x == 5:
        raise ValueError("bad value")
    return x


@sp.register_python_op(name="progress_crash")
def crash(config, x: Any) -> Any:
    os._exit(3)  # the worker process dies, as with a segfault or the OOM killer


def _numbers(sc, n=8):
    return sc.io.Input([sp.MemoryStream(list(range(n)))])


def test_local_bar_counts_partitions_with_the_op_name(capsys):
    sc = sp.Client(partition_size=2, show_progress=False)
    stream = sc.ops.progress_slow(x=_numbers(sc))
    result = progress.compute([stream], scheduler=sc.scheduler, label="progress_slow")
    assert result == [[[2 * i for i in range(8)]]]
    err = capsys.readouterr().err
    assert "progress_slow: 100%" in err and "4/4" in err and "partition" in err
    assert "/11" not in err  # not Dask's task count


def test_cluster_bar_moves_while_the_compute_runs(cluster, capfd):
    sc = sp.Client(address=cluster, partition_size=2, show_progress=False)
    stream = sc.ops.progress_slow(x=_numbers(sc))
    result = progress.compute([stream], dclient=sc.distributed, label="progress_slow")
    assert result == [[[2 * i for i in range(8)]]]
    err = capfd.readouterr().err
    states = re.findall(r"progress_slow:\s+\d+%\|[^|]*\| (\d)/4", err)
    assert states[0] == "0" and states[-1] == "4" and max(map(int, states)) == 4
    assert {"1", "2", "3"} & set(states), f"the bar never moved mid-compute: {states}"
    sc.close()


def test_kernel_error_on_a_cluster_is_reported_once(cluster, capfd):
    sc = sp.Client(address=cluster, partition_size=2, show_progress=True)
    with pytest.raises(sp.KernelError) as info:
        sc.ops.progress_fragile(x=_numbers(sc)).compute()
    assert (info.value.op, info.value.stream, info.value.row) == ("progress_fragile", 0, 5)
    assert info.value.frames[-1][2] == "fragile"  # the kernel's frame crossed processes
    time.sleep(0.5)  # let the workers' stderr arrive
    err = capfd.readouterr().err
    assert "Compute Failed" not in err  # the workers' log line is filtered
    assert "2/4" in err or "1/4" in err or "0/4" in err  # the bar, stopped where it failed
    sc.close()


def test_no_live_workers_is_a_scanner_error_within_seconds(monkeypatch):
    distributed = pytest.importorskip("distributed")
    monkeypatch.setattr(progress, "NO_WORKERS_TIMEOUT", 1.0)
    with distributed.LocalCluster(n_workers=0, dashboard_address=":0") as empty:
        sc = sp.Client(address=empty, show_progress=False)
        start = time.monotonic()
        with pytest.raises(sp.ScannerError, match="no live workers"):
            sc.ops.progress_slow(x=_numbers(sc)).compute()
        assert time.monotonic() - start < 10
        sc.close()


@pytest.mark.slow
def test_killed_worker_names_the_op():
    distributed = pytest.importorskip("distributed")
    import dask

    with dask.config.set({"distributed.scheduler.allowed-failures": 0}), \
            distributed.LocalCluster(n_workers=1, threads_per_worker=1, dashboard_address=":0",
                                     silence_logs=50) as one:
        sc = sp.Client(address=one, show_progress=False)
        with pytest.raises(sp.ScannerError, match="progress_crash") as info:
            sc.ops.progress_crash(x=_numbers(sc, 2)).compute()
        assert "died" in str(info.value)
        sc.close()


@pytest.mark.slow
def test_interrupt_keeps_workers_of_a_protected_local_cluster(tmp_path):
    """SIGINT to the process group (what Jupyter's interrupt does) spares protected workers."""
    script = tmp_path / "interrupt.py"
    script.write_text(textwrap.dedent("""
        import os, signal, sys, time
        import distributed
        import scanner_nb as sp
        from scanner_nb import progress
        from scanner_nb.notebook import keep_workers_on_interrupt

        progress.NO_WORKERS_TIMEOUT = 2.0
        if __name__ == "__main__":
            cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1,
                                               dashboard_address=":0", silence_logs=50)
            if sys.argv[1] == "protected":
                keep_workers_on_interrupt(cluster)
            sc = sp.Client(address=cluster, show_progress=False)
            nums = sc.io.Input([sp.MemoryStream([1, 2, 3])])
            print("before", nums.compute(), flush=True)
            try:
                os.killpg(os.getpgrp(), signal.SIGINT)
                time.sleep(2)
            except KeyboardInterrupt:
                pass
            time.sleep(2)
            try:
                print("after", nums.compute(), flush=True)
            except sp.ScannerError as exc:
                print("error", exc, flush=True)
            sc.close()
            cluster.close()
    """))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    outs = {}
    for mode in ("protected", "plain"):
        proc = subprocess.run([sys.executable, str(script), mode], capture_output=True,
                              text=True, timeout=120, start_new_session=True, env=env,
                              check=False)
        outs[mode] = proc.stdout
    assert "after [[1, 2, 3]]" in outs["protected"], outs
    assert "error the Dask cluster" in outs["plain"] and "no live workers" in outs["plain"], outs


def test_a_runs_bar_counts_its_partition_writes(client, tmp_path, capfd):
    sc = client
    out = sc.io.Output(_numbers(sc, 40), [sp.NamedStream(sc, "counted")])
    sc.run(out, sp.PerfParams.manual(10, 10), show_progress=True)
    err = capfd.readouterr().err
    assert "100%" in err and " 4/4 " in err, err  # 40 rows in partitions of 10
