"""The engine on a scheduler in another process (``dask scheduler`` and ``dask worker`` from the
CLI): ``dask.compute`` of Streams sharing work runs the shared work once there too, since the
scheduler materializes (and so optimizes) the graph without this process's objects."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from typing import Any

import dask
import pytest
from conftest import calls_in

import scanner_nb as sp

TESTS = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(TESTS)


@sp.register_python_op(name="remote_logged")
def remote_logged(config, x: Any, log: str = "") -> Any:
    """Appends its input to the file ``log`` (on whichever worker runs it)."""
    with open(log, "a") as f:
        f.write(f"{x} ")
    return x


@sp.register_python_op(name="remote_shift")
def remote_shift(config, x: Any, by: int = 0) -> Any:
    return x + by


def _start(args: list[str], cwd, env) -> subprocess.Popen:
    os.makedirs(cwd, exist_ok=True)
    with open(os.path.join(cwd, "log"), "w") as log:  # the child keeps its own copy
        return subprocess.Popen([sys.executable, "-m", "dask", *args], cwd=cwd, env=env,
                                stdout=subprocess.DEVNULL, stderr=log)


@pytest.fixture
def remote_address(tmp_path):
    """A ``dask scheduler`` and one ``dask worker --nthreads 2``, each its own process, that
    find scanner_nb and this module on their path. Yields the scheduler's address."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([ROOT, TESTS])}
    sched_file = tmp_path / "scheduler.json"
    procs = [_start(["scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard",
                     "--scheduler-file", str(sched_file)], tmp_path / "scheduler", env)]
    try:
        deadline = time.monotonic() + 30
        while not (sched_file.exists() and sched_file.stat().st_size):
            assert time.monotonic() < deadline and procs[0].poll() is None, "no scheduler"
            time.sleep(0.05)
        address = json.loads(sched_file.read_text())["address"]
        procs.append(_start(["worker", address, "--nthreads", "2", "--no-nanny", "--no-dashboard",
                             "--host", "127.0.0.1", "--local-directory",
                             str(tmp_path / "worker" / "space")], tmp_path / "worker", env))
        yield address
    finally:
        for proc in procs[::-1]:  # the worker first, then the scheduler
            proc.terminate()
        for proc in procs[::-1]:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)


@pytest.mark.slow
def test_dask_compute_on_a_remote_scheduler_runs_shared_work_once(remote_address, tmp_path):
    log = str(tmp_path / "calls")
    with sp.Client(address=remote_address, partition_size=8, show_progress=False) as sc:
        sc.distributed.wait_for_workers(1, timeout=30)
        base = sc.ops.remote_logged(x=sc.io.Input([sp.MemoryStream(list(range(60)))]), log=log)
        every, few = base, sc.streams.Gather(base, [[3, 50, 7]])
        shifted = sc.ops.remote_shift(x=base, by=100)
        got_every, got_few, got_shifted = dask.compute(every, few, shifted)
    assert got_every == [list(range(60))] and got_few == [[3, 50, 7]]
    assert got_shifted == [list(range(100, 160))]
    assert sorted(map(int, calls_in(log))) == list(range(60))  # each kernel call once
