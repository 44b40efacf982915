"""Loading and saving the two stages of the radiograph model (format 1 configs, as for CT).

A weights file that does not fit the network its config describes is refused with one line
naming the first parameter that differs and both shapes.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from spine_core.errors import ModelLoadError
from spine_core.inference.loading import FORMAT, _load_state_dict, _read_json, verified_weights
from spine_core.inference.networks import build_network


def _shape(t: Any) -> str:
    return "x".join(str(int(v)) for v in t.shape) or "scalar"


def check_fit(net: nn.Module, state: Mapping[str, torch.Tensor], weights: Path) -> None:
    """Raise one line if ``state`` lacks, adds or reshapes a parameter of ``net``."""
    own = net.state_dict()
    missing = [k for k in own if k not in state]
    extra = [k for k in state if k not in own]
    if missing or extra:
        what = f"lacks {missing[0]}" if missing else f"has an unknown parameter {extra[0]}"
        raise ModelLoadError(f"weights {weights.name} do not fit the network of its config: the file "
                             f"{what} ({len(missing)} missing, {len(extra)} unknown); retrain or "
                             "restore the config and weights of one release")
    for key, value in own.items():
        if tuple(value.shape) != tuple(state[key].shape):
            raise ModelLoadError(
                f"weights {weights.name} do not fit the network of its config: {key} is "
                f"{_shape(state[key])} in the file but {_shape(value)} in the network; retrain or "
                "restore the config and weights of one release")


def load_stage(config_path: Path, task: str) -> tuple[nn.Module, dict[str, Any]]:
    """The network (eval mode, float32) and config of one stage (``task`` 'xray-unet' or
    'xray-detector').

    Raises:
        ModelLoadError: a missing, corrupt, mismatched or wrong-task config or weights file.
    """
    config = _read_json(config_path)
    if config.get("format") != FORMAT or config.get("task") != task:
        raise ModelLoadError(f"{config_path} is not a {FORMAT} '{task}' config "
                             f"(format={config.get('format')!r}, task={config.get('task')!r})")
    weights = verified_weights(config_path, config)
    net = build_network(config["network"])
    state = _load_state_dict(weights)
    check_fit(net, state, weights)
    net.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in state.items()})
    return net.eval(), config
