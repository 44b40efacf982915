"""Vertebra labels counted from the reference vertebra, as VertXNet counts them: from C2 upward
(C1) and downward (C3, C4 ...) on cervical films, from S1 upward (L5, L4 ...) on lumbar films.

Counting assumes the usual segmentation of the spine (7 cervical, 12 thoracic, 5 lumbar), with
one exception a lateral lumbar film shows: six vertebrae without ribs right above the sacrum
(the U-Net's *lumbar* probability, given as ``lumbar``) are L1–L6, and the rib-bearing vertebra
above them T12. A T13 or an eleventh-rib spine is not identifiable on a lumbar film (the ribs
are counted from T1, off the film): those films get the labels of a typical spine, as a counting
reader would give.
"""

from __future__ import annotations

from collections.abc import Sequence

from spine_core.errors import InputError

#: The usual spine, head to feet (the sacrum is 'S', S1 its top).
TYPICAL_LEVELS: tuple[str, ...] = (
    *(f"C{i}" for i in range(1, 8)), *(f"T{i}" for i in range(1, 13)),
    *(f"L{i}" for i in range(1, 6)), "S")


#: The spine with six lumbar vertebrae (L6 above the sacrum).
SIX_LUMBAR_LEVELS: tuple[str, ...] = (*TYPICAL_LEVELS[:-1], "L6", "S")
#: A vertebra is lumbar (no ribs) when its mean *lumbar* probability reaches this.
LUMBAR_THRESHOLD = 0.5


def lumbar_run(lumbar: Sequence[float], reference_index: int) -> int:
    """How many vertebrae right above the sacrum at ``reference_index`` (head-to-feet order) are
    lumbar, up to the first that is not."""
    run = 0
    for i in range(reference_index - 1, -1, -1):
        if lumbar[i] < LUMBAR_THRESHOLD:
            break
        run += 1
    return run


def count_labels(n_vertebrae: int, reference_index: int | None, reference: str,
                 lumbar: Sequence[float] | None = None) -> list[str | None]:
    """Labels of ``n_vertebrae`` vertebrae ordered head to feet, counted from the one at
    ``reference_index`` that is ``reference`` ('C2' or 'S').

    Without a reference (``reference_index`` None) nothing is labelled: every entry is None.
    Vertebrae counted past C1 or the sacrum get None too. With ``lumbar`` (each vertebra's
    lumbar probability, same order) and the sacrum as reference, six or more lumbar vertebrae
    right above it are counted as L6 to L1 (module docstring).

    Raises:
        InputError: a reference other than C2 or S, or an index outside the vertebrae.
    """
    if reference not in ("C2", "S"):
        raise InputError(f"labels are counted from C2 or S (S1), not from {reference!r}")
    if reference_index is None:
        return [None] * n_vertebrae
    if not 0 <= reference_index < n_vertebrae:
        raise InputError(f"reference index {reference_index} is outside the {n_vertebrae} vertebrae")
    if lumbar is not None and len(lumbar) != n_vertebrae:
        raise InputError(f"{len(lumbar)} lumbar probabilities for {n_vertebrae} vertebrae")
    levels = TYPICAL_LEVELS
    if reference == "S" and lumbar is not None and lumbar_run(lumbar, reference_index) >= 6:
        levels = SIX_LUMBAR_LEVELS
    at = levels.index(reference)
    out: list[str | None] = []
    for i in range(n_vertebrae):
        k = at + i - reference_index
        out.append(levels[k] if 0 <= k < len(levels) else None)
    return out


def order_head_to_feet(centres: Sequence[tuple[float, float]]) -> list[int]:
    """Indices of (row, column) centres sorted along the spine, head first.

    The spine's axis is the principal axis of the centres (a tilted film still counts in order);
    it points to larger rows (the feet), as films are stored head up.
    """
    import numpy as np

    if len(centres) < 3:
        return sorted(range(len(centres)), key=lambda i: centres[i][0])
    pts = np.asarray(centres, dtype=np.float64)
    centred = pts - pts.mean(axis=0)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    axis = vt[0] if vt[0][0] >= 0 else -vt[0]
    return [int(i) for i in np.argsort(centred @ axis, kind="stable")]
