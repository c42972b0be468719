"""Profiles of runs: which task ran where and when, as Scanner's ``sc.get_profile(job)``.

Every ``sc.run`` records one event per Dask task: its op (or stream operation, or ``input``),
the stream and the rows of its partition, start and end, and the worker thread. The timings come
from Dask itself: :class:`dask.diagnostics.Profiler` on the local threaded scheduler,
:func:`distributed.get_task_stream` on a cluster; the op, stream and rows of each task come from
the graph's row analysis (each layer of the graph is one node of the plan, each task one of its
partitions). :meth:`Profile.write_trace` writes a Chrome trace (``chrome://tracing``, Perfetto)
and :meth:`Profile.summary` a table per op. Dask's timings are per scheduler, so tasks of
other computations running at the same time on it (another thread's ``compute``) are recorded
too, named by their Dask keys.

Examples
--------
>>> job = sc.run(output, sp.PerfParams.estimate(), profiling=True)      # doctest: +SKIP
>>> profile = sc.get_profile(job)                                        # doctest: +SKIP
>>> profile.write_trace("resize.trace")                                  # doctest: +SKIP
>>> print(profile.summary())                                             # doctest: +SKIP
"""

from __future__ import annotations

import ast
import contextvars
import json
import re
from dataclasses import dataclass
from typing import Any

__all__ = ["Job", "Profile", "TaskEvent", "Recorder", "note_built"]

_ACTIVE: contextvars.ContextVar[Recorder | None] = contextvars.ContextVar(
    "scanner_nb_profile", default=None)


class Job(list):
    """What ``sc.run`` returns: the stored streams in order (a list), carrying the run's
    ``job_id`` for ``sc.get_profile(job)`` (Scanner's ``sc.run`` returned a job id)."""

    def __init__(self, streams, job_id: int):
        super().__init__(streams)
        self.job_id = job_id


@dataclass(frozen=True)
class TaskEvent:
    """One task of a run.

    Attributes
    ----------
    op : str
        The op's name, a stream operation (``Stride``, ...), ``Input`` for reading a source,
        or what the task does otherwise (``store``, ``write``).
    stream : int or None
        The stream (or slice) index of the partition.
    rows : tuple or None
        ``(first, end, count)`` of the partition's rows (``end`` exclusive).
    start, stop : float
        Seconds since the epoch.
    worker : str
        ``"local"`` or the worker's address.
    thread : int
    key : str
        The Dask key.
    """

    op: str
    stream: int | None
    rows: tuple[int, int, int] | None
    start: float
    stop: float
    worker: str
    thread: int
    key: str

    @property
    def seconds(self) -> float:
        return self.stop - self.start


class Profile:
    """The task events of one run (see the module docstring)."""

    def __init__(self, job_id: int, events: list[TaskEvent]):
        self.job_id = job_id
        self.events = sorted(events, key=lambda e: e.start)

    def write_trace(self, path: str) -> str:
        """Write a Chrome trace (JSON; open in ``chrome://tracing`` or ui.perfetto.dev): one
        complete event per task, a process per worker and a row per thread. Returns ``path``."""
        import fsspec

        origin = self.events[0].start if self.events else 0.0
        workers = {w: i for i, w in enumerate(dict.fromkeys(e.worker for e in self.events))}
        trace = [{"name": "process_name", "ph": "M", "pid": pid, "args": {"name": worker}}
                 for worker, pid in workers.items()]
        for e in self.events:
            args = {"stream": e.stream, "key": e.key}
            if e.rows is not None:
                args.update(rows=[e.rows[0], e.rows[1]], num_rows=e.rows[2])
            trace.append({"name": e.op, "cat": "task", "ph": "X", "pid": workers[e.worker],
                          "tid": e.thread, "ts": (e.start - origin) * 1e6,
                          "dur": e.seconds * 1e6, "args": args})
        with fsspec.open(path, "w") as f:
            json.dump({"traceEvents": trace, "displayTimeUnit": "ms",
                       "otherData": {"job_id": self.job_id}}, f)
        return path

    def statistics(self) -> list[dict]:
        """Per op, in order of first start: tasks, rows, busy seconds and ms per row."""
        table: dict[str, dict] = {}
        for e in self.events:
            entry = table.setdefault(e.op, {"op": e.op, "tasks": 0, "rows": 0, "seconds": 0.0})
            entry["tasks"] += 1
            entry["rows"] += e.rows[2] if e.rows else 0
            entry["seconds"] += e.seconds
        for entry in table.values():
            entry["ms_per_row"] = 1e3 * entry["seconds"] / entry["rows"] if entry["rows"] else None
        return list(table.values())

    @property
    def wall_seconds(self) -> float:
        """From the first task's start to the last one's end."""
        if not self.events:
            return 0.0
        return max(e.stop for e in self.events) - self.events[0].start

    def summary(self) -> str:
        """A text table: per op its tasks, rows, busy seconds, ms per row and share of the
        busy time."""
        stats = self.statistics()
        busy = sum(s["seconds"] for s in stats) or 1.0
        header = ("op", "tasks", "rows", "busy s", "ms/row", "share")
        lines = [(s["op"], str(s["tasks"]), str(s["rows"]), f"{s['seconds']:.3f}",
                  "" if s["ms_per_row"] is None else f"{s['ms_per_row']:.3f}",
                  f"{100 * s['seconds'] / busy:.0f}%") for s in stats]
        widths = [max(len(r[i]) for r in [header, *lines]) for i in range(len(header))]
        fmt = "  ".join(f"{{:<{w}}}" if i == 0 else f"{{:>{w}}}" for i, w in enumerate(widths))
        out = [f"job {self.job_id}: {len(self.events)} tasks, {self.wall_seconds:.3f} s wall",
               fmt.format(*header), "  ".join("-" * w for w in widths)]
        return "\n".join(out + [fmt.format(*r) for r in lines])

    def __str__(self) -> str:
        return self.summary()

    def __repr__(self) -> str:
        return f"<Profile of job {self.job_id}: {len(self.events)} tasks>"


def note_built(built) -> None:
    """Tell the recording run (if any) what the layers of a built graph compute."""
    recorder = _ACTIVE.get()
    if recorder is not None:
        recorder.note(built)


class Recorder:
    """Records the tasks computed inside ``with Recorder(dclient):`` (on ``dclient``, a
    ``distributed.Client``, or on the local schedulers when it is ``None``)."""

    def __init__(self, dclient: Any = None):
        self._dclient = dclient
        self._layers: dict[str, tuple[str, dict]] = {}
        self._collector: Any = None
        self._token: Any = None
        self.events: list[TaskEvent] = []

    def note(self, built) -> None:
        from .graph import _layer_name

        for node, plan in built.plans.items():
            parts = {(s, p): rows for s, sp in plan.streams.items()
                     for p, rows in enumerate(sp.parts)}
            self._layers[_layer_name(node, plan)] = (node.label, parts)

    def __enter__(self) -> Recorder:
        if self._dclient is not None:
            from distributed import get_task_stream

            self._collector = get_task_stream(client=self._dclient)
        else:
            from dask.diagnostics import Profiler

            self._collector = Profiler()
        self._collector.__enter__()
        self._token = _ACTIVE.set(self)
        return self

    def __exit__(self, *exc) -> None:
        _ACTIVE.reset(self._token)
        self._collector.__exit__(*exc)
        if self._dclient is not None:
            for record in self._collector.data:
                for ss in record.get("startstops", ()):
                    if ss.get("action") == "compute":
                        self.events.append(self._event(
                            record["key"], ss["start"], ss["stop"], record.get("worker", "?"),
                            int(record.get("thread") or 0)))
        else:
            for task in self._collector.results:
                self.events.append(self._event(task.key, task.start_time, task.end_time,
                                               "local", int(task.worker_id)))
            self._collector.clear()  # it holds the run's tasks (and what they hold)
        self._collector = None
        self._layers.clear()

    def _event(self, key: Any, start: float, stop: float, worker: str, thread: int) -> TaskEvent:
        if isinstance(key, str) and key.startswith("("):
            try:
                key = ast.literal_eval(key)
            except (ValueError, SyntaxError):
                pass
        name = key[0] if isinstance(key, tuple) else str(key)
        stream = key[1] if isinstance(key, tuple) and len(key) > 2 else None
        part = key[2] if isinstance(key, tuple) and len(key) > 2 else None
        base = re.sub(r"-(chain|out\d+)$", "", name)
        op, rows = name.split("-", 1)[0], None
        if base in self._layers:
            op, parts = self._layers[base]
            got = parts.get((stream, part))
            if got is not None and len(got):
                rows = (int(got[0]), int(got[-1]) + 1, len(got))
        return TaskEvent(op, stream, rows, float(start), float(stop), str(worker), thread,
                         str(key))
