"""The plan of a stream as pure strings: an HTML table for notebooks, plain text for terminals.

Nothing here computes, imports widgets or raises: both functions take the engine's plan
summary (a dict of plain values) and return a string, whatever the summary holds. Missing keys
are shown as ``?``, values of the wrong type by their (shortened) repr, and long lists are cut
with a ``… N more`` row, so a graph of thousands of nodes still draws a small table.

The summary looks like::

    {"streams": [{"index": 0, "length": 120, "source": "movie.mp4"}, ...],  # output streams
     "type": "FrameType",                                                  # element type
     "nodes": [                                     # topological order, sources first
        {"id": 0, "kind": "source", "label": "NamedVideoStream 'movie'",
         "props": {"frames": 120, "size": "160x96"}, "inputs": []},
        {"id": 1, "kind": "op", "label": "Blur", "props": {"kernel_size": 5}, "inputs": [0]},
     ],
     "partitions": [4, 4]}                          # partitions per stream (optional)
"""

from __future__ import annotations

import html
from collections.abc import Iterable, Mapping
from typing import Any

__all__ = ["plan_html", "plan_text"]

MAX_NODES = 40  # nodes drawn: the first MAX_NODES - TAIL_NODES and the last TAIL_NODES
TAIL_NODES = 10
MAX_STREAMS = 16  # output streams drawn: the first MAX_STREAMS - TAIL_STREAMS and the last
TAIL_STREAMS = 4
MAX_PROPS = 12  # properties per node
MAX_INPUTS = 8  # input ids per node
MAX_VALUE = 60  # characters of one property value
MAX_ITEMS = 4  # items of a list value (one per stream, e.g. Resize's width)
MAX_LABEL = 80  # characters of a label or a source

_KIND_COLORS = {  # (text, background): readable on light and dark themes
    "source": ("#1b5e20", "#c8e6c9"),
    "op": ("#0d47a1", "#bbdefb"),
    "sample": ("#e65100", "#ffe0b2"),
    "sink": ("#4a148c", "#e1bee7"),
}
_OTHER_KIND = ("#37474f", "#eceff1")


# -- pure helpers: coerce whatever the summary holds into short strings ----------------------


def _shorten(text: str, limit: int) -> str:
    """Cut ``text`` to ``limit`` characters, marking the cut with ``…``.

    >>> _shorten("abcdef", 4)
    'abc…'
    >>> _shorten("abc", 4)
    'abc'
    """
    text = " ".join(text.split()) if "\n" in text else text
    return text if len(text) <= limit else text[: max(limit - 1, 0)] + "…"


def _text(value: Any, limit: int = MAX_VALUE) -> str:
    """A short, never-raising string for a value: strings as they are, the rest by repr.

    >>> _text("x"), _text(None), _text(3.5), _text([1, 2])
    ('x', 'None', '3.5', '[1, 2]')
    >>> _text([640] * 10)
    '[640, 640, 640, … 7 more]'
    """
    if isinstance(value, str):
        out = value
    elif isinstance(value, (list, tuple)) and len(value) > MAX_ITEMS:
        shown = ", ".join(_text(v, limit) for v in value[:MAX_ITEMS - 1])
        out = f"[{shown}, … {len(value) - MAX_ITEMS + 1} more]"
    else:
        try:
            out = repr(value)
        except Exception:  # a broken __repr__ must not break the summary
            out = f"<{type(value).__name__}>"
    return _shorten(out, limit)


def _as_list(value: Any) -> list:
    """A list from a list-like value; anything else (None, a number, a str) gives ``[]``.

    >>> _as_list((1, 2)), _as_list(None), _as_list("ab")
    ([1, 2], [], [])
    """
    if isinstance(value, (str, bytes, Mapping)) or value is None:
        return []
    if isinstance(value, Iterable):
        try:
            return list(value)
        except Exception:
            return []
    return []


def _as_dict(value: Any) -> dict:
    if isinstance(value, Mapping):
        try:
            return dict(value)
        except Exception:
            return {}
    return {}


def _get(mapping: Any, key: str, default: Any = None) -> Any:
    return mapping.get(key, default) if isinstance(mapping, Mapping) else default


def _head_tail(items: list, limit: int, tail: int) -> tuple[list, int, list]:
    """Split ``items`` into a head, a number left out and a tail, at most ``limit`` shown.

    >>> _head_tail(list(range(10)), 5, 2)
    ([0, 1, 2], 5, [8, 9])
    >>> _head_tail([1, 2], 5, 2)
    ([1, 2], 0, [])
    """
    if len(items) <= limit:
        return items, 0, []
    tail = min(tail, limit - 1)
    head = limit - tail
    return items[:head], len(items) - limit, items[len(items) - tail :] if tail else []


def _props_items(props: Any) -> tuple[list[tuple[str, str]], int]:
    items = list(_as_dict(props).items())
    shown = [(_text(k, 30), _text(v)) for k, v in items[:MAX_PROPS]]
    return shown, max(len(items) - MAX_PROPS, 0)


def _inputs_text(inputs: Any) -> str:
    ids = _as_list(inputs)
    text = ", ".join(_text(i, 12) for i in ids[:MAX_INPUTS])
    if len(ids) > MAX_INPUTS:
        text += f", … {len(ids) - MAX_INPUTS} more"
    return text


def _length_text(length: Any) -> str:
    if isinstance(length, bool) or length is None:
        return "?"
    if isinstance(length, int):
        return f"{length:,}"
    return _text(length, 20)


def _chain_labels(nodes: list) -> list[str] | None:
    """Labels of the nodes when they form one straight chain (each node reads the previous)."""
    if not 1 < len(nodes) <= MAX_NODES:
        return None
    for prev, node in zip(nodes, nodes[1:]):
        if _as_list(_get(node, "inputs")) != [_get(prev, "id")]:
            return None
    if _as_list(_get(nodes[0], "inputs")):
        return None
    return [_text(_get(n, "label", "?"), 40) for n in nodes]


def _headline(summary: Any, nodes: list, streams: list) -> str:
    n_streams = len(streams)
    etype = _text(_get(summary, "type", "?"), 40)
    return (
        f"Stream: {n_streams} output stream{'s' if n_streams != 1 else ''} of {etype}, "
        f"{len(nodes)} node{'s' if len(nodes) != 1 else ''}"
    )


# -- HTML -----------------------------------------------------------------------------------

_TABLE = 'style="border-collapse:collapse;margin:2px 0 6px 0;font-size:12px"'
_TH = 'style="text-align:left;padding:1px 8px 1px 0;border-bottom:1px solid #bbb;font-weight:600"'
_TD = 'style="text-align:left;padding:1px 8px 1px 0;vertical-align:top"'
_TDR = 'style="text-align:right;padding:1px 8px 1px 0;vertical-align:top"'
_MUTED = 'style="color:#888"'


def _e(text: str) -> str:
    return html.escape(text, quote=True)


def _kind_badge(kind: str) -> str:
    fg, bg = _KIND_COLORS.get(kind, _OTHER_KIND)
    return (
        f'<span style="color:{fg};background:{bg};border-radius:3px;padding:0 4px;'
        f'font-size:11px">{_e(kind)}</span>'
    )


def _more_row(n: int, columns: int) -> str:
    return f'<tr><td colspan="{columns}" {_TD}><span {_MUTED}>… {n:,} more</span></td></tr>'


def _node_row(node: Any) -> str:
    kind = _text(_get(node, "kind", "?"), 20)
    label = _text(_get(node, "label", "?"), MAX_LABEL)
    props, more = _props_items(_get(node, "props"))
    prop_html = " ".join(
        f'<span style="white-space:nowrap"><span {_MUTED}>{_e(k)}=</span>{_e(v)}</span>'
        for k, v in props
    )
    if more:
        prop_html += f" <span {_MUTED}>… {more} more</span>"
    inputs = _inputs_text(_get(node, "inputs"))
    return (
        f"<tr><td {_TDR}>{_e(_text(_get(node, 'id', '?'), 12))}</td>"
        f"<td {_TD}>{_kind_badge(kind)}</td>"
        f"<td {_TD}><b>{_e(label)}</b></td>"
        f"<td {_TD}>{prop_html}</td>"
        f"<td {_TD}>{_e(inputs)}</td></tr>"
    )


def _stream_row(i: int, stream: Any, partitions: list) -> str:
    index = _get(stream, "index", i)
    source = _get(stream, "source")
    cells = [
        f"<td {_TDR}>{_e(_text(index, 12))}</td>",
        f"<td {_TDR}>{_e(_length_text(_get(stream, 'length')))}</td>",
    ]
    if partitions:  # the column only when the summary has partition counts
        parts = partitions[i] if i < len(partitions) else None
        cells.append(f"<td {_TDR}>{_e(_length_text(parts)) if parts is not None else ''}</td>")
    cells.append(f"<td {_TD}>{_e(_text(source, MAX_LABEL)) if source is not None else ''}</td>")
    return f"<tr>{''.join(cells)}</tr>"


def plan_html(summary: dict) -> str:
    """Draw a stream's plan as a small HTML table, without computing anything.

    Parameters
    ----------
    summary : dict
        The engine's plan summary: ``streams`` (dicts with ``index``, ``length``, ``source``),
        ``type`` (the element type's name), ``nodes`` (dicts with ``id``, ``kind``, ``label``,
        ``props``, ``inputs``, sources first) and optionally ``partitions`` (one count per
        stream). Missing or odd values are shown as ``?`` or by their shortened repr.

    Returns
    -------
    str
        A self-contained ``<div>`` (inline styles only, every text HTML-escaped). Lists longer
        than the limits in this module are cut with a ``… N more`` row. It never raises.

    Examples
    --------
    >>> s = {"streams": [{"index": 0, "length": 120, "source": "movie.mp4"}],
    ...      "type": "FrameType",
    ...      "nodes": [{"id": 0, "kind": "source", "label": "movie", "props": {}, "inputs": []},
    ...                {"id": 1, "kind": "op", "label": "Blur", "props": {"kernel_size": 5},
    ...                 "inputs": [0]}]}
    >>> h = plan_html(s)
    >>> "Blur" in h and "kernel_size" in h and "120" in h
    True
    >>> plan_html(None).startswith("<div")
    True
    """
    try:
        return _plan_html(summary)
    except Exception:  # pragma: no cover - the helpers above are already defensive
        return f'<div class="scanner-nb-plan"><pre>{_e(_text(summary, 2000))}</pre></div>'


def _plan_html(summary: Any) -> str:
    nodes = _as_list(_get(summary, "nodes"))
    streams = _as_list(_get(summary, "streams"))
    partitions = _as_list(_get(summary, "partitions"))
    out = [
        '<div class="scanner-nb-plan" style="font-family:var(--jp-code-font-family,monospace);'
        'font-size:12px;line-height:1.4">',
        f"<div><b>{_e(_headline(summary, nodes, streams))}</b></div>",
    ]
    chain = _chain_labels(nodes)
    if chain:
        arrow = ' <span style="color:#888">→</span> '
        out.append(f"<div>{arrow.join(_e(x) for x in chain)}</div>")

    if nodes:
        out.append(f"<table {_TABLE}><thead><tr>")
        out += [f"<th {_TH}>{h}</th>" for h in ("#", "kind", "name", "properties", "inputs")]
        out.append("</tr></thead><tbody>")
        head, more, tail = _head_tail(nodes, MAX_NODES, TAIL_NODES)
        out += [_node_row(n) for n in head]
        if more:
            out.append(_more_row(more, 5))
        out += [_node_row(n) for n in tail]
        out.append("</tbody></table>")

    if streams:
        out.append(f"<table {_TABLE}><thead><tr>")
        heads = ("stream", "length", "partitions", "source") if partitions else (
            "stream", "length", "source")
        out += [f"<th {_TH}>{h}</th>" for h in heads]
        out.append("</tr></thead><tbody>")
        indexed = list(enumerate(streams))
        head, more, tail = _head_tail(indexed, MAX_STREAMS, TAIL_STREAMS)
        out += [_stream_row(i, s, partitions) for i, s in head]
        if more:
            out.append(_more_row(more, len(heads)))
        out += [_stream_row(i, s, partitions) for i, s in tail]
        out.append("</tbody></table>")
    out.append("</div>")
    return "".join(out)


# -- text -----------------------------------------------------------------------------------


def _node_line(node: Any) -> str:
    kind = _text(_get(node, "kind", "?"), 20)
    label = _text(_get(node, "label", "?"), MAX_LABEL)
    props, more = _props_items(_get(node, "props"))
    line = f"  #{_text(_get(node, 'id', '?'), 12):<3} {kind:<7} {label}"
    if props:
        line += "  " + " ".join(f"{k}={v}" for k, v in props)
    if more:
        line += f" … {more} more"
    inputs = _inputs_text(_get(node, "inputs"))
    if inputs:
        line += f"  <- {inputs}"
    return line


def _stream_line(i: int, stream: Any, partitions: list) -> str:
    index = _text(_get(stream, "index", i), 12)
    line = f"  [{index}] length {_length_text(_get(stream, 'length'))}"
    if i < len(partitions):
        line += f", {_length_text(partitions[i])} partitions"
    source = _get(stream, "source")
    if source is not None:
        line += f", source {_text(source, MAX_LABEL)}"
    return line


def plan_text(summary: dict) -> str:
    """The plan as plain text (for ``repr`` in a terminal); same content as :func:`plan_html`.

    Examples
    --------
    >>> print(plan_text({"streams": [{"index": 0, "length": 3}], "type": "int",
    ...                  "nodes": [{"id": 0, "kind": "source", "label": "rows", "inputs": []}]}))
    Stream: 1 output stream of int, 1 node
      #0   source  rows
    streams:
      [0] length 3
    """
    try:
        return _plan_text(summary)
    except Exception:  # pragma: no cover
        return _text(summary, 2000)


def _plan_text(summary: Any) -> str:
    nodes = _as_list(_get(summary, "nodes"))
    streams = _as_list(_get(summary, "streams"))
    partitions = _as_list(_get(summary, "partitions"))
    lines = [_headline(summary, nodes, streams)]
    head, more, tail = _head_tail(nodes, MAX_NODES, TAIL_NODES)
    lines += [_node_line(n) for n in head]
    if more:
        lines.append(f"  … {more:,} more")
    lines += [_node_line(n) for n in tail]
    if streams:
        lines.append("streams:")
        head, more, tail = _head_tail(list(enumerate(streams)), MAX_STREAMS, TAIL_STREAMS)
        lines += [_stream_line(i, s, partitions) for i, s in head]
        if more:
            lines.append(f"  … {more:,} more")
        lines += [_stream_line(i, s, partitions) for i, s in tail]
    return "\n".join(lines)
