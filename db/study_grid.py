"""A study's viewer grid and vertebra labels, opened once per process, for the box route.

The Annotate page takes a box's level from the labels of its stored slice in the dataset's own
mask (``db.studies.primary_mask``), aligned to the image grid by ``db.studies.open_mask`` (the page
opens the study through ``pages.parts.viewer_parts.load_study``, which uses the same two calls); a
mask that cannot be opened gives no level, as on the page. :func:`study_grid` does the same below
the pages, for ``spine_web.box_routes``: the display geometry the viewer draws in and the labels,
memory-mapped from the volume cache, kept per series, fingerprint and mask.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from sqlalchemy.orm import Session

from db.annotations import primary_series
from db.studies import open_image, open_mask, primary_mask
from db.workspace import Workspace
from spine_core.errors import MaskError
from spine_core.render.display import DisplayGeometry
from spine_core.viewer_boxes import viewer_geometry
from spine_core.volume import Volume

MAX_OPEN = 8  # studies kept open per process (memory maps: cheap, but not unbounded)


@dataclass(frozen=True, eq=False)
class StudyGrid:
    """The viewer's display geometry of a study and its vertebra mask (None: no usable mask)."""

    geometry: DisplayGeometry
    mask: Volume | None

    def labels(self, slice_index: int) -> npt.NDArray[Any] | None:
        """The vertebra labels of stored slice ``slice_index`` (None: no mask, or off the volume)."""
        if self.mask is None or not 0 <= slice_index < self.mask.shape[0]:
            return None
        return np.asarray(self.mask.array[slice_index])


_open: OrderedDict[tuple[Any, ...], StudyGrid] = OrderedDict()
_lock = threading.Lock()


def study_grid(ws: Workspace, session: Session, study_id: int) -> StudyGrid:
    """The study's grid and mask (opened on first use, then kept). Raises NotFound for a study
    without a series, SourceChangedError when its files changed since import."""
    series = primary_series(session, study_id, with_masks=True)  # one query
    row = primary_mask(series)
    key = (series.id, series.fingerprint, row.id if row else None, row.path if row else None)
    with _lock:
        grid = _open.get(key)
        if grid is not None:
            _open.move_to_end(key)
            return grid
    image = open_image(ws, series)
    try:
        mask = open_mask(ws, series, image, row) if row is not None else None
    except MaskError:
        mask = None  # the page opens such a study without its mask: boxes get no level
    grid = StudyGrid(viewer_geometry(image), mask)
    with _lock:
        _open[key] = grid
        while len(_open) > MAX_OPEN:
            _open.popitem(last=False)
    return grid


def forget_grids() -> None:
    """Drop every opened grid of this process (tests; after a re-import the key changes anyway)."""
    with _lock:
        _open.clear()
