"""The torch side of ``lora``/``dora`` (:mod:`.peft`): which modules take adapters, and the
:class:`~zoo.strategy.ModelChange` that injects, saves and merges them with Hugging Face peft.

Targets are chosen per architecture and named exactly (full module names: in timm ViTs
``proj`` names both the attention output and the patch-embedding conv, and peft matches a
bare name as a suffix):

* transformers (a module whose class name ends in ``Attention`` holds linears — timm ViTs,
  Swin, DeiT): every ``nn.Linear`` (attention qkv/proj, MLP fc1/fc2); convs (the patch
  embedding) are left out;
* ``nn.MultiheadAttention`` models (torchvision ViT, open_clip): peft cannot adapt that
  module (it reads ``in_proj_weight``/``out_proj`` directly), so the MLP linears only;
* CNNs: ``nn.Conv2d`` with ``groups == 1`` and ``nn.Linear``; depthwise/grouped convs
  (EfficientNet, ConvNeXt) too where peft accepts them: ``r`` divisible by ``groups`` (peft's
  A is then a dense conv and B a grouped 1×1 conv).  peft cannot merge those
  (``NotImplementedError`` for groups > 1): a run with grouped targets keeps its adapters
  unmerged in ``model.safetensors``, records the change (``zoo_unmerged``), and ``zoo
  eval/predict/export`` re-apply it (:meth:`.peft.LoRA.restore_change`) before loading;
  ``grouped: false`` leaves them out for a mergeable model.  With the default ``r`` 8 most
  depthwise convs (groups = channels ≥ 16) stay out, and the note says which ``r`` would
  take them.

Each exclusion is a plan note, so ``--plan`` says what was left out and why.
"""
from __future__ import annotations

import fnmatch
import shutil
import warnings
from pathlib import Path

from torch import nn

from zoo.errors import ConfigError
from zoo.io import atomic
from zoo.strategy import ModelChange

ADAPTER_DIR = "adapter"


def _kind(module: nn.Module) -> str | None:
    """``"linear"``, ``"conv"`` (groups=1), ``"grouped"`` or None (not adaptable)."""
    if isinstance(module, nn.Linear):
        return "linear"
    if isinstance(module, nn.Conv2d):
        return "conv" if module.groups == 1 else "grouped"
    return None


def _grouped_notes(mods: dict, grouped: list[str], r: int, allow: bool) -> tuple[list, list]:
    """``(accepted grouped convs, notes)``: peft takes a grouped conv when r % groups == 0."""
    accepted = [n for n in grouped if allow and r % mods[n].groups == 0]
    refused = [n for n in grouped if n not in accepted]
    notes = []
    if accepted:
        notes.append(f"{len(accepted)} depthwise/grouped convs adapted (r={r} divisible by "
                     f"their groups, e.g. {accepted[0]}): peft cannot merge them, so "
                     "model.safetensors keeps the adapters unmerged and zoo eval/predict/"
                     "export re-apply them (strategy.params.grouped=false: a mergeable model)")
    if refused and not allow:
        notes.append(f"{len(refused)} depthwise/grouped convs excluded (grouped=false), "
                     f"e.g. {refused[0]}")
    elif refused:
        g = sorted({mods[n].groups for n in refused})
        notes.append(f"{len(refused)} depthwise/grouped convs excluded: peft's LoRA takes "
                     f"them only when r is divisible by groups (r={r}; groups "
                     f"{', '.join(map(str, g[:4]))}), e.g. {refused[0]}")
    return accepted, notes


def choose_targets(body: nn.Module, spec, strategy: str, r: int = 8,
                   grouped: bool = True) -> tuple[list[str], list[str]]:
    """``(exact module names, notes)`` for ``spec`` (``"auto"`` or comma-separated names or
    fnmatch patterns over ``body``'s module names)."""
    mods = dict(body.named_modules())
    mha = {n for n, m in mods.items() if isinstance(m, nn.MultiheadAttention)}
    inside_mha = {n for n in mods for a in mha if n.startswith(a + ".")}
    notes: list[str] = []
    if spec in (None, "", "auto"):
        attention = any(type(m).__name__.endswith("Attention") and not isinstance(
            m, nn.MultiheadAttention) for m in mods.values())
        linear = [n for n, m in mods.items() if _kind(m) == "linear" and n not in inside_mha]
        convs = [n for n, m in mods.items() if _kind(m) == "conv"]
        groupeds = [n for n, m in mods.items() if _kind(m) == "grouped"]
        if mha:
            targets = linear
            notes.append(f"{len(mha)} nn.MultiheadAttention modules cannot take peft's LoRA: "
                         "their attention is left as is, the MLP linears are adapted")
        elif attention:
            targets = linear
            if convs:
                notes.append(f"transformer: attention and MLP linears adapted; {len(convs)} "
                             f"conv(s) left out ({', '.join(convs[:3])})")
        else:
            accepted, more = _grouped_notes(mods, groupeds, r, grouped)
            notes += more
            targets = [n for n in mods if n in set(convs) | set(linear) | set(accepted)]
            groupeds = []
        if groupeds:
            notes.append(f"{len(groupeds)} depthwise/grouped convs excluded (transformer), "
                         f"e.g. {groupeds[0]}")
    else:
        patterns = [s.strip() for s in str(spec).split(",") if s.strip()]
        targets = []
        for pat in patterns:
            hit = [n for n in mods if n and fnmatch.fnmatchcase(n, pat)]
            if not hit:
                raise ConfigError(f"strategy '{strategy}': target {pat!r} names no module "
                                  f"of this backbone (e.g. {', '.join(list(mods)[1:4])})")
            for n in hit:
                kind = _kind(mods[n])
                takes = kind in ("linear", "conv") or (
                    kind == "grouped" and grouped and r % mods[n].groups == 0)
                if not takes or n in inside_mha:
                    raise ConfigError(
                        f"strategy '{strategy}': target {n!r} is a {type(mods[n]).__name__}"
                        f"{_grouped_why(mods[n], r, grouped) if kind == 'grouped' else ''}"
                        f"{' inside nn.MultiheadAttention' if n in inside_mha else ''}; peft's "
                        "LoRA takes nn.Linear, groups=1 nn.Conv2d and grouped convs whose "
                        "groups divide r")
                if n not in targets:
                    targets.append(n)
        if any(_kind(mods[n]) == "grouped" for n in targets):
            notes.append("grouped/depthwise targets: peft cannot merge them, so "
                         "model.safetensors keeps the adapters unmerged (re-applied on load)")
    if not targets:
        raise ConfigError(f"strategy '{strategy}': this backbone has no module peft can adapt "
                          "(nn.Linear or groups=1 nn.Conv2d); try bitfit or norm-tuning")
    return targets, notes


def _grouped_why(module, r: int, grouped: bool) -> str:
    if not grouped:
        return f" with groups>1 (groups={module.groups}) and strategy.params.grouped=false"
    return f" with groups>1 (groups={module.groups}; r={r} is not divisible by it)"


def grouped_targets(body: nn.Module, targets: list[str]) -> list[str]:
    """The targets that are grouped/depthwise convs (peft cannot merge their adapters)."""
    mods = dict(body.named_modules())
    return [n for n in targets if _kind(mods.get(n)) == "grouped"]


def _peft():
    try:
        import peft  # lazy: peft (seconds to import), only for lora/dora
    except ImportError:
        raise ConfigError("lora and dora need Hugging Face peft: pip install 'zoo[peft]' "
                          "(or pip install peft)") from None
    return peft


class PeftAdapters(ModelChange):
    """LoRA/DoRA adapters on ``model.backbone.body`` (a ``peft.PeftModel`` while training)."""

    def __init__(self, targets: list[str], *, r: int, alpha: float, dropout: float,
                 rslora: bool, dora: bool, excluded_notes: list[str] | None = None,
                 grouped: list[str] | None = None):
        self.name = "dora" if dora else "lora"
        self.targets = list(targets)
        self.grouped = list(grouped or [])  # grouped-conv targets: the adapters cannot merge
        self.r, self.alpha, self.dropout, self.rslora, self.dora = r, alpha, dropout, rslora, dora
        self.notes = list(excluded_notes or [])

    def config(self):
        peft = _peft()
        return peft.LoraConfig(r=self.r, lora_alpha=self.alpha, lora_dropout=self.dropout,
                               use_rslora=self.rslora, use_dora=self.dora,
                               target_modules=self.targets, bias="none")

    def apply(self, model) -> None:
        peft = _peft()
        body = model.backbone.body
        if isinstance(body, peft.PeftModel):
            return
        with warnings.catch_warnings():  # handled: grouped adapters are kept unmerged
            warnings.filterwarnings("ignore", message=".*groups > 1. Merging is not supported")
            model.backbone.body = peft.get_peft_model(body, self.config())

    def describe(self) -> dict:
        return {"name": self.name, "library": "peft", "r": self.r, "alpha": self.alpha,
                "dropout": self.dropout, "rslora": self.rslora, "dora": self.dora,
                "targets": len(self.targets), "target_modules": self.targets[:8]
                + (["..."] if len(self.targets) > 8 else []), "grouped": len(self.grouped),
                "merges": not self.grouped, "notes": self.notes}

    def state(self) -> dict:
        """What :meth:`.peft.LoRA.restore_change` needs to rebuild this change on load."""
        return {"targets": self.targets, "r": self.r, "alpha": self.alpha,
                "dropout": self.dropout, "rslora": self.rslora, "dora": self.dora}

    def finalize(self, model, run_dir):
        """Save the adapter (peft's format) and the head under ``adapter/``, then merge
        (unless grouped convs were adapted: then the model keeps its adapters)."""
        peft = _peft()
        body = model.backbone.body
        if not isinstance(body, peft.PeftModel):
            return None
        folder = Path(run_dir) / ADAPTER_DIR
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder.with_name(f".{ADAPTER_DIR}.tmp")
        shutil.rmtree(tmp, ignore_errors=True)  # left by an earlier interrupted finalize
        body.save_pretrained(str(tmp))  # adapter_model.safetensors + adapter_config.json
        for f in sorted(Path(tmp).iterdir()):  # each file moved in whole
            atomic.write_bytes(folder / f.name, f.read_bytes())
            f.unlink()
        Path(tmp).rmdir()
        atomic.save_safetensors(folder / "head.safetensors",
                                {k: v.detach().cpu().contiguous()
                                 for k, v in model.head.state_dict().items()},
                                {"zoo": {"part": "head", "adapter": self.name}})
        if self.grouped:  # peft cannot merge grouped convs: keep them, say how to re-apply
            model.__dict__.setdefault("zoo_unmerged", []).append(
                {"strategy": self.name, "state": self.state()})
            return None
        model.backbone.body = body.merge_and_unload()
        return None
