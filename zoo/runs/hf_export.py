"""``zoo export RUN --format hf``: a run's model as a folder its own ecosystem loads.

The layout is the one each provider's ecosystem publishes on the Hugging Face Hub, so the
folder loads without zoo (and ``zoo push`` uploads it as it is):

- **timm** (timm's Hub layout): ``config.json`` (``architecture``, ``num_classes``,
  ``label_names``, ``pretrained_cfg``) + ``model.safetensors`` in timm's own key names, zoo's
  head as timm's classifier.  Loads with ``timm.create_model("local-dir:DIR",
  pretrained=True)`` (or ``hf-hub:ORG/NAME`` once pushed) and with transformers'
  ``AutoModelForImageClassification`` (its ``TimmWrapper``).  The config is written by timm's
  own ``save_config_for_hf``, minus ``num_classes`` in ``model_args`` (transformers 5 passes
  ``num_classes`` itself and fails with "multiple values for keyword argument").
- **torchvision**: ``model.safetensors`` in torchvision's key names (zoo's head as the
  model's last ``Linear``) + ``config.json`` naming the builder; loads with
  ``torchvision.models.get_model(ARCH, num_classes=C).load_state_dict(...)``.
- **openclip**: open_clip's ``local-dir:``/``hf-hub:`` layout (``open_clip_config.json`` +
  ``open_clip_model.safetensors``, the whole CLIP with the fine-tuned image tower) plus
  ``classifier.safetensors``: zoo's head over the image embeddings.

``pretrained_cfg`` describes zoo's own eval preprocessing for this run: the run's image
size, ``crop_pct`` 1.0 (zoo resizes and centre-crops to the same size), the weights'
mean/std and interpolation.  Only a linear head maps onto a classifier layer: another head
(mlp, ncm, knn, a normalising head) is refused with one line.  A PEFT run exports its merged
model and, beside it in ``adapter/``, the adapter in peft's own format.  Every exported model
is checked against the run's: the same logits (1e-4) on a random batch, or nothing is kept.
"""
from __future__ import annotations

import copy
import json
import tempfile
from pathlib import Path

from zoo.errors import MissingDependencyError, ZooError
from zoo.io import atomic

PEFT_ADAPTER = "adapter"   # the run folder's peft adapter (zoo_strategies.peft_targets)


def linear_head(model) -> tuple:
    """``(weight, bias)`` of the run's head when it is one linear map of the features."""
    from torch import nn  # lazy: torch

    head = model.head
    name = type(head).__name__
    if getattr(head, "normalize", False):
        raise ZooError(f"the run's head ({name}, normalize: true) L2-normalises the features "
                       "before its linear layer, which a classifier layer cannot do — export "
                       "it with --format safetensors, onnx or torch-export")
    linears = [m for m in head.modules() if isinstance(m, nn.Linear)]
    others = [m for m in head.modules() if not isinstance(
        m, (nn.Linear, nn.Dropout, nn.Identity, nn.Sequential)) and m is not head]
    plain = isinstance(head, nn.Linear) or isinstance(head, nn.Sequential)
    if len(linears) != 1 or others or not plain:
        raise ZooError(f"the run's head ({name}) is not one linear layer, so it cannot become "
                       "the model's classifier in --format hf — export it with --format "
                       "safetensors, onnx or torch-export (they keep any head)")
    linear = linears[0]
    bias = linear.bias if linear.bias is not None else None
    return linear.weight.detach().cpu(), None if bias is None else bias.detach().cpu()


def export_hf(run, out: Path) -> dict:
    """Write the ecosystem folder of ``run`` (a :class:`zoo.runs.reuse.LoadedRun`) into ``out``."""
    from zoo.runs.model_card import copy_plots, model_card  # lazy: only export needs it

    provider = run.model.backbone.provider
    writer = {"timm": _timm, "torchvision": _torchvision, "openclip": _openclip}.get(provider)
    if writer is None:
        raise ZooError(f"--format hf knows timm, torchvision and openclip models, not provider "
                       f"'{provider}' — export with --format safetensors, onnx or torch-export")
    weight, bias = linear_head(run.model)
    files, loading = writer(run, out, weight, bias)
    files += _peft_adapter(run, out)
    files += copy_plots(run.dir, out)
    atomic.write_text(out / "README.md", model_card(run, provider, loading, files))
    files.append("README.md")
    return {"format": "hf", "path": str(out), "layout": provider, "files": sorted(files),
            "bytes": sum((out / f).stat().st_size for f in files if (out / f).is_file())}


def eval_cfg(run) -> dict:
    """zoo's eval preprocessing for this run, in timm's ``pretrained_cfg`` terms."""
    cfg = run.model.backbone.pretrained_cfg
    size = int(run.image_size)
    return {"input_size": (3, size, size), "crop_pct": 1.0, "crop_mode": "center",
            "mean": tuple(cfg.mean), "std": tuple(cfg.std), "interpolation": cfg.interpolation}


def _check_same(run, exported, what: str) -> None:
    """The exported model must give the run's logits: else the folder would lie."""
    import torch  # lazy: torch

    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, run.image_size, run.image_size, generator=g)
    with torch.no_grad():
        want = run.model.eval()(x)
        got = exported.eval()(x)
    if tuple(got.shape) != tuple(want.shape) or not torch.allclose(got, want, atol=1e-4,
                                                                    rtol=1e-4):
        raise ZooError(f"the {what} model does not reproduce the run's outputs (max difference "
                       f"{(got - want).abs().max().item() if got.shape == want.shape else 'shape'}"
                       ") — export with --format safetensors instead")


def _set_classifier(classifier, weight, bias) -> None:
    import torch  # lazy: torch

    with torch.no_grad():
        classifier.weight.copy_(weight)
        if classifier.bias is not None:
            classifier.bias.copy_(bias if bias is not None else torch.zeros_like(classifier.bias))


# -- timm -----------------------------------------------------------------------------------
def _timm(run, out: Path, weight, bias) -> tuple[list[str], str]:
    from timm.models._hub import save_config_for_hf  # lazy: timm

    model = copy.deepcopy(run.model.backbone.body).cpu()
    classes = list(run.classes)
    model.reset_classifier(len(classes))
    classifier = model.get_classifier()
    if not hasattr(classifier, "weight") or tuple(classifier.weight.shape) != tuple(weight.shape):
        raise ZooError(f"timm's classifier for {run.meta['model']} is not a linear layer over "
                       "zoo's features — export with --format safetensors, onnx or torch-export")
    if bias is None and classifier.bias is not None:
        import torch  # lazy: torch

        bias = torch.zeros(weight.shape[0])
    _set_classifier(classifier, weight, bias)
    _check_same(run, model, "timm")
    with tempfile.TemporaryDirectory() as tmp:  # timm writes with open(): read it back
        save_config_for_hf(model, str(Path(tmp) / "config.json"),
                           model_config={"label_names": classes}, data_config=eval_cfg(run))
        config = json.loads((Path(tmp) / "config.json").read_text())
    config.get("model_args", {}).pop("num_classes", None)  # transformers 5 passes it itself
    if not config.get("model_args"):
        config.pop("model_args", None)
    config["pretrained_cfg"].pop("tag", None)  # the source weights' tag: not these weights
    atomic.write_json(out / "config.json", config)
    atomic.save_safetensors(out / "model.safetensors", model.state_dict(), {"format": "pt"})
    return ["config.json", "model.safetensors"], "timm"


# -- torchvision ----------------------------------------------------------------------------
def _torchvision(run, out: Path, weight, bias) -> tuple[list[str], str]:
    import torchvision  # lazy: torchvision

    backbone = run.model.backbone
    arch, path = backbone.name, backbone.classifier_name
    if not path:
        raise ZooError(f"torchvision:{arch} has no classifier layer to hold zoo's head — export "
                       "with --format safetensors, onnx or torch-export")
    model = torchvision.models.get_model(arch, weights=None, num_classes=len(run.classes))
    state = {k: v for k, v in backbone.source_state_dict().items()
             if not k.startswith(path + ".")}
    state[path + ".weight"] = weight
    if bias is not None:
        state[path + ".bias"] = bias
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise ZooError(f"torchvision's {arch} does not take the run's weights: "
                       f"{str(exc).splitlines()[0][:160]}") from None
    _check_same(run, model, "torchvision")
    cfg = eval_cfg(run)
    config = {"library": "torchvision", "architecture": arch, "num_classes": len(run.classes),
              "label_names": list(run.classes), "classifier": path,
              "pretrained_cfg": {**cfg, "input_size": list(cfg["input_size"]),
                                 "mean": list(cfg["mean"]), "std": list(cfg["std"])}}
    atomic.write_json(out / "config.json", config)
    atomic.save_safetensors(out / "model.safetensors", model.state_dict(), {"format": "pt"})
    return ["config.json", "model.safetensors"], "torchvision"


# -- open_clip ------------------------------------------------------------------------------
def _openclip(run, out: Path, weight, bias) -> tuple[list[str], str]:
    try:
        import open_clip  # lazy: open_clip
    except ImportError:
        raise MissingDependencyError("exporting an openclip run needs open_clip: "
                                     "pip install open_clip_torch") from None
    backbone = run.model.backbone
    cfg = eval_cfg(run)
    model_cfg = open_clip.get_model_config(backbone.name)
    if model_cfg is None:
        raise ZooError(f"open_clip has no configuration for {backbone.name}")
    config = {"model_cfg": model_cfg,
              "preprocess_cfg": {"size": int(run.image_size), "mean": list(cfg["mean"]),
                                 "std": list(cfg["std"]), "interpolation": cfg["interpolation"],
                                 "resize_mode": "shortest"}}
    atomic.write_json(out / "open_clip_config.json", config)
    atomic.save_safetensors(out / "open_clip_model.safetensors", backbone.source_state_dict())
    head = {"weight": weight} if bias is None else {"weight": weight, "bias": bias}
    atomic.save_safetensors(out / "classifier.safetensors", head,
                            {"label_names": json.dumps(list(run.classes))})
    atomic.write_json(out / "config.json", {
        "library": "open_clip", "architecture": backbone.name,
        "num_classes": len(run.classes), "label_names": list(run.classes),
        "classifier": "classifier.safetensors: logits = image_embedding @ weight.T + bias",
        "pretrained_cfg": {**cfg, "input_size": list(cfg["input_size"]),
                           "mean": list(cfg["mean"]), "std": list(cfg["std"])}})
    return ["open_clip_config.json", "open_clip_model.safetensors", "classifier.safetensors",
            "config.json"], "open_clip"


# -- peft -----------------------------------------------------------------------------------
def _peft_adapter(run, out: Path) -> list[str]:
    """A PEFT run's adapter folder (peft's own format), copied beside the merged model."""
    src = Path(run.dir) / PEFT_ADAPTER
    if not (src / "adapter_config.json").is_file():
        return []
    files = []
    for f in sorted(src.iterdir()):
        if f.is_file():
            atomic.write_bytes(out / PEFT_ADAPTER / f.name, f.read_bytes())
            files.append(f"{PEFT_ADAPTER}/{f.name}")
    return files
