"""Synthetic radiographs for tests: a small lumbar film and its DX file, with header changes."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from spine_core.phantom.radiograph import Radiograph, project_lateral
from spine_core.phantom.spine_study import generate_spine_study
from spine_core.phantom.xray_layout import dx_dataset

MONO1_SEED, MONO2_SEED = 0, 1  # dx_dataset stores seed 0's film MONOCHROME1, seed 1's MONOCHROME2


def small_film() -> Radiograph:
    """A lateral lumbar film projected from a small phantom (a few seconds)."""
    study = generate_spine_study(5, (200, 96, 96), region="thoracolumbar")
    return project_lateral(study, "lumbar", np.random.default_rng(1))


def write_dx(film: Radiograph, folder: Path, seed: int, name: str = "1.dcm",
             **changes: object) -> Path:
    """``film`` as a DX file ``folder/name`` (UIDs from ``seed``), with ``changes`` to its header."""
    ds = dx_dataset(film, f"1.2.826.0.1.3680043.10.{seed}", f"P{seed}", seed)
    for key, value in changes.items():
        setattr(ds, key, value)
    folder.mkdir(parents=True, exist_ok=True)
    ds.save_as(folder / name, enforce_file_format=True)
    return folder / name
