"""A radiograph's view (lateral, AP or PA) as a reader set it.

The header's ViewPosition gives the view when it has one (:mod:`spine_core.io.radiograph`); many
films have none, or a wrong one. A reader, an adjudicator or an admin may set it here: one row per
film, the last word, every change in the audit log (``film.view``). Setting it back to the
header's removes the row. Annotators set it only on films assigned to them.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.orm import Session

from db import audit
from db import models as m
from db.access import check_permission, is_annotator
from db.annotations import assignment_for, primary_series
from db.session import unit_of_work
from db.studies import is_radiograph_series, open_image
from db.workspace import Workspace
from spine_core.errors import InputError, NotFound, PermissionDenied
from spine_core.io.radiograph import is_radiograph_volume, with_view
from spine_core.roles import Permission
from spine_core.volume import Volume

#: The views a reader may set, as DICOM's ViewPosition spells the frontal ones.
FILM_VIEWS: tuple[str, ...] = ("lateral", "AP", "PA")


@dataclass(frozen=True)
class SetView:
    """The view a person set on a film: which, who, when (ISO 8601, UTC)."""

    view: str
    set_by: str
    set_at: str


def film_view(session: Session, study_id: int) -> SetView | None:
    """The view set on film ``study_id``, or None (the header's view stands)."""
    row = session.get(m.FilmView, int(study_id))
    if row is None:
        return None
    return SetView(row.view, row.set_by, row.set_at.isoformat(timespec="seconds"))


def _check_film(session: Session, actor: m.User, study_id: int) -> None:
    check_permission(actor, Permission.set_film_view)
    series = primary_series(session, int(study_id))  # NotFound: no such study, or no image
    if not is_radiograph_series(series):
        raise InputError(f"study {series.study.study_uid} is not a radiograph; only a film has a "
                         "view to set")
    if is_annotator(actor) and assignment_for(session, int(study_id), actor.id) is None:
        raise PermissionDenied("this film is not assigned to you; ask an admin to assign it")


def image_to_predict(ws: Workspace, series: m.Series, study_id: int) -> Volume:
    """The series' image as the models see it: a film carries the view a person set on it
    (unchanged when none was set), so the models hear the readers' word over the header's."""
    volume = open_image(ws, series)
    if not is_radiograph_volume(volume):
        return volume
    with unit_of_work(ws.sessions, readonly=True) as session:
        set_view = film_view(session, study_id)
    return with_view(volume, set_view.view) if set_view is not None else volume


def may_set_film_view(session: Session, actor: m.User, study_id: int) -> bool:
    """Whether ``actor`` may set film ``study_id``'s view (see :func:`set_film_view`)."""
    try:
        _check_film(session, actor, study_id)
    except (InputError, NotFound, PermissionDenied):
        return False
    return True


def set_film_view(session: Session, actor: m.User, study_id: int, view: str | None) -> bool:
    """Set film ``study_id``'s view to ``view`` (one of :data:`FILM_VIEWS`), or back to the
    header's with None or ""; audited. Returns whether anything changed.

    Raises:
        InputError: an unknown view, or a study that is not a film.
        PermissionDenied: a viewer, or an annotator the film is not assigned to.
        NotFound: no such study.
    """
    wanted = (view or "").strip()
    if wanted and wanted not in FILM_VIEWS:
        raise InputError(f"unknown view {view!r}; choose one of {', '.join(FILM_VIEWS)}, or the "
                         "header's")
    _check_film(session, actor, study_id)
    row = session.get(m.FilmView, int(study_id))
    before = row.view if row is not None else ""
    if before == wanted:
        return False
    if not wanted:
        assert row is not None
        session.delete(row)
    elif row is None:
        session.add(m.FilmView(study_id=int(study_id), view=wanted, set_by=actor.username))
    else:
        row.view, row.set_by, row.set_at = wanted, actor.username, m.utcnow()
    audit.record(session, actor.username, "film.view", "study", int(study_id),
                 before={"view": before or "header"}, after={"view": wanted or "header"})
    return True
