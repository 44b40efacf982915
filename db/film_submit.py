"""Submitting a film: the reader's vertebra boxes are checked instead of the CT's level calls.

* every box has a vertebra label, and no label is given to two boxes: otherwise the submission
  is refused, in one line naming what to fix;
* a reference vertebra (C2 or S1) is marked: otherwise the reader is asked to confirm
  (:class:`FilmNeedsConfirmation`), and the audit entry of the submission records it.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from sqlalchemy.orm import Session

from db import annotations as ann
from db import models as m
from db.film_reading import film_boxes, is_film_study
from spine_core.errors import InputError
from spine_core.film_labels import shown_level


@dataclass(frozen=True)
class FilmCheck:
    """What stands between a reader and submitting a film (see :func:`film_submit_check`)."""

    boxes: int = 0
    unlabelled: int = 0
    twice: tuple[str, ...] = ()
    reference: bool = False

    @property
    def refused(self) -> str:
        """What must be fixed before the film can be submitted ('' when nothing)."""
        parts: list[str] = []
        if self.unlabelled:
            n = self.unlabelled
            parts.append(f"{n} box{'es have' if n > 1 else ' has'} no vertebra label")
        if self.twice:
            parts.append(f"more than one box is labelled {', '.join(self.twice)}")
        return "; ".join(parts)

    @property
    def to_confirm(self) -> str:
        """What the reader is asked to confirm ('' when nothing)."""
        if not self.boxes:
            return "you boxed no vertebra on this film"
        return "" if self.reference else "no reference vertebra (C2 or S1) is marked"


class FilmNeedsConfirmation(InputError):
    """The film has no reference vertebra (or no box): the page asks, then submits with
    ``confirm=True``."""


def film_submit_check(session: Session, actor: m.User, study_id: int) -> FilmCheck:
    """The reader's own boxes of the film, checked (see the module docstring)."""
    boxes = [b for b in film_boxes(session, actor, study_id) if b.reader == actor.username]
    counts = Counter(b.level for b in boxes if b.level)
    return FilmCheck(
        boxes=len(boxes), unlabelled=sum(b.level is None for b in boxes),
        twice=tuple(shown_level(lvl) for lvl, n in counts.items() if n > 1),
        reference=any(b.is_reference for b in boxes))


def submit_film(session: Session, actor: m.User, study_id: int, *, confirm: bool = False
                ) -> FilmCheck:
    """Submit the reader's reading of a film after :func:`film_submit_check`.

    Raises:
        InputError: not a film, or boxes without a label or with a label used twice.
        FilmNeedsConfirmation: no reference vertebra (or no box), unless ``confirm``.
        PermissionDenied: not the reader's assigned, unsubmitted study.
    """
    if not is_film_study(session, study_id):
        raise InputError("this study is a CT, not a radiograph: submit it with its level calls")
    ann._lock_own_assignment(session, actor, study_id)  # a box event of another tab goes first
    ann._require_writable(session, actor, study_id)
    check = film_submit_check(session, actor, study_id)
    if check.refused:
        raise InputError(f"Not submitted: {check.refused}. Give each vertebra box its own label "
                         "in the table below the film, or delete the extra box.")
    if check.to_confirm and not confirm:
        raise FilmNeedsConfirmation(f"Not submitted: {check.to_confirm}; confirm to submit the "
                                    "film as it is.")
    also = {"film": check.to_confirm} if check.to_confirm else None
    ann.submit(session, actor, study_id, confirm=True, confirmed_also=also)
    return check
