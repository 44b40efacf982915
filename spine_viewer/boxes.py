"""The viewer's boxes and events (they live in :mod:`spine_core.viewer_boxes`, free of Streamlit,
so the box route of ``spine_web`` converts them too)."""

from spine_core.viewer_boxes import (
    KINDS,
    BoxEvent,
    BoxKind,
    EventType,
    ViewerBox,
    boxes_drawable,
    event_from_browser,
    focus_to_display,
    to_display,
)

__all__ = ["KINDS", "BoxEvent", "BoxKind", "EventType", "ViewerBox", "boxes_drawable",
           "event_from_browser", "focus_to_display", "to_display"]
