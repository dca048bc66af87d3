"""The plain loop doing the same work as a zoo run: train, validate every epoch (keeping
the best epoch's weights), test them, and save the weights with ``torch.save``.

Same data, model, optimizer and transforms as ``plain_bare.py`` (it reuses its pieces);
what it adds is the per-epoch validation pass, a copy of the best weights and the saved
file, so ``zoo run`` / this script isolates zoo's own overhead (metrics, plots, atomic
checkpoints, run folder) from the work any careful script does.

    python benchmarks/plain_same_work.py DATA OUT_DIR [--epochs 4] [--mode finetune]
"""
from __future__ import annotations

import copy
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from plain_bare import accuracy, build, loaders, parse_args, train_epoch  # noqa: E402


def main() -> None:
    args = parse_args(with_out=True)
    data = loaders(args.data, args.image_size, args.batch_size, ("train", "val", "test"))
    model, params = build(len(data["train"].dataset.classes), args.mode, args.model)
    opt = torch.optim.SGD(params, lr=args.lr, momentum=0.9)
    best, best_state = -1.0, None
    for epoch in range(args.epochs):
        loss = train_epoch(model, data["train"], opt, args.mode)
        val = accuracy(model, data["val"])
        if val > best:
            best, best_state = val, copy.deepcopy(model.state_dict())
        print(f"epoch {epoch + 1} train_loss={loss:.4f} val_accuracy={val:.4f}")
    model.load_state_dict(best_state)
    print(f"test accuracy {accuracy(model, data['test']):.4f}")
    os.makedirs(args.out, exist_ok=True)
    torch.save(model.state_dict(), os.path.join(args.out, "model.pt"))


if __name__ == "__main__":
    main()
