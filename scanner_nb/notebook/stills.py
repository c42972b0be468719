"""What a saved notebook shows of a preview, alone or in a user's layout, where no widget runs.

A saved widget output is its model id plus whatever else its display data carries; without the
widget state (JupyterLab saves none by default) GitHub, nbviewer and nbconvert show only the
latter. A :class:`~scanner_nb.notebook.preview.Preview` therefore carries a *still*: its shown
frame as a JPEG/PNG image and a caption naming stream and row (or, for elements drawn as text,
their HTML).

A user's own layout of previews, ``HBox([a.preview(), b.preview()])``, a ``VBox``, ``Tab``,
``GridBox`` or ``interact`` returning a preview, is displayed by ipywidgets with only its repr.
:func:`register` gives such layouts the same kind of still, through IPython's documented hook
for other libraries' types (``mimebundle_formatter.for_type(ipywidgets.Box, ...)``): the frames
of every preview inside, as one image laid out like the box (side by side in an ``HBox`` or
``GridBox``, stacked in a ``VBox`` or ``Tab``), and their captions as text. A box holding no
preview, and any display data a box class makes itself beyond its repr, are left exactly as
they were; a formatter registered for ``Box`` before this one is called first. ``Preview``
registers it in the running IPython when it is made.

Cost notes: a box's still decodes each preview's shown image and encodes the joined one once
per display (a few ms for a few 640x360 frames); a box without previews costs a walk of its
children.

Examples
--------
>>> frame = np.zeros((48, 64, 3), np.uint8)
>>> a, b = (Preview(lambda s, r: frame, [3], is_frame=True) for _ in range(2))
>>> data = bundle(widgets.HBox([a, b]), {"text/plain": "HBox(...)"})
>>> print(data["text/plain"])
HBox of 2 previews
Preview: stream 0, row 0 of 3
Preview: stream 0, row 0 of 3
>>> iio.imread(base64.b64decode(data["image/jpeg"])).shape  # 64 + 8 + 64 wide
(48, 136, 3)
>>> a.close(); b.close()
"""

from __future__ import annotations

import base64
import html
from typing import Any

import imageio.v3 as iio
import ipywidgets as widgets
import numpy as np

from scanner_nb.notebook._image import join_images, to_uint8_image
from scanner_nb.notebook.preview import Preview

__all__ = ["bundle", "register"]

WIDGET_MIME = "application/vnd.jupyter.widget-view+json"
_STACKED = (widgets.VBox, widgets.Tab, widgets.Accordion, widgets.Stack)


def bundle(widget: widgets.Widget, base: dict) -> dict:
    """``base`` (a widget's display data) with the still of the previews in ``widget`` added.

    Parameters
    ----------
    widget : ipywidgets.Widget
        A ``Preview``, or any widget (a box) that may hold previews among its descendants.
    base : dict
        Its display data as ipywidgets makes it (the view's model id and a repr).

    Returns
    -------
    dict
        ``base`` itself when ``widget`` holds no preview; else a copy whose ``text/plain`` is
        the previews' captions and which has the joined frames as ``image/jpeg`` (or
        ``image/png``), or ``text/html`` when no preview shows an image.
    """
    if isinstance(widget, Preview):
        previews, still = [widget], widget._still()
        text = widget._caption()
    else:
        previews = []
        picture = _picture(widget, previews)
        if not previews:
            return base
        count = f"{len(previews)} preview{'s' if len(previews) > 1 else ''}"
        text = "\n".join([f"{type(widget).__name__} of {count}",
                          *(p._caption() for p in previews)])
        still = None if picture is None else previews[0]._encode(picture)
    data = {**base, "text/plain": text}
    if still is not None:
        data[f"image/{still.fmt}"] = base64.b64encode(still.data).decode("ascii")
    else:  # elements drawn as text (or errors): their HTML under their captions
        data["text/html"] = "".join(
            f'<div style="font-size:12px;color:#666">{html.escape(p._caption())}</div>'
            f"{p._shown_html()}" for p in previews)
    return data


def register(shell: Any = None) -> bool:
    """Give ipywidgets boxes holding previews a still in ``shell`` (the running IPython).

    Returns whether a formatter is in place: False outside IPython. Registering again is a
    no-op.
    """
    if shell is None:
        from IPython import get_ipython

        shell = get_ipython()
    formatters = getattr(getattr(shell, "display_formatter", None), "mimebundle_formatter", None)
    if formatters is None:
        return False
    before = formatters.for_type(widgets.Box)
    if getattr(before, "_scanner_nb_still", False):
        return True

    def box_with_still(box: widgets.Box) -> Any:
        base = before(box) if before is not None else box._repr_mimebundle_()
        if not isinstance(base, dict) or set(base) - {"text/plain", WIDGET_MIME}:
            return base  # not a widget view, or the box brings its own fallback
        try:
            return bundle(box, base)
        except Exception:  # a still never keeps the widget from showing
            return base

    box_with_still._scanner_nb_still = True
    formatters.for_type(widgets.Box, box_with_still)
    return True


def _picture(widget: Any, previews: list, within: tuple = ()) -> np.ndarray | None:
    """The shown frames under ``widget`` as one image, laid out like it; appends its previews.

    A widget shown twice is drawn twice, as in the page; a box inside itself only once.
    """
    if id(widget) in within:
        return None
    if isinstance(widget, Preview):
        previews.append(widget)
        view = widget._still()
        return None if view is None else to_uint8_image(iio.imread(view.data))
    within = (*within, id(widget))
    pictures = [p for child in _shown_children(widget)
                if (p := _picture(child, previews, within)) is not None]
    return join_images(pictures, vertical=_stacked(widget)) if pictures else None


def _shown_children(widget: Any) -> list:
    """A box's children, and the widget an ``interact`` function returned (shown in its output)."""
    if not isinstance(widget, widgets.Box):
        return []
    children = list(widget.children)
    if (isinstance(widget, widgets.interactive) and widget.auto_display
            and isinstance(widget.result, widgets.Widget)):
        children.append(widget.result)
    return children


def _stacked(box: widgets.Box) -> bool:
    """Whether a box shows its children one under the other (else side by side)."""
    flow = box.layout.flex_flow or ""
    if "column" in flow or "row" in flow:
        return "column" in flow
    return isinstance(box, _STACKED)
