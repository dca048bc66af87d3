"""A transfer job from spec to run folder, read top to bottom: prepare, plan, set up, train,
test, write.

:func:`run` is what ``zoo run`` calls and :func:`plan_job` what ``--plan`` calls.  Both are
handed a complete :class:`~zoo.jobspec.JobSpec` and a :class:`~zoo.catalog.Catalog`
(:func:`zoo.api.prepare_job` builds them; the engine builds neither).  A run is the list
:data:`STEPS`, each a short function of the :class:`Run` it fills in:

1. prepare — splits, model, transforms (``zoo.engine.prepare``), threads
2. plan    — the strategy's :class:`zoo.plan.StrategyPlan` (``zoo.engine.build``)
3. set up  — loaders, metrics, the :class:`~zoo.engine.runtime.Runtime`, the run folder and
   its :class:`~zoo.engine.run_writer.RunWriter`
4. train   — :func:`zoo.engine.loop.fit`, checkpoints after epochs (``zoo.engine.run_steps``)
5. test    — the best epoch's weights on the test split
6. write   — model, tables, the final summary (before ``on_run_end``), plots

:func:`_guarded` wraps the steps with the guarantees of docs/reliability.md.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import torch

from zoo.engine import allocator
from zoo.engine import checkpoint as ckpt
from zoo.engine import distributed, guard, isolation, threads
from zoo.engine.blame import plugin_error
from zoo.engine.build import build_metrics, make_plan
from zoo.engine.data import check_run_splits, eval_view, make_loader
from zoo.engine.loop_hooks import NO_HOOKS, LoopHooks, loop_hooks
from zoo.engine.phases import data_streams
from zoo.engine.prepare import Prepared, prepare
from zoo.engine.run_steps import progress_bars as _progress  # noqa: F401 (tests use it)
from zoo.engine.run_steps import resume_weights, run_end, set_up_folder, test, train, write
from zoo.engine.run_writer import RunWriter
from zoo.engine.runtime import Runtime, compile_backbone, pick_device
from zoo.errors import ZooError, one_line
from zoo.io import runfolder as rundir
from zoo.plan import PlanContext
from zoo.run_context import RunContext
from zoo.strategy import apply_model_changes

if TYPE_CHECKING:  # annotations only: the engine is given both, never builds them
    from zoo.catalog import Catalog
    from zoo.jobspec import JobSpec

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
        plan = make_plan(catalog, job, prep.built,
                         plan_context(prep, torch.device("cpu"), catalog))
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


def plan_context(prep: Prepared, device, catalog: Catalog) -> PlanContext:
    """What a strategy's plan may read of this run (auto: the splits and the catalog, whose
    strategies are its candidates; joint: the source)."""
    return PlanContext(data=prep.bundle, device=device, catalog=catalog, source=prep.source,
                       target=prep.target)


@dataclass
class Run:
    """One run as it goes through :data:`STEPS`: what each step leaves for the next."""

    job: Any
    catalog: Any
    device: Any
    rec: guard.RunRecord
    quiet: bool = False
    console: Any = None
    resume: str | None = None
    on_plan: Callable | None = None
    lr_find: dict | None = None       # --lr auto's sweep: the summary's "lr_find"
    cpu_start: Any = None
    hooks: LoopHooks = NO_HOOKS       # the loop's fault points (test-only ZOO_FAULT)
    log: Callable = print
    saved: dict | None = None         # on --resume: the checkpoint's info (loader settings)
    prep: Prepared | None = None
    tp: Any = None                    # the thread plan (torch threads, loader workers)
    plan: Any = None
    plan_dict: dict = field(default_factory=dict)
    batch_size: int = 0
    loaders: dict = field(default_factory=dict)
    metrics: Any = None
    other_metrics: Any = None
    runtime: Runtime | None = None
    model: Any = None
    state: Any = None                 # the loop's FitState (a resume's, then the final one)
    writer: Any = None                # the run folder's RunWriter
    ctx: RunContext | None = None
    cache: Any = None                 # the FeatureCache of frozen-backbone phases
    history: list = field(default_factory=list)
    started: float = 0.0
    test_raw: dict = field(default_factory=dict)
    test: dict = field(default_factory=dict)  # the scalar test metrics
    unreadable: list = field(default_factory=list)  # files that failed to decode (lazily)
    result: dict | None = None        # the summary, once the run has one to return

    @property
    def main(self) -> bool:
        return self.rec.main  # rank 0 (or the only process) writes, logs, shows progress

    @property
    def warnings(self) -> list:
        return self.prep.warnings


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
        rec = guard.RunRecord(main=distributed.is_main(), resume=resume)
        return _guarded(Run(job, catalog, device, rec, quiet=quiet, console=console,
                            resume=resume, on_plan=on_plan, lr_find=lr_find,
                            cpu_start=cpu_start, hooks=loop_hooks()))


def _guarded(r: Run) -> dict:
    """:data:`STEPS` with the guarantees of every step (docs/reliability.md): SIGINT,
    SIGTERM and SIGHUP anywhere leave ``status: interrupted`` and the resume hint (exit
    130/143); any failure leaves ``status: failed`` with its error; a plugin's bug is one
    line naming the plugin and component."""
    rec = r.rec
    previous = guard.install_signal_handlers()
    try:
        for stage, step in STEPS:
            rec.stage = stage
            step(r)
            if r.result is not None:
                return r.result
        raise AssertionError("the steps of a run ended without a result")  # pragma: no cover
    except (KeyboardInterrupt, guard.Terminated) as exc:
        raise rec.interrupted(exc, lambda s: run_end(r, s)) from None
    except ZooError as exc:
        rec.failed(str(exc), lambda s: run_end(r, s))
        raise
    except (Exception, SystemExit) as exc:  # SystemExit: sys.exit() in a plugin's code
        err = (isolation.as_plugin_failure(exc, r.catalog, r.job, rec.stage, plugin_error)
               if isinstance(exc, SystemExit) else plugin_error(exc, r.catalog, r.job,
                                                                rec.stage))
        rec.failed(str(err) if err else f"zoo bug: {one_line(exc)}", lambda s: run_end(r, s))
        if err is not None:
            raise err from exc
        raise
    finally:
        if rec.restore_threads:
            torch.set_num_threads(rec.restore_threads)  # an API caller gets its count back
        rec.release()
        guard.restore_signal_handlers(previous)


def _logger(quiet: bool, main: bool, console) -> Callable:
    if quiet or not main:
        return lambda msg, style=None: None
    if console is not None:
        return lambda msg, style=None: console.print(msg, markup=False, highlight=False,
                                                     style=style)
    return lambda msg, style=None: print(msg, file=sys.stderr if style == "yellow"
                                         else sys.stdout)


# -- 1. prepare ---------------------------------------------------------------------------------
def prepare_step(r: Run) -> None:
    """Data splits (loaded once) and the model; on ``--resume`` the run folder's lock and
    checks that the data is the same; the thread plan (set before planning: auto's trials
    train during the plan)."""
    r.catalog.registry.check_requires()
    r.log = log = _logger(r.quiet, r.main, r.console)
    # no reference to r here: a cycle would keep the run's loaders (and their worker
    # processes, which share the run folder's lock) alive after the run until a GC pass
    r.rec.warn = isolation.Warner(log, r.quiet, r.main)  # recorded and printed, even with -q
    # before data and model: the heap must not creep from epoch to epoch
    allocator.fix_mmap_threshold()
    torch.manual_seed(r.job.seed)
    if r.resume:
        r.rec.open_folder(RunWriter(rundir.require_run_dir(r.resume), main=r.main,
                                    resume=True))
        folder = r.rec.writer.dir
        r.saved = ckpt.read_info(folder) if (folder / "checkpoint").is_dir() else None
    check = (lambda classes: ckpt.check_resumable(r.resume, classes)) if r.resume else None
    r.prep = prepare(r.catalog, r.job, check=check)
    r.rec.warn.attach(r.prep.warnings)  # plugin failures end up in summary.json's warnings
    check_run_splits(r.prep.bundle, r.job.data)
    if r.resume:
        ckpt.check_same_data(r.rec.writer.dir, r.prep.bundle)
    for w in r.warnings:
        r.log(w, style="yellow")
    r.tp = _thread_plan(r)
    r.rec.restore_threads = threads.apply(r.tp)


def _thread_plan(r: Run):
    """torch threads + DataLoader workers within the cores zoo may use (docs/benchmarks.md);
    a resume keeps the run's own."""
    workers = r.job.data.num_workers
    saved = (r.saved or {}).get("loader") or {}
    if workers is None and isinstance(saved.get("workers"), int):
        workers = saved["workers"]
    tp = threads.plan_for_run(r.prep.bundle.train, r.device.type, workers, since=r.cpu_start)
    if isinstance(saved.get("torch_threads"), int) and saved["torch_threads"] > 0:
        tp = replace(tp, torch_threads=saved["torch_threads"],
                     reason=tp.reason + "; thread count of the run being resumed")
    return tp


# -- 2. plan ------------------------------------------------------------------------------------
def plan_step(r: Run) -> None:
    """The strategy's plan, given the run's :class:`PlanContext`; its model changes
    (adapters) applied before the device move and a resume's checkpoint."""
    built = r.prep.built
    r.plan = make_plan(r.catalog, r.job, built, plan_context(r.prep, r.device, r.catalog))
    apply_model_changes(r.plan, built.model, built.groups)
    r.plan_dict = r.plan.to_dict(built.groups, built.model, r.job.train.lr,
                                 r.job.train.weight_decay)
    if r.on_plan:
        r.on_plan(r.plan_dict)


# -- 3. set up ----------------------------------------------------------------------------------
def set_up_step(r: Run) -> None:
    """Loaders, metrics, the Runtime and the model on its device; then the run folder."""
    job, bundle = r.job, r.prep.bundle
    if not getattr(r.plan, "augment", True):  # the plan trains on un-augmented images
        bundle.train = eval_view(bundle.train, bundle.val)
    r.batch_size = _batch_size(job.train.batch_size, len(bundle.train), r.warnings)
    r.loaders = _loaders(r)
    r.metrics, r.other_metrics = build_metrics(r.catalog, job, len(r.prep.classes), r.device)
    r.runtime = Runtime.for_job(job, r.device)
    # device, sync_bn, channels_last
    r.model = r.runtime.setup_model(r.prep.built.model, job, r.warnings, r.log)
    if job.train.compile:
        compile_backbone(r.model, bundle.train, r.device, r.warnings, r.log)
    if r.resume:
        r.state = resume_weights(r)
    else:  # under torchrun rank 0 creates the folder and tells the other ranks
        name = rundir.new_run_dir(job.out, job.name, r.prep.built.ref.arch,
                                     job.strategy.name) if r.main else None
        folder = Path(distributed.broadcast_object(str(name) if name else None))
        r.rec.open_folder(RunWriter(folder, main=r.main))
    set_up_folder(r)


def _batch_size(wanted: int, n_train: int, warnings: list) -> int:
    if wanted > n_train:
        warnings.append(f"batch size {wanted} is larger than the {n_train} training "
                        f"images; using {n_train}")
        return n_train
    return wanted


def _loaders(r: Run) -> dict:
    """train/val/test loaders, and the plan's data streams (a UDA plan's supervised loss
    trains on the source: zoo.engine.phases)."""
    bundle, bs, seed, workers = r.prep.bundle, r.batch_size, r.job.seed, r.tp.workers
    notes: list = []
    loaders = {
        "train": make_loader(bundle.train, bs, True, seed, workers, r.device.type, notes),
        "val": make_loader(bundle.val, bs, False, seed, workers, r.device.type)
        if len(bundle.val) else None,
        "test": make_loader(bundle.test, bs, False, seed, workers, r.device.type),
    }
    loaders.update(data_streams(r.prep, r.plan, r.job, bs, workers, r.device.type,
                                make_loader))
    for note in notes:
        r.warnings.append(note)
        r.log(note, style="yellow")
    return loaders


STEPS: list[tuple[str, Callable[[Run], None]]] = [
    ("preparing the data and the model", prepare_step),
    ("planning the strategy", plan_step),
    ("setting up the run", set_up_step),
    ("training", train),
    ("testing", test),
    ("writing the results", write),
]

