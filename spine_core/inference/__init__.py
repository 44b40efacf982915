"""The models: a vertebra labeller and a fracture scorer, run in-process or behind a backend.

:mod:`~spine_core.inference.protocol` states what every predictor does;
:mod:`~spine_core.inference.select` picks the in-process models or an HTTP backend from settings.
"""

__all__ = [
    "calibration",  # temperature scaling of the fracture probabilities, ECE, reliability bins
    "client",  # HttpPredictor: the `spine serve` backend over HTTP
    "field",  # which CT studies the models can label ("cannot label this study: ...")
    "fracture",  # stage 2: per-vertebra fracture scores and boxes
    "loading",  # weights from state dicts, TorchScript or MONAI bundles
    "local",  # the in-process two-stage predictor
    "localise",  # Grad-CAM boxes on axial slices
    "monailabel",  # a MONAI Label server as a predictor
    "networks",  # the network definitions
    "preprocess",  # resampling and intensity steps
    "protocol",  # Predictor, StudyPrediction, ModelInfo
    "ray_runtime",  # connecting to a Ray cluster
    "ray_serve",  # Ray Serve replicas of the backend
    "segmentation",  # stage 1: vertebra labelling
    "select",  # which predictor the settings ask for
    "server",  # the FastAPI backend (`spine serve`)
    "status",  # backend health for the pages
    "train",  # `spine train`
    "wire",  # the HTTP wire format of volumes and predictions
]
