"""The whole process: ``zoo run`` against two plain PyTorch scripts, as a user times them.

Builds an ImageFolder of real photo crops (scikit-image's sample photos, one class per
photo, 48-px crops; ``train/ val/ test/`` = 70/10/20 so every contender sees the same split)
and times whole processes, interleaved (the order rotates every repeat), median of
``--repeats``:

- ``zoo run MODEL --strategy finetune|linear-probe`` with zoo's defaults (metrics, val every
  epoch, checkpoints, plots, model.safetensors, feature cache); only what makes the job the
  same job is set: the data, random init, epochs, batch 32, SGD lr 0.001 (momentum 0.9, no
  weight decay, no Nesterov — the plain loop's optimizer; zoo's defaults are decay 0.05 and
  Nesterov momentum), no augmentation;
- ``plain_bare.py``: the bare loop of a transfer-learning example (train, then test once);
- ``plain_same_work.py``: also validates every epoch, tests the best weights, ``torch.save``.

Each contender runs under ``_first_step.py``, which stamps its first optimizer step: "time
to first training step" is that stamp minus the process start. ``--conditions load`` starts
a bounded busy process (``--load-procs`` pure-Python spinners, killed at the end and
self-terminating after ``--load-seconds``) to compete for the CPU. Linear-probe runs also
time zoo with ``train.feature_cache=off`` (cached vs uncached).

    python benchmarks/whole_process.py                        # ~900 crops, 4 epochs, 3 repeats
    python benchmarks/whole_process.py --quick                # smoke: tiny, 1 epoch, 1 repeat
    python benchmarks/whole_process.py --threads-table        # the threads/workers table

Prints a table and, with ``--json FILE``, writes every measurement.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
PHOTOS = ("astronaut", "camera", "coffee", "chelsea", "rocket", "hubble_deep_field",
          "immunohistochemistry", "retina", "stereo_motorcycle")
SPLITS = (("train", 0.7), ("val", 0.1), ("test", 0.2))
TARGETS = {("idle", "bare"): 1.20, ("idle", "same"): 1.10, ("load", "same"): 1.25}


def build_folder(root: Path, images: int, crop: int = 48, seed: int = 0) -> Path:
    """``images`` crops (``crop`` px) of the scikit-image photos as PNGs in split folders."""
    import numpy as np
    import skimage.data
    from PIL import Image

    rng = np.random.default_rng(seed)
    per_class = max(len(SPLITS) + 1, images // len(PHOTOS))
    for name in PHOTOS:
        photo = getattr(skimage.data, name)()
        photo = photo[0] if isinstance(photo, tuple) else photo  # stereo pairs
        if photo.ndim == 2:
            photo = np.stack([photo] * 3, -1)
        photo = photo[..., :3]
        start = 0
        for split, share in SPLITS:
            count = max(1, round(per_class * share))
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(start, start + count):
                y = int(rng.integers(0, photo.shape[0] - crop))
                x = int(rng.integers(0, photo.shape[1] - crop))
                Image.fromarray(photo[y:y + crop, x:x + crop]).save(folder / f"{i:04d}.png")
            start += count
    return root


def zoo_command(args, data: Path, out: Path, mode: str, cache: str = "auto") -> list[str]:
    cmd = ["-m", "zoo", "run", args.model, "--strategy", mode, "--data", str(data),
           "--weights", "none", "--epochs", str(args.epochs), "--batch-size", "32",
           "--lr", "0.001", "--image-size", str(args.image_size), "--out", str(out),
           "--set", "train.optimizer=sgd", "--set", "train.weight_decay=0",
           "--set", "train.nesterov=false",
           "--set", "data.augment=none"]
    return cmd + (["--set", "train.feature_cache=off"] if cache == "off" else [])


def plain_command(args, script: str, data: Path, out: Path, mode: str) -> list[str]:
    cmd = [str(HERE / script), str(data)] + ([str(out)] if script == "plain_same_work.py"
                                             else [])
    return cmd + ["--epochs", str(args.epochs), "--image-size", str(args.image_size),
                  "--mode", mode, "--model", args.model]


def timed(cmd: list[str], env: dict | None = None) -> dict:
    """Wall seconds of a whole process (``cmd`` under _first_step.py) and its first step."""
    with tempfile.NamedTemporaryFile(suffix=".stamp", delete=False) as f:
        stamp = f.name
    os.unlink(stamp)
    full = [sys.executable, str(HERE / "_first_step.py"), stamp] + cmd
    start = time.time()
    proc = subprocess.run(full, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                          env=env)
    wall = time.time() - start
    if proc.returncode != 0:
        raise SystemExit(f"failed ({proc.returncode}): {' '.join(full)}\n{proc.stderr[-2000:]}")
    first = None
    if os.path.exists(stamp):
        first = float(Path(stamp).read_text()) - start
        os.unlink(stamp)
    return {"wall": wall, "first_step": first}


@contextlib.contextmanager
def cpu_load(procs: int, seconds: float):
    """``procs`` busy processes for the duration of the block (each also stops itself)."""
    code = f"import time\nend = time.time() + {seconds}\nwhile time.time() < end:\n    pass\n"
    busy = [subprocess.Popen([sys.executable, "-c", code]) for _ in range(procs)]
    try:
        time.sleep(0.5)  # let them start spinning
        yield
    finally:
        for p in busy:
            p.kill()
            p.wait()


def contenders(args, data: Path, out: Path, mode: str) -> dict:
    found = {"zoo": zoo_command(args, data, out, mode),
             "bare": plain_command(args, "plain_bare.py", data, out / "plain", mode),
             "same": plain_command(args, "plain_same_work.py", data, out / "plain", mode)}
    if mode == "linear-probe":
        found["zoo_uncached"] = zoo_command(args, data, out, mode, cache="off")
    return found


def measure(args, data: Path, out: Path, mode: str, condition: str) -> dict:
    cmds = contenders(args, data, out, mode)
    names = list(cmds)
    times: dict = {n: [] for n in names}
    with cpu_load(args.load_procs, args.load_seconds) if condition == "load" \
            else contextlib.nullcontext():
        for r in range(args.repeats):
            order = names[r % len(names):] + names[:r % len(names)]  # interleaved, rotating
            for name in order:
                times[name].append(timed(cmds[name]))
    return {n: {"wall": [t["wall"] for t in v], "first_step": [t["first_step"] for t in v]}
            for n, v in times.items()}


def med(values: list) -> float | None:
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def summarise(results: dict) -> list[str]:
    """The printed table: medians, ratios of medians, targets, time to first step."""
    lines = [f"{'condition':9} {'mode':12} {'zoo s':>7} {'bare s':>7} {'same s':>7} "
             f"{'zoo/bare':>8} {'zoo/same':>8}  first step zoo/bare/same s"]
    for (condition, mode), r in results.items():
        z, b, s = (med(r[k]["wall"]) for k in ("zoo", "bare", "same"))
        fz, fb, fs = (med(r[k]["first_step"]) for k in ("zoo", "bare", "same"))
        tb, ts = TARGETS.get((condition, "bare")), TARGETS.get((condition, "same"))
        first = "/".join(f"{v:.2f}" if v is not None else "-" for v in (fz, fb, fs))
        lines.append(f"{condition:9} {mode:12} {z:7.2f} {b:7.2f} {s:7.2f} {z / b:8.2f} "
                     f"{z / s:8.2f}  {first}")
        targets = [f"zoo/bare <= {tb}" if tb else "", f"zoo/same <= {ts}" if ts else ""]
        if fz is not None and fb is not None:
            targets.append(f"first step zoo - bare = {fz - fb:+.2f} s (target <= +1.00)")
        lines.append(f"{'':22} targets: {'; '.join(t for t in targets if t)}")
        if "zoo_uncached" in r:
            u = med(r["zoo_uncached"]["wall"])
            lines.append(f"{'':22} probe cache: uncached {u:.2f} s / cached {z:.2f} s = "
                         f"{u / z:.2f}x faster (target >= 5x)")
    return lines


def threads_table(args, data: Path, out: Path) -> tuple[list[str], list[dict]]:
    """zoo finetune runs across data kind × torch threads × DataLoader workers, interleaved
    (the order rotates every repeat), per condition."""
    configs = [(kind, t, w) for kind in ("in-memory", "files") for t in args.thread_counts
               for w in (0, 1)]
    lines = [f"{'condition':9} {'data':10} {'threads':>7} {'workers':>7} {'median s':>9}"]
    rows = []
    for condition in args.conditions:
        walls: dict = {c: [] for c in configs}
        with cpu_load(args.load_procs, args.load_seconds) if condition == "load" \
                else contextlib.nullcontext():
            for r in range(args.repeats):
                order = configs[r % len(configs):] + configs[:r % len(configs)]
                for kind, threads, workers in order:
                    cmd = zoo_command(args, data, out, "finetune") + [
                        "--set", f"data.num_workers={workers}", "--set",
                        f"data.cache_images={'true' if kind == 'in-memory' else 'false'}"]
                    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
                    walls[(kind, threads, workers)].append(timed(cmd, env)["wall"])
        for (kind, threads, workers), w in walls.items():
            rows.append({"condition": condition, "data": kind, "threads": threads,
                         "workers": workers, "wall": w})
            lines.append(f"{condition:9} {kind:10} {threads:7d} {workers:7d} {med(w):9.2f}")
    return lines, rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--images", type=int, default=900)
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--image-size", type=int, default=64)
    ap.add_argument("--model", default="resnet18")
    ap.add_argument("--modes", default="finetune,linear-probe")
    ap.add_argument("--conditions", default="idle,load")
    ap.add_argument("--load-procs", type=int, default=1)
    ap.add_argument("--load-seconds", type=float, default=1800)
    ap.add_argument("--threads-table", action="store_true",
                    help="time zoo across torch threads x workers instead")
    ap.add_argument("--thread-counts", default="1,2")
    ap.add_argument("--quick", action="store_true",
                    help="smoke run: 90 images, 1 epoch, 1 repeat (override with the flags)")
    ap.add_argument("--json", dest="json_path", help="write every measurement to this file")
    ap.add_argument("--workdir", help="keep the data and run folders here (default: temp)")
    args = ap.parse_args(argv)
    if args.quick:
        given = set(argv if argv is not None else sys.argv[1:])
        for flag, value in (("--images", 90), ("--epochs", 1), ("--repeats", 1)):
            if flag not in given:
                setattr(args, flag[2:], value)
    args.modes = [m for m in args.modes.split(",") if m]
    args.conditions = [c for c in args.conditions.split(",") if c]
    args.thread_counts = [int(t) for t in args.thread_counts.split(",") if t]
    work = Path(args.workdir or tempfile.mkdtemp(prefix="zoo-whole-"))
    data = build_folder(work / "data", args.images)
    out = work / "runs"
    import torch  # lazy: only after the folder is built (the plain scripts import it too)

    head = (f"{args.model}, {args.images} crops ({len(PHOTOS)} photos) at {args.image_size} "
            f"px, {args.epochs} epoch(s), batch 32, SGD lr 0.001, no augmentation; median of "
            f"{args.repeats}; {os.cpu_count()} CPUs, torch {torch.__version__}, default "
            f"threads {torch.get_num_threads()}; load = {args.load_procs} busy process(es)")
    if args.threads_table:
        lines, rows = threads_table(args, data, out)
        report = {"setting": head, "threads_table": rows}
    else:
        results = {(c, m): measure(args, data, out, m, c)
                   for c in args.conditions for m in args.modes}
        lines = summarise(results)
        report = {"setting": head, "results": [{"condition": c, "mode": m, **r}
                                               for (c, m), r in results.items()]}
    print(head)
    print("\n".join(lines))
    print("command: python " + " ".join([sys.argv[0]] + (argv if argv is not None
                                                         else sys.argv[1:])))
    if args.json_path:
        Path(args.json_path).write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
