"""Reusing finished runs: ``zoo eval``, ``zoo runs``, ``zoo predict``, ``zoo export``,
``zoo push``.

See docs/runs.md.  Each command rebuilds the model from ``RUN_DIR/model.safetensors`` and
``job.yaml`` (:func:`zoo.runs.reuse.load_run`); a folder that is not a finished run is a one-line
error with exit code 2.
"""
from __future__ import annotations

import click

from zoo.api import evaluate_run, export_run, list_runs, predict, push_run, read_run_summary
from zoo.cli.output import console, print_json, table


def register(cli: click.Group) -> None:
    for command in (eval_cmd, runs_cmd, predict_cmd, export_cmd, push_cmd):
        cli.add_command(command)


@click.command("eval")
@click.argument("run_dir", type=click.Path())
@click.option("--data", default=None, help="Evaluate on this dataset (name or folder) "
              "instead of the run's own test split; it must have the run's classes.")
@click.option("--data-root", default=None, help="Where downloadable datasets live.")
@click.option("--device", default="cpu", show_default=True, help="cpu | cuda | mps.")
@click.option("--batch-size", type=int, default=None, help="Batch size (default: the run's).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON only.")
def eval_cmd(run_dir, data, data_root, device, batch_size, as_json):
    """Metrics of RUN_DIR's saved model on its own test split (splits.json) or on --data."""
    metrics = evaluate_run(run_dir, data=data, device=device, batch_size=batch_size,
                           data_root=data_root)
    recorded = ((read_run_summary(run_dir) or {}).get("test")
                or {}) if data is None else {}
    if not isinstance(recorded, dict):  # a damaged summary.json: nothing to compare with
        recorded = {}
    result = {"run_dir": str(run_dir), "data": data or "the run's test split",
              "metrics": metrics}
    if recorded:
        result["recorded"] = {k: recorded.get(k) for k in metrics}
    if as_json:
        print_json(result)
        return
    cols = ["metric", "value"] + (["run's summary.json"] if recorded else [])
    rows = [[k, f"{v:.4f}"] + ([f"{recorded[k]:.4f}" if isinstance(recorded.get(k), float)
                                else ""] if recorded else [])
            for k, v in metrics.items()]
    console().print(table(f"{run_dir} on {result['data']}", cols, rows))


@click.command("runs")
@click.argument("parent", type=click.Path(), default="runs", required=False)
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@click.option("--limit", type=int, default=None, help="Show at most N runs.")
def runs_cmd(parent, as_json, limit):
    """Past runs under PARENT (default ./runs), newest first."""
    rows = list_runs(parent)
    if limit is not None:
        rows = rows[:limit]
    if as_json:
        print_json(rows)
        return
    out = console()
    if not rows:
        out.print(f"no runs under {parent}")
        return
    body = [[r["name"], r["model"], r["strategy"], r["status"],
             f"{r['accuracy']:.4f}" if isinstance(r.get("accuracy"), float) else "-",
             r["date"]] for r in rows]
    out.print(table(None, ["name", "model", "strategy", "status", "test accuracy", "date"],
                    body, caption=f"{len(rows)} runs · {parent}"))


@click.command("predict")
@click.argument("run_dir", type=click.Path())
@click.argument("images", nargs=-1, required=True, type=click.Path())
@click.option("--top-k", type=int, default=5, show_default=True, help="Classes per image.")
@click.option("--device", default="cpu", show_default=True, help="cpu | cuda | mps.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON only.")
def predict_cmd(run_dir, images, top_k, device, as_json):
    """Classify IMAGE files with RUN_DIR's model: top classes and probabilities."""
    results = predict(run_dir, list(images), top_k=top_k, device=device)
    if as_json:
        print_json(results)
        return
    out = console()
    for r in results:
        out.print(r["image"], style="bold", markup=False, soft_wrap=True)
        out.print(table(None, ["class", "probability"],
                        [[t["class"], f"{t['probability']:.4f}"] for t in r["top"]]))


@click.command("export")
@click.argument("run_dir", type=click.Path())
@click.option("--format", "fmt",
              type=click.Choice(["safetensors", "onnx", "torch-export", "hf"]),
              default="safetensors", show_default=True, help="Export format.")
@click.option("--out", default=None, type=click.Path(),
              help="Output file (default RUN_DIR/export/model.{safetensors,onnx,pt2}); for "
              "--format hf a folder (default RUN_DIR/export/hf).")
@click.option("-q", "--quiet", is_flag=True, help="Print nothing but errors.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON only.")
def export_cmd(run_dir, fmt, out, quiet, as_json):
    """Export RUN_DIR's model: safetensors, ONNX (needs `zoo[export]`), torch.export (.pt2),
    or hf: a folder timm / transformers / torchvision / open_clip load (docs/ecosystem.md).

    The exported model maps normalised images (N, C, S, S) to logits (C: 3, or the run's
    data.channels); ONNX and torch-export files get a .json sidecar with classes, image
    size, channels and mean/std.  --format hf writes config.json, model.safetensors (the
    provider's own key names, zoo's head as its classifier) and a README.md model card;
    `zoo push RUN REPO_ID` uploads it.
    """
    result = export_run(run_dir, fmt, out)
    if as_json:
        print_json(result)
        return
    if quiet:
        return
    extra = f" (+ {result['sidecar']})" if result.get("sidecar") else ""
    console().print(f"exported {fmt}: {result['path']}{extra}")


@click.command("push")
@click.argument("run_dir", type=click.Path())
@click.argument("repo_id")
@click.option("--private", is_flag=True, help="Create the repo private (when it is new).")
@click.option("--message", default=None, help="Commit message (default: zoo push RUN).")
@click.option("--endpoint", default=None,
              help="Hub URL (default $HF_ENDPOINT or https://huggingface.co).")
@click.option("-q", "--quiet", is_flag=True, help="Print nothing but errors.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON only.")
def push_cmd(run_dir, repo_id, private, message, endpoint, quiet, as_json):
    """Upload RUN_DIR's `zoo export --format hf` folder to the Hugging Face Hub as REPO_ID.

    The folder (config.json, model.safetensors, README.md model card) is exported first when
    it is missing.  The token is huggingface_hub's (HF_TOKEN or `hf auth login`).  Once
    pushed: timm.create_model("hf-hub:REPO_ID", pretrained=True), or
    `zoo run timm:ARCH --weights hf-hub:REPO_ID`.  See docs/ecosystem.md.
    """
    result = push_run(run_dir, repo_id, private=private, message=message, endpoint=endpoint)
    if as_json:
        print_json(result)
        return
    if not quiet:
        console().print(f"pushed {len(result['files'])} files to {result['url'] or repo_id}",
                        markup=False, soft_wrap=True)
