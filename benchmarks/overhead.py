"""Loop overhead: zoo's training/eval loop vs a plain hand-written PyTorch loop.

Same model, data (demo images through the same transforms, pre-materialised so both loops
read identical tensors), batch size, optimizer, threads and number of steps; runs are
interleaved A B A B and the median time ratio zoo / plain is printed.

    python benchmarks/overhead.py [--models resnet18,test_resnet] [--steps 30] [--repeats 5]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset


def make_data(n: int, size: int, classes: int = 8):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 3, size, size, generator=g)
    y = torch.randint(0, classes, (n,), generator=g)
    ds = TensorDataset(x, y)
    ds.classes = [str(i) for i in range(classes)]
    ds.targets = y.tolist()
    return ds


def build(model_name: str, classes: int):
    from zoo.api import create_model

    torch.manual_seed(0)
    return create_model(f"timm:{model_name}", classes, weights="none")


def plain_train(model, loader, lr):
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.05)
    model.train()
    start = time.perf_counter()
    for inputs, labels in loader:
        outputs = model(inputs)
        loss = nn.functional.cross_entropy(outputs, labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return time.perf_counter() - start


@torch.inference_mode()
def plain_eval(model, loader):
    model.eval()
    start = time.perf_counter()
    correct = 0
    for inputs, labels in loader:
        correct += (model(inputs).argmax(1) == labels).sum().item()
    return time.perf_counter() - start


def zoo_train(model, loader, lr):
    from zoo.api import load_job
    from zoo.backbones import build_layer_groups
    from zoo.api import get_catalog
    from zoo.engine.loop import fit
    from zoo.engine.runtime import Runtime
    from zoo.strategy import Phase, StrategyPlan, all_groups

    job = load_job(flags={"train": {"epochs": 1, "lr": lr, "scheduler": "constant"}})
    groups = build_layer_groups(model, get_catalog().provider("timm"))
    plan = StrategyPlan("finetune", [Phase("finetune", 1, all_groups(groups), bn="train")])
    start = time.perf_counter()
    fit(model, groups, plan, {"train": loader, "val": None}, {}, job,
        Runtime.for_job(job, torch.device("cpu")), log=lambda *a: None)
    return time.perf_counter() - start


def zoo_eval(model, loader):
    from zoo.api import get_catalog
    from zoo.engine.loop import evaluate

    accuracy = get_catalog().get("metrics", "accuracy").obj(8)  # zoo's own metric plugin
    start = time.perf_counter()
    model.eval()
    evaluate(model, loader, {"accuracy": accuracy}, torch.device("cpu"))
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", default="resnet18,test_resnet")
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--size", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    ds = make_data(args.steps * args.batch_size, args.size)
    print(f"threads={torch.get_num_threads()} steps={args.steps} batch={args.batch_size} "
          f"size={args.size}px repeats={args.repeats} (interleaved A B A B, median)")
    print(f"{'model':14} {'phase':6} {'plain s':>9} {'zoo s':>9} {'ratio':>7}")
    for name in args.models.split(","):
        results = {"train": ([], []), "eval": ([], [])}
        for r in range(args.repeats + 1):  # first round is warm-up, discarded
            for kind in ("train", "eval"):
                for which in ((0, 1) if r % 2 == 0 else (1, 0)):
                    loader = DataLoader(ds, batch_size=args.batch_size, shuffle=(kind == "train"),
                                        generator=torch.Generator().manual_seed(0))
                    model = build(name, 8)
                    if kind == "train":
                        t = plain_train(model, loader, 1e-3) if which == 0 else \
                            zoo_train(model, loader, 1e-3)
                    else:
                        t = plain_eval(model, loader) if which == 0 else zoo_eval(model, loader)
                    if r:
                        results[kind][which].append(t)
        for kind, (plain, zoo_t) in results.items():
            p, z = statistics.median(plain), statistics.median(zoo_t)
            print(f"{name:14} {kind:6} {p:9.3f} {z:9.3f} {z / p:7.3f}")
    print("command: python " + " ".join(sys.argv))


if __name__ == "__main__":
    main()
