"""``zoo weights``: the weight store (``$ZOO_HOME/weights``): list, pull, import, verify,
path, rm.  See docs/weights.md."""
from __future__ import annotations

import click

from zoo.api import (WeightStore, get_catalog, import_weights as import_file, pull_weights as pull,
                     remove_weights as remove_model, weights_path as store_path)
from zoo.cli.output import fail
from zoo.cli.output import console, print_json, table


def register(cli: click.Group) -> None:
    cli.add_command(weights_group)


@click.group("weights")
def weights_group():
    """Pretrained weights in zoo's store ($ZOO_HOME/weights): offline-safe source weights.

    \b
    zoo weights pull resnet18                   download (or ask plugins) once, keep it
    zoo weights import ckpt.pth --model resnet18   a foreign checkpoint → safetensors
    zoo weights list                            what is stored
    zoo weights verify                          re-hash every file against the manifest

    Runs look here before plugins and hubs (`--weights auto|pretrained|TAG`).
    """


def _size(n) -> str:
    if not isinstance(n, (int, float)):
        return ""
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


@weights_group.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def list_cmd(as_json):
    """Stored weights: model, tag, size, sha256, source, date."""
    store = WeightStore()
    rows = store.entries()
    if as_json:
        print_json([dict(e, path=str(store.root / str(e.get("file")))) for e in rows])
        return
    out = console()
    if not rows:
        out.print(f"the weight store is empty ({store.root}) — `zoo weights pull MODEL` or "
                  "`zoo weights import FILE --model MODEL`")
        return
    out.print(table(None, ["model", "tag", "size", "sha256", "source", "created"],
                    [[e["model"], e.get("tag") or "", _size(e.get("size")),
                      (e.get("sha256") or "")[:12], e.get("source"), e.get("created")]
                     for e in rows], caption=f"{len(rows)} stored · {store.root}"))


@weights_group.command("pull")
@click.argument("model")
@click.option("--tag", default=None, help="Weights tag (default: the model's own or default).")
@click.option("--from", "source", type=click.Choice(["auto", "plugin", "hub"]), default="auto",
              show_default=True, help="Where to get them: resolve_weights plugins, the "
              "provider's hub, or plugins then hub.")
@click.option("--force", is_flag=True, help="Fetch again even when already stored.")
@click.option("--json", "as_json", is_flag=True, help="Print the manifest entry as JSON.")
def pull_cmd(model, tag, source, force, as_json):
    """Fetch MODEL's pretrained weights into the store (needs network for hub weights)."""
    result = pull(get_catalog(), model, tag, source=source, force=force)
    if as_json:
        print_json(result)
        return
    verb = "already stored" if result["status"] == "present" else f"stored from {result['source']}"
    console().print(f"{result['key']}: {verb} · {_size(result['size'])} · sha256 "
                    f"{result['sha256'][:12]} · {result['path']}")


@weights_group.command("import")
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--model", "model", required=True, help="The model these weights belong to.")
@click.option("--tag", default=None, help="Store them under this tag (default: none).")
@click.option("--force", is_flag=True, help="Replace weights already stored for MODEL/tag.")
@click.option("--json", "as_json", is_flag=True, help="Print the entry and mapping report.")
def import_cmd(file, model, tag, force, as_json):
    """Map a .safetensors or .pth/.pt checkpoint onto MODEL and store it as safetensors.

    Keys are matched by name, after stripping known prefixes (module., model., backbone.),
    or by order when every shape matches.  .pth files are read with
    torch.load(weights_only=True): a pickle that needs code to load is refused.
    """
    result = import_file(get_catalog(), file, model, tag, force=force)
    if as_json:
        print_json(result)
        return
    out = console()
    rep = result["report"]
    out.print(f"{result['key']}: imported {rep['loaded']} tensors from {file} · sha256 "
              f"{result['sha256'][:12]} · {result['path']}")
    rows = [["missing (kept at init, not stored)", len(rep["missing"]),
             ", ".join(rep["missing"][:3])],
            ["unexpected (ignored)", len(rep["unexpected"]), ", ".join(rep["unexpected"][:3])],
            ["shape mismatches", len(rep["mismatched"]), ", ".join(rep["mismatched"][:3])]]
    out.print(table("key mapping", ["keys", "count", "e.g."], rows))


@weights_group.command("verify")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def verify_cmd(as_json):
    """Re-hash every stored file against the manifest; exit 1 when any fails."""
    store = WeightStore()
    rows = store.verify()
    bad = [r for r in rows if r["status"] != "ok"]
    if as_json:
        print_json({"ok": not bad, "checked": len(rows), "files": rows})
    else:
        out = console()
        if not rows:
            out.print(f"the weight store is empty ({store.root})")
        else:
            out.print(table(None, ["model", "tag", "status", "sha256"],
                            [[r["model"] or r["key"], r.get("tag") or "", r["status"],
                              (r.get("sha256") or "")[:12]] for r in rows],
                            caption=f"{len(rows) - len(bad)}/{len(rows)} ok · {store.root}"))
    if bad:
        first = bad[0]
        fail(f"{len(bad)} of {len(rows)} stored files failed verification (e.g. {first['key']}:"
             f" {first['status']}) — `zoo weights rm MODEL` and pull/import it again", code=1)


@weights_group.command("path")
@click.argument("model")
@click.option("--tag", default=None, help="Weights tag.")
def path_cmd(model, tag):
    """Print the path of MODEL's stored safetensors file."""
    click.echo(str(store_path(get_catalog(), model, tag)))


@weights_group.command("rm")
@click.argument("model")
@click.option("--tag", default=None, help="Weights tag.")
@click.option("--json", "as_json", is_flag=True, help="Print the removed entry as JSON.")
def rm_cmd(model, tag, as_json):
    """Delete MODEL's stored weights (file and manifest entry)."""
    removed = remove_model(get_catalog(), model, tag)
    if as_json:
        print_json(removed)
        return
    console().print(f"removed {removed['model']}" + (f".{removed['tag']}" if removed.get("tag")
                                                     else ""))
