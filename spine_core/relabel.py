"""A reader's renumbering of a study's vertebrae (pure, no I/O).

Readers sometimes see that the mask's numbering is off: a sixth lumbar vertebra ("the vertebra
labelled L5 is L6"), a thirteenth thoracic ("T13 present at the vertebra labelled L1"), or a
count that is one off from some level on. A relabelling is a mapping *mask level name -> the
reader's level name* over the levels it changes; every other level keeps its name.

:func:`shift_from` turns one statement ("the vertebra labelled ``at`` is ``says``") into such a
mapping for the whole column: the named vertebra takes the reader's name and every mask vertebra
below it (down to the last lumbar; the sacrum and coccyx keep theirs) takes the next name in
turn, so the numbering stays consecutive. Levels above it keep their names. Names follow::

    C1..C7, T1..T12, (T13 only when the reader names it), L1..L5, L6

so "labelled L1 is T13" gives L1 -> T13, L2 -> L1, ..., L5 -> L4 (the lumbar names shift up),
and "labelled L5 is L6" gives L5 -> L6.

:func:`check_relabel` refuses a mapping that would give two vertebrae one name;
:func:`apply_relabel` rewrites a label mask (canonical ids) without touching anything else.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np
import numpy.typing as npt

from spine_core.errors import InputError, LabelVocabularyError
from spine_core.labels import CRANIOCAUDAL_ORDER, LEVEL_IDS, LEVEL_NAMES, level_id, level_name

#: Levels that never move in a shift (they are not counted vertebrae of the column).
FIXED: frozenset[str] = frozenset({"S", "Co"})
_SEQUENCE: tuple[str, ...] = (*(f"C{i}" for i in range(1, 8)), *(f"T{i}" for i in range(1, 13)),
                              *(f"L{i}" for i in range(1, 7)))


class RelabelError(InputError, ValueError):
    """A relabelling that cannot be (an unknown level, two vertebrae given one name...)."""


def _name(text: str) -> str:
    try:
        return level_name(level_id(str(text).strip()))
    except LabelVocabularyError:
        raise RelabelError(f"{text!r} is not a vertebra level name (C1-C7, T1-T13, L1-L6, S, "
                           "Co)") from None


def _order(name: str) -> int:
    return CRANIOCAUDAL_ORDER.index(LEVEL_IDS[name])


def _after(name: str) -> str:
    """The name of the vertebra below one called ``name`` in a consecutive count."""
    if name == "T13":
        return "L1"
    if name == "T12":
        return "L1"
    index = _SEQUENCE.index(name)
    if index + 1 >= len(_SEQUENCE):
        raise RelabelError(f"the numbering runs past {name}: no vertebra is named below L6")
    return _SEQUENCE[index + 1]


def shift_from(present: Iterable[str], at: str, says: str) -> dict[str, str]:
    """The mapping for "the vertebra labelled ``at`` is ``says``" over the mask's levels ``present``.

    Only levels whose name changes are in the result.

    Raises:
        RelabelError: unknown names, ``at`` not in the mask, the sacrum or coccyx moved, or a count
            that runs past L6.
    """
    at_name, says_name = _name(at), _name(says)
    levels = sorted({_name(p) for p in present}, key=_order)
    if at_name not in levels:
        raise RelabelError(f"the mask has no vertebra labelled {at_name} (it has "
                           f"{', '.join(levels) or 'none'})")
    if at_name in FIXED or says_name in FIXED:
        raise RelabelError("the sacrum and coccyx keep their names; relabel a vertebra of the "
                           "column (C1-L6)")
    below = [lv for lv in levels if _order(lv) > _order(at_name) and lv not in FIXED]
    mapping = {at_name: says_name}
    current = says_name
    for level in below:
        try:
            current = _after(current)
        except RelabelError:
            raise RelabelError(f"labelled {at_name} as {says_name}, the vertebra labelled {level} "
                               "would be named below L6; there is no such level") from None
        mapping[level] = current
    mapping = {k: v for k, v in mapping.items() if k != v}
    check_relabel(levels, mapping)
    return mapping


def check_relabel(present: Iterable[str], mapping: Mapping[str, str]) -> dict[str, str]:
    """The mapping with canonical names, checked against the mask's levels ``present``.

    Raises:
        RelabelError: an unknown name, a level the mask lacks, or two vertebrae given one name.
    """
    levels = {_name(p) for p in present}
    clean: dict[str, str] = {}
    for source, target in mapping.items():
        src, dst = _name(source), _name(target)
        if src not in levels:
            raise RelabelError(f"the mask has no vertebra labelled {src} to rename")
        if src != dst:
            clean[src] = dst
    final: dict[str, list[str]] = {}
    for level in levels:
        final.setdefault(clean.get(level, level), []).append(level)
    clashes = {name: sorted(srcs, key=_order) for name, srcs in final.items() if len(srcs) > 1}
    if clashes:
        name, srcs = sorted(clashes.items(), key=lambda kv: _order(kv[0]))[0]
        raise RelabelError(f"the vertebrae labelled {' and '.join(srcs)} would both be named "
                           f"{name}; rename the others too (or use a shift from a level on)")
    return dict(sorted(clean.items(), key=lambda kv: _order(kv[0])))


def relabel_name(level: str, mapping: Mapping[str, str]) -> str:
    """The reader's name of the vertebra the mask labels ``level``."""
    return mapping.get(level, level)


def apply_relabel(labels: npt.NDArray[np.integer], mapping: Mapping[str, str]
                  ) -> npt.NDArray[np.integer]:
    """A copy of the label mask (canonical ids) with each vertebra renamed by ``mapping``.

    The voxels of each vertebra stay where they are; only their value changes. Raises
    RelabelError when two vertebrae would end up with one id.
    """
    present = [LEVEL_NAMES[int(v)] for v in np.unique(labels) if int(v) in LEVEL_NAMES]
    clean = check_relabel(present, mapping)
    out = np.array(labels, copy=True)
    for source, target in clean.items():
        out[labels == LEVEL_IDS[source]] = LEVEL_IDS[target]
    return out
