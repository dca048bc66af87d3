"""``zoo data``: dataset utilities — ``zoo data shard SRC OUT`` (zoo.tools.shard)."""
from __future__ import annotations

import click

from zoo import api
from zoo.cli.output import console, print_json


def register(cli: click.Group) -> None:
    cli.add_command(data_group)


@click.group("data")
def data_group():
    """Dataset utilities (streaming shards)."""


@data_group.command("shard")
@click.argument("source", metavar="SRC")
@click.argument("out", metavar="OUT")
@click.option("--shard-size", type=int, default=10_000, show_default=True,
              help="Samples per tar shard.")
@click.option("--seed", type=int, default=0, show_default=True,
              help="The seed that splits SRC (as `zoo run --seed`).")
@click.option("--val-split", type=float, default=0.1, show_default=True,
              help="Fraction of SRC for the val shards (as data.val_split).")
@click.option("--test-split", type=float, default=0.2, show_default=True,
              help="Fraction of SRC for the test shards (as data.test_split).")
@click.option("--max-per-class", type=int, default=None,
              help="Few-shot: at most N training images per class.")
@click.option("--param", "params", multiple=True, metavar="KEY=VALUE",
              help="data.params of SRC (repeatable), e.g. per_class=20 for demo.")
@click.option("--quiet", "-q", is_flag=True, help="Print nothing.")
@click.option("--json", "as_json", is_flag=True, help="Print the manifest as JSON only.")
def shard_cmd(source, out, shard_size, seed, val_split, test_split, max_per_class, params,
              quiet, as_json):
    """Write any dataset zoo reads (a folder, demo, torchvision:NAME, ...) as WebDataset
    tar shards in OUT, split as `zoo run` splits it; stream them with
    `zoo run MODEL --data OUT --set data.name=webdataset`.

    \b
    zoo data shard ./photos shards/ --shard-size 5000
    zoo data shard demo shards/ --param per_class=20
    """
    cat = api.get_catalog()
    parsed = api.shift_domain(cat, "demo", params)["params"]  # KEY=VALUE → typed values
    out_console = console(stderr=True)

    def log(message):
        if not quiet and not as_json:
            out_console.print(message, markup=False, highlight=False)

    manifest = api.write_shards(source, out, shard_size=shard_size, seed=seed, params=parsed,
                                val_split=val_split, test_split=test_split,
                                max_per_class=max_per_class, catalog=cat, log=log)
    if as_json:
        print_json(manifest)
    elif not quiet:
        counts = ", ".join(f"{s} {v['count']}" for s, v in manifest["splits"].items())
        console().print(f"wrote {sum(len(v['shards']) for v in manifest['splits'].values())} "
                        f"shard(s) to {manifest['dir']} ({counts}); stream them with "
                        f"--data {manifest['dir']} --set data.name=webdataset",
                        markup=False, highlight=False)
