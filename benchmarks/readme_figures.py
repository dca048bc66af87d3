"""The figures README.md states about ``make run``, measured instead of written by hand.

Runs the ``make run`` job — ``zoo run resnet18 --strategy finetune`` on the built-in demo
data, as a fresh process, into a temporary folder — and prints its test accuracy (from the
run's ``summary.json``), the number of epochs and seed, and the wall time of the whole
command (start-up included, as a user sees it).  The README quotes what this prints; rerun
it on a quiet machine after changes that could move either figure:

    .venv/bin/python benchmarks/readme_figures.py [--repeats N]

With ``--repeats N`` the command runs N times and the median wall time is printed; the
accuracy is the same every time (same seed, CPU), which the script checks.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time

COMMAND = ["run", "resnet18", "--strategy", "finetune"]


def one_run() -> tuple[dict, float, float]:
    """``(summary, wall seconds, CPU seconds)`` of one ``zoo run resnet18 --strategy
    finetune``."""
    with tempfile.TemporaryDirectory(prefix="zoo-readme-") as out:
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        start = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "zoo", *COMMAND, "--out", out,
                               "--json"], capture_output=True, text=True,
                              env={**os.environ, "ZOO_OFFLINE": os.environ.get("ZOO_OFFLINE",
                                                                               "1")})
        wall = time.perf_counter() - start
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        if proc.returncode != 0:
            sys.exit(f"zoo {' '.join(COMMAND)} failed ({proc.returncode}):\n{proc.stderr}")
        cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        return json.loads(proc.stdout), wall, cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args()
    load_before = os.getloadavg()[0]
    runs = [one_run() for _ in range(max(1, args.repeats))]
    accuracies = {round(s["test"]["accuracy"], 4) for s, _, _ in runs}
    if len(accuracies) != 1:
        sys.exit(f"the same seed gave different accuracies: {sorted(accuracies)}")
    summary = runs[0][0]
    wall = statistics.median(w for _, w, _ in runs)
    cpu = statistics.median(c for _, _, c in runs)
    print(f"command: zoo {' '.join(COMMAND)}  (what `make run` runs)")
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, python "
          f"{platform.python_version()}, torch {summary.get('versions', {}).get('torch')}")
    print(f"weights: {summary.get('weights', {}).get('source', '?')}; epochs: "
          f"{summary.get('epochs', '?')}; seed: {summary.get('seed', '?')}")
    print(f"test accuracy: {summary['test']['accuracy']:.3f}")
    print(f"wall time: {wall:.0f} s (median of {len(runs)}); CPU time {cpu:.0f} s; load "
          f"average {load_before:.1f} before, {os.getloadavg()[0]:.1f} after (a busy machine "
          "inflates the wall time: quote a run at load < 1)")


if __name__ == "__main__":
    main()
