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
  (EfficientNet, ConvNeXt) cannot take peft's LoRA and are excluded.

Each exclusion is a plan note, so ``--plan`` says what was left out and why.
"""
from __future__ import annotations

import fnmatch
import shutil
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


def choose_targets(body: nn.Module, spec, strategy: str) -> tuple[list[str], list[str]]:
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
        grouped = [n for n, m in mods.items() if _kind(m) == "grouped"]
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
            targets = [n for n in mods if n in set(convs) | set(linear)]
        if grouped:
            notes.append(f"{len(grouped)} depthwise/grouped convs excluded (peft's LoRA takes "
                         f"groups=1 convs only), e.g. {grouped[0]}")
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
                if kind not in ("linear", "conv") or n in inside_mha:
                    raise ConfigError(
                        f"strategy '{strategy}': target {n!r} is a {type(mods[n]).__name__}"
                        f"{' with groups>1' if kind == 'grouped' else ''}"
                        f"{' inside nn.MultiheadAttention' if n in inside_mha else ''}; peft's "
                        "LoRA takes nn.Linear and groups=1 nn.Conv2d modules")
                if n not in targets:
                    targets.append(n)
    if not targets:
        raise ConfigError(f"strategy '{strategy}': this backbone has no module peft can adapt "
                          "(nn.Linear or groups=1 nn.Conv2d); try bitfit or norm-tuning")
    return targets, notes


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
                 rslora: bool, dora: bool, excluded_notes: list[str] | None = None):
        self.name = "dora" if dora else "lora"
        self.targets = list(targets)
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
        model.backbone.body = peft.get_peft_model(body, self.config())

    def describe(self) -> dict:
        return {"name": self.name, "library": "peft", "r": self.r, "alpha": self.alpha,
                "dropout": self.dropout, "rslora": self.rslora, "dora": self.dora,
                "targets": len(self.targets), "target_modules": self.targets[:8]
                + (["..."] if len(self.targets) > 8 else []), "notes": self.notes}

    def finalize(self, model, run_dir):
        """Save the adapter (peft's format) and the head under ``adapter/``, then merge."""
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
        model.backbone.body = body.merge_and_unload()
        return None
