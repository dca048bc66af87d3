"""Reusing finished runs: rebuild the model from ``model.safetensors`` + ``job.yaml``,
re-evaluate it, list runs."""
from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from zoo.io import runfolder as rundir
from zoo.errors import CheckpointError, state_dict_error


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
    from zoo.catalog import get_catalog
    from zoo.backbones import PretrainedConfig, TransferModel
    from zoo.jobspec import job_from_tree, load_job_file
    from zoo.weights.resolve import read_safetensors

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
    except (KeyError, ValueError):
        raise CheckpointError(f"{path} has no zoo metadata; was it written by zoo?") from None
    ref = catalog.resolve_model(meta["model"])
    provider = catalog.provider(ref.provider)
    backbone = provider.create(ref.arch, ref.tag, pretrained=False)
    backbone.pretrained_cfg = PretrainedConfig(**{
        **meta["pretrained_cfg"], "mean": tuple(meta["pretrained_cfg"]["mean"]),
        "std": tuple(meta["pretrained_cfg"]["std"])})
    head = catalog.get("heads", meta["head"]["name"]).obj(
        backbone.feature_dim, meta["num_classes"], **meta["head"]["params"])
    model = TransferModel(backbone, head)
    try:
        model.load_state_dict(tensors)
    except RuntimeError as exc:
        raise CheckpointError(f"{path} does not fit {meta['model']}: "
                              f"{state_dict_error(exc)}") from None
    import torch

    model.to(torch.device(device)).eval()
    return LoadedRun(run_dir, job, model, meta, meta["classes"], int(meta["image_size"]))


def evaluate_run(run_dir: str | Path, data: str | None = None, catalog=None,
                 device: str = "cpu", batch_size: int | None = None,
                 data_root: str | None = None) -> dict:
    """Metrics of a run's saved model on its own test split (or on ``data``)."""
    import torch

    from zoo.catalog import get_catalog
    from zoo.engine.data import load_splits, make_loader
    from zoo.engine.loop import evaluate
    from zoo.engine.pipeline import build_metrics
    from zoo.engine.transforms import build_transform

    catalog = catalog or get_catalog()
    run = load_run(run_dir, catalog, device)
    job = run.job
    spec = job.data
    if data is not None:
        from dataclasses import replace

        target = catalog.resolve_dataset_arg(data)
        if target["name"] != spec.name:  # another dataset: the run's params are not its own
            spec = replace(spec, params={})
        spec = replace(spec, **target)
    if data_root is not None:
        from dataclasses import replace

        spec = replace(spec, root=data_root)
    tf = build_transform(run.model.backbone.pretrained_cfg, run.image_size, "none", False)
    bundle = load_splits(catalog, spec, job.seed, {"train": tf, "val": tf, "test": tf})
    if data is None and bundle.classes != run.classes:
        raise CheckpointError(f"the data's classes differ from the run's ({len(bundle.classes)}"
                              f" vs {len(run.classes)}) — pass --data")
    split = bundle.test
    if data is None:
        saved = json.loads((run.dir / "splits.json").read_text()).get("test")
        ids = list(getattr(split, "sample_ids", []) or [])
        if saved and ids and saved != ids:
            raise CheckpointError(f"{run.dir}: the data no longer matches the run's test split "
                                  "(splits.json) — did the files change?")
    if bundle.classes != run.classes:
        raise CheckpointError(f"data has classes {bundle.classes[:5]}...; the run was trained "
                              f"on {run.classes[:5]}... — evaluate on data with the same classes")
    dev = torch.device(device)
    metrics, other = build_metrics(catalog, job, len(run.classes), dev)
    loader = make_loader(split, batch_size or job.train.batch_size, False, job.seed,
                         job.data.num_workers, dev.type)
    results, _ = evaluate(run.model, loader, metrics, dev)
    return {k: v for k, v in results.items() if isinstance(v, float)}


def list_runs(parent: str | Path = "runs") -> list[dict]:
    """Summaries of the run folders under ``parent``, newest first."""
    parent = Path(parent)
    rows = []
    if not parent.is_dir():
        return rows
    for d in parent.iterdir():
        if not rundir.is_run_dir(d):
            continue
        summary = rundir.read_summary(d) or {}
        rows.append({
            "name": d.name, "run_dir": str(d), "model": summary.get("model"),
            "strategy": summary.get("strategy"), "status": summary.get("status", "running?"),
            "accuracy": (summary.get("test") or {}).get("accuracy"),
            "mtime": (d / "job.yaml").stat().st_mtime,
        })
        rows[-1]["date"] = datetime.fromtimestamp(rows[-1]["mtime"]).strftime("%Y-%m-%d %H:%M")
    return sorted(rows, key=lambda r: r["mtime"], reverse=True)
