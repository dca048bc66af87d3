"""``zoo soup``: average fine-tuned runs of one model into one (model soups), see
docs/strategies.md ("Averaging weights")."""
from __future__ import annotations

import click

from zoo.api import soup_runs
from zoo.cli.output import console, print_json, table


def register(cli: click.Group) -> None:
    cli.add_command(soup_cmd)


@click.command("soup")
@click.argument("runs", nargs=-1, required=True, type=click.Path())
@click.option("--method", type=click.Choice(["greedy", "uniform"]), default="greedy",
              show_default=True, help="greedy: add runs best-first while val does not drop; "
              "uniform: average every run.")
@click.option("--out", default=None, type=click.Path(),
              help="Parent folder of the soup's run folder (default: the best run's --out).")
@click.option("--name", default=None, help="The soup's run folder name.")
@click.option("--device", default="cpu", show_default=True, help="cpu | cuda | mps.")
@click.option("-q", "--quiet", is_flag=True, help="Print only the soup's run folder.")
@click.option("--json", "as_json", is_flag=True, help="Print summary.json only.")
def soup_cmd(runs, method, out, name, device, quiet, as_json):
    """Average the weights of fine-tuned RUNS of one model (model soups) into a new run.

    \b
    zoo soup runs/lr1e-3 runs/lr3e-4 runs/lr1e-4              greedy soup
    zoo soup runs/a runs/b --method uniform --name soup-ab      uniform soup

    The runs must share the model, starting weights, classes, head and data splits, with
    adapters merged; anything else is refused, naming the runs and why.  The greedy soup
    sorts the runs by their val metric and adds each one only if the soup's val metric does
    not drop; the soup is evaluated on the test split and written as a normal run folder
    (model.safetensors, summary.json, confusion files, soup.png) that `zoo eval`,
    `zoo predict` and `zoo export` use as any other run.
    """
    out_console = console(stderr=as_json)
    log = None
    if not (quiet or as_json):
        def log(message):
            out_console.print(message, markup=False, highlight=False)
    summary = soup_runs(list(runs), method=method, out=out, name=name, device=device, log=log)
    if as_json:
        print_json(summary)
        return
    if quiet:
        click.echo(summary["run_dir"])
        return
    info = summary["soup"]
    rows = [[r["run_dir"], "-" if r["val"] is None else f"{r['val']:.4f}",
             "yes" if r["in_soup"] else "no"] for r in info["ingredients"]]
    out_console.print(table(f"{info['method']} soup: {info['used']} of {len(rows)} runs",
                            ["run", f"val {info['metric']}", "in soup"], rows))
    test = " ".join(f"{k}={v:.4f}" for k, v in summary["test"].items())
    out_console.print(f"soup val {info['metric']}: "
                      f"{'-' if info['val'] is None else format(info['val'], '.4f')}; "
                      f"test {test}")
    out_console.print(f"run folder: {summary['run_dir']}")
