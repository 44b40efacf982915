"""Short free-text radiology reports naming the reported fracture levels."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from spine_core.labels import CERVICAL

_PHRASES: dict[str, str] = {
    "jefferson": "burst fracture of the atlas ({level}) through the anterior and posterior arches",
    "posterior_arch": "bilateral fractures of the posterior arch of {level}",
    "dens": "type II odontoid fracture at the base of the dens ({level})",
    "hangman": "bilateral pars interarticularis fractures of {level} (hangman type)",
    "body": "fracture through the vertebral body of {level}",
    "compression": "compression fracture of {level} with anterior wedging and height loss",
    "teardrop": "teardrop fracture of the anteroinferior corner of {level}",
    "lamina": "fracture of the lamina of {level}",
    "pillar": "fracture of the articular pillar of {level}",
    "spinous": "fracture of the spinous process of {level}",
}

_NEGATIVE = (
    "No acute fracture or traumatic malalignment of the cervical spine.",
    "No cervical spine fracture identified. Vertebral body heights are maintained.",
    "Negative for acute osseous injury of the cervical spine.",
)


def report_text(rng: np.random.Generator, reported: Mapping[str, str], slice_mm: float) -> str:
    """Report of a study whose reported fractures are ``reported`` (level -> kind)."""
    technique = (f"CT cervical spine without contrast, axial {slice_mm:.2g} mm images with "
                 "sagittal and coronal reformats.")
    levels = [lv for lv in CERVICAL if lv in reported]
    if not levels:
        return f"{technique} FINDINGS: {_NEGATIVE[int(rng.integers(len(_NEGATIVE)))]} " \
               "IMPRESSION: No acute cervical spine fracture."
    findings = "; ".join(_PHRASES[reported[lv]].format(level=lv) for lv in levels)
    alignment = ("Alignment is otherwise maintained." if rng.random() < 0.6
                 else "No prevertebral soft tissue swelling beyond the fracture site.")
    impression = ", ".join(levels)
    noun = "fracture" if len(levels) == 1 else "fractures"
    return (f"{technique} FINDINGS: {findings[0].upper()}{findings[1:]}. {alignment} "
            f"IMPRESSION: Acute {noun} at {impression}.")
