"""Shared fixtures: clients on the threaded scheduler and on a real 2-worker LocalCluster, and
a cluster started from the `dask` CLI (a scheduler in another process)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

import scanner_nb as sp

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(sp.__file__)))
TESTS = os.path.dirname(os.path.abspath(__file__))
# botocore must never look for credentials outside this machine (the EC2 metadata address):
# every process here gets its credentials from storage_options, or has none at all.
NO_CREDENTIALS = {"AWS_EC2_METADATA_DISABLED": "true", "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
                  "AWS_CONFIG_FILE": os.devnull}
AWS_KEYS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE")


@pytest.fixture(scope="session")
def cluster():
    """A real dask.distributed LocalCluster: 2 worker processes, 1 thread each."""
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=":0", silence_logs=40) as cluster:
        yield cluster


@pytest.fixture(params=["threads", "cluster"])
def client(request, tmp_path):
    """An ``sp.Client`` on each scheduler whose results must match."""
    db = str(tmp_path / "db")
    if request.param == "threads":
        sc = sp.Client(db_path=db, show_progress=False)
    else:
        sc = sp.Client(address=request.getfixturevalue("cluster"), db_path=db,
                       show_progress=False)
    yield sc
    sc.close()


@pytest.fixture
def local_client(tmp_path):
    """An ``sp.Client`` on the local threaded scheduler."""
    with sp.Client(db_path=str(tmp_path / "db"), show_progress=False) as sc:
        yield sc


def calls_in(path) -> list[str]:
    """Lines appended to ``path`` by kernels (works across worker processes)."""
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return f.read().split()


def _start(args: list[str], cwd, env) -> subprocess.Popen:
    """``python -m dask <args>`` in its own folder, its log in ``cwd/log``."""
    os.makedirs(cwd, exist_ok=True)
    with open(os.path.join(cwd, "log"), "w") as log:  # the child keeps its own copy
        return subprocess.Popen([sys.executable, "-m", "dask", *args], cwd=cwd, env=env,
                                stdout=subprocess.DEVNULL, stderr=log)


def wait_for(predicate, what: str, timeout: float = 60.0):
    """Poll ``predicate`` until it is truthy; its value, or an AssertionError after ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
def cli_cluster(tmp_path):
    """``dask scheduler`` and two ``dask worker --nthreads 1`` processes, each in its own
    folder; the workers find this module (its ops) and scanner_nb on their path, and have no
    credentials of their own. Yields (scheduler address, {worker pid: process})."""
    env = {k: v for k, v in os.environ.items() if k not in AWS_KEYS}
    env.update(NO_CREDENTIALS, PYTHONPATH=os.pathsep.join([ROOT, TESTS]))
    procs = []
    try:
        sched_file = str(tmp_path / "scheduler.json")
        procs.append(_start(["scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard",
                             "--scheduler-file", sched_file], tmp_path / "scheduler", env))
        wait_for(lambda: os.path.exists(sched_file) and os.path.getsize(sched_file),
                  "the scheduler")
        with open(sched_file) as f:
            address = json.load(f)["address"]
        workers = {}
        for name in ("w1", "w2"):
            proc = _start(["worker", address, "--name", name, "--nthreads", "1", "--no-nanny",
                           "--no-dashboard", "--host", "127.0.0.1", "--local-directory",
                           str(tmp_path / name / "space")], tmp_path / name, env)
            procs.append(proc)
            workers[proc.pid] = proc
        yield address, workers
    finally:
        for proc in procs[::-1]:  # the workers first, then the scheduler
            proc.terminate()
        for proc in procs[::-1]:
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
