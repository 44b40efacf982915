"""Precise exceptions raised by the core; pages and the CLI turn them into clear messages.

Every exception carries a message that says what is wrong and, where possible, what to do.
"""

from __future__ import annotations


class SpineError(Exception):
    """Base class of every error the core raises on purpose (never a bug)."""


class InputError(SpineError):
    """Input given by a user (a path, a CSV row, an argument) is not usable."""


class OutOfFieldError(InputError):
    """A study lies outside the field the models were made for (not a spine CT, too few slices,
    slices too thick), so they cannot label it. The message is one line that starts with
    ``cannot label this study:`` and gives the reason (:mod:`spine_core.inference.field`)."""


class UnsafePathError(InputError):
    """A path escapes its root (e.g. contains `..`) or names something outside the dataset."""


class DicomError(SpineError):
    """A DICOM file or series cannot be read as an image series."""


class NotDicomError(DicomError):
    """A file is not DICOM (no preamble/meta, or unparsable)."""


class UnsupportedTransferSyntax(DicomError):
    """Pixel data is encoded in a transfer syntax no installed decoder handles."""


class SeriesGeometryError(DicomError):
    """Slices of a series do not form a valid volume (too few slices, duplicates, mixed grids...)."""


class NiftiError(InputError):
    """A file is not a readable 3-D NIfTI image (not NIfTI, corrupt, truncated, 4-D...)."""


class MaskError(SpineError):
    """A segmentation mask does not fit its image (shape, affine, labels, overlap)."""


class LabelVocabularyError(MaskError):
    """A label value lies outside the vocabulary of the dataset it claims to follow."""


class DatasetLayoutError(InputError):
    """A folder does not match any dataset layout we know."""


class CacheError(SpineError):
    """A cached volume is missing, corrupt or stale."""


class PermissionDenied(SpineError):
    """The signed-in user's role does not allow this action."""


class ConflictError(SpineError):
    """Someone else changed the same record meanwhile (optimistic concurrency check failed)."""


class NotFound(SpineError):
    """A study, series, user or record that was named does not exist."""


class BackendError(SpineError):
    """The inference backend is slow, failing or unreachable (the message says which and what to do)."""


class ModelLoadError(SpineError):
    """Model weights or their configuration cannot be loaded (missing file, wrong format, mismatch)."""


class VoteRejected(InputError):
    """An adjudication action breaks a rule: a vote without rationale, a reader voting on a study
    they read, a second vote in one round, a decision on a closed dispute, an override or a
    reopening without a reason. The message says which rule and what to do."""


class SourceChangedError(SpineError):
    """A study's files were deleted or changed since import (re-import it)."""


class BackendUnreachable(BackendError):
    """The inference backend cannot be reached (refused, DNS, TLS); retrying may help."""


class BackendBusy(BackendError):
    """The inference backend is at its job limit or still loading its models (HTTP 503); retry later."""

    #: Seconds the server asked us to wait (its ``Retry-After``), if it said.
    retry_after_s: float | None = None


class BackendTimeout(BackendError):
    """The inference backend did not answer in time (client read timeout or server job timeout)."""


class PredictionError(SpineError):
    """A model's answer cannot be stored: a mask off the study's grid or with values that are not
    level ids, probabilities outside [0, 1], unknown level names (nothing was stored)."""


class ClusterError(BackendError):
    """Ray is not installed, its cluster cannot be reached, or a Ray run or deployment failed."""
