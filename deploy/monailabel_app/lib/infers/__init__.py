from .vertebra import LABEL_STYLES, SpineVertebraSegmentation, declared_labels

__all__ = ["LABEL_STYLES", "SpineVertebraSegmentation", "declared_labels"]
