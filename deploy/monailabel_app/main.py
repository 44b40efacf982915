"""MONAI Label app serving SpineReview's vertebra segmentation model.

    monailabel start_server --app deploy/monailabel_app --studies <folder> \
        [--conf labels canonical,totalsegmentator] [--conf weights <folder>] [--conf amp false]

``--conf labels``: comma-separated label styles, one model each (default ``canonical``):
``spinereview_vertebra`` (our level names, canonical = VerSe ids, RSNA's 1-19 for C1-T12) and
``spinereview_vertebra_totalseg`` (TotalSegmentator v2 names and class indices).
``--conf weights``: the weights folder (default: the demo weights shipped in spine_core).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from lib.infers import LABEL_STYLES, SpineVertebraSegmentation

import monailabel
from monailabel.interfaces.app import MONAILabelApp
from monailabel.interfaces.tasks.infer_v2 import InferTask
from monailabel.utils.others.generic import strtobool
from spine_core.inference.loading import default_weights_dir

logger = logging.getLogger(__name__)

#: Model name of each label style in /info/ and /infer/{model}.
MODEL_NAMES = {"canonical": "spinereview_vertebra", "totalsegmentator": "spinereview_vertebra_totalseg"}


def label_styles(conf: dict[str, Any]) -> list[str]:
    """The label styles asked for with ``--conf labels`` (checked)."""
    styles = [s.strip() for s in str(conf.get("labels", "canonical")).split(",") if s.strip()]
    unknown = [s for s in styles if s not in LABEL_STYLES]
    if unknown or not styles:
        raise ValueError(f"--conf labels {conf.get('labels')!r}: use one or more of {', '.join(LABEL_STYLES)}")
    return styles


class SpineReviewApp(MONAILabelApp):
    """SpineReview's segmentation stage as MONAI Label models (inference only, no training)."""

    def __init__(self, app_dir: str, studies: str, conf: dict[str, Any]) -> None:
        self.weights_dir = Path(conf.get("weights") or default_weights_dir())
        self.styles = label_styles(conf)
        self.amp = bool(strtobool(str(conf.get("amp", "true"))))
        super().__init__(
            app_dir=app_dir,
            studies=studies,
            conf=conf,
            name="SpineReview vertebrae",
            description="Vertebra segmentation and labelling (SpineReview demo weights unless --conf weights)",
            version=monailabel.__version__,
        )

    def init_infers(self) -> dict[str, InferTask]:
        infers: dict[str, InferTask] = {}
        for style in self.styles:
            infers[MODEL_NAMES[style]] = SpineVertebraSegmentation(self.weights_dir, style, amp=self.amp)
            logger.info(f"+++ Adding Inferer:: {MODEL_NAMES[style]} ({style} labels, weights {self.weights_dir})")
        return infers

    def init_trainers(self) -> dict[str, Any]:
        return {}
