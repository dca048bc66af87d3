"""``zoo shift``: the domain gap between two datasets as a backbone sees it.

The work is in :mod:`zoo.tools.shift` (through :mod:`zoo.api`)."""
from __future__ import annotations

import click

from zoo import api
from zoo.cli.output import console, print_json, progress_log, quiet_option
from zoo.cli.run_cmd import flags_tree, job_options


def register(cli: click.Group) -> None:
    cli.add_command(shift_cmd)


@click.command("shift")
@click.option("--model", "-m", required=True, help="The backbone that embeds both domains.")
@click.option("--source", required=True, metavar="DATA",
              help="Source dataset (a name or folder), e.g. digits.")
@click.option("--target", required=True, metavar="DATA",
              help="Target dataset (a name or folder), e.g. shift:digits.")
@click.option("--source-param", "source_params", multiple=True, metavar="KEY=VALUE",
              help="data.params of the source (repeatable).")
@click.option("--target-param", "target_params", multiple=True, metavar="KEY=VALUE",
              help="data.params of the target (repeatable), e.g. transform=noise.")
@click.option("--split", type=click.Choice(["train", "val", "test"]), default="train",
              show_default=True, help="Which split of each dataset to embed.")
@click.option("--max-images", type=int, default=400, show_default=True,
              help="At most this many images per domain (a seeded random choice).")
@click.option("--no-layers", is_flag=True, help="Score the pooled features only.")
@job_options
@click.option("--json", "as_json", is_flag=True, help="Print shift.json only.")
@quiet_option
def shift_cmd(model, source, target, source_params, target_params, split, max_images,
              no_layers, as_json, quiet, preset, config, registry, sets, **flags):
    """Measure how far the target data is from the source, in the backbone's features.

    \b
    zoo shift -m efficientnet_lite0 --source digits --target shift:digits \\
        --target-param transform=noise --target-param severity=4 --image-size 64

    Reports the proxy A-distance (a cross-validated domain classifier: 0 same, 2
    separable) and MMD² on the pooled features and per layer group, a plain-language
    verdict, and writes OUT/NAME/shift.json and shift.png (PCA of both domains).
    """
    cat = api.get_catalog(registry=registry) if registry else api.get_catalog()
    flags.pop("data", None)  # --source/--target name the data
    tree = flags_tree(cat, **flags)
    out = console(stderr=as_json)
    src = api.shift_domain(cat, source, source_params)
    tgt = api.shift_domain(cat, target, target_params)

    log = progress_log(out, quiet)

    result = api.measure_shift(model, source=src, target=tgt, flags=tree, sets=list(sets),
                               config=config, preset=preset, split=split,
                               max_images=max_images, layers=not no_layers, catalog=cat,
                               log=log)
    if as_json:
        print_json(result)
        return
    print_shift(out, result)


def print_shift(out, result: dict) -> None:
    from rich import box  # lazy: rich
    from rich.table import Table  # lazy: rich

    t = Table(title=f"zoo shift · {result['model']} ({result['weights']}): "
                    f"{result['source']} → {result['target']}, {result['n_source']} + "
                    f"{result['n_target']} {result['split']} images",
              caption="pad: proxy A-distance (0 same … 2 separable); mmd2: RBF, median "
                      "bandwidth", header_style="bold", box=box.SIMPLE_HEAD)
    for col in ("features", "dim", "pad", "domain acc", "mmd2"):
        t.add_column(col, justify="left" if col == "features" else "right")
    p = result["pooled"]
    t.add_row("pooled", str(result["feature_dim"]), f"{p['pad']:.3f}",
              f"{p['domain_accuracy']:.3f}", f"{p['mmd2']:.4f}")
    for row in result["layers"]:
        t.add_row(f"group {row['group']}", str(row["dim"]), f"{row['pad']:.3f}",
                  f"{row['domain_accuracy']:.3f}", f"{row['mmd2']:.4f}")
    out.print(t)
    for w in result.get("warnings") or []:
        out.print(f"warning: {w}", markup=False, highlight=False)
    out.print(result["verdict"], markup=False, highlight=False)
    out.print(f"shift folder: {result['dir']} (shift.json"
              + (", shift.png)" if result.get("plot") else ")"), markup=False)
