"""Every strategy on two real-weights tasks: accuracy, trainable %, peak memory, time per epoch.

efficientnet_lite0 with its real ImageNet weights (the zoo-efficientnet-lite plugin) on

* ``photos``: the real-photo task of tests/test_real_transfer.py (six scikit-image photos,
  grey, contrast-jittered crops; 5 train crops per class, half the crops test), 96 px;
* ``digits``: scikit-learn's digits (the built-in ``digits`` dataset), ``max_per_class``
  train images per class, default val/test splits, 64 px.

Each (task, strategy, seed) is its own ``python -m zoo run ... --json -q`` process, so its
peak RSS is that child's alone (``os.wait4``'s rusage: a process's peak only grows, so
strategies sharing one process would hide each other's).  Per strategy it prints one markdown
row: test accuracy mean ± std over the seeds, trainable % of the model (summary.json
``params.trainable_percent``), peak RSS (max over seeds), time per epoch (median of
metrics.jsonl ``seconds`` over all epochs and seeds) and wall time per run (median).  It also
prints the single ``zoo compare`` command that runs the same jobs (same flags, same seeds),
whose accuracy columns are these.  Raw rows go to ``--raw`` (JSON lines) as they come.

    python benchmarks/strategy_table.py [--tasks photos,digits] [--seeds 3] [--epochs 3] \
        [--digits-per-class 30] [--raw rows.jsonl]
    python benchmarks/strategy_table.py --table-from rows.jsonl   # tables again, no run
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from test_real_transfer import make_photo_crops  # noqa: E402  (the task's one definition)

STRATEGIES = "linear-probe,finetune,lp-ft,bitfit,norm-tuning,lora,dora,ssf"


def task_flags(task: str, root: Path, args: argparse.Namespace) -> list[str]:
    """The CLI flags shared by `zoo run` and `zoo compare` for one task."""
    common = ["--epochs", str(args.epochs), "--batch-size", str(args.batch_size)]
    if task == "photos":
        return ["--data", str(root), "--image-size", "96", *common,
                "--set", "data.max_per_class=5", "--set", "data.val_split=0.1",
                "--set", "data.test_split=0.5"]
    if task == "digits":
        return ["--data", "digits", "--image-size", "64", *common,
                "--set", f"data.max_per_class={args.digits_per_class}"]
    raise SystemExit(f"unknown task {task!r}: use photos or digits")


def run_one(flags: list[str], strategy: str, seed: int, out: Path) -> dict:
    """One `zoo run` child; its summary plus peak RSS (MiB) and wall seconds."""
    name = f"{strategy}-seed{seed}"
    cmd = [sys.executable, "-m", "zoo", "run", "efficientnet_lite0", "--strategy", strategy,
           "--seed", str(seed), *flags, "--out", str(out), "--name", name, "--json", "-q"]
    log = out / f"{name}.log"
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    with open(log, "wb") as fh:
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT)
        # wait4, not Popen.wait: its rusage is this child's own (ru_maxrss in KiB on Linux)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
    row = {"strategy": strategy, "seed": seed, "rc": proc.returncode,
           "wall_s": time.perf_counter() - start, "peak_rss_mib": usage.ru_maxrss / 1024,
           # the machine's 1-minute load when the run ended: on a shared CPU it explains times
           "load_1min": os.getloadavg()[0]}
    summary_path = out / name / "summary.json"
    if proc.returncode != 0 or not summary_path.exists():
        lines = log.read_text(errors="replace").strip().splitlines()
        row["error"] = lines[-1] if lines else f"exit {proc.returncode}"
        return row
    summary = json.loads(summary_path.read_text())
    epochs = [json.loads(line) for line in (out / name / "metrics.jsonl").read_text().splitlines()
              if line.strip()]
    row.update(accuracy=summary["test"]["accuracy"],
               trainable_percent=summary["params"]["trainable_percent"],
               epoch_seconds=[e["seconds"] for e in epochs if "seconds" in e],
               feature_cache_s=summary.get("feature_cache_seconds", 0.0))
    return row


def table_row(strategy: str, rows: list[dict]) -> str:
    ok = [r for r in rows if "accuracy" in r]
    if not ok:
        return f"| `{strategy}` | failed: {rows[0].get('error', '?')} | | | | |"
    accs = [r["accuracy"] for r in ok]
    std = statistics.stdev(accs) if len(accs) > 1 else 0.0
    epoch_s = statistics.median(s for r in ok for s in r["epoch_seconds"])
    failed = f" ({len(rows) - len(ok)} failed)" if len(ok) < len(rows) else ""
    return (f"| `{strategy}` | {statistics.mean(accs):.3f} ± {std:.3f}{failed} | "
            f"{ok[0]['trainable_percent']:.2f} % | "
            f"{max(r['peak_rss_mib'] for r in ok):.0f} MiB | {seconds(epoch_s)} | "
            f"{seconds(statistics.median(r['wall_s'] for r in ok))} |")


def seconds(value: float) -> str:
    # a linear probe's epochs on cached features take milliseconds: keep them visible
    return f"{value:.1f} s" if value >= 1 else f"{value:.3f} s"


HEADER = ("| strategy | test accuracy (mean ± std) | trainable | peak RSS | "
          "time per epoch (median) | wall time per run (median) |\n|---|---|---|---|---|---|")


def tables_from_raw(path: str) -> None:
    """Print the tables again from a --raw file (no run): e.g. after a format change."""
    rows = [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
    for task in dict.fromkeys(r["task"] for r in rows):
        print(f"\n### {task}\n\n{HEADER}")
        mine = [r for r in rows if r["task"] == task]
        for strategy in dict.fromkeys(r["strategy"] for r in mine):
            print(table_row(strategy, [r for r in mine if r["strategy"] == strategy]))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tasks", default="photos,digits")
    ap.add_argument("--strategies", default=STRATEGIES)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--digits-per-class", type=int, default=30)
    ap.add_argument("--raw", default=None, help="append every run's row here (JSON lines)")
    ap.add_argument("--table-from", default=None, metavar="RAW",
                    help="print the tables from a --raw file and exit (runs nothing)")
    args = ap.parse_args(argv)
    if args.table_from:
        tables_from_raw(args.table_from)
        return 0
    strategies = args.strategies.split(",")
    with tempfile.TemporaryDirectory() as tmp:
        for task in args.tasks.split(","):
            root = make_photo_crops(Path(tmp) / "photos") if task == "photos" else None
            flags = task_flags(task, root, args)
            print(f"\n### {task}\n")
            print(HEADER, flush=True)
            for strategy in strategies:
                rows = []
                for seed in range(args.seeds):
                    row = run_one(flags, strategy, seed, Path(tmp) / "runs" / task)
                    rows.append({"task": task, **row})
                    if args.raw:
                        with open(args.raw, "a") as fh:
                            fh.write(json.dumps(rows[-1]) + "\n")
                print(table_row(strategy, rows), flush=True)
            shown = [("PHOTOS" if f == str(root) else f) for f in flags]
            print(f"\nzoo compare efficientnet_lite0 --strategies {','.join(strategies)} "
                  f"--seeds {args.seeds} {shlex.join(shown)}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
