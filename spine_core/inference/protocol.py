"""What every predictor gives and takes, wherever it runs (in-process, HTTP backend, MONAI Label).

A predictor receives one CT :class:`~spine_core.volume.Volume` (int16 HU, any orientation) and
returns a :class:`StudyPrediction` on that volume's grid. Pages, the CLI and the metrics only see
this protocol, so real weights plug in without code changes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

from spine_core.progress import Progress
from spine_core.volume import Volume


@dataclass(frozen=True)
class PredictedBox:
    """A suspected fracture on one axial slice (pixels of the input volume's a0 slice).

    ``explanation``: not a detection but where the fracture classifier looked (its Grad-CAM), kept
    beside the detector's boxes so a viewer can show why a level was scored.
    """

    slice_index: int
    x: float
    y: float
    width: float
    height: float
    score: float
    level: str | None = None
    explanation: bool = False

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "slice_index": self.slice_index,
            "x": self.x,
            "y": self.y,
            "width": self.width,
            "height": self.height,
            "score": self.score,
            "level": self.level,
        }
        if self.explanation:
            out["explanation"] = True
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> PredictedBox:
        return cls(
            int(data["slice_index"]),
            float(data["x"]),
            float(data["y"]),
            float(data["width"]),
            float(data["height"]),
            float(data["score"]),
            data.get("level"),
            data.get("explanation") is True,
        )


@dataclass(frozen=True)
class ModelInfo:
    """Identity of the model(s) behind a predictor, stored with every prediction."""

    name: str
    version: str
    card: dict[str, Any] = field(default_factory=dict)


@dataclass
class StudyPrediction:
    """Everything one predictor run gives for one study.

    Attributes:
        mask: canonical level ids (uint8) on the input volume's grid, or None if not segmented.
        level_probabilities: level name ('C1'...) -> probability of fracture.
        patient_probability: probability that any cervical level is fractured; NaN when the
            model scores no fracture (not predicted).
        boxes: suspected fracture boxes on axial slices, then the explanation boxes (Grad-CAM,
            ``PredictedBox.explanation``) of the same levels when the model gives both.
        centroids: level name -> LPS mm centroid of the predicted vertebra.
        timings: stage name -> seconds.
    """

    model: ModelInfo
    mask: npt.NDArray[np.uint8] | None
    level_probabilities: dict[str, float]
    patient_probability: float
    boxes: list[PredictedBox] = field(default_factory=list)
    centroids: dict[str, tuple[float, float, float]] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    device: str = "cpu"


@runtime_checkable
class Predictor(Protocol):
    """Anything that turns a CT volume into a :class:`StudyPrediction`."""

    def info(self) -> ModelInfo:
        """Name, version and model card of the model(s)."""
        ...

    def predict(self, volume: Volume, progress: Progress | None = None) -> StudyPrediction:
        """Run on one study. Raises ``spine_core.errors.SpineError`` subclasses on failure."""
        ...
