"""Live tensor memory of one training step: zoo's step vs gradients freed before the backward.

zoo's :meth:`zoo.engine.runtime.Runtime.backward_and_step` frees the gradients right after
the optimizer step (as timm's ``train.py`` and Lightning do). The alternative it replaced
cleared them just before the next backward, so the last step's gradients (one copy of the
trainable weights) stayed alive through the next forward. This script measures both in one
process, side by side, on CPU: the bytes of every tensor storage the step's operations
create and that are still alive (a ``TorchDispatchMode`` counting storages, freed through a
finalizer), between steps and at the step's peak, after two warm-up steps (AdamW's state
exists). That live-tensor peak is what a GPU's caching allocator has to hold; a CPU
process's resident size also depends on how glibc lays out its heap (benchmarks/peak_memory.py
measures that).

    python benchmarks/step_memory.py [--models resnet18:128:32,vit_small_patch16_224:224:16]
"""
from __future__ import annotations

import argparse
import weakref

import timm
import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from zoo.engine.runtime import Runtime


class LiveStorages(TorchDispatchMode):
    """Bytes of the storages that operations create, while they are alive (each once)."""

    def __init__(self):
        super().__init__()
        self.current = self.peak = 0
        self._seen: set[int] = set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_flatten(out)[0]:
            if not isinstance(t, torch.Tensor):
                continue
            storage = t.untyped_storage()
            key, size = storage.data_ptr(), storage.nbytes()
            if size == 0 or key in self._seen:
                continue
            self._seen.add(key)
            self.current += size
            self.peak = max(self.peak, self.current)
            weakref.finalize(storage, self._free, key, size)
        return out

    def _free(self, key: int, size: int) -> None:
        self._seen.discard(key)
        self.current -= size


def zoo_step(model, optimizer, x, y) -> None:
    loss = nn.functional.cross_entropy(model(x), y)
    Runtime(torch.device("cpu")).backward_and_step(loss, optimizer)


def freed_before_backward(model, optimizer, x, y) -> None:
    loss = nn.functional.cross_entropy(model(x), y)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()


def measure(step, name: str, size: int, batch: int) -> dict:
    torch.manual_seed(0)
    model = timm.create_model(name, pretrained=False, num_classes=10)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    x, y = torch.randn(batch, 3, size, size), torch.randint(0, 10, (batch,))
    with LiveStorages() as live:
        for _ in range(2):  # warm-up: AdamW's state and the first gradients exist
            step(model, optimizer, x, y)
        between = live.peak = live.current
        for _ in range(2):
            step(model, optimizer, x, y)
    grads = sum(p.numel() * p.element_size() for p in model.parameters() if p.requires_grad)
    mb = 1 << 20
    return {"between_steps_mb": round(between / mb), "step_peak_mb": round(live.peak / mb),
            "gradients_mb": round(grads / mb)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", default="resnet18:128:32,vit_small_patch16_224:224:16",
                        help="timm name:image size:batch, comma-separated")
    args = parser.parse_args(argv)
    print(f"{'model':<24} {'step':<24} {'between steps':>14} {'step peak':>10}")
    for spec in args.models.split(","):
        name, size, batch = spec.split(":")
        rows = {label: measure(fn, name, int(size), int(batch))
                for label, fn in (("zoo (freed after step)", zoo_step),
                                  ("freed before backward", freed_before_backward))}
        for label, r in rows.items():
            print(f"{name:<24} {label:<24} {r['between_steps_mb']:>11} MB "
                  f"{r['step_peak_mb']:>7} MB")
        zoo, other = rows["zoo (freed after step)"], rows["freed before backward"]
        print(f"{name}: step peak zoo / before = {zoo['step_peak_mb'] / other['step_peak_mb']:.3f}"
              f" ({other['step_peak_mb'] - zoo['step_peak_mb']:+d} MB saved; the gradients "
              f"are {zoo['gradients_mb']} MB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
