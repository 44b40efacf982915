"""MONAI Label infer task running SpineReview's vertebra segmentation model.

A :class:`BasicInferTask` whose stages are MONAI Label's own: ``LoadImaged`` reads the uploaded
image (NIfTI, NRRD, a DICOM folder... with its RAS affine), :meth:`run_inferer` runs
:class:`spine_core.inference.segmentation.SegmentationModel` (the exact code the in-process
``LocalPredictor`` runs: model grid, sliding window, largest component per level, logits brought
back onto the input grid), the post transform maps our canonical level ids onto the values this
task declares, and MONAI Label's ``Writer`` writes the label image on the input's grid.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.data import MetaTensor
from monai.transforms import LoadImaged, MapLabelValued

from monailabel.interfaces.tasks.infer_v2 import InferType
from monailabel.tasks.infer.basic_infer import BasicInferTask
from spine_core.inference.loading import find_stage, load_network
from spine_core.inference.segmentation import SegmentationConfig, SegmentationModel
from spine_core.labels import TOTALSEG_NAMES, TOTALSEG_V2_INDEX, level_name
from spine_core.volume import from_nifti_arrays

#: How the label image numbers the levels, chosen with ``--conf labels``.
#: ``canonical``: our level names with our canonical ids, which are VerSe's ids (and RSNA's 1-19).
#: ``totalsegmentator``: TotalSegmentator v2 names (``vertebrae_C1``...) and class indices.
LABEL_STYLES = ("canonical", "totalsegmentator")


def declared_labels(level_ids: Sequence[int], style: str) -> dict[str, int]:
    """Label name -> value in the label image for the levels the model segments."""
    if style == "canonical":
        return {level_name(i): int(i) for i in level_ids}
    if style == "totalsegmentator":
        index_of = {name: index for index, name in TOTALSEG_V2_INDEX.items()}
        by_id = {lid: name for name, lid in TOTALSEG_NAMES.items() if name.startswith("vertebrae_")}
        return {by_id[i]: index_of[by_id[i]] for i in level_ids}
    raise ValueError(f"unknown label style '{style}'; use one of {', '.join(LABEL_STYLES)}")


class SpineVertebraSegmentation(BasicInferTask):
    """Vertebra segmentation and labelling with SpineReview's weights (state dict + JSON config).

    Args:
        weights_dir: folder holding ``segmentation.json`` + ``segmentation.pt`` (or a TorchScript
            file / MONAI bundle; see ``spine_core.inference.loading``).
        label_style: one of :data:`LABEL_STYLES`.
        amp: mixed precision on CUDA (CPU always runs in float32).
    """

    def __init__(self, weights_dir: Path, label_style: str = "canonical", amp: bool = True) -> None:
        loaded = load_network(find_stage(weights_dir, "segmentation"))
        self.seg_config = SegmentationConfig.from_dict(loaded.config)
        self.amp = amp
        self.canonical_ids = [int(v) for v in self.seg_config.labels if v != 0]
        labels = declared_labels(self.canonical_ids, label_style)
        super().__init__(
            path=None,
            network=loaded.net,
            type=InferType.SEGMENTATION,
            labels=labels,
            dimension=3,
            description=(
                f"SpineReview vertebra segmentation ({loaded.config.get('name', 'segmentation')} "
                f"{loaded.config.get('version', '')}), {label_style} label values"
            ),
            config={"label_style": label_style},
        )

    def pre_transforms(self, data: Mapping[str, Any] | None = None) -> Sequence[Callable[..., Any]]:
        return [LoadImaged(keys="image", image_only=True)]

    def run_inferer(
        self, data: dict[str, Any], convert_to_batch: bool = True, device: str = "cuda"
    ) -> dict[str, Any]:
        """Segment with :class:`SegmentationModel`; ``pred`` = canonical ids on the input grid."""
        net = self._get_network(device, data)
        model = SegmentationModel(net, self.seg_config, torch.device(device), amp=self.amp)
        image = data[self.input_key]
        if not isinstance(image, MetaTensor) or image.ndim != 3:
            raise ValueError(f"expected a 3-D image with an affine, got {type(image).__name__} {tuple(image.shape)}")
        ras = np.asarray(image.affine, dtype=np.float64)
        volume = from_nifti_arrays(np.asarray(image.array), ras)
        mask = model.segment(volume).mask
        label, _ = volume.with_array(mask).to_nifti_arrays()
        data[self.output_label_key] = MetaTensor(torch.from_numpy(np.ascontiguousarray(label)), affine=image.affine)
        return data

    def post_transforms(self, data: Mapping[str, Any] | None = None) -> Sequence[Callable[..., Any]]:
        values = [int(v) for v in self.labels.values()]
        if values == self.canonical_ids:
            return []
        return [MapLabelValued(keys="pred", orig_labels=self.canonical_ids, target_labels=values, dtype=np.uint8)]
