"""The networks of the two-stage model, built from a JSON-serialisable spec.

A spec is ``{"arch": NAME, "params": {...}}``. Only the architectures listed in
:data:`ARCHITECTURES` can be built from our own config files (a config never names arbitrary
Python code); MONAI bundles are the exception and are handled by :mod:`.loading`.

* Segmentation: MONAI ``UNet`` (default) or ``SegResNet``, 1 input channel (windowed CT),
  ``1 + n_levels`` output channels (background + one per canonical level).
* Fracture: :class:`FractureNet`, a compact 3-D CNN on a per-vertebra crop (channel 0: windowed
  CT, channel 1: the vertebra's predicted mask, channel 2: a black top-hat of the CT) that returns
  one logit.
* Fracture boxes: a MONAI ``UNet`` on the same crop, one output channel (inside-box logit).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import nn

from spine_core.errors import ModelLoadError


class FractureNet(nn.Module):
    """Small 3-D CNN: ``len(widths)`` stages of two 3×3×3 convs (the first one strided: the stem
    by ``stem_stride``, later stages by 2), batch norm and ReLU, then global average + max pooling
    and a linear head giving one logit.

    With widths (16, 32, 64, 96) it has ~0.5 M parameters (~2 MB of float32 weights).
    """

    def __init__(
        self,
        in_channels: int = 2,
        widths: Sequence[int] = (16, 32, 64, 96),
        dropout: float = 0.2,
        stem_stride: int = 2,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        prev = in_channels
        for stage, width in enumerate(widths):
            stride = stem_stride if stage == 0 else 2
            layers += [
                nn.Conv3d(prev, width, 3, stride=stride, padding=1, bias=False),
                nn.BatchNorm3d(width),
                nn.ReLU(inplace=True),
                nn.Conv3d(width, width, 3, padding=1, bias=False),
                nn.BatchNorm3d(width),
                nn.ReLU(inplace=True),
            ]
            prev = width
        self.features = nn.Sequential(*layers)
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(2 * prev, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, D, H, W) crops -> (B, 1) fracture logits."""
        f = self.features(x)
        pooled = torch.cat([f.mean(dim=(2, 3, 4)), f.amax(dim=(2, 3, 4))], dim=1)
        return self.head(self.dropout(pooled))


def _unet(**params: Any) -> nn.Module:
    from monai.networks.nets import UNet

    return UNet(**params)


def _segresnet(**params: Any) -> nn.Module:
    from monai.networks.nets import SegResNet

    return SegResNet(**params)


#: Architecture names usable in our configs -> constructor taking the spec's params.
ARCHITECTURES: dict[str, Callable[..., nn.Module]] = {
    "monai.UNet": _unet,
    "monai.SegResNet": _segresnet,
    "FractureNet": FractureNet,
}


def build_network(spec: Mapping[str, Any]) -> nn.Module:
    """Instantiate the network a spec describes.

    Raises:
        ModelLoadError: unknown architecture or parameters it does not accept.
    """
    arch = spec.get("arch")
    if arch not in ARCHITECTURES:
        raise ModelLoadError(
            f"unknown network architecture {arch!r}; expected one of {sorted(ARCHITECTURES)} "
            "(check the 'network.arch' field of the model config)"
        )
    params = dict(spec.get("params", {}))
    if "channels" in params:
        params["channels"] = tuple(params["channels"])
    if "strides" in params:
        params["strides"] = tuple(params["strides"])
    try:
        return ARCHITECTURES[arch](**params)
    except (TypeError, ValueError) as exc:
        raise ModelLoadError(
            f"network {arch} rejects the parameters {params}: {exc}; the config does not match "
            "this code version"
        ) from exc


def default_segmentation_spec(n_classes: int = 20) -> dict[str, Any]:
    """The demo segmentation network: a 5-level MONAI UNet (16-256 channels, plain conv blocks).

    The fourth downsampling widens the receptive field to ~150 mm at 2.5 mm voxels, enough to see
    C2 or the skull base while labelling C5; narrower or shallower UNets (8-64 channels, three
    downsamplings) mixed up the mid-cervical levels within a CPU training budget.
    """
    return {
        "arch": "monai.UNet",
        "params": {
            "spatial_dims": 3,
            "in_channels": 1,
            "out_channels": n_classes,
            "channels": [16, 32, 64, 128, 256],
            "strides": [2, 2, 2, 2],
            "num_res_units": 0,
            "norm": "INSTANCE",
        },
    }


def default_fracture_spec() -> dict[str, Any]:
    """The demo fracture classifier."""
    return {"arch": "FractureNet", "params": {"in_channels": 3, "widths": [16, 32, 64, 96], "dropout": 0.3}}


def default_detector_spec() -> dict[str, Any]:
    """The demo fracture box detector: a 4-level MONAI UNet (16-128 channels, residual units) on
    the classifier's 3-channel crop, one output (inside-box logit per voxel)."""
    return {
        "arch": "monai.UNet",
        "params": {
            "spatial_dims": 3,
            "in_channels": 3,
            "out_channels": 1,
            "channels": [16, 32, 64, 128],
            "strides": [2, 2, 2],
            "num_res_units": 1,
            "norm": "INSTANCE",
        },
    }


def count_parameters(net: nn.Module) -> int:
    return sum(int(p.numel()) for p in net.parameters())
