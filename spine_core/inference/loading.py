"""Load (and save) the networks of one stage in three formats, never downloading anything.

1. **State dict + JSON config** (what we ship): ``<stage>.json`` holds the network spec
   (:func:`~.networks.build_network`), the stage settings and the SHA-256 of ``<stage>.pt``, a
   plain ``state_dict`` read with ``torch.load(weights_only=True)``.
2. **TorchScript**: ``<stage>.ts`` (or any file ``torch.jit.load`` reads) with the stage settings
   embedded as the extra file ``spinereview.json`` (or a sidecar ``<stem>.json``).
3. **MONAI bundle folder**: ``configs/inference.json`` with ``network_def`` (instantiated by
   ``monai.bundle.ConfigParser``) and a ``spine_review`` section with the stage settings,
   ``configs/metadata.json``, and ``models/model.pt`` (state dict) or ``models/model.ts``.
   A bundle's config can name any Python class: only load bundles you trust.

Every failure raises :class:`~spine_core.errors.ModelLoadError` naming the file and what to do.
"""

from __future__ import annotations

import hashlib
import io
import json
import warnings
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from spine_core.errors import ModelLoadError
from spine_core.inference.networks import build_network

#: Value of the ``format`` field of our configs.
FORMAT = "spinereview-model"
FORMAT_VERSION = 1
#: Name of the settings embedded in TorchScript files.
TORCHSCRIPT_EXTRA = "spinereview.json"
#: Section of a MONAI bundle's inference.json that holds our stage settings.
BUNDLE_SECTION = "spine_review"

_BUNDLE_TARGETS = {
    "monai.UNet": "monai.networks.nets.UNet",
    "monai.SegResNet": "monai.networks.nets.SegResNet",
    "FractureNet": "spine_core.inference.networks.FractureNet",
}


@dataclass
class LoadedNetwork:
    """A network ready for inference with the settings it was trained with."""

    net: nn.Module
    config: dict[str, Any]
    source: str  # "state_dict" | "torchscript" | "monai_bundle"
    path: Path


def default_weights_dir() -> Path:
    """The demo weights shipped inside the package."""
    return Path(__file__).resolve().parent / "weights"


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ModelLoadError(f"model config {path} does not exist") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelLoadError(f"model config {path} is not readable JSON ({exc}); restore the file") from exc
    if not isinstance(data, dict):
        raise ModelLoadError(f"model config {path} must hold a JSON object, not {type(data).__name__}")
    return data


def _load_state_dict(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise ModelLoadError(f"weights file {path} is missing; restore it or point to another weights folder")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch raises many types for a bad file
        raise ModelLoadError(
            f"weights file {path} cannot be read as a PyTorch state dict ({type(exc).__name__}: "
            f"{str(exc)[:200]}); the file is corrupt or in another format"
        ) from exc
    if isinstance(state, Mapping) and "state_dict" in state and isinstance(state["state_dict"], Mapping):
        state = state["state_dict"]
    if not isinstance(state, Mapping):
        raise ModelLoadError(f"weights file {path} holds a {type(state).__name__}, not a state dict")
    return dict(state)


def _apply_state(net: nn.Module, state: Mapping[str, torch.Tensor], path: Path) -> nn.Module:
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise ModelLoadError(
            f"weights {path} do not fit the network described by its config: {str(exc)[:300]}"
        ) from exc
    return net.eval()


def verified_weights(config_path: Path, config: dict[str, Any]) -> Path:
    """The weights file a state-dict config names, once the config can rebuild its network and
    the file is there with the SHA-256 the config records. Raises ModelLoadError otherwise."""
    if "network" not in config:
        raise ModelLoadError(f"{config_path} has no 'network' section; it cannot rebuild the network")
    weights = config_path.parent / str(config.get("weights", config_path.with_suffix(".pt").name))
    if not weights.is_file():
        raise ModelLoadError(f"weights file {weights} named by {config_path} is missing")
    expected = config.get("sha256")
    if expected and sha256_of(weights) != expected:
        raise ModelLoadError(
            f"weights file {weights} is corrupt: its SHA-256 differs from the one in {config_path}; "
            "restore both files from the same release"
        )
    return weights


def load_state_dict_model(config_path: Path) -> LoadedNetwork:
    """Format 1: ``<stage>.json`` + the weights file it names (checked against its SHA-256)."""
    config = _read_json(config_path)
    if config.get("format") != FORMAT:
        raise ModelLoadError(
            f"{config_path} is not a {FORMAT} config (format={config.get('format')!r})"
        )
    weights = verified_weights(config_path, config)
    net = _apply_state(build_network(config["network"]), _load_state_dict(weights), weights)
    return LoadedNetwork(net, config, "state_dict", config_path)


def load_torchscript_model(path: Path) -> LoadedNetwork:
    """Format 2: a TorchScript file with embedded (or sidecar ``.json``) settings."""
    extra = {TORCHSCRIPT_EXTRA: ""}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            net = torch.jit.load(str(path), map_location="cpu", _extra_files=extra)
    except Exception as exc:  # noqa: BLE001
        raise ModelLoadError(
            f"{path} is not a readable TorchScript file ({type(exc).__name__}: {str(exc)[:200]})"
        ) from exc
    raw = extra[TORCHSCRIPT_EXTRA]
    if raw:
        try:
            config = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise ModelLoadError(f"settings embedded in {path} are not valid JSON ({exc})") from exc
    elif path.with_suffix(".json").is_file():
        config = _read_json(path.with_suffix(".json"))
    else:
        raise ModelLoadError(
            f"TorchScript file {path} carries no settings: embed '{TORCHSCRIPT_EXTRA}' "
            f"(save_torchscript does) or put {path.with_suffix('.json').name} beside it"
        )
    return LoadedNetwork(net.eval(), config, "torchscript", path)


def load_bundle_model(folder: Path) -> LoadedNetwork:
    """Format 3: a MONAI bundle folder (configs/inference.json + models/model.pt or model.ts)."""
    from monai.bundle import ConfigParser

    cfg_file = folder / "configs" / "inference.json"
    if not cfg_file.is_file():
        raise ModelLoadError(f"{folder} is not a MONAI bundle: configs/inference.json is missing")
    parser = ConfigParser()
    try:
        parser.read_config(str(cfg_file))
        meta_file = folder / "configs" / "metadata.json"
        if meta_file.is_file():
            parser.read_meta(str(meta_file))
    except Exception as exc:  # noqa: BLE001
        raise ModelLoadError(f"MONAI bundle config {cfg_file} cannot be read ({exc})") from exc
    section = parser.get(BUNDLE_SECTION)
    if not isinstance(section, dict):
        raise ModelLoadError(
            f"MONAI bundle {folder} has no '{BUNDLE_SECTION}' section in configs/inference.json; "
            "add one with the stage settings (task, labels/levels, preprocess...) so its outputs "
            "can be mapped to vertebra levels"
        )
    config = dict(section)
    meta = parser.get("_meta_") or {}
    config.setdefault("name", meta.get("name", folder.name))
    config.setdefault("version", meta.get("version", "unknown"))
    ts_file = folder / "models" / "model.ts"
    pt_file = folder / "models" / "model.pt"
    if pt_file.is_file() and parser.get("network_def") is not None:
        try:
            net = parser.get_parsed_content("network_def", instantiate=True)
        except Exception as exc:  # noqa: BLE001
            raise ModelLoadError(
                f"MONAI bundle {folder}: 'network_def' cannot be instantiated ({exc})"
            ) from exc
        if not isinstance(net, nn.Module):
            raise ModelLoadError(f"MONAI bundle {folder}: 'network_def' is not a torch module")
        net = _apply_state(net, _load_state_dict(pt_file), pt_file)
    elif ts_file.is_file():
        net = _load_torchscript_plain(ts_file)
    else:
        raise ModelLoadError(
            f"MONAI bundle {folder} has neither models/model.pt with a 'network_def' nor models/model.ts"
        )
    return LoadedNetwork(net, config, "monai_bundle", folder)


def _load_torchscript_plain(path: Path) -> nn.Module:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            return torch.jit.load(str(path), map_location="cpu").eval()
    except Exception as exc:  # noqa: BLE001
        raise ModelLoadError(f"{path} is not a readable TorchScript file ({exc})") from exc


def _is_torchscript(path: Path) -> bool:
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as zf:
        return any("/code/__torch__" in name or name.endswith("constants.pkl") for name in zf.namelist())


def load_network(path: str | Path) -> LoadedNetwork:
    """Load one stage from a config JSON, a TorchScript file or a MONAI bundle folder (on CPU).

    Raises:
        ModelLoadError: missing, corrupt or mismatching files (the message names which).
    """
    p = Path(path)
    if p.is_dir():
        return load_bundle_model(p)
    if not p.exists():
        raise ModelLoadError(f"model file {p} does not exist")
    if p.suffix == ".json":
        return load_state_dict_model(p)
    if _is_torchscript(p):
        return load_torchscript_model(p)
    if p.with_suffix(".json").is_file():
        return load_state_dict_model(p.with_suffix(".json"))
    raise ModelLoadError(
        f"{p} is neither TorchScript nor a state dict with a {p.with_suffix('.json').name} config "
        "beside it"
    )


def find_stage(weights_dir: Path, stage: str) -> Path:
    """Locate a stage (``segmentation`` or ``fracture``) in a weights folder, in any format.

    Looked for in order: ``<stage>.json``, ``<stage>.ts``, a bundle folder ``<stage>/``.
    """
    for candidate in (weights_dir / f"{stage}.json", weights_dir / f"{stage}.ts", weights_dir / stage):
        if candidate.exists():
            return candidate
    raise ModelLoadError(
        f"no {stage} model in {weights_dir}: expected {stage}.json (+ weights), {stage}.ts or a "
        f"MONAI bundle folder {stage}/; check the models folder setting (SPINE_MODELS_DIR)"
    )


# ----------------------------------------------------------------------------------------- saving


def _config_without(config: Mapping[str, Any], *keys: str) -> dict[str, Any]:
    return {k: v for k, v in config.items() if k not in keys}


def save_state_dict(
    net: nn.Module, config: Mapping[str, Any], config_path: Path, half: bool = False
) -> Path:
    """Write ``config_path`` (JSON) and its weights ``<stem>.pt``; returns the config path.

    ``config`` must contain ``network`` (the spec the net was built from). ``half`` stores
    floating-point tensors as float16 (half the size; loading casts them back to the network's
    float32).
    """
    config_path.parent.mkdir(parents=True, exist_ok=True)
    weights = config_path.with_suffix(".pt")
    state = {k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}
    if half:
        state = {k: v.half() if v.is_floating_point() else v for k, v in state.items()}
    torch.save(state, weights)
    full = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        **_config_without(config, "format", "format_version", "weights", "sha256"),
        "weights": weights.name,
        "sha256": sha256_of(weights),
    }
    config_path.write_text(json.dumps(full, indent=2) + "\n", encoding="utf-8")
    return config_path


def save_torchscript(net: nn.Module, config: Mapping[str, Any], path: Path) -> Path:
    """Script ``net`` (``torch.jit.script``) and save it with ``config`` embedded."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        scripted = torch.jit.script(net.cpu().eval())
        buffer = io.BytesIO()
        torch.jit.save(scripted, buffer, _extra_files={TORCHSCRIPT_EXTRA: json.dumps(dict(config))})
    path.write_bytes(buffer.getvalue())
    return path


def save_bundle(net: nn.Module, config: Mapping[str, Any], folder: Path) -> Path:
    """Write a MONAI bundle folder (configs/inference.json, configs/metadata.json, models/model.pt)."""
    import monai
    import numpy

    spec = config.get("network")
    if not isinstance(spec, Mapping) or spec.get("arch") not in _BUNDLE_TARGETS:
        raise ModelLoadError("save_bundle needs config['network'] with a known 'arch'")
    (folder / "configs").mkdir(parents=True, exist_ok=True)
    (folder / "models").mkdir(parents=True, exist_ok=True)
    network_def = {"_target_": _BUNDLE_TARGETS[str(spec["arch"])], **dict(spec.get("params", {}))}
    inference = {
        "device": "$torch.device('cuda' if torch.cuda.is_available() else 'cpu')",
        "network_def": network_def,
        "network": "$@network_def.to(@device)",
        BUNDLE_SECTION: _config_without(config, "network", "weights", "sha256", "format", "format_version"),
    }
    metadata = {
        "schema": "https://github.com/Project-MONAI/MONAI-extra-test-data/releases/download/"
        "0.8.1/meta_schema_20220324.json",
        "name": str(config.get("name", folder.name)),
        "version": str(config.get("version", "0.0.0")),
        "changelog": {str(config.get("version", "0.0.0")): "exported by SpineReview"},
        "monai_version": monai.__version__,
        "pytorch_version": torch.__version__.split("+")[0],
        "numpy_version": numpy.__version__,
        "task": str(config.get("task", "")),
        "description": str(config.get("description", "SpineReview model stage")),
        "authors": "SpineReview",
        "copyright": "see the model card",
    }
    (folder / "configs" / "inference.json").write_text(json.dumps(inference, indent=2) + "\n")
    (folder / "configs" / "metadata.json").write_text(json.dumps(metadata, indent=2) + "\n")
    torch.save({k: v.detach().cpu() for k, v in net.state_dict().items()}, folder / "models" / "model.pt")
    return folder
