"""Corrupt NIfTI files are refused with one line naming the file, never loaded as garbage: a
``.nii.gz`` whose gzip checksum fails (at the end or in the middle), and a header whose sform
holds NaN."""

from __future__ import annotations

import struct
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from spine_core.errors import NiftiError
from spine_core.io.nifti import load_nifti


def _image(path: Path) -> Path:
    arr = (np.arange(24 * 20 * 16) % 300).astype(np.int16).reshape(24, 20, 16)
    img = nib.Nifti1Image(arr, np.diag([0.8, 0.8, 2.0, 1.0]))
    nib.save(img, path)
    return path


@pytest.mark.parametrize("where", ["trailer", "middle"])
def test_a_gzip_checksum_failure_is_refused(tmp_path: Path, where: str) -> None:
    good = _image(tmp_path / "good.nii.gz")
    assert load_nifti(good).shape == (16, 20, 24)  # stored i, j, k -> array a0, a1, a2 (LPS rule)
    raw = bytearray(good.read_bytes())
    raw[-8 if where == "trailer" else len(raw) // 2] ^= 0xFF
    bad = tmp_path / "bad.nii.gz"
    bad.write_bytes(bytes(raw))
    with pytest.raises(NiftiError, match=r"bad\.nii\.gz: the compressed file is corrupt \(CRC check failed"):
        load_nifti(bad)


def test_a_nan_sform_is_refused(tmp_path: Path) -> None:
    path = _image(tmp_path / "a.nii")
    raw = bytearray(path.read_bytes())
    raw[280:284] = struct.pack("<f", float("nan"))  # srow_x[0]
    path.write_bytes(bytes(raw))
    with pytest.raises(NiftiError, match=r"a\.nii: the header's sform holds non-finite numbers"):
        load_nifti(path)
