"""Synthetic cervical-spine CT studies for demos and tests.

:func:`generate_study` draws one study (image, vertebra labels, fractures with per-slice boxes,
simulated readers, a report), deterministic per seed; :func:`write_rsna_dataset` writes many of
them in the RSNA 2022 cervical-fracture layout (real DICOM, NIfTI segmentations, CSVs).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from spine_core.phantom.readers import Box, ReaderBox
from spine_core.phantom.study import Fracture, PhantomStudy, generate_study

if TYPE_CHECKING:
    from spine_core.io.rsna_write import DemoManifest, write_rsna_dataset

__all__ = [
    "Box",
    "DemoManifest",
    "Fracture",
    "PhantomStudy",
    "ReaderBox",
    "generate_study",
    "write_rsna_dataset",
]


def __getattr__(name: str) -> Any:
    # The dataset writer lives with the other writers in spine_core.io; imported lazily because it
    # imports this package.
    if name in ("write_rsna_dataset", "DemoManifest"):
        from spine_core.io import rsna_write

        return getattr(rsna_write, name)
    raise AttributeError(f"module 'spine_core.phantom' has no attribute '{name}'")
