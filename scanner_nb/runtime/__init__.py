"""Worker-side code: per-partition task functions (:mod:`.tasks`) and kernel instances
(:mod:`.instances`). Testable without a graph."""

from .instances import (
    ChainMoved,
    OpContext,
    close_instances,
    forget_resources,
    tune_allocator,
)
from .tasks import (  # noqa: F401 (tests)
    _RESULT_BUFFERS,
    assemble_stream,
    batch_to_list,
    on_host,
    result_buffer,
    run_chain,
    run_op,
    sample,
    take_rows,
)

__all__ = ["ChainMoved", "OpContext", "assemble_stream", "batch_to_list", "close_instances",
           "forget_resources", "on_host", "result_buffer", "run_chain", "run_op", "sample",
           "take_rows", "tune_allocator"]
