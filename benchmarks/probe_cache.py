"""Feature caching: linear probe with cached features vs running the backbone every step.

1. ``zoo run MODEL --strategy linear-probe`` for --epochs epochs, ``train.feature_cache``
   auto (cache) vs off, same seed/splits: time ratio and test accuracy of both.
2. The whole cached linear-probe run (all epochs, val and test, outputs written) vs one
   plain ``inference_mode`` forward pass over the same images (same transforms, batch size).

    python benchmarks/probe_cache.py [--model resnet18] [--image-size 64] [--epochs 10]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time

import torch


def job(args, out, cache: str):
    from zoo.api import load_job

    return load_job(args.model, out=out, weights=args.weights, sets=[
        "strategy.name=linear-probe", f"train.epochs={args.epochs}",
        f"train.feature_cache={cache}", f"data.image_size={args.image_size}",
        f"train.batch_size={args.batch_size}", "metrics=[accuracy]"])


def zoo_run(args, out, cache):
    from zoo.api import run

    start = time.perf_counter()
    summary = run(job(args, out, cache))
    return time.perf_counter() - start, summary["test"]["accuracy"]


@torch.inference_mode()
def plain_forward(args, out):
    """One plain pass over train+val+test images through the backbone, same transforms."""
    from zoo.api import create_model, get_catalog
    from zoo.engine.data import load_splits
    from zoo.engine.transforms import build_transform

    j = job(args, out, "auto")
    model = create_model(args.model, 8, weights=args.weights).eval()
    tf = build_transform(model.backbone.pretrained_cfg, args.image_size, "none", False)
    bundle = load_splits(get_catalog(), j.data, j.seed, {"train": tf, "val": tf, "test": tf})
    start = time.perf_counter()
    for ds in (bundle.train, bundle.val, bundle.test):
        loader = torch.utils.data.DataLoader(ds, batch_size=args.batch_size)
        for x, _ in loader:
            model(x)
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="efficientnet_lite0")
    ap.add_argument("--weights", default="auto")
    ap.add_argument("--image-size", type=int, default=64)
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    out = tempfile.mkdtemp(prefix="zoo-bench-")
    zoo_run(args, out, "auto")  # warm-up: imports, dataset generation, model lists
    cached, uncached, plain = [], [], []
    acc = {}
    for r in range(args.repeats):
        order = ("auto", "off") if r % 2 == 0 else ("off", "auto")
        for mode in order:
            t, a = zoo_run(args, out, mode)
            (cached if mode == "auto" else uncached).append(t)
            acc[mode] = a
        plain.append(plain_forward(args, out))
    c, u, p = (statistics.median(x) for x in (cached, uncached, plain))
    print(f"{args.model} @ {args.image_size}px, {args.epochs} epochs linear-probe, batch "
          f"{args.batch_size}, threads={torch.get_num_threads()}, median of {args.repeats}")
    print(f"{'':34} {'seconds':>8}")
    print(f"{'run, feature cache off':34} {u:8.2f}   test acc {acc['off']:.4f}")
    print(f"{'run, feature cache on':34} {c:8.2f}   test acc {acc['auto']:.4f}")
    print(f"{'plain inference pass (all splits)':34} {p:8.2f}")
    print(f"speed-up cache on/off: {u / c:.2f}x (target >= 5x); accuracy difference "
          f"{abs(acc['auto'] - acc['off']) * 100:.2f} points (target <= 1)")
    print(f"whole cached run / one plain forward pass: {c / p:.2f} (target <= 1.25)")
    print("command: python " + " ".join(sys.argv))


if __name__ == "__main__":
    main()
