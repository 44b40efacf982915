"""Where in a vertebra the fracture classifier looked: Grad-CAM boxes on axial slices.

The classifier gives one logit per vertebra crop. Grad-CAM (Selvaraju et al., 2017) weights the
feature maps of one layer by the mean gradient of that logit and keeps the positive part: a coarse
map of the voxels that raised the score. Inside the vertebra's mask, voxels at or above
``threshold`` × the map's maximum are mapped from the crop grid back onto the input volume through
the two affines, and one box per axial (a0) slice encloses them.

These boxes are an explanation of the score, not a detector trained on boxes. On 40 held-out
phantoms (model card, ``box_*`` against ``extent_box_*``) they cover nearly every slice of the true
fracture and contain its centre on most of them, with about twice the IoU of the vertebra's extent;
they also light slices next to the fracture. Networks without the named
layer (TorchScript, foreign architectures) get no heat map; the caller then falls back to the
vertebra's extent.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
import torch
import torch.nn.functional as F
from torch import nn

from spine_core.inference.preprocess import Grid
from spine_core.inference.protocol import PredictedBox


def find_layer(net: nn.Module, name: str) -> nn.Module | None:
    """The sub-module called ``name`` (dotted, as in ``named_modules``), or None."""
    if not name or isinstance(net, torch.jit.ScriptModule):
        return None
    return dict(net.named_modules()).get(name)


def gradcam(net: nn.Module, crops: torch.Tensor, layer: nn.Module) -> npt.NDArray[np.float32]:
    """(N, C, D, H, W) crops -> (N, D, H, W) Grad-CAM maps of the net's logit, >= 0.

    The net is run in eval mode with gradients on for this call only; its weights are not changed.
    """
    if crops.shape[0] == 0:
        return np.zeros((0, *crops.shape[2:]), dtype=np.float32)
    captured: list[torch.Tensor] = []
    hook = layer.register_forward_hook(lambda _m, _i, out: captured.append(out))
    try:
        with torch.enable_grad():
            # Gradients flow from the input, so frozen weights (requires_grad False) work too.
            logits = net(crops.detach().requires_grad_(True))
            features = captured[-1]
            (grads,) = torch.autograd.grad(logits.float().sum(), features)
    finally:
        hook.remove()
    weights = grads.float().mean(dim=(2, 3, 4), keepdim=True)
    cam = F.relu((weights * features.float()).sum(dim=1, keepdim=True))
    cam = F.interpolate(cam, size=tuple(crops.shape[2:]), mode="trilinear", align_corners=False)
    return cam[:, 0].detach().cpu().numpy().astype(np.float32)


def heat_boxes(
    heat: npt.NDArray[np.floating],
    inside: npt.NDArray[np.bool_],
    crop: Grid,
    volume_affine: npt.ArrayLike,
    volume_shape: Sequence[int],
    *,
    threshold: float,
    score: float,
    level: str,
) -> list[PredictedBox]:
    """Boxes on the input volume's a0 slices around the crop voxels whose heat reaches
    ``threshold`` × the maximum inside ``inside`` (the vertebra's mask on the crop grid). All hot
    parts are kept: a fracture may have several cracks (e.g. both arches of C1).

    Each box encloses the pixels that the hot crop voxels (as cubes) cover on that slice; parts
    mapped outside the volume are dropped. No heat inside the mask: no boxes.
    """
    masked = np.where(inside, heat, 0.0)
    peak = float(masked.max()) if masked.size else 0.0
    if peak <= 0.0:
        return []
    hot = np.argwhere(masked >= threshold * peak).astype(np.float64)
    # Each hot crop voxel is a cube (its centre ± 0.5 along each crop axis); map its 8 corners into
    # input index space and keep their bounding range, so no slice between two voxels is skipped.
    corners = np.array([[i, j, k] for i in (-0.5, 0.5) for j in (-0.5, 0.5) for k in (-0.5, 0.5)])
    to_input = np.linalg.inv(np.asarray(volume_affine, dtype=np.float64)) @ crop.affine
    pts = (hot[:, None, :] + corners[None]) @ to_input[:3, :3].T + to_input[:3, 3]
    lo, hi = pts.min(axis=1), pts.max(axis=1)
    # Slice k covers a0 in [k - 0.5, k + 0.5); pixel edge coordinates are index + 0.5.
    first = np.floor(lo[:, 0] + 0.5).astype(int)
    last = np.ceil(hi[:, 0] + 0.5).astype(int) - 1
    n_slices, n_rows, n_cols = (int(v) for v in volume_shape)
    boxes: list[PredictedBox] = []
    for k in range(max(0, int(first.min())), min(n_slices - 1, int(last.max())) + 1):
        on = (first <= k) & (last >= k)
        if not on.any():
            continue
        y0 = max(0.0, float(np.floor(lo[on, 1].min() + 0.5)))
        y1 = min(float(n_rows), float(np.ceil(hi[on, 1].max() + 0.5)))
        x0 = max(0.0, float(np.floor(lo[on, 2].min() + 0.5)))
        x1 = min(float(n_cols), float(np.ceil(hi[on, 2].max() + 0.5)))
        if x1 <= x0 or y1 <= y0:
            continue
        boxes.append(PredictedBox(k, x0, y0, x1 - x0, y1 - y0, float(score), level))
    return boxes
