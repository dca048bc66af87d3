"""``zoo lr-find``: the learning-rate range test for a job.

The work is in :mod:`zoo.tools.lr_find` (through :mod:`zoo.api`)."""
from __future__ import annotations

import click

from zoo import api
from zoo.cli.output import console, print_json, progress_log, quiet_option
from zoo.cli.run_cmd import flags_tree, job_options


def register(cli: click.Group) -> None:
    cli.add_command(lr_find_cmd)


@click.command("lr-find")
@click.argument("model", required=False)
@click.option("--strategy", "-s", default=None, help="The strategy whose LR to find.")
@click.option("--start-lr", type=float, default=1e-7, show_default=True)
@click.option("--end-lr", type=float, default=10.0, show_default=True)
@click.option("--steps", type=int, default=100, show_default=True,
              help="Steps of the exponential sweep (it stops early on divergence).")
@click.option("--diverge", type=float, default=4.0, show_default=True,
              help="Stop once the smoothed loss exceeds this multiple of its minimum.")
@job_options
@click.option("--json", "as_json", is_flag=True, help="Print lr_find.json only.")
@quiet_option
def lr_find_cmd(model, strategy, start_lr, end_lr, steps, diverge, as_json, quiet, preset,
                config, registry, sets, **flags):
    """Find a learning rate: loss vs an exponentially growing LR (Smith 2017).

    \b
    zoo lr-find resnet18 --strategy finetune --data ./photos
    zoo lr-find efficientnet_lite0 -s linear-probe --image-size 64 --json

    Trains a throwaway copy with the strategy's first phase (its groups and LR
    multipliers) and suggests the LR at the smoothed-loss minimum / 10; the steepest-
    descent LR is shown too.  Writes OUT/NAME/lr_find.json and lr_find.png.
    """
    cat = api.get_catalog(registry=registry) if registry else api.get_catalog()
    tree = flags_tree(cat, strategy=strategy, **flags)
    out = console(stderr=as_json)
    log = progress_log(out, quiet)

    result = api.lr_find(model, flags=tree, sets=list(sets), config=config, preset=preset,
                         start_lr=start_lr, end_lr=end_lr, steps=steps, diverge=diverge,
                         catalog=cat, log=log)
    if as_json:
        print_json(result)
        return
    steep = result.get("steepest_lr")
    say = progress_log(out, False)  # the result: printed with -q too
    log(f"zoo lr-find · {result['model']} · {result['strategy']} (phase {result['phase']}, "
        f"{result['optimizer']}): {result['steps']} steps from {result['start_lr']:.0e}")
    for note in result["notes"]:
        log(f"note: {note}")
    say(f"suggested lr: {result['suggested_lr']:.3g} (smoothed-loss minimum at "
        f"{result['min_lr']:.3g}, / 10)" + (f"; steepest descent at {steep:.3g}" if steep
                                            else ""))
    say(f"use it: zoo run {result['model']} -s {result['strategy']} --lr "
        f"{result['suggested_lr']:.2g}")
    say(f"lr-find folder: {result['dir']} (lr_find.json"
        + (", lr_find.png)" if result.get("plot") else ")"))
