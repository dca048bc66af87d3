"""Run folders made from other run folders without a training loop (``zoo soup``,
``zoo adapt``): loading the source runs' data views, evaluating a model on a split, and
writing the new folder in the layout of ``zoo run`` (docs/runs.md).

The new folder has ``job.yaml`` and ``splits.json`` of its source run (so ``zoo eval``,
``predict`` and ``export`` load it as any other run), ``model.safetensors`` with the source's
zoo metadata (``strategy`` says how it was made), the metric plugins' files (confusion
matrix, per-class table), ``summary.json`` and a picture of how it was made.  Every file is
written atomically (:mod:`zoo.io.atomic`).
"""
from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path
from typing import Callable

from zoo.engine.data import make_loader
from zoo.engine.metric_files import add_always_metrics, write_metric_files
from zoo.engine.outputs import versions
from zoo.errors import CheckpointError
from zoo.engine.run_writer import RunWriter
from zoo.runs.reuse import eval_bundle  # noqa: F401 (soup, adapt)
from zoo.io import atomic
from zoo.io import runfolder as rundir


def split_loader(split, job, device, batch_size: int | None = None, shuffle: bool = False):
    """A loader over one split with the run's batch size and seed (no worker processes
    beyond the job's)."""
    return make_loader(split, batch_size or job.train.batch_size, shuffle, job.seed,
                       job.data.num_workers, device.type)


def evaluate_on(model, loader, catalog, job, num_classes: int, device,
                full: bool = False) -> dict:
    """Scalar metrics of ``model`` on ``loader`` (``full``: every metric the test split of a
    run gets, raw values included, for the metric files)."""
    from zoo.engine.build import build_metrics  # lazy: imports torch
    from zoo.engine.loop import evaluate  # lazy: imports torch

    metrics, other = build_metrics(catalog, job, num_classes, device)
    if full:
        metrics = add_always_metrics(catalog, dict(metrics, **other), num_classes, device)
    model.eval()
    raw, _ = evaluate(model, loader, metrics, device, collect=full)
    return raw if full else {k: v for k, v in raw.items() if isinstance(v, float)}


def monitor_of(job) -> tuple[str, str]:
    """The val metric that ranks models of this job, and whether higher is better."""
    metric = job.monitor.metric
    mode = job.monitor.mode or ("min" if metric == "loss" else "max")
    return metric, mode


def better(a: float, b: float, mode: str) -> bool:
    """``a`` at least as good as ``b``."""
    return a >= b if mode == "max" else a <= b


def write_run(source, model, *, out: str | Path, name: str | None, kind: str,
              test_raw: dict, summary_extra: dict, catalog, started: float,
              plot: Callable[[Path], None] | None = None, job=None, bundle=None) -> dict:
    """A new run folder under ``out`` for ``model`` made from the run ``source`` (a
    :class:`zoo.runs.reuse.LoadedRun`); its ``summary.json`` content.  ``job`` and
    ``bundle`` (whose splits go to ``splits.json``) replace the source's when the new
    model belongs to other data (an adapted run's labelled target)."""
    arch = str(source.meta.get("arch") or source.meta["model"].split(":")[-1])
    run_dir = rundir.new_run_dir(out, name, arch, kind)
    writer = RunWriter(run_dir)  # the run folder's one writer, as for zoo run
    if bundle is not None:
        splits = {"classes": list(bundle.classes),
                  **{s: list(getattr(getattr(bundle, s), "sample_ids", []) or [])
                     for s in ("train", "val", "test")}}
    elif (source.dir / "splits.json").is_file():
        splits = rundir.read_splits(source.dir)
    else:
        splits = None
    try:
        # the source's job (data, seed, transforms: what eval/predict reload), named here
        writer.write_job(replace(job or source.job, out=str(out), name=run_dir.name).to_yaml(),
                         splits)
    except OSError as exc:
        raise CheckpointError(f"cannot write {run_dir}: {exc.strerror or exc}") from None
    warnings: list = []
    write_metric_files(catalog, run_dir, test_raw, list(source.classes), warnings)
    meta = dict(source.meta, strategy=kind)
    atomic.save_safetensors(run_dir / "model.safetensors", model.state_dict(), {"zoo": meta})
    test = {k: v for k, v in test_raw.items() if isinstance(v, float)}
    writer.begin({"model": source.meta["model"], "provider": source.meta.get("provider"),
                  "strategy": kind, "num_classes": len(source.classes),
                  "classes": list(source.classes), "seed": source.job.seed,
                  "versions": versions(catalog), "warnings": warnings,
                  "params": {"total": sum(p.numel() for p in model.parameters())},
                  **summary_extra, "test": test})
    summary = writer.finish("completed", seconds=round(time.perf_counter() - started, 3))
    if plot is not None:
        try:
            plot(run_dir)
        except Exception as exc:  # a picture must never lose a finished run
            summary["warnings"].append(f"could not draw plots: {exc}")
            writer.finish("completed")
    return summary


def bar_plot(path: Path, labels: list[str], values: list[float], highlight: list[bool],
             ylabel: str, title: str) -> None:
    """Bars, the highlighted ones in blue (used by soup and adapt for their picture)."""
    from zoo.io.plots import _figure, _save  # lazy: matplotlib

    plt = _figure()
    fig, ax = plt.subplots(figsize=(max(4.0, 0.7 * len(labels) + 2), 3.5))
    ax.bar(range(len(values)), values,
           color=["tab:blue" if h else "tab:grey" for h in highlight])
    ax.set_xticks(range(len(labels)), labels, rotation=30, ha="right", fontsize=8)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    _save(fig, path)
    plt.close(fig)
