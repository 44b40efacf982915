"""The one key map of the reading workstation, for every screen that shows the viewer.

The browser binds its actions from this table (sent with every frame) and shows it on ``?``; pages
can print it with :func:`keymap_markdown`. Keys are ``KeyboardEvent.key`` values; ``Ctrl+``/
``Shift+`` prefixes are modifiers. Pointer gestures are listed for the help only.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Binding:
    action: str
    keys: tuple[str, ...]
    help: str


KEYMAP: tuple[Binding, ...] = (
    Binding("next", ("ArrowUp",), "next slice"),
    Binding("prev", ("ArrowDown",), "previous slice"),
    Binding("next10", ("PageUp",), "10 slices on"),
    Binding("prev10", ("PageDown",), "10 slices back"),
    Binding("first", ("Home",), "first slice"),
    Binding("last", ("End",), "last slice"),
    Binding("preset_bone", ("1",), "window: bone (1800/400)"),
    Binding("preset_soft", ("2",), "window: soft tissue (400/40)"),
    Binding("preset_brain", ("3",), "window: brain (80/40)"),
    Binding("reset", ("r", "R"), "reset window, zoom and pan"),
    Binding("zoom_in", ("+", "="), "zoom in"),
    Binding("zoom_out", ("-", "_"), "zoom out"),
    Binding("fullscreen", ("f", "F"), "full screen on/off"),
    Binding("measure", ("m", "M"), "measure a length (two clicks)"),
    Binding("box", ("b", "B"), "box tool on/off (drag to draw, handles to resize)"),
    Binding("delete", ("Delete", "Backspace"), "delete the selected box"),
    Binding("labels", ("l", "L"), "vertebra labels on/off"),
    Binding("layout", ("t", "T"), "one plane / three planes"),
    Binding("plane_axial", ("a", "A"), "axial plane"),
    Binding("plane_sagittal", ("s", "S"), "sagittal plane"),
    Binding("plane_coronal", ("c", "C"), "coronal plane"),
    Binding("escape", ("Escape",), "cancel the tool, close this help"),
    Binding("help", ("?",), "show / hide this key map"),
)

#: Pointer gestures (help text only).
GESTURES: tuple[tuple[str, str], ...] = (
    ("wheel", "one slice per notch"),
    ("Ctrl+wheel", "zoom at the pointer"),
    ("middle drag / Ctrl+drag", "scroll through slices"),
    ("right drag", "window (left-right: width, up-down: level)"),
    ("Shift+drag / Space+drag", "pan"),
    ("click", "move the crosshair (links the three planes)"),
)


def keymap_json() -> list[dict[str, object]]:
    """The bindings as the browser takes them."""
    return [{"action": b.action, "keys": list(b.keys), "help": b.help} for b in KEYMAP]


def gestures_json() -> list[list[str]]:
    return [list(g) for g in GESTURES]


def keymap_markdown() -> str:
    """The key map as a Markdown table (for a page's help)."""
    rows = ["| keys | action |", "|---|---|"]
    for b in KEYMAP:
        keys = dict.fromkeys(k.upper() if len(k) == 1 else k for k in b.keys)
        rows.append(f"| {' / '.join(f'`{k}`' for k in keys)} | {b.help} |")
    for gesture, what in GESTURES:
        rows.append(f"| {gesture} | {what} |")
    return "\n".join(rows)
