"""The client: schedulers, addresses, closing, progress."""

from __future__ import annotations

import os
from typing import Any

import distributed
import pytest

import scanner_nb as sp


def test_address_forms_give_the_same_results(cluster):
    data = [sp.MemoryStream(list(range(7)))]
    expected = [list(range(7))]
    with sp.Client(address=cluster.scheduler_address, show_progress=False) as by_string:
        assert by_string.io.Input(data).compute() == expected
    user_client = distributed.Client(cluster, set_as_default=False)
    with sp.Client(address=user_client, show_progress=False) as by_client:
        assert by_client.io.Input(data).compute() == expected
    assert user_client.status == "running"  # close() never closes a client passed in
    user_client.close()
    with sp.Client(address=cluster, show_progress=False) as by_cluster:
        assert by_cluster.io.Input(data).compute() == expected
    assert cluster.status.name == "running"


def test_bad_arguments():
    with pytest.raises(sp.ScannerTypeError, match="address must be"):
        sp.Client(address=42)
    with pytest.raises(sp.ScannerValueError, match="partition_size"):
        sp.Client(partition_size=0)
    sc = sp.Client(show_progress=False)
    with pytest.raises(sp.ScannerTypeError, match="non-empty list"):
        sc.io.Input([])
    with pytest.raises(sp.ScannerTypeError, match="share one element type"):
        sc.io.Input([sp.MemoryStream([1]), sp.MemoryStream([b"x"], type=bytes)])


def test_close_closes_kernel_instances(tmp_path):
    log = tmp_path / "closed"

    @sp.register_python_op(name="closing")
    class Closing(sp.Kernel):
        def execute(self, x: Any) -> Any:
            return x

        def close(self):
            with open(log, "a") as f:
                f.write("closed\n")

    with sp.Client(show_progress=False) as sc:
        sc.ops.closing(x=sc.io.Input([sp.MemoryStream([1, 2])])).compute()
        assert not log.exists()
    assert log.read_text().split() == ["closed"]


def test_progress_bar_in_a_terminal(capsys):
    sc = sp.Client(show_progress=True)
    assert sc.io.Input([sp.MemoryStream(list(range(5)))]).compute() == [list(range(5))]
    assert "Input" in capsys.readouterr().err  # the bar is labelled with the root op


def test_repr_and_summary_compute_nothing():
    sc = sp.Client(show_progress=False)

    @sp.register_python_op(name="never_runs")
    def never_runs(config, x: Any) -> Any:
        raise AssertionError("repr must not compute")

    s = sc.streams.Stride(sc.ops.never_runs(x=sc.io.Input([sp.MemoryStream(list(range(10)))])), [2])
    assert "Stride" in repr(s) and "[5]" in repr(s)
    html = s._repr_html_()
    assert "never_runs" in html and "Stride" in html
    summary = s.summary()
    assert [n["kind"] for n in summary["nodes"]] == ["source", "op", "sample"]
    assert summary["streams"] == [{"index": 0, "length": 5, "source": "stream 0"}]


def test_default_partition_sizes():
    sc = sp.Client(show_progress=False)
    info = sc.io.Input([sp.MemoryStream(list(range(100_000)))]).partitions_info()[0]
    assert {e - s for s, e in info["boundaries"][:-1]} == {4096}
    small = sc.io.Input([sp.MemoryStream(list(range(200)))]).partitions_info()[0]
    assert len(small["boundaries"]) == -(-200 // max(64, -(-200 // (4 * os.cpu_count()))))
