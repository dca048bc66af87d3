"""``zoo compare --soup``: after the compared runs, one greedy soup per seed of the runs that
share that seed's splits (:mod:`zoo.runs.soup`), added to the leaderboard as strategy
``soup``.  A soup that cannot be made (fewer than two completed runs, runs that cannot be
averaged) is a failed row with its reason, as a failing strategy is."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

from zoo.errors import RunInterrupted, ZooError
from zoo.runs.soup import soup

STRATEGY = "soup"


def add_soup_rows(result: dict, cmp_dir: Path, catalog, log: Callable) -> None:
    """Append one ``soup`` row per seed to ``result['runs']`` (in place)."""
    if STRATEGY not in result["strategies"]:
        result["strategies"].append(STRATEGY)
    for seed in result["seeds"]:
        done = [r for r in result["runs"] if r["seed"] == seed and r["status"] == "completed"
                and r["strategy"] != STRATEGY and r.get("run_dir")]
        row = {"strategy": STRATEGY, "seed": seed, "status": "failed", "run_dir": None,
               "error": None, "test": {}, "best_epoch": None, "wall_seconds": 0.0,
               "cpu_seconds": 0.0, "run_seconds": None, "trainable_params": None,
               "trainable_last_phase": None, "total_params": None, "chosen": None,
               "notes": [], "phases": []}
        start, cpu_start = time.perf_counter(), time.process_time()
        try:
            summary = soup([r["run_dir"] for r in done], out=cmp_dir,
                           name=f"soup-seed{seed}", catalog=catalog)
        except RunInterrupted:
            raise
        except ZooError as exc:
            row["error"] = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        else:
            used = [Path(i["run_dir"]).name for i in summary["soup"]["ingredients"]
                    if i["in_soup"]]
            row.update(status="completed", test=summary["test"], run_dir=summary["run_dir"],
                       run_seconds=summary["seconds"],
                       total_params=summary["params"]["total"],
                       notes=[f"greedy soup of {', '.join(used)}"])
        row["wall_seconds"] = round(time.perf_counter() - start, 3)
        row["cpu_seconds"] = round(time.process_time() - cpu_start, 3)
        result["runs"].append(row)
        log(f"soup seed {seed}: " + (row["notes"][0] if row["status"] == "completed"
                                     else f"FAILED: {row['error']}"))
