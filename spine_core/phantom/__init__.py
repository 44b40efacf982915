"""Synthetic cervical-spine CT studies for demos and tests.

:func:`generate_study` draws one study (image, vertebra labels, fractures with per-slice boxes,
simulated readers, a report), deterministic per seed; :mod:`spine_core.phantom.rsna_layout` writes
many of them in the RSNA 2022 cervical-fracture layout (real DICOM, NIfTI segmentations, CSVs).
"""

from __future__ import annotations

from spine_core.phantom.study import Fracture, PhantomStudy, generate_study

__all__ = [
    "Fracture",
    "PhantomStudy",
    "generate_study",
]
