"""A reader copies the model's boxes as their own: when a box counts as copied, and the copy."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np
import numpy.typing as npt
from sqlalchemy.orm import Session

from db import models as m
from db.annotations import BoxInput
from db.box_events import save_box
from spine_core.annotation_geometry import level_of_box
from spine_core.inference.protocol import PredictedBox
from spine_core.labels import LEVEL_IDS

#: Two boxes closer than this (pixels, each edge) are the same box.
SAME_BOX_PX = 0.5


class SavedBoxLike(Protocol):
    source: str
    slice_index: int
    x: float
    y: float
    width: float
    height: float


def is_copied(box: PredictedBox, saved: Sequence[SavedBoxLike]) -> bool:
    """Whether the reader already holds this predicted box (a saved box copied from it, not
    moved since)."""
    return any(
        getattr(r, "source", "") == "prediction" and r.slice_index == box.slice_index
        and abs(r.x - box.x) <= SAME_BOX_PX and abs(r.y - box.y) <= SAME_BOX_PX
        and abs(r.width - box.width) <= SAME_BOX_PX and abs(r.height - box.height) <= SAME_BOX_PX
        for r in saved
    )


def copy_input(box: PredictedBox, labels: npt.NDArray[np.integer] | None) -> BoxInput:
    """The reader's box for a predicted box: the model's level when it named a known one (kept
    when the box is moved), else the level the mask gives (followed when it is moved)."""
    if box.level in LEVEL_IDS:
        return BoxInput(box.slice_index, box.x, box.y, box.width, box.height, level=box.level,
                        level_from_mask=False, source="prediction")
    level = level_of_box(labels, box.x, box.y, box.width, box.height)
    return BoxInput(box.slice_index, box.x, box.y, box.width, box.height, level=level,
                    level_from_mask=True, source="prediction")


def save_copies(session: Session, reader: m.User, study_id: int, copies: Sequence[BoxInput]) -> None:
    """Save the :func:`copy_input` of predicted boxes as ``reader``'s own boxes."""
    for item in copies:
        save_box(session, reader, study_id, item)
