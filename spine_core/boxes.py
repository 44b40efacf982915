"""A box on one stored axial slice: the one type readers, the union rule, exports and the viewer share.

Coordinates are pixels of the stored slice ``array[slice_index]`` (the Volume's a0 index, in
position order): ``x`` = column and ``y`` = row of the top-left corner (RSNA's "point closest to
(0, 0)"), ``width``/``height`` in pixels. A box covers ``[x, x + width) × [y, y + height)``;
coordinates may be fractional.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Box"]


@dataclass(frozen=True)
class Box:
    """A rectangle on stored axial slice ``slice_index``; optionally whose it is and its level."""

    slice_index: int
    x: float
    y: float
    width: float
    height: float
    reader: str | None = None
    level: str | None = None
    id: int | str | None = None

    @property
    def x2(self) -> float:
        return self.x + self.width

    @property
    def y2(self) -> float:
        return self.y + self.height

    @property
    def area(self) -> float:
        return max(self.width, 0.0) * max(self.height, 0.0)

    def describe(self) -> str:
        """'box #7 of reader alice on slice 12 (x=10, y=20, width=30, height=40)'."""
        name = f"box #{self.id}" if self.id is not None else "box"
        who = f" of reader {self.reader}" if self.reader is not None else ""
        return (
            f"{name}{who} on slice {self.slice_index} "
            f"(x={self.x:g}, y={self.y:g}, width={self.width:g}, height={self.height:g})"
        )
