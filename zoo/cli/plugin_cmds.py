"""Plugin-authoring commands: ``zoo new-plugin``."""
from __future__ import annotations

import click

from zoo.kit.scaffold import HOOKS, KINDS, new_plugin, plugin_names


def register(cli: click.Group) -> None:
    cli.add_command(new_plugin_cmd)


@click.command("new-plugin")
@click.argument("name")
@click.option("--kind", required=True,
              type=click.Choice(list(KINDS)),
              help="What the plugin registers.")
@click.option("--dir", "directory", default=".", show_default=True, type=click.Path(),
              help="Where to create the zoo-NAME/ folder.")
def new_plugin_cmd(name, kind, directory):
    """Write an installable plugin package zoo-NAME/ for one component of KIND.

    \b
    zoo new-plugin cosine --kind head        → zoo-cosine/ registering head "cosine"
    cd zoo-cosine && pip install -e . && python -m pytest tests
    zoo run resnet18 --head cosine

    The package has a pyproject.toml (entry point in group "zoo"), the hook implementation,
    a README and tests using zoo.testing.  See docs/plugins.md.
    """
    root, files = new_plugin(name, kind, directory)
    names = plugin_names(name)
    click.echo(f"created {root}/ ({kind} '{names.component}', plugin '{names.entry_point}'):")
    for path in files:
        click.echo(f"  {path.relative_to(root)}")
    click.echo("next:")
    click.echo(f"  cd {root} && pip install -e .")
    click.echo(f"  zoo plugins --hook {HOOKS[kind]}")
    click.echo("  python -m pytest tests -q")
