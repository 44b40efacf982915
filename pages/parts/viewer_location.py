"""Where the viewer is, in the address bar: ``?study=<StudyInstanceUID>&plane=axial&slice=<n>``.

The slice number is the one the viewer shows (1-based, "Axial 31 / 60"), in the display order of
:mod:`spine_core.render` (axial: feet to head). The address is the source of truth on every run:
a deep link, a bookmark, a reload and the browser's Back/Forward (which rerun the page with the
old address) all open the study and slice they name. The sign-in token (``s=``, kept by app.py)
is left alone.

Each settled slice (the client-side viewer's debounced commit) writes the address once, so the
browser's history holds one entry per place the reader stopped at.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import streamlit as st

from pages.parts.common import workspace

STUDY, PLANE, SLICE = "study", "plane", "slice"
PLANE_NAMES: tuple[str, ...] = ("axial", "sagittal", "coronal")


@dataclass(frozen=True)
class Location:
    """What the address names: a study UID, a plane and a 1-based slice number (each optional)."""

    study_uid: str | None
    plane: str | None
    number: int | None


def read_location(params: Mapping[str, str] | None = None) -> Location:
    """The study, plane and slice in the address (junk values read as absent)."""
    q = st.query_params if params is None else params
    uid = (q.get(STUDY) or "").strip() or None
    plane = q.get(PLANE)
    plane = plane if plane in PLANE_NAMES else None
    try:
        number: int | None = int(q.get(SLICE, ""))
    except ValueError:
        number = None
    if number is not None and number < 1:
        number = None
    return Location(uid, plane, number)


def write_location(study_uid: str, plane: str | None = None, number: int | None = None) -> None:
    """Put the location in the address, in one update (one history entry), only if it changed.

    Other parameters (the sign-in token) are kept; ``plane``/``slice`` are dropped when None.
    """
    wanted = {STUDY: study_uid}
    if plane is not None and number is not None:
        wanted.update({PLANE: plane, SLICE: str(int(number))})
    current = {k: st.query_params.get(k) for k in (STUDY, PLANE, SLICE)}
    target = {k: wanted.get(k) for k in (STUDY, PLANE, SLICE)}
    if current == target:
        return
    params = {k: v for k, v in st.query_params.to_dict().items() if k not in (STUDY, PLANE, SLICE)}
    params.update(wanted)
    st.query_params.from_dict(params)


def study_id_of(uid: str) -> int | None:
    """The database id of the study with this StudyInstanceUID, or None."""
    from sqlalchemy import select

    from db import models as m

    with workspace().sessions() as session:
        found = session.scalars(select(m.Study.id).where(m.Study.study_uid == uid)).first()
    return int(found) if found is not None else None
