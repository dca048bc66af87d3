"""Data throughput and the decoded-image cache: zoo's training loader vs torchvision's.

Generates ``--images`` JPEGs of ``--source-size`` (320x240) in ``--classes`` class folders,
cropped to ``--image-size`` (224) by the loaders, then measures, each
in a fresh process, images/s of one pass over the training split (after one warm-up pass;
no model: the loader alone) and the process's peak RSS:

- ``torchvision``: ``ImageFolder`` + ``RandomResizedCrop``, flip, ``ToTensor``,
  ``Normalize``, a ``DataLoader`` with ``--workers`` workers, shuffled, batch 32;
- ``zoo``: the folder dataset and zoo's training loader (``make_loader``: seeded per-sample
  augmentation, the same crop/flip/normalise in torchvision.transforms.v2) at the same
  worker count, with ``data.cache_images`` off and on (on: every image decoded once at the
  scan and held in memory; its cost is reported as ``scan_s``).

    python benchmarks/throughput.py --images 1000 --workers 2 --passes 2
    python benchmarks/throughput.py --source-size 40x32 --image-size 32 --images 2000

Prints one line per configuration and, with ``--json FILE``, writes them all.
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

COMMON = r"""
import json, resource, sys, time, torch
torch.set_num_threads(1)
root, workers, passes = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
size, mode = int(sys.argv[4]), sys.argv[5]
def timed(loader, n):
    for _ in loader:  # warm-up pass: workers started, page cache warm
        pass
    start = time.perf_counter()
    for _ in range(passes):
        for x, y in loader:
            pass
    return n * passes / (time.perf_counter() - start)
"""

TORCHVISION = COMMON + r"""
from torchvision import datasets, transforms as T
tf = T.Compose([T.RandomResizedCrop(size, scale=(0.7, 1.0)), T.RandomHorizontalFlip(),
                T.ToTensor(), T.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])])
start = time.perf_counter()
ds = datasets.ImageFolder(root, transform=tf)
scan = time.perf_counter() - start
loader = torch.utils.data.DataLoader(ds, batch_size=32, shuffle=True, num_workers=workers,
                                     persistent_workers=workers > 0)
ips = timed(loader, len(ds))
print(json.dumps({"images_per_s": ips, "scan_s": scan,
                  "maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""

ZOO = COMMON + r"""
from zoo.api import get_catalog
from zoo.backbones import PretrainedConfig
from zoo.engine.data import load_splits, make_loader
from zoo.engine.transforms import build_transform
from zoo.jobspec import DataSpec
cache = {"cache-on": True, "cache-off": False}[mode]
spec = DataSpec(name="folder", path=root, val_split=0.0, test_split=0.0, cache_images=cache)
start = time.perf_counter()
bundle = load_splits(get_catalog(), spec, 0)
scan = time.perf_counter() - start
tf = build_transform(PretrainedConfig(), size, "light", True)
train = bundle.with_transforms({"train": tf}).train
loader = make_loader(train, 32, True, 0, workers, "cpu")
ips = timed(loader, len(train))
print(json.dumps({"images_per_s": ips, "scan_s": scan,
                  "maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def build_folder(root: Path, images: int, classes: int, width: int, height: int) -> None:
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    base = rng.integers(0, 255, (height, width, 3), dtype=np.uint8)
    for i in range(images):
        folder = root / f"class_{i % classes:02d}"
        folder.mkdir(parents=True, exist_ok=True)
        shifted = np.roll(base, (i * 7) % height, axis=0)  # other pixels, same statistics
        Image.fromarray(shifted).save(folder / f"{i:05d}.jpg", quality=90)


def run(code: str, *args: str) -> dict:
    proc = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(proc.stderr[-2000:])
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=1000)
    ap.add_argument("--classes", type=int, default=10)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--passes", type=int, default=2)
    ap.add_argument("--source-size", default="320x240", help="WIDTHxHEIGHT of the JPEGs")
    ap.add_argument("--image-size", type=int, default=224, help="the crop the loader makes")
    ap.add_argument("--json", dest="json_out")
    args = ap.parse_args()
    width, height = (int(v) for v in args.source_size.lower().split("x"))
    work = Path(tempfile.mkdtemp(prefix="zoo-tput-"))
    try:
        build_folder(work / "data", args.images, args.classes, width, height)
        common = [str(work / "data"), str(args.workers), str(args.passes),
                  str(args.image_size)]
        results = {"torchvision": run(TORCHVISION, *common, "-"),
                   "zoo cache off": run(ZOO, *common, "cache-off"),
                   "zoo cache on": run(ZOO, *common, "cache-on")}
    finally:
        shutil.rmtree(work, ignore_errors=True)
    base = results["torchvision"]["images_per_s"]
    for name, r in results.items():
        print(f"{name:<16} {r['images_per_s']:8.1f} images/s ({r['images_per_s'] / base:.2f}× "
              f"torchvision)  scan {r['scan_s']:.2f} s  peak RSS {r['maxrss_mb']:.0f} MB")
    if args.json_out:
        Path(args.json_out).write_text(json.dumps({"args": vars(args), **results}, indent=2))


if __name__ == "__main__":
    main()
