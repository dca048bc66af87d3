"""``zoo compare --emit DIR`` and ``--collect DIR``: the output of the sweep commands
(the work is :mod:`zoo.tools.sweep`, through :mod:`zoo.api`)."""
from __future__ import annotations

from zoo import api
from zoo.cli.output import console, print_json


def emit_cmd(model, strategies, directory, *, as_json: bool, quiet: bool, **options) -> None:
    manifest = api.emit_sweep(model, strategies, directory, **options)
    if as_json:
        print_json(manifest)
        return
    if quiet:
        return
    out = console()
    folder = manifest["dir"]
    out.print(f"wrote {len(manifest['jobs'])} job(s) to {folder}/jobs/ "
              f"({', '.join(manifest['strategies'])} × seeds {manifest['seeds']})",
              markup=False, highlight=False)
    out.print(f"run them:  {folder}/run_local.sh [-j N]   or   sbatch {folder}/slurm.sbatch"
              f"   or   python {folder}/submit_submitit.py", markup=False, highlight=False)
    out.print(f"then:      zoo compare --collect {folder}", markup=False, highlight=False)


def collect_cmd(directory, as_json: bool, quiet: bool, print_leaderboard) -> None:
    result = api.collect_sweep(directory)
    if as_json:
        print_json(result)
        return
    if quiet:
        return
    out = console()
    if result["runs"]:
        print_leaderboard(out, result)
    else:
        out.print(f"no finished runs yet in {result['dir']}", markup=False)
    for name in result["missing"]:
        out.print(f"missing: {name}", style="yellow", markup=False)
    for line in result["failed"]:
        out.print(f"failed:  {line}", style="yellow", markup=False)
