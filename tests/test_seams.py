"""Where the engine, storage, video and notebook pieces meet, as a user hits them (both
schedulers); each test failed before its fix."""

from __future__ import annotations

import scanner_nb as sp


def store(sc, name, values, mode=sp.CacheMode.Error):
    stream = sc.io.Input([sp.MemoryStream(values)])
    return sc.run(sc.io.Output(stream, [sp.NamedStream(sc, name)]), cache_mode=mode,
                  show_progress=False)[0]


def test_a_stream_built_on_a_stored_stream_reads_that_version_after_an_overwrite(client):
    sc = client
    store(sc, "h", list(range(10)))
    handle = sp.NamedStream(sc, "h")
    built = sc.io.Input([handle])
    keys = built.__dask_keys__()
    store(sc, "h", list(range(100, 120)), sp.CacheMode.Overwrite)
    assert len(handle) == 20  # the handle names the stream: it sees the new version
    # the Stream built before keeps its version whole: its length, keys and data agree
    assert built.compute() == [list(range(10))]
    assert built.__dask_keys__() == keys
    rebuilt = sc.io.Input([handle])
    assert rebuilt.compute() == [list(range(100, 120))]
    assert rebuilt.__dask_keys__() != keys
