"""The model card of a radiograph training run: a JSON-serialisable dict and its Markdown."""

from __future__ import annotations

import platform
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from spine_core.inference.networks import count_parameters
from spine_core.inference.xray.config import DETECTOR_CHANNELS, UNET_CHANNELS
from spine_core.inference.xray.decode import __doc__ as DECODE_DOC
from spine_core.inference.xray.evaluate import __doc__ as EVALUATE_DOC
from spine_core.inference.xray.evaluate import table
from spine_core.inference.xray.loop import PhaseLog

DISCLAIMER = (
    "Trained on SYNTHETIC radiographs (projections of a phantom CT, no patient data). For "
    "demonstrations and software tests only: not validated on real films, not a medical device, "
    "never use it for diagnosis."
)

DETECTOR_NOTE = (
    "Detector: a centre-heatmap (CenterNet-style) head on a 2-D MONAI UNet, not Mask R-CNN or MONAI's "
    "RetinaNet. PyPI's torchvision (Mask R-CNN) fails to import beside this project's torch 2.13.0, "
    "and monai.apps.detection's ResNet-FPN builder for RetinaNet (resnet_fpn_feature_extractor) "
    "imports torchvision too; an anchor-based RetinaNet with its own backbone would also not train "
    "within 20 minutes on 2 CPU threads. One heatmap peak per vertebra with its regressed box is "
    "the light instance detector used instead."
)

TARGETS = {"dice_mean": 0.90, "labelling_accuracy": 0.95}


def _prose(doc: str | None) -> str:
    """A module docstring as Markdown: paragraphs and '* ' bullets each on one line."""
    items: list[str] = []
    fresh = True
    for line in (doc or "").strip().splitlines():
        text = line.strip()
        if not text:
            fresh = True
            continue
        if fresh or text.startswith("* "):
            items.append("- " + text[2:] if text.startswith("* ") else text)
        else:
            items[-1] += " " + text
        fresh = False
    return "\n".join(items)


def ensemble_rule() -> str:
    """The decoding's rule, as the card states it (:mod:`.decode`'s docstring)."""
    return _prose(DECODE_DOC)


def label_counting(outputs: Sequence[str]) -> str:
    """How the card's model counts labels (with a *lumbar* output: six lumbar vertebrae)."""
    text = ("C2 upward and downward on cervical films, S1 upward on lumbar films, along the "
            "typical spine (7 cervical, 12 thoracic, 5 lumbar)")
    if "lumbar" in outputs:
        text += ("; on a lumbar film, six vertebrae right above the sacrum whose mean *lumbar* "
                 "probability reaches 0.5 (no ribs) are L6 to L1 instead. A T13 or an eleventh-rib "
                 "spine is not identifiable on a lumbar film (its ribs are counted from T1, off the "
                 "film): it gets the typical spine's labels")
    return text


def build_card(settings: Mapping[str, Any], unet: nn.Module, detector: nn.Module, unet_log: PhaseLog,
               det_log: PhaseLog, metrics: Mapping[str, Any], data_seconds: float,
               total_seconds: float) -> dict[str, Any]:
    """The card as a dict (settings as :func:`dataclasses.asdict` gives them)."""
    s = dict(settings)
    ens = metrics.get("ensemble", {})
    outputs = list(UNET_CHANNELS[:int(s["unet_spec"]["params"]["out_channels"])])
    return {
        "name": s["name"], "version": s["version"], "modality": "DX (lateral radiograph)",
        "disclaimer": DISCLAIMER,
        "data": {
            "generator": "spine_core.phantom.radiograph.project_lateral",
            "regions": list(s["regions"]), "train_films": s["n_train"], "held_out_films": s["n_val"],
            "train_phantom_scale": s["train_phantom_scale"], "seed": s["seed"],
            "transitional_share": s.get("transitional_share", 0.0),
        },
        "networks": {
            "unet": {"spec": s["unet_spec"], "parameters": count_parameters(unet),
                     "outputs": outputs, "training": unet_log.to_dict()},
            "detector": {"spec": s["detector_spec"], "parameters": count_parameters(detector),
                         "outputs": list(DETECTOR_CHANNELS), "training": det_log.to_dict(),
                         "note": DETECTOR_NOTE},
        },
        "config": s["config"],
        "ensemble_rule": ensemble_rule(),
        "label_counting": label_counting(outputs),
        "scoring": _prose(EVALUATE_DOC),
        "metrics": dict(metrics),
        "targets": TARGETS,
        "targets_met": {k: bool(ens.get(k, 0.0) >= v) for k, v in TARGETS.items()},
        "training": {"threads": s["threads"], "budget_minutes": s["budget_minutes"],
                     "stage": s.get("stage", "both"), "soft_foreground": s.get("soft_foreground", False),
                     "precision": s.get("precision", "fp32"),
                     "data_seconds": round(data_seconds, 1), "total_seconds": round(total_seconds, 1),
                     "torch": torch.__version__, "python": platform.python_version(),
                     "machine": platform.machine()},
    }


def card_markdown(card: Mapping[str, Any]) -> str:
    """MODEL_CARD-style Markdown of :func:`build_card`'s dict."""
    m = card["metrics"]
    net = card["networks"]
    tr = card["training"]
    lines = [
        f"# Model card: {card['name']} {card['version']} (lateral spine radiographs)", "",
        f"**{card['disclaimer']}**", "",
        "## Data",
        f"- Synthetic lateral films from `{card['data']['generator']}` (as `spine demo --modality "
        f"xray` makes them): regions "
        f"{', '.join(card['data']['regions'])} in turn.",
        f"- Training: {card['data']['train_films']} films from phantoms at "
        f"{card['data']['train_phantom_scale']} of the demo grid; held out: "
        f"{card['data']['held_out_films']} films from phantoms at the demo grid (other seeds)"
        + (f"; {card['data']['transitional_share']} of the lumbar training films have a forced "
           "transitional spine (half of them six lumbar vertebrae, a quarter each 13 or 11 "
           "rib-bearing vertebrae; held-out films at the realistic rates)"
           if card["data"].get("transitional_share") else "") + ".", "",
        "## Networks",
        f"- U-Net: `{net['unet']['spec']['arch']}` {net['unet']['spec']['params']}, "
        f"{net['unet']['parameters']:,} parameters; outputs (sigmoid) {', '.join(net['unet']['outputs'])}; "
        "BCE + soft Dice"
        + (" (vertebra target: each grid pixel's vertebra share of its film pixels)"
           if tr.get("soft_foreground") else "")
        + f", {net['unet']['training']['iterations']} iterations "
        f"({net['unet']['training']['seconds']} s), loss {net['unet']['training']['first_loss']} -> "
        f"{net['unet']['training']['last_loss']}.",
        f"- Detector: `{net['detector']['spec']['arch']}` {net['detector']['spec']['params']}, "
        f"{net['detector']['parameters']:,} parameters; outputs {', '.join(net['detector']['outputs'])}; "
        "weighted squared error on the heatmaps + L1 on box sizes, "
        f"{net['detector']['training']['iterations']} "
        f"iterations ({net['detector']['training']['seconds']} s), loss "
        f"{net['detector']['training']['first_loss']} -> {net['detector']['training']['last_loss']}"
        + ("; kept from the earlier run, only the U-Net trained again"
           if tr.get("stage") == "unet" else "") + ".",
        f"- {net['detector']['note']}",
        f"- Input: the whole film resized to {card['config']['grid']} x {card['config']['grid']} "
        "(area), scaled by its percentiles to [0, 1]; the detector reads that grid resized to "
        f"{card['config'].get('detector_grid') or card['config']['grid']} x "
        f"{card['config'].get('detector_grid') or card['config']['grid']} (its outputs resized back).",
        f"- U-Net targets: *vertebra* (any vertebra), *core* (the middle of each vertebra: the "
        f"largest part of its pixels at least {card['config'].get('core_fraction', 0)} of its largest "
        "inner distance from its edge), *C2* and *S* (the reference vertebrae's masks).", "",
        "## Ensemble rule", card["ensemble_rule"], "",
        "## Labels", f"Counted from the reference vertebra: {card['label_counting']}.", "",
        "## Held-out results", card["scoring"], "",
        *table({k: m[k] for k in ("unet", "detector", "ensemble") if k in m}), "",
        f"Targets: mean Dice >= {card['targets']['dice_mean']}, labelling accuracy >= "
        f"{card['targets']['labelling_accuracy']} (ensemble): "
        + ", ".join(f"{k} {'met' if v else 'NOT met'}" for k, v in card["targets_met"].items()) + ".",
        "",
        "Ensemble Dice per level: " + ", ".join(f"{k} {v}" for k, v in
                                                m.get("ensemble_dice_by_level", {}).items()) + ".",
        f"Prediction (both networks, three decodings) took {m.get('predict_seconds_mean')} s per "
        f"film on {card.get('rescored', tr)['threads']} CPU thread(s).",
        *([f"Scored again with the current decoding (`python -m spine_core.inference.xray.rescore`, "
           f"weights as trained): {card['rescored']['seconds']} s on {card['rescored']['threads']} "
           f"CPU thread(s), torch {card['rescored']['torch']}."] if "rescored" in card else []), "",
        "## Training run",
        f"{tr['threads']} CPU threads, budget {tr['budget_minutes']} min: films made in "
        f"{tr['data_seconds']} s, {tr['total_seconds']} s in all; torch {tr['torch']}, Python "
        f"{tr['python']} on {tr['machine']}."
        + (" Stage: the U-Net alone (`--xray-stage unet`)." if tr.get("stage") == "unet" else "")
        + (" Forward passes in bfloat16 (CPU autocast; batch norms, weights and loss float32)."
           if tr.get("precision") == "bf16" else "")
        + (f" {tr['note']}" if tr.get("note") else ""), "",
    ]
    return "\n".join(lines)
