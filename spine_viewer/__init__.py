"""The reading workstation's client-side slice viewer (a Streamlit Components v2 element).

:func:`workstation` mounts it; :mod:`spine_viewer.transport` streams the volume to it;
:mod:`spine_viewer.boxes` converts boxes and events; :mod:`spine_viewer.keymap` is the one key map.

A page wires it like this (inside ``st.fragment`` so the load-time chunk reruns stay cheap)::

    try:
        result = workstation(
            f"{series_uid}:{fingerprint}", lambda: ViewerSource(volume, mask), key="reader-view",
            layout="three", plane="axial", slice=slice_from_url, window="bone",
            boxes=lambda: load_boxes(), on_event=store_box_event, editable=can_annotate)
    except VolumeTooLargeError as exc:
        st.info(str(exc))  # ... and show the server-rendered slices instead
    else:
        if result.slice is not None:
            st.query_params["slice"] = str(result.slice.index)
"""

from __future__ import annotations

from spine_viewer.boxes import BoxEvent, ViewerBox
from spine_viewer.component import SliceCommit, ViewerSource, WorkstationResult, workstation
from spine_viewer.keymap import CT_PRESETS, KEYMAP, keymap_markdown
from spine_viewer.transport import DEFAULT_MAX_BROWSER_BYTES, VolumeTooLargeError, check_browser_memory

__all__ = [
    "CT_PRESETS",
    "DEFAULT_MAX_BROWSER_BYTES",
    "KEYMAP",
    "BoxEvent",
    "SliceCommit",
    "ViewerBox",
    "ViewerSource",
    "VolumeTooLargeError",
    "WorkstationResult",
    "check_browser_memory",
    "keymap_markdown",
    "workstation",
]
