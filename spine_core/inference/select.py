"""Which predictor the settings ask for: a remote backend, a MONAI Label server, or local models.

``SPINE_BACKEND_URL``:

* empty — the models run in this process (:class:`LazyLocalPredictor`, loaded on first use so
  pages that never predict do not pay for loading them);
* ``http://…`` / ``https://…`` — a ``spine serve`` backend (:class:`HttpPredictor`);
* ``monailabel+http://…`` / ``monailabel+https://…`` — a MONAI Label server
  (:class:`MonaiLabelPredictor`); add ``?model=NAME`` to choose its model.
"""

from __future__ import annotations

import threading

from spine_core.config import Settings
from spine_core.errors import InputError, ModelLoadError
from spine_core.inference.protocol import ModelInfo, Predictor, StudyPrediction
from spine_core.progress import Progress
from spine_core.volume import Volume

MONAILABEL_SCHEMES = ("monailabel+http://", "monailabel+https://")


def predictor_from_settings(settings: Settings) -> Predictor:
    """The predictor ``settings.backend_url`` names (see the module docstring).

    Raises:
        InputError: the URL has a scheme we do not speak.
    """
    url = settings.backend_url.strip()
    if not url:
        return LazyLocalPredictor(settings)
    if url.lower().startswith(MONAILABEL_SCHEMES):
        from spine_core.inference.monailabel import MonaiLabelPredictor

        return MonaiLabelPredictor.from_settings(settings)
    if url.lower().startswith(("http://", "https://")):
        from spine_core.inference.client import HttpPredictor

        return HttpPredictor.from_settings(settings)
    raise InputError(
        f"SPINE_BACKEND_URL '{url}' is not usable: give http(s)://HOST:PORT for a spine backend, "
        "monailabel+http(s)://HOST:PORT for a MONAI Label server, or leave it empty to run here"
    )


def load_local_predictor(settings: Settings) -> Predictor:
    """Load the in-process models now (the shipped demo weights or ``settings.models_dir``).

    Raises:
        ModelLoadError: the local model code or its weights cannot be loaded.
    """
    try:
        from spine_core.inference import local
    except ModuleNotFoundError as exc:
        raise ModelLoadError(
            f"the local models cannot be imported ({exc}); install SpineReview with its model "
            "dependencies or set SPINE_BACKEND_URL to use a backend"
        ) from exc
    cls = getattr(local, "LocalPredictor", None)
    if cls is None:
        raise ModelLoadError(
            "spine_core.inference.local has no LocalPredictor; the installation is incomplete"
        )
    from_settings = getattr(cls, "from_settings", None)
    predictor = from_settings(settings) if callable(from_settings) else cls(settings)
    if not isinstance(predictor, Predictor):
        raise ModelLoadError(f"{type(predictor).__name__} does not implement the Predictor protocol")
    return predictor


class LazyLocalPredictor:
    """The local predictor, loaded once on the first :meth:`info` or :meth:`predict` (thread-safe)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._predictor: Predictor | None = None
        self._lock = threading.Lock()

    @property
    def loaded(self) -> bool:
        return self._predictor is not None

    def get(self) -> Predictor:
        """The loaded predictor (loads it on first call)."""
        if self._predictor is None:
            with self._lock:
                if self._predictor is None:
                    self._predictor = load_local_predictor(self.settings)
        return self._predictor

    def info(self) -> ModelInfo:
        return self.get().info()

    def predict(self, volume: Volume, progress: Progress | None = None) -> StudyPrediction:
        return self.get().predict(volume, progress)
