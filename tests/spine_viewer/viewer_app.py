"""A small Streamlit app around the client-side viewer, for the browser tests and the benchmark.

Run: ``streamlit run tests/spine_viewer/viewer_app.py``. The volume is synthetic unless
``SPINE_VIEWER_NPY`` names an int16 ``.npy`` (memory-mapped; ``SPINE_VIEWER_MASK_NPY`` an optional
uint8 label map, ``SPINE_VIEWER_SPACING`` "slice,row,col" mm). Synthetic voxels follow
:func:`synthetic_value`, so tests can check the HU read-out: ``SPINE_VIEWER_SHAPE`` (default
60x128x128), spacing 2.0 × 0.5 × 0.5 mm.

Query parameters: ``layout=three``, ``plane=sagittal``, ``editable=1``, ``fragment=1`` (mount inside
``st.fragment``), ``slice=N``, ``boxes=1`` (two sample boxes, one interpolated), ``limit=BYTES``,
``chunk_mb=16`` (raw MiB per streamed chunk), ``units=px`` (lengths in pixels, no value unit: a
radiograph whose spacing is unknown).
Each script run prints ``VIEWER_RUN n`` and the page shows ``runs n`` (``data-testid=runs``).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
import streamlit as st

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from spine_core.render.windowing import Window  # noqa: E402
from spine_core.volume import Volume  # noqa: E402
from spine_viewer import (  # noqa: E402
    BoxEvent,
    ViewerBox,
    ViewerSource,
    VolumeTooLargeError,
    workstation,
)

SPACING = (2.0, 0.5, 0.5)


def synthetic_value(k: np.ndarray | int, r: np.ndarray | int, c: np.ndarray | int) -> np.ndarray:
    """HU of voxel (k, r, c) of the synthetic volume (also used by the tests)."""
    return ((np.asarray(k) * 37 + np.asarray(r) * 3 + np.asarray(c)) % 2000 - 1000).astype(np.int16)


@st.cache_resource
def synthetic(shape: tuple[int, int, int]) -> ViewerSource:
    k, r, c = np.ogrid[: shape[0], : shape[1], : shape[2]]
    image = synthetic_value(k, r, c)
    mask = np.zeros(shape, dtype=np.uint8)
    band = max(1, shape[0] // 7)
    rr, cc = np.ogrid[: shape[1], : shape[2]]
    disc = (rr - shape[1] // 2) ** 2 + (cc - shape[2] // 2) ** 2 < (min(shape[1:]) // 5) ** 2
    for level in range(1, 8):  # C7 at the bottom ... C1 at the top
        lo = (7 - level) * band
        mask[lo:lo + band][:, disc] = level
    affine = np.array([[0, 0, SPACING[2], 0], [0, SPACING[1], 0, 0], [SPACING[0], 0, 0, 0], [0, 0, 0, 1]],
                      dtype=float)
    return ViewerSource(Volume(image, affine), mask)


@st.cache_resource
def from_files(npy: str, mask_npy: str, spacing: str) -> ViewerSource:
    image = np.load(npy, mmap_mode="r")
    sk, sr, sc = (float(v) for v in spacing.split(","))
    affine = np.array([[0, 0, sc, 0], [0, sr, 0, 0], [sk, 0, 0, 0], [0, 0, 0, 1]], dtype=float)
    mask = np.load(mask_npy, mmap_mode="r") if mask_npy else None
    return ViewerSource(Volume(image, affine), mask)


def source() -> tuple[str, ViewerSource]:
    npy = os.environ.get("SPINE_VIEWER_NPY", "")
    if npy:
        mask_npy = os.environ.get("SPINE_VIEWER_MASK_NPY", "")
        spacing = os.environ.get("SPINE_VIEWER_SPACING", "1,0.5,0.5")
        return f"npy:{npy}:{mask_npy}", from_files(npy, mask_npy, spacing)
    shape = tuple(int(v) for v in os.environ.get("SPINE_VIEWER_SHAPE", "60x128x128").split("x"))
    return f"synthetic:{'x'.join(map(str, shape))}", synthetic(shape)  # type: ignore[arg-type]


def presets(text: str) -> list[Window]:
    """``"2000:1000:full range;500:1500:bone detail"`` -> the windows keys 1, 2, 3 choose."""
    return [Window(float(w), float(c), name)
            for w, c, name in (item.split(":", 2) for item in text.split(";"))]


def sample_boxes(shape: tuple[int, ...]) -> list[ViewerBox]:
    k = shape[0] // 2
    return [
        ViewerBox("reader-1", 3, k, 20, 20, 50, 45, kind="other reader", level="C4", reader="reader1",
                  colour="#66ccff"),
        ViewerBox("interp-1", 1, k + 1, 22, 22, 52, 47, kind="interpolated", level="C4",
                  colour="#ffcc00"),
    ]


def main() -> None:
    st.set_page_config(page_title="viewer test", layout="wide")
    runs = st.session_state.get("runs", 0) + 1
    st.session_state.runs = runs
    print(f"VIEWER_RUN {runs}", flush=True)
    q = st.query_params
    volume_id, src = source()
    boxes: list[ViewerBox] = st.session_state.setdefault(
        "boxes", sample_boxes(src.image.shape) if q.get("boxes") == "1" else [])
    log: list[dict[str, object]] = st.session_state.setdefault("events", [])

    def handle(ev: BoxEvent) -> None:
        log.append({"type": ev.type, "id": ev.id, "base_version": ev.base_version,
                    "slice": ev.slice, "x0": ev.x0, "y0": ev.y0, "x1": ev.x1, "y1": ev.y1})
        apply_event(boxes, ev)

    def view() -> None:
        try:
            res = workstation(
                volume_id, src, key="viewer", layout=q.get("layout", "single"),  # type: ignore[arg-type]
                plane=q.get("plane", "axial"),  # type: ignore[arg-type]
                slice=int(q["slice"]) if "slice" in q else None,
                window=q.get("window", "bone"), boxes=lambda: boxes, on_event=handle, editable=q.get("editable") == "1",
                max_browser_bytes=int(q.get("limit", str(1 << 30))),
                chunk_bytes=int(float(q.get("chunk_mb", "16")) * 2**20),
                length_unit="px" if q.get("units") == "px" else "mm",
                value_unit="" if q.get("units") == "px" else "HU",
                **({"presets": presets(q["presets"])} if "presets" in q else {}),
                **({"film": q["film"].split(",")} if "film" in q else {}),
            )
        except VolumeTooLargeError as exc:
            st.warning(str(exc))
            return
        if res.slice is not None:
            st.session_state.committed = f"{res.slice.plane} {res.slice.index}"

    if q.get("fragment") == "1":
        st.fragment(view)()
    else:
        view()
    st.markdown(f"<span data-testid='runs'>runs {runs}</span> · "
                f"<span data-testid='committed'>{st.session_state.get('committed', '')}</span>",
                unsafe_allow_html=True)
    st.code("\n".join(json.dumps(e) for e in log) or "no events", language="json")


def apply_event(boxes: list[ViewerBox], ev: BoxEvent) -> None:
    """What a page does with a box event: check the version, store, bump the version."""
    if ev.type == "created":
        n = sum(1 for b in boxes if b.id.startswith("box-")) + 1
        boxes.append(ViewerBox(f"box-{n}", 1, ev.slice, ev.x0, ev.y0, ev.x1, ev.y1, level="C3",
                               reader="me"))
        return
    for i, b in enumerate(boxes):
        if b.id == ev.id and b.version == ev.base_version:
            if ev.type == "deleted":
                del boxes[i]
            else:
                boxes[i] = ViewerBox(b.id, b.version + 1, ev.slice, ev.x0, ev.y0, ev.x1, ev.y1,
                                     kind=b.kind, level=b.level, reader=b.reader, colour=b.colour)
            return


main()
