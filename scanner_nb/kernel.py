"""Kernels, the op registry, and the specs read from their signatures.

An op is a :class:`Kernel` subclass or a plain function. Its parameters come at three rates,
read from the signatures: ``__init__`` parameters are init params (one value), ``new_stream``
parameters are stream-config params (a list with one value per stream) and ``execute``
parameters annotated with a stream type are stream params (they take a ``Stream``).
"""

from __future__ import annotations

import functools
import inspect
import typing
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from .devices import DeviceType, normalize_device_sets
from .errors import OpNotFoundError, ScannerTypeError, ScannerValueError
from .types import StreamType, sequence_depth, type_of

__all__ = ["Kernel", "KernelConfig", "OpSpec", "register_python_op", "lookup_op", "op_names"]


class KernelConfig:
    """What a kernel's ``__init__`` receives as ``config``.

    Attributes
    ----------
    args : dict
        The init params the op was called with.
    devices : list
        The devices the instance runs on, e.g. ``[DeviceType.CPU]``.
    device_type : DeviceType
        The device type chosen for this op.
    """

    def __init__(self, args: dict, device_type: DeviceType = DeviceType.CPU):
        self.args = dict(args)
        self.device_type = device_type
        self.devices = [device_type]

    def __repr__(self) -> str:
        return f"KernelConfig(args={self.args!r}, devices={self.devices!r})"


class Kernel:
    """Base class of ops written as classes, as in Scanner.

    Subclasses are registered under their class name (the decorator
    :func:`register_python_op` sets properties or another name). Override ``execute`` and any
    of the lifecycle methods.

    Examples
    --------
    >>> class Threshold(Kernel):
    ...     def __init__(self, config, level=128):
    ...         self.level = level
    ...     def execute(self, frame: FrameType) -> FrameType:
    ...         return (frame > self.level).astype("uint8") * 255
    """

    def __init__(self, config: KernelConfig):
        self.config = config

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if cls.__dict__.get("_scanner_nb_internal") or cls.execute is Kernel.execute:
            return  # internal, abstract, or a class cloudpickle is still filling in
        _REGISTRY[cls.__name__] = _PendingClass(cls)

    @classmethod
    def check_args(cls, **params: Any) -> None:
        """Check argument values at the op call, before anything runs (optional).

        Called once per stream with the init params and that stream's stream-config params;
        a ``ValueError`` or ``TypeError`` raised here becomes the op call's error.
        """

    def fetch_resources(self) -> None:
        """Download or prepare what the op needs; runs once per machine."""

    def setup_with_resources(self) -> None:
        """Load what ``fetch_resources`` prepared; runs once per kernel instance."""

    def new_stream(self) -> None:
        """Receive the stream-config params; runs when the instance starts a stream."""

    def reset(self) -> None:
        """Forget state; runs before each discontinuity of the rows a stateful op sees."""

    def execute(self, *streams: Any) -> Any:
        """Turn one row (or a batch, or a stencil window) of inputs into outputs."""
        raise NotImplementedError(f"{type(self).__name__} does not define execute")

    def close(self) -> None:
        """Release resources; runs when the instance is discarded or the client closes."""


class FunctionKernel(Kernel):
    """The kernel of an op written as a plain function: ``execute`` calls the function.

    ``config.args`` holds every keyword the op was called with (as in Scanner, where function
    ops read ``config.args['width']``); the function receives those its signature lists.
    """

    _scanner_nb_internal = True

    def __init__(self, config: KernelConfig, function: Callable, stream_names: tuple[str, ...],
                 streams_first: bool):
        super().__init__(config)
        params = inspect.signature(function).parameters
        takes_any = any(p.kind is p.VAR_KEYWORD for p in params.values())
        listed = {k: v for k, v in config.args.items() if takes_any or k in params}
        bound = functools.partial(function, config, **listed)
        if streams_first:
            self.execute = bound  # type: ignore[method-assign]
        else:
            self.execute = lambda *streams: bound(**dict(zip(stream_names, streams)))


@dataclass
class StreamParam:
    """A stream param of an op: its name, element type and ``Sequence`` depth."""

    name: str
    type: StreamType
    variadic: bool = False


@dataclass
class OpSpec:
    """Everything the engine knows about an op, read from its signatures and decorator."""

    name: str
    kernel_cls: type
    function: Callable | None
    init_params: dict[str, Any]  # name -> default (inspect.Parameter.empty when required)
    init_accepts_any: bool
    config_params: dict[str, Any]
    stream_params: list[StreamParam]
    outputs: list[StreamType]
    batch: int = 1
    batched: bool = False
    stencil: tuple[int, ...] | None = None
    bounded_state: int | None = None
    unbounded_state: bool = False
    device_sets: tuple = ((DeviceType.CPU, 1),)
    output_layout: str = "single"  # single | tuple | seq | seq-of-tuple | tuple-of-seq
    token: str = field(default_factory=lambda: uuid.uuid4().hex)
    target: Any = None  # the registered class or function
    options: dict = field(default_factory=dict)  # the decorator's properties
    _variants: dict = field(default_factory=dict, repr=False)

    def with_properties(self, overrides: dict) -> OpSpec:
        """This op with properties given at the op call (Scanner's ``sc.ops.X(...,
        batch=10, stencil=[0, 1], bounded_state=60, device=DeviceType.GPU)``) overriding the
        decorator's for that call; the signature is checked against them again."""
        overrides = dict(overrides)
        if "device" in overrides:
            overrides["device_type"], overrides["device_sets"] = overrides.pop("device"), None
        options = {**self.options, **overrides}
        key = repr(sorted(options.items(), key=lambda kv: kv[0]))
        if key not in self._variants:
            self._variants[key] = _build_spec(self.target, self.name, options)
        return self._variants[key]

    @property
    def variadic(self) -> bool:
        return bool(self.stream_params) and self.stream_params[0].variadic

    @property
    def properties(self) -> dict:
        """The op's properties, for summaries and reprs."""
        props = {"batch": self.batch if self.batched else None, "stencil": self.stencil,
                 "bounded_state": self.bounded_state,
                 "unbounded_state": self.unbounded_state or None}
        return {k: list(v) if isinstance(v, tuple) else v for k, v in props.items() if v}

    def make_kernel(self, config: KernelConfig) -> Kernel:
        """A new kernel instance for ``config``."""
        if self.function is not None:
            names = tuple(p.name for p in self.stream_params)
            params = list(inspect.signature(self.function).parameters)[1:]
            return FunctionKernel(config, self.function, names, params[: len(names)] == list(names))
        return self.kernel_cls(config, **config.args)


class _PendingClass:
    """An undecorated Kernel subclass: its spec is read at its first op call."""

    def __init__(self, cls: type):
        self.cls = cls


_REGISTRY: dict[str, OpSpec | _PendingClass] = {}


def lookup_op(name: str) -> OpSpec:
    """The op registered as ``name`` (an undecorated subclass is parsed now)."""
    try:
        entry = _REGISTRY[name]
    except KeyError:
        hint = f"; `import {BUILTIN_OPS[name]}` registers it" if name in BUILTIN_OPS else ""
        raise OpNotFoundError(
            f"no op named {name!r} is registered{hint}; registered ops: "
            f"{', '.join(op_names()) or 'none'}"
        ) from None
    if isinstance(entry, _PendingClass):
        entry = _build_spec(entry.cls, name, {})
        _REGISTRY[name] = entry
    return entry


#: Built-in ops and the module whose import registers them (named by an unknown op's error).
BUILTIN_OPS = {name: "scanner_nb.imgproc" for name in (
    "Resize", "ConvertColor", "Blur", "Histogram", "FrameDifference", "OpticalFlow", "Montage",
    "ImageDecoder", "ImageEncoder")}


def op_names() -> list[str]:
    """Names of every registered op, sorted."""
    return sorted(_REGISTRY)


def register_python_op(
    function_or_class: Callable | type | None = None,
    *,
    name: str | None = None,
    device_sets: Sequence | None = None,
    device_type: DeviceType | None = None,
    batch: int = 1,
    stencil: Sequence[int] | None = None,
    bounded_state: int | None = None,
    unbounded_state: bool = False,
):
    """Register a :class:`Kernel` subclass or a plain function as an op.

    Works with or without parentheses. Registering a name again replaces the earlier op.

    Parameters
    ----------
    name : str, optional
        The op's name in ``sc.ops``; defaults to the class or function name.
    device_sets : list of (DeviceType, int), optional
        Devices the op can run on; GPU is chosen when usable, else CPU.
    device_type : DeviceType, optional
        Shorthand for one device set of that type.
    batch : int
        Most rows handed to one ``execute`` call; with ``batch > 1`` stream params and the
        return are ``Sequence[...]``.
    stencil : list of int, optional
        Row offsets ``execute`` sees per output row (sorted, e.g. ``[-1, 0, 1]``).
    bounded_state : int, optional
        Warm-up rows before each requested row; ``reset()`` runs before each warm-up.
    unbounded_state : bool
        One instance sees each stream's rows in order from its first row.

    Examples
    --------
    >>> @register_python_op(stencil=[-1, 0])
    ... def diff(config, frame: Sequence[FrameType]) -> FrameType:
    ...     return abs(frame[1].astype(int) - frame[0]).astype("uint8")
    """
    options = dict(name=name, device_sets=device_sets, device_type=device_type, batch=batch,
                   stencil=stencil, bounded_state=bounded_state, unbounded_state=unbounded_state)

    def decorate(target):
        op_name = options["name"] or getattr(target, "__name__", None)
        spec = _build_spec(target, op_name, options)
        _REGISTRY[op_name] = spec
        if isinstance(target, type) and op_name != target.__name__:
            _REGISTRY.pop(target.__name__, None)  # registered by __init_subclass__ under its own name
        return target

    if function_or_class is not None:
        return decorate(function_or_class)
    return decorate


def _coerce_properties(op: str, options: dict) -> dict:
    batch = options.get("batch", 1)
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
        raise ScannerValueError(f"op {op!r}: batch must be an int >= 1, got {batch!r}")
    stencil = options.get("stencil")
    if stencil is not None:
        if (not isinstance(stencil, (list, tuple)) or not stencil
                or not all(isinstance(o, int) and not isinstance(o, bool) for o in stencil)
                or list(stencil) != sorted(set(stencil))):
            raise ScannerValueError(
                f"op {op!r}: stencil must be a sorted list of distinct ints such as [-1, 0, 1], "
                f"got {stencil!r}"
            )
        stencil = tuple(stencil)
    bounded = options.get("bounded_state")
    if bounded is not None and (isinstance(bounded, bool) or not isinstance(bounded, int)
                                or bounded < 0):
        raise ScannerValueError(f"op {op!r}: bounded_state must be an int >= 0, got {bounded!r}")
    unbounded = bool(options.get("unbounded_state", False))
    if unbounded and bounded is not None:
        raise ScannerValueError(f"op {op!r}: choose bounded_state or unbounded_state, not both")
    device_sets = normalize_device_sets(options.get("device_sets"), options.get("device_type"))
    return dict(batch=batch, stencil=stencil, bounded_state=bounded, unbounded_state=unbounded,
                device_sets=device_sets)


def _hints(op: str, function: Callable) -> dict:
    try:
        return typing.get_type_hints(function)
    except Exception:  # names a notebook defined later or locally: fall back to the raw strings
        return dict(getattr(function, "__annotations__", {}))


def _stream_type(op: str, param: str, annotation: Any, depth_wanted: int, what: str) -> StreamType:
    depth, inner = sequence_depth(annotation)
    stream_type = type_of(inner)
    if stream_type is None:
        raise ScannerTypeError(
            f"op {op!r}: {what} {param!r} is annotated {annotation!r}, which is not a stream "
            f"type; use sp.FrameType, bytes, typing.Any or a type registered with "
            f"sp.types.register_type"
        )
    if depth != depth_wanted:
        need = "Sequence[" * depth_wanted + "T" + "]" * depth_wanted
        why = {0: "an op without batch or stencil", 1: "an op with batch or stencil",
               2: "an op with both batch and stencil"}[depth_wanted]
        raise ScannerTypeError(
            f"op {op!r}: {what} {param!r} is annotated {annotation!r}, but {why} takes {need}"
        )
    return stream_type


def _build_spec(target: Callable | type, op: str, options: dict) -> OpSpec:
    props = _coerce_properties(op, options)
    batched = props["batch"] > 1
    in_depth = int(batched) + int(props["stencil"] is not None)
    if isinstance(target, type):
        if not issubclass(target, Kernel):
            raise ScannerTypeError(f"op {op!r}: a class op must subclass sp.Kernel")
        execute = target.execute
        if execute is Kernel.execute:
            raise ScannerTypeError(f"op {op!r}: {target.__name__} does not define execute")
        init_sig = inspect.signature(target.__init__)
        init_items = list(init_sig.parameters.values())[2:]  # self, config
        init_any = any(p.kind is p.VAR_KEYWORD for p in init_items)
        init_params = {p.name: p.default for p in init_items
                       if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
        config_items = list(inspect.signature(target.new_stream).parameters.values())[1:]
        config_params = {p.name: p.default for p in config_items
                         if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
        exec_items = list(inspect.signature(execute).parameters.values())[1:]
        hints = _hints(op, execute)
        stream_items = exec_items
        for p in exec_items:
            if p.name not in hints:
                raise ScannerTypeError(
                    f"op {op!r}: stream param {p.name!r} of execute has no type annotation; "
                    f"annotate it, e.g. `{p.name}: sp.FrameType`"
                )
        function = None
    elif callable(target):
        hints = _hints(op, target)
        items = list(inspect.signature(target).parameters.values())
        if not items or items[0].kind not in (items[0].POSITIONAL_ONLY, items[0].POSITIONAL_OR_KEYWORD):
            raise ScannerTypeError(f"op {op!r}: a function op's first parameter is `config`")
        stream_items, init_params, init_any = [], {}, False
        for p in items[1:]:
            annotation = hints.get(p.name)
            is_stream = annotation is not None and type_of(sequence_depth(annotation)[1]) is not None
            if is_stream and p.kind is not p.KEYWORD_ONLY:
                stream_items.append(p)
            elif p.kind is p.VAR_KEYWORD:
                init_any = True
            elif p.kind is p.VAR_POSITIONAL:
                raise ScannerTypeError(f"op {op!r}: variadic *{p.name} needs a stream annotation")
            else:
                init_params[p.name] = p.default
        config_params = {}
        function = target
        if not stream_items:
            raise ScannerTypeError(
                f"op {op!r}: a function op needs at least one stream param annotated with a "
                f"stream type (sp.FrameType, bytes, typing.Any or a registered type)"
            )
    else:
        raise ScannerTypeError(f"register_python_op expects a class or a function, got {target!r}")

    stream_params = []
    for p in stream_items:
        if p.kind is p.KEYWORD_ONLY or p.kind is p.VAR_KEYWORD:
            raise ScannerTypeError(f"op {op!r}: stream param {p.name!r} must be positional")
        variadic = p.kind is p.VAR_POSITIONAL
        stream_params.append(StreamParam(p.name, _stream_type(op, p.name, hints[p.name], in_depth,
                                                              "stream param"), variadic))
    if any(p.variadic for p in stream_params) and len(stream_params) > 1:
        raise ScannerTypeError(f"op {op!r}: a variadic op takes only *streams as stream params")
    if not stream_params:
        raise ScannerTypeError(f"op {op!r}: execute needs at least one stream param")
    outputs, layout = _outputs(op, hints.get("return", inspect.Parameter.empty), batched)
    return OpSpec(name=op, kernel_cls=target if isinstance(target, type) else FunctionKernel,
                  function=function, init_params=init_params, init_accepts_any=init_any,
                  config_params=config_params, stream_params=stream_params, outputs=outputs,
                  batched=batched, output_layout=layout, target=target,
                  options={k: v for k, v in options.items() if k != "name"}, **props)


def _outputs(op: str, annotation: Any, batched: bool) -> tuple[list[StreamType], str]:
    if annotation is inspect.Parameter.empty or annotation is None:
        raise ScannerTypeError(
            f"op {op!r}: the return value has no type annotation; annotate it, e.g. "
            f"`-> sp.FrameType` or `-> Tuple[sp.FrameType, bytes]`"
        )

    def tuple_args(a):
        origin = typing.get_origin(a)
        return typing.get_args(a) if origin is tuple else None

    depth, inner = sequence_depth(annotation)
    if not batched:
        if depth:
            raise ScannerTypeError(f"op {op!r}: returns {annotation!r}; only batch ops return Sequence[...]")
        parts = tuple_args(annotation)
        if parts:
            return [_stream_type(op, f"output {i}", a, 0, "output") for i, a in enumerate(parts)], "tuple"
        return [_stream_type(op, "output", annotation, 0, "return value")], "single"
    if depth == 1:
        parts = tuple_args(inner)
        if parts:
            return [_stream_type(op, f"output {i}", a, 0, "output") for i, a in enumerate(parts)], "seq-of-tuple"
        return [_stream_type(op, "output", inner, 0, "return value")], "seq"
    parts = tuple_args(annotation)
    if depth == 0 and parts:
        return [_stream_type(op, f"output {i}", a, 1, "output") for i, a in enumerate(parts)], "tuple-of-seq"
    raise ScannerTypeError(
        f"op {op!r}: a batch op returns Sequence[T] (or Tuple[Sequence[A], Sequence[B]]), "
        f"got {annotation!r}"
    )
