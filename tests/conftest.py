"""Shared fixtures: clients on the threaded scheduler and on a real 2-worker LocalCluster."""

from __future__ import annotations

import os

import pytest

import scanner_nb as sp


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
