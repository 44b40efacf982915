"""One written case, whatever generated it: image, labels, centroids, grades and findings.

Both generators (cervical :func:`~spine_core.phantom.study.generate_study`, thoracolumbar and
whole :func:`~spine_core.phantom.spine_study.generate_spine_study`) become a :class:`DemoCase`,
which the NIfTI layout writers take.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from spine_core.labels import LEVEL_IDS
from spine_core.phantom.compression import Compression
from spine_core.phantom.spine_study import ORIENTATIONS, SpineStudy
from spine_core.phantom.study import PhantomStudy
from spine_core.volume import Volume


@dataclass(frozen=True)
class DemoCase:
    """What a layout writer needs of one study.

    ``orientation`` is the NIfTI axis-code triple (i, j, k) the files are stored in;
    ``centroids`` maps canonical level ids to LPS mm.
    """

    seed: int
    region: str
    image: Volume
    labels: Volume
    orientation: tuple[str, str, str]
    centroids: dict[int, tuple[float, float, float]]
    compressions: tuple[Compression, ...] = ()
    trauma: dict[str, str] = field(default_factory=dict)
    findings: tuple[str, ...] = ()

    @property
    def array_axcodes(self) -> tuple[str, str, str]:
        """Axis codes of the stored grid in array order (a0, a1, a2): NIfTI's reversed."""
        i, j, k = self.orientation
        return (k, j, i)

    def stored(self, volume: Volume) -> Volume:
        """``volume`` (image or labels) permuted/flipped to the stored orientation."""
        return volume.reoriented(self.array_axcodes)

    def truth(self) -> dict[str, Any]:
        """JSON-ready description of what is true about this case."""
        return {
            "seed": self.seed,
            "region": self.region,
            "shape": list(self.image.shape),
            "orientation": "".join(self.orientation),
            "levels": sorted(self.centroids),
            "transitional": list(self.findings),
            "compressions": [
                {"level": c.level, "label": LEVEL_IDS[c.level], "grade": c.grade,
                 "morphology": c.morphology.value, "height_loss": c.height_loss}
                for c in self.compressions
            ],
            "trauma": dict(self.trauma),
        }


def _tuple3(p: np.ndarray) -> tuple[float, float, float]:
    return (float(p[0]), float(p[1]), float(p[2]))


def on_their_labels(labels: Volume, centroids: dict[int, tuple[float, float, float]]
                    ) -> dict[int, tuple[float, float, float]]:
    """Centroids moved, where their voxel is not of their level (a ring-shaped C1, a coarse
    grid), to the centre of the nearest voxel that is."""
    out = {}
    arr = labels.array
    for lid, p in centroids.items():
        idx = np.rint(labels.lps_to_index(p)).astype(int)
        inside = bool(np.all(idx >= 0) and np.all(idx < arr.shape))
        if inside and arr[tuple(idx)] == lid:
            out[lid] = p
            continue
        voxels = np.argwhere(arr == lid)
        if not voxels.size:
            continue
        nearest = voxels[np.argmin(np.sum((voxels - idx) ** 2, axis=1))]
        out[lid] = _tuple3(labels.index_to_lps(nearest.astype(np.float64)))
    return out


def from_spine_study(study: SpineStudy) -> DemoCase:
    return DemoCase(
        seed=study.seed, region=study.region, image=study.image, labels=study.labels,
        orientation=study.orientation,
        centroids=on_their_labels(study.labels,
                                  {lid: _tuple3(p) for lid, p in study.centroids.items()}),
        compressions=study.compressions, trauma=dict(study.trauma),
        findings=study.transitional.findings,
    )


def from_cervical_study(study: PhantomStudy) -> DemoCase:
    """A cervical study as a case; its stored orientation is drawn from its seed."""
    rng = np.random.default_rng([study.seed, 0x0E1])
    orientation = ORIENTATIONS[int(rng.integers(len(ORIENTATIONS)))]
    return DemoCase(
        seed=study.seed, region="cervical", image=study.image, labels=study.labels,
        orientation=orientation,
        centroids=on_their_labels(study.labels, {LEVEL_IDS[name]: _tuple3(p)
                                                 for name, p in study.centroids.items()}),
        trauma={f.level: f.kind for f in study.fractures},
    )
