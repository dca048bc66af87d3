"""``zoo compare``: several strategies × seeds on identical data, one leaderboard."""
from __future__ import annotations

import click

from zoo.api import compare, get_catalog
from zoo.cli import sweep_cli
from zoo.cli.output import console, print_json, progress_log, quiet_option, table
from zoo.cli.run_cmd import flags_tree, job_options


def register(cli: click.Group) -> None:
    cli.add_command(compare_cmd)


@click.command("compare")
@click.argument("model", required=False)
@click.option("--strategies", "-S", default=None, metavar="A,B,C",
              help="Comma-separated strategies to compare (see `zoo strategies`).")
@click.option("--seeds", type=int, default=1, show_default=True,
              help="Runs per strategy (seeds SEED, SEED+1, ...); mean ± std over them.")
@click.option("--source-data", default=None, metavar="DATA",
              help="Source task for the joint strategy (a dataset name or folder).")
@click.option("--target-data", default=None, metavar="DATA",
              help="Unlabeled target images for adabn/dann/mcc (a folder or dataset name).")
@click.option("--soup", is_flag=True, help="Add a greedy soup of each seed's runs to the "
              "leaderboard (strategy 'soup', see `zoo soup`).")
@click.option("--emit", "emit_dir", default=None, metavar="DIR",
              help="Train nothing: write one job file per (strategy, seed) into DIR, plus "
                   "launchers (run_local.sh, slurm.sbatch, submit_submitit.py).")
@click.option("--collect", "collect_dir", default=None, metavar="DIR",
              help="Build compare.json/csv/png from the run folders of an --emit DIR, "
                   "naming missing and failed jobs (no MODEL or --strategies needed).")
@click.option("--gpus-per-job", type=click.IntRange(min=1), default=1, show_default=True,
              help="With --emit: GPUs per job (over 1: each job runs under torchrun).")
@job_options
@click.option("--json", "as_json", is_flag=True, help="Print compare.json only.")
@quiet_option
def compare_cmd(model, strategies, seeds, soup, as_json, quiet, preset, config, registry, sets,
                emit_dir, collect_dir, gpus_per_job, **flags):
    """Compare transfer strategies for MODEL on the same data and splits.

    \b
    zoo compare resnet18 --strategies linear-probe,finetune,lp-ft --seeds 3
    zoo compare timm:test_resnet -S finetune,auto --epochs 3 --out runs --name cmp
    zoo compare resnet18 -S lp-ft,partial --set partial:strategy.params.k=2

    Every strategy runs with every seed into OUT/NAME/<strategy>-seed<seed>/; a failing
    strategy is recorded with its error and the rest still run.  The folder gets
    compare.json (every run + leaderboard), compare.csv (leaderboard) and compare.png
    (bars with ±1 std error bars, val curves).  `--set NAME:KEY=VALUE` sets a key for
    one strategy only.

    \b
    On a cluster (each job a normal `zoo run`; docs/cli.md):
    zoo compare resnet18 -S linear-probe,finetune --seeds 3 --emit sweep/
    sbatch sweep/slurm.sbatch        (or: sweep/run_local.sh -j 2)
    zoo compare --collect sweep/
    """
    if collect_dir:
        return sweep_cli.collect_cmd(collect_dir, as_json, quiet, print_leaderboard)
    if not model or not strategies:
        raise click.UsageError("missing " + ("MODEL" if not model else "--strategies A,B,C")
                               + " (or --collect DIR to gather an emitted comparison)")
    cat = get_catalog(registry=registry) if registry else get_catalog()
    tree = flags_tree(cat, **flags)
    names = [s.strip() for s in strategies.split(",") if s.strip()]
    out = console(stderr=as_json)
    if not as_json and not quiet and not emit_dir:
        out.print(f"[bold]zoo compare[/bold] {model} · {', '.join(names)} · {seeds} seed(s)")
    log = progress_log(out, quiet)

    if emit_dir:
        return sweep_cli.emit_cmd(model, names, emit_dir, seeds=seeds, flags=tree,
                                  sets=list(sets), config=config, preset=preset, catalog=cat,
                                  gpus_per_job=gpus_per_job, as_json=as_json, quiet=quiet)

    result = compare(model, names, seeds=seeds, flags=tree, sets=list(sets), config=config,
                     preset=preset, catalog=cat, log=log, soup=soup)
    if as_json:
        print_json(result)
        return
    print_leaderboard(out, result)


def print_leaderboard(out, result: dict) -> None:
    metric = result["rank_metric"]["metric"]
    others = sorted({k for e in result["leaderboard"] for k in e["metrics"]} - {metric})
    shown = [metric] + [k for k in others if k != "loss"][:2]
    rows = []
    for e in result["leaderboard"]:
        cells = [e.get("rank") or "-", e["strategy"], f"{e['runs']}"
                 + (f" ({e['failed']} failed)" if e["failed"] else "")]
        for k in shown:
            m = e["metrics"].get(k)
            cells.append(f"{m['mean']:.4f} ± {m['std']:.4f}" if m else "-")
        wall, cpu = e["wall_seconds"], e["cpu_seconds"]
        cells.append(f"{wall['mean']:.1f} ± {wall['std']:.1f}" if e["runs"] else "-")
        cells.append(f"{cpu['mean']:.1f}" if e["runs"] and cpu["mean"] == cpu["mean"]
                     else "-")  # NaN: collected runs record no CPU time
        cells.append(f"{e['trainable_params']:,}" if e["trainable_params"] else "-")
        note = ""
        if e.get("chosen"):
            note = "chose " + ", ".join(f"{k}×{v}" for k, v in e["chosen"].items())
        if e["error"]:
            note = (note + "; " if note else "") + e["error"][:80]
        cells.append(note)
        rows.append(cells)
    out.print(table(f"compare: {result['model']} on {result['data']}, "
                    f"{result['epochs']} epochs, seeds {result['seeds']}",
                    ["#", "strategy", "runs", *[f"test {k}" for k in shown], "wall s",
                     "cpu s", "trainable", "notes"], rows))
    out.print(result["verdict"])
    out.print(f"comparison folder: {result['dir']} (compare.json, compare.csv, compare.png)")
