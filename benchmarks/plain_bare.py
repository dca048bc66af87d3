"""The bare loop of a transfer-learning example, in plain PyTorch: train, then test once.

What a hand-written script does (the PyTorch transfer-learning tutorial's shape): an
ImageFolder with resize + normalise (no augmentation), timm resnet18 from random init, SGD
(lr 0.001, momentum 0.9), cross-entropy; ``--epochs`` training epochs, then one pass over
``test/``. No validation, no checkpoints, nothing saved. ``--mode linear-probe`` freezes
everything but the classifier (the tutorial's "fixed feature extractor": the backbone still
runs every step). The folder holds ``train/``, ``val/``, ``test/`` (whole_process.py builds it).

    python benchmarks/plain_bare.py DATA [--epochs 4] [--image-size 64] [--mode finetune]
"""
from __future__ import annotations

import argparse
import os

import timm
import torch
from torch import nn
from torchvision import datasets, transforms


def loaders(root: str, image_size: int, batch_size: int, splits: tuple[str, ...]) -> dict:
    tf = transforms.Compose([transforms.Resize((image_size, image_size)), transforms.ToTensor(),
                             transforms.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))])
    out = {}
    for split in splits:
        ds = datasets.ImageFolder(os.path.join(root, split), tf)
        out[split] = torch.utils.data.DataLoader(ds, batch_size=batch_size,
                                                 shuffle=split == "train", num_workers=0)
    return out


def build(num_classes: int, mode: str, name: str = "resnet18") -> tuple[nn.Module, list]:
    torch.manual_seed(0)
    model = timm.create_model(name, pretrained=False, num_classes=num_classes)
    if mode == "linear-probe":
        for p in model.parameters():
            p.requires_grad = False
        for p in model.get_classifier().parameters():
            p.requires_grad = True
    return model, [p for p in model.parameters() if p.requires_grad]


def train_epoch(model, loader, opt, mode: str) -> float:
    model.train(mode != "linear-probe")  # a frozen backbone keeps its BN statistics
    total, n = 0.0, 0
    for inputs, labels in loader:
        opt.zero_grad()
        loss = nn.functional.cross_entropy(model(inputs), labels)
        loss.backward()
        opt.step()
        total += loss.item() * len(labels)
        n += len(labels)
    return total / max(n, 1)


@torch.no_grad()
def accuracy(model, loader) -> float:
    model.eval()
    correct = n = 0
    for inputs, labels in loader:
        correct += (model(inputs).argmax(1) == labels).sum().item()
        n += len(labels)
    return correct / max(n, 1)


def parse_args(with_out: bool = False) -> argparse.Namespace:
    """The flags both plain scripts take (the same-work one also takes an output folder)."""
    ap = argparse.ArgumentParser()
    ap.add_argument("data")
    if with_out:
        ap.add_argument("out")
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--image-size", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--lr", type=float, default=0.001)
    ap.add_argument("--mode", choices=("finetune", "linear-probe"), default="finetune")
    ap.add_argument("--model", default="resnet18", help="a timm architecture")
    return ap.parse_args()


def main() -> None:
    args = parse_args()
    data = loaders(args.data, args.image_size, args.batch_size, ("train", "test"))
    model, params = build(len(data["train"].dataset.classes), args.mode, args.model)
    opt = torch.optim.SGD(params, lr=args.lr, momentum=0.9)
    for epoch in range(args.epochs):
        loss = train_epoch(model, data["train"], opt, args.mode)
        print(f"epoch {epoch + 1} train_loss={loss:.4f}")
    print(f"test accuracy {accuracy(model, data['test']):.4f}")


if __name__ == "__main__":
    main()
