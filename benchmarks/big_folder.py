"""Starting on a big folder: zoo's listing (kept under $ZOO_HOME) against torchvision's.

Generates an ImageFolder of ``--files`` entries in ``--classes`` class folders, every entry
a hard link to one of 16 small JPEGs (so 1,000,000 files cost ~1,000 directories and no
image data), with directory times set an hour back as a real dataset's are.  Then times
whole processes, each fresh (warm page cache: one untimed walk first):

- ``torchvision``: ``ImageFolder(root)`` (its listing) plus building the model
  (``timm.create_model``, random init) — the reference a user compares against;
- ``zoo --plan`` first (empty ``$ZOO_HOME``: walks and stores the listing) and second
  (reuses it);
- ``zoo run`` time to the first training step, first and second, under
  ``_first_step.py`` (the process is stopped at its first optimizer step).

    python benchmarks/big_folder.py --files 100000 --classes 100
    python benchmarks/big_folder.py --files 1000000 --classes 1000 --skip-run

The folder lives under ``--where`` (default: the temp folder) and is removed at the end.
Prints a table and, with ``--json FILE``, writes every measurement.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
TORCHVISION = ("import sys, timm, torchvision.datasets as d; ds = d.ImageFolder(sys.argv[1]); "
               "timm.create_model(sys.argv[2], pretrained=False, num_classes=len(ds.classes))")


def build_folder(root: Path, files: int, classes: int) -> Path:
    """``files`` hard links to 16 distinct 64×48 JPEGs, ``classes`` class folders."""
    import numpy as np
    from PIL import Image

    seeds = root / ".seeds"  # hidden: skipped by both listings
    seeds.mkdir(parents=True)
    rng = np.random.default_rng(0)
    sources = []
    for i in range(16):
        path = seeds / f"{i}.jpg"
        Image.fromarray(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)).save(path)
        sources.append(str(path))
    per_class = files // classes
    for c in range(classes):
        folder = root / f"class_{c:04d}"
        folder.mkdir()
        for i in range(per_class):
            os.link(sources[(c + i) % 16], folder / f"img_{i:07d}.jpg")
    past = time.time() - 3600
    for here, _, _ in os.walk(root):
        os.utime(here, (past, past))
    return root


def seconds(cmd: list[str], env: dict) -> float:
    start = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"failed: {' '.join(cmd)}\n{proc.stderr[-2000:]}")
    return time.perf_counter() - start


def first_step(cmd: list[str], env: dict, stamp: Path, limit: float = 1800) -> float:
    """Process start to its first optimizer step; the process is stopped there."""
    stamp.unlink(missing_ok=True)
    start = time.time()
    proc = subprocess.Popen([sys.executable, str(HERE / "_first_step.py"), str(stamp), *cmd],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    while not stamp.exists():
        if proc.poll() is not None:
            raise SystemExit(f"zoo run ended before a step: {proc.stderr.read()[-2000:]}")
        if time.time() - start > limit:
            proc.kill()
            raise SystemExit("no first step within the limit")
        time.sleep(0.05)
    time.sleep(0.05)  # the stamp is written; let it be complete
    stepped = float(stamp.read_text() or time.time())
    proc.kill()
    proc.wait()
    return stepped - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=100_000)
    parser.add_argument("--classes", type=int, default=100)
    parser.add_argument("--model", default="resnet18")
    parser.add_argument("--where", default=tempfile.gettempdir())
    parser.add_argument("--skip-run", action="store_true", help="only --plan, no zoo run")
    parser.add_argument("--json", dest="json_out")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="zoo-big-", dir=args.where))
    try:
        results = measure(args, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    for name, value in results.items():
        print(f"{name:<40} {value:8.2f}" if isinstance(value, float) else f"{name:<40} {value}")
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(results, indent=2))


def measure(args, work: Path) -> dict:
    started = time.perf_counter()
    data = build_folder(work / "data", args.files, args.classes)
    results: dict = {"files": args.files, "classes": args.classes, "model": args.model,
                     "generate_s": time.perf_counter() - started}
    env = dict(os.environ, ZOO_HOME=str(work / "home"), ZOO_OFFLINE="1")
    python = sys.executable
    seconds([python, "-c", TORCHVISION, str(data), args.model], env)  # warm the page cache
    results["torchvision_listing_and_model_s"] = seconds(
        [python, "-c", TORCHVISION, str(data), args.model], env)
    plan = [python, "-m", "zoo", "run", f"timm:{args.model}", "--data", str(data),
            "--weights", "none", "--plan", "--json"]
    results["zoo_plan_first_s"] = seconds(plan, env)
    results["zoo_plan_second_s"] = seconds(plan, env)
    if not args.skip_run:
        shutil.rmtree(work / "home", ignore_errors=True)  # the first run walks again
        run = ["-m", "zoo", "run", f"timm:{args.model}", "--data", str(data),
               "--weights", "none", "--epochs", "1", "--batch-size", "32",
               "--image-size", "64", "--out", str(work / "runs"), "--quiet"]
        stamp = work / "stamp"
        results["zoo_first_step_first_s"] = first_step(run, env, stamp)
        results["zoo_first_step_second_s"] = first_step(run, env, stamp)
    return results


if __name__ == "__main__":
    main()
