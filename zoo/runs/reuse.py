"""Reusing finished runs: rebuild the model from ``model.safetensors`` + ``job.yaml``,
re-evaluate it, list runs."""
from __future__ import annotations

import json
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path

from zoo.catalog import get_catalog
from zoo.contracts import check_head, create_backbone
from zoo.engine.data import load_splits, make_loader
from zoo.engine.resolution import fit_input_size
from zoo.io import runfolder as rundir
from zoo.errors import CheckpointError, ConfigError, state_dict_error
from zoo.jobspec import check_device, job_from_tree, load_job_file
from zoo.weights.resolve import read_safetensors
from zoo.weights.source_head import match_saved_classifier


@dataclass
class LoadedRun:
    dir: Path
    job: object
    model: object
    meta: dict
    classes: list
    image_size: int


def load_run(run_dir: str | Path, catalog=None, device: str = "cpu") -> LoadedRun:
    """The trained model of a run folder, in eval mode, with its job and metadata."""
    from zoo.backbones import PretrainedConfig, TransferModel  # lazy: imports torch

    device = torch_device(device)  # before any work: `--device nonsense` is bad input
    run_dir = rundir.require_run_dir(run_dir)
    catalog = catalog or get_catalog()
    layer = load_job_file(run_dir / "job.yaml")
    job = job_from_tree(layer.tree, layer.lines, layer.source)
    path = run_dir / "model.safetensors"
    if not path.is_file():
        raise CheckpointError(f"{run_dir} has no model.safetensors — the run did not finish "
                              f"(resume it with `zoo run --resume {run_dir}`)")
    tensors, raw_meta = read_safetensors(path)
    try:
        meta = json.loads(raw_meta["zoo"])
    except (KeyError, ValueError, RecursionError):
        raise CheckpointError(f"{path} has no zoo metadata; was it written by zoo?") from None
    meta = rundir.check_model_meta(meta, path)  # every key below, typed and bounded
    ref = catalog.resolve_model(meta["model"])
    backbone = create_backbone(catalog, ref.provider, ref.arch, ref.tag, False)
    backbone.pretrained_cfg = PretrainedConfig(**{
        **meta["pretrained_cfg"], "mean": tuple(meta["pretrained_cfg"]["mean"]),
        "std": tuple(meta["pretrained_cfg"]["std"])})
    head_comp = catalog.get("heads", meta["head"]["name"])
    try:
        head = head_comp.obj(
            backbone.feature_dim, meta["num_classes"], **meta["head"].get("params", {}))
    except TypeError as exc:  # a factory's signature refusing the recorded params
        raise CheckpointError(f"{path}: head '{meta['head']['name']}' rejected its params "
                              f"{meta['head'].get('params')}: {exc}") from None
    check_head(head_comp, head, backbone.feature_dim, meta["num_classes"])
    fit_input_size(backbone, int(meta["image_size"]))  # a fixed-size ViT at the run's size
    if backbone.pretrained_cfg.channels != 3:  # the run's stem took that many channels
        from zoo.engine.channels import adapt_stem  # lazy: imports timm

        adapt_stem(backbone, backbone.pretrained_cfg.channels, check=False)
    # the classifier of the weights the run started from, not the provider's default one
    match_saved_classifier(backbone, tensors, "backbone.source_classifier.")
    model = TransferModel(backbone, head)
    restore_unmerged(model, meta.get("unmerged", []), catalog, path)
    try:
        model.load_state_dict(tensors)
    except RuntimeError as exc:
        raise CheckpointError(f"{path} does not fit {meta['model']}: "
                              f"{state_dict_error(exc)}") from None
    model.to(device).eval()
    return LoadedRun(run_dir, job, model, meta, meta["classes"], int(meta["image_size"]))


def restore_unmerged(model, records: list, catalog, path) -> None:
    """Re-apply the model changes that could not merge into the weights (VPT's prompts),
    each rebuilt by the strategy that made it (``restore_change(state)``), before loading."""
    for rec in records:
        name = rec["strategy"]
        if not catalog.has("strategies", name):
            raise CheckpointError(f"{path} keeps unmerged '{name}' changes but no strategy "
                                  f"'{name}' is installed — install the plugin that provides it")
        strategy = catalog.get("strategies", name).obj
        if not hasattr(strategy, "restore_change"):
            raise CheckpointError(f"{path}: strategy '{name}' cannot rebuild its unmerged "
                                  "change (it has no restore_change)")
        strategy.restore_change(rec["state"]).apply(model)


def torch_device(name):
    """``--device`` of eval/predict/export as a ``torch.device``: checked, and available."""
    import torch  # lazy: torch

    from zoo.engine.runtime import pick_device  # lazy: imports torch

    if isinstance(name, torch.device):
        return name
    check_device(name)
    return pick_device(name, flag="--device")


def evaluate_run(run_dir: str | Path, data: str | None = None, catalog=None,
                 device: str = "cpu", batch_size: int | None = None,
                 data_root: str | None = None) -> dict:
    """Metrics of a run's saved model on its own test split (or on ``data``)."""
    from zoo.engine.loop import evaluate  # lazy: imports torch
    from zoo.engine.build import build_metrics  # lazy: imports torch

    catalog = catalog or get_catalog()
    device = torch_device(device)
    if batch_size is not None and not 1 <= batch_size <= 1_000_000:
        raise ConfigError(f"--batch-size must be between 1 and 1000000, got {batch_size}")
    run = load_run(run_dir, catalog, device)
    job = run.job
    bundle = eval_bundle(catalog, run, data, data_root)
    if data is None and bundle.classes != run.classes:
        raise CheckpointError(f"the data's classes differ from the run's ({len(bundle.classes)}"
                              f" vs {len(run.classes)}) — pass --data")
    split = bundle.test
    if data is None:
        saved = rundir.read_splits(run.dir).get("test")
        ids = list(getattr(split, "sample_ids", []) or [])
        if saved and ids and saved != ids:
            raise CheckpointError(f"{run.dir}: the data no longer matches the run's test split "
                                  "(splits.json) — did the files change?")
    if bundle.classes != run.classes:
        raise CheckpointError(f"data has classes {bundle.classes[:5]}...; the run was trained "
                              f"on {run.classes[:5]}... — evaluate on data with the same classes")
    dev = device
    metrics, other = build_metrics(catalog, job, len(run.classes), dev)
    loader = make_loader(split, batch_size or job.train.batch_size, False, job.seed,
                         job.data.num_workers, dev.type)
    results, _ = evaluate(run.model, loader, metrics, dev)
    return {k: v for k, v in results.items() if isinstance(v, float)}


def list_runs(parent: str | Path = "runs") -> list[dict]:
    """Summaries of the run folders under ``parent``, newest first."""
    parent = Path(parent)
    rows = []
    if parent.exists() and not parent.is_dir():
        raise CheckpointError(f"{parent} is not a folder — `zoo runs DIR` lists the run folders "
                              "under DIR (default ./runs)")
    if not parent.is_dir():
        return rows  # nothing run yet: an empty list, not an error
    for d in parent.iterdir():
        if not rundir.is_run_dir(d):
            continue
        summary = rundir.read_summary(d) or {}
        test = summary.get("test") if isinstance(summary.get("test"), dict) else {}
        accuracy = test.get("accuracy")

        def text(key, default=None):  # a hand-edited summary.json: show only what fits
            value = summary.get(key, default)
            return value if isinstance(value, str) else default

        rows.append({
            "name": d.name, "run_dir": str(d), "model": text("model"),
            "strategy": text("strategy"), "status": text("status", "running?"),
            "accuracy": accuracy if isinstance(accuracy, float) else None,
            "mtime": (d / "job.yaml").stat().st_mtime,
        })
        rows[-1]["date"] = datetime.fromtimestamp(rows[-1]["mtime"]).strftime("%Y-%m-%d %H:%M")
    return sorted(rows, key=lambda r: r["mtime"], reverse=True)


def eval_bundle(catalog, run, data: str | None = None, data_root: str | None = None):
    """The run's three splits (or those of ``data``) through its evaluation transform."""
    from zoo.engine.prepare import eval_view  # lazy: torch

    spec = run.job.data
    if data is not None:
        target = catalog.resolve_dataset_arg(data)
        if target["name"] != spec.name:  # another dataset: the run's params are not its own
            spec = replace(spec, params={})
        spec = replace(spec, **target)
    if data_root is not None:
        spec = replace(spec, root=data_root)
    return eval_view(load_splits(catalog, spec, run.job.seed),
                     run.model.backbone.pretrained_cfg, run.image_size)
