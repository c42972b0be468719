"""``logging.getLogger("scanner_nb")``: silent by default, and a message where the README says."""

from __future__ import annotations

import doctest
import io
import logging
import os

import scanner_nb as sp
from scanner_nb import log
from scanner_nb.devices import DeviceType, choose_device, normalize_device_sets
from scanner_nb.samples import make_video
from scanner_nb.video import index_video


def test_silent_by_default_and_a_child_per_module():
    root = logging.getLogger("scanner_nb")
    assert root is log.logger and root.level == logging.NOTSET and root.propagate
    assert [type(h) for h in root.handlers] == [logging.NullHandler]
    assert log.get_logger("video") is logging.getLogger("scanner_nb.video")


def test_docstring_examples():
    assert doctest.testmod(log).failed == 0


def test_enable_prints_and_replaces_its_handler():
    first, out = io.StringIO(), io.StringIO()
    try:
        log.enable(logging.INFO, first)
        handler = log.enable(logging.INFO, out)
        log.get_logger("storage").info("swept %d", 2)
        log.get_logger("video").debug("not shown at INFO")
    finally:
        log.logger.removeHandler(handler)
        log.logger.setLevel(logging.NOTSET)
    assert first.getvalue() == ""
    assert out.getvalue() == "scanner_nb.storage INFO: swept 2\n"
    assert [type(h) for h in log.logger.handlers] == [logging.NullHandler]


def test_gpu_to_cpu_fallback_is_logged(caplog):
    sets = normalize_device_sets([(DeviceType.CPU, 1), (DeviceType.GPU, 1)], None)
    with caplog.at_level(logging.INFO, logger="scanner_nb"):
        assert choose_device("Blur", sets, gpu_usable=False, reason="no CuPy") is DeviceType.CPU
    (record,) = [r for r in caplog.records if r.name == "scanner_nb.devices"]
    assert record.levelno == logging.INFO
    assert record.getMessage() == ("op 'Blur' falls back to the CPU: no GPU is usable where the "
                                   "graph runs (no CuPy)")


def test_index_cache_use_is_logged(caplog, tmp_path):
    path = make_video(str(tmp_path / "a.mp4"), n_frames=12, gop=6)
    cache = str(tmp_path / "cache")
    with caplog.at_level(logging.DEBUG, logger="scanner_nb.video"):
        index_video(path, cache)
        index_video(path, cache)
    messages = [r.getMessage() for r in caplog.records if r.name == "scanner_nb.video"]
    assert len(messages) == 2
    assert messages[0].startswith(f"indexed {path!r} (12 frames), cached in ")
    assert messages[1].startswith(f"index of {path!r} read from the cache ")


def test_leftover_sweep_is_logged(caplog, tmp_path):
    with sp.Client(db_path=str(tmp_path / "db"), show_progress=False) as sc:
        out = sc.io.Output(sc.io.Input([sp.MemoryStream([1, 2, 3])]), [sp.NamedStream(sc, "s")])
        sc.run(out, show_progress=False)
        leftover = "v-20000101T000000-cccccccccccc"  # a failed run's version, without a lock
        os.makedirs(os.path.join(str(tmp_path / "db"), "s", leftover))
        with caplog.at_level(logging.INFO, logger="scanner_nb.storage"):
            sc.run(out, cache_mode=sp.CacheMode.Overwrite, show_progress=False)
        assert list(sp.NamedStream(sc, "s").load()) == [1, 2, 3]
    messages = [r.getMessage() for r in caplog.records if r.name == "scanner_nb.storage"]
    assert any(m.startswith("stream 's': swept ") and leftover in m for m in messages)
