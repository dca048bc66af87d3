"""``zoo rank`` (which backbone transfers best, before training) and ``zoo explain`` (what a
trained model looks at).  The work is in :mod:`zoo.tools.rank` and :mod:`zoo.tools.explain`."""
from __future__ import annotations

import click

from zoo import api as ex
from zoo.api import RANK_METRICS as METRICS, get_catalog, rank_models as rank, ranked
from zoo.cli.output import console, print_json, progress_log, quiet_option, table
from zoo.cli.run_cmd import flags_tree, job_options


def register(cli: click.Group) -> None:
    cli.add_command(rank_cmd)
    cli.add_command(explain_cmd)


def _fmt(v, digits: int = 4) -> str:
    return "-" if v is None else f"{v:.{digits}f}"


@click.command("rank")
@click.option("--models", "-m", required=True, metavar="A,B,C",
              help="Candidate backbones; MODEL@WEIGHTS gives one its own weights "
                   "(e.g. efficientnet_lite0,efficientnet_lite0@none).")
@click.option("--metric", type=click.Choice(["logme", "leep", "nce", "knn", "probe"]),
              default="logme", show_default=True, help="The score that ranks.")
@click.option("--validate", type=int, default=0, show_default=True, metavar="N",
              help="Train the top N for real and plot score vs the accuracy reached.")
@click.option("--validate-strategy", default="linear-probe", show_default=True,
              help="Strategy of the --validate runs.")
@click.option("--knn-k", type=int, default=5, show_default=True,
              help="Neighbours of the k-NN sanity column.")
@job_options
@click.option("--json", "as_json", is_flag=True, help="Print rank.json only.")
@quiet_option
def rank_cmd(models, metric, validate, validate_strategy, knn_k, as_json, quiet, preset, config,
             registry, sets, **flags):
    """Rank backbones by how well they should transfer to the data, without training.

    \b
    zoo rank --models efficientnet_lite0,resnet18,mobilenetv3_small_100 --data ./photos
    zoo rank -m efficientnet_lite0,efficientnet_lite0@none --data ./photos --image-size 96
    zoo rank -m resnet18,efficientnet_lite0 --metric leep --validate 2 --epochs 3

    Each backbone (with the weights --weights gives it) embeds the training split once;
    the features are scored by LogME (default), LEEP and NCE (through the source
    classifier, where the backbone has one) and the held-out accuracy of a k-NN and a
    ridge probe.  A model whose weights are missing is listed with the reason.  The folder
    OUT/NAME gets rank.json, rank.csv and, with --validate, rank.png (score vs accuracy).
    """
    cat = get_catalog(registry=registry) if registry else get_catalog()
    tree = flags_tree(cat, **flags)
    out = console(stderr=as_json)
    if not as_json and not quiet:
        out.print(f"[bold]zoo rank[/bold] {models} · metric {metric} · data "
                  f"{flags.get('data') or 'job default'}")
    log = progress_log(out, quiet)

    result = rank(models, metric=metric, flags=tree, sets=list(sets), config=config,
                  preset=preset, validate=validate, validate_strategy=validate_strategy,
                  knn_k=knn_k, catalog=cat, log=log)
    if as_json:
        print_json(result)
        return
    print_ranking(out, result)


def print_ranking(out, result: dict) -> None:
    metric = result["metric"]
    validated = any((r.get("validation") or {}).get("accuracy") is not None
                    for r in result["models"])
    columns = ["#", "model", "weights", "dim", "s",
               *[m + ("*" if m == metric else "") for m in METRICS]]
    if validated:
        columns.append("val acc")
    rows, notes = [], []
    for r in ranked(result["models"]):
        cells = [r["rank"] or "-", r["candidate"], r["weights"] or "-",
                 r["feature_dim"] or "-", f"{r['seconds']:.1f}",
                 *[_fmt(r[m], 3) for m in METRICS]]
        if validated:
            v = r.get("validation") or {}
            cells.append(_fmt(v.get("accuracy"), 3) if "error" not in v else "failed")
        rows.append(cells)
        if r["error"]:
            notes.append(f"{r['candidate']}: FAILED — {r['error']}")
        for n in r["notes"]:
            notes.append(f"{r['candidate']}: {n}")
        if (r.get("validation") or {}).get("error"):
            notes.append(f"{r['candidate']}: validation failed — {r['validation']['error']}")
    held = result.get("heldout") or "-"
    from rich import box  # lazy: rich
    from rich.table import Table  # lazy: rich

    t = Table(title=f"zoo rank on {result['data']}: {result.get('n_train')} train images, "
                    f"{result.get('num_classes')} classes (by {metric}*, higher is better)",
              caption=f"knn/probe: accuracy on the {held}; leep/nce: through the source "
                      "classifier", header_style="bold", box=box.SIMPLE_HEAD,
              pad_edge=False, collapse_padding=True)
    for col in columns:  # numbers never wrap; names fold when the terminal is narrow
        numeric = col not in ("model", "weights")
        t.add_column(col, no_wrap=numeric, overflow="fold", justify="right" if numeric
                     else "left", min_width=10 if col == "model" else None)
    for row in rows:
        t.add_row(*[str(v) for v in row])
    out.print(t)
    for note in notes:
        out.print(note, markup=False, highlight=False)
    v = result.get("validation")
    if v and v.get("kendall_tau") is not None:
        out.print(f"validation ({v['strategy']}): Kendall τ between {metric} and accuracy "
                  f"= {v['kendall_tau']:.2f} over {v['validated']} models")
    out.print(f"rank folder: {result['dir']} (rank.json, rank.csv"
              + (", rank.png)" if v and v.get("plot") else ")"))


@click.command("explain")
@click.argument("run_dir", type=click.Path())
@click.argument("images", nargs=-1, type=click.Path())
@click.option("--method", type=click.Choice(["gradcam", "integrated-gradients", "occlusion"]),
              default="gradcam", show_default=True, help="Attribution method (captum).")
@click.option("--target", default=None, metavar="CLASS",
              help="Explain this class (name or index) instead of the predicted one.")
@click.option("--top-losses", type=int, default=None, metavar="N",
              help="Explain the N test images with the highest loss, in one PNG.")
@click.option("--out", default=None, help="Output folder (default RUN_DIR/explain).")
@click.option("--device", default="cpu", show_default=True, help="cpu | cuda | cuda:N | mps.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON only.")
@quiet_option
def explain_cmd(run_dir, images, method, target, top_losses, out, device, as_json, quiet):
    """Attribution maps of a finished run's model: what it looks at.

    \b
    zoo explain runs/my-run cat.jpg dog.jpg                 Grad-CAM, predicted class
    zoo explain runs/my-run cat.jpg --method occlusion --target dog
    zoo explain runs/my-run --top-losses 16                 the test images it gets most wrong

    Grad-CAM uses the last spatial layer group of the backbone; on a model without spatial
    feature maps (a ViT's tokens) use integrated-gradients or occlusion.  Writes one PNG
    per image (image | overlay), grid-METHOD.png and explain.json, or
    top_losses-METHOD.png and top_losses.json.
    """
    if top_losses is None and not images:
        raise click.UsageError("give IMAGE files to explain, or --top-losses N")
    if top_losses is not None and images:
        raise click.UsageError("give either IMAGE files or --top-losses N, not both")
    if top_losses is not None:
        result = ex.top_losses(run_dir, top_losses, method=method, target=target, out=out,
                               device=device)
    else:
        result = ex.explain(run_dir, list(images), method=method, target=target, out=out,
                            device=device)
    result.pop("explanations", None)
    if as_json:
        print_json(result)
        return
    con = console()
    if quiet:  # the result alone: where the maps are
        con.print(f"maps: {result['dir']}")
        return
    rows = []
    for r in result["images"]:
        row = [r["image"], f"{r['predicted_class']} ({r['probability']:.2f})",
               f"{r['target_class']} ({r['target_probability']:.2f})"]
        if top_losses is not None:
            row += [r["label_class"], f"{r['loss']:.3f}"]
        rows.append(row)
    cols = ["image", "predicted", "explained class"]
    if top_losses is not None:
        cols += ["actual", "loss"]
    layer = result.get("layer")
    con.print(table(f"zoo explain · {method}", cols, rows,
                    caption=(f"Grad-CAM layer: group '{layer['group']}' ({layer['module']})"
                             if layer else "")))
    picture = result.get("plot") or result.get("grid")
    con.print(f"maps: {result['dir']}" + (f" (grid: {picture})" if picture else ""))
