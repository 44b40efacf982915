"""Settings of the radiograph model and the specs of its two networks (stored in their configs)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

#: Sigmoid output channels of the U-Net (weights trained before 0.3.0 have the first four: no
#: *lumbar* channel, so their lumbar films are counted as a typical spine's).
UNET_CHANNELS: tuple[str, ...] = ("vertebra", "core", "C2", "S", "lumbar")
#: The *lumbar* channel: the lumbar vertebrae (L1–L6, no ribs), whatever their count.
LUMBAR_CHANNEL = 4
#: Output channels of the detector: three centre heatmaps (sigmoid), then box width and height
#: as fractions of the grid side.
DETECTOR_CHANNELS: tuple[str, ...] = ("centre", "C2", "S", "width", "height")
#: Reference vertebra -> the film region it names.
REFERENCES: dict[str, str] = {"C2": "cervical", "S": "lumbar"}
#: Mask channel and heatmap channel of each reference.
UNET_REFERENCE_CHANNEL: dict[str, int] = {"C2": 2, "S": 3}
DETECTOR_REFERENCE_CHANNEL: dict[str, int] = {"C2": 1, "S": 2}
#: Files of the two stages and the card in a weights folder.
UNET_FILE = "xray_unet.json"
DETECTOR_FILE = "xray_detector.json"
CARD_JSON = "xray_model_card.json"
CARD_MD = "XRAY_MODEL_CARD.md"


@dataclass(frozen=True)
class XrayConfig:
    """How a film becomes the model grid and how outputs become vertebrae."""

    grid: int = 256  # the film is resized (area) to grid x grid, whatever its aspect
    detector_grid: int = 0  # the detector reads the grid resized to this side (0: the grid)
    low_percentile: float = 1.0  # intensity normalisation on the grid
    high_percentile: float = 99.5
    foreground: float = 0.5  # U-Net vertebra probability threshold (instances on the grid)
    film_foreground: float = 0.3  # ... and for the instances' extent, on the grid and the film
    film_expand_px: int = 1  # grid instances grown by this many pixels before they are drawn
    #                          on the film, where ``film_foreground`` draws the edge
    core: float = 0.5  # U-Net core probability threshold (instance seeds of the U-Net alone)
    min_core_px: int = 6  # smallest core component kept as a seed (grid pixels)
    core_erosion_px: int = 2  # training target: a core pixel is at least this far inside
    core_fraction: float = 0.45  # ... and this share of the vertebra's largest inner distance
    peak: float = 0.3  # detector centre heatmap threshold
    box_margin: float = 0.15  # ensemble: a detection in a core's box grown by this share confirms it
    add_peak: float = 0.5  # ensemble: a detection off the cores at least this strong adds a vertebra
    drop_unconfirmed: bool = True  # ensemble: drop U-Net cores no detection confirms ...
    loose_core_fraction: float = 0.5  # ... unless at least this share of the confirmed cores'
    #                                   median area (above 1: drop them all) ...
    spine_distance: float = 0.6  # ... and this share of a box width from the spine's line
    edge_core_fraction: float = 0.25  # ... near the grid's edge, this share of that area floor
    min_instance_fraction: float = 0.25  # a smaller instance (share of the median) off the edge
    #                                      joins its neighbour
    seed_radius: float = 0.2  # ensemble: a detection off the U-Net's cores seeds a disk this
    #                           share of its box's smaller side
    reference: float = 0.25  # the least reference score that makes a reference vertebra
    reference_merge: float = 0.5  # core parts with a mean C2 (or S) probability this high are one
    #                               seed (above 1: never; a barely trained U-Net says 0.5 everywhere)
    min_truth_px: int = 12  # training: a vertebra smaller than this on the grid gets no centre
    keep_reference_cores: bool = False  # ensemble: a core the U-Net's C2 (or S) channel claims
    #                                     is a vertebra even when no detection confirms it
    unet_flip: bool = False  # inference: the U-Net's output is the mean of the film's and its
    #                          left-right mirror's (trained with flips; one more U-Net pass)

    @property
    def det_grid(self) -> int:
        """The side the detector reads."""
        return self.detector_grid or self.grid

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> XrayConfig:
        """The config's own keys out of a stage config (other keys are ignored)."""
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


def default_unet_spec(channels: tuple[int, ...] = (16, 32, 64, 128, 256), lumbar: bool = True
                      ) -> dict[str, Any]:
    """A 5-level 2-D MONAI UNet with residual units: one grey input, :data:`UNET_CHANNELS` out
    (without ``lumbar``, the first four)."""
    return {"arch": "monai.UNet", "params": {
        "spatial_dims": 2, "in_channels": 1,
        "out_channels": len(UNET_CHANNELS) if lumbar else LUMBAR_CHANNEL,
        "channels": list(channels), "strides": [2] * (len(channels) - 1),
        "num_res_units": 1, "norm": "BATCH"}}


def default_detector_spec(channels: tuple[int, ...] = (8, 16, 32, 64, 128)) -> dict[str, Any]:
    """The centre-heatmap detector: a narrower 2-D MONAI UNet, :data:`DETECTOR_CHANNELS` out."""
    return {"arch": "monai.UNet", "params": {
        "spatial_dims": 2, "in_channels": 1, "out_channels": len(DETECTOR_CHANNELS),
        "channels": list(channels), "strides": [2] * (len(channels) - 1),
        "num_res_units": 1, "norm": "BATCH"}}
