"""The one key map of the reading workstation, for every screen that shows the viewer.

The browser binds its actions from this table (sent with every frame) and shows it on ``?``; pages
can print it with :func:`keymap_markdown`. Keys are ``KeyboardEvent.key`` values; ``Ctrl+``/
``Shift+`` prefixes are modifiers. Pointer gestures are listed for the help only.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from spine_core.render.windowing import BONE, BRAIN, SOFT_TISSUE, Window


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
    Binding("window1", ("1",), "window preset 1"),
    Binding("window2", ("2",), "window preset 2"),
    Binding("window3", ("3",), "window preset 3"),
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

#: The windows keys 1, 2 and 3 choose on CT (HU); a radiograph passes its own (see
#: :func:`spine_core.io.radiograph.window_presets`).
CT_PRESETS: tuple[Window, ...] = (BONE, SOFT_TISSUE, BRAIN)
#: The key actions that choose a preset, in the order of the presets.
PRESET_ACTIONS: tuple[str, ...] = ("window1", "window2", "window3")

#: Pointer gestures (help text only).
GESTURES: tuple[tuple[str, str], ...] = (
    ("wheel", "one slice per notch"),
    ("Ctrl+wheel", "zoom at the pointer"),
    ("middle drag / Ctrl+drag", "scroll through slices"),
    ("right drag", "window (left-right: width, up-down: level)"),
    ("Shift+drag / Space+drag", "pan"),
    ("click", "move the crosshair (links the three planes)"),
)


def preset_help(window: Window) -> str:
    """'window: bone (1800/400)': a preset key's line in the key map (width/level)."""
    return f"window: {window.name} ({window.width:g}/{window.level:g})"


def _help(b: Binding, presets: Sequence[Window]) -> str:
    if b.action in PRESET_ACTIONS:
        i = PRESET_ACTIONS.index(b.action)
        return preset_help(presets[i]) if i < len(presets) else "window preset (none here)"
    return b.help


def keymap_json(presets: Sequence[Window] = CT_PRESETS) -> list[dict[str, object]]:
    """The bindings as the browser takes them, the preset keys named after ``presets``."""
    return [{"action": b.action, "keys": list(b.keys), "help": _help(b, presets)} for b in KEYMAP]


def gestures_json() -> list[list[str]]:
    return [list(g) for g in GESTURES]


def keymap_markdown(presets: Sequence[Window] = CT_PRESETS) -> str:
    """The key map as a Markdown table (for a page's help), the preset keys named after
    ``presets``."""
    rows = ["| keys | action |", "|---|---|"]
    for b in KEYMAP:
        keys = dict.fromkeys(k.upper() if len(k) == 1 else k for k in b.keys)
        rows.append(f"| {' / '.join(f'`{k}`' for k in keys)} | {_help(b, presets)} |")
    for gesture, what in GESTURES:
        rows.append(f"| {gesture} | {what} |")
    return "\n".join(rows)
