"""The volume on its way to the browser: display geometry, chunk plan, compressed chunks, frames.

Pure functions over NumPy arrays (a memory-mapped int16 volume is never copied whole, never turned
into floats): the browser viewer receives the volume slice range by slice range, each range in one
*frame* of the component's ``data`` (bytes over the session's websocket, never a public URL).

Display order
-------------
The browser holds the volume in the display order of :class:`spine_core.render.display.DisplayGeometry` (axis 0
towards Superior, 1 towards Posterior, 2 towards the patient's Left; one display pixel per voxel).
A chunk is a range ``[a, b)`` of display axial slices; for a standard axial series it is a plain
slab of the memory map, for other orientations a strided view (still one chunk at a time).

Frame layout (all integers little-endian)::

    b"SPV1"  uint32 header_length  header (UTF-8 JSON)  payload

The header holds ``volume`` (shape, dtype, display spacing, the 4×4 affine from display index
(slice, row, col) to LPS mm, the chunk plan...), ``view`` and ``chunk``: the slice range carried and
its ``parts``, each ``{kind, offset, length, raw, codec}`` with ``offset``/``length`` in the payload.

Codecs (both zlib streams, RFC 1950, which the browser's ``DecompressionStream('deflate')`` reads):

* ``deflate-shuffle16`` (image): the int16 voxels as two byte planes, all low bytes then all high
  bytes, then deflated. CT's high bytes are nearly constant, so this is ~2.5× smaller and, with
  zlib's run-length strategy, ~2× faster to compress than deflating the plain int16 bytes.
* ``deflate`` (label mask): the uint8 labels deflated as they are.
"""

from __future__ import annotations

import json
import math
import struct
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from spine_core.errors import InputError
from spine_core.render.display import DisplayGeometry
from spine_core.viewer_boxes import viewer_geometry
from spine_core.volume import Volume

MAGIC = b"SPV1"
FORMAT_VERSION = 1
#: Default cap on what the browser must hold (int16 volume + uint8 mask): 1 GiB.
DEFAULT_MAX_BROWSER_BYTES = 1 << 30
#: Default raw size of one streamed chunk (16 MiB: 32 slices of 512×512 int16).
DEFAULT_CHUNK_BYTES = 16 << 20
#: zlib level of the chunks (1: fastest; the run-length strategy does most of the work).
DEFAULT_LEVEL = 1
IMAGE_CODEC = "deflate-shuffle16"
MASK_CODEC = "deflate"

SliceRange = tuple[int, int]


class VolumeTooLargeError(InputError):
    """The volume would not fit the browser's memory budget; show server-rendered slices."""

    def __init__(self, needed: int, limit: int, shape: Sequence[int]) -> None:
        self.needed = int(needed)
        self.limit = int(limit)
        self.shape = tuple(int(s) for s in shape)
        super().__init__(
            f"this volume {'×'.join(map(str, self.shape))} needs {needed / 2**20:.0f} MiB in the "
            f"browser, above the viewer's limit of {limit / 2**20:.0f} MiB; showing "
            "server-rendered slices instead"
        )


@dataclass(frozen=True)
class EncodedPart:
    """One compressed array of a chunk."""

    kind: str  # "image" | "mask"
    codec: str
    raw_bytes: int
    data: bytes


@dataclass(frozen=True)
class EncodedChunk:
    """The compressed image (and mask) slices of one display slice range ``[a, b)``."""

    range: SliceRange
    parts: tuple[EncodedPart, ...]

    @property
    def nbytes(self) -> int:
        return sum(len(p.data) for p in self.parts)


# ---- geometry and budget ---------------------------------------------------------------------


def display_geometry(volume: Volume) -> DisplayGeometry:
    """How ``volume`` is shown: one display pixel per voxel (no resampling)."""
    return viewer_geometry(volume)


def browser_bytes(shape: Sequence[int], has_mask: bool) -> int:
    """Bytes the browser holds for a volume: int16 voxels plus one uint8 per voxel for a mask."""
    n = int(np.prod([int(s) for s in shape], dtype=np.int64))
    return n * (2 + (1 if has_mask else 0))


def check_browser_memory(shape: Sequence[int], has_mask: bool,
                         limit: int = DEFAULT_MAX_BROWSER_BYTES) -> int:
    """The bytes needed, or :class:`VolumeTooLargeError` when they exceed ``limit``."""
    needed = browser_bytes(shape, has_mask)
    if needed > limit:
        raise VolumeTooLargeError(needed, limit, shape)
    return needed


def slices_per_chunk(shape: Sequence[int], chunk_bytes: int = DEFAULT_CHUNK_BYTES) -> int:
    """How many display axial slices make a chunk of about ``chunk_bytes`` raw int16 bytes."""
    slice_bytes = 2 * int(shape[1]) * int(shape[2])
    return max(1, int(chunk_bytes) // max(1, slice_bytes))


def chunk_plan(n_slices: int, current: int, per_chunk: int) -> list[SliceRange]:
    """The order the slices travel in: the slice on screen alone, then blocks outward from it.

    Blocks of ``per_chunk`` slices tile the volume around ``current`` (one block starts right
    after it, one ends right before it), nearest first, alternating up and down.
    """
    if n_slices < 1:
        raise InputError("a volume needs at least one slice")
    if per_chunk < 1:
        raise InputError(f"per_chunk must be >= 1, got {per_chunk}")
    cur = min(max(int(current), 0), n_slices - 1)
    up = [(a, min(a + per_chunk, n_slices)) for a in range(cur + 1, n_slices, per_chunk)]
    down = [(max(b - per_chunk, 0), b) for b in range(cur, 0, -per_chunk)]
    plan: list[SliceRange] = [(cur, cur + 1)]
    for i in range(max(len(up), len(down))):
        if i < len(up):
            plan.append(up[i])
        if i < len(down):
            plan.append(down[i])
    return plan


def check_range(rng: Sequence[int], n_slices: int, max_slices: int) -> SliceRange:
    """Validate a slice range asked for by the browser (never trusted)."""
    try:
        a, b = int(rng[0]), int(rng[1])
    except (TypeError, ValueError, IndexError) as exc:
        raise InputError(f"slice range {rng!r} is not two integers") from exc
    if not (0 <= a < b <= n_slices) or b - a > max_slices:
        raise InputError(f"slice range [{a}, {b}) is outside 0..{n_slices} or longer than "
                         f"{max_slices} slices")
    return a, b


# ---- encoding --------------------------------------------------------------------------------


def _deflate(raw: bytes | memoryview, level: int) -> bytes:
    comp = zlib.compressobj(level, zlib.DEFLATED, 15, 9, zlib.Z_RLE)
    return comp.compress(raw) + comp.flush()


def as_int16_slab(view: npt.NDArray[Any]) -> npt.NDArray[np.int16]:
    """A contiguous int16 copy of a slab (the slab only); other dtypes are rounded and clipped."""
    if view.dtype == np.int16:
        return np.ascontiguousarray(view)
    if np.issubdtype(view.dtype, np.integer) or view.dtype == np.bool_:
        return np.clip(view, -32768, 32767).astype(np.int16)
    if np.issubdtype(view.dtype, np.floating):
        out = np.empty(view.shape, dtype=np.int16)
        for i in range(view.shape[0]):  # one float slice at a time
            out[i] = np.clip(np.rint(view[i]), -32768, 32767)
        return out
    raise InputError(f"cannot show voxels of dtype {view.dtype} (expected integer HU)")


def as_uint8_slab(view: npt.NDArray[Any]) -> npt.NDArray[np.uint8]:
    """A contiguous uint8 copy of a label slab; labels above 255 are an error."""
    if view.dtype == np.uint8:
        return np.ascontiguousarray(view)
    if not (np.issubdtype(view.dtype, np.integer) or view.dtype == np.bool_):
        raise InputError(f"a label mask must hold integers, got {view.dtype}")
    if view.size and (int(view.max()) > 255 or int(view.min()) < 0):
        raise InputError("label values must lie in 0..255 to be shown")
    return view.astype(np.uint8)


def shuffle16(slab: npt.NDArray[np.int16]) -> bytes:
    """All low bytes, then all high bytes, of little-endian int16 values."""
    le = slab.astype("<i2", copy=False)
    return np.ascontiguousarray(le.reshape(-1).view(np.uint8).reshape(-1, 2).T).tobytes()


def unshuffle16(raw: bytes) -> npt.NDArray[np.int16]:
    """Inverse of :func:`shuffle16` (what the browser does)."""
    planes = np.frombuffer(raw, dtype=np.uint8).reshape(2, -1)
    return np.ascontiguousarray(planes.T).reshape(-1).view("<i2").astype(np.int16)


def encode_chunk(image_view: npt.NDArray[Any], mask_view: npt.NDArray[Any] | None,
                 rng: SliceRange, level: int = DEFAULT_LEVEL) -> EncodedChunk:
    """Compress display slices ``rng`` of the (display-ordered) image and mask views."""
    a, b = rng
    slab = as_int16_slab(image_view[a:b])
    parts = [EncodedPart("image", IMAGE_CODEC, slab.nbytes, _deflate(shuffle16(slab), level))]
    del slab
    if mask_view is not None:
        labels = as_uint8_slab(mask_view[a:b])
        parts.append(EncodedPart("mask", MASK_CODEC, labels.nbytes, _deflate(labels.data, level)))
    return EncodedChunk((a, b), tuple(parts))


def decode_part(part_bytes: bytes, codec: str) -> npt.NDArray[Any]:
    """Decompress one part as the browser does (tests and tools)."""
    raw = zlib.decompress(part_bytes)
    if codec == IMAGE_CODEC:
        return unshuffle16(raw)
    if codec == MASK_CODEC:
        return np.frombuffer(raw, dtype=np.uint8)
    raise InputError(f"unknown codec {codec!r}")


# ---- header and frames -----------------------------------------------------------------------


def volume_header(volume_id: str, geometry: DisplayGeometry, has_mask: bool,
                  plan: Sequence[SliceRange], source_dtype: str = "int16") -> dict[str, Any]:
    """What the browser needs to allocate and place the volume (JSON-ready)."""
    shape = [int(s) for s in geometry.display_shape]
    spacing = [float(s) for s in geometry.display_spacing]
    if not all(math.isfinite(s) and s > 0 for s in spacing):
        raise InputError(f"voxel spacing {spacing} is not usable")
    return {
        "format": FORMAT_VERSION,
        "id": str(volume_id),
        "shape": shape,
        "dtype": "int16",
        "source_dtype": str(source_dtype),
        "spacing": spacing,
        "affine": [[float(v) for v in row] for row in geometry.display_affine],
        "mask": bool(has_mask),
        "bytes": browser_bytes(shape, has_mask),
        "plan": [[int(a), int(b)] for a, b in plan],
    }


def chunk_header(chunk: EncodedChunk) -> tuple[dict[str, Any], list[bytes]]:
    """(the chunk's header entry, the payload pieces in order)."""
    parts, pieces, offset = [], [], 0
    for p in chunk.parts:
        parts.append({"kind": p.kind, "codec": p.codec, "offset": offset,
                      "length": len(p.data), "raw": p.raw_bytes})
        pieces.append(p.data)
        offset += len(p.data)
    return {"range": list(chunk.range), "parts": parts}, pieces


def pack_frame(header: dict[str, Any], pieces: Sequence[bytes] = ()) -> bytes:
    """``MAGIC | uint32 length | JSON header | payload`` as one bytes object."""
    text = json.dumps(header, separators=(",", ":"), allow_nan=False).encode("utf-8")
    return b"".join([MAGIC, struct.pack("<I", len(text)), text, *pieces])


def unpack_frame(frame: bytes) -> tuple[dict[str, Any], memoryview]:
    """(header, payload) of a frame made by :func:`pack_frame`."""
    if frame[:4] != MAGIC:
        raise InputError("not a viewer frame (bad magic)")
    (n,) = struct.unpack_from("<I", frame, 4)
    header = json.loads(bytes(frame[8:8 + n]).decode("utf-8"))
    return header, memoryview(frame)[8 + n:]
