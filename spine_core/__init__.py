"""SpineReview's domain core: imaging, labels, consensus, adjudication, models.

Pure: arrays, files, rules and models. It imports neither ``db`` nor Streamlit, so everything in it
is importable and testable without a database or a browser (``tests/test_layers.py`` checks).

Subpackages: :mod:`~spine_core.io` (reading and writing files), :mod:`~spine_core.inference`
(the models), :mod:`~spine_core.phantom` (synthetic studies), :mod:`~spine_core.render`
(server-side slice images).
"""

__version__ = "0.1.0"

__all__ = [
    "adjudication",  # disputes, votes, policies, final labels
    "annotation_geometry",  # box editor helpers: level of a box, canvas mapping, overlays
    "colours",  # the colours the app draws with
    "config",  # Settings from SPINE_* variables
    "consensus",  # boxes, the RSNA union rule, agreement
    "errors",  # the exceptions the core raises
    "inference",
    "io",
    "labels",  # vertebra vocabularies and names
    "mesh",  # 3-D vertebra surfaces
    "metrics",  # log loss, AUC, Dice, identification, kappa
    "phantom",
    "progress",  # the progress callback type
    "render",
    "roles",  # roles and the permission table
    "signin_sessions",  # sign-in tokens
    "signin_throttle",  # failed sign-in throttle
    "volume",  # Volume: voxels + affine
]
