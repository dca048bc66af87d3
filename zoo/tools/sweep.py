"""``zoo compare --emit DIR`` / ``--collect DIR``: a comparison as independent jobs.

A comparison's (strategy, seed) runs do not depend on each other, so on a cluster they are
jobs for its scheduler.  :func:`emit` validates every job as ``zoo compare`` would, then
writes into DIR::

    sweep.json            what was emitted: model, strategies, seeds, ranking metric, jobs
    jobs/<strategy>-seed<seed>.yaml   one complete job per run (out: DIR, name: the stem)
    jobs.txt              the job files, one a line (array task i runs line i+1)
    run_local.sh          runs every job here, one after another (or -j N at a time)
    slurm.sbatch          a SLURM array: ``sbatch DIR/slurm.sbatch``
    submit_submitit.py    the same array through submitit (``pip install 'zoo[cluster]'``)

Every job is a normal ``zoo run --config JOB`` (``--nproc N`` with ``gpus_per_job`` > 1:
torchrun on the job's node), so its run folder is ``DIR/<strategy>-seed<seed>/`` (a
re-run after a failure gets ``-1``, ``-2``... as any ``zoo run`` does).

:func:`collect` reads those run folders — the latest completed attempt of each job, else
its latest attempt — and writes ``compare.json``, ``compare.csv`` and ``compare.png`` as
``zoo compare`` does, naming the jobs that are missing (never started, or no summary) and
the ones that failed or are still running.  Imports no torch.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import re
import shlex
import stat
import sys
from datetime import datetime, timezone
from pathlib import Path

from zoo.catalog import get_catalog
from zoo.errors import ConfigError
from zoo.io import atomic
from zoo.io import runfolder as rundir
from zoo.jobspec import deep_merge
from zoo.layering import load_job
from zoo.tools.compare import SCHEMA, _finish, _rank_metric, check_strategies, split_sets
from zoo.tools.compare_report import leaderboard_csv, plot_compare

MANIFEST = "sweep.json"


def _seed_list(base_seed: int, seeds) -> list[int]:
    if isinstance(seeds, int):
        if seeds < 1:
            raise ConfigError(f"--seeds must be at least 1, got {seeds}")
        return [base_seed + i for i in range(seeds)]
    out = list(dict.fromkeys(int(s) for s in seeds))
    if not out:
        raise ConfigError("compare needs at least one seed")
    return out


def _absolute_paths(job) -> None:
    """Data folders as absolute paths: a scheduler starts jobs in another folder."""
    for section in (job.data, job.source_data, job.target_data):
        if section is not None and section.path and Path(section.path).expanduser().exists():
            section.path = str(Path(section.path).expanduser().resolve())


def emit(model: str, strategies: list[str], directory: str | Path, *, seeds=1,
         flags: dict | None = None, sets: list[str] | None = None, config=None,
         preset: str | None = None, gpus_per_job: int = 1, catalog=None) -> dict:
    """Write one job file per (strategy, seed) and the launchers into ``directory``;
    return the manifest (``sweep.json``)."""
    catalog = catalog or get_catalog()
    strategies = list(dict.fromkeys(s.strip() for s in strategies if s and s.strip()))
    if not strategies:
        raise ConfigError("compare needs at least one strategy (--strategies a,b,c)")
    per_strategy = split_sets(list(sets or []), strategies)
    flags = dict(flags or {})
    common = [s for s in (sets or []) if ":" not in s.partition("=")[0]]
    base = load_job(model, config=config, preset=preset, flags=flags, sets=common,
                    registry=catalog.registry)
    seed_list = _seed_list(base.seed, seeds)
    if any(not 0 <= s < 2**32 for s in seed_list):
        raise ConfigError(f"--seeds: every seed must be in 0..{2**32 - 1}, got {seed_list}")
    check_strategies(catalog, strategies, lambda strategy: load_job(
        model, config=config, preset=preset,
        flags=deep_merge(flags, {"strategy": {"name": strategy}}),
        sets=per_strategy[strategy], registry=catalog.registry))
    folder = rundir.check_out_dir(directory, "--emit").resolve()
    if (folder / MANIFEST).exists():
        raise ConfigError(f"{folder} already holds an emitted comparison ({MANIFEST}) — "
                          "choose a new --emit folder, or --collect this one")
    jobs = []
    for seed in seed_list:
        for strategy in strategies:
            name = rundir.sanitise(f"{strategy}-seed{seed}")
            job = load_job(model, config=config, preset=preset, flags=deep_merge(
                flags, {"strategy": {"name": strategy}, "seed": seed, "out": str(folder),
                        "name": name}), sets=per_strategy[strategy], registry=catalog.registry)
            _absolute_paths(job)
            path = folder / "jobs" / f"{name}.yaml"
            atomic.write_text(path, job.to_yaml())
            jobs.append({"name": name, "strategy": strategy, "seed": seed,
                         "job": str(path.relative_to(folder))})
    metric, mode = _rank_metric(catalog, base)
    manifest = {"schema": SCHEMA, "kind": "sweep", "model": base.model,
                "strategies": strategies, "seeds": seed_list,
                "data": base.data.path or base.data.name, "epochs": base.train.epochs,
                "rank_metric": {"metric": metric, "mode": mode},
                "gpus_per_job": gpus_per_job, "jobs": jobs,
                "created": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    _write_launchers(folder, manifest)
    atomic.write_json(folder / MANIFEST, manifest)
    return dict(manifest, dir=str(folder))


# -- launchers -----------------------------------------------------------------------------
def _zoo_command(gpus: int) -> str:
    python = shlex.quote(sys.executable)
    nproc = f" --nproc {gpus}" if gpus > 1 else ""
    return f'"${{ZOO_PYTHON:-{python}}}" -m zoo run --config "$JOB" --quiet{nproc}'


def _write_launchers(folder: Path, manifest: dict) -> None:
    jobs = [folder / j["job"] for j in manifest["jobs"]]
    gpus = int(manifest["gpus_per_job"])
    atomic.write_text(folder / "jobs.txt", "".join(f"{p}\n" for p in jobs))
    here = shlex.quote(str(folder))
    local = f"""#!/usr/bin/env bash
# Run every job of this comparison on this machine: ./run_local.sh [-j N]
# (N jobs at a time, default 1).  Then: zoo compare --collect {here}
set -u
cd {here}
PARALLEL=1
if [ "${{1:-}}" = "-j" ]; then PARALLEL="${{2:-1}}"; fi
run_one() {{
  JOB="$1"
  if {_zoo_command(gpus)} > "logs/$(basename "$JOB" .yaml).log" 2>&1; then
    echo "done   $JOB"
  else
    echo "FAILED $JOB (see logs/)"
  fi
}}
export -f run_one
export ZOO_PYTHON="${{ZOO_PYTHON:-{shlex.quote(sys.executable)}}}"
mkdir -p logs
xargs -P "$PARALLEL" -I{{}} bash -c 'run_one "$@"' _ {{}} < jobs.txt
"""
    slurm = f"""#!/usr/bin/env bash
# One SLURM array task per job of this comparison: sbatch {here}/slurm.sbatch
# (add your site's options: --partition, --account, --time ...). Then:
# zoo compare --collect {here}
#SBATCH --job-name=zoo-compare
#SBATCH --array=0-{len(jobs) - 1}
#SBATCH --ntasks=1
#SBATCH --cpus-per-task=8
#SBATCH --gpus-per-task={gpus}
#SBATCH --output={folder}/logs/%A_%a.log
set -u
cd {here}
JOB=$(sed -n "$((SLURM_ARRAY_TASK_ID + 1))p" jobs.txt)
{_zoo_command(gpus)}
"""
    submitit = f"""\"\"\"Submit this comparison as a SLURM array through submitit:
python {folder}/submit_submitit.py [--partition P] [--timeout-min M] [--gpus N]
(pip install 'zoo[cluster]'). Then: zoo compare --collect {folder}\"\"\"
from zoo.tools.sweep import submit_with_submitit

if __name__ == "__main__":
    submit_with_submitit({str(folder)!r})
"""
    (folder / "logs").mkdir(exist_ok=True)
    for name, text in (("run_local.sh", local), ("slurm.sbatch", slurm),
                       ("submit_submitit.py", submitit)):
        atomic.write_text(folder / name, text)
    path = folder / "run_local.sh"
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP)


def submit_with_submitit(directory: str, argv: list[str] | None = None) -> list[str]:
    """Submit every job of ``directory`` as one submitit array; return the job ids."""
    try:
        import submitit  # lazy: an optional dependency (the cluster extra)
    except ImportError:
        raise SystemExit("submitit is not installed — pip install 'zoo[cluster]', or use "
                         f"sbatch {directory}/slurm.sbatch") from None
    parser = argparse.ArgumentParser(description="submit a zoo comparison through submitit")
    parser.add_argument("--partition", default=None)
    parser.add_argument("--timeout-min", type=int, default=240)
    parser.add_argument("--gpus", type=int, default=None)
    parser.add_argument("--cluster", default=None, help="slurm (default: auto) | local")
    args = parser.parse_args(argv)
    folder = Path(directory)
    manifest = json.loads((folder / MANIFEST).read_text())
    gpus = args.gpus or int(manifest.get("gpus_per_job", 1))
    executor = submitit.AutoExecutor(folder=str(folder / "logs" / "submitit"),
                                     cluster=args.cluster)
    executor.update_parameters(timeout_min=args.timeout_min, gpus_per_node=gpus,
                               tasks_per_node=1, slurm_partition=args.partition,
                               name="zoo-compare")
    commands = [[sys.executable, "-m", "zoo", "run", "--config", str(folder / j["job"]),
                 "--quiet", *(["--nproc", str(gpus)] if gpus > 1 else [])]
                for j in manifest["jobs"]]
    with executor.batch():
        submitted = [executor.submit(submitit.helpers.CommandFunction(c)) for c in commands]
    ids = [j.job_id for j in submitted]
    print(f"submitted {len(ids)} job(s): {', '.join(ids)}")
    return ids


# -- collecting ----------------------------------------------------------------------------
def _attempts(folder: Path, name: str) -> list[Path]:
    """``name``, ``name-1``, ``name-2``...: every run folder of one job, oldest first."""
    pattern = re.compile(re.escape(name) + r"(?:-(\d+))?")
    found = []
    for path in folder.iterdir() if folder.is_dir() else []:
        m = pattern.fullmatch(path.name)
        if m and path.is_dir():
            found.append((int(m.group(1) or 0), path))
    return [p for _, p in sorted(found)]


def _read_summary(run_dir: Path) -> dict | None:
    try:
        data = json.loads((run_dir / "summary.json").read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _row(job: dict, folder: Path) -> dict:
    row = {"strategy": job["strategy"], "seed": job["seed"], "status": "missing",
           "run_dir": None, "error": None, "test": {}, "best_epoch": None,
           "wall_seconds": None, "cpu_seconds": None, "run_seconds": None,
           "trainable_params": None, "trainable_last_phase": None, "total_params": None,
           "chosen": None, "notes": [], "phases": []}
    attempts = [(p, _read_summary(p)) for p in _attempts(folder, job["name"])]
    done = [(p, s) for p, s in attempts if s and s.get("status") == "completed"]
    path, summary = (done or attempts or [(None, None)])[-1]
    if path is None:
        row["error"] = "not started (no run folder)"
        return row
    row["run_dir"] = str(path)
    if (path / "splits.json").is_file():  # the same splits for every strategy of a seed?
        row["splits_sha256"] = hashlib.sha256((path / "splits.json").read_bytes()).hexdigest()
    if summary is None:
        row["error"] = "no summary.json (not started, or killed before writing it)"
        return row
    status = summary.get("status")
    row["status"] = status if status in ("completed", "failed", "running") else "failed"
    if row["status"] != "completed":
        row["error"] = summary.get("error") or f"status: {status}"
        return row
    params = summary.get("params") or {}
    phases = summary.get("phases") or []
    row.update(test=summary.get("test") or {}, best_epoch=summary.get("best_epoch"),
               run_seconds=summary.get("seconds"), wall_seconds=summary.get("seconds"),
               total_params=params.get("total"),
               trainable_last_phase=params.get("trainable_last_phase"),
               trainable_params=params.get("trainable_last_phase"),
               phases=[{k: p.get(k) for k in ("name", "epochs")} for p in phases
                       if isinstance(p, dict)])
    return row


def collect(directory: str | Path) -> dict:
    """``compare.json`` (+ csv, png) from the finished run folders of an emitted comparison."""
    folder = Path(directory)
    try:
        manifest = json.loads((folder / MANIFEST).read_text())
        jobs = manifest["jobs"]
    except (OSError, ValueError, KeyError, TypeError):
        raise ConfigError(f"{folder} is not an emitted comparison (no readable {MANIFEST}) "
                          "— pass the folder given to `zoo compare ... --emit`") from None
    rows = [_row(job, folder) for job in jobs]
    metric, mode = manifest["rank_metric"]["metric"], manifest["rank_metric"]["mode"]
    missing = [j["name"] for j, r in zip(jobs, rows) if r["status"] == "missing"]
    failed = [f"{j['name']}: {r['error']}" for j, r in zip(jobs, rows)
              if r["status"] in ("failed", "running")]
    result = {"schema": SCHEMA, "kind": "compare", "dir": str(folder.resolve()),
              "status": "completed" if not missing and not failed else "partial",
              "model": manifest["model"], "strategies": manifest["strategies"],
              "seeds": manifest["seeds"], "data": manifest["data"],
              "epochs": manifest["epochs"], "rank_metric": manifest["rank_metric"],
              "created": manifest.get("created"), "collected": datetime.now(
                  timezone.utc).isoformat(timespec="seconds"),
              "runs": [r for r in rows if r["status"] != "missing"],
              "missing": missing, "failed": failed,
              "leaderboard": [], "winner": None, "verdict": ""}
    _finish(result, None, metric, mode, partial=bool(missing))
    if missing:
        result["verdict"] += f"; missing: {', '.join(missing)}"
    atomic.write_json(folder / "compare.json", result)
    atomic.write_text(folder / "compare.csv", leaderboard_csv(result))
    try:
        plot_compare(result, folder / "compare.png")
    except Exception as exc:  # noqa: BLE001 - a picture must never lose the collection
        result.setdefault("warnings", []).append(f"could not draw compare.png: {exc}")
        atomic.write_json(folder / "compare.json", result)
    return result
