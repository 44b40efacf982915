"""Synthetic spine CT studies for demos and tests, written in the published dataset layouts.

* :func:`generate_study` draws one cervical study (image, vertebra labels, trauma fractures with
  per-slice boxes, simulated readers, a report), deterministic per seed;
  :mod:`spine_core.phantom.rsna_layout` writes many in the RSNA 2022 layout (DICOM, NIfTI, CSVs).
* :func:`~spine_core.phantom.spine_study.generate_spine_study` draws a thoracolumbar or whole
  spine (ribs, sacrum, pelvis, transitional anatomy, Genant-graded osteoporotic compression
  fractures); :mod:`spine_core.phantom.nifti_layouts` writes any region in the VerSe 2020 or
  CTSpine1K layout.
* :func:`~spine_core.phantom.demo.write_demo_dataset` is the one entry point (``spine demo``):
  a region in a layout.
"""

from __future__ import annotations

from spine_core.phantom.study import Fracture, PhantomStudy, generate_study

__all__ = [
    "Fracture",
    "PhantomStudy",
    "generate_study",
]
