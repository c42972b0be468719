"""``Stream``: a lazy Dask collection of one or more streams of typed elements.

A ``Stream`` holds one output of a node of the logical plan. It is a real Dask collection
(the protocol ``dask.bag.Bag`` implements), so ``dask.compute(a, b)`` shares the work both need,
and ``persist``, ``to_delayed`` and ``to_dask_array`` interoperate with Dask.
"""

from __future__ import annotations

import copy
import dataclasses
import io
import uuid
import weakref
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import cloudpickle
import numpy as np
from dask.base import DaskMethodsMixin, tokenize
from dask.highlevelgraph import HighLevelGraph, MaterializedLayer

from . import runtime
from .errors import RowIndexError, ScannerTypeError
from .graph import Built, View, build_graph, build_union
from .plan import OpNode, Ref, SourceNode, topological
from .sources.persisted import PersistedSource

if TYPE_CHECKING:
    from .client import Client

__all__ = ["Stream", "preview"]


class Stream(DaskMethodsMixin):
    """A lazy collection of one or more streams; the result of every op and stream operation.

    Nothing is computed until ``compute()`` (or ``preview``, ``plot``, ``show_video``,
    ``sc.run``). Each stream is split into partitions of consecutive rows.

    Examples
    --------
    >>> sc = sp.Client(show_progress=False)                                  # doctest: +SKIP
    >>> nums = sc.io.Input([sp.MemoryStream([1, 2, 3]), sp.MemoryStream([4])])  # doctest: +SKIP
    >>> nums.compute()                                                       # doctest: +SKIP
    [[1, 2, 3], [4]]
    """

    def __init__(self, client: Client, ref: Ref, view: View | None = None):
        self._client = client
        self._ref = ref
        self._view = view or View()
        self._built: Built | None = None
        self._request: _Request | None = None

    # ------------------------------------------------------------ what it is
    @property
    def client(self) -> Client:
        """The client this stream belongs to."""
        return self._client

    @property
    def type_name(self) -> str:
        """The element type's registered name, e.g. ``"FrameType"``."""
        return self._ref.type.name

    @property
    def lengths(self) -> list[int]:
        """The length of each stream."""
        return list(self._ref.node.lengths)

    @property
    def num_streams(self) -> int:
        """How many streams (or slices) this collection holds."""
        return self._ref.node.n_streams

    @property
    def view(self) -> View:
        """Which rows, partition size and work packet this stream is computed with."""
        return self._view

    def _derive(self, **changes) -> Stream:
        """The same stream under another :class:`~scanner_nb.graph.View`."""
        derived = Stream(self._client, self._ref, View(**{**self._view.__dict__, **changes}))
        derived.storage_hint = self.storage_hint
        return derived

    def with_perf_params(self, perf_params) -> Stream:
        """This stream computed with a ``PerfParams``' partition and work packet sizes."""
        return self._derive(partition_size=perf_params.partition_size_for(self),
                            work_packet=perf_params.work_packet_size)

    # ------------------------------------------------------------ how sc.run stores it
    #: How ``sc.run`` stores this stream's frames: ``None`` is compressed video (the default);
    #: :meth:`compress_video` and :meth:`lossless` return a copy that says otherwise.
    storage_hint: dict | None = None

    def compress_video(self, quality: int = -1, bitrate: int = -1, keyframe_distance: int = -1,
                       codec: str = "h264") -> Stream:
        """This stream, to be stored by ``sc.run`` as video: ``quality`` is the CRF (0 best
        to 51; -1: the default, PSNR >= 40 dB), or a ``bitrate`` in bits/s (Scanner's spelling).

        Examples
        --------
        >>> out = sc.io.Output(frames.compress_video(quality=35), [sp.NamedVideoStream(sc, "c")])  # doctest: +SKIP
        """
        from .storage.codecs import video_options

        return self._stored_as(video_options(quality, codec, bitrate, keyframe_distance))

    def lossless(self) -> Stream:
        """This stream, to be stored by ``sc.run`` bit-exact (a Zarr array openable by path)."""
        return self._stored_as({"encoding": "zarr"})

    def _stored_as(self, storage: dict) -> Stream:
        if self.type_name != "FrameType":
            raise ScannerTypeError(f"only frame streams are stored as video or Zarr frames; "
                                   f"this stream holds {self.type_name} elements")
        stream = copy.copy(self)
        stream.storage_hint = storage
        return stream

    # ------------------------------------------------------------ graph
    def _build(self) -> Built:
        if self._built is None:
            view = self._view
            requested = self._requested_rows()
            size = view.partition_size
            size = self._client.partition_size if size == "session" else size
            session = self._client.session
            asked: list = []

            def workers():
                if not asked:
                    asked.append(session.workers())
                return asked[0]

            self._built = build_graph(self._ref, requested, size, session.token,
                                      self._client.instance_key, view.work_packet, workers,
                                      view.in_place)
            built = self._built
            self._request = _Request(
                (session.token, size, view.work_packet, view.in_place), self._client.instance_key,
                self._ref, requested, built.keys, built.rows, frozenset(built.graph.layers),
                tuple(asked[0] or ()) if asked else None)
        return self._built

    def _requested_rows(self) -> dict:
        requested = self._view.requested
        if requested is None:
            requested = {s: np.arange(n, dtype=np.int64) for s, n in enumerate(self.lengths)}
        return requested

    def _streams(self) -> list[int]:
        return sorted(self._build().keys)

    @staticmethod
    def __dask_optimize__(dsk, keys, **kwargs):
        """Several Streams computed together (``dask.compute(a, b)``): one row analysis of
        what they all need, so a node they ask for different rows of runs once."""
        return _optimize_together(dsk, keys)

    def __dask_graph__(self) -> HighLevelGraph:
        graph = self._build().graph
        marker = f"{_REQUEST}-{tokenize(self)}"  # what __dask_optimize__ needs, in the graph
        return HighLevelGraph({**graph.layers, marker: MaterializedLayer(
            {}, collection_annotations={_REQUEST: self._request})},
            {**graph.dependencies, marker: set()})

    def __dask_keys__(self) -> list:
        built = self._build()
        return [built.keys[s] for s in self._streams()]

    def __dask_layers__(self) -> tuple:
        built = self._build()
        return tuple({k[0] for keys in built.keys.values() for k in keys}) or tuple(
            self.__dask_graph__().layers)

    def __dask_tokenize__(self):
        view = self._view
        return (self._ref.node.token, self._ref.output, tokenize(view.requested),
                view.partition_size, view.work_packet, view.in_place)

    def __dask_postcompute__(self):
        return _finalize, (self.type_name,)

    def __dask_postpersist__(self):
        built = self._build()
        return _rebuild, (self._client, self.type_name, self.lengths, built.keys, built.rows)

    @property
    def __dask_scheduler__(self) -> Callable:
        return self._client.session.get

    # ------------------------------------------------------------ results
    def compute(self, progress: bool | None = None, perf_params=None, **kwargs) -> list:
        """Compute every stream.

        Parameters
        ----------
        progress : bool, optional
            Show a progress bar (default: the client's ``show_progress``).
        perf_params : PerfParams, optional
            Partition and work packet sizes.
        **kwargs
            Dask's own compute keywords (``scheduler="sync"``, ``optimize_graph=``, ...);
            ``dask.config.set(scheduler=...)`` is honoured as by any Dask collection.

        Returns
        -------
        list
            One entry per stream: an ``(n, H, W, C)`` numpy array for frame streams (a list
            where shapes differ or nulls occur), a list of elements otherwise; nulls are ``None``.
        """
        view = self if perf_params is None else self.with_perf_params(perf_params)
        session = self._client.session
        if session.lands_here(kwargs.get("scheduler")):  # decode frames into the result
            view = view._derive(in_place=True)
        return session.compute([view], progress=progress, label=self._ref.node.label,
                               **kwargs)[0]

    def persist(self, **kwargs) -> Stream:
        """Compute the partitions and keep them (in memory, or on the cluster's workers)."""
        return self._client.session.persist(self, **kwargs)

    def partitions_info(self) -> list[dict]:
        """Per stream: its length and the ``(start, end)`` rows of each partition."""
        built = self._build()
        return [{"length": n, "boundaries": [(int(r[0]), int(r[-1]) + 1) for r in built.rows.get(s, [])]}
                for s, n in enumerate(self.lengths)]

    def to_delayed(self) -> list[list]:
        """Per stream, a list of ``dask.delayed`` partitions, each computing to a list."""
        from dask.delayed import Delayed

        built = self._build()
        name = f"to-list-{tokenize(self)}"
        layer = {(name, s, p): (runtime.batch_to_list, k)
                 for s in self._streams() for p, k in enumerate(built.keys[s])}
        graph = HighLevelGraph.from_collections(name, layer, dependencies=[self])
        return [[Delayed((name, s, p), graph, layer=name) for p in range(len(built.keys[s]))]
                for s in self._streams()]

    def to_dask_array(self) -> list:
        """Frame streams: a list with one ``dask.array`` ``(n, H, W, C)`` per stream.

        The frame size is read from row 0 of each stream (computing that one row).
        """
        import dask.array as da

        if self.type_name != "FrameType":
            raise ScannerTypeError(
                f"to_dask_array needs a frame stream; this one holds {self.type_name} elements")
        built = self._build()
        arrays = []
        for s in self._streams():
            first = self.row(s, 0) if self.lengths[s] else np.zeros((0, 0, 3), np.uint8)
            name = f"frames-{tokenize(self, s)}"
            layer = {(name, p, 0, 0, 0): (_frames_of, k) for p, k in enumerate(built.keys[s])}
            graph = HighLevelGraph.from_collections(name, layer, dependencies=[self])
            chunks = (tuple(len(r) for r in built.rows[s]),) + tuple((d,) for d in first.shape)
            arrays.append(da.Array(graph, name, chunks, dtype=first.dtype))
        return arrays

    def row(self, stream_index: int, row: int) -> Any:
        """Compute one element, through the row analysis (only what that row needs)."""
        n = self._check_stream(stream_index)
        if not 0 <= row < n:
            raise RowIndexError(f"row {row} is outside stream {stream_index} of length {n}")
        view = self._derive(requested={stream_index: np.array([row], np.int64)})
        built = view._build()  # a handful of tasks: run at once, no pool round trips
        (batches,) = self._client.session.compute_now(built.graph, [built.keys[stream_index]])
        return _finalize([batches], self.type_name)[0][0]

    def rows(self, stream_index: int, rows: Sequence[int], progress: bool | None = False):
        """Compute the elements at ``rows`` of one stream (sorted, repeats allowed)."""
        n = self._check_stream(stream_index)
        wanted = np.asarray(rows, dtype=np.int64)
        if len(wanted) and (wanted.min() < 0 or wanted.max() >= n):
            raise RowIndexError(f"rows outside stream {stream_index} of length {n}")
        unique, inverse = np.unique(wanted, return_inverse=True)
        view = self._derive(requested={stream_index: unique})
        got = self._client.session.compute([view], progress=progress)[0][0]
        if isinstance(got, np.ndarray):
            return got[inverse]
        return [got[i] for i in inverse.tolist()]

    def iter_partitions(self, stream_index: int = 0, start: int = 0, end: int | None = None,
                        window: int = 4) -> Iterator[list]:
        """Yield rows ``start:end`` of one stream, a partition (a list) at a time, in order.

        Partitions are computed ``window`` at a time, so memory stays bounded however long the
        stream is.
        """
        n = self._check_stream(stream_index)
        end = n if end is None else max(start, min(end, n))
        if end <= start:
            return
        view = self._derive(requested={stream_index: np.arange(start, end, dtype=np.int64)})
        (delayed,) = view.to_delayed()
        for i in range(0, len(delayed), window):
            yield from self._client.session.compute(delayed[i:i + window], progress=False)

    def _check_stream(self, stream_index: int) -> int:
        if not 0 <= stream_index < self.num_streams:
            raise RowIndexError(
                f"stream {stream_index} does not exist; this collection has {self.num_streams}")
        return self.lengths[stream_index]

    def save_mp4(self, path: str, stream_index: int = 0, fps: float | None = None) -> str:
        """Encode one frame stream to an H.264 mp4 at ``path`` (``.mp4`` added when it has no
        extension, as Scanner did; partitions streamed); returns the path written."""
        from .sources.stored import mp4_path
        from .video import encode_mp4

        path = mp4_path(path)
        if self.type_name != "FrameType":
            raise ScannerTypeError(f"save_mp4 needs a frame stream, not {self.type_name}")
        self._check_stream(stream_index)
        frames = (f for part in self.iter_partitions(stream_index) for f in part if f is not None)
        encode_mp4(frames, path, fps=fps or self.fps(stream_index))
        return path

    def fps(self, stream_index: int = 0) -> float:
        """The frame rate of the video this stream comes from (24 when it has none)."""
        node = self._ref.node
        while node.inputs:
            node = node.inputs[0].node
        source = node.sources[min(stream_index, len(node.sources) - 1)]
        return float(source.fps or 24.0)

    # ------------------------------------------------------------ notebook
    def preview(self, render: Callable | None = None, compare: Sequence[Stream] = ()):
        """An ipywidgets preview: stream selector, slider with Play, the element drawn inline.

        Each step computes only the row shown (plus a small cache and prefetch while playing).
        ``compare=[other, ...]`` shows other streams beside this one on the same slider.
        """
        from .notebook.preview import Preview, Shown

        return Preview(self.row, self.lengths, is_frame=self.type_name == "FrameType",
                       render=render, stream_names=self._stream_names(), fps=self.fps(),
                       title=self._ref.node.label if compare else "",
                       compare=[Shown(o.row, o.lengths, o.type_name == "FrameType",
                                      o._ref.node.label) for o in compare])

    def plot(self, ax=None):
        """Plot scalar or vector elements against row index; returns the matplotlib ``Axes``."""
        from .notebook.plot import plot_elements

        node = self._ref.node
        while node.kind == "sample" and node.inputs:  # name the values after their op
            node = node.inputs[0].node
        return plot_elements(self.compute(progress=False), self._stream_names(), ax=ax,
                             ylabel=node.label)

    def show_video(self, stream_index: int = 0, start: int = 0, end: int | None = None,
                   fps: float | None = None):
        """An inline HTML5 ``<video>`` of rows ``start:end`` of a frame stream (H.264, base64)."""
        from .notebook.video import show_video_html

        if self.type_name != "FrameType":
            raise ScannerTypeError(f"show_video needs a frame stream, not {self.type_name}")
        n = self._check_stream(stream_index)
        end = n if end is None else max(start, min(end, n))
        frames = (f for part in self.iter_partitions(stream_index, start, end) for f in part
                  if f is not None)
        return show_video_html(frames, fps=fps or self.fps(stream_index), total=end - start)

    def _stream_names(self) -> list[str]:
        node = self._ref.node
        if node.slices is not None:
            return [f"stream {p} slice {j}" for p, j in node.slices]
        while node.inputs and not node.slices:
            node = node.inputs[0].node
        if isinstance(node, SourceNode) and len(node.sources) == self.num_streams:
            return [s.name or f"stream {i}" for i, s in enumerate(node.sources)]
        return [f"stream {i}" for i in range(self.num_streams)]

    def summary(self) -> dict:
        """The plan as plain data (nodes, streams, type) for reprs; computes nothing."""
        order = topological([self._ref.node])
        ids = {node: i for i, node in enumerate(order)}
        nodes = []
        for node in order:
            if isinstance(node, SourceNode):
                label = ", ".join(s.label for s in node.sources[:3]) + (
                    f" … {len(node.sources) - 3} more" if len(node.sources) > 3 else "")
                props = {"streams": node.n_streams, "type": node.types[0].name}
            elif isinstance(node, OpNode):
                label = node.label
                props = {**node.init_args, **node.config_args, **node.spec.properties,
                         "device": node.device.value}
            else:
                label, props = node.label, {"args": node.args}
            nodes.append({"id": ids[node], "kind": node.kind, "label": label, "props": props,
                          "inputs": [ids[r.node] for r in node.inputs]})
        names = self._stream_names()
        summary = {"type": self.type_name, "nodes": nodes,
                   "streams": [{"index": i, "length": n, "source": names[i]}
                               for i, n in enumerate(self.lengths)]}
        try:  # partition counts need the row analysis (no decoding); a repr never fails on it
            summary["partitions"] = [len(p["boundaries"]) for p in self.partitions_info()]
        except Exception:
            pass
        return summary

    def __repr__(self) -> str:
        node = self._ref.node
        shown = self.lengths[:8]
        more = f", … {self.num_streams - 8} more" if self.num_streams > 8 else ""
        return (f"<Stream {node.label}: {self.num_streams} stream(s) of {self.type_name}, "
                f"lengths {shown}{more}>")

    def _repr_html_(self) -> str:
        try:
            from .notebook.repr import plan_html

            return plan_html(self.summary())
        except Exception:
            import html

            return f"<pre>{html.escape(repr(self))}</pre>"


_REQUEST = "scanner-nb-request"


@dataclass(frozen=True, eq=False)
class _Request:
    """What the optimizer needs of one Stream to compute it together with others.

    It travels inside the Stream's graph (an empty layer's ``collection_annotations``), since
    Dask materializes graphs, and so runs ``__dask_optimize__``, where the scheduler is: in
    another process for a remote ``distributed`` scheduler.
    """

    setting: tuple  # session token, partition size, work packet, in place: must agree
    instance_key: Callable
    ref: Ref
    requested: dict
    keys: dict  # stream -> the Stream's partition keys (the union computes them under these)
    rows: dict  # stream -> rows of each of those partitions
    layers: frozenset  # the Stream's own layers, which the union replaces
    workers: tuple | None  # the cluster's workers, where building asked for them

    def __reduce__(self):
        """By value for a scheduler in another process; a plan that does not pickle (a stored
        stream's handle, elements that travel only by their type's serializer) goes by
        reference to this process, where an in-process scheduler finds it (a remote one finds
        ``None`` and computes the Streams apart: right results, shared work done for each)."""
        fields = tuple(getattr(self, f.name) for f in dataclasses.fields(self))
        try:  # tried apart, then sent in the graph's one pickle: requests share plan nodes
            _DataAside(io.BytesIO()).dump(fields)
        except Exception:  # noqa: BLE001 - what does not pickle raises many kinds
            key = uuid.uuid4().hex
            _HERE[key] = self
            return (_made_here, (key,))
        return (_Request, fields)


class _DataAside(cloudpickle.CloudPickler):
    """A pickler that tells whether something pickles without copying its arrays' data: a
    numeric array always pickles, so it is written as an empty one (in-memory frames cost
    nothing to check)."""

    def reducer_override(self, obj):
        if type(obj) is np.ndarray and not obj.dtype.hasobject:
            return np.empty, (0,)
        return super().reducer_override(obj)


_HERE: weakref.WeakValueDictionary = weakref.WeakValueDictionary()  # key -> request made here


def _made_here(key: str) -> _Request | None:
    return _HERE.get(key)


def _optimize_together(dsk, keys):
    markers = {n for n in dsk.layers if n.startswith(_REQUEST)}
    requests = [dsk.layers[n].collection_annotations[_REQUEST] for n in sorted(markers)]
    requests = [r for r in requests if r is not None]
    ours, union = set(markers), HighLevelGraph({}, {})
    if len(requests) > 1 and all(r.setting == requests[0].setting for r in requests) and not (
            requests[0].setting[3]):  # in place: each result array is its own
        first = requests[0]
        session, size, work_packet, _ = first.setting
        workers = None if first.workers is None else (lambda: list(first.workers))
        union = build_union([(r.ref, r.requested, r.keys, r.rows) for r in requests], size,
                            session, first.instance_key, work_packet, workers)
        ours.update(*(r.layers for r in requests))
    layers = {n: layer for n, layer in dsk.layers.items() if n not in ours}  # finalize tasks
    deps = {n: (set(dsk.dependencies.get(n, ())) - ours) | (
        set(union.layers) if set(dsk.dependencies.get(n, ())) & (ours - markers) else set())
        for n in layers}
    return HighLevelGraph({**layers, **union.layers}, {**deps, **union.dependencies})


def _finalize(results, type_name: str) -> list:
    return [runtime.assemble_stream(batches, type_name) for batches in results]


def _frames_of(batch):
    return np.asarray(runtime.on_host(batch.elements))


def _rebuild(dsk, client, type_name, lengths, keys, rows, rename=None):
    graph = dict(dsk)
    sources = [PersistedSource(type_name, n, keys.get(s, []), rows.get(s, []), graph)
               for s, n in enumerate(lengths)]
    return Stream(client, Ref(SourceNode(sources)))


def preview(stream: Stream, *others: Stream, render: Callable | None = None):
    """Preview several collections side by side on one slider and one Play.

    ``sp.preview(a, b)`` is ``a.preview(compare=[b])``: each step computes the shown row once
    per collection.

    Examples
    --------
    >>> sp.preview(frames, sc.ops.Blur(frame=frames, kernel_size=5, sigma=1))  # doctest: +SKIP
    """
    if not isinstance(stream, Stream) or not all(isinstance(o, Stream) for o in others):
        raise ScannerTypeError("sp.preview takes Streams (from sc.io.Input, an op or sc.streams)")
    return stream.preview(render=render, compare=list(others))
