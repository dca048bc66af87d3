"""A transfer job from spec to run folder: prepare, plan, fit, test, write.

:func:`run` is what ``zoo run`` calls and :func:`plan_job` what ``--plan`` calls; both start
from :func:`zoo.engine.prepare.prepare` (the data splits loaded once, the model built on
them).  The steps of a run, top to bottom:

1. prepare — splits, model, transforms (``zoo.engine.prepare``)
2. plan    — the strategy's :class:`zoo.strategy.StrategyPlan` (``zoo.engine.build``)
3. set up  — loaders, metrics, the :class:`~zoo.engine.runtime.Runtime`, the run folder
4. fit     — :func:`zoo.engine.loop.fit`, checkpoints after epochs (``zoo.engine.checkpoint``)
5. test    — the best epoch's weights on the test split
6. write   — model, tables, summary, plots (``zoo.engine.outputs``)
"""
from __future__ import annotations

import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import torch

if TYPE_CHECKING:  # annotations only: the engine is given both, never builds them
    from zoo.catalog import Catalog
    from zoo.jobspec import JobSpec
from zoo.backbones import count_params
from zoo.engine import checkpoint as ckpt
from zoo.engine import distributed
from zoo.engine.build import build_metrics, make_plan
from zoo.run_context import RunContext
from zoo.engine import guard
from zoo.engine.blame import notify, plugin_error
from zoo.engine import threads
from zoo.engine.data import check_run_splits, make_loader
from zoo.engine.features import FeatureCache
from zoo.engine.loop import evaluate, fit
from zoo.engine.phases import data_streams, phase_records
from zoo.engine.loggers import close_loggers, log_epoch
from zoo.engine.metric_files import add_always_metrics, write_metric_files
from zoo.engine.outputs import save_model, versions
from zoo.engine.prepare import Prepared, prepare
from zoo.engine.runtime import Runtime, compile_backbone, pick_device
from zoo.errors import CheckpointError, ZooError, one_line, state_dict_error
from zoo.plan import PlanContext
from zoo.strategy import apply_model_changes, finalize_model_changes
from zoo.io import atomic
from zoo.io import runfolder as rundir

__all__ = ["RunContext", "run", "plan_job", "pick_device"]


def plan_job(job: JobSpec, catalog: Catalog) -> dict:
    """The strategy plan of ``job`` as a dict (phases, groups, LRs), without training.

    ``job`` is complete and ``catalog`` given (:func:`zoo.api.prepare_job`): the engine
    builds neither."""
    cpu_start = threads.sample_cpu()  # other processes' load, measured until the plan
    catalog.registry.check_requires()
    torch.manual_seed(job.seed)
    prep = prepare(catalog, job)
    tp = threads.plan_for_run(prep.bundle.train, pick_device(job.device).type,
                              job.data.num_workers, since=cpu_start)
    previous = threads.apply(tp)  # auto's trials train while planning
    try:
        plan = make_plan(catalog, job, prep.built, plan_context(prep, torch.device("cpu"),
                                                                    catalog))
    finally:
        torch.set_num_threads(previous)
    apply_model_changes(plan, prep.built.model, prep.built.groups)  # --plan counts adapters
    out = plan.to_dict(prep.built.groups, prep.built.model, job.train.lr,
                       job.train.weight_decay)
    out["threads"] = tp.to_dict()
    out.update({"model": prep.built.ref.full, "weights": prep.built.weights,
                "num_classes": len(prep.classes), "image_size": prep.built.image_size,
                "warnings": prep.warnings})
    return out


def run(job: JobSpec, catalog: Catalog, *, quiet: bool = False, console=None,
        resume: str | None = None, on_plan: Callable | None = None,
        lr_find: dict | None = None) -> dict:
    """Execute ``job``; return ``summary.json``'s content.

    ``job`` is complete and ``catalog`` given (:func:`zoo.api.prepare_job`): the engine
    builds neither.  ``lr_find`` (``--lr auto``'s sweep) goes in the summary as ``lr_find``.
    Launched by torchrun, every rank calls this inside one process group; rank 0 alone
    writes the run folder, logs and draws progress bars (docs/distributed.md).
    """
    cpu_start = threads.sample_cpu()  # other processes' load, measured until the plan
    with distributed.session(pick_device(job.device)) as device:
        return _run(job, catalog, device, quiet=quiet, console=console,
                    resume=resume, on_plan=on_plan, cpu_start=cpu_start, lr_find=lr_find)


def plan_context(prep: Prepared, device, catalog: Catalog) -> PlanContext:
    """What a strategy's plan may read of this run (auto: the splits and the catalog, whose
    strategies are its candidates; joint: the source)."""
    return PlanContext(data=prep.bundle, device=device, catalog=catalog, source=prep.source,
                       target=prep.target)


def _loss_terms(plan) -> list:
    """Every phase's loss terms, in plan order (their tensors go in the checkpoint)."""
    return [t for phase in plan.phases for t in phase.loss_terms]


def _logger(quiet: bool, main: bool, console) -> Callable:
    if quiet or not main:
        return lambda msg, style=None: None
    if console is not None:
        return lambda msg, style=None: console.print(msg, markup=False, highlight=False,
                                                     style=style)
    return lambda msg, style=None: print(msg, file=sys.stderr if style == "yellow"
                                         else sys.stdout)


def _run(job, catalog: Catalog, device, *, quiet: bool, console, resume: str | None,
         on_plan: Callable | None, cpu_start=None, lr_find: dict | None = None) -> dict:
    """:func:`_steps` with the guarantees of every phase (docs/reliability.md): SIGINT,
    SIGTERM and SIGHUP anywhere leave ``status: interrupted`` and the resume hint (exit
    130/143); any failure leaves ``status: failed`` with its error; a plugin's bug is one
    line naming the plugin and component."""
    main = distributed.is_main()
    rec = guard.RunRecord(main=main, resume=resume)
    previous = guard.install_signal_handlers()
    try:
        return _steps(job, catalog, device, rec, quiet=quiet, console=console, resume=resume,
                      on_plan=on_plan, cpu_start=cpu_start, lr_find=lr_find)
    except (KeyboardInterrupt, guard.Terminated) as exc:
        raise rec.interrupted(exc, lambda s: _run_end(catalog, rec, s)) from None
    except ZooError as exc:
        rec.failed(str(exc), lambda s: _run_end(catalog, rec, s))
        raise
    except Exception as exc:
        err = plugin_error(exc, catalog, job, rec.stage)
        rec.failed(str(err) if err else f"zoo bug: {one_line(exc)}",
                   lambda s: _run_end(catalog, rec, s))
        if err is not None:
            raise err from exc
        raise
    finally:
        if rec.restore_threads:
            torch.set_num_threads(rec.restore_threads)  # an API caller gets its count back
        rec.release()
        guard.restore_signal_handlers(previous)


def _run_end(catalog: Catalog, rec, summary: dict) -> None:
    if rec.ctx is not None:
        notify(catalog, "on_run_end", rec.warn, run=rec.ctx, summary=summary)
        close_loggers(rec.ctx, summary)


def _steps(job, catalog: Catalog, device, rec, *, quiet: bool, console, resume: str | None,
           on_plan: Callable | None, cpu_start=None, lr_find: dict | None = None) -> dict:
    catalog.registry.check_requires()
    main = rec.main  # rank 0 (or the only process) writes, logs, shows progress
    log = _logger(quiet, main, console)
    rec.warn = lambda msg: log(f"warning: {msg}", style="yellow")
    torch.manual_seed(job.seed)
    saved = None  # on --resume: the checkpoint's state (loader settings, ...)
    if resume:
        run_dir = rundir.require_run_dir(resume)
        if main:
            rec.lock(run_dir)  # one process per run folder
        rec.run_dir = run_dir
        saved = ckpt.read_info(run_dir) if (run_dir / "checkpoint").is_dir() else None
    rec.stage = "preparing the data and the model"

    # -- 1-2. prepare and plan -------------------------------------------------------------
    prep = prepare(catalog, job, check=(lambda classes: ckpt.check_resumable(resume, classes))
                   if resume else None)
    built, bundle, warnings = prep.built, prep.bundle, prep.warnings
    model, num_classes = built.model, len(prep.classes)
    check_run_splits(bundle, job.data)
    if resume:
        ckpt.check_same_data(rec.run_dir, bundle)
    for w in warnings:
        log(w, style="yellow")
    # torch threads + DataLoader workers within the cores zoo may use (docs/benchmarks.md),
    # set before planning: auto's trials train during the plan
    workers = job.data.num_workers
    saved_loader = (saved or {}).get("loader") or {}
    if workers is None and isinstance(saved_loader.get("workers"), int):
        workers = saved_loader["workers"]  # resume with the workers the run used
    tp = threads.plan_for_run(bundle.train, device.type, workers, since=cpu_start)
    if isinstance(saved_loader.get("torch_threads"), int) and saved_loader["torch_threads"] > 0:
        tp = replace(tp, torch_threads=saved_loader["torch_threads"],
                     reason=tp.reason + "; thread count of the run being resumed")
    rec.restore_threads = threads.apply(tp)
    workers = tp.workers
    rec.stage = "planning the strategy"
    plan = make_plan(catalog, job, built, plan_context(prep, device, catalog))
    # the plan's model changes (adapters), before the device move and a resume's checkpoint
    apply_model_changes(plan, model, built.groups)
    plan_dict = plan.to_dict(built.groups, model, job.train.lr, job.train.weight_decay)
    if on_plan:
        on_plan(plan_dict)

    # -- 3. loaders, metrics, runtime, run folder -------------------------------------------
    bs = job.train.batch_size
    if bs > len(bundle.train):
        warnings.append(f"batch size {bs} is larger than the {len(bundle.train)} training "
                        f"images; using {len(bundle.train)}")
        bs = len(bundle.train)
    rec.stage = "setting up the run"
    loader_settings = {"workers": workers, "torch_threads": tp.torch_threads}
    notes: list = []
    loaders = {
        "train": make_loader(bundle.train, bs, True, job.seed, workers, device.type, notes),
        "val": make_loader(bundle.val, bs, False, job.seed, workers, device.type)
        if len(bundle.val) else None,
        "test": make_loader(bundle.test, bs, False, job.seed, workers, device.type),
    }
    # the plan's data streams; a UDA plan's supervised loss trains on the source (phases.py)
    loaders.update(data_streams(prep, plan, job, bs, workers, device.type, make_loader))
    for note in notes:
        warnings.append(note)
        log(note, style="yellow")
    metrics, other_metrics = build_metrics(catalog, job, num_classes, device)
    runtime = Runtime.for_job(job, device)
    model = runtime.setup_model(model, job, warnings, log)  # device, sync_bn, channels_last
    if job.train.compile:
        compile_backbone(model, bundle.train, device, warnings, log)

    state = None
    if resume:
        run_dir = rec.run_dir
        model_state, state, _ = ckpt.load_checkpoint(run_dir, warn=rec.warn)
        try:
            model.load_state_dict(model_state)
        except RuntimeError as exc:
            raise CheckpointError(f"checkpoint in {run_dir} does not fit this job's model "
                                  f"({state_dict_error(exc)}) — did job.yaml change?") from None
        ckpt.restore_loss_terms(_loss_terms(plan), state.term_states, run_dir)
        log(f"resuming {run_dir} after epoch {state.epoch}")
    else:  # under torchrun rank 0 creates it and tells the other ranks
        run_dir = Path(distributed.broadcast_object(str(rundir.new_run_dir(
            job.out, job.name, built.ref.arch, job.strategy.name)) if main else None))
        if main:
            rec.lock(run_dir)
        rec.run_dir = run_dir
    ctx = RunContext(job, run_dir, catalog, rank=distributed.rank(),
                     world_size=distributed.world_size(), warnings=warnings, log=log)
    rec.ctx = ctx
    if main and not resume:  # a resume keeps the files the run started with
        atomic.write_text(run_dir / "job.yaml", job.to_yaml())
        atomic.write_json(run_dir / "splits.json", {
            "classes": bundle.classes,
            **{s: list(getattr(getattr(bundle, s), "sample_ids", []) or [])
               for s in ("train", "val", "test")}})

    # frozen-backbone phases on deterministic inputs train on cached features
    cache = FeatureCache(model.backbone, {s: loaders[s] for s in ("train", "val", "test")},
                         device, job)
    # no augmentation: by the job, or because the plan gave train the val transform (auto
    # choosing a probe does; a plan cannot change job.data)
    deterministic_train = job.data.augment == "none" or _same_transform(bundle.train, bundle.val)

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
                     "versions": versions(catalog), "warnings": warnings,
                     "loader": loader_settings, "threads": tp.to_dict(),
                     **({"lr_find": lr_find} if lr_find is not None else {}),
                     **({"auto": plan.choice.to_dict()} if plan.choice is not None else {})}
    rec.summary, rec.started = summary, started
    history = list(state.history) if state else []

    def on_epoch(result):
        history.append(result.record())
        rundir.write_metrics(run_dir, history)
        val = " ".join(f"{k}={v:.4f}" for k, v in result.val.items())
        log(f"epoch {result.epoch}/{plan.epochs} [{result.phase}] train_loss="
            f"{result.train_loss:.4f} {val} ({result.seconds:.1f}s"
            f"{', cached features' if result.cached_features else ''})")
        notify(catalog, "on_epoch_end", rec.warn, run=ctx, epoch=result.epoch,
               metrics=result.record())
        log_epoch(ctx, result.epoch, result.record())  # job.loggers (zoo.engine.loggers)

    save = ckpt.Saver(run_dir, model, {"model": built.ref.full, "loader": loader_settings},
                      _loss_terms(plan), guard.signals_deferred)
    rec.flush = save.flush  # an interrupt writes the epoch that pacing held back

    # -- 4. fit -------------------------------------------------------------------------------
    rec.stage = "training"
    progress = None if quiet or not main else _progress(console)
    try:
        if progress is not None:
            progress.start()
        with distributed.peer_errors():  # another rank died: a clear error, not a traceback
            state = fit(model, built.groups, plan, loaders, metrics, job, runtime, state=state,
                        feature_loaders=feature_loaders, on_epoch=on_epoch if main else None,
                        checkpoint=save if main else None, progress=progress, log=log)
    finally:
        if progress is not None:
            progress.stop()

    # -- 5. test the best epoch's weights -------------------------------------------------------
    rec.stage = "testing"
    if state.best_state is not None:
        model.load_state_dict(state.best_state)
    model.eval()
    # metrics that declare always=True (a confusion matrix) run whether or not named
    test_metrics = add_always_metrics(catalog, dict(metrics, **other_metrics), num_classes,
                                      device)
    use_cache = (plan.phases[-1].backbone_frozen() and not plan.model_changes
                 and job.train.feature_cache != "off"
                 and "test" in loaders and cache.fits_budget())
    if use_cache:
        test_loader, forward = cache.loader("test", False, bs), model.head
    else:
        test_loader, forward = loaders["test"], model
    test_raw, _ = evaluate(forward, test_loader, test_metrics, device, job.train.precision,
                           job.train.channels_last, collect=True)
    test = {k: v for k, v in test_raw.items() if isinstance(v, float)}  # same on every rank
    if not main:  # rank 0 writes the outputs
        return dict(summary, status="completed", test=test)

    # -- 6. write ------------------------------------------------------------------------------
    rec.stage = "writing the results"
    write_metric_files(catalog, run_dir, test_raw, bundle.classes, warnings)
    # model changes write their files (adapter/) and merge, so model.safetensors loads with
    # its provider alone
    model = finalize_model_changes(plan, model, run_dir)
    summary.update({
        "status": "completed", "best_epoch": state.best_epoch,
        "monitor": {"metric": job.monitor.metric, "mode": job.monitor.mode,
                    "best": state.best_value},
        "seconds": round(time.perf_counter() - started, 3),
        "feature_cache_seconds": round(cache.seconds, 3),
        "params": {"total": count_params(model),
                   "trainable_last_phase": plan_dict["phases"][-1]["trainable_params"],
                   "trainable_percent": plan_dict["phases"][-1]["trainable_percent"]},
        "phases": phase_records(plan, history),
        "model_changes": plan_dict["model_changes"],
        "test": test,
    })
    save_model(run_dir / "model.safetensors", model, built, job, bundle.classes)
    with guard.signals_deferred():
        atomic.write_json(run_dir / "summary.json", summary)
        rec.completed = True
    rec.stage = "drawing plots"
    _draw_plots(run_dir, history, test_raw, built, job, bundle.classes, summary, warnings)
    _run_end(catalog, rec, summary)
    return summary


def _draw_plots(run_dir: Path, history, test_raw, built, job, classes, summary,
                warnings) -> None:
    try:
        from zoo.io.plots import plot_curves  # lazy: matplotlib, after training

        plot_curves(history, job.monitor.metric, run_dir / "curves.png",
                    f"{built.ref.full} · {job.strategy.name}")
    except Exception as exc:  # a plot must never lose a finished run
        warnings.append(f"could not draw plots: {exc}")
        atomic.write_json(run_dir / "summary.json", summary)


def _progress(console):
    """The progress bars, or None when the console is not a terminal: a transient bar shows
    nothing in a log or pipe, and its refresh thread (10 renders a second) would take the
    GIL from the training loop for nothing (measured: ~2% of a CPU run)."""
    from rich.console import Console  # lazy: rich, shown only
    from rich.progress import (BarColumn, MofNCompleteColumn, Progress,  # lazy: rich, shown only
                               TextColumn, TimeRemainingColumn)

    console = console if console is not None else Console()
    if not console.is_terminal:
        return None
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TextColumn("loss {task.fields[loss]}"),
                    TextColumn("{task.fields[ips]} img/s"), TimeRemainingColumn(),
                    console=console, transient=True)


def _same_transform(train, val) -> bool:
    transform = getattr(train, "transform", None)
    return transform is not None and transform is getattr(val, "transform", None)

