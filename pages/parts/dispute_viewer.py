"""The committee's view of a dispute in the reading workstation: what it hands
:func:`spine_viewer.workstation`.

* :func:`dispute_boxes`: every reader's box at the disputed level, labelled with the reader and
  drawn in the reader's colour, and the union of each slice ("union" until a decision makes it
  the final box), unions first so the readers' boxes are drawn over them;
* :func:`dispute_region`: the region the viewer zooms to, the bounds of all those boxes;
* :func:`opening_slice`: the stored slice to open at (the one most readers boxed, else the
  level's centroid).

Free of Streamlit, so each mapping is tested on its own.
"""

from __future__ import annotations

from collections.abc import Sequence

from db.dispute_queries import DisputeDetail, SliceView
from spine_viewer import ViewerBox


def _hex(rgb: Sequence[int]) -> str:
    return "#{:02x}{:02x}{:02x}".format(*(int(c) for c in rgb[:3]))


def union_name(detail: DisputeDetail) -> str:
    """"union" while the dispute is open; "final" once a decision made it ground truth."""
    return "final" if detail.status == "decided" else "union"


def dispute_boxes(detail: DisputeDetail, slices: Sequence[SliceView] | None = None) -> list[ViewerBox]:
    """The unions and the readers' boxes of ``slices`` (default: every slice with boxes)."""
    views = detail.all_slices if slices is None else slices
    name = union_name(detail)
    unions: list[ViewerBox] = []
    readers: list[ViewerBox] = []
    for view in views:
        for n, u in enumerate(view.unions):
            unions.append(ViewerBox(
                f"union-{view.slice_index}-{n}", 0, view.slice_index, u.x, u.y, u.x + u.width,
                u.y + u.height, kind="union", level=detail.level,
                label=f"{name} of {', '.join(u.readers)}", reader=name, colour=_hex(u.colour),
                editable=False))
        for b in view.boxes:
            readers.append(ViewerBox(
                f"reader-{b.box_id}", 0, b.slice_index, b.x, b.y, b.x + b.width, b.y + b.height,
                kind="other reader", level=detail.level, label=b.reader, reader=b.reader,
                colour=_hex(b.colour), editable=False))
    return [*unions, *readers]


def dispute_region(detail: DisputeDetail) -> tuple[float, float, float, float] | None:
    """(x0, y0, x1, y1) in stored pixels around every box at the level, or None (no boxes)."""
    boxes = [b for view in detail.all_slices for b in view.boxes]
    if not boxes:
        return None
    return (min(b.x for b in boxes), min(b.y for b in boxes),
            max(b.x + b.width for b in boxes), max(b.y + b.height for b in boxes))


def opening_slice(detail: DisputeDetail) -> int | None:
    """The stored slice the committee sees first, or None when the level's position is unknown."""
    return detail.focus_slice


def boxed_range(detail: DisputeDetail) -> tuple[int, int] | None:
    """(first, last) stored slice with boxes at the level, or None."""
    boxed = [v.slice_index for v in detail.all_slices if v.boxes]
    return (min(boxed), max(boxed)) if boxed else None
