"""The clickable slice view: one slice image with its overlays, as a Streamlit v2 component.

No iframe: the component's JavaScript runs in the page and draws into a shadow root. The image is
a PNG data URI; orientation letters, level names, boxes and the crosshair are HTML placed in
fractions of the image, so they stay aligned with the pixels at every zoom and screen size. A click
comes back (as a widget trigger, before the rerun) in pixels of the shown crop, which
:func:`clicked_at` turns into full-plane display pixels.
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import streamlit as st

from spine_core.render import Plane, ZoomBox

PLANE_TITLES: dict[Plane, str] = {Plane.AXIAL: "Axial", Plane.SAGITTAL: "Sagittal",
                                  Plane.CORONAL: "Coronal"}


_SLICE_JS = """
export default function (component) {
  const { data, parentElement, setTriggerValue } = component;
  let root = parentElement.querySelector('.sv');
  if (!root) {
    root = document.createElement('div');
    root.className = 'sv';
    root.innerHTML = '<div class="sv-head"></div><div class="sv-frame">' +
      '<img class="sv-img" draggable="false"/><div class="sv-layer"></div></div>';
    parentElement.appendChild(root);
    const img = root.querySelector('.sv-img');
    img.addEventListener('click', (ev) => {
      const d = root._data;
      const r = img.getBoundingClientRect();
      if (!d || r.width <= 0 || r.height <= 0) return;
      const col = (ev.clientX - r.left) / r.width * d.width;
      const row = (ev.clientY - r.top) / r.height * d.height;
      setTriggerValue('click', { row: row, col: col, at: Date.now() });
    });
  }
  root._data = data;
  root.dataset.plane = data.plane;
  root.dataset.index = String(data.index);
  const frame = root.querySelector('.sv-frame');
  frame.style.aspectRatio = data.width + ' / ' + data.height;
  frame.style.width = 'min(100%, calc(' + data.max_vh + 'vh * ' + (data.width / data.height) + '))';
  root.querySelector('.sv-head').textContent = data.header;
  const img = root.querySelector('.sv-img');
  if (img.getAttribute('src') !== data.src) img.setAttribute('src', data.src);
  img.setAttribute('alt', data.alt);
  const layer = root.querySelector('.sv-layer');
  const items = [];
  const add = (cls, text, style) => {
    const el = document.createElement('div');
    el.className = cls;
    if (text) el.textContent = text;
    Object.assign(el.style, style);
    items.push(el);
    return el;
  };
  const pct = (v) => (100 * v) + '%';
  for (const b of data.boxes) {
    const el = add('sv-box', '', { left: pct(b.x0), top: pct(b.y0), width: pct(b.x1 - b.x0),
                                   height: pct(b.y1 - b.y0), borderColor: b.colour });
    if (b.label) {
      const t = document.createElement('span');
      t.className = 'sv-boxlabel'; t.textContent = b.label; t.style.color = b.colour;
      el.appendChild(t);
    }
  }
  for (const l of data.labels) {
    add('sv-label ' + (l.anchor === 'right' ? 'sv-right' : 'sv-left'), l.text,
        { left: pct(l.x), top: pct(l.y), color: l.colour });
  }
  if (data.cursor) {
    add('sv-cross sv-h', '', { top: pct(data.cursor.y) });
    add('sv-cross sv-v', '', { left: pct(data.cursor.x) });
  }
  const e = data.edges;
  add('sv-edge sv-top', e[0], {}); add('sv-edge sv-bottom', e[1], {});
  add('sv-edge sv-leftedge', e[2], {}); add('sv-edge sv-rightedge', e[3], {});
  layer.replaceChildren(...items);
}
"""

_SLICE_CSS = """
.sv { width: 100%; font-family: var(--st-font, sans-serif); }
.sv-head { font-size: 0.85rem; opacity: 0.85; margin: 0 0 4px 0; min-height: 1.2em; }
.sv-frame { position: relative; margin: 0 auto; background: #000; }
.sv-img { position: absolute; inset: 0; width: 100%; height: 100%; display: block;
          cursor: crosshair; user-select: none; }
.sv-layer { position: absolute; inset: 0; pointer-events: none; overflow: hidden; }
.sv-edge { position: absolute; color: #ffd54f; font: 600 14px/1 sans-serif;
           text-shadow: 0 0 3px #000, 0 0 2px #000; }
.sv-top { top: 4px; left: 50%; transform: translateX(-50%); }
.sv-bottom { bottom: 4px; left: 50%; transform: translateX(-50%); }
.sv-leftedge { left: 5px; top: 50%; transform: translateY(-50%); }
.sv-rightedge { right: 5px; top: 50%; transform: translateY(-50%); }
.sv-label { position: absolute; font: 600 12px/1 sans-serif; white-space: nowrap;
            text-shadow: 0 0 3px #000, 0 0 2px #000, 0 0 1px #000; }
.sv-right { transform: translate(-100%, -50%); }
.sv-left { transform: translate(0, -50%); }
.sv-box { position: absolute; border: 2px solid; box-sizing: border-box; }
.sv-boxlabel { position: absolute; left: 0; bottom: 100%; font: 600 11px/1.2 sans-serif;
               white-space: nowrap; text-shadow: 0 0 3px #000; }
.sv-cross { position: absolute; background: rgba(255, 235, 59, 0.55); }
.sv-h { left: 0; right: 0; height: 1px; }
.sv-v { top: 0; bottom: 0; width: 1px; }
"""

_slice_component = st.components.v2.component("spinereview_slice_view", js=_SLICE_JS,
                                              css=_SLICE_CSS)


@dataclass(frozen=True)
class SliceClick:
    """A click on a slice image, in full-plane display pixels."""

    row: float
    col: float


def png_data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def slice_view(
    png: bytes,
    *,
    key: str,
    plane: Plane,
    index: int,
    zoom: ZoomBox,
    edges: Sequence[str],
    header: str = "",
    labels: Sequence[Mapping[str, Any]] = (),
    boxes: Sequence[Mapping[str, Any]] = (),
    cursor: Mapping[str, float] | None = None,
    max_vh: float = 62.0,
    on_click: Callable[[], None] | None = None,
) -> None:
    """Show one slice image (a crop ``zoom`` of the plane) with its overlays; clickable.

    ``on_click`` runs (as a widget callback, before the rerun) when the user clicks the image;
    read the position there with :func:`clicked_at`.
    """
    h, w = zoom.shape
    _slice_component(
        key=key,
        data={
            "src": png_data_uri(png), "width": w, "height": h, "plane": plane.value,
            "index": int(index), "edges": list(edges), "header": header,
            "alt": f"{PLANE_TITLES[plane]} slice {index + 1}", "labels": list(labels),
            "boxes": list(boxes), "cursor": dict(cursor) if cursor else None, "max_vh": max_vh,
        },
        on_click_change=on_click or _ignore,
    )


def _ignore() -> None:
    return None


def clicked_at(key: str, zoom: ZoomBox) -> SliceClick | None:
    """Inside an ``on_click`` callback: where the slice view ``key`` was clicked."""
    state = st.session_state.get(key)
    click = dict(state).get("click") if state is not None else None
    if not isinstance(click, Mapping):
        return None
    try:
        row, col = float(click["row"]), float(click["col"])
    except (KeyError, TypeError, ValueError):
        return None
    h, w = zoom.shape
    row, col = min(max(row, 0.0), h - 1e-6), min(max(col, 0.0), w - 1e-6)
    full_row, full_col = zoom.to_full(row, col)
    return SliceClick(full_row, full_col)
