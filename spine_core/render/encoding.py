"""Image encoding: PNG (written directly with zlib, no row filter) and JPEG (Pillow) bytes."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import numpy.typing as npt

from spine_core.errors import InputError


def encode_png(image: npt.NDArray[np.uint8], compress_level: int = 1) -> bytes:
    """PNG bytes of an RGB (H, W, 3) or grey (H, W) uint8 image.

    Written directly with zlib and no per-row filter: Pillow's PNG encoder always runs adaptive
    row filtering, which doubles the time on a 512×512 CT slice for no gain in size on noisy
    images (see benchmarks/bench_render.py). The output is a plain, valid 8-bit PNG.
    """
    img = np.ascontiguousarray(image, dtype=np.uint8)
    if img.ndim == 2:
        colour_type, channels = 0, 1
    elif img.ndim == 3 and img.shape[2] == 3:
        colour_type, channels = 2, 3
    else:
        raise InputError(f"encode_png takes (H, W) grey or (H, W, 3) RGB uint8, got {img.shape}")
    h, w = img.shape[:2]
    raw = np.empty((h, w * channels + 1), dtype=np.uint8)
    raw[:, 0] = 0  # filter type None
    raw[:, 1:] = img.reshape(h, w * channels)
    header = struct.pack(">IIBBBBB", w, h, 8, colour_type, 0, 0, 0)
    return b"".join(
        (
            b"\x89PNG\r\n\x1a\n",
            _png_chunk(b"IHDR", header),
            _png_chunk(b"IDAT", zlib.compress(raw.data, compress_level)),
            _png_chunk(b"IEND", b""),
        )
    )


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def encode_jpeg(rgb: npt.NDArray[np.uint8], quality: int = 90) -> bytes:
    """JPEG bytes of an RGB or grey uint8 image (quality 90, no optimisation pass)."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(rgb)).save(buf, format="JPEG", quality=quality)
    return buf.getvalue()
