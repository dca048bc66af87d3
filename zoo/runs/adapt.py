"""``zoo adapt``: a finished run adapted at test time to unlabeled target images (TENT or
AdaBN, :mod:`zoo.engine.tta`), written as a new run folder.

The target images (``--target-data``: a folder of images in any layout, or a dataset whose
train split is read with its labels ignored) pass through the run's evaluation transform.
With ``--data`` (labelled target data, as ``zoo eval --data``) the source model and the
adapted one are both evaluated on its test split — ``summary.json``'s ``adapt.before`` and
``test`` — and the new folder's ``job.yaml``/``splits.json`` name that data, so ``zoo eval``
of the folder evaluates on the target.  Without it they are evaluated on the run's own test
split.  With ``--episodic`` (TENT only) the labelled target test split is also predicted the
paper's episodic way, each batch adapted afresh from the source weights (``adapt.online``);
per-batch adaptation cannot be saved, so the folder's model is then the source model with
the target's BatchNorm statistics.
"""
from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

from zoo.catalog import get_catalog
from zoo.engine.data import load_splits
from zoo.errors import ConfigError, DataError
from zoo.io import runfolder as rundir
from zoo.io.yamlio import parse_scalar
from zoo.runs import derived
from zoo.runs.reuse import load_run, torch_device

METHODS = ("tent", "adabn")
MAX_STEPS = 1000


def adapt(run_dir: str | Path, target_data: str, *, target_params: dict | None = None,
          data: str | None = None, data_params: dict | None = None, method: str = "tent",
          steps: int = 10, lr: float = 1e-3, batch_size: int | None = None,
          episodic: bool = False, out: str | Path | None = None, name: str | None = None,
          device: str = "cpu", catalog=None, log=None) -> dict:
    """Adapt the run ``run_dir`` to ``target_data``; write the adapted run; its summary."""
    import torch  # lazy: torch

    from zoo.engine import tta  # lazy: imports torch
    from zoo.engine.prepare import eval_view  # lazy: torch

    started = time.perf_counter()
    log = log or (lambda message: None)
    _check_args(method, steps, lr, batch_size, episodic, data)
    catalog = catalog or get_catalog()
    device = torch_device(device)
    if out is not None:
        rundir.check_out_dir(out)
    run = load_run(run_dir, catalog, device)
    job, cfg = run.job, run.model.backbone.pretrained_cfg
    torch.manual_seed(job.seed)
    tgt = catalog.resolve_dataset_arg(target_data, unlabeled=True)
    params = dict(target_params or {}) if (target_params or tgt["name"] != job.data.name) \
        else job.data.params  # the run's own dataset: its params unless others are given
    tgt_spec = replace(job.data, name=tgt["name"], path=tgt["path"], params=params,
                       max_per_class=None)
    target = eval_view(load_splits(catalog, tgt_spec, job.seed, labeled=False), cfg,
                       run.image_size).train
    bs = min(batch_size or job.train.batch_size, len(target))
    target_loader = derived.split_loader(target, job, device, bs, shuffle=True)
    test_job, bundle = _test_data(catalog, run, data, data_params)
    test_loader = derived.split_loader(bundle.test, job, device)
    n_cls = len(run.classes)
    before = derived.evaluate_on(run.model, test_loader, catalog, test_job, n_cls, device)
    log(f"before: {_fmt(before)} on {'the target' if data else 'the run'}'s test split "
        f"({len(bundle.test)} images)")
    record = {"method": method, "target": target_data, "target_params": dict(
        target_params or {}), "target_images": len(target), "batch_size": bs,
        "labelled_target": data, "before": before}
    if method == "tent":
        record.update(steps=steps, lr=lr, episodic=episodic)
        if episodic:
            record["online"] = _episodic(run.model, test_loader, steps, lr, catalog, test_job,
                                         n_cls, device)
            log(f"episodic TENT, each test batch adapted afresh: {_fmt(record['online'])}")
        else:
            record["tent"] = tta.tent(run.model, target_loader, steps, lr, device, log)
    record["bn"] = tta.reestimate_bn(run.model, target_loader, device)
    if method == "adabn" and not record["bn"]["layers"]:
        raise ConfigError(f"{run.meta['model']} has no BatchNorm layer: AdaBN has nothing to "
                          "re-estimate — use --method tent")
    test_raw = derived.evaluate_on(run.model, test_loader, catalog, test_job, n_cls, device,
                                   full=True)
    after = {k: v for k, v in test_raw.items() if isinstance(v, float)}
    log(f"after {method}: {_fmt(after)}")
    metric = derived.monitor_of(job)[0]

    def plot(folder: Path) -> None:
        labels = ["source", method] + (["episodic tent"] if "online" in record else [])
        values = [before.get(metric, 0.0), after.get(metric, 0.0)] + (
            [record["online"].get(metric, 0.0)] if "online" in record else [])
        derived.bar_plot(folder / "adapt.png", labels, values, [False] + [True] * (
            len(values) - 1), f"test {metric}", f"{method} on {target_data}")

    return derived.write_run(run, run.model, out=out or job.out, name=name,
                             kind=f"adapt-{method}", test_raw=test_raw,
                             summary_extra={"adapt": record, "source_run": str(run.dir)},
                             catalog=catalog, started=started, plot=plot,
                             job=test_job, bundle=bundle if data else None)


def parse_params(items) -> dict:
    """``KEY=VALUE`` strings (``--target-param``, ``--data-param``) → ``data.params``."""
    out = {}
    for item in items or ():
        key, sep, raw = str(item).partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"'{item}': write KEY=VALUE, e.g. transform=noise")
        out[key.strip()] = parse_scalar(raw.strip())
    return out


def _check_args(method, steps, lr, batch_size, episodic, data) -> None:
    if method not in METHODS:
        raise ConfigError(f"--method {method!r}: choose tent or adabn")
    if not 1 <= steps <= MAX_STEPS:
        raise ConfigError(f"--steps must be 1..{MAX_STEPS}, got {steps} (TENT degrades when "
                          "run long: a few steps to a few dozen)")
    if not 0 < lr <= 1:
        raise ConfigError(f"--lr must be in (0, 1], got {lr}")
    if batch_size is not None and not 2 <= batch_size <= 100_000:
        raise ConfigError(f"--batch-size must be 2..100000, got {batch_size} (batch "
                          "statistics need at least 2 images)")
    if episodic and (method != "tent" or data is None):
        raise ConfigError("--episodic is TENT's per-batch mode on labelled target test data: "
                          "use it with --method tent and --data")


def _test_data(catalog, run, data, data_params):
    """``(job, eval bundle)`` of the labelled target (``--data``), or the run's own."""
    job = run.job
    if data is None:
        return job, derived.eval_bundle(catalog, run)
    spec = catalog.resolve_dataset_arg(data)
    params = dict(data_params or {}) if (data_params or spec["name"] != job.data.name) \
        else job.data.params
    job = replace(job, data=replace(job.data, name=spec["name"], path=spec["path"],
                                    params=params))
    from zoo.engine.prepare import eval_view  # lazy: torch

    bundle = eval_view(load_splits(catalog, job.data, job.seed),
                       run.model.backbone.pretrained_cfg, run.image_size)
    if bundle.classes != run.classes:
        raise DataError(f"--data {data} has classes {bundle.classes[:4]}...; the run was "
                        f"trained on {run.classes[:4]}... — the labelled target needs the "
                        "run's classes")
    if not len(bundle.test):
        raise DataError(f"--data {data} has an empty test split — nothing to evaluate on")
    return job, bundle


def _episodic(model, loader, steps, lr, catalog, job, n_cls, device) -> dict:
    import torch  # lazy: torch

    from zoo.engine import tta  # lazy: imports torch
    from zoo.engine.build import build_metrics  # lazy: imports torch

    logits, targets = tta.tent_episodic(model, loader, steps, lr, device)
    metrics, _ = build_metrics(catalog, job, n_cls, device)
    out = {"loss": float(torch.nn.functional.cross_entropy(logits, targets))}
    probs = logits.softmax(dim=1).to(device)
    for name, metric in metrics.items():
        metric.reset()
        metric.update(probs, targets.to(device))
        value = metric.compute()
        if value.numel() == 1:
            out[name] = float(value)
    return out


def _fmt(values: dict) -> str:
    return " ".join(f"{k}={v:.4f}" for k, v in values.items())
