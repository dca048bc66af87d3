"""Catalog commands: ``zoo list``, ``zoo info``, ``zoo plugins`` and the component listings."""
from __future__ import annotations

from dataclasses import replace

import sys

import click

from zoo.api import get_catalog, hook_names, model_info, natural_key
from zoo.cli.output import console, print_json, table
from zoo.errors import UnknownComponentError, did_you_mean


def register(cli: click.Group) -> None:
    for command in (list_cmd, info_cmd, plugins_cmd, strategies_cmd, heads_cmd, metrics_cmd,
                    datasets_cmd, loggers_cmd):
        cli.add_command(command)


@click.command("list")
@click.argument("pattern", required=False)
@click.option("--pretrained", is_flag=True, help="Only models with pretrained weights (arch.tag).")
@click.option("--provider", "providers", multiple=True, help="Only this provider (repeatable).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@click.option("--limit", type=int, default=None, help="Show at most N rows.")
def list_cmd(pattern, pretrained, providers, as_json, limit):
    """Models of every installed provider, filtered by an fnmatch PATTERN.

    \b
    zoo list 'resnet*'                 bare names; one row per model, every provider
    zoo list 'resnet*' --pretrained    one row per pretrained tag (resnet18.a1_in1k ...)
    zoo list 'timm:vit_*'              one provider
    """
    cat = get_catalog()
    for p in providers:
        cat.get("providers", p)
    refs = cat.list_models(pattern, pretrained, list(providers) or None)
    # one row per (arch, tag) with every provider that has it
    rows: dict[tuple, list[str]] = {}
    for ref in refs:
        rows.setdefault((ref.arch, ref.tag), []).append(ref.provider)

    items = sorted(rows.items(), key=lambda kv: (natural_key(kv[0][0]), kv[0][1] or ""))
    if limit is not None:
        items = items[:limit]
    if as_json:
        print_json([{"name": arch + (f".{tag}" if tag else ""), "arch": arch, "tag": tag,
                     "providers": provs} for (arch, tag), provs in items])
        return
    out = console()
    if not items:
        out.print(f"no models match {pattern!r}" + (" with pretrained weights" if pretrained
                                                    else ""))
        return
    cols = ["model", "tag", "providers"] if pretrained else ["model", "providers"]
    body = [[arch, tag or "", ", ".join(p)] if pretrained else [arch, ", ".join(p)]
            for (arch, tag), p in items]
    if len(body) > 200 or not sys.stdout.isatty():
        # long or piped listings: plain aligned columns (rich tables of 1,400 rows take
        # most of a second to lay out, and plain text greps well)
        widths = [max(len(c), *(len(r[i]) for r in body)) for i, c in enumerate(cols)]
        lines = ["  ".join(c.ljust(w) for c, w in zip(cols, widths)).rstrip()]
        lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip() for r in body]
        sys.stdout.write("\n".join(lines) + f"\n({len(items)} models)\n")
        return
    out.print(table(None, cols, body, caption=f"{len(items)} models"))


@click.command("info")
@click.argument("model")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def info_cmd(model, as_json):
    """Provider(s), parameters, input size, mean/std and pretrained tags of MODEL."""
    info = model_info(model)
    if as_json:
        print_json(info)
        return
    out = console()
    rows = []
    for key in ("name", "provider", "also_in", "feature_dim", "params", "num_source_classes",
                "default_tag", "pretrained_tags", "pretrained_cfg", "acc@1"):
        if key in info:
            value = info[key]
            if isinstance(value, list):
                value = ", ".join(map(str, value)) or "-"
            if isinstance(value, dict):
                value = ", ".join(f"{k}={v}" for k, v in value.items())
            rows.append([key, value])
    for key, value in info.items():
        if key not in {r[0] for r in rows} and key != "arch":
            rows.append([key, value])
    out.print(table(info["name"], ["field", "value"], rows))


@click.command("plugins")
@click.option("--hook", default=None, help="Only plugins implementing this hook.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.option("--requirements", is_flag=True,
              help="Print pip requirement lines of the installed third-party plugins.")
def plugins_cmd(hook, as_json, requirements):
    """Every plugin: built-in or not, version, hooks, components, and failures (in red)."""
    cat = get_catalog()
    records = list(cat.pm.records.values())
    if hook:
        names = hook_names()
        if hook not in names:
            raise UnknownComponentError(f"unknown hook '{hook}'{did_you_mean(hook, names)}")
        records = [r for r in records if hook in r.hooks]
    if requirements:
        for r in records:
            if not r.builtin and r.distribution and r.status == "loaded":
                click.echo(f"{r.distribution}=={r.version}")
        return
    if as_json:
        print_json([r.as_dict() for r in records] + [
            {"name": None, "status": "duplicate", "error": d} for d in cat.duplicates])
        return
    out = console()
    rows = []
    for r in records:
        comps = "; ".join(f"{k}: {', '.join(v)}" for k, v in r.components.items())
        status = "[green]loaded[/green]" if r.status == "loaded" else "[red]failed[/red]"
        rows.append([r.name + (" (built-in)" if r.builtin else ""),
                     f"{r.distribution or '-'} {r.version or ''}".strip(), status,
                     ", ".join(h.replace("register_", "") for h in r.hooks), comps])
    out.print(table("plugins", ["plugin", "distribution", "status", "hooks", "components"],
                    rows))
    for r in records:
        if r.error:
            colour = "red" if r.status == "failed" else "yellow"
            out.print(f"[{colour}]{r.name}: {r.error}[/{colour}]")
    for clash in cat.duplicates:  # a name two plugins register: both kept (zoo.names)
        out.print(f"[yellow]{clash}[/yellow]", markup=True, highlight=False)


def _component_command(kind: str, title: str):
    @click.command(kind, help=f"Installed {title} and the plugin that gave each.")
    @click.option("--json", "as_json", is_flag=True, help="Print JSON.")
    def command(as_json):
        cat = get_catalog()
        comps = [cat.components[kind][n] for n in cat.names(kind)]
        # a name another plugin also registers: listed as PLUGIN:NAME, how a job names it
        comps += [replace(c, name=f"{c.plugin}:{c.name}")
                  for n in cat.names(kind) for c in cat.shadowed[kind].get(n, [])]
        if as_json:
            print_json([{"name": c.name, "plugin": c.plugin, "description": c.description,
                         **({"defaults": getattr(c.obj, "defaults", {})}
                            if kind == "strategies" else {}),
                         **{k: list(v) if isinstance(v, tuple) else v
                            for k, v in c.options.items() if not callable(v)}}
                        for c in comps])
            return
        rows = []
        for c in comps:
            desc = (c.description or "").strip().splitlines()[0] if c.description else ""
            extra = ""
            if kind == "strategies" and getattr(c.obj, "defaults", None):
                extra = ", ".join(f"{k}={v}" for k, v in c.obj.defaults.items())
            if kind == "metrics":
                extra = f"mode={c.options.get('mode', 'max')}" + (
                    "" if c.options.get("scalar", True) else ", file")
            if c.options.get("default"):  # what a job that names none uses
                desc = f"{desc} (default)" if desc else "(default)"
            rows.append([c.name, c.plugin, desc, extra])
        extra_col = {"strategies": "params", "metrics": "notes"}.get(kind, "")
        console().print(table(title, ["name", "plugin", "description", extra_col], rows))

    return command


strategies_cmd = _component_command("strategies", "strategies")
heads_cmd = _component_command("heads", "heads")
metrics_cmd = _component_command("metrics", "metrics")
datasets_cmd = _component_command("datasets", "datasets")
loggers_cmd = _component_command("loggers", "loggers")
