"""A transfer job from spec to run folder: build, plan, fit, test, write.

:func:`run` is what ``zoo run`` calls; every step is a plain function so the pieces are
usable on their own (:func:`build_model`, :func:`make_plan`).
"""
from __future__ import annotations

import json
import platform
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from zoo.io import atomic
from zoo.engine import checkpoint as ckpt
from zoo.io import runfolder as rundir
from zoo.engine.context import RunContext
from zoo.errors import ConfigError, RunInterrupted, ZooError, state_dict_error


@dataclass
class BuiltModel:
    model: Any
    ref: Any
    weights: dict
    groups: list
    image_size: int


def pick_device(name: str):
    import torch

    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device '{name}' asked for, but CUDA is not available — use "
                          "--device cpu or auto")
    if name == "mps" and not (getattr(torch.backends, "mps", None)
                              and torch.backends.mps.is_available()):
        raise ConfigError("device 'mps' asked for, but MPS is not available — use --device cpu")
    return torch.device(name)


def build_model(catalog, job, num_classes: int, warnings: list) -> BuiltModel:
    """Backbone (with resolved weights) + head, and its layer groups."""
    from zoo.backbones import TransferModel, build_layer_groups
    from zoo.weights.resolve import resolve_and_load

    ref = catalog.resolve_model(job.model)
    head_comp = catalog.get("heads", job.head.name)
    backbone, weights = resolve_and_load(catalog, ref, job.weights, warnings)
    try:
        head = head_comp.obj(backbone.feature_dim, num_classes, **job.head.params)
    except TypeError as exc:
        raise ConfigError(f"head '{job.head.name}' rejected its params {job.head.params}: "
                          f"{exc}") from None
    model = TransferModel(backbone, head)
    groups = build_layer_groups(model, catalog.provider(ref.provider))
    size = job.data.image_size or backbone.pretrained_cfg.input_size
    return BuiltModel(model, ref, weights, groups, int(size))


def make_plan(catalog, job, built: BuiltModel, extra: dict | None = None):
    from zoo.strategy import validate_plan

    comp = catalog.get("strategies", job.strategy.name)
    strategy = comp.obj
    if hasattr(strategy, "prepare"):  # every time: no state left from an earlier run
        strategy.prepare(**(extra or {}))
    plan = strategy.plan(built.model, built.groups, job)
    from zoo.strategy import StrategyPlan

    if not isinstance(plan, StrategyPlan):
        raise ZooError(f"strategy '{job.strategy.name}' (plugin {comp.plugin}) returned "
                       f"{type(plan).__name__}, not a zoo.strategy.StrategyPlan")
    validate_plan(plan, built.groups)
    return plan


def build_metrics(catalog, job, num_classes: int, device) -> tuple[dict, dict]:
    """``(scalar metrics, non-scalar metrics)`` as torchmetrics objects on ``device``."""
    names = list(dict.fromkeys(job.metrics + [job.monitor.metric]))
    scalar, other = {}, {}
    for name in names:
        if name == "loss":
            continue
        comp = catalog.get("metrics", name)
        metric = comp.obj(num_classes)
        if metric is None:
            continue
        (scalar if comp.options.get("scalar", True) else other)[name] = metric.to(device)
    if job.monitor.metric not in scalar and job.monitor.metric != "loss":
        raise ConfigError(f"monitor metric '{job.monitor.metric}' does not apply to this task "
                          f"({num_classes} classes)")
    return scalar, other


def versions(catalog) -> dict:
    import importlib.metadata as md

    out = {"python": platform.python_version()}
    for dist in ("torch", "torchvision", "timm", "zoo"):
        try:
            out[dist] = md.version(dist)
        except md.PackageNotFoundError:
            out[dist] = None
    out["plugins"] = {name: rec.version for name, rec in catalog.pm.records.items()
                      if rec.status == "loaded"}
    return out


def run(job, catalog=None, *, quiet: bool = False, console=None, resume: str | None = None,
        plan_only: bool = False, on_plan: Callable | None = None) -> dict:
    """Execute ``job``; return ``summary.json``'s content (or the plan with ``plan_only``).

    Launched by torchrun, every rank calls this inside one process group; rank 0 alone
    writes the run folder, logs and draws progress bars (docs/distributed.md).
    """
    from zoo.engine import distributed

    with distributed.session(pick_device(job.device)) as device:
        return _run(job, catalog, device, quiet=quiet, console=console, resume=resume,
                    plan_only=plan_only, on_plan=on_plan)


def _run(job, catalog, device, *, quiet: bool, console, resume: str | None, plan_only: bool,
         on_plan: Callable | None) -> dict:
    import torch

    from zoo.engine import distributed
    from zoo.catalog import Catalog
    from zoo.engine.data import load_splits, make_loader
    from zoo.engine.features import FeatureCache
    from zoo.engine.loop import evaluate, fit
    from zoo.engine.transforms import build_transform

    catalog = catalog or Catalog()
    catalog.registry.check_requires()
    main = distributed.is_main()  # rank 0 (or the only process) writes, logs, shows progress
    if quiet or not main:
        def log(msg, style=None):
            return None
    elif console is not None:
        def log(msg, style=None):
            console.print(msg, markup=False, highlight=False, style=style)
    else:
        def log(msg, style=None):
            print(msg, file=sys.stderr if style == "yellow" else sys.stdout)
    warnings: list[str] = []
    torch.manual_seed(job.seed)

    # -- data first: the number of classes shapes the head --------------------------------
    bundle = load_splits(catalog, job.data, job.seed, {})  # uint8 tensors; cheap (cached)
    num_classes = len(bundle.classes)
    if resume:
        check_resumable(resume, bundle.classes)
    built = build_model(catalog, job, num_classes, warnings)
    model = built.model
    cfg = model.backbone.pretrained_cfg
    aug = job.data.augment
    transforms_ready = {"train": build_transform(cfg, built.image_size, aug, True),
                        "val": build_transform(cfg, built.image_size, aug, False),
                        "test": build_transform(cfg, built.image_size, aug, False)}
    bundle = load_splits(catalog, job.data, job.seed, transforms_ready)
    warnings.extend(bundle.warnings)
    native = cfg.input_size
    if built.weights.get("source") not in ("none", "random-init") and \
            built.image_size * 4 <= native:
        warnings.append(f"image size {built.image_size} px is far below the {native} px the "
                        f"source weights were trained at; their features degrade — try "
                        f"--image-size {min(native, built.image_size * 4)} or more")
    for w in warnings:
        log(w, style="yellow")

    extra = {"bundle": bundle, "device": device}  # for strategies with prepare(): auto, joint
    if job.source_data is not None:
        src = load_splits(catalog, job.source_data, job.seed,
                          {"train": transforms_ready["train"]})
        extra["source_data"] = src
    plan = make_plan(catalog, job, built, extra)
    plan_dict = plan.to_dict(built.groups, model, job.train.lr)
    if plan_only:
        plan_dict.update({"model": built.ref.full, "weights": built.weights,
                          "num_classes": num_classes, "image_size": built.image_size})
        return plan_dict
    if on_plan:
        on_plan(plan_dict)

    bs = job.train.batch_size
    if bs > len(bundle.train):
        warnings.append(f"batch size {bs} is larger than the {len(bundle.train)} training "
                        f"images; using {len(bundle.train)}")
        bs = len(bundle.train)
    workers = job.data.num_workers
    loaders = {
        "train": make_loader(bundle.train, bs, True, job.seed, workers, device.type),
        "val": make_loader(bundle.val, bs, False, job.seed, workers, device.type)
        if len(bundle.val) else None,
        "test": make_loader(bundle.test, bs, False, job.seed, workers, device.type),
    }
    metrics, other_metrics = build_metrics(catalog, job, num_classes, device)
    model.to(device)
    model = distributed.prepare_model(model, job, device, warnings, log)  # train.sync_bn
    if job.train.channels_last:
        model.to(memory_format=torch.channels_last)
    if job.train.compile:
        compile_backbone(model, bundle.train, device, warnings, log)

    # -- run folder ------------------------------------------------------------------------
    state = None
    if resume:
        run_dir = rundir.require_run_dir(resume)
        model_state, state, info = ckpt.load_checkpoint(run_dir)
        try:
            model.load_state_dict(model_state)
        except RuntimeError as exc:
            from zoo.errors import CheckpointError

            raise CheckpointError(f"checkpoint in {run_dir} does not fit this job's model "
                                  f"({state_dict_error(exc)}) — did job.yaml change?") from None
        log(f"resuming {run_dir} after epoch {state.epoch}")
    else:  # under torchrun rank 0 creates it and tells the other ranks
        run_dir = Path(distributed.broadcast_object(str(rundir.new_run_dir(
            job.out, job.name, built.ref.arch, job.strategy.name)) if main else None))
    ctx = RunContext(job, run_dir, catalog, rank=distributed.rank(),
                     world_size=distributed.world_size(), warnings=warnings, log=log)
    if main:
        atomic.write_text(run_dir / "job.yaml", job.to_yaml())
        atomic.write_json(run_dir / "splits.json", {
            "classes": bundle.classes,
            **{s: list(getattr(getattr(bundle, s), "sample_ids", []) or [])
               for s in ("train", "val", "test")}})

    # frozen-backbone phases on deterministic inputs train on cached features
    cache = FeatureCache(model.backbone, loaders, device, job)
    deterministic_train = aug == "none"

    def feature_loaders(phase):
        if (job.train.feature_cache == "off" or not phase.backbone_frozen()
                or not deterministic_train or any(getattr(t, "needs_features", True)
                                                  for t in phase.loss_terms)
                or not cache.fits_budget()):
            return None
        return {"train": cache.loader("train", True, bs),
                "val": cache.loader("val", False, bs) if loaders["val"] else None}

    started = time.perf_counter()
    summary: dict = {"schema": rundir.SCHEMA, "status": "running", "run_dir": str(run_dir),
                     "model": built.ref.full, "provider": built.ref.provider,
                     "strategy": job.strategy.name, "weights": built.weights,
                     "num_classes": num_classes, "classes": bundle.classes,
                     "epochs": plan.epochs, "seed": job.seed, "device": str(device),
                     "world_size": distributed.world_size(),
                     "versions": versions(catalog), "warnings": warnings}
    history = list(state.history) if state else []

    def on_epoch(result):
        history.append(result.record())
        rundir.write_metrics(run_dir, history)
        val = " ".join(f"{k}={v:.4f}" for k, v in result.val.items())
        log(f"epoch {result.epoch}/{plan.epochs} [{result.phase}] train_loss="
            f"{result.train_loss:.4f} {val} ({result.seconds:.1f}s"
            f"{', cached features' if result.cached_features else ''})")
        catalog.pm.hook.on_epoch_end(run=ctx, epoch=result.epoch, metrics=result.record())

    def checkpoint(st):
        ckpt.save_checkpoint(run_dir, model, st, {"model": built.ref.full})

    previous = _install_sigterm()
    progress = None if quiet or not main else _progress(console)
    try:
        if progress is not None:
            progress.start()
        with distributed.peer_errors():  # another rank died: a clear error, not a traceback
            state = fit(model, built.groups, plan, loaders, metrics, job, device, state=state,
                        feature_loaders=feature_loaders, on_epoch=on_epoch if main else None,
                        checkpoint=checkpoint if main else None, progress=progress, log=log)
    except (KeyboardInterrupt, _Terminated) as exc:
        code = 143 if isinstance(exc, _Terminated) else 130
        summary.update(status="interrupted", seconds=time.perf_counter() - started)
        if main:
            atomic.write_json(run_dir / "summary.json", summary)
            catalog.pm.hook.on_run_end(run=ctx, summary=summary)
        raise RunInterrupted(f"interrupted; the last complete epoch is saved — resume with "
                             f"`zoo run --resume {run_dir}`", exit_code=code) from None
    except ZooError as exc:
        summary.update(status="failed", error=str(exc), seconds=time.perf_counter() - started)
        if main:
            atomic.write_json(run_dir / "summary.json", summary)
            catalog.pm.hook.on_run_end(run=ctx, summary=summary)
        raise
    finally:
        if progress is not None:
            progress.stop()
        signal.signal(signal.SIGTERM, previous)

    # -- test the best epoch's weights -------------------------------------------------------
    if state.best_state is not None:
        model.load_state_dict(state.best_state)
    model.eval()
    test_metrics = dict(metrics, **other_metrics)
    if "confusion" not in test_metrics and catalog.has("metrics", "confusion"):
        # every run draws confusion.png, whether or not --metrics names it
        test_metrics["confusion"] = catalog.get("metrics", "confusion").obj(num_classes).to(device)
    use_cache = (plan.phases[-1].backbone_frozen() and job.train.feature_cache != "off"
                 and "test" in loaders and cache.fits_budget())
    if use_cache:
        test_loader, forward = cache.loader("test", False, bs), model.head
    else:
        test_loader, forward = loaders["test"], model
    test_raw, outputs = evaluate(forward, test_loader, test_metrics, device,
                                 job.train.precision, job.train.channels_last, collect=True)
    test = {k: v for k, v in test_raw.items() if isinstance(v, float)}  # same on every rank
    if not main:  # rank 0 writes the outputs
        return dict(summary, status="completed", test=test)
    _write_non_scalar(run_dir, test_raw, bundle.classes)

    from zoo.backbones import count_params

    seconds = time.perf_counter() - started
    summary.update({
        "status": "completed", "best_epoch": state.best_epoch,
        "monitor": {"metric": job.monitor.metric, "mode": job.monitor.mode,
                    "best": state.best_value},
        "seconds": round(seconds, 3), "feature_cache_seconds": round(cache.seconds, 3),
        "params": {"total": count_params(model),
                   "trainable_last_phase": plan_dict["phases"][-1]["trainable_params"]},
        "test": test,
    })
    save_model(run_dir / "model.safetensors", model, built, job, bundle.classes)
    atomic.write_json(run_dir / "summary.json", summary)
    try:
        from zoo.io.plots import plot_confusion, plot_curves

        plot_curves(history, job.monitor.metric, run_dir / "curves.png",
                    f"{built.ref.full} · {job.strategy.name}")
        if "confusion" in test_raw:
            plot_confusion(test_raw["confusion"].numpy(), bundle.classes,
                           run_dir / "confusion.png")
    except Exception as exc:  # a plot must never lose a finished run
        warnings.append(f"could not draw plots: {exc}")
        atomic.write_json(run_dir / "summary.json", summary)
    catalog.pm.hook.on_run_end(run=ctx, summary=summary)
    return summary


def check_resumable(resume: str | Path, classes: list) -> None:
    """Refuse, before anything is written, a run that cannot be resumed as it is."""
    from zoo.errors import CheckpointError

    run_dir = rundir.require_run_dir(resume)
    if (rundir.read_summary(run_dir) or {}).get("status") == "completed":
        raise CheckpointError(f"{run_dir} has already completed — nothing to resume "
                              f"(`zoo eval {run_dir}` re-evaluates it)")
    try:
        saved = json.loads((run_dir / "splits.json").read_text()).get("classes")
    except (OSError, ValueError):
        saved = None
    if saved is not None and list(saved) != list(classes):
        raise CheckpointError(f"{run_dir} was trained on {len(saved)} classes, but its data now "
                              f"gives {len(classes)} ({', '.join(map(str, classes[:4]))}"
                              f"{', ...' if len(classes) > 4 else ''}) — resuming needs the "
                              "same data; did job.yaml or the dataset change?")


def compile_backbone(model, dataset, device, warnings: list, log) -> bool:
    """``torch.compile`` the backbone in place (state-dict keys unchanged); on any failure
    fall back to eager mode with a warning instead of failing the run."""
    import torch

    body = model.backbone.body
    try:
        body.compile()
        sample = dataset[0][0].unsqueeze(0).to(device)
        with torch.no_grad():
            body.eval()
            body(sample)
        return True
    except Exception as exc:  # compilers missing, unsupported ops, old torch
        body._compiled_call_impl = None
        message = (f"torch.compile failed ({type(exc).__name__}: "
                   f"{str(exc).splitlines()[0][:120] if str(exc) else ''}); running eagerly")
        warnings.append(message)
        log(message, style="yellow")
        return False


def save_model(path: Path, model, built: BuiltModel, job, classes: list) -> None:
    meta = {"zoo": {"format": 1, "model": built.ref.full, "provider": built.ref.provider,
                    "arch": built.ref.arch, "tag": built.ref.tag,
                    "head": {"name": job.head.name, "params": job.head.params},
                    "num_classes": len(classes), "classes": classes,
                    "feature_dim": model.backbone.feature_dim,
                    "image_size": built.image_size,
                    "pretrained_cfg": model.backbone.pretrained_cfg.as_dict(),
                    "strategy": job.strategy.name}}
    atomic.save_safetensors(path, model.state_dict(), meta)


def _write_non_scalar(run_dir: Path, results: dict, classes: list) -> None:
    if "confusion" in results:
        m = results["confusion"].tolist()
        rows = ["true\\pred," + ",".join(_csv(c) for c in classes)]
        rows += [_csv(c) + "," + ",".join(str(int(v)) for v in row) for c, row in zip(classes, m)]
        atomic.write_text(run_dir / "confusion.csv", "\n".join(rows) + "\n")
    if "per-class" in results:
        vals = results["per-class"].tolist()
        atomic.write_text(run_dir / "per_class.csv", "class,accuracy\n" + "".join(
            f"{_csv(c)},{v:.6f}\n" for c, v in zip(classes, vals)))


def _csv(text: str) -> str:
    text = str(text)
    return f'"{text.replace(chr(34), chr(34) * 2)}"' if any(c in text for c in ',"\n') else text


class _Terminated(BaseException):
    """SIGTERM turned into an exception so the loop unwinds like on Ctrl-C."""


def _install_sigterm():
    def handler(signum, frame):
        raise _Terminated()

    try:
        return signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not in the main thread
        return signal.getsignal(signal.SIGTERM)


def _progress(console):
    from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                               TimeRemainingColumn)

    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TextColumn("loss {task.fields[loss]}"),
                    TextColumn("{task.fields[ips]} img/s"), TimeRemainingColumn(),
                    console=console, transient=True)
