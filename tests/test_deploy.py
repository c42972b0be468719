"""scanner_nb in the shape a deployment has: an object store and a cluster started from the CLI.

A local S3-compatible server (moto, on 127.0.0.1) holds the input videos and the database. The
fast tests use the threaded scheduler; the deployment test starts ``dask scheduler`` and two
``dask worker`` processes from the command line, each in its own working directory with no
credentials of its own, and drives them from here: the storage options reach the workers with
the graph, ops defined in this module run there, and a worker SIGKILLed mid-run loses nothing.
"""

from __future__ import annotations

import io
import json
import logging
import os
import signal
import threading
import time
from typing import Any

import boto3
import numpy as np
import pytest
from conftest import AWS_KEYS, NO_CREDENTIALS, wait_for
from moto.server import ThreadedMotoServer

import scanner_nb as sp
from scanner_nb.samples import frame_index, make_video
from scanner_nb.storage import Database
from scanner_nb.types import Batch

BUCKET = "scanner"


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    """A local S3 server with a bucket holding ``videos/clip.mp4``; yields storage_options."""
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # moto logs every request at INFO
    with pytest.MonkeyPatch.context() as mp:
        for key, value in NO_CREDENTIALS.items():
            mp.setenv(key, value)
        for key in AWS_KEYS:
            mp.delenv(key, raising=False)
        server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        server.start()
        try:
            host, port = server.get_host_and_port()
            options = {"key": "testing", "secret": "testing",
                       "endpoint_url": f"http://{host}:{port}",
                       "client_kwargs": {"region_name": "us-east-1"}}
            store = boto3.client("s3", endpoint_url=options["endpoint_url"],
                                 aws_access_key_id="testing", aws_secret_access_key="testing",
                                 region_name="us-east-1")
            store.create_bucket(Bucket=BUCKET)
            clip = make_video(str(tmp_path_factory.mktemp("videos") / "clip.mp4"), n_frames=48,
                              gop=12)
            store.upload_file(clip, BUCKET, "videos/clip.mp4")
            yield options
        finally:
            server.stop()


@pytest.fixture
def db_url(request):
    return f"s3://{BUCKET}/db-{request.node.name.replace('[', '-').rstrip(']')}"


@sp.register_python_op()
def frame_number(config, frame: sp.FrameType) -> Any:
    return frame_index(frame)


@sp.register_python_op()
def slow_square(config, x: Any, trail: str = "") -> Any:
    time.sleep(0.02)
    with open(trail, "a") as f:  # one line per row, from whichever worker process
        f.write(f"{os.getpid()}\n")
    return x * x


# ------------------------------------------------------------------ the store, threaded scheduler


def test_video_input_and_database_on_s3(s3, db_url, tmp_path):
    with sp.Client(db_path=db_url, storage_options=s3, show_progress=False) as sc:
        video = sp.NamedVideoStream(sc, "clip", path=f"s3://{BUCKET}/videos/clip.mp4")
        assert video.path == f"s3://{BUCKET}/videos/clip.mp4"  # no abspath of a URL
        assert video.exists() and len(video) == 48 and video.fps == 24.0
        frames = sc.streams.Stride(sc.io.Input([video]), [5])
        assert [frame_index(f) for f in frames.compute()[0]] == list(range(0, 48, 5))
        numbers = sc.ops.frame_number(frame=frames)
        (stored,) = sc.run(sc.io.Output(numbers, [sp.NamedStream(sc, "numbers")]),
                           show_progress=False)
        assert list(stored.load(rows=[1, 9])) == [5, 45]
        assert list(sp.NamedStream(sc, "numbers").load()) == list(range(0, 48, 5))
        assert [frame_index(f) for f in video.load(rows=[0, 47])] == [0, 47]
        assert not sp.NamedVideoStream(sc, "gone", path=f"s3://{BUCKET}/videos/gone.mp4").exists()


def test_an_s3_video_index_is_cached_in_the_database(s3, db_url, caplog):
    import fsspec

    from scanner_nb.video import index_cache_path

    url = f"s3://{BUCKET}/videos/clip.mp4"
    with sp.Client(db_path=db_url, storage_options=s3, show_progress=False) as sc:
        sc.io.Input([sp.NamedVideoStream(sc, "clip", path=url)])
        cache = index_cache_path(url, sc.index_cache_dir)
    store = fsspec.filesystem("s3", **s3)
    assert cache.startswith(f"{db_url}/.video-index/") and store.exists(cache)
    with caplog.at_level(logging.DEBUG, logger="scanner_nb"), sp.Client(
            db_path=db_url, storage_options=s3, show_progress=False) as sc:
        video = sp.NamedVideoStream(sc, "clip", path=url)
        assert len(video) == 48 and video.index.keyframes.tolist() == [0, 12, 24, 36]
    assert "read from the cache" in caplog.text
    store.pipe_file(cache, b"PK not an index")  # a damaged cache is data: indexed again
    with sp.Client(db_path=db_url, storage_options=s3, show_progress=False) as sc:
        assert len(sp.NamedVideoStream(sc, "clip", path=url)) == 48
        assert sc.db.names() == []  # the cache is no stored stream


def test_missing_video_on_s3_is_video_not_found(s3, db_url):
    with sp.Client(db_path=db_url, storage_options=s3, show_progress=False) as sc:
        with pytest.raises(sp.VideoNotFoundError, match="gone.mp4"):
            sc.io.Input([sp.NamedVideoStream(sc, "gone", path=f"s3://{BUCKET}/videos/gone.mp4")])


def test_no_credentials_is_a_storage_error_before_any_work(s3, db_url):
    anonymous = {k: v for k, v in s3.items() if k not in ("key", "secret")}
    with sp.Client(db_path=db_url, storage_options=anonymous, show_progress=False) as sc:
        out = sc.io.Output(sc.io.Input([sp.MemoryStream([1, 2])]), [sp.NamedStream(sc, "s")])
        with pytest.raises(sp.StorageError, match=r"cannot reach 's3://.*NoCredentialsError.*"
                                                  r"storage_options"):
            sc.run(out, show_progress=False)
        with pytest.raises(sp.StorageError, match="clip.mp4.*NoCredentialsError"):
            sp.NamedVideoStream(sc, "clip", path=f"s3://{BUCKET}/videos/clip.mp4").index  # noqa: B018


def test_a_file_object_is_not_a_path(s3, tmp_path):
    with sp.Client(db_path=str(tmp_path / "db"), show_progress=False) as sc:
        with pytest.raises(sp.ScannerTypeError, match="path or an fsspec URL.*BytesIO"):
            sp.NamedVideoStream(sc, "clip", path=io.BytesIO(b""))
        with pytest.raises(sp.ScannerTypeError, match="storage_options must be a dict"):
            sp.Client(storage_options="key=1")


# ------------------------------------------------------------------ many outputs on the store


@sp.register_python_op()
def store_meanwhile(config, x: Any, url: str = "", options: str = "") -> Any:
    """``x * 10``; at ``x == 3`` another "run" stores stream ``o3`` (straight to the database)."""
    if x == 3:
        db = Database(url, storage_options=json.loads(options))
        writer = db.begin("o3", "Any", 1, 1)
        db.commit([writer], [[writer.write_chunk(0, Batch(0, np.arange(1), ["other"]))]])
    return x * 10


def outputs(sc, names, values, op=None):
    """One ``sc.io.Output`` storing ``values[i]`` (a list) as stream ``names[i]``."""
    streams = sc.io.Input([sp.MemoryStream(list(v)) for v in values])
    return sc.io.Output(op(streams) if op else streams, [sp.NamedStream(sc, n) for n in names])


def versions(sc, name) -> list[str]:
    """The version folders of stream ``name`` in the store."""
    stream_dir = f"{sc.db.root}/{name}/"
    found = {p[len(stream_dir):].split("/")[0] for p in sc.db.fs.find(stream_dir)}
    return sorted(v for v in found if v.startswith("v-"))


def loaded(sc, names) -> list:
    return [list(sp.NamedStream(sc, n).load()) for n in names]


def test_many_outputs_on_s3_follow_the_cache_modes(s3, db_url):
    names = [f"o{i}" for i in range(40)]
    with sp.Client(db_path=db_url, storage_options=s3, show_progress=False) as sc:
        sc.run(outputs(sc, names, [[1, i] for i in range(40)]), show_progress=False)
        assert loaded(sc, names) == [[1, i] for i in range(40)]
        with pytest.raises(sp.StreamExistsError, match=r"\['o0', 'o1', .*'o39'\] exist"):
            sc.run(outputs(sc, ["new"] + names, [[2]] * 41), show_progress=False)
        assert not sp.NamedStream(sc, "new").exists()
        stored = sc.run(outputs(sc, ["new"] + names[:5], [[3]] * 6),
                        cache_mode=sp.CacheMode.Ignore, show_progress=False)
        assert [s.name for s in stored] == ["new"] + names[:5]
        assert loaded(sc, ["new"] + names[:5]) == [[3]] + [[1, i] for i in range(5)]
        sc.run(outputs(sc, names, [[4, i] for i in range(40)]),
               cache_mode=sp.CacheMode.Overwrite, show_progress=False)
        assert loaded(sc, names) == [[4, i] for i in range(40)]
        assert sc.db.names() == sorted(names + ["new"])
        # each stream keeps only the version it shows: the replaced ones were swept
        assert [versions(sc, n) for n in names] == [[sc.db.manifest(n)["version"]]
                                                     for n in names]


@pytest.mark.parametrize("mode", [sp.CacheMode.Error, sp.CacheMode.Ignore])
def test_an_output_stored_by_another_run_meanwhile_on_s3(s3, db_url, mode):
    names = [f"o{i}" for i in range(12)]
    with sp.Client(db_path=db_url, storage_options=s3, show_progress=False) as sc:
        def op(streams):
            return sc.ops.store_meanwhile(x=streams, url=db_url, options=json.dumps(s3))

        out = outputs(sc, names, [[i] for i in range(12)], op)
        if mode is sp.CacheMode.Error:
            with pytest.raises(sp.StreamExistsError, match=r"\['o3'\] were stored by another"):
                sc.run(out, cache_mode=mode, show_progress=False)
            assert sc.db.names() == ["o3"]  # the run committed none of its outputs
        else:
            sc.run(out, cache_mode=mode, show_progress=False)
            assert loaded(sc, names) == [["other"] if i == 3 else [10 * i] for i in range(12)]
        assert list(sp.NamedStream(sc, "o3").load()) == ["other"]
        assert [versions(sc, n) for n in sc.db.names()] == [[sc.db.manifest(n)["version"]]
                                                           for n in sc.db.names()]


def test_names_with_glob_characters_on_s3(s3, db_url):
    """Streams named with glob characters are replaced, swept and deleted like any other (bulk
    removal never globs)."""
    names = ["a*", "a[b]", "ab", "a?"]
    with sp.Client(db_path=db_url, storage_options=s3, show_progress=False) as sc:
        for value in (1, 2):
            sc.run(outputs(sc, names, [[value, i] for i in range(4)]),
                   cache_mode=sp.CacheMode.Overwrite, show_progress=False)
            assert loaded(sc, names) == [[value, i] for i in range(4)]
        assert [versions(sc, n) for n in names] == [[sc.db.manifest(n)["version"]]
                                                     for n in names]
        sp.NamedStream(sc, "a*").delete()
        assert sc.db.names() == ["a?", "a[b]", "ab"] and loaded(sc, ["ab"]) == [[2, 2]]


class Requests(logging.Handler):
    """Counts the requests the S3 server answers (from its access log)."""

    def __init__(self):
        super().__init__()
        self.count = 0

    def emit(self, record):
        self.count += '"' in record.getMessage()


def test_a_run_makes_a_few_store_requests_per_output(s3, db_url):
    """A first store, a check that they exist, an overwrite: the requests grow by a few per
    output (the client's made together, not one after the other; 21 and 29 before), two of
    them (the chunk, a listing) on the workers."""
    log = logging.getLogger("werkzeug")
    counter = Requests()
    per_run = {}
    with sp.Client(db_path=db_url, storage_options=s3, show_progress=False) as sc:
        log.addHandler(counter)
        log.setLevel(logging.INFO)
        try:
            for n in (5, 25):
                names = [f"n{n}-{i}" for i in range(n)]
                for mode in (sp.CacheMode.Error, sp.CacheMode.Ignore, sp.CacheMode.Overwrite):
                    before = counter.count
                    sc.run(outputs(sc, names, [[i] for i in range(n)]), cache_mode=mode,
                           show_progress=False)
                    per_run[n, mode] = counter.count - before
        finally:
            log.setLevel(logging.WARNING)
            log.removeHandler(counter)
        assert loaded(sc, [f"n25-{i}" for i in range(25)]) == [[i] for i in range(25)]
    extra = {mode.name: round((per_run[25, mode] - per_run[5, mode]) / 20)
             for mode in (sp.CacheMode.Error, sp.CacheMode.Ignore, sp.CacheMode.Overwrite)}
    # first store: exists? (1), lock, chunk, the seal's listing (which the sweep reuses), the
    # manifest read, checked again and written; all exist: exists? (1); overwrite: lock,
    # chunk, listing, manifest read and written, the sweep's read of the manifest
    assert extra == {"Error": 7, "Ignore": 1, "Overwrite": 6}


# ------------------------------------------------------------------ a cluster from the CLI


@pytest.mark.deploy
@pytest.mark.slow
def test_cli_cluster_s3_store_and_a_worker_killed_mid_run(s3, db_url, cli_cluster, tmp_path,
                                                          caplog):
    caplog.set_level(logging.WARNING, logger="scanner_nb")
    address, workers = cli_cluster
    with sp.Client(address=address, db_path=db_url, storage_options=s3, partition_size=10,
                   show_progress=False) as sc:
        sc.distributed.wait_for_workers(2, timeout=60)
        assert set(sc.distributed.run(os.getpid).values()) == set(workers)

        # video inputs read from s3:// on the workers, stored on s3://, loaded by rows
        video = sp.NamedVideoStream(sc, "clip", path=f"s3://{BUCKET}/videos/clip.mp4")
        numbers = sc.ops.frame_number(frame=sc.io.Input([video]))
        (stored,) = sc.run(sc.io.Output(numbers, [sp.NamedStream(sc, "numbers")]),
                           show_progress=False)
        assert list(stored.load()) == list(range(48))
        assert list(stored.load(rows=[3, 47])) == [3, 47]
        ran_on = sc.distributed.run(lambda: os.getcwd())
        assert len(set(ran_on.values())) == 2  # separate working directories

        # a worker SIGKILLed mid-run: the run finishes with the same result, or fails with a
        # ScannerError and commits nothing; never a half-written stream
        trail = str(tmp_path / "trail")
        values = list(range(300))
        squares = sc.ops.slow_square(x=sc.io.Input([sp.MemoryStream(values)]), trail=trail)
        out = sc.io.Output(squares, [sp.NamedStream(sc, "squares")])

        def rows_done() -> int:
            try:
                with open(trail) as f:
                    return len(f.read().split())
            except FileNotFoundError:
                return 0

        outcome: dict = {}

        def run():
            try:
                outcome["streams"] = sc.run(out, show_progress=False)
            except BaseException as exc:  # noqa: BLE001 - checked below
                outcome["error"] = exc

        thread = threading.Thread(target=run)
        thread.start()
        wait_for(lambda: rows_done() >= 60, "the run to be under way")
        victim = next(iter(workers.values()))
        mid_run = thread.is_alive()
        os.kill(victim.pid, signal.SIGKILL)
        thread.join(120)
        assert mid_run and not thread.is_alive()
        assert victim.wait(10) == -signal.SIGKILL
        target = sp.NamedStream(sc, "squares")
        # the client says which worker left and which partitions are computed again
        wait_for(lambda: "left the cluster while computing" in caplog.text, "the log line")
        assert "sc.run squares" in caplog.text
        if "error" in outcome:
            assert isinstance(outcome["error"], sp.ScannerError), repr(outcome["error"])
            assert not target.exists()
        else:
            assert list(target.load()) == [v * v for v in values]
            assert list(target.load(rows=[0, 299])) == [0, 299 * 299]


def test_fsio_docstring_examples():
    import doctest

    from scanner_nb import fsio

    assert doctest.testmod(fsio).failed == 0
