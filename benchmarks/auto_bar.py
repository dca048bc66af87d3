"""The bar of ``auto`` (issue 16): on several tasks, auto vs the best fixed strategy at its
best learning rate, from one command.

For every task, fixed strategy, LR and seed: one in-process ``zoo.api.run`` (the same job
``zoo run`` builds from the flags); for every task and seed one ``auto`` run at the job's
LR (auto chooses the strategy and its LR itself, on the train and val splits only). Then,
per task:

* each fixed strategy's **best LR** is the one with the highest mean *val* accuracy over the
  seeds (summary.json ``monitor.best``); the **best fixed strategy** is the one whose
  best-LR runs have the highest mean val accuracy — chosen on val, compared on test;
* auto's test accuracy (mean ± std over the seeds) against the best fixed strategy's:
  **met** when auto is below it by at most max(1 point, 1 std of the best fixed);
* auto's wall time (mean over seeds) against one fine-tune run's (``finetune`` at its best
  LR, mean over seeds): **met** at ≤ 1.5×.

Tasks (efficientnet_lite0 with its ImageNet weights from the zoo-efficientnet-lite plugin),
in two sets (``TASKS[...]["set"]``; the tables report them apart):

* ``tune`` — the tasks auto was tuned on: ``digits`` (30 train/class, 64 px), ``demo``
  (40/class, 64 px), ``photos`` (the built-in six-photo crops, 64 px), ``invert``
  (shift:digits, inverted, severity 5: a shifted task), ``digits-large`` (100 train/class,
  8 epochs) — 5 epochs unless said;
* ``held-out`` — never used to tune auto (issue 26), built from scikit-image's photos
  (``photos`` with ``images``/``crop``/``gray``): ``photos14-5shot`` (14 colour and grayscale
  photos), ``textures-gray-5shot`` (7 grayscale photos + 3 textures) and
  ``colour-gray-5shot`` (8 colour photos made grey) — 224 px, small crops (10-25 % of the
  short side), 5 train / 5 val / 15 test a class, 15 epochs at batch 8: few-shot,
  full-resolution tasks built for fine-tuning to beat the probe —; ``photos-50shot`` (8 colour
  photos + 3 textures, 50 train/class, 128 px, 4 epochs), ``blur-20shot``
  (shift:photos, all 18 photos blurred at severity 4, 20 train/class, 128 px, 6 epochs) and
  ``blur-20shot-224`` (the same at 224 px).

A task may carry its own ``epochs``, ``batch_size``, ``lrs`` and ``seeds``. Two processes
can share the bar (``--tasks`` or ``--group`` apart, each with its own ``--json``); then
``--table-from a.json,b.json`` prints one table.

    python benchmarks/auto_bar.py [--tasks digits,demo,...] [--group tune|held-out|all] \\
        [--strategies linear-probe,finetune,lp-ft] [--lrs 3e-3,1e-2] [--seeds 3] \\
        [--json rows.json]
    python benchmarks/auto_bar.py --table-from rows.json[,more.json]   # the tables, no run
    python benchmarks/auto_bar.py --fixed-from rows.json --json new.json  # auto only, again
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time

PHOTOS7 = ["astronaut", "chelsea", "coffee", "rocket", "hubble_deep_field",
           "immunohistochemistry", "retina"]  # skimage's colour photos less the motorcycle
# A task: its data (the job's ``data:``; ``image_size`` included), epochs, and ``set``:
# ``tune`` (auto was tuned on it) or ``held-out`` (never used to tune auto: reported apart).
# Optional ``lrs`` / ``seeds`` / ``batch_size`` override the command line's for that task
# (few-shot tasks: a small batch gives fine-tuning enough steps in few epochs).
TASKS = {
    "invert": {"data": {"name": "shift:digits", "max_per_class": 30, "image_size": 64,
                        "params": {"transform": "invert", "severity": 5}},
               "epochs": 5, "set": "tune"},
    "digits": {"data": {"name": "digits", "max_per_class": 30, "image_size": 64},
               "epochs": 5, "set": "tune"},
    "photos": {"data": {"name": "photos", "image_size": 64}, "epochs": 5, "set": "tune"},
    "demo": {"data": {"name": "demo", "params": {"per_class": 40}, "image_size": 64},
             "epochs": 5, "set": "tune"},
    "digits-large": {"data": {"name": "digits", "max_per_class": 100, "image_size": 64},
                     "epochs": 8, "set": "tune"},
    # held-out (issue 26): real photos of scikit-image, built without a download. The 224-px
    # few-shot tasks split 25 crops a class into 5 train, 5 val, 15 test; small crops (10-25 %
    # of the short side) make them texture-like, far from ImageNet. batch 8: 5 shots x 14
    # classes is 9 steps an epoch, not 3 (fine-tuning needs the steps).
    "photos14-5shot": {"data": {"name": "photos", "image_size": 224, "val_split": 0.2,
                                "test_split": 0.6, "params": {
                                    "size": 224, "per_class": 25, "crop": [0.1, 0.25],
                                    "images": [*PHOTOS7, "gray"]}},
                       "epochs": 15, "batch_size": 8, "set": "held-out"},
    "textures-gray-5shot": {"data": {"name": "photos", "image_size": 224, "val_split": 0.2,
                                     "test_split": 0.6, "params": {
                                         "size": 224, "per_class": 25, "crop": [0.1, 0.25],
                                         "images": "gray,textures"}},
                            "epochs": 15, "batch_size": 8, "set": "held-out"},
    "colour-gray-5shot": {"data": {"name": "photos", "image_size": 224, "val_split": 0.2,
                                   "test_split": 0.6, "params": {
                                       "size": 224, "per_class": 25, "crop": [0.1, 0.25],
                                       "images": "colour", "gray": True}},
                          "epochs": 15, "batch_size": 8, "set": "held-out"},
    "photos-50shot": {"data": {"name": "photos", "image_size": 128, "max_per_class": 50,
                               "val_split": 0.1, "test_split": 0.2, "params": {
                                   "size": 128, "per_class": 80, "crop": [0.1, 0.25],
                                   "images": "colour,textures"}},
                      "epochs": 4, "set": "held-out"},
    # the full-resolution twin of blur-20shot (eighth session): a few-shot 224-px task where
    # fine-tuning beats the probe (one exploratory seed: +5.9 points at LR 3e-3)
    "blur-20shot-224": {"data": {"name": "shift:photos", "image_size": 224, "val_split": 0.2,
                                 "test_split": 0.4, "params": {
                                     "size": 224, "per_class": 50, "images": "all",
                                     "crop": [0.2, 0.4], "transform": "blur", "severity": 4}},
                        "epochs": 6, "batch_size": 16, "set": "held-out"},
    "blur-20shot": {"data": {"name": "shift:photos", "image_size": 128, "val_split": 0.2,
                             "test_split": 0.4, "params": {
                                 "size": 128, "per_class": 50, "images": "all",
                                 "crop": [0.2, 0.4], "transform": "blur", "severity": 4}},
                    "epochs": 6, "batch_size": 16, "set": "held-out"},
}
GROUPS = ("tune", "held-out")


def one(args, task: str, strategy: str, lr: float | None, seed: int, out: str) -> dict:
    from zoo.api import load_job, run

    spec = TASKS[task]
    data = spec["data"]
    train = {"epochs": spec["epochs"], "batch_size": spec.get("batch_size", args.batch_size)}
    if lr is not None:
        train["lr"] = lr
    job = load_job(model=args.model, flags={
        "strategy": {"name": strategy}, "seed": seed, "device": args.device,
        "data": dict(data, num_workers=0), "train": train, "out": out,
        "name": f"{task}-{strategy}-{lr}-{seed}"})
    plan: dict = {}
    start = time.perf_counter()
    summary = run(job, quiet=True, on_plan=plan.update)
    chose = next((n for n in plan.get("notes", []) if str(n).startswith("auto chose")), None)
    return {"task": task, "set": spec["set"], "strategy": strategy, "lr": lr, "seed": seed,
            "val": (summary.get("monitor") or {}).get("best"),
            "test": summary["test"]["accuracy"], "seconds": round(time.perf_counter() - start, 2),
            "weights": summary["weights"]["source"], "chose": chose,
            "ran": [p["name"] for p in summary.get("phases", [])],
            # auto's fallback (the probe it measured): whether the run kept it
            "fallback_kept": (summary.get("fallback") or {}).get("kept")}


def mean_sd(values: list[float]) -> tuple[float, float]:
    return statistics.mean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def group_of(rows: list[dict], task: str) -> str:
    """A task's set: the one its rows recorded, else TASKS's, else held-out (never tuned on)."""
    recorded = next((r["set"] for r in rows if r["task"] == task and r.get("set")), None)
    return recorded or TASKS.get(task, {}).get("set", "held-out")


def verdict(rows: list[dict], task: str) -> tuple[str, bool] | None:
    """One task's verdict row and whether the bar is met; None without auto rows."""
    mine = [r for r in rows if r["task"] == task]
    fixed: dict = {}
    for r in mine:
        if r["strategy"] != "auto":
            fixed.setdefault(r["strategy"], {}).setdefault(r["lr"], []).append(r)
    auto = [r for r in mine if r["strategy"] == "auto"]
    if not auto or not fixed:
        return None
    best_lr = {s: max(by_lr, key=lambda lr: statistics.mean(x["val"] for x in by_lr[lr]))
               for s, by_lr in fixed.items()}
    best = max(best_lr, key=lambda s: statistics.mean(x["val"] for x in fixed[s][best_lr[s]]))
    b_test, b_sd = mean_sd([x["test"] for x in fixed[best][best_lr[best]]])
    a_test, a_sd = mean_sd([x["test"] for x in auto])
    allowed = max(0.01, b_sd)
    gap = b_test - a_test
    ft = fixed.get("finetune", {}).get(best_lr.get("finetune"), [])
    ratio = (statistics.mean(x["seconds"] for x in auto) /
             statistics.mean(x["seconds"] for x in ft)) if ft else None
    ok = gap <= allowed and (ratio is None or ratio <= 1.5)
    return (f"| {task} | {best} ({best_lr[best]:g}) | {100 * b_test:.1f} ± {100 * b_sd:.1f} | "
            f"{100 * a_test:.1f} ± {100 * a_sd:.1f} | {100 * gap:+.1f} ({100 * allowed:.1f}) | "
            f"{f'{ratio:.2f}×' if ratio is not None else '-'} | {'met' if ok else 'NOT met'} |",
            ok)


def verdicts(rows: list[dict]) -> list[str]:
    """The markdown tables, one per set (tune, then held-out): per task, the best fixed
    strategy (chosen on val) vs auto, and how many tasks of the set meet the bar."""
    lines: list[str] = []
    tasks = list(dict.fromkeys(r["task"] for r in rows))
    groups = list(dict.fromkeys([*GROUPS, *(group_of(rows, t) for t in tasks)]))
    for group in groups:
        found = [v for t in tasks if group_of(rows, t) == group
                 for v in [verdict(rows, t)] if v is not None]
        if not found:
            continue
        lines += [f"{group} tasks" + (" (auto was tuned on these)" if group == "tune" else
                                      " (never used to tune auto)"), "",
                  "| task | best fixed (LR, chosen on val) | its test % | auto test % "
                  "| gap (allowed) | auto time / one finetune | bar |",
                  "|---|---|---|---|---|---|---|", *(line for line, _ in found), "",
                  f"{group}: bar met on {sum(ok for _, ok in found)} of {len(found)} task(s)",
                  ""]
    return lines[:-1]


def detail(rows: list[dict]) -> list[str]:
    """Every (task, strategy, LR): val and test mean ± std, mean seconds."""
    lines = ["| task | strategy | LR | val % | test % | s/run |", "|---|---|---|---|---|---|"]
    groups: dict = {}
    for r in rows:
        groups.setdefault((r["task"], r["strategy"], r["lr"]), []).append(r)
    for (task, strategy, lr), rs in groups.items():
        v, vs = mean_sd([r["val"] for r in rs])
        t, ts = mean_sd([r["test"] for r in rs])
        lines.append(f"| {task} | {strategy} | {'job' if lr is None else f'{lr:g}'} | "
                     f"{100 * v:.1f} ± {100 * vs:.1f} | {100 * t:.1f} ± {100 * ts:.1f} | "
                     f"{statistics.mean(r['seconds'] for r in rs):.1f} |")
    return lines


def load_rows(paths: str) -> list[dict]:
    """The rows of one or several (comma-separated) --json files, in order: two processes
    that ran different --tasks give one table."""
    rows: list[dict] = []
    for path in (p for p in paths.split(",") if p):
        with open(path) as f:
            rows += json.load(f)
    return rows


def chosen_tasks(args) -> list[str]:
    """--tasks (default: every task) restricted to --group."""
    tasks = args.tasks.split(",") if args.tasks else list(TASKS)
    unknown = [t for t in tasks if t not in TASKS]
    if unknown:
        raise SystemExit(f"unknown task {unknown[0]!r}: one of {', '.join(TASKS)}")
    return [t for t in tasks if args.group == "all" or TASKS[t]["set"] == args.group]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="efficientnet_lite0")
    ap.add_argument("--tasks", default=None, help="comma-separated (default: every task)")
    ap.add_argument("--group", default="all", choices=[*GROUPS, "all"],
                    help="only the tasks of this set (tune: auto was tuned on them)")
    ap.add_argument("--strategies", default="linear-probe,finetune,lp-ft")
    ap.add_argument("--lrs", default="3e-3,1e-2", help="(a task's own 'lrs' wins)")
    ap.add_argument("--seeds", type=int, default=3, help="(a task's own 'seeds' wins)")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--json", default=None, help="write every row here as it comes")
    ap.add_argument("--table-from", default=None,
                    help="print the tables of --json file(s), comma-separated, no run")
    ap.add_argument("--fixed-from", default=None,
                    help="take the fixed strategies' rows from --json file(s) of an earlier run "
                         "and run auto only (re-measure auto after a change to auto)")
    args = ap.parse_args(argv)
    if args.table_from:
        rows = load_rows(args.table_from)
    else:
        rows = []
        tasks = chosen_tasks(args)
        seeds = {t: TASKS[t].get("seeds", args.seeds) for t in tasks}
        if args.fixed_from:  # the fixed runs do not depend on auto's code: reuse them
            rows = [r for r in load_rows(args.fixed_from)
                    if r["strategy"] != "auto" and r["task"] in tasks
                    and r["seed"] < seeds[r["task"]]]
        with tempfile.TemporaryDirectory() as out:
            if args.fixed_from and tasks:  # as in a full run, auto is not the process's first
                # job: one unrecorded probe pays the imports and the weights' first load
                one(args, tasks[0], "linear-probe", None, 0, out)
            for task in tasks:
                lrs = TASKS[task].get("lrs") or [float(x) for x in args.lrs.split(",") if x]
                jobs = [] if args.fixed_from else [
                    (s, lr) for s in args.strategies.split(",") for lr in lrs]
                jobs.append(("auto", None))
                for seed in range(seeds[task]):
                    for strategy, lr in jobs:
                        rows.append(one(args, task, strategy, lr, seed, out))
                        print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
                        if args.json:
                            with open(args.json, "w") as f:
                                json.dump(rows, f, indent=1)
    print("\n".join(verdicts(rows)))
    print()
    print("\n".join(detail(rows)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
