"""``zoo compare``: several strategies × seeds on identical data, one leaderboard.

:func:`compare` runs every (strategy, seed) pair through :func:`zoo.engine.pipeline.run` into one
comparison folder ``OUT/NAME/<strategy>-seed<seed>/``.  Every strategy name and job is
validated first (:func:`check_strategies`); a run that fails is recorded in its
row with its error and the others still run.  For one seed every strategy sees the same
splits (the split depends on the data and the seed only; ``compare.json`` records whether
the runs' ``splits.json`` agree).  The folder gets, atomically (:mod:`zoo.io.atomic`):

- ``compare.json``: every run (test metrics, wall time, trainable params, what ``auto``
  chose), the leaderboard (mean ± std per metric over seeds), the winner and its margin;
  rewritten after every run, so an interrupted comparison keeps what it finished.
- ``compare.csv``: the leaderboard, one row per strategy, and
- ``compare.png``: the ranking metric as bars with ±1 std error bars, and mean val curves
  (both drawn by :mod:`zoo.tools.compare_report`).

Imports no torch until a run starts.
"""
from __future__ import annotations

import dataclasses
import hashlib
import math
import statistics
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

from zoo.engine.budget import bounded_int
from zoo.catalog import get_catalog
from zoo.io import atomic
from zoo.io import runfolder as rundir
from zoo.errors import ConfigError, RunInterrupted, ZooError
from zoo.jobspec import deep_merge
from zoo.layering import load_job
from zoo.tools.compare_report import leaderboard_csv, plot_compare
from zoo.tools.compare_soup import add_soup_rows
from zoo.tools.lr_find import resolve_auto_lr

SCHEMA = 1


def split_sets(sets: list[str], strategies: list[str]) -> dict[str, list[str]]:
    """``--set`` items per strategy: ``KEY=V`` applies to all, ``NAME:KEY=V`` to NAME only."""
    common, own = [], {s: [] for s in strategies}
    for item in sets or []:
        key = item.partition("=")[0]
        if ":" in key:
            # the longest compared name the key starts with: a qualified strategy
            # (acme:bitfit:train.lr=0.1) has a colon of its own
            prefix = max((s for s in strategies if key.startswith(s + ":")), key=len,
                         default=None)
            if prefix is None:
                raise ConfigError(f"--set {item!r}: '{key.rsplit(':', 1)[0]}' is not one of "
                                  f"the compared strategies ({', '.join(strategies)})")
            own[prefix].append(item[len(prefix) + 1:])
        else:
            common.append(item)
    return {s: common + own[s] for s in strategies}


#: seeds per strategy: each is a whole training run
MAX_SEEDS = 1000


def compare(model: str, strategies: list[str], *, seeds: int | list[int] = 1,
            flags: dict | None = None, sets: list[str] | None = None, config=None,
            preset: str | None = None, out: str | None = None, name: str | None = None,
            catalog=None, log: Callable | None = None, soup: bool = False) -> dict:
    """Run each strategy with each seed; write and return the comparison (``compare.json``).

    :param seeds: a count (seeds ``base, base+1, ...`` from the job's ``seed``) or a list.
    :param flags: a job-tree fragment applied to every run (``{"train": {"epochs": 3}}``).
    :param sets: ``--set`` strings; ``NAME:KEY=VALUE`` applies to strategy NAME only.
    :param soup: add a greedy soup of each seed's runs as strategy ``soup``
        (:mod:`zoo.tools.compare_soup`).
    """
    from zoo.engine.pipeline import run  # lazy: imports torch

    log = log or (lambda msg: None)
    catalog = catalog or get_catalog()
    strategies = list(dict.fromkeys(s.strip() for s in strategies if s and s.strip()))
    if not strategies:
        raise ConfigError("compare needs at least one strategy (--strategies a,b,c)")
    per_strategy_sets = split_sets(list(sets or []), strategies)
    flags = dict(flags or {})
    # one job with the common settings: base seed, output folder, the ranking metric
    common = [s for s in (sets or []) if ":" not in s.partition("=")[0]]
    base = load_job(model, config=config, preset=preset, flags=flags, sets=common,
                    registry=catalog.registry, catalog=catalog)
    seed_list = seed_list_of(seeds, base.seed)
    check_strategies(catalog, strategies, lambda strategy: load_job(
        model, config=config, preset=preset,
        flags=deep_merge(flags, {"strategy": {"name": strategy}}),
        sets=per_strategy_sets[strategy], registry=catalog.registry, catalog=catalog))
    out_dir = Path(out or base.out)
    name = name or base.name
    arch = base.model.split(":")[-1]
    cmp_dir = rundir.new_run_dir(out_dir, name or f"compare-{arch}-"
                                 f"{datetime.now().strftime('%Y%m%d-%H%M%S-%f')}",
                                 arch, "compare")
    metric, mode = _rank_metric(catalog, base)
    result = {
        "schema": SCHEMA, "kind": "compare", "status": "running", "dir": str(cmp_dir),
        "model": base.model, "strategies": strategies, "seeds": seed_list,
        "data": base.data.path or base.data.name, "epochs": base.train.epochs,
        "rank_metric": {"metric": metric, "mode": mode},
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "runs": [], "leaderboard": [], "winner": None, "verdict": "",
    }
    total = len(seed_list) * len(strategies)
    _warm_up(model, strategies[0], flags, per_strategy_sets[strategies[0]], config, preset,
             catalog, load_job, deep_merge)
    started = time.perf_counter()
    lr_found: dict = {}  # --lr auto: one LR range test per strategy, reused for every seed
    try:
        for seed in seed_list:
            for strategy in strategies:
                row = _one_run(model, strategy, seed, flags, per_strategy_sets[strategy],
                               config, preset, cmp_dir, catalog, load_job, deep_merge, run,
                               lr_found=lr_found, log=log)
                result["runs"].append(row)
                done = len(result["runs"])
                shown = (f"{metric} {row['test'].get(metric, float('nan')):.4f}"
                         if row["status"] == "completed" else f"FAILED: {row['error']}")
                log(f"[{done}/{total}] {strategy} seed {seed}: {shown} "
                    f"({row['wall_seconds']:.1f}s)"
                    + (f" — auto chose {row['chosen']}" if row.get("chosen") else ""))
                _finish(result, catalog, metric, mode, partial=True)
                atomic.write_json(cmp_dir / "compare.json", result)
    except (KeyboardInterrupt, RunInterrupted):
        result["status"] = "interrupted"
        _finish(result, catalog, metric, mode, partial=True)
        atomic.write_json(cmp_dir / "compare.json", result)
        raise
    if soup:
        add_soup_rows(result, cmp_dir, catalog, log)
    result["status"] = "completed"
    result["seconds"] = round(time.perf_counter() - started, 3)
    _finish(result, catalog, metric, mode, partial=False)
    _write_finished(result, cmp_dir)
    return result


def seed_list_of(seeds: int | list[int], base_seed: int) -> list[int]:
    """``--seeds``: a count (``base, base+1, ...``) or a list; each in ``0..2**32-1``."""
    if isinstance(seeds, int):
        bounded_int(seeds, "--seeds", 1, MAX_SEEDS, "every seed is a whole training run "
                    "per strategy; pass a list of seeds for more control")
        seed_list = [base_seed + i for i in range(seeds)]
    else:
        seed_list = list(dict.fromkeys(int(s) for s in seeds))
        if not seed_list:
            raise ConfigError("compare needs at least one seed")
        bounded_int(len(seed_list), "the number of seeds", 1, MAX_SEEDS)
    if any(not 0 <= s < 2**32 for s in seed_list):
        raise ConfigError(f"--seeds: every seed must be in 0..{2**32 - 1}, got {seed_list}")
    return seed_list


def _write_finished(result: dict, cmp_dir: Path) -> None:
    """compare.json, compare.csv and compare.png of a finished comparison."""
    atomic.write_json(cmp_dir / "compare.json", result)
    atomic.write_text(cmp_dir / "compare.csv", leaderboard_csv(result))
    try:
        plot_compare(result, cmp_dir / "compare.png")
    except Exception as exc:  # a picture must never lose a finished comparison
        result.setdefault("warnings", []).append(f"could not draw compare.png: {exc}")
        atomic.write_json(cmp_dir / "compare.json", result)


def check_strategies(catalog, strategies: list[str], job_of: Callable) -> None:
    """Every strategy name, and each strategy's own job (its --set items), before anything
    trains: a typo in the last name must not cost the runs before it."""
    for strategy in strategies:
        catalog.get("strategies", strategy)  # UnknownComponentError with a did-you-mean
        job_of(strategy)


def _warm_up(model, strategy, flags, sets, config, preset, catalog, load_job, deep_merge):
    """Plan the first job once (imports, model build, data) so that one-time process
    start-up costs are not charged to the first strategy's wall time."""
    from zoo.engine.pipeline import plan_job  # lazy: torch

    try:
        job = load_job(model, config=config, preset=preset,
                       flags=deep_merge(flags, {"strategy": {"name": strategy}}), sets=sets,
                       registry=catalog.registry, catalog=catalog)
        if job.strategy.name == "auto":  # its plan runs trials: plan a fine-tune instead
            job = load_job(model, config=config, preset=preset, flags=flags,
                           registry=catalog.registry, catalog=catalog)
        plan_job(job, catalog)
    except Exception:  # the run itself will record the problem in its row
        pass


def _one_run(model, strategy, seed, flags, sets, config, preset, cmp_dir, catalog, load_job,
             deep_merge, run, lr_found: dict | None = None, log: Callable | None = None) -> dict:
    run_name = rundir.sanitise(f"{strategy}-seed{seed}")
    row = {"strategy": strategy, "seed": seed, "status": "failed", "run_dir": None,
           "error": None, "test": {}, "best_epoch": None, "wall_seconds": 0.0,
           "cpu_seconds": 0.0,
           "run_seconds": None, "trainable_params": None, "trainable_last_phase": None,
           "total_params": None, "chosen": None, "notes": [], "phases": []}
    plan_seen: dict = {}
    start, cpu_start = time.perf_counter(), time.process_time()
    try:
        job = load_job(model, config=config, preset=preset,
                       flags=deep_merge(flags, {"strategy": {"name": strategy}, "seed": seed,
                                                "out": str(cmp_dir), "name": run_name}),
                       sets=sets, registry=catalog.registry, catalog=catalog)
        found = None
        if job.train.lr == "auto":  # --lr auto: this strategy's LR range test, once
            if strategy not in (lr_found if lr_found is not None else {}):
                resolved, rec = resolve_auto_lr(job, catalog, log)
                if lr_found is not None:
                    lr_found[strategy] = (resolved, rec)
            else:
                resolved, rec = lr_found[strategy]
            job = dataclasses.replace(job, train=resolved.train, strategy=resolved.strategy)
            found = row["lr_find"] = rec
        summary = run(job, catalog, quiet=True, on_plan=plan_seen.update, lr_find=found)
    except RunInterrupted:
        raise  # Ctrl-C / SIGTERM stops the whole comparison, not just this run
    except ZooError as exc:
        row["error"] = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    except Exception as exc:  # a bug in one strategy must not lose the others
        row["error"] = f"{type(exc).__name__}: {exc}".splitlines()[0]
    else:
        row.update(status="completed", test=summary.get("test", {}),
                   best_epoch=summary.get("best_epoch"), run_seconds=summary.get("seconds"),
                   total_params=summary.get("params", {}).get("total"),
                   trainable_last_phase=summary.get("params", {}).get("trainable_last_phase"))
    row["wall_seconds"] = round(time.perf_counter() - start, 3)
    # CPU time of this process: robust to other load on a shared machine (DataLoader worker
    # processes are not counted: use data.num_workers=0 when comparing CPU time)
    row["cpu_seconds"] = round(time.process_time() - cpu_start, 3)
    if (cmp_dir / run_name).is_dir():
        row["run_dir"] = str(cmp_dir / run_name)
        splits = cmp_dir / run_name / "splits.json"
        if splits.is_file():
            row["splits_sha256"] = hashlib.sha256(splits.read_bytes()).hexdigest()
        # what auto chose: the run folder's summary says it ("auto": {"chosen", "lr", ...})
        choice = (rundir.read_summary(cmp_dir / run_name) or {}).get("auto")
        if isinstance(choice, dict) and choice.get("chosen"):
            row["chosen"] = choice["chosen"]
    if plan_seen:
        phases = plan_seen.get("phases", [])
        row["phases"] = [{"name": p["name"], "epochs": p["epochs"],
                          "trainable_params": p["trainable_params"]} for p in phases]
        row["trainable_params"] = max((p["trainable_params"] for p in phases), default=None)
        row["notes"] = list(plan_seen.get("notes", []))
    return row


def _rank_metric(catalog, job) -> tuple[str, str]:
    metric = job.monitor.metric
    if metric == "loss":
        return "loss", "min"
    # a monitor that cannot rank: the catalog's first default metric (plugins declare it)
    fallback = (catalog.default_metrics() or ["loss"])[0]
    fallback_mode = ("min" if fallback == "loss"
                     else catalog.get("metrics", fallback).options.get("mode", "max"))
    try:
        comp = catalog.get("metrics", metric)
        if comp.options.get("scalar", True) is False:
            return fallback, fallback_mode
        return metric, job.monitor.mode or comp.options.get("mode", "max")
    except ZooError:
        return fallback, fallback_mode


def _mean_std(values: list[float]) -> tuple[float, float]:
    values = [v for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    if not values:
        return float("nan"), float("nan")
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def _finish(result: dict, catalog, metric: str, mode: str, partial: bool) -> None:
    """Leaderboard, winner and verdict from ``result['runs']`` (in place)."""
    runs = result["runs"]
    board = []
    for strategy in result["strategies"]:
        rows = [r for r in runs if r["strategy"] == strategy]
        if not rows:
            continue
        ok = [r for r in rows if r["status"] == "completed"]
        entry = {"strategy": strategy, "runs": len(ok), "failed": len(rows) - len(ok),
                 "metrics": {}, "wall_seconds": {}, "trainable_params": None,
                 "error": next((r["error"] for r in rows if r["error"]), None)}
        keys = sorted({k for r in ok for k in r["test"]})
        for key in keys:
            mean, std = _mean_std([r["test"].get(key) for r in ok])
            entry["metrics"][key] = {"mean": mean, "std": std}
        wall_mean, wall_std = _mean_std([r["wall_seconds"] for r in ok])
        entry["wall_seconds"] = {"mean": wall_mean, "std": wall_std}
        cpu_mean, cpu_std = _mean_std([r.get("cpu_seconds") for r in ok])
        entry["cpu_seconds"] = {"mean": cpu_mean, "std": cpu_std}
        entry["trainable_params"] = next((r["trainable_params"] for r in ok
                                          if r["trainable_params"] is not None), None)
        chosen = [r["chosen"] for r in ok if r.get("chosen")]
        if chosen:
            entry["chosen"] = {c: chosen.count(c) for c in dict.fromkeys(chosen)}
        board.append(entry)

    def score(e):
        value = e["metrics"].get(metric, {}).get("mean", float("nan"))
        if e["runs"] == 0 or math.isnan(value):
            return (1, 0.0)
        return (0, -value if mode == "max" else value)

    board.sort(key=score)
    for i, e in enumerate(board, 1):
        e["rank"] = i if e["runs"] else None
    result["leaderboard"] = board
    ranked = [e for e in board if e["runs"]]
    result["winner"] = None
    if not ranked:
        result["verdict"] = "no strategy completed a run"
        return
    win = ranked[0]
    w = win["metrics"][metric]
    result["winner"] = {"strategy": win["strategy"], "metric": metric, "mean": w["mean"],
                        "std": w["std"]}
    scale, unit = (100.0, " points") if _fraction_metric(metric, ranked) else (1.0, "")
    text = (f"{win['strategy']} won on test {metric}: {w['mean']:.4f} ± {w['std']:.4f} "
            f"over {win['runs']} run(s)")
    if len(ranked) > 1:
        second = ranked[1]
        s = second["metrics"][metric]
        margin = abs(w["mean"] - s["mean"])
        noise = max(w["std"], s["std"])
        result["winner"].update(runner_up=second["strategy"], margin=margin)
        text += (f", ahead of {second['strategy']} ({s['mean']:.4f} ± {s['std']:.4f}) by "
                 f"{margin * scale:.2f}{unit}")
        if margin <= noise:
            text += " — within one std of the seeds: not a clear win"
            result["winner"]["clear"] = False
        else:
            result["winner"]["clear"] = True
    failed = [e["strategy"] for e in board if e["failed"]]
    if failed:
        text += f"; failed: {', '.join(failed)}"
    if partial:
        text += " (so far)"
    result["verdict"] = text
    # the same splits for every strategy of a seed?
    same = {}
    for seed in result["seeds"]:
        hashes = {r.get("splits_sha256") for r in runs if r["seed"] == seed
                  and r.get("splits_sha256")}
        if hashes:
            same[str(seed)] = len(hashes) == 1
    result["splits_identical"] = all(same.values()) if same else None


def _fraction_metric(metric: str, entries: list[dict]) -> bool:
    if metric in ("loss", "nll"):
        return False
    values = [e["metrics"][metric]["mean"] for e in entries if metric in e["metrics"]]
    return all(0.0 <= v <= 1.0 for v in values)
