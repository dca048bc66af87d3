"""ncm / knn / zero-shot-free baselines vs the linear probe on the real-photo task.

The task of tests/test_real_transfer.py: six scikit-image photos, 20 grey, contrast-jittered
crops each; ``max_per_class`` train crops per class (5: few-shot), half the crops test;
efficientnet_lite0 with its real ImageNet weights (the zoo-efficientnet-lite plugin) at 96 px.
Each strategy runs as a whole ``zoo.api.run`` (feature caching, test pass, run folder
included); the wall time is that call's.  Prints one markdown table row per strategy:
mean ± std test accuracy over the seeds and the median wall time.

    python benchmarks/training_free.py [--seeds 3] [--shots 5] [--epochs 10]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from test_real_transfer import make_photo_crops  # noqa: E402  (the task's one definition)

from zoo.api import load_job, run  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--shots", type=int, default=5, help="train crops per class")
    ap.add_argument("--epochs", type=int, default=10, help="linear-probe epochs")
    ap.add_argument("--strategies", default="linear-probe,ncm,knn")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        root = make_photo_crops(Path(tmp) / "photos")
        print("| strategy | test accuracy (mean ± std) | wall time per run (median) |")
        print("|---|---|---|")
        for strategy in args.strategies.split(","):
            accs, secs = [], []
            for seed in range(args.seeds):
                job = load_job(model="efficientnet_lite0", flags={
                    "strategy": {"name": strategy}, "weights": "auto", "seed": seed,
                    "data": {"name": "folder", "path": str(root), "image_size": 96,
                             "max_per_class": args.shots, "val_split": 0.1,
                             "test_split": 0.5},
                    "train": {"epochs": args.epochs, "batch_size": 8},
                    "out": str(Path(tmp) / "runs"), "name": f"{strategy}-{seed}"})
                start = time.perf_counter()
                summary = run(job, quiet=True)
                secs.append(time.perf_counter() - start)
                accs.append(summary["test"]["accuracy"])
            std = statistics.stdev(accs) if len(accs) > 1 else 0.0
            print(f"| `{strategy}` | {statistics.mean(accs):.3f} ± {std:.3f} | "
                  f"{statistics.median(secs):.1f} s |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
