"""Read and write NIfTI-1/2 files as :class:`~spine_core.volume.Volume` (the NIfTI edge).

NIfTI's RAS index order is converted once, here, with :func:`spine_core.volume.from_nifti_arrays`.
Voxels keep their stored integer type (masks stay uint8/int16..., CT stays int16 when the stored
values and the scaling are integers); only a non-integer scaling gives float32. Nothing here makes a
float64 copy of a volume.
"""

from __future__ import annotations

import gzip
import os
import zlib
from pathlib import Path
from typing import Any, cast

import nibabel as nib
import numpy as np
import numpy.typing as npt
from nibabel.arrayproxy import ArrayProxy
from nibabel.filebasedimages import ImageFileError
from nibabel.spatialimages import HeaderDataError

from spine_core.errors import NiftiError
from spine_core.volume import Volume, from_nifti_arrays

#: Corner positions of the sform and qform may differ by this much (mm) before we warn; the qform
#: is stored as float32 quaternions, so tiny differences are rounding, not disagreement.
SFORM_QFORM_TOLERANCE_MM = 0.01

_READ_ERRORS = (ImageFileError, HeaderDataError, OSError, EOFError, ValueError, zlib.error)


def is_nifti_name(path: Path | str) -> bool:
    """True for ``*.nii`` and ``*.nii.gz`` names (case-insensitive)."""
    name = os.fspath(path).lower()
    return name.endswith(".nii") or name.endswith(".nii.gz")


def nifti_stem(path: Path | str) -> str:
    """File name without ``.nii``/``.nii.gz`` (``1.3.6.1.nii.gz`` -> ``1.3.6.1``)."""
    name = Path(path).name
    lower = name.lower()
    for suffix in (".nii.gz", ".nii"):
        if lower.endswith(suffix):
            return name[: -len(suffix)]
    return name


def load_nifti(path: Path | str, *, mmap: bool = True) -> Volume:
    """Load a 3-D NIfTI image as a Volume (array axes and LPS affine per :mod:`spine_core.volume`).

    Args:
        path: a ``.nii`` or ``.nii.gz`` file.
        mmap: memory-map uncompressed files read-only instead of reading them into memory.

    The affine is the sform when its code is > 0, else the qform when its code is > 0, else
    nibabel's fallback (voxel sizes only); ``meta["warnings"]`` says when the sform and qform
    disagree or when neither is set. A trailing singleton 4th dimension is dropped.

    Raises:
        NiftiError: the file is missing, not NIfTI, corrupt or truncated, not 3-D, or its affine
            is singular.
    """
    p = Path(path)
    if not p.is_file():
        raise NiftiError(f"{p}: no such file; check the path")
    if not is_nifti_name(p):
        raise NiftiError(f"{p}: not a NIfTI file name (expected .nii or .nii.gz)")
    if p.name.lower().endswith(".gz"):
        _verify_gzip(p)
    try:
        img = nib.load(str(p), mmap="r" if mmap else False)
    except _READ_ERRORS as exc:
        raise NiftiError(f"{p}: not a readable NIfTI file ({exc}); re-export or re-download it") from exc
    if not isinstance(img, (nib.Nifti1Image, nib.Nifti2Image)):
        raise NiftiError(f"{p}: is a {type(img).__name__}, not NIfTI; convert it to .nii.gz first")

    header = img.header
    shape = tuple(int(s) for s in img.shape)
    if len(shape) < 3:
        raise NiftiError(f"{p}: image is {len(shape)}-D with shape {shape}; a 3-D volume is needed")
    if len(shape) > 3 and any(s != 1 for s in shape[3:]):
        raise NiftiError(
            f"{p}: image is {len(shape)}-D with shape {shape} (a time series or a vector image); "
            "split it and give one 3-D volume"
        )

    try:
        ras_affine, affine_meta = choose_affine(header)
    except NiftiError as exc:
        raise NiftiError(f"{p}: {exc}") from None
    if not np.all(np.isfinite(ras_affine)) or abs(np.linalg.det(ras_affine[:3, :3])) < 1e-12:
        raise NiftiError(f"{p}: the header's affine (sform, qform and voxel sizes) is not finite or "
                         "is singular, so the image has no place in space; fix the header")
    try:
        data = _read_voxels(img)
    except _READ_ERRORS as exc:
        raise NiftiError(f"{p}: voxel data cannot be read ({exc}); the file is truncated or corrupt") from exc
    if data.ndim > 3:
        data = data.reshape(shape[:3])

    meta: dict[str, Any] = {
        "source_path": str(p),
        "stored_dtype": str(_proxy(img).dtype),
        "scl_slope": float(_proxy(img).slope),
        "scl_inter": float(_proxy(img).inter),
        **affine_meta,
    }
    try:
        return from_nifti_arrays(data, ras_affine, meta)
    except ValueError as exc:
        raise NiftiError(f"{p}: {exc}; the header's voxel sizes or orientation are broken") from exc


def _verify_gzip(path: Path, chunk: int = 1 << 22) -> None:
    """Read a ``.gz`` file to its end so its CRC-32 and length are checked (nibabel stops reading
    after the voxels and never looks at the trailer, so a corrupt file would load as garbage)."""
    try:
        with gzip.open(path, "rb") as fh:
            while fh.read(chunk):
                pass
    except (OSError, EOFError, zlib.error) as exc:
        raise NiftiError(f"{path}: the compressed file is corrupt ({exc}); re-export or "
                         "re-download it") from exc


def choose_affine(header: nib.Nifti1Header) -> tuple[npt.NDArray[np.float64], dict[str, Any]]:
    """(RAS affine, meta) from a NIfTI header: sform if coded, else qform if coded, else fallback.

    Raises NiftiError when a coded sform or qform holds NaN or infinity.

    ``meta`` holds ``affine_source`` ("sform" | "qform" | "fallback") and ``warnings``.
    """
    warnings: list[str] = []
    sform, scode = header.get_sform(coded=True)
    qform, qcode = header.get_qform(coded=True)
    for name, form, code in (("sform", sform, scode), ("qform", qform, qcode)):
        if form is not None and int(code) > 0 and not np.all(np.isfinite(form)):
            raise NiftiError(f"the header's {name} holds non-finite numbers (NaN or infinity), so "
                             "the image has no trustworthy place in space; fix the header")
    if sform is not None and int(scode) > 0:
        affine, source = np.asarray(sform, dtype=np.float64), "sform"
        if qform is not None and int(qcode) > 0:
            diff = _corner_distance(affine, np.asarray(qform, dtype=np.float64), header.get_data_shape())
            if diff > SFORM_QFORM_TOLERANCE_MM:
                warnings.append(
                    f"sform and qform disagree by up to {diff:.3g} mm at the volume corners; "
                    "the sform was used (NIfTI rule: sform_code > 0 wins)"
                )
    elif qform is not None and int(qcode) > 0:
        affine, source = np.asarray(qform, dtype=np.float64), "qform"
    else:
        affine, source = np.asarray(header.get_base_affine(), dtype=np.float64), "fallback"
        warnings.append(
            "neither sform nor qform is set (both codes 0): orientation is unknown and only voxel "
            "sizes were used; check left/right before trusting this image"
        )
    return affine, {
        "affine_source": source,
        "sform_code": int(scode),
        "qform_code": int(qcode),
        "warnings": warnings,
    }


def save_nifti(volume: Volume, path: Path | str, *, dtype: npt.DTypeLike | None = None) -> Path:
    """Write ``volume`` as NIfTI-1 (sform and qform both set, code 1 = scanner) and return the path."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    data, ras_affine = volume.to_nifti_arrays()
    if dtype is not None:
        data = data.astype(dtype, copy=False)
    img = nib.Nifti1Image(np.asarray(data), ras_affine)
    img.set_sform(ras_affine, code=1)
    img.set_qform(ras_affine, code=1)
    img.header.set_data_dtype(data.dtype)
    nib.save(img, str(p))
    return p


def _corner_distance(a: npt.NDArray[np.float64], b: npt.NDArray[np.float64], shape: tuple[int, ...]) -> float:
    """Largest distance (mm) between where two affines put the corners of a grid."""
    dims = [max(int(s) - 1, 0) for s in shape[:3]]
    corners = np.array(
        [[i, j, k, 1.0] for i in (0, dims[0]) for j in (0, dims[1]) for k in (0, dims[2])]
    )
    return float(np.max(np.linalg.norm((corners @ (a - b).T)[:, :3], axis=1)))


def _proxy(img: nib.Nifti1Image) -> ArrayProxy:
    """The voxel proxy of an image read by ``nib.load`` (always an ArrayProxy; nibabel's annotation
    of ``dataobj`` is the wider ``ArrayLike``, which has no ``slope``/``inter``/``get_unscaled``)."""
    return cast(ArrayProxy, img.dataobj)


def _read_voxels(img: nib.Nifti1Image) -> npt.NDArray[Any]:
    """The voxels with the least conversion that is exact (see module docstring)."""
    proxy = _proxy(img)
    raw = np.asanyarray(proxy.get_unscaled())
    if not raw.dtype.isnative:
        raw = raw.astype(raw.dtype.newbyteorder("="))
    slope, inter = float(proxy.slope), float(proxy.inter)
    if slope == 1.0 and inter == 0.0:
        return raw if raw.dtype != np.float64 else raw.astype(np.float32)
    if raw.dtype.kind in "iu" and slope.is_integer() and inter.is_integer():
        return _scale_integers(raw, int(slope), int(inter))
    out = raw.astype(np.float32)
    out *= np.float32(slope)
    out += np.float32(inter)
    return out


def _scale_integers(raw: npt.NDArray[np.integer], slope: int, inter: int) -> npt.NDArray[np.integer]:
    """raw * slope + inter in int16 when the result fits, else int32/int64, computed exactly.

    Integer arithmetic wraps modulo 2**bits, so computing in the (narrow) result type gives the
    exact result whenever the final values fit, even if a cast of ``raw`` wraps on the way.
    """
    if raw.size == 0:
        return raw.astype(np.int16)
    lo, hi = int(raw.min()), int(raw.max())
    ends = (lo * slope + inter, hi * slope + inter)
    lo_out, hi_out = min(ends), max(ends)
    targets: tuple[type[np.signedinteger[Any]], ...] = (np.int16, np.int32, np.int64)
    for target in targets:
        info = np.iinfo(target)
        if info.min <= lo_out and hi_out <= info.max:
            break
    bits = np.iinfo(target).bits
    out: npt.NDArray[np.signedinteger[Any]] = raw.astype(target, casting="unsafe")
    with np.errstate(over="ignore"):
        if slope != 1:
            out *= _wrap(slope, target, bits)
        if inter != 0:
            out += _wrap(inter, target, bits)
    return out


def _wrap(value: int, target: type[np.integer], bits: int) -> np.integer:
    """``value`` modulo 2**bits as a scalar of the signed ``target`` type."""
    modulus = 1 << bits
    wrapped = value % modulus
    if wrapped >= modulus // 2:
        wrapped -= modulus
    return target(wrapped)
