"""`LocalPredictor`: both stages in this process, on CPU or CUDA (mixed precision on CUDA).

Weights come from a local folder only (by default the demo weights shipped in the package); they
are never downloaded.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import torch

from spine_core.config import Settings
from spine_core.errors import InputError, ModelLoadError
from spine_core.inference.detector import load_detector
from spine_core.inference.field import column_problem, header_problem, refuse
from spine_core.inference.fracture import (
    FractureConfig,
    FractureModel,
    patient_probability,
)
from spine_core.inference.loading import LoadedNetwork, default_weights_dir, find_stage, load_network
from spine_core.inference.protocol import ModelInfo, StudyPrediction
from spine_core.inference.segmentation import (
    SegmentationConfig,
    SegmentationModel,
    centroids_by_name,
)
from spine_core.inference.xray.config import UNET_FILE as XRAY_UNET_FILE
from spine_core.inference.xray.model import XrayModel
from spine_core.inference.xray.predictor import predict_radiograph
from spine_core.io.radiograph import FRONTAL_VIEWS, is_radiograph_volume
from spine_core.progress import Progress
from spine_core.volume import Volume

#: Smallest input the models accept, voxels per axis.
MIN_INPUT_VOXELS = 8
CARD_FILE = "model_card.json"


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """"auto" -> CUDA when available, else CPU. Asking for CUDA without it is an error."""
    name = str(device)
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except RuntimeError as exc:
        raise InputError(f"device '{name}' is not a torch device; use auto, cpu or cuda") from exc
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise InputError(
            f"device '{name}' was asked for but CUDA is not available here; use device 'cpu' or "
            "'auto', or run the GPU backend"
        )
    if dev.type not in ("cpu", "cuda"):
        raise InputError(f"device '{name}' is not supported; use auto, cpu or cuda")
    return dev


def _task_of(loaded: LoadedNetwork, expected: str) -> None:
    task = loaded.config.get("task", expected)
    if task != expected:
        raise ModelLoadError(f"{loaded.path} holds a '{task}' model where a '{expected}' model is expected")


class LocalPredictor:
    """Segmentation + fracture classification in-process (see :mod:`spine_core.inference`)."""

    def __init__(
        self,
        segmentation: SegmentationModel,
        fracture: FractureModel | None,
        model_info: ModelInfo,
        radiograph: XrayModel | None = None,
    ) -> None:
        self.segmentation = segmentation
        self.fracture = fracture
        self._info = model_info
        self.radiograph = radiograph
        self._folder = ""

    @classmethod
    def from_dir(
        cls,
        weights_dir: str | Path | None = None,
        device: str | torch.device = "auto",
        amp: bool = True,
        with_fracture: bool = True,
    ) -> LocalPredictor:
        """Load both stages from a folder (default: the shipped demo weights).

        The folder holds ``segmentation`` and ``fracture`` in any format of
        :mod:`spine_core.inference.loading`, and optionally the fracture box detector
        (``fracture_boxes``, :mod:`spine_core.inference.detector`) and ``model_card.json``.

        Raises:
            ModelLoadError: a stage is missing, corrupt or of the wrong kind.
            InputError: the device is unavailable.
        """
        folder = Path(weights_dir) if weights_dir is not None else default_weights_dir()
        if not folder.is_dir():
            raise ModelLoadError(
                f"models folder {folder} does not exist; point SPINE_MODELS_DIR (or --models-dir) "
                "to a folder with segmentation and fracture weights"
            )
        dev = resolve_device(device)
        seg_loaded = load_network(find_stage(folder, "segmentation"))
        _task_of(seg_loaded, "segmentation")
        seg = SegmentationModel(
            seg_loaded.net, SegmentationConfig.from_dict(seg_loaded.config), dev, amp
        )
        frac = None
        frac_loaded = boxes_loaded = None
        if with_fracture:
            frac_loaded = load_network(find_stage(folder, "fracture"))
            _task_of(frac_loaded, "fracture")
            frac_config = FractureConfig.from_dict(frac_loaded.config)
            found = load_detector(folder, frac_config, dev, amp)
            frac = FractureModel(frac_loaded.net, frac_config, dev, amp,
                                 detector=found[0] if found else None)
            boxes_loaded = found[1] if found else None
        card = _read_card(folder)
        name = str(card.get("name") or seg_loaded.config.get("name", folder.name))
        version = str(card.get("version") or seg_loaded.config.get("version", "unknown"))
        card.setdefault("stages", {})
        card["stages"]["segmentation"] = _stage_summary(seg_loaded)
        if frac_loaded is not None:
            card["stages"]["fracture"] = _stage_summary(frac_loaded)
        if boxes_loaded is not None:
            card["stages"]["fracture_boxes"] = _stage_summary(boxes_loaded)
        radiograph = None
        if (folder / XRAY_UNET_FILE).is_file():  # the radiograph ensemble, when the folder has it
            radiograph = XrayModel.from_dir(folder, device="cpu")
            card["stages"]["radiograph"] = {**radiograph.info, "path": XRAY_UNET_FILE}
        predictor = cls(seg, frac, ModelInfo(name=name, version=version, card=card), radiograph)
        predictor._folder = str(folder)
        return predictor

    @classmethod
    def from_settings(cls, settings: Settings) -> LocalPredictor:
        """Weights from ``settings.models_dir`` (default: the shipped demo weights) on
        ``settings.device``."""
        return cls.from_dir(settings.models_dir, device=settings.device)

    @property
    def device(self) -> torch.device:
        return self.segmentation.device

    @property
    def predicts_radiographs(self) -> bool:
        """Whether the models folder had the radiograph ensemble (``spine serve`` says so in
        ``/health`` and refuses radiographs at once without it)."""
        return self.radiograph is not None

    def info(self) -> ModelInfo:
        return self._info

    def predict(self, volume: Volume, progress: Progress | None = None) -> StudyPrediction:
        """Segment, label and score one CT volume (int16 HU, any orientation); a radiograph
        goes to the radiograph ensemble (:mod:`spine_core.inference.xray`).

        Raises:
            OutOfFieldError: the CT is outside the models' field (too few slices, slices too
                thick, no spine-like column of vertebrae; :mod:`spine_core.inference.field`),
                or the film is frontal (AP or PA: the radiograph model reads lateral films).
        """
        if is_radiograph_volume(volume):
            if self.radiograph is None:
                raise ModelLoadError(
                    f"no radiograph model in {self._folder or 'the models folder'}: "
                    "run `spine train --modality xray` into it to predict radiographs")
            view = str(volume.meta.get("view") or "unknown")
            if view in FRONTAL_VIEWS:  # the ensemble counts vertebrae on lateral films only
                raise refuse(f"the radiograph model reads lateral films and this film is {view}; "
                             "if it is lateral, set its view to lateral in the viewer")
            return predict_radiograph(self.radiograph, volume, self._info, progress)
        problem = header_problem(volume)  # out of the models' field: refuse, do not guess
        if problem is None and min(volume.shape) < MIN_INPUT_VOXELS:
            problem = (f"the volume of shape {volume.shape} is too small to segment: each axis "
                       f"needs at least {MIN_INPUT_VOXELS} voxels")
        if problem is not None:
            raise refuse(problem)
        report = progress or (lambda _f, _m: None)
        timings: dict[str, float] = {}
        t0 = time.perf_counter()
        report(0.0, "segmenting vertebrae")
        seg = self.segmentation.segment(volume, timings)
        t1 = time.perf_counter()
        timings["segmentation"] = t1 - t0
        problem = column_problem(seg.model_labels, float(seg.model_grid.spacing.prod()), seg.centroids)
        if problem is not None:
            raise refuse(problem)
        level_probs: dict[str, float] = {}
        boxes = []
        if self.fracture is not None:
            report(0.6, "scoring fractures per vertebra")
            scored = self.fracture.score(seg, volume.affine)
            level_probs = scored.probabilities
            report(0.8, "localising suspected fractures")
            boxes = self.fracture.boxes(seg, volume.affine, scored)
            if self.fracture.detector is not None:  # Grad-CAM: why the classifier scored them
                boxes += self.fracture.explanation_boxes(seg, volume.affine, scored)
            timings["fracture"] = time.perf_counter() - t1
        timings["total"] = time.perf_counter() - t0
        report(1.0, "done")
        return StudyPrediction(
            model=self._info,
            mask=seg.mask,
            level_probabilities=level_probs,
            patient_probability=patient_probability(level_probs),
            boxes=boxes,
            centroids=centroids_by_name(seg.centroids),
            timings=timings,
            device=str(self.device),
        )


def _read_card(folder: Path) -> dict[str, Any]:
    path = folder / CARD_FILE
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ModelLoadError(f"model card {path} is not readable JSON ({exc}); restore it") from exc
    return data if isinstance(data, dict) else {}


def _stage_summary(loaded: LoadedNetwork) -> dict[str, Any]:
    return {
        "name": loaded.config.get("name"),
        "version": loaded.config.get("version"),
        "format": loaded.source,
        "path": loaded.path.name,
    }
