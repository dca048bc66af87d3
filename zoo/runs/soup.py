"""``zoo soup``: model soups (Wortsman et al., ICML 2022) — the weights of several fine-tuned
runs of one model averaged into one model, at no extra inference cost.

- ``uniform``: the mean of every run's weights.
- ``greedy`` (the paper's recipe): runs sorted by val accuracy (the job's monitor metric),
  best first; each next run joins the soup only if the soup's val metric does not drop.

Averaging only makes sense for runs that share the model, the starting weights, the classes,
the head and the data splits, and whose tensors have the same names and shapes (adapters
merged); :func:`check_compatible` refuses anything else, naming the runs and the reason.
Integer buffers (BatchNorm's ``num_batches_tracked``) are taken from the best run. The soup is
evaluated on the test split and written as a normal run folder (:mod:`zoo.runs.derived`).
"""
from __future__ import annotations

import time
from pathlib import Path

from zoo.catalog import get_catalog
from zoo.errors import CheckpointError, ConfigError
from zoo.io import runfolder as rundir
from zoo.runs import derived
from zoo.runs.reuse import load_run, torch_device

METHODS = ("greedy", "uniform")


def soup(run_dirs: list[str | Path], *, method: str = "greedy", out: str | Path | None = None,
         name: str | None = None, catalog=None, device: str = "cpu",
         log=None) -> dict:
    """Average the runs ``run_dirs``; write the soup's run folder; return its summary."""
    started = time.perf_counter()
    log = log or (lambda message: None)
    if method not in METHODS:
        raise ConfigError(f"--method {method!r}: choose greedy or uniform")
    paths = list(dict.fromkeys(Path(p) for p in run_dirs))
    if len(paths) < 2:
        raise ConfigError("a soup needs at least two different run folders "
                          "(zoo soup RUN RUN ...)")
    catalog = catalog or get_catalog()
    device = torch_device(device)
    if out is not None:
        rundir.check_out_dir(out)  # before any work
    runs = [load_run(p, catalog, device) for p in paths]
    check_compatible(runs)
    first = runs[0]
    bundle = derived.eval_bundle(catalog, first)
    metric, mode = derived.monitor_of(first.job)
    if len(bundle.val) == 0 and method == "greedy":
        raise ConfigError("the runs have no val split: a greedy soup needs one to decide "
                          "which runs to add — use --method uniform")
    val_loader = derived.split_loader(bundle.val, first.job, device) if len(bundle.val) \
        else None

    def score(model) -> float | None:
        if val_loader is None:
            return None
        value = derived.evaluate_on(model, val_loader, catalog, first.job, len(first.classes),
                                    device)
        return value.get(metric, value.get("loss"))

    rows = []
    for run in runs:
        rows.append({"run_dir": str(run.dir), "val": score(run.model), "in_soup": False})
        log(f"ingredient {run.dir.name}: val {metric} {_fmt(rows[-1]['val'])}")
    order = sorted(range(len(runs)), key=lambda i: _rank_key(rows[i]["val"], mode))
    # copies: state_dict() tensors are the live parameters that load_state_dict overwrites
    states = [{k: v.detach().clone() for k, v in run.model.state_dict().items()}
              for run in runs]
    model = runs[order[0]].model
    chosen, soup_val, curve = _cook(model, states, rows, order, method, mode, score, log)
    for i in chosen:
        rows[i]["in_soup"] = True
    model.load_state_dict(average([states[i] for i in chosen], states[order[0]]))
    test_loader = derived.split_loader(bundle.test, first.job, device)
    test_raw = derived.evaluate_on(model, test_loader, catalog, first.job, len(first.classes),
                                   device, full=True)
    extra = {"soup": {"method": method, "metric": metric, "mode": mode,
                      "ingredients": [rows[i] for i in order], "val": soup_val,
                      "used": len(chosen), "greedy_curve": curve},
             "best_epoch": None, "monitor": {"metric": metric, "mode": mode, "best": soup_val}}
    best = runs[order[0]]

    def plot(run_dir: Path) -> None:
        labels = [Path(rows[i]["run_dir"]).name for i in order] + ["soup"]
        values = [rows[i]["val"] or 0.0 for i in order] + [soup_val or 0.0]
        derived.bar_plot(run_dir / "soup.png", labels, values,
                         [rows[i]["in_soup"] for i in order] + [True], f"val {metric}",
                         f"{method} soup of {len(chosen)}/{len(runs)} runs (blue: in the soup)")

    return derived.write_run(best, model, out=out or best.job.out, name=name,
                             kind=f"soup-{method}", test_raw=test_raw, summary_extra=extra,
                             catalog=catalog, started=started, plot=plot)


def _cook(model, states, rows, order, method, mode, score, log):
    """The indices of the runs in the soup, its val value, and the greedy curve."""
    base = states[order[0]]
    if method == "uniform":
        model.load_state_dict(average(states, base))
        value = score(model)
        log(f"uniform soup of {len(states)} runs: val {_fmt(value)}")
        return list(order), value, []
    chosen, best = [order[0]], rows[order[0]]["val"]
    curve = [{"added": rows[order[0]]["run_dir"], "val": best, "kept": True}]
    for i in order[1:]:
        model.load_state_dict(average([states[j] for j in chosen + [i]], base))
        value = score(model)
        kept = value is not None and best is not None and derived.better(value, best, mode)
        curve.append({"added": rows[i]["run_dir"], "val": value, "kept": kept})
        log(f"+ {Path(rows[i]['run_dir']).name}: val {_fmt(value)} "
            f"({'kept' if kept else 'left out'})")
        if kept:
            chosen.append(i)
            best = value
    return chosen, best, curve


def average(states: list[dict], reference: dict) -> dict:
    """The element-wise mean of floating-point tensors; other tensors (integer buffers)
    from ``reference``."""
    out = {}
    for key, ref in reference.items():
        if ref.is_floating_point():
            total = sum(s[key].double() for s in states)
            out[key] = (total / len(states)).to(ref.dtype)
        else:
            out[key] = ref.clone()
    return out


def check_compatible(runs) -> None:
    """A one-line :class:`CheckpointError` naming two runs and why they cannot be averaged."""
    first = runs[0]
    ref_state = first.model.state_dict()
    ref_splits = _splits(first)
    for run in runs[1:]:
        pair = f"{first.dir} and {run.dir}"
        for key, what in (("model", "models"), ("head", "heads"), ("classes", "classes"),
                          ("image_size", "input sizes"), ("pretrained_cfg", "preprocessing")):
            if run.meta.get(key) != first.meta.get(key):
                raise CheckpointError(f"cannot average {pair}: different {what} "
                                      f"({_short(first.meta.get(key))} vs "
                                      f"{_short(run.meta.get(key))}) — a soup averages "
                                      "fine-tunes of one model on one task")
        if _weights(run) != _weights(first):
            raise CheckpointError(f"cannot average {pair}: they started from different "
                                  f"weights ({_weights(first)} vs {_weights(run)}) — a soup "
                                  "needs one shared starting point")
        if _splits(run) != ref_splits:
            raise CheckpointError(f"cannot average {pair}: different data splits (data or "
                                  "seed differ) — the greedy soup's val split must be held "
                                  "out from every run")
        state = run.model.state_dict()
        _check_tensors(pair, ref_state, state)


def _check_tensors(pair: str, ref_state: dict, state: dict) -> None:
    missing, extra = sorted(set(ref_state) - set(state)), sorted(set(state) - set(ref_state))
    if missing or extra:
        names = (missing + extra)[:3]
        hint = (" — adapters not merged into the weights" if any(
            "lora_" in n or "base_layer" in n or "prompt" in n for n in names) else "")
        raise CheckpointError(f"cannot average {pair}: their tensors differ "
                              f"({len(missing) + len(extra)} names, e.g. {names}){hint}")
    for key, tensor in ref_state.items():
        if state[key].shape != tensor.shape or state[key].dtype != tensor.dtype:
            raise CheckpointError(f"cannot average {pair}: tensor {key} is "
                                  f"{tuple(tensor.shape)} {tensor.dtype} vs "
                                  f"{tuple(state[key].shape)} {state[key].dtype}")


def _splits(run):
    try:
        saved = rundir.read_splits(run.dir)
    except CheckpointError:
        saved = {}
    ids = {s: saved.get(s) for s in ("train", "val", "test")}
    data = run.job.data
    return ids, (data.name, data.path, repr(data.params), run.job.seed, data.val_split,
                 data.test_split, data.max_per_class)


def _weights(run) -> tuple:
    summary = rundir.read_summary(run.dir) or {}
    weights = summary.get("weights") if isinstance(summary.get("weights"), dict) else {}
    return (weights.get("source"), weights.get("sha256"), weights.get("tag"))


def _rank_key(value, mode):
    if value is None:
        return (1, 0.0)
    return (0, -value if mode == "max" else value)


def _short(value) -> str:
    text = str(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _fmt(value) -> str:
    return "-" if value is None else f"{value:.4f}"
