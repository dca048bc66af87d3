"""Unsupervised domain adaptation on the built-in shifted pairs: source-only vs each method.

For every pair (source → ``shift:`` target), strategy and seed: ``zoo run`` with
``--source-data SOURCE`` (labels), ``--data TARGET`` (its train images unlabeled, its test
split reports), ImageNet weights of ``efficientnet_lite0`` (zoo-efficientnet-lite plugin).
Model selection: source val accuracy.  Prints a markdown table of target test accuracy,
mean ± std over the seeds, and each method's gain over source-only with a win mark when it
is above max(1 point, 1 std of the difference); writes every summary to ``--json``.

    python benchmarks/domain.py [--seeds 3] [--epochs 5] [--device cuda] [--json out.json]

Pairs: digits → inverted digits (severity 5: a sign flip AdaBN's statistics cannot undo),
digits → noisy digits (severity 4), demo shapes → colour-shifted shapes (severity 4),
scikit-image photo crops → blurred crops (severity 4), and two milder digit shifts (noise
at severity 2, rotation by ±45° at severity 3) where the source model is not at chance.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time

PAIRS = {
    "digits→invert5": ("digits", {"transform": "invert", "severity": 5}, "digits"),
    "digits→noise4": ("digits", {"transform": "noise", "severity": 4}, "digits"),
    "demo→color4": ("demo", {"transform": "color", "severity": 4}, "demo"),
    "photos→blur4": ("photos", {"transform": "blur", "severity": 4}, "photos"),
    "digits→noise2": ("digits", {"transform": "noise", "severity": 2}, "digits"),
    "digits→rotate3": ("digits", {"transform": "rotate", "severity": 3}, "digits"),
}
STRATEGIES = ("source-only", "adabn", "dann", "mcc")


def one(args, pair: str, strategy: str, seed: int, out: str) -> dict:
    from zoo.api import load_job, run

    source, params, inner = PAIRS[pair]
    job = load_job(model=args.model, flags={
        "strategy": {"name": strategy}, "seed": seed, "device": args.device,
        "data": {"name": f"shift:{inner}", "image_size": args.image_size, "params": params,
                 "max_per_class": args.per_class},
        "source_data": {"name": source, "max_per_class": args.per_class},
        "train": {"epochs": args.epochs, "batch_size": args.batch_size},
        "out": out, "name": f"{pair}-{strategy}-{seed}".replace("→", "-")})
    start = time.perf_counter()
    summary = run(job, quiet=True)
    return {"pair": pair, "strategy": strategy, "seed": seed,
            "accuracy": summary["test"]["accuracy"], "weights": summary["weights"]["source"],
            "source_val": (summary.get("monitor") or {}).get("best"),
            "seconds": round(time.perf_counter() - start, 1)}


def table(rows: list[dict], seeds: int) -> str:
    lines = ["| pair | " + " | ".join(STRATEGIES) + " |",
             "|---|" + "---|" * len(STRATEGIES)]
    for pair in [p for p in PAIRS if any(r["pair"] == p for r in rows)]:
        acc = {s: [r["accuracy"] for r in rows if r["pair"] == pair and r["strategy"] == s]
               for s in STRATEGIES}
        base = acc["source-only"]
        cells = []
        for s in STRATEGIES:
            if not acc[s]:
                cells.append("-")
                continue
            m = statistics.mean(acc[s])
            sd = statistics.stdev(acc[s]) if len(acc[s]) > 1 else 0.0
            cell = f"{100 * m:.1f} ± {100 * sd:.1f}"
            if s != "source-only" and len(acc[s]) == len(base):
                diff = [a - b for a, b in zip(acc[s], base)]
                gain = statistics.mean(diff)
                sd_d = statistics.stdev(diff) if len(diff) > 1 else 0.0
                mark = "win" if gain > max(0.01, sd_d) else "loss" if gain < 0 else "tie"
                cell += f" ({100 * gain:+.1f}, {mark})"
            cells.append(cell)
        lines.append(f"| {pair} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + (f"\n\ntarget test accuracy (%), mean ± std over {seeds} "
                               "seed(s); (gain over source-only, win if > max(1 point, 1 std))")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="efficientnet_lite0")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--image-size", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--per-class", type=int, default=None, help="source/target train images per class")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--pairs", default=",".join(PAIRS))
    ap.add_argument("--strategies", default=",".join(STRATEGIES))
    ap.add_argument("--json", default=None,
                    help="write every row here as it comes; rows already there are not rerun")
    args = ap.parse_args(argv)
    rows = []
    if args.json and os.path.exists(args.json):  # go on where an interrupted run stopped
        with open(args.json) as f:
            rows = json.load(f)
    done = {(r["pair"], r["strategy"], r["seed"]) for r in rows}
    with tempfile.TemporaryDirectory() as out:
        for pair in args.pairs.split(","):
            for strategy in args.strategies.split(","):
                for seed in range(args.seeds):
                    if (pair, strategy, seed) in done:
                        continue
                    row = one(args, pair, strategy, seed, out)
                    rows.append(row)
                    print(json.dumps(row), file=sys.stderr, flush=True)
                    if args.json:
                        with open(args.json, "w") as f:
                            json.dump(rows, f, indent=2)
    print(table(rows, args.seeds))
    return 0


if __name__ == "__main__":
    sys.exit(main())
