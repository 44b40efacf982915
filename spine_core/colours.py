"""The colours the app draws with, in one place: readers, the union box, the model and the truth.

Vertebra level colours are derived from the level vocabulary (:data:`spine_core.labels.LEVEL_COLOURS`).
"""

from __future__ import annotations

from collections.abc import Iterable

__all__ = ["EXPLANATION_COLOUR", "MODEL_COLOUR", "READER_PALETTE", "RGB", "TRUTH_COLOUR", "UNION_COLOUR",
           "reader_colours"]

#: An 8-bit red, green, blue triple.
RGB = tuple[int, int, int]

#: Union box colour (Figure 1 of the RSNA 2022 dataset paper draws the union in its own colour).
UNION_COLOUR: RGB = (255, 230, 0)

#: One colour per reader (in reader name order), none close to the union's yellow; more readers
#: than colours cycle.
READER_PALETTE: tuple[RGB, ...] = (
    (64, 160, 255), (255, 80, 80), (90, 220, 110), (200, 120, 255), (255, 150, 40), (0, 215, 215),
)

#: The model's boxes and mask outline.
MODEL_COLOUR: RGB = (255, 64, 160)

#: The classifier's Grad-CAM boxes: why it scored a level (an explanation, not a detection).
EXPLANATION_COLOUR: RGB = (150, 110, 255)

#: The reference (ground-truth) boxes on the demonstration page.
TRUTH_COLOUR: RGB = (255, 215, 0)


def reader_colours(readers: Iterable[str]) -> dict[str, RGB]:
    """A stable colour per reader (sorted by name), from :data:`READER_PALETTE`."""
    names = sorted({str(r) for r in readers})
    return {name: READER_PALETTE[i % len(READER_PALETTE)] for i, name in enumerate(names)}
