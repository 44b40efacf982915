"""Reading and writing the files of the field: DICOM series, NIfTI and masks, dataset layouts.

Every reader returns a :class:`~spine_core.volume.Volume` with its affine; masks are brought onto
their image's grid through the affines (:mod:`~spine_core.io.masks`).
"""

__all__ = [
    "cache",  # memory-mapped cache of decoded volumes
    "dicom",  # DICOM series: scan, plan, load
    "dicom_geometry",  # slice order and affine from the headers
    "dicom_pixels",  # pixel data in every transfer syntax we decode
    "dicom_scan",  # header-only scan of a folder tree
    "dicom_write",  # writing DICOM series
    "layouts",  # dataset layouts: RSNA, VerSe, CTSpine1K, TotalSegmentator, plain DICOM
    "masks",  # vertebra masks onto the image grid
    "nifti",  # NIfTI in and out, RAS <-> LPS at the edge
    "prepare",  # pass 1 of an import: read and check a case's files
    "prepare_radiograph",  # pass 1 for a radiograph: one image, checked
    "radiograph",  # one CR/DX/secondary-capture image: spacing, view, window, MONOCHROME1
    "radiograph_image",  # PNG/JPEG radiographs with a JSON sidecar
    "safe_paths",  # untrusted names never become paths unchecked
    "verse",  # VerSe centroid JSON
]
