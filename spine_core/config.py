"""One settings object for the app, the CLI and the backend.

Values come from defaults, then environment variables ``SPINE_*``, then explicit overrides (CLI
flags). Nothing here names a path of one machine: everything lives under ``data_dir``, which
defaults to ``./var`` beside the current working directory.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

#: The values of ``Settings.worker`` (``SPINE_WORKER``).
WORKER_KINDS = ("thread", "external")


@dataclass(frozen=True)
class Settings:
    """Runtime configuration. Environment variable of each field: ``SPINE_<FIELD NAME UPPER>``."""

    data_dir: Path = Path("var")
    db_url: str = ""  # empty -> SQLite file under data_dir
    cache_dir: Path | None = None  # None -> data_dir / "cache"
    backend_url: str = ""  # empty -> models run in-process
    backend_token: str = ""
    backend_timeout_s: float = 120.0
    models_dir: Path | None = None  # None -> the demo weights shipped in the package
    device: str = "auto"  # auto | cpu | cuda
    workers: int = field(default_factory=lambda: max(1, min(4, os.cpu_count() or 1)))
    union_min_iou: float = 0.0  # 0 -> any overlap merges boxes
    adjudication_policy: str = "committee"  # committee | report
    quorum: int = 2
    model_dispute_threshold: float = 0.0  # >0: dispute |p - final label| >= this (e.g. 0.9)
    demo_studies: int = 6
    demo_shape: str = "200x256x256"  # SLICESxROWSxCOLS of generated demo studies
    demo_seed: int = 2022
    #: Demo studies without readers' work, assigned to the demo readers, so a newcomer signed in
    #: as a reader has something to read (the main demo set comes read and submitted).
    demo_unread: int = 2
    #: Largest study (int16 volume + labels, MiB) sent to the browser viewer; bigger ones are shown
    #: as server-rendered slices (0: always server-rendered).
    viewer_max_browser_mb: int = 1024
    #: PACS over DICOMweb (QIDO-RS, WADO-RS, STOW-RS), e.g. http://127.0.0.1:8042/dicom-web.
    #: Credentials come from here (environment), never from the command line: HTTP basic with user
    #: and password, or a bearer token.
    dicomweb_url: str = ""
    dicomweb_user: str = ""
    dicomweb_password: str = ""
    dicomweb_token: str = ""
    dicomweb_timeout_s: float = 60.0
    #: A study whose PACS listing has more series than this is refused, naming the study (a CT
    #: study has a handful; a thousand means a misconfigured or hostile PACS).
    dicomweb_max_series: int = 200
    #: Organisational root of the UIDs of the DICOM objects we create (SEG, SR). The default is
    #: pydicom's test root; a site sets its own (at most 40 characters, digits and dots, ending '.').
    dicom_uid_root: str = "1.2.826.0.1.3680043.8.498."
    #: Size limits of untrusted images, checked at import before any pixel is decoded: the largest
    #: image side (DICOM Rows, Columns), the most frames in one file (NumberOfFrames), and the
    #: largest series once decoded (slices × rows × columns × 2 bytes, MiB). Headers are also
    #: checked against the pixel bytes actually present, whatever these limits.
    max_image_side: int = 16384
    max_frames: int = 10000
    max_series_mb: int = 8192
    #: Seconds the trial decode of one compressed file may take (in its child process, at
    #: import and before the cache is filled) before the file counts as hung and is refused; a
    #: multi-frame file gets it once per 100 frames.
    decode_timeout_s: float = 10.0
    #: Most voxels of the models' working grid (the volume resampled to the segmentation model's
    #: voxel size) the inference server accepts, checked before any resampling allocates.
    max_model_voxels: int = 64_000_000
    #: Where long jobs ("predict all") run: ``thread`` (default: a thread of the app process that
    #: starts them) or ``external`` (queued in the database for a ``spine worker`` process).
    worker: str = "thread"

    def __post_init__(self) -> None:
        if self.worker not in WORKER_KINDS:
            raise ValueError(f"SPINE_WORKER must be {' or '.join(WORKER_KINDS)}, not "
                             f"'{self.worker}'")

    @property
    def external_worker(self) -> bool:
        """Whether long jobs are queued for a ``spine worker`` process (``SPINE_WORKER=external``)."""
        return self.worker == "external"

    @property
    def demo_shape_tuple(self) -> tuple[int, int, int]:
        parts = tuple(int(v) for v in self.demo_shape.lower().split("x"))
        if len(parts) != 3 or min(parts) < 16:
            raise ValueError(f"SPINE_DEMO_SHAPE must look like 200x256x256, got '{self.demo_shape}'")
        return parts

    @property
    def database_url(self) -> str:
        if self.db_url:
            return self.db_url
        return f"sqlite:///{(self.data_dir / 'spine.db').resolve()}"

    @property
    def volume_cache_dir(self) -> Path:
        return self.cache_dir if self.cache_dir is not None else self.data_dir / "cache"

    def with_overrides(self, **overrides: Any) -> Settings:
        """A copy with the given non-None values replaced (CLI flags)."""
        clean = {k: v for k, v in overrides.items() if v is not None}
        return replace(self, **_coerce(clean))


def _coerce(values: dict[str, Any]) -> dict[str, Any]:
    types = {f.name: f.type for f in fields(Settings)}
    out: dict[str, Any] = {}
    for key, value in values.items():
        if key not in types:
            raise KeyError(f"unknown setting '{key}'")
        kind = str(types[key])
        if isinstance(value, str):
            if "Path" in kind:
                value = Path(value)
            elif kind == "int":
                value = int(value)
            elif kind == "float":
                value = float(value)
        out[key] = value
    return out


def load_settings(environ: dict[str, str] | None = None, **overrides: Any) -> Settings:
    """Settings from ``SPINE_*`` environment variables, then ``overrides``.

    Raises:
        ValueError: when a variable cannot be parsed, naming the variable.
    """
    env = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    for f in fields(Settings):
        var = f"SPINE_{f.name.upper()}"
        if var in env and env[var] != "":
            values[f.name] = env[var]
    try:
        settings = replace(Settings(), **_coerce(values))
    except ValueError as exc:
        raise ValueError(f"bad SPINE_* environment variable: {exc}") from None
    return settings.with_overrides(**overrides)
