"""Peak memory: `zoo run resnet18 --strategy linear-probe` on the demo data vs a plain loop.

Each side runs in its own fresh process; peak RSS is the process's ru_maxrss.  The plain
loop does the same work by hand: build resnet18 (timm, random init), generate the demo
data, extract features of all images once (inference_mode), train a linear head on them
for the same epochs, evaluate on the test split.

    python benchmarks/memory.py [--epochs 5]
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile

PLAIN = r"""
import resource, sys, json, torch, timm
from torch import nn
from zoo.api import load_job, get_catalog
from zoo.engine.data import load_splits
from zoo.engine.transforms import build_transform
from zoo.backbones import PretrainedConfig
epochs = int(sys.argv[1])
job = load_job("resnet18", sets=["strategy.name=linear-probe"])
cfg = PretrainedConfig()
tf = build_transform(cfg, 32, "none", False)
b = load_splits(get_catalog(), job.data, 0, {"train": tf, "val": tf, "test": tf})
model = timm.create_model("resnet18", num_classes=0).eval()
def feats(ds):
    xs, ys = [], []
    with torch.inference_mode():
        for x, y in torch.utils.data.DataLoader(ds, batch_size=32):
            xs.append(model(x)); ys.append(y)
    return torch.cat(xs), torch.cat(ys)
xtr, ytr = feats(b.train); xte, yte = feats(b.test)
head = nn.Linear(xtr.shape[1], len(b.classes))
opt = torch.optim.AdamW(head.parameters(), lr=0.01)
for _ in range(epochs):
    for i in torch.randperm(len(xtr)).split(32):
        loss = nn.functional.cross_entropy(head(xtr[i]), ytr[i])
        opt.zero_grad(); loss.backward(); opt.step()
acc = (head(xte).argmax(1) == yte).float().mean().item()
print(json.dumps({"maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "acc": acc}))
"""

ZOO = r"""
import resource, sys, json
from zoo.cli import main
try:
    main(["run", "resnet18", "--strategy", "linear-probe", "--epochs", sys.argv[1],
          "--out", sys.argv[2], "--quiet"])
except SystemExit:
    pass
print(json.dumps({"maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def measure(code: str, *args: str) -> dict:
    proc = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True,
                          check=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--epochs", type=int, default=5)
    args = ap.parse_args()
    out = tempfile.mkdtemp(prefix="zoo-mem-")
    plain = measure(PLAIN, str(args.epochs))
    zoo = measure(ZOO, str(args.epochs), out)
    ratio = zoo["maxrss_mb"] / plain["maxrss_mb"]
    print(f"peak RSS plain loop: {plain['maxrss_mb']:.0f} MB; zoo run: {zoo['maxrss_mb']:.0f} MB;"
          f" ratio {ratio:.2f} (target <= 1.2)")
    print("command: python " + " ".join(sys.argv))


if __name__ == "__main__":
    main()
