"""Test-time adaptation on the built-in shifted pairs: source-only vs AdaBN vs TENT.

For every source dataset and seed one ``zoo run`` fine-tunes ``efficientnet_lite0`` (ImageNet
weights, zoo-efficientnet-lite plugin) on the clean source; then, for each of its pairs,
``zoo adapt`` (through :func:`zoo.api.adapt_run`) adapts that run to the pair's ``shift:``
target (its train images, labels unused) and reports the target's test split: the source
model as it is (source-only), AdaBN, and TENT after ``--tent-steps`` updates (a short and a
long budget: long TENT is expected to degrade).  Prints a markdown table of target test
accuracy, mean ± std over the seeds, each method's gain over source-only, and writes every
row to ``--json`` (rows already there are not rerun).

    python benchmarks/tta.py [--seeds 2] [--epochs 5] [--pairs digits→noise4,...] [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time

PAIRS = {  # name: (source dataset, shift params); the target is shift:<source>
    "digits→noise4": ("digits", {"transform": "noise", "severity": 4}),
    "digits→invert5": ("digits", {"transform": "invert", "severity": 5}),
    "digits→rotate3": ("digits", {"transform": "rotate", "severity": 3}),
    "photos→blur4": ("photos", {"transform": "blur", "severity": 4}),
}


def methods(args) -> list[tuple[str, dict]]:
    out = [("adabn", {"method": "adabn"})]
    out += [(f"tent@{s}", {"method": "tent", "steps": s, "lr": args.tent_lr})
            for s in args.tent_steps]
    return out


def source_run(args, source: str, seed: int, out: str) -> dict:
    from zoo.api import load_job, run

    job = load_job(model=args.model, flags={
        "strategy": {"name": "finetune"}, "seed": seed, "device": args.device,
        "data": {"name": source, "image_size": args.image_size,
                 "max_per_class": args.per_class},
        "train": {"epochs": args.epochs, "batch_size": args.batch_size},
        "out": out, "name": f"{source}-{seed}"})
    return run(job, quiet=True)


def adapt_rows(args, pair: str, seed: int, run_dir: str, out: str) -> list[dict]:
    from zoo.api import adapt_run

    source, params = PAIRS[pair]
    rows = []
    for label, kw in methods(args):
        start = time.perf_counter()
        summary = adapt_run(run_dir, f"shift:{source}", target_params=params,
                            data=f"shift:{source}", data_params=params, out=out,
                            device=args.device, **kw)
        record = summary["adapt"]
        if not rows:
            rows.append({"pair": pair, "method": "source-only", "seed": seed,
                         "accuracy": record["before"]["accuracy"], "seconds": 0.0})
        rows.append({"pair": pair, "method": label, "seed": seed,
                     "accuracy": summary["test"]["accuracy"],
                     "entropy": [record.get("tent", {}).get("entropy_first"),
                                 record.get("tent", {}).get("entropy_last")],
                     "seconds": round(time.perf_counter() - start, 1)})
    return rows


def table(rows: list[dict], seeds: int, labels: list[str]) -> str:
    lines = ["| pair | " + " | ".join(labels) + " |", "|---|" + "---|" * len(labels)]
    for pair in [p for p in PAIRS if any(r["pair"] == p for r in rows)]:
        acc = {m: [r["accuracy"] for r in sorted(rows, key=lambda r: r["seed"])
                   if r["pair"] == pair and r["method"] == m] for m in labels}
        base, cells = acc["source-only"], []
        for m in labels:
            if not acc[m]:
                cells.append("-")
                continue
            sd = statistics.stdev(acc[m]) if len(acc[m]) > 1 else 0.0
            cell = f"{100 * statistics.mean(acc[m]):.1f} ± {100 * sd:.1f}"
            if m != "source-only" and len(acc[m]) == len(base):
                diff = [a - b for a, b in zip(acc[m], base)]
                gain = statistics.mean(diff)
                sd_d = statistics.stdev(diff) if len(diff) > 1 else 0.0
                mark = "win" if gain > max(0.01, sd_d) else "loss" if gain < 0 else "tie"
                cell += f" ({100 * gain:+.1f}, {mark})"
            cells.append(cell)
        lines.append(f"| {pair} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + (f"\n\ntarget test accuracy (%), mean ± std over {seeds} seed(s);"
                               " (gain over source-only, win if > max(1 point, 1 std))")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="efficientnet_lite0")
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--image-size", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--per-class", type=int, default=50, help="source train images per class")
    ap.add_argument("--tent-steps", type=lambda s: [int(x) for x in s.split(",")],
                    default=[10, 100], help="TENT budgets, comma-separated")
    ap.add_argument("--tent-lr", type=float, default=1e-3)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--pairs", default="digits→noise4,digits→invert5,digits→rotate3")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    rows = []
    if args.json and os.path.exists(args.json):
        with open(args.json) as f:
            rows = json.load(f)
    done = {(r["pair"], r["seed"]) for r in rows}
    pairs = args.pairs.split(",")
    with tempfile.TemporaryDirectory() as out:
        for seed in range(args.seeds):
            for source in dict.fromkeys(PAIRS[p][0] for p in pairs):
                todo = [p for p in pairs if PAIRS[p][0] == source and (p, seed) not in done]
                if not todo:
                    continue
                start = time.perf_counter()
                summary = source_run(args, source, seed, out)
                print(f"source {source} seed {seed}: test {summary['test']['accuracy']:.3f} "
                      f"({time.perf_counter() - start:.0f}s)", file=sys.stderr, flush=True)
                for pair in todo:
                    new = adapt_rows(args, pair, seed, summary["run_dir"], out)
                    rows.extend(new)
                    for row in new:
                        print(json.dumps(row), file=sys.stderr, flush=True)
                    if args.json:
                        with open(args.json, "w") as f:
                            json.dump(rows, f, indent=2)
    labels = ["source-only"] + [label for label, _ in methods(args)]
    print(table(rows, args.seeds, labels))
    return 0


if __name__ == "__main__":
    sys.exit(main())
