"""The ``README.md`` model card of ``zoo export --format hf``: what the Hub shows for a model.

Hub metadata (YAML front matter: library, tags, base model, license) and then, from the run
folder: the base model and where its weights came from, the data, the strategy, the test
metrics, the training curves and confusion plots (copied beside the card), and how to load
the folder with its ecosystem's library.
"""
from __future__ import annotations

from pathlib import Path

from zoo.io import atomic
from zoo.io import runfolder

PLOTS = ("curves.png", "confusion.png")
LIBRARY = {"timm": "timm", "torchvision": "pytorch", "openclip": "open_clip"}


def copy_plots(run_dir: Path, out: Path) -> list[str]:
    """The run's plots, copied into the export folder (the card shows them)."""
    copied = []
    for name in PLOTS:
        src = Path(run_dir) / name
        if src.is_file():
            atomic.write_bytes(out / name, src.read_bytes())
            copied.append(name)
    return copied


def _base_model(summary: dict, run) -> tuple[str | None, str]:
    """``(Hub id of the base weights or None, a sentence on where they came from)``."""
    weights = summary.get("weights") if isinstance(summary.get("weights"), dict) else {}
    source = str(weights.get("source") or "unknown")
    cfg = getattr(run.model.backbone.body, "pretrained_cfg", None)
    hub_id = cfg.get("hf_hub_id") if isinstance(cfg, dict) else None
    if source.startswith("hub:") and hub_id:
        return hub_id, f"`{hub_id}` from the Hugging Face Hub ({source})"
    if source in ("none", "random-init"):
        return None, "none: trained from random initialisation"
    sha = weights.get("sha256")
    return None, f"`{source}`" + (f" (sha256 `{sha}`)" if sha else "")


def _front_matter(provider: str, base: str | None, summary: dict) -> str:
    lines = ["---", f"library_name: {LIBRARY.get(provider, provider)}",
             "pipeline_tag: image-classification", "tags:", "- image-classification",
             "- zoo", f"- {provider}"]
    if base:
        lines.append(f"base_model: {base}")
    lines.append("---")
    return "\n".join(lines)


def _metrics_table(summary: dict) -> str:
    test = summary.get("test") if isinstance(summary.get("test"), dict) else {}
    rows = [f"| {k} | {v:.4f} |" for k, v in test.items() if isinstance(v, (int, float))]
    if not rows:
        return "No test metrics were recorded.\n"
    return "| metric (test split) | value |\n|---|---|\n" + "\n".join(rows) + "\n"


def _how_to_load(loading: str, files: list[str]) -> str:
    if loading == "timm":
        text = ("```python\nimport timm\nmodel = timm.create_model(\"local-dir:PATH\", "
                "pretrained=True).eval()   # or \"hf-hub:ORG/NAME\"\n"
                "cfg = timm.data.resolve_data_config(model=model)\n"
                "transform = timm.data.create_transform(**cfg)   # zoo's eval preprocessing\n"
                "probs = model(transform(img)[None]).softmax(-1)\n"
                "labels = model.pretrained_cfg[\"label_names\"]\n```\n\n"
                "With transformers: `AutoModelForImageClassification.from_pretrained(PATH)` "
                "(its `TimmWrapper`; `model.config.id2label` names the classes).  In zoo: "
                "`zoo run timm:ARCH --weights local-dir:PATH` starts a new run from these "
                "weights, this classifier kept as its source classifier.\n")
    elif loading == "torchvision":
        text = ("```python\nimport json, torchvision\nfrom safetensors.torch import load_file\n"
                "cfg = json.load(open(\"PATH/config.json\"))\n"
                "model = torchvision.models.get_model(cfg[\"architecture\"], "
                "num_classes=cfg[\"num_classes\"])\n"
                "model.load_state_dict(load_file(\"PATH/model.safetensors\"))\n```\n\n"
                "Preprocess as `config.json`'s `pretrained_cfg` says (resize the short side to "
                "the input size, centre crop, normalise with mean/std).\n")
    else:
        text = ("```python\nimport open_clip, torch\nfrom safetensors.torch import load_file\n"
                "model, preprocess = open_clip.create_model_from_pretrained(\"local-dir:PATH\")\n"
                "head = load_file(\"PATH/classifier.safetensors\")\n"
                "logits = model.encode_image(preprocess(img)[None]) @ head[\"weight\"].T "
                "+ head.get(\"bias\", 0)\n```\n")
    if any(f.startswith("adapter/") for f in files):
        text += ("\nThis run trained low-rank adapters: `model.safetensors` holds the merged "
                 "model; `adapter/` holds the adapter in peft's own format "
                 "(`adapter_model.safetensors`, `adapter_config.json`; base: the backbone "
                 "without its classifier) and zoo's head before merging (`head.safetensors`).\n")
    return text


def model_card(run, provider: str, loading: str, files: list[str]) -> str:
    """The card's text for ``run`` (a :class:`zoo.runs.reuse.LoadedRun`)."""
    summary = runfolder.read_summary(run.dir) or {}
    base, origin = _base_model(summary, run)
    job = run.job
    data = job.data.path or job.data.name
    strategy = summary.get("strategy") or job.strategy.name
    params = getattr(job.strategy, "params", None) or {}
    splits = runfolder.read_splits(run.dir)
    sizes = ", ".join(f"{k} {len(v)}" for k, v in splits.items()
                      if k in ("train", "val", "test") and isinstance(v, list))
    parts = [
        _front_matter(provider, base, summary), "",
        f"# {run.meta.get('model')} fine-tuned with zoo ({strategy})", "",
        f"An image classifier over {len(run.classes)} classes, trained with "
        "zoo and exported with `zoo export --format hf`.", "",
        "## Base model", "", f"- architecture: `{run.meta.get('model')}`",
        f"- weights it started from: {origin}", "",
        "## Data", "", f"- dataset: `{data}`" + (f" (images per split: {sizes})" if sizes else ""),
        f"- classes: {', '.join(f'`{c}`' for c in run.classes[:50])}"
        + (" …" if len(run.classes) > 50 else ""), "",
        "## Training", "", f"- strategy: `{strategy}`"
        + (" (" + ", ".join(f"{k}: {v}" for k, v in params.items()) + ")" if params else ""),
        f"- epochs: {summary.get('epochs', job.train.epochs)}, image size {run.image_size}, "
        f"seed {job.seed}", "",
        "## Metrics", "", _metrics_table(summary),
    ]
    plots = [f for f in files if f in PLOTS]
    if plots:
        parts += ["## Plots", ""] + [f"![{p[:-4]}]({p})" for p in plots] + [""]
    parts += ["## How to load", "", _how_to_load(loading, files)]
    return "\n".join(parts)
