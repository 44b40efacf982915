"""The radiograph model: both networks on one film, and the film's vertebrae for each mode
(``unet``, ``detector`` or ``ensemble``; see :mod:`.decode`).

Inference reads the film on the model grid (a few hundred pixels a side, whatever the film's
size), so a 2,000 x 2,000 film costs about as much as a small one; only the final mask is drawn
at the film's size (the U-Net's probability upsampled bilinearly, instances by nearest pixel).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
import torch.nn.functional as F
from scipy import ndimage
from torch import nn

from spine_core.errors import InputError, ModelLoadError
from spine_core.inference.xray.config import (
    DETECTOR_FILE,
    REFERENCES,
    UNET_FILE,
    XrayConfig,
)
from spine_core.inference.xray.counting import count_labels, order_head_to_feet
from spine_core.inference.xray.decode import (
    Instances,
    detections,
    detector_instances,
    ensemble_instances,
    pick_reference,
    unet_instances,
)
from spine_core.inference.xray.grid import detector_input, film_to_grid
from spine_core.inference.xray.weights import load_stage
from spine_core.labels import LEVEL_IDS

MODES = ("unet", "detector", "ensemble")


@dataclass(frozen=True)
class FilmVertebra:
    """One vertebra found on a film: its label (None when no reference was found), box
    (x, y, width, height) in film pixels, detection score and whether it is the reference."""

    level: str | None
    box: tuple[float, float, float, float]
    score: float
    reference: bool = False

    def to_json(self) -> dict[str, Any]:
        return {"level": self.level, "box": [round(v, 1) for v in self.box],
                "score": round(self.score, 4), "reference": self.reference}


@dataclass
class FilmPrediction:
    """The vertebrae of one film, head to feet.

    ``instances`` (int16, film size) numbers them 1..n in that order; ``mask`` holds their
    canonical level ids (uint8, 0 for background and unlabelled vertebrae). ``region`` is the
    reference's region ('cervical' or 'lumbar') or None with a ``note`` saying why.
    """

    mode: str
    vertebrae: list[FilmVertebra]
    instances: npt.NDArray[np.int16]
    mask: npt.NDArray[np.uint8]
    region: str | None
    note: str = ""
    timings: dict[str, float] = field(default_factory=dict)


class XrayModel:
    """The U-Net and the detector with their config, on one device."""

    def __init__(self, unet: nn.Module, detector: nn.Module, config: XrayConfig,
                 info: dict[str, Any] | None = None, device: str | torch.device = "cpu") -> None:
        self.device = torch.device(device)
        self.unet = unet.to(self.device).eval()
        self.detector = detector.to(self.device).eval()
        self.config = config
        self.info = info or {}

    @classmethod
    def from_dir(cls, folder: str | Path | None = None, device: str | torch.device = "cpu") -> XrayModel:
        """Load both stages from a weights folder (default: the shipped demo weights).

        Raises:
            ModelLoadError: a stage is missing, corrupt or does not fit its config.
        """
        from spine_core.inference.loading import default_weights_dir

        root = Path(folder) if folder is not None else default_weights_dir()
        if not (root / UNET_FILE).is_file():
            raise ModelLoadError(f"no radiograph model in {root}: {UNET_FILE} and {DETECTOR_FILE} "
                                 "(with their weights) are missing; run `spine train --modality xray`")
        unet, unet_cfg = load_stage(root / UNET_FILE, "xray-unet")
        detector, _ = load_stage(root / DETECTOR_FILE, "xray-detector")
        info = {"name": unet_cfg.get("name", "xray"), "version": unet_cfg.get("version", "unknown")}
        return cls(unet, detector, XrayConfig.from_dict(unet_cfg), info, device)

    @torch.no_grad()
    def outputs(self, image: npt.NDArray[np.generic]) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]:
        """Sigmoid U-Net output (channels, g, g; with ``config.unet_flip`` the mean over the film and its
        left-right mirror) and detector output (5, g, g: heatmaps after sigmoid, then sizes; read
        on the detector's grid and resized to the U-Net's) of one film (bone bright)."""
        x = film_to_grid(image, self.config).to(self.device)
        p = torch.sigmoid(self.unet(x))
        if self.config.unet_flip:  # mirror's output mirrored back, averaged with the film's
            p = 0.5 * (p + torch.flip(torch.sigmoid(self.unet(torch.flip(x, dims=(-1,)))), dims=(-1,)))
        probs = p[0].float().cpu().numpy()
        det = self.detector(detector_input(x, self.config)).float()
        det = torch.cat([torch.sigmoid(det[:, :3]), det[:, 3:]], dim=1)
        if det.shape[-1] != self.config.grid:  # the detector's grid -> the U-Net's
            det = F.interpolate(det, size=(self.config.grid, self.config.grid), mode="bilinear",
                                align_corners=False)
        return probs, det[0].cpu().numpy()

    def predict(self, image: npt.NDArray[np.generic], mode: str = "ensemble") -> FilmPrediction:
        """The vertebrae of one film (rows head to feet, bone bright) by ``mode``."""
        return self.predict_modes(image, (mode,))[mode]

    def predict_modes(self, image: npt.NDArray[np.generic], modes: tuple[str, ...] = MODES
                      ) -> dict[str, FilmPrediction]:
        """Each mode's prediction from one pass of both networks."""
        unknown = [m for m in modes if m not in MODES]
        if unknown:
            raise InputError(f"radiograph model mode {unknown[0]!r}: choose one of {', '.join(MODES)}")
        t0 = time.perf_counter()
        probs, det = self.outputs(image)
        t1 = time.perf_counter()
        found = detections(det, self.config)
        out: dict[str, FilmPrediction] = {}
        for mode in modes:
            t2 = time.perf_counter()
            if mode == "unet":
                inst = unet_instances(probs, self.config)
            elif mode == "detector":
                inst = detector_instances(found, self.config.grid)
            else:
                inst = ensemble_instances(probs, det, found, self.config)
            pred = _to_film(inst, probs[0], image.shape, self.config, mode)
            pred.timings = {"networks": t1 - t0, "decode": time.perf_counter() - t2}
            out[mode] = pred
        return out


def _to_film(inst: Instances, foreground: npt.NDArray[np.float32], shape: tuple[int, ...],
             config: XrayConfig, mode: str) -> FilmPrediction:
    """Order, label and draw the grid's instances on the film."""
    rows, cols = int(shape[0]), int(shape[1])
    g = config.grid
    order = order_head_to_feet(inst.centres)
    ref_index, ref, score = pick_reference(inst, config)
    ordered_ref = order.index(ref_index) if ref_index is not None else None
    lumbar = [inst.lumbar[i] for i in order] if len(inst.lumbar) == len(inst) else None
    levels = count_labels(len(order), ordered_ref, ref or "C2", lumbar)
    note = "" if ref else (f"no reference vertebra (C2 or S1) found (best score {score:.2f}): "
                           "vertebrae are not labelled")
    remap = np.zeros(len(inst) + 1, np.int16)
    for new, old in enumerate(order, start=1):
        remap[old + 1] = new
    grid_inst = remap[inst.labels]
    if not inst.filled_boxes and config.film_expand_px:
        from skimage.segmentation import expand_labels

        grid_inst = expand_labels(grid_inst, config.film_expand_px)  # the film's threshold decides
    ri = np.minimum(((np.arange(rows) + 0.5) * g / rows).astype(np.intp), g - 1)
    ci = np.minimum(((np.arange(cols) + 0.5) * g / cols).astype(np.intp), g - 1)
    film_inst = grid_inst[ri][:, ci]
    if not inst.filled_boxes:
        up = F.interpolate(torch.from_numpy(np.ascontiguousarray(foreground))[None, None],
                           size=(rows, cols), mode="bilinear", align_corners=False)[0, 0].numpy()
        film_inst = np.where(up >= config.film_foreground, film_inst, 0).astype(np.int16)
    lut = np.zeros(len(order) + 1, np.uint8)
    for i, level in enumerate(levels, start=1):
        lut[i] = LEVEL_IDS[level] if level else 0
    mask = lut[film_inst]
    sy, sx = rows / g, cols / g
    objects = ndimage.find_objects(film_inst, max_label=len(order))
    vertebrae = []
    for i, old in enumerate(order):
        sl = objects[i]
        if sl is not None:
            box = (float(sl[1].start), float(sl[0].start), float(sl[1].stop - sl[1].start),
                   float(sl[0].stop - sl[0].start))
        else:
            x0, y0, x1, y1 = inst.boxes[old]
            box = (x0 * sx, y0 * sy, (x1 - x0) * sx, (y1 - y0) * sy)
        vertebrae.append(FilmVertebra(levels[i], box, inst.scores[old], i == ordered_ref))
    return FilmPrediction(mode, vertebrae, film_inst, mask, REFERENCES[ref] if ref else None, note)
