"""``zoo run``: one transfer job from flags, a YAML config, presets and ``--set``."""
from __future__ import annotations

import click
from click.core import ParameterSource

from zoo import api
from zoo.cli import output
from zoo.cli.output import console, print_json, table
from zoo.api import JobSpec, check_out_dir, get_catalog, load_job, load_run_job
from zoo.errors import ZooError


def register(cli: click.Group) -> None:
    cli.add_command(run_cmd)


class _LearningRate(click.ParamType):
    """A positive number, or ``auto`` (``train.lr: auto``: resolved by the LR range test)."""

    name = "LR|auto"

    def convert(self, value, param, ctx):
        if isinstance(value, float) or str(value).strip().lower() == "auto":
            return value if isinstance(value, float) else "auto"
        try:
            return float(value)
        except ValueError:
            self.fail(f"{value!r} is not a number or auto", param, ctx)


LR = _LearningRate()


def job_options(f):
    """Options shared by every command that builds a job (run, compare, rank)."""
    options = [
        click.option("--data", default=None, help="Dataset name (demo, digits, "
                     "torchvision:CIFAR10, csv:FILE, hf:PATH|ORG/NAME, ...) or a folder: an "
                     "ImageFolder, or a layout a dataset claims (a Hugging Face imagefolder "
                     "with metadata.csv; ./X forces a path). See docs/datasets.md."),
        click.option("--data-root", default=None,
                     help="Where downloadable datasets live (default $ZOO_HOME/datasets)."),
        click.option("--weights", default=None,
                     help="auto (default) | pretrained | none | FILE | TAG | "
                     "local-dir:PATH | hf-hub:ORG/NAME (a model folder, docs/weights.md)."),
        click.option("--head", default=None, help="Head name (linear, mlp, ...)."),
        click.option("--epochs", type=int, default=None, help="Training epochs."),
        click.option("--batch-size", type=int, default=None, help="Batch size."),
        click.option("--lr", type=LR, default=None,
                     help="Base learning rate, or auto: the LR range test's suggestion for "
                          "the strategy (zoo lr-find)."),
        click.option("--seed", type=int, default=None, help="Random seed (default 0)."),
        click.option("--device", default=None, help="auto | cpu | cuda | cuda:N | mps."),
        click.option("--image-size", type=int, default=None,
                     help="Input size (default: the backbone's pretrained size)."),
        click.option("--metrics", default=None, help="Comma-separated metric names."),
        click.option("--precision", type=click.Choice(["fp32", "bf16", "fp16"]), default=None,
                     help="Mixed precision (bf16 on CPU/CUDA, fp16 on CUDA)."),
        click.option("--channels-last", is_flag=True, default=None,
                     help="channels_last memory format (faster convs on GPU)."),
        click.option("--compile", "compile_", is_flag=True, default=None,
                     help="torch.compile the model (falls back with a warning)."),
        click.option("--out", default=None, help="Parent folder of run folders (default runs)."),
        click.option("--name", default=None, help="Run folder name."),
        click.option("--preset", default=None, help="A named preset from registry.yaml."),
        click.option("--config", type=click.Path(), default=None, help="A job YAML file."),
        click.option("--registry", type=click.Path(), default=None,
                     help="A registry YAML file extending the built-in one."),
        click.option("--set", "sets", multiple=True, metavar="KEY=VALUE",
                     help="Set any job key by dotted path, e.g. --set train.lr=0.01."),
    ]
    for option in reversed(options):
        f = option(f)
    return f


def flags_tree(cat, *, data=None, data_root=None, weights=None, head=None, epochs=None,
               batch_size=None, lr=None, seed=None, device=None, image_size=None, metrics=None,
               precision=None, channels_last=None, compile_=None, out=None, name=None,
               strategy=None, source_data=None, target_data=None, **_ignored) -> dict:
    """Command-line flags as a job-tree fragment."""
    tree: dict = {}

    def put(path: str, value):
        if value is None:
            return
        node = tree
        *parents, last = path.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[last] = value

    if data is not None:
        for k, v in cat.resolve_dataset_arg(data).items():
            put(f"data.{k}", v)
    if source_data is not None:  # the joint strategy's source task
        for k, v in cat.resolve_dataset_arg(source_data).items():
            put(f"source_data.{k}", v)
    if target_data is not None:  # unlabeled target images of a UDA job (dann, mcc, adabn)
        for k, v in cat.resolve_dataset_arg(target_data, unlabeled=True).items():
            put(f"target_data.{k}", v)
    put("data.root", data_root)
    put("data.image_size", image_size)
    put("weights", weights)
    put("head.name", head)
    put("strategy.name", strategy)
    put("train.epochs", epochs)
    put("train.batch_size", batch_size)
    put("train.lr", lr)
    put("train.precision", precision)
    put("train.channels_last", channels_last)
    put("train.compile", compile_)
    put("seed", seed)
    put("device", device)
    put("out", out)
    put("name", name)
    if metrics is not None:
        put("metrics", [m.strip() for m in metrics.split(",") if m.strip()])
    return tree


@click.command("run")
@click.argument("model", required=False)
@click.option("--strategy", "-s", default=None,
              help="Transfer strategy (finetune, linear-probe, ...; see `zoo strategies`).")
@job_options
@click.option("--source-data", default=None, metavar="DATA",
              help="Source task for --strategy joint: a dataset name or folder "
                   "(job key source_data:).")
@click.option("--target-data", default=None, metavar="DATA",
              help="Unlabeled target images for adabn/dann/mcc: a folder (any layout, labels "
                   "unused) or a dataset name (job key target_data:).")
@click.option("--plan", "plan_only", is_flag=True,
              help="Print the strategy plan (groups, trainable params, LRs) and exit.")
@click.option("--resume", type=click.Path(), default=None,
              help="Continue an interrupted run folder from its last complete epoch.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bars or per-epoch lines.")
@click.option("--json", "as_json", is_flag=True, help="Print summary.json only (or the plan).")
@click.option("--nproc", type=click.IntRange(min=1), default=None, metavar="N",
              help="Train on N local processes (one per GPU; gloo on CPU): re-runs this "
                   "command under torchrun. See docs/distributed.md.")
def run_cmd(model, strategy, plan_only, resume, quiet, as_json, preset, config, registry, sets,
            nproc, **flags):
    """Transfer MODEL to a dataset with a strategy; write a run folder.

    \b
    zoo run resnet18 --strategy finetune                 demo data, 5 epochs
    zoo run efficientnet_lite0 -s linear-probe --data ./photos
    zoo run timm:resnet18 -s finetune --set train.lr=3e-4 --epochs 10
    zoo run resnet18 -s finetune --plan                  show the plan, train nothing
    zoo run resnet18 -s finetune --nproc 2               2 processes (DDP via torchrun)

    The run folder (runs/NAME/) holds job.yaml, metrics.jsonl, splits.json,
    model.safetensors, summary.json, curves.png and confusion.png.
    """
    cat = get_catalog(registry=registry) if registry else get_catalog()
    if resume:
        job = _resume_job(resume, as_json, [("MODEL", model), ("--strategy", strategy),
                                            ("--preset", preset), ("--config", config),
                                            ("--set", sets)], flags)
        if job is None:  # already complete: nothing to do
            return
    else:
        if not model and not config and not preset and not any(s.startswith("model=")
                                                                for s in sets):
            raise click.UsageError("missing MODEL (e.g. `zoo run resnet18 --strategy "
                                   "finetune`; `zoo list` shows models)")
        tree = flags_tree(cat, strategy=strategy, **flags)
        job = load_job(model, config=config, preset=preset, flags=tree, sets=list(sets),
                       registry=cat.registry, catalog=cat)
    assert isinstance(job, JobSpec)
    if not plan_only and not resume:
        check_out_dir(job.out)  # a file or a read-only place: one line before any work

    if nproc and nproc > 1 and not plan_only:  # the job is valid: start the ranks
        if api.is_rank_process():
            raise click.UsageError("--nproc: this process is already one rank of a torchrun "
                                   "job (WORLD_SIZE is set); drop --nproc")
        code = api.launch_ranks(nproc, _relaunch_args(click.get_current_context()))
        if code:
            raise ZooError(f"distributed run failed: torchrun exited with status {code}; the "
                           "first failing rank's error is above")
        return
    if api.is_rank_process() and api.rank_of_process() != 0:
        if not plan_only:
            api.run(job, catalog=cat, quiet=True, resume=resume)  # rank 0 reports
        return
    out = console(stderr=as_json)
    if plan_only:
        plan = api.plan(job, catalog=cat)
        if as_json:
            print_json(plan)
        else:
            print_plan(out, plan)
        return
    if not quiet and not as_json:
        out.print(f"[bold]zoo run[/bold] {job.model} · strategy {job.strategy.name} · "
                  f"data {job.data.path or job.data.name} · {job.train.epochs} epochs")
    summary = api.run(job, catalog=cat, quiet=quiet or as_json, console=out, resume=resume,
                      on_plan=None if quiet or as_json else lambda p: print_notes(out, p))
    if as_json:
        print_json(summary)
        return
    if not quiet:
        rows = [[k, f"{v:.4f}"] for k, v in summary["test"].items()]
        out.print(table(f"test metrics (best epoch {summary['best_epoch']})",
                        ["metric", "value"], rows))
    out.print(f"run folder: {summary['run_dir']}")


def _resume_job(resume: str, as_json: bool, named: list, flags: dict) -> JobSpec | None:
    """``--resume RUN``: the run's own job; None when the run is already complete (said,
    exit 0: a preempted job's requeue script resumes blindly, and complete is success)."""
    given = [name for name, value in named if value]
    given += ["--" + k.replace("_", "-").rstrip("-") for k, v in flags.items() if v is not None]
    if given:
        raise click.UsageError(f"--resume continues a run with its own job.yaml; drop "
                               f"{', '.join(given)} (start a new run to change the job)")
    job = load_run_job(resume)
    done = api.read_run_summary(resume)
    if done is not None and done.get("status") == "completed":
        if as_json:
            print_json(done)
        else:
            click.echo(f"{resume}: the run is complete — nothing to resume "
                       f"(`zoo eval {resume}` re-evaluates it)")
        return None
    return job


def _relaunch_args(ctx: click.Context) -> list[str]:
    """This ``zoo run`` command line, rebuilt from its parsed parameters, minus ``--nproc``."""
    args = (["--debug"] if output.DEBUG else []) + [ctx.info_name or "run"]
    for param in ctx.command.params:
        value = ctx.params.get(param.name)
        source = ctx.get_parameter_source(param.name)
        if param.name == "nproc" or source in (None, ParameterSource.DEFAULT) or value is None:
            continue
        if isinstance(param, click.Argument):
            args.append(str(value))
        elif getattr(param, "is_flag", False):
            if value:
                args.append(max(param.opts, key=len))
        else:
            for item in (value if param.multiple else [value]):
                args += [max(param.opts, key=len), str(item)]
    return args


def print_notes(out, plan: dict) -> None:
    """The plan's notes as ``zoo run`` starts training: automatic choices
    (``backbone_lr_mult auto → 0.1``) and, for ``auto``, its choice and trial table."""
    for note in plan.get("notes", []):
        out.print(note, markup=False, highlight=False, soft_wrap=True)  # tables: no wrap


def print_plan(out, plan: dict) -> None:
    out.print(f"[bold]plan[/bold] {plan['strategy']} for {plan.get('model', '')}: "
              f"{plan['epochs']} epochs, {len(plan['phases'])} phase(s); weights "
              f"{plan.get('weights', {}).get('source', '?')}")
    for phase in plan["phases"]:
        rows = [[g["name"], f"{g['params']:,}", "yes" if g["trainable"] else "frozen",
                 f"{g['lr']:.3g}" if g["trainable"] else "-"] for g in phase["groups"]]
        # parameter-level selections (bitfit's biases, LoRA's adapters) as rows of their own
        rows += [[f"select: {s['name']}", f"{s.get('trainable_params', 0):,}", "yes",
                  f"{s['lr']:.3g}"] for s in phase.get("selections", [])]
        terms = ", ".join(phase["loss_terms"]) or "none"
        extra = "".join([f", steps {phase['steps']}" if phase.get("steps") == "none" else "",
                         f", streams: {', '.join(phase['streams'])}"
                         if phase.get("streams") else ""])
        pct = phase.get("trainable_percent")
        out.print(table(f"phase '{phase['name']}': {phase['epochs']} epochs, BN {phase['bn']}, "
                        f"base lr {phase['base_lr']:.3g}, loss terms: {terms}{extra}",
                        ["layer group", "params", "trainable", "lr"], rows,
                        caption=f"trainable params: {phase['trainable_params']:,}"
                        + (f" ({pct:.2f}% of all)" if pct is not None else "")))
    for change in plan.get("model_changes", []):
        desc = ", ".join(f"{k}={v}" for k, v in change.items() if k not in ("name", "notes"))
        out.print(f"model change {change.get('name')}: {desc}")
    for note in plan.get("notes", []):
        out.print(note)
    if plan.get("threads"):
        t = plan["threads"]
        out.print(f"threads: {t['torch_threads']} torch thread(s), {t['workers']} DataLoader "
                  f"worker(s) of {t['cores']} usable core(s) — {t['reason']}")
