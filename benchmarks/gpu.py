"""GPU training throughput: ``zoo run`` vs a plain PyTorch loop, images/s on CUDA.

resnet50 and a ViT-B/16 at 224 px from random init (no download), fp32, bf16 and
channels_last (convnets), ``--compile`` as a separate opt-in; the same data for both (the
demo dataset at 64 px native, resized to 224 by zoo's transforms in DataLoader workers), the
same optimizer (zoo's default AdamW), batch size and workers. Throughput is measured after a
warm-up epoch: zoo's from its ``metrics.jsonl`` (images/s of each later epoch), the plain
loop's from timing its later epochs with ``torch.cuda.synchronize``. About 3 minutes on one
recent GPU with the defaults.

    python benchmarks/gpu.py [--models resnet50,vit_base_patch16_224] [--compile]

Without a CUDA GPU it says so and exits 0 (nothing to measure). Needs torch >= 2.3.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

CONVNETS = ("resnet", "convnext", "efficientnet", "regnet", "mobilenet")


def gpu_status() -> str | None:
    """None when a CUDA GPU is usable, else the reason (printed; the script exits 0)."""
    try:
        import torch
    except ImportError:
        return "torch is not installed"
    if not torch.cuda.is_available():
        return (f"no CUDA GPU present (torch {torch.__version__}, CUDA build "
                f"{torch.version.cuda or 'none'}): nothing measured. Run this on a machine "
                "with an NVIDIA GPU.")
    return None


def configs(models: list[str], compile_: bool) -> list[dict]:
    out = []
    for model in models:
        variants = [("fp32", False), ("bf16", False)]
        if model.startswith(CONVNETS):
            variants += [("fp32", True), ("bf16", True)]
        for precision, channels_last in variants:
            out.append({"model": model, "precision": precision,
                        "channels_last": channels_last, "compile": False})
            if compile_:
                out.append({"model": model, "precision": precision,
                            "channels_last": channels_last, "compile": True})
    return out


def job_sets(cfg: dict, args) -> list[str]:
    return [f"train.epochs={args.epochs}", f"train.batch_size={args.batch_size}",
            f"train.precision={cfg['precision']}",
            f"train.channels_last={str(cfg['channels_last']).lower()}",
            f"train.compile={str(cfg['compile']).lower()}", "data.name=demo",
            f"data.params={{size: 64, per_class: {args.per_class}}}", "data.augment=none",
            "data.image_size=224", "strategy.name=finetune", "device=cuda", "metrics=[accuracy]"]


def zoo_images_per_second(cfg: dict, args, out: str) -> float:
    from zoo.api import load_job, run

    job = load_job(cfg["model"], weights="none", out=out, sets=job_sets(cfg, args))
    summary = run(job, quiet=True)
    lines = (Path(summary["run_dir"]) / "metrics.jsonl").read_text().splitlines()
    rates = [json.loads(line)["train"]["images_per_second"] for line in lines][1:]
    return statistics.median(rates)


def plain_images_per_second(cfg: dict, args, out: str) -> float:
    """The plain loop: same model, data, transforms, optimizer, workers; no zoo loop."""
    import torch
    from torch import nn

    from zoo.api import create_model, get_catalog, load_job
    from zoo.engine.data import load_splits
    from zoo.engine.threads import plan_for_run
    from zoo.engine.transforms import build_transform

    job = load_job(cfg["model"], weights="none", out=out, sets=job_sets(cfg, args))
    device = torch.device("cuda")
    torch.manual_seed(0)
    model = create_model(cfg["model"], 8, weights="none").to(device)
    tf = build_transform(model.backbone.pretrained_cfg, 224, "none", True)
    train = load_splits(get_catalog(), job.data, job.seed, {"train": tf}).train
    workers = plan_for_run(train, "cuda").workers
    loader = torch.utils.data.DataLoader(train, batch_size=args.batch_size, shuffle=True,
                                         num_workers=workers, pin_memory=True,
                                         persistent_workers=workers > 0)
    fmt = torch.channels_last if cfg["channels_last"] else torch.contiguous_format
    model = model.to(memory_format=fmt)
    if cfg["compile"]:
        model = torch.compile(model)
    opt = torch.optim.AdamW(model.parameters(), lr=job.train.lr,
                            weight_decay=job.train.weight_decay)
    dtype = torch.bfloat16 if cfg["precision"] == "bf16" else None
    rates = []
    for epoch in range(args.epochs):
        model.train()
        torch.cuda.synchronize()
        start, n = time.perf_counter(), 0
        for x, y in loader:
            x = x.to(device, non_blocking=True).contiguous(memory_format=fmt)
            y = y.to(device, non_blocking=True)
            with torch.autocast("cuda", dtype=dtype, enabled=dtype is not None):
                loss = nn.functional.cross_entropy(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            n += len(y)
        torch.cuda.synchronize()
        if epoch:  # the first epoch warms up (cuDNN autotune, workers, compile)
            rates.append(n / (time.perf_counter() - start))
    return statistics.median(rates)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", default="resnet50,vit_base_patch16_224")
    ap.add_argument("--epochs", type=int, default=3, help="the first one is a warm-up")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--per-class", type=int, default=300, help="demo images per class")
    ap.add_argument("--compile", action="store_true", help="also time torch.compile")
    ap.add_argument("--json", dest="json_path", help="write the table to this file")
    args = ap.parse_args(argv)
    reason = gpu_status()
    if reason:
        print(reason)
        return 0
    import torch

    out = tempfile.mkdtemp(prefix="zoo-gpu-")
    rows = []
    print(f"{torch.cuda.get_device_name(0)}, torch {torch.__version__}, batch "
          f"{args.batch_size}, 224 px, {args.epochs} epochs (first = warm-up), random init")
    print(f"{'model':24} {'precision':9} {'ch_last':7} {'compile':7} {'plain img/s':>11} "
          f"{'zoo img/s':>10} {'zoo/plain':>9}")
    for cfg in configs([m for m in args.models.split(",") if m], args.compile):
        plain = plain_images_per_second(cfg, args, out)
        zoo = zoo_images_per_second(cfg, args, out)
        rows.append(dict(cfg, plain=plain, zoo=zoo))
        print(f"{cfg['model']:24} {cfg['precision']:9} {str(cfg['channels_last']):7} "
              f"{str(cfg['compile']):7} {plain:11.0f} {zoo:10.0f} {zoo / plain:9.3f}",
              flush=True)
    if args.json_path:
        Path(args.json_path).write_text(json.dumps(rows, indent=1))
    print("command: python " + " ".join([sys.argv[0]] + (argv if argv is not None
                                                         else sys.argv[1:])))
    return 0


if __name__ == "__main__":
    sys.exit(main())
