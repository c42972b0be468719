"""``Client``: the facade users hold. Where graphs run is its :class:`~scanner_nb.session.Session`;
it owns ``sc.ops`` (calling an op builds a plan node), ``sc.streams``, ``sc.io``,
``sc.partitioner`` and ``sc.run``.
"""

from __future__ import annotations

import inspect
import itertools
import os
from collections.abc import Callable, Sequence
from typing import Any

from dask.base import tokenize

from .devices import DeviceType, choose_device, gpu_available, gpu_unavailable_reason
from .errors import ScannerTypeError, ScannerValueError
from .kernel import OpSpec, lookup_op, op_names
from .plan import OpNode, Ref, SourceNode
from .session import Session
from .sources.base import Source, check_sources
from .stream import Stream
from .streamops import Partitioner, StreamOps, per_stream

__all__ = ["Client"]

#: Op properties a call may give (Scanner's spelling), overriding the decorator's for that call.
CALL_PROPERTIES = ("batch", "stencil", "bounded_state", "unbounded_state", "device")
_KEPT_PROFILES = 32  # profiles of the latest runs a client keeps


class Client:
    """Entry point: builds graphs and runs them.

    Parameters
    ----------
    address : str, distributed.Client or cluster, optional
        ``None`` (default) runs on the local threaded Dask scheduler. A scheduler address
        (``"tcp://host:8786"``), a ``distributed.Client`` or a cluster (``LocalCluster``) runs
        on that cluster. A client or cluster passed in is never closed by :meth:`close`.
    db_path : str, optional
        Where stored streams live: any fsspec URL. Default: ``$SCANNER_NB_DB``, else
        ``~/.scanner_nb/db``.
    partition_size : int, optional
        Rows per partition. ``None`` (default): about 64 MiB of frames a partition, 4,096 rows
        of other elements, whole groups of pictures for videos (see README, "Partitions").
    show_progress : bool
        Whether ``compute()`` shows a progress bar (a widget in Jupyter, text in a terminal).
    trust_pickle : bool
        Load pickled elements of stored streams this user did not store (a shared db).
        Off by default: unpickling runs code chosen by whoever wrote them.
    storage_options : dict, optional
        fsspec's options for ``db_path`` and for video inputs given by URL (``s3://...``):
        an endpoint, credentials, ... They travel with the graph, so every worker reads and
        writes the store with them (no environment to set on each worker).

    Examples
    --------
    >>> with Client(show_progress=False) as sc:
    ...     sc.io.Input([MemoryStream([1, 2, 3])]).compute()
    [[1, 2, 3]]
    """

    def __init__(self, address: Any = None, db_path: str | None = None,
                 partition_size: int | None = None, show_progress: bool = True,
                 trust_pickle: bool = False, storage_options: dict | None = None):
        if partition_size is not None and (isinstance(partition_size, bool) or not isinstance(
                partition_size, int) or partition_size < 1):
            raise ScannerValueError(f"partition_size must be an int >= 1, got {partition_size!r}")
        self.session = Session(address, show_progress)
        self.partition_size = partition_size
        if storage_options is not None and not isinstance(storage_options, dict):
            raise ScannerTypeError(
                f"storage_options must be a dict, got {type(storage_options).__name__}")
        self.storage_options = dict(storage_options or {})
        self._db_path = db_path
        self._trust_pickle = bool(trust_pickle)
        self._db = None
        self._gpu_usable: bool | None = None
        self.ops = _Ops(self)
        self.streams = StreamOps(self)
        self.io = _IO(self)
        self.partitioner = Partitioner()
        self._job_ids = itertools.count()
        self._profiles: dict = {}

    # ------------------------------------------------------------ storage
    @property
    def db(self):
        """The database of stored streams (``db_path``)."""
        if self._db is None:
            from .fsio import check_access
            from .storage import Database, default_db_path

            url = self._db_path or default_db_path()
            check_access(url, self.storage_options)  # no credentials: say so before any work
            self._db = Database(url, storage_options=self.storage_options,
                                trust_pickle=self._trust_pickle)
        return self._db

    def gc(self, include_open: bool = False) -> list[str]:
        """Reclaim the space of stored versions nothing reads any more (see ``Database.gc``):
        replaced or deleted versions and leftovers of failed runs; returns what was removed."""
        return self.db.gc(include_open=include_open)

    @property
    def index_cache_dir(self) -> str:
        """Where video indexes are cached: the database's ``.video-index`` folder, on the disk
        or in the store (``s3://bucket/db/.video-index``), which every worker reads."""
        from .fsio import is_url
        from .names import default_db_path

        url = self._db_path or default_db_path()
        if is_url(url):
            return url.rstrip("/") + "/.video-index"
        return os.path.join(os.path.abspath(os.path.expanduser(url.removeprefix("file://"))),
                            ".video-index")

    def run(self, outputs, perf_params=None, cache_mode=None, show_progress: bool = True,
            profiling: bool = False, task_timeout: int = 0, checkpoint_frequency: int = 10,
            detach: bool = False, profiler_level: int = 1) -> list:
        """Compute and store outputs (``sc.io.Output``); returns the stored streams in order.

        Parameters
        ----------
        outputs : Output or list of Output
            Stored streams (``sp.NamedStream``, ``sp.NamedVideoStream``) or files
            (``sp.FilesStream``).
        perf_params : PerfParams, optional
            Default ``PerfParams.estimate()``.
        cache_mode : CacheMode
            ``Error`` (default) refuses before any work if an output exists; ``Ignore`` skips
            outputs that exist; ``Overwrite`` replaces them once the new content is complete.
        show_progress : bool
            A progress bar (a widget in Jupyter, text in a terminal).
        profiling : bool
            Scanner's switch; every run is profiled here (one timing per task, from Dask), so
            ``sc.get_profile(job)`` works either way.
        task_timeout, checkpoint_frequency, detach, profiler_level
            Scanner's options, accepted; Dask schedules, retries and profiles the tasks.

        Returns
        -------
        Job
            A list of the stored streams (or FilesStreams), in order, also carrying the job's
            id for :meth:`get_profile` (Scanner's ``sc.run`` returned a job id).
        """
        from .profile import Job, Profile, Recorder
        from .run import CacheMode, Output, PerfParams, run_outputs
        from .sources.files import FilesOutput, write_files

        listed = [outputs] if isinstance(outputs, (Output, FilesOutput)) else list(outputs)
        files = [o for o in listed if isinstance(o, FilesOutput)]
        named = [o for o in listed if not isinstance(o, FilesOutput)]
        cache_mode = cache_mode or CacheMode.Error
        if not isinstance(cache_mode, CacheMode):
            raise ScannerTypeError(f"cache_mode must be an sp.CacheMode, got {cache_mode!r}")
        job_id = next(self._job_ids)
        with Recorder(self.distributed) as recorder:
            stored = run_outputs(self, named, perf_params, cache_mode, show_progress) if (
                named or not files) else []
            if files:
                write_files(self, files, perf_params or PerfParams.estimate(), cache_mode,
                            show_progress, note=recorder.note)
        self._profiles[job_id] = Profile(job_id, recorder.events)
        while len(self._profiles) > _KEPT_PROFILES:
            self._profiles.pop(next(iter(self._profiles)))
        stored_iter, result = iter(stored), []
        for o in listed:
            result.extend(o.targets if isinstance(o, FilesOutput) else
                          [next(stored_iter) for _ in o.targets])
        return Job(result, job_id)

    def get_profile(self, job):
        """The profile of a run: ``job`` is what ``sc.run`` returned (or its ``job_id``).

        Returns a :class:`~scanner_nb.profile.Profile`: ``write_trace(path)`` writes a Chrome
        trace, ``summary()`` a table per op.
        """
        job_id = getattr(job, "job_id", job)
        try:
            return self._profiles[job_id]
        except (KeyError, TypeError):
            raise ScannerValueError(
                f"no profile of job {job!r}: give what sc.run returned (the last "
                f"{_KEPT_PROFILES} runs of this client are kept)") from None

    def summarize(self) -> str:
        """A text table of the stored streams in the database: name, type, rows, stored size."""
        rows = []
        for name in self.db.names():
            m = self.db.manifest(name)
            rows.append((name, str(m.get("type")), str(m.get("length")),
                         f"{(m.get('nbytes') or 0) / 1e6:.1f} MB"))
        if not rows:
            return f"summarize: no stored streams in {self.db.url}"
        header = ("name", "type", "rows", "stored")
        widths = [max(len(r[i]) for r in [header, *rows]) for i in range(4)]
        fmt = " | ".join(f"{{:{w}}}" for w in widths)
        line = "-+-".join("-" * w for w in widths)
        return "\n".join([f"stored streams in {self.db.url}", fmt.format(*header), line]
                         + [fmt.format(*r) for r in rows])

    # ------------------------------------------------------------ scheduling
    @property
    def token(self) -> str:
        """The session's token (``fetch_resources`` runs once per machine per session)."""
        return self.session.token

    @property
    def distributed(self):
        """The ``distributed.Client`` graphs run on, or ``None`` for local threads."""
        return self.session.distributed

    @property
    def show_progress(self) -> bool:
        """Whether computes show a progress bar unless told otherwise."""
        return self.session.show_progress

    @show_progress.setter
    def show_progress(self, value: bool) -> None:
        self.session.show_progress = bool(value)

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` ran."""
        return self.session.closed

    @property
    def scheduler(self) -> Callable:
        """The ``get`` function graphs of this client run with."""
        return self.session.get

    def has_gpu(self) -> bool:
        """Scanner's name for :meth:`gpu_usable`."""
        return self.gpu_usable()

    def gpu_usable(self) -> bool:
        """Whether a GPU is usable where graphs run (here, or on every worker of the cluster)."""
        if self.distributed is None:
            return gpu_available()  # cheap after the first probe; honours SCANNER_NB_DISABLE_GPU
        if self._gpu_usable is None:
            found = self.distributed.run(gpu_available)
            self._gpu_usable = bool(found) and all(found.values())
        return self._gpu_usable

    @staticmethod
    def instance_key(node: OpNode) -> str:
        """The key kernel instances of ``node`` are shared under: op version and init args (a
        plain function: it travels with graphs to a remote scheduler)."""
        return f"{node.spec.name}-{node.spec.token}-{tokenize(node.init_args)}-{node.device.value}"

    def compute_collections(self, collections: Sequence, progress: bool | None = None,
                            **kwargs) -> list:
        """Compute dask collections where this client runs graphs (see ``Session.compute``)."""
        return self.session.compute(collections, progress=progress, **kwargs)

    # ------------------------------------------------------------ ops
    def _call_op(self, spec: OpSpec, args: tuple, kwargs: dict):
        listed = {p.name for p in spec.stream_params} | set(spec.init_params) | set(
            spec.config_params)
        overrides = {k: kwargs.pop(k) for k in CALL_PROPERTIES if k in kwargs and k not in listed}
        if overrides:  # Scanner's op properties given at the call
            spec = spec.with_properties(overrides)
        op = spec.name
        streams: list[tuple[str, Any]] = []
        if spec.variadic:
            streams = [(f"{spec.stream_params[0].name}[{i}]", a) for i, a in enumerate(args)]
            if not streams:
                raise ScannerTypeError(f"op {op!r} takes one or more streams as positional args")
        else:
            if len(args) > len(spec.stream_params):
                raise ScannerTypeError(
                    f"op {op!r} takes {len(spec.stream_params)} stream(s), got {len(args)} "
                    f"positional argument(s)")
            given = dict(zip((p.name for p in spec.stream_params), args))
            for p in spec.stream_params:
                if p.name in kwargs:
                    if p.name in given:
                        raise ScannerTypeError(f"op {op!r} got stream {p.name!r} twice")
                    given[p.name] = kwargs.pop(p.name)
                if p.name not in given:
                    raise ScannerTypeError(f"op {op!r} is missing stream param {p.name!r}")
                streams.append((p.name, given[p.name]))
        for (name, value), param in zip(streams, spec.stream_params * len(streams)):
            if not isinstance(value, Stream):
                raise ScannerTypeError(
                    f"op {op!r}: stream param {name!r} takes a Stream (from sc.io.Input, an op "
                    f"or sc.streams), got {type(value).__name__}")
            if param.type.name not in ("Any", value.type_name):
                raise ScannerTypeError(
                    f"op {op!r}: stream param {name!r} takes {param.type.name} elements, got a "
                    f"stream of {value.type_name}")
        first = streams[0][1]
        for name, value in streams[1:]:
            if value.lengths != first.lengths:
                raise ScannerValueError(
                    f"op {op!r}: stream param {name!r} has streams of lengths {value.lengths} but "
                    f"{streams[0][0]!r} has {first.lengths}; inputs must match in count and length")
            if value._ref.node.slices != first._ref.node.slices:
                raise ScannerValueError(
                    f"op {op!r}: stream param {name!r} is sliced differently from {streams[0][0]!r}")
        init_args, config_args = {}, {}
        for key, value in kwargs.items():
            if key in spec.config_params:
                config_args[key] = per_stream(value, first, f"op {op!r} stream-config param {key!r}")
            elif key in spec.init_params or spec.init_accepts_any or spec.function is not None:
                init_args[key] = value
            else:
                known = [p.name for p in spec.stream_params] + list(spec.init_params) + list(
                    spec.config_params)
                raise ScannerTypeError(
                    f"op {op!r} got an unknown keyword argument {key!r}; it takes {known}")
        for table, given, what in ((spec.init_params, init_args, "init"),
                                   (spec.config_params, config_args, "stream-config")):
            for name, default in table.items():
                if name not in given:
                    if default is inspect.Parameter.empty:
                        raise ScannerTypeError(f"op {op!r} is missing {what} param {name!r}")
                    if what == "stream-config":
                        given[name] = [default] * first.num_streams
        _check_values(spec, init_args, config_args, first.num_streams)
        device = choose_device(op, spec.device_sets, self.gpu_usable(),
                               reason=gpu_unavailable_reason()) if any(
            d is DeviceType.GPU for d, _ in spec.device_sets) else DeviceType.CPU
        node = OpNode(spec, [value._ref for _, value in streams], init_args, config_args, device)
        outputs = [Stream(self, Ref(node, i)) for i in range(len(spec.outputs))]
        return outputs[0] if len(outputs) == 1 else tuple(outputs)

    # ------------------------------------------------------------ lifecycle
    def close(self) -> None:
        """Close kernel instances (here and on the workers), remove this client's resource
        locks, and close any cluster client made here."""
        self.session.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<scanner_nb.Client on {self.session!r}, partition_size={self.partition_size}>"



def _check_values(spec: OpSpec, init_args: dict, config_args: dict, n_streams: int) -> None:
    """Run the kernel's ``check_args`` per stream; its errors become the op call's errors."""
    if spec.function is not None:
        return
    check = spec.kernel_cls.check_args
    for s in range(n_streams):
        try:
            check(**init_args, **{k: v[s] for k, v in config_args.items()})
        except (ValueError, TypeError) as exc:
            kind = ScannerValueError if isinstance(exc, ValueError) else ScannerTypeError
            where = f" (stream {s})" if config_args and n_streams > 1 else ""
            raise kind(f"op {spec.name!r}{where}: {exc}") from exc


class _OpCall:
    """``sc.ops.Name``: calling it adds the op to the plan and returns its output stream(s)."""

    def __init__(self, client: Client, spec: OpSpec):
        self._client, self.spec = client, spec
        self.__name__ = spec.name
        self.__doc__ = (spec.function or spec.kernel_cls).__doc__

    def __call__(self, *args, **kwargs):
        return self._client._call_op(self.spec, args, dict(kwargs))

    def __repr__(self) -> str:
        params = [p.name for p in self.spec.stream_params]
        return f"<op {self.spec.name}: streams {params}, init {list(self.spec.init_params)}, " \
               f"stream-config {list(self.spec.config_params)}>"


class _Ops:
    """``sc.ops``: every registered op, by name."""

    def __init__(self, client: Client):
        self._client = client

    def __getattr__(self, name: str) -> _OpCall:
        if name.startswith("__"):
            raise AttributeError(name)
        return _OpCall(self._client, lookup_op(name))

    def __dir__(self) -> list[str]:
        return op_names()


class _IO:
    """``sc.io``: ``Input`` turns stream sources into a Stream; ``Output`` names stored results."""

    def __init__(self, client: Client):
        self._client = client

    def Input(self, sources: Sequence) -> Stream:
        """A Stream reading ``sources`` (MemoryStream, NamedVideoStream, NamedStream), one each."""
        if not isinstance(sources, (list, tuple)) or not sources:
            raise ScannerTypeError("sc.io.Input takes a non-empty list of streams")
        bad = [s for s in sources if not isinstance(s, Source)]
        if bad:
            raise ScannerTypeError(
                f"sc.io.Input takes MemoryStream, NamedVideoStream or NamedStream objects, got "
                f"{type(bad[0]).__name__}")
        types = {s.type_name for s in sources}
        if len(types) > 1:
            raise ScannerTypeError(f"sc.io.Input streams must share one element type, got {sorted(types)}")
        check_sources(list(sources), self._client.session)
        return Stream(self._client, Ref(SourceNode([s.fixed() for s in sources])))

    def Output(self, stream: Stream, targets: Sequence):
        """Name where each stream of ``stream`` is stored by ``sc.run`` (one per stream):
        ``sp.NamedStream``/``sp.NamedVideoStream``, or ``sp.FilesStream`` (a file per element)."""
        from .run import Output
        from .sources.files import FilesOutput, FilesStream

        if isinstance(targets, (list, tuple)) and targets and all(
                isinstance(t, FilesStream) for t in targets):
            if not isinstance(stream, Stream):
                raise ScannerTypeError(f"sc.io.Output takes a Stream, got {type(stream).__name__}")
            return FilesOutput(stream, targets)
        return Output(stream, targets)
