"""Peak memory of one fine-tune: `zoo run` vs timm's `train.py` vs fastai (issue 27 §3).

Two jobs, as in the issue, each side in its own fresh process with one torch thread
(OMP_NUM_THREADS=1, torch.set_num_threads(1)) and no DataLoader workers, same backbone
(timm resnet18, random init: nothing is downloaded), same epochs, batch size, image size
and optimizer (AdamW, lr 3e-3, weight decay 0.05, cosine, no warm-up):

- ``fine-tune``: 2,100 JPEGs of 320×240 (10 classes; 1,680 train / 210 val / 210 test
  folders), 128 px;
- ``few-shot``: 160 JPEGs of 320×240 (10 classes; 100 train / 30 val / 30 test), 224 px.

The images are real-looking: random crops of scikit-image's sample photographs, resized to
320×240, jittered, saved as JPEG (quality 90).  Peak RSS is the child's ``ru_maxrss``
(``resource.RUSAGE_CHILDREN`` after each child exits, one child at a time).

timm's ``train.py`` is not part of zoo; get it from the timm repository at the version
installed (``git clone https://github.com/huggingface/pytorch-image-models`` and use its
``train.py``) and pass ``--timm-train PATH`` (or set ``TIMM_TRAIN_PY``).  fastai runs
in this same interpreter (same torch and timm as the other sides) with ``--fastai-site DIR``
appended to ``sys.path``: a site-packages folder holding fastai, e.g. from
``python -m venv V && V/bin/pip install fastai`` (``V/lib/python3.11/site-packages``); without
it the fastai column is left out and a plain torchvision loop (``plain``) is the second
reference (``--plain`` runs it too).

    python benchmarks/peak_memory.py --timm-train /tmp/timm/train.py \
        --fastai-site /tmp/fastai_venv/lib/python3.11/site-packages \
        [--jobs finetune,fewshot] [--epochs 1] [--only zoo,timm]

``ZOO_MALLOC_THRESHOLD=off`` in the environment measures zoo as glibc lays out its heap
(zoo.engine.allocator); the figures are in docs/benchmarks.md.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
JOBS = {  # name: (train, val, test images per class, image size)
    "finetune": (168, 21, 21, 128),
    "fewshot": (10, 3, 3, 224),
}
CLASSES = 10
BATCH, LR, WD = 32, 3e-3, 0.05


def make_data(root: Path, per_split: tuple[int, int, int], seed: int = 0) -> Path:
    """ImageFolder with train/val/test splits of 320×240 JPEGs cut from skimage photos."""
    if (root / "done").exists():  # made already: an environment without skimage can reuse it
        return root
    import numpy as np
    from PIL import Image
    from skimage import data as photos

    names = ["astronaut", "coffee", "chelsea", "rocket", "cat", "hubble_deep_field",
             "immunohistochemistry", "colorwheel", "retina"]  # bundled: no download
    sources = []
    for name in names:
        try:
            img = getattr(photos, name)()
        except Exception:  # a sample missing from this skimage install: skip it
            continue
        if img.ndim == 3 and img.shape[2] >= 3:
            sources.append(Image.fromarray(np.ascontiguousarray(img[..., :3])))
    rng = np.random.default_rng(seed)
    for split, count in zip(("train", "val", "test"), per_split):
        for c in range(CLASSES):
            folder = root / split / f"class{c:02d}"
            folder.mkdir(parents=True, exist_ok=True)
            src = sources[c % len(sources)]
            for i in range(count):
                w, h = src.size
                cw, ch = int(w * rng.uniform(0.4, 1.0)), int(h * rng.uniform(0.4, 1.0))
                x, y = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
                im = src.crop((x, y, x + cw, y + ch)).resize((320, 240))
                arr = np.asarray(im, dtype=np.float32) * rng.uniform(0.7, 1.3, size=3)
                arr += rng.normal(0, 6, size=arr.shape)
                Image.fromarray(arr.clip(0, 255).astype(np.uint8)).save(
                    folder / f"{i:04d}.jpg", quality=90)
    (root / "done").write_text("ok")
    return root


ZOO = r"""
import sys
from zoo.cli import main
data, out, size, epochs = sys.argv[1:5]
try:
    main(["run", "resnet18", "-s", "finetune", "--weights", "none", "--data", data,
          "--epochs", epochs, "--batch-size", "%d", "--lr", "%g", "--image-size", size,
          "--set", "train.weight_decay=%g", "--set", "data.num_workers=0",
          "--out", out, "--name", "run", "--quiet"])
except SystemExit as exc:
    if exc.code:
        raise
""" % (BATCH, LR, WD)

FASTAI = r"""
import sys
sys.path.append(sys.argv[5])  # fastai's own packages; torch and timm stay the shared ones
import torch, timm
torch.set_num_threads(1)
from fastai.vision.all import (ImageDataLoaders, Learner, RandomResizedCrop, Normalize,
                               imagenet_stats, accuracy, CrossEntropyLossFlat, Flip)
data, out, size, epochs = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
dls = ImageDataLoaders.from_folder(data, train="train", valid="val", bs=%d, num_workers=0,
                                   item_tfms=RandomResizedCrop(size, min_scale=0.35),
                                   batch_tfms=[Flip(), Normalize.from_stats(*imagenet_stats)],
                                   device="cpu")
model = timm.create_model("resnet18", pretrained=False, num_classes=len(dls.vocab))
learn = Learner(dls, model, loss_func=CrossEntropyLossFlat(), metrics=accuracy, path=out,
                wd=%g)
learn.fit_one_cycle(epochs, %g, pct_start=0.0)
learn.save("model")
""" % (BATCH, WD, LR)

PLAIN = r"""
import sys, torch, timm, torchvision
from torchvision import transforms as T
torch.set_num_threads(1); torch.manual_seed(0)
data, out, size, epochs = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
norm = T.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
train_tf = T.Compose([T.RandomResizedCrop(size), T.RandomHorizontalFlip(), T.ToTensor(), norm])
eval_tf = T.Compose([T.Resize(int(size / 0.875)), T.CenterCrop(size), T.ToTensor(), norm])
ds = {s: torchvision.datasets.ImageFolder(f"{data}/{s}", train_tf if s == "train" else eval_tf)
      for s in ("train", "val", "test")}
dl = {s: torch.utils.data.DataLoader(d, batch_size=%d, shuffle=s == "train", num_workers=0)
      for s, d in ds.items()}
model = timm.create_model("resnet18", pretrained=False, num_classes=len(ds["train"].classes))
opt = torch.optim.AdamW(model.parameters(), lr=%g, weight_decay=%g)
sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs * len(dl["train"]))
def evaluate(split):
    model.eval(); right = 0
    with torch.inference_mode():
        for x, y in dl[split]:
            right += (model(x).argmax(1) == y).sum().item()
    return right / len(ds[split])
for _ in range(epochs):
    model.train()
    for x, y in dl["train"]:
        loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad(); loss.backward(); opt.step(); sched.step()
    evaluate("val")
evaluate("test")
torch.save(model.state_dict(), f"{out}/model.pth")
""" % (BATCH, LR, WD)


def timm_command(train_py: str, data: Path, out: Path, size: int, epochs: int) -> list[str]:
    return [sys.executable, train_py, "--data-dir", str(data), "--train-split", "train",
            "--val-split", "val", "--model", "resnet18", "--num-classes", str(CLASSES),
            "--img-size", str(size), "--epochs", str(epochs), "-b", str(BATCH),
            "--opt", "adamw", "--lr", str(LR), "--weight-decay", str(WD), "--sched", "cosine",
            "--warmup-epochs", "0", "--workers", "0", "--no-prefetcher", "--device", "cpu",
            "--output", str(out), "--log-interval", "1000"]


def measure(cmd: list[str], env: dict, log: Path) -> dict:
    """Run one child; its own peak RSS (MB) and CPU time from os.wait4's rusage.

    Linux counts the parent's RSS at fork in the child's ``ru_maxrss`` (kept across exec):
    the parent must stay small, so :func:`main` makes the data in a child of its own."""
    start = time.perf_counter()
    with open(log, "w") as sink:
        proc = subprocess.Popen(cmd, env=env, stdout=sink, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - start
    if proc.returncode:
        sys.stderr.write(log.read_text()[-3000:])
        return {"error": f"exit {proc.returncode}"}
    return {"maxrss_mb": round(usage.ru_maxrss / 1024), "wall_s": round(wall, 1),
            "cpu_s": round(usage.ru_utime + usage.ru_stime, 1)}


def sides(args) -> dict[str, callable]:
    """name -> (data, out, size) -> command, for every side that can run here."""
    found = {"zoo": lambda d, o, s: [sys.executable, "-c", ZOO, str(d), str(o), str(s),
                                     str(args.epochs)]}
    if args.timm_train:
        found["timm"] = lambda d, o, s: timm_command(args.timm_train, d, o, s, args.epochs)
    if args.fastai_site:
        found["fastai"] = lambda d, o, s: [sys.executable, "-c", FASTAI, str(d), str(o),
                                           str(s), str(args.epochs), args.fastai_site]
    if args.plain or not args.fastai_site:
        found["plain"] = lambda d, o, s: [sys.executable, "-c", PLAIN, str(d), str(o), str(s),
                                          str(args.epochs)]
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--timm-train", default=os.environ.get("TIMM_TRAIN_PY"))
    parser.add_argument("--fastai-site", default=os.environ.get("FASTAI_SITE"),
                        help="a site-packages folder holding fastai (appended to sys.path)")
    parser.add_argument("--plain", action="store_true", help="also the plain torchvision loop")
    parser.add_argument("--jobs", default="finetune,fewshot")
    parser.add_argument("--only", default=None, help="comma-separated sides to run")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--workdir", default=None, help="keep data here (default: a temp dir)")
    args = parser.parse_args(argv)
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    work = Path(args.workdir or tempfile.mkdtemp(prefix="zoo_peak_mem_"))
    runners = sides(args)
    if args.only:
        runners = {k: v for k, v in runners.items() if k in args.only.split(",")}
    results = {}
    for job in args.jobs.split(","):
        *per_split, size = JOBS[job]
        data = work / f"data_{job}"
        subprocess.run([sys.executable, "-c", "import sys; sys.path.insert(0, sys.argv[1]); "
                        "from peak_memory import make_data; from pathlib import Path; "
                        "make_data(Path(sys.argv[2]), tuple(map(int, sys.argv[3:])))",
                        str(HERE), str(data), *map(str, per_split)], check=True)
        row = results[job] = {}
        for name, command in runners.items():
            out = Path(tempfile.mkdtemp(prefix=f"{name}_", dir=work))
            row[name] = measure(command(data, out, size), env, out / "log.txt")
            print(job, name, json.dumps(row[name]), flush=True)
        refs = [r["maxrss_mb"] for n, r in row.items() if n != "zoo" and "maxrss_mb" in r]
        if refs and "maxrss_mb" in row.get("zoo", {}):
            ratio = row["zoo"]["maxrss_mb"] / min(refs)
            row["zoo_vs_lowest"] = round(ratio, 3)
            print(f"{job}: zoo {row['zoo']['maxrss_mb']} MB, lowest reference {min(refs)} MB,"
                  f" ratio {ratio:.3f} (target <= 1.10: {'met' if ratio <= 1.10 else 'NOT met'})")
    print(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
