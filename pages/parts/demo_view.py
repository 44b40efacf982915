"""What the Demonstration page hands the workstation and draws beside it: the slice that matters,
the truth's and the model's boxes, their legends, and the per-level probability bars in words.

Nothing here writes; every box is read-only (``editable=False``).
"""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence

import numpy as np
import plotly.graph_objects as go

from db.demo_cases import TruthBox
from pages.parts.viewer_parts import StudyView
from spine_core import words
from spine_core.adjudication import craniocaudal_key
from spine_core.colours import MODEL_COLOUR, TRUTH_COLOUR
from spine_core.inference.protocol import PredictedBox
from spine_core.labels import LEVEL_IDS
from spine_core.volume import Volume
from spine_viewer import ViewerBox

#: The model calls a level fractured at this probability (the Models page's default threshold).
THRESHOLD = 0.5


def _hex(rgb: Sequence[int]) -> str:
    return "#{:02x}{:02x}{:02x}".format(*(int(c) for c in rgb[:3]))


def level_cursor(view: StudyView, level: str | None, truth: Sequence[TruthBox],
                 model: Sequence[PredictedBox], mask: Volume | None) -> tuple[int, int, int]:
    """Display cursor (S, P, L) at the slice that matters: the centre of ``level`` in the mask
    (the dataset's, else ``mask``), on the axial slice of its truth box (else the model's box)
    when there is one; the centre of the spine without a level."""
    cursor = list(view.centre)
    if not level:
        return view.centre
    lid = LEVEL_IDS.get(level)
    for volume in (view.mask, mask):
        if volume is None or lid is None:
            continue
        hit = np.argwhere(view.geometry.view(np.asarray(volume.array)) == lid)
        if hit.size:
            cursor = [int(v) for v in np.round(hit.mean(axis=0))]
            break
    boxed = [b.slice_index for b in truth if b.level == level] or \
            [b.slice_index for b in model if b.level == level]
    if boxed:
        middle = sorted(boxed)[len(boxed) // 2]
        cursor[0] = int(view.geometry.source_to_display((middle, 0, 0))[0])
    shape = view.geometry.display_shape
    return tuple(max(0, min(int(c), n - 1)) for c, n in zip(cursor, shape, strict=True))  # type: ignore[return-value]


def truth_viewer_boxes(boxes: Sequence[TruthBox]) -> list[ViewerBox]:
    return [ViewerBox(f"truth-{i}", 1, b.slice_index, b.x, b.y, b.x + b.width, b.y + b.height,
                      kind="other", level=b.level or "", label=f"truth {b.level or ''}".strip(),
                      colour=_hex(TRUTH_COLOUR), editable=False)
            for i, b in enumerate(boxes)]


def model_viewer_boxes(boxes: Sequence[PredictedBox]) -> list[ViewerBox]:
    return [ViewerBox(f"model-{i}", 1, int(b.slice_index), float(b.x), float(b.y),
                      float(b.x + b.width), float(b.y + b.height), kind="model",
                      level=str(b.level or ""), label=f"model {100 * b.score:.0f} %",
                      colour=_hex(MODEL_COLOUR), editable=False)
            for i, b in enumerate(boxes)]


def _swatch(rgb: Sequence[int], text: str, *, fill: bool = False) -> str:
    style = (f"background:{_hex(rgb)};" if fill else f"border:3px solid {_hex(rgb)};")
    return (f"<span style='{style}padding:0 8px;margin-right:6px'>&nbsp;</span>"
            f"<span style='margin-right:18px'>{html.escape(text, quote=False)}</span>")


def legend_html(showing: str, *, has_mask: bool, n_boxes: int) -> str:
    """The legend of what the viewer shows: "truth" (the dataset's mask and boxes) or "model"
    (the predicted mask and boxes)."""
    if showing == "truth":
        parts = [_swatch(TRUTH_COLOUR, f"Truth: the dataset's fracture box ({n_boxes})" if n_boxes
                         else "Truth: the dataset's fracture box (none in this study)")]
        mask = "the dataset's vertebra mask" if has_mask else "no vertebra mask in the dataset"
    else:
        parts = [_swatch(MODEL_COLOUR, "Prediction: the model's fracture box, with its "
                                       "probability " + (f"({n_boxes})" if n_boxes
                                                         else "(none in this study)"))]
        mask = ("the model's predicted vertebrae" if has_mask
                else "the model predicted no vertebra mask")
    parts.append(f"<span>Coloured vertebrae: {html.escape(mask, quote=False)} (one colour per level, "
                 "names beside them)</span>" if has_mask else
                 f"<span>No coloured vertebrae: {html.escape(mask, quote=False)}</span>")
    return (f"<div class='demo-legend demo-legend-{showing}' style='font-size:1.1rem'>"
            + "".join(parts) + "</div>")


def level_rows(labels: Mapping[str, tuple[bool | None, str]], report: Mapping[str, bool],
               probabilities: Mapping[str, float]) -> list[dict[str, str]]:
    """One row per level, head to feet, in words: the final label and where it came from, the
    report, and the model ("likely fracture, 96 %")."""
    names = sorted(set(labels) | set(report) | set(probabilities), key=craniocaudal_key)
    rows = []
    for name in names:
        fractured, source = labels.get(name, (None, ""))
        final = ("pending" if source == "pending" else words.label_words(fractured))
        rows.append({
            "Level": name,
            "Final label": final,
            "Where it came from": words.final_source_words(source) if source else
            "no label for this level",
            "Report": words.label_words(report.get(name)),
            "Model": "not predicted" if name not in probabilities else
            "model: " + words.probability_words(probabilities[name], THRESHOLD),
        })
    return rows


def probability_figure(probabilities: Mapping[str, float],
                       labels: Mapping[str, tuple[bool | None, str]], *,
                       font_size: int = 16) -> go.Figure:
    """Horizontal bars, one per level head to feet, the threshold marked, each bar saying in
    words what it means; fractured levels (final label) named in the axis. ``font_size`` is the
    text's (the presenter's is larger)."""
    names = sorted(probabilities, key=craniocaudal_key)
    values = [float(probabilities[n]) for n in names]
    ticks = [f"{n} (fractured)" if labels.get(n, (None, ""))[0] else n for n in names]
    colours = [_hex(MODEL_COLOUR) if v >= THRESHOLD else "#8a8f98" for v in values]
    figure = go.Figure(go.Bar(
        x=values, y=ticks, orientation="h", marker_color=colours,
        text=["model: " + words.probability_words(v, THRESHOLD) for v in values],
        textposition=["inside" if v >= 0.6 else "outside" for v in values],
        insidetextanchor="start", cliponaxis=False, hoverinfo="skip"))
    figure.add_vline(x=THRESHOLD, line_dash="dash", line_color="#444",
                     annotation_text=f"threshold {100 * THRESHOLD:.0f} %",
                     annotation_position="top")
    small = {"size": round(0.8 * font_size)}
    figure.update_layout(  # every font named: Streamlit's chart theme sets its own otherwise
        title={"text": "The model's probability of a fracture at each level",
               "font": {"size": font_size}},
        xaxis={"range": [0, 1.05], "tickformat": ".0%", "tickvals": [0, 0.25, 0.5, 0.75, 1.0],
               "title": {"text": "probability of a fracture", "font": small}, "tickfont": small},
        yaxis={"autorange": "reversed", "tickfont": {"size": font_size}},
        height=max(260, round(2.1 * font_size) * len(names) + 110),
        margin={"l": 10, "r": 10, "t": 60, "b": 40}, font={"size": font_size}, showlegend=False)
    return figure
