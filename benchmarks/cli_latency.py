"""CLI latency: `zoo --help`, warm and cold `zoo list`, vs `import timm, torchvision`.

Each command runs in a fresh process; the median of --repeats runs is printed.  "Cold"
uses an empty ZOO_HOME (no model-list cache); "warm" reuses one filled by a first call.

    python benchmarks/cli_latency.py [--repeats 5]
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

ZOO = [sys.executable, "-m", "zoo"]


def timed(cmd: list[str], env: dict) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                   check=True)
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    base = dict(os.environ, ZOO_OFFLINE="1")
    warm_home = tempfile.mkdtemp(prefix="zoo-warm-")
    rows = {"zoo --help": [], "zoo list (warm)": [], "zoo list (cold)": [],
            "import timm, torchvision": [], "zoo plugins": []}
    timed(ZOO + ["list"], dict(base, ZOO_HOME=warm_home))  # fill the warm cache
    for _ in range(args.repeats):
        rows["zoo --help"].append(timed(ZOO + ["--help"], base))
        rows["zoo plugins"].append(timed(ZOO + ["plugins"], base))
        rows["zoo list (warm)"].append(timed(ZOO + ["list"], dict(base, ZOO_HOME=warm_home)))
        cold = tempfile.mkdtemp(prefix="zoo-cold-")
        rows["zoo list (cold)"].append(timed(ZOO + ["list"], dict(base, ZOO_HOME=cold)))
        shutil.rmtree(cold, ignore_errors=True)
        rows["import timm, torchvision"].append(
            timed([sys.executable, "-c", "import timm, torchvision"], base))
    shutil.rmtree(warm_home, ignore_errors=True)
    med = {k: statistics.median(v) for k, v in rows.items()}
    print(f"median of {args.repeats} fresh processes each")
    print(f"{'command':28} {'seconds':>8}")
    for k, v in med.items():
        print(f"{k:28} {v:8.3f}")
    budget = med["import timm, torchvision"] + 0.5
    print(f"targets: --help <= 0.3 s: {med['zoo --help']:.3f} "
          f"({'met' if med['zoo --help'] <= 0.3 else 'NOT met'}); warm list <= 0.5 s: "
          f"{med['zoo list (warm)']:.3f} ({'met' if med['zoo list (warm)'] <= 0.5 else 'NOT met'}); "
          f"cold list <= import + 0.5 s = {budget:.3f}: {med['zoo list (cold)']:.3f} "
          f"({'met' if med['zoo list (cold)'] <= budget else 'NOT met'})")
    print("command: python " + " ".join(sys.argv))


if __name__ == "__main__":
    main()
