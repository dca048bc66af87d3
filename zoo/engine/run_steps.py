"""The second half of a run's steps (:mod:`zoo.engine.pipeline` has the first): the run
folder's set-up, train, test, write.

Each step is a function of the pipeline's ``Run``; the run folder is written through its
one :class:`~zoo.engine.run_writer.RunWriter` (``r.writer``), and the final summary is
written before ``on_run_end`` fires.
"""
from __future__ import annotations

import time
from pathlib import Path

from zoo.backbones import count_params
from zoo.engine import best_weights
from zoo.engine import checkpoint as ckpt
from zoo.engine import distributed, guard, isolation
from zoo.engine.blame import notify
from zoo.engine.features import FeatureCache
from zoo.engine.data import note_unreadable
from zoo.engine.ema import summary_of as ema_summary
from zoo.engine.loggers import close_loggers, log_epoch
from zoo.engine.loop import evaluate, fit
from zoo.engine.metric_files import add_always_metrics, write_metric_files
from zoo.engine.outputs import save_model, versions
from zoo.engine.phases import phase_records
from zoo.errors import CheckpointError, state_dict_error
from zoo.names import components_used, job_uses
from zoo.run_context import RunContext
from zoo.strategy import finalize_model_changes


def loss_terms(plan) -> list:
    """Every phase's loss terms, in plan order (their tensors go in the checkpoint)."""
    return [t for phase in plan.phases for t in phase.loss_terms]


def resume_weights(r):
    """``--resume``: the checkpoint's weights into the model, its loss terms' state; the
    loop's state to continue from."""
    folder = r.rec.writer.dir
    model_state, state, _ = ckpt.load_checkpoint(folder, warn=r.rec.warn,
                                                  epochs=r.plan.epochs)
    try:
        r.model.load_state_dict(model_state)
    except RuntimeError as exc:
        raise CheckpointError(f"checkpoint in {folder} does not fit this job's model "
                              f"({state_dict_error(exc)}) — did job.yaml change?") from None
    ckpt.restore_loss_terms(loss_terms(r.plan), state.term_states, folder)
    r.log(f"resuming {folder} after epoch {state.epoch}")
    return state


def set_up_folder(r) -> None:
    """The run context observers see, the summary record begun (written at the end or when
    the run stops early), a new run's job.yaml and splits.json, the feature cache."""
    r.writer = r.rec.writer
    job, bundle, built = r.job, r.prep.bundle, r.prep.built
    r.ctx = RunContext(job, r.writer.dir, r.catalog, rank=distributed.rank(),
                       world_size=distributed.world_size(), warnings=r.warnings, log=r.log,
                       warn=r.rec.warn)
    r.rec.ctx = r.ctx
    r.writer.write_job(job.to_yaml(), {
        "classes": bundle.classes,
        **{s: list(getattr(getattr(bundle, s), "sample_ids", []) or [])
           for s in ("train", "val", "test")}})
    # frozen-backbone phases on deterministic inputs train on cached features
    r.cache = FeatureCache(r.model.backbone, {s: r.loaders[s] for s in ("train", "val", "test")},
                           r.device, job)
    r.started = r.rec.started = time.perf_counter()
    r.writer.begin({
        "model": built.ref.full, "provider": built.ref.provider, "strategy": job.strategy.name,
        "weights": built.weights, "num_classes": len(r.prep.classes), "classes": bundle.classes,
        "epochs": r.plan.epochs, "seed": job.seed, "device": str(r.device),
        "world_size": distributed.world_size(), "versions": versions(r.catalog),
        "warnings": r.warnings, "loader": _loader_settings(r), "threads": r.tp.to_dict(),
        "components": components_used(r.catalog, job_uses(job, built.ref.provider, r.catalog)),
        **({"lr_find": r.lr_find} if r.lr_find is not None else {}),
        **({"auto": r.plan.choice.to_dict()} if r.plan.choice is not None else {})})
    r.history = list(r.state.history) if r.state else []


def _loader_settings(r) -> dict:
    return {"workers": r.tp.workers, "torch_threads": r.tp.torch_threads}


# -- 4. train -----------------------------------------------------------------------------------
def train(r) -> None:
    """:func:`zoo.engine.loop.fit` over the plan, checkpoints after epochs (rank 0)."""
    save = ckpt.Saver(r.writer.dir, r.model, {"model": r.prep.built.ref.full,
                                              "loader": _loader_settings(r)},
                      loss_terms(r.plan), guard.signals_deferred)
    r.rec.flush = save.flush  # an interrupt writes the epoch that pacing held back
    progress = None if r.quiet or not r.main else progress_bars(r.console)
    try:
        if progress is not None:
            progress.start()
        with distributed.peer_errors():  # another rank died: a clear error, not a traceback
            r.state = fit(r.model, r.prep.built.groups, r.plan, r.loaders, r.metrics, r.job,
                          r.runtime, state=r.state, feature_loaders=_feature_loaders(r),
                          on_epoch=(lambda result: epoch_ended(r, result)) if r.main else None,
                          checkpoint=save if r.main else None, progress=progress, log=r.log,
                          hooks=r.hooks)
    finally:
        if progress is not None:
            progress.stop()


def _feature_loaders(r):
    """``phase -> {"train", "val"} | None``: cached-feature loaders for a frozen-backbone
    phase on deterministic inputs — no augmentation by the job, or a plan that trains on
    un-augmented images (``StrategyPlan.augment`` false: the set-up step gave train the val
    transform; auto choosing a probe declares it)."""
    job, bs, bundle = r.job, r.batch_size, r.prep.bundle
    deterministic = job.data.augment == "none" or _same_transform(bundle.train, bundle.val)

    def loaders(phase):
        if (job.train.feature_cache == "off" or not phase.backbone_frozen()
                or not deterministic or any(getattr(t, "needs_features", True)
                                            for t in phase.loss_terms)
                or not r.cache.fits_budget()):
            return None
        return {"train": r.cache.loader("train", True, bs),
                "val": r.cache.loader("val", False, bs) if r.loaders["val"] else None}
    return loaders


def epoch_ended(r, result) -> None:
    """After every epoch (rank 0): metrics.jsonl, the log line, on_epoch_end, loggers."""
    r.history.append(result.record())
    r.writer.write_metrics(r.history)
    val = " ".join(f"{k}={v:.4f}" for k, v in result.val.items())
    r.log(f"epoch {result.epoch}/{r.plan.epochs} [{result.phase}] train_loss="
          f"{result.train_loss:.4f} {val} ({result.seconds:.1f}s"
          f"{', cached features' if result.cached_features else ''})")
    notify(r.catalog, "on_epoch_end", r.rec.warn, run=r.ctx, epoch=result.epoch,
           metrics=result.record())
    log_epoch(r.ctx, result.epoch, result.record())  # job.loggers (zoo.engine.loggers)


# -- 5. test ------------------------------------------------------------------------------------
def test(r) -> None:
    """The best epoch's weights on the test split, with every metric (those that declare
    ``always=True``, a confusion matrix, whether or not named); other ranks stop here."""
    if r.state.best_state is not None:
        r.model.load_state_dict(best_weights.materialized(r.state.best_state))
        if r.main:  # restored: the link's generation is not read again
            best_weights.discard(r.writer.dir)
    r.model.eval()
    metrics = add_always_metrics(r.catalog, dict(r.metrics, **r.other_metrics),
                                 len(r.prep.classes), r.device)
    plan, job = r.plan, r.job
    use_cache = (plan.phases[-1].backbone_frozen() and not plan.model_changes
                 and job.train.feature_cache != "off"
                 and "test" in r.loaders and r.cache.fits_budget())
    if use_cache:
        loader, forward = r.cache.loader("test", False, r.batch_size), r.model.head
    else:
        loader, forward = r.loaders["test"], r.model
    r.test_raw, _ = evaluate(forward, loader, metrics, r.device, job.train.precision,
                             job.train.channels_last, collect=True)
    r.test = {k: v for k, v in r.test_raw.items() if isinstance(v, float)}  # same on all ranks
    # files found undecodable while loading: every rank (a collective under torchrun)
    r.unreadable = note_unreadable(r.prep.bundle, r.warnings)
    if not r.main:  # rank 0 writes the outputs
        r.result = dict(r.writer.summary, status="completed", test=r.test)


# -- 6. write -----------------------------------------------------------------------------------
def write(r) -> None:
    """Metric tables, the model (adapters merged), the final summary — written before
    ``on_run_end`` fires, so observers see the file's record — then the plots."""
    built, job, state = r.prep.built, r.job, r.state
    write_metric_files(r.catalog, r.writer.dir, r.test_raw, r.prep.bundle.classes,
                       r.rec.warn)  # a metric writer's failure is recorded and printed
    # model changes write their files (adapter/) and merge, so model.safetensors loads with
    # its provider alone
    model = finalize_model_changes(r.plan, r.model, r.writer.dir)
    last = r.plan_dict["phases"][-1]
    r.writer.update(
        best_epoch=state.best_epoch,
        monitor={"metric": job.monitor.metric, "mode": job.monitor.mode,
                 "best": state.best_value},
        seconds=round(time.perf_counter() - r.started, 3),
        feature_cache_seconds=round(r.cache.seconds, 3),
        params={"total": count_params(model),
                "trainable_last_phase": last["trainable_params"],
                "trainable_percent": last["trainable_percent"]},
        phases=phase_records(r.plan, r.history),
        model_changes=r.plan_dict["model_changes"],
        test=r.test, **ema_summary(state),  # train.ema: which weights were kept
        **_fallback_summary(r.plan, state),
        **({"unreadable": r.unreadable} if r.unreadable else {}))
    save_model(r.writer.dir / "model.safetensors", model, built, job, r.prep.bundle.classes)
    summary = r.writer.finish("completed")
    r.rec.stage = "drawing plots"
    _draw_plots(r, summary)
    run_end(r, summary)
    r.result = summary


def _fallback_summary(plan, state) -> dict:
    """``summary.json``'s ``fallback`` (a plan's weights to beat: auto's measured rival):
    where from, its val metrics, and whether the run kept it (no epoch matched or beat it)."""
    fallback = getattr(plan, "fallback", None)
    if fallback is None:
        return {}
    # best epoch 0 with weights: no epoch matched or beat the fallback (also after a resume)
    return {"fallback": dict(fallback.to_dict(), kept=state.best_epoch == 0
                             and state.best_state is not None)}


def run_end(r, summary: dict) -> None:
    """``on_run_end`` and the loggers' end, after the summary is written (RunWriter)."""
    if r.ctx is not None:
        notify(r.catalog, "on_run_end", r.rec.warn, run=r.ctx, summary=summary)
        close_loggers(r.ctx, summary)
        isolation.rewrite_summary_if_warned(r.rec, summary)  # a late failure recorded


def _draw_plots(r, summary: dict) -> None:
    try:
        from zoo.io.plots import plot_curves  # lazy: matplotlib, after training

        plot_curves(r.history, r.job.monitor.metric, Path(r.writer.dir) / "curves.png",
                    f"{r.prep.built.ref.full} · {r.job.strategy.name}")
    except Exception as exc:  # a plot must never lose a finished run
        r.warnings.append(f"could not draw plots: {exc}")
        r.writer.finish("completed")


def progress_bars(console):
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
