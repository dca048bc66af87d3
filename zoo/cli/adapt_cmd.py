"""``zoo adapt``: test-time adaptation of a finished run to unlabeled target images (TENT,
AdaBN), see docs/domain.md."""
from __future__ import annotations

import click

from zoo.api import adapt_run, data_params
from zoo.cli.output import console, print_json, table


def register(cli: click.Group) -> None:
    cli.add_command(adapt_cmd)


@click.command("adapt")
@click.argument("run_dir", type=click.Path())
@click.option("--target-data", required=True, metavar="DATA",
              help="Unlabeled target images: a folder (any layout) or a dataset name (its "
              "train split, labels unused).")
@click.option("--target-param", "target_params", multiple=True, metavar="KEY=VALUE",
              help="data.params of the target (repeatable), e.g. transform=noise.")
@click.option("--data", default=None, metavar="DATA",
              help="Labelled target data with the run's classes: its test split reports "
              "(default: the run's own test split).")
@click.option("--data-param", "data_param", multiple=True, metavar="KEY=VALUE",
              help="data.params of --data (repeatable).")
@click.option("--method", type=click.Choice(["tent", "adabn"]), default="tent",
              show_default=True, help="tent: entropy minimisation on the norm layers' scale "
              "and shift; adabn: BatchNorm statistics re-estimated only.")
@click.option("--steps", type=int, default=10, show_default=True,
              help="TENT updates (one target batch each); keep it small — TENT degrades "
              "when run long.")
@click.option("--lr", type=float, default=1e-3, show_default=True, help="TENT's Adam LR.")
@click.option("--batch-size", type=int, default=None,
              help="Target batch size (default: the run's).")
@click.option("--episodic", is_flag=True, help="Also predict --data's test split the "
              "episodic way: each batch adapted afresh from the source weights.")
@click.option("--out", default=None, type=click.Path(),
              help="Parent folder of the adapted run (default: the run's --out).")
@click.option("--name", default=None, help="The adapted run's folder name.")
@click.option("--device", default="cpu", show_default=True, help="cpu | cuda | mps.")
@click.option("-q", "--quiet", is_flag=True, help="Print only the adapted run folder.")
@click.option("--json", "as_json", is_flag=True, help="Print summary.json only.")
def adapt_cmd(run_dir, target_data, target_params, data, data_param, method, steps, lr,
              batch_size, episodic, out, name, device, quiet, as_json):
    """Adapt RUN_DIR's model to unlabeled target images at test time (TENT or AdaBN).

    \b
    zoo adapt runs/digits --target-data shift:digits --target-param transform=noise \\
        --data shift:digits --data-param transform=noise          TENT, 10 steps
    zoo adapt runs/photos --target-data ./new_camera --method adabn

    Writes a new run folder (model.safetensors, summary.json with the test metrics before
    and after, adapt.png) that zoo eval/predict/export use as any run.
    """
    out_console = console(stderr=as_json)
    log = None
    if not (quiet or as_json):
        def log(message):
            out_console.print(message, markup=False, highlight=False)
    summary = adapt_run(run_dir, target_data, target_params=data_params(target_params),
                        data=data, data_params=data_params(data_param), method=method,
                        steps=steps, lr=lr, batch_size=batch_size, episodic=episodic,
                        out=out, name=name, device=device, log=log)
    if as_json:
        print_json(summary)
    elif quiet:
        click.echo(summary["run_dir"])
    else:
        record = summary["adapt"]
        saved = ("target BN statistics" if record.get("episodic") or record["method"] == "adabn"
                 else "after tent")
        cols = ["metric", "source model", saved] + (
            ["episodic tent"] if "online" in record else [])
        rows = [[k, f"{record['before'].get(k, float('nan')):.4f}", f"{v:.4f}"]
                + ([f"{record['online'].get(k, float('nan')):.4f}"] if "online" in record
                   else []) for k, v in summary["test"].items()]
        where = "the labelled target's" if record["labelled_target"] else "the run's own"
        out_console.print(table(f"{where} test split", cols, rows))
        out_console.print(f"adapted run folder: {summary['run_dir']}")
