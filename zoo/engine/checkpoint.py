"""Resume checkpoints in ``checkpoint/``: one safetensors file per generation, no pickle.

``checkpoint/last.safetensors`` is the whole resume state in ONE file, written atomically
(temp file, fsync, rename, fsync of the folder): the tensors — ``model.*`` (current
weights), ``best.*`` (the best epoch's, where they differ from the model's), ``opt.<i>.*``
(optimizer state), ``term.<i>.*`` (loss terms' own parameters: joint's source head) — and
the JSON state (epoch, best value, history, optimizer layout, loader settings) in its
metadata under ``zoo_checkpoint``.  There is no second file to disagree with it.

``checkpoint/best.safetensors``, while a run trains, is a hard link to the generation that
holds the best epoch's weights (``zoo.engine.best_weights``): memory holds no copy of them.
It is never a resume source.

Before a new generation is written the current one is hard-linked to
``checkpoint/prev.safetensors``; loading validates ``last`` and falls back to ``prev`` (one
epoch older) when ``last`` is missing or damaged.  Run folders written before this format
(``last.safetensors`` + ``last.json``) still load.
"""
from __future__ import annotations

import json
from pathlib import Path

from zoo.engine import best_weights, checkpoint_checks
from zoo.errors import CheckpointError, state_dict_error
from zoo.io import atomic
from zoo.io import runfolder
from zoo.io.runfolder import SCHEMA
from zoo.weights.formats import read_safetensors

LAST, PREV, LEGACY_JSON = "last.safetensors", "prev.safetensors", "last.json"
META_KEY = "zoo_checkpoint"


def save_checkpoint(run_dir: Path, model, state, meta: dict, loss_terms: list | None = None,
                    ) -> dict:
    """Write ``state`` (a :class:`~zoo.engine.loop.FitState`) as the new generation;
    returns where the best epoch's tensors went (``key -> "model.key" | "best.key"``)."""
    current = model.state_dict()
    tensors = {f"model.{k}": v for k, v in current.items()}
    best_from_model: list[str] = []  # best-epoch tensors equal to the model's: stored once
    if state.best_state is not None:
        for k, v in state.best_state.items():
            m = current.get(k)
            if m is not None and _same_tensor(v, m):
                best_from_model.append(k)
            else:
                tensors[f"best.{k}"] = v
    opt_json = None
    if state.optimizer_state is not None:
        opt_json = {"param_groups": [{k: v for k, v in g.items() if k != "params"} | {
            "params": g["params"]} for g in state.optimizer_state["param_groups"]],
            "state": {}}
        for idx, entry in state.optimizer_state["state"].items():
            opt_json["state"][str(idx)] = {}
            for name, value in entry.items():
                if hasattr(value, "shape"):
                    tensors[f"opt.{idx}.{name}"] = value
                    opt_json["state"][str(idx)][name] = "tensor"
                else:
                    opt_json["state"][str(idx)][name] = value
    terms = []
    for i, term in enumerate(loss_terms or []):
        sd = term.state_dict() if hasattr(term, "state_dict") else {}
        for k, v in sd.items():
            tensors[f"term.{i}.{k}"] = v
        terms.append({"name": getattr(term, "name", type(term).__name__), "tensors": len(sd)})
    ema = getattr(state, "ema", None)  # train.ema: the average, in this same file
    if hasattr(ema, "tensors"):
        tensors.update(ema.tensors())
    info = {"schema": SCHEMA, "epoch": state.epoch, "best_value": state.best_value,
            "best_epoch": state.best_epoch, "bad_epochs": state.bad_epochs,
            "stopped_early": bool(getattr(state, "stopped_early", False)),
            "history": state.history, "optimizer": opt_json, "loss_terms": terms,
            "best_from_model": best_from_model, **meta,
            checkpoint_checks.DIGEST_KEY: checkpoint_checks.tensor_digest(tensors),
            **({"ema": ema.info()} if hasattr(ema, "info") else {})}
    folder = Path(run_dir) / "checkpoint"
    _keep_previous(folder)
    # one file, one rename: a signal or SIGKILL at any moment leaves either the previous
    # generation or this one, never a mix
    atomic.save_safetensors(folder / LAST, tensors,
                            {META_KEY: json.dumps(info, default=atomic._jsonable)})
    shared = set(best_from_model)
    return {k: f"model.{k}" if k in shared else f"best.{k}" for k in state.best_state or ()}


def _same_tensor(best, model) -> bool:
    """The best epoch's tensor holds the model's values: shared memory (a frozen
    parameter; safetensors refuses shared memory anyway) or an equal copy (the best epoch
    is the one just ended, the usual case while a run improves). Comparing costs one read
    of both; writing the copy would cost a write of it — a third of the checkpoint."""
    if best.shape != model.shape or best.dtype != model.dtype or best.device != model.device:
        return False
    if not best.numel():
        return False
    import torch  # lazy: torch (this module is imported by run-folder tools)

    return best.data_ptr() == model.data_ptr() or bool(torch.equal(best, model))


def _keep_previous(folder: Path) -> None:
    """Hard-link the current generation to ``prev.safetensors`` (atomically replaced)."""
    last = folder / LAST
    if last.is_file():
        atomic.hard_link(last, folder / PREV)


def read_info(run_dir: str | Path) -> dict:
    """The JSON state of the checkpoint :func:`load_checkpoint` would use (tests, tools)."""
    return _load_generation(Path(run_dir), validate=False)[2]


def load_checkpoint(run_dir: Path, warn=None, epochs: int | None = None):
    """``(model_state, FitState, info)`` from ``checkpoint/``; a one-line error when unusable.

    ``last.safetensors`` is validated; when it is missing or damaged the previous
    generation is used (``warn`` is told why); so is one whose tensor data fails its
    checksum or whose state disagrees with itself or with a plan of ``epochs`` epochs.
    """
    from zoo.engine.state import FitState  # lazy: imports torch

    run_dir = Path(run_dir)
    tensors, _, info = _load_generation(run_dir, warn=warn, epochs=epochs)
    model_state = {k[6:]: v for k, v in tensors.items() if k.startswith("model.")}
    best = {k[5:]: v for k, v in tensors.items() if k.startswith("best.")}
    for k in info.get("best_from_model") or []:
        best[k] = model_state[k].clone()
    best = best or None
    opt = None
    if info.get("optimizer"):
        o = info["optimizer"]
        opt = {"param_groups": o["param_groups"], "state": {}}
        for idx, entry in o["state"].items():
            opt["state"][int(idx)] = {
                name: (tensors[f"opt.{idx}.{name}"] if value == "tensor" else value)
                for name, value in entry.items()}
    terms = {}
    for k, v in tensors.items():
        if k.startswith("term."):
            _, i, name = k.split(".", 2)
            terms.setdefault(int(i), {})[name] = v
    state = FitState(epoch=info["epoch"], best_value=info["best_value"],
                     best_epoch=info["best_epoch"], best_state=best,
                     bad_epochs=info.get("bad_epochs") or 0, history=info.get("history", []),
                     optimizer_state=opt)
    state.stopped_early = bool(info.get("stopped_early"))
    state.term_states = terms
    ema = {k: v for k, v in tensors.items() if k.startswith("ema.")}
    if ema:  # zoo.engine.ema.start rebuilds the average from these
        state.ema = {"tensors": ema, "info": info.get("ema") if isinstance(info.get("ema"),
                                                                           dict) else {}}
    return model_state, state, info


def restore_loss_terms(loss_terms: list, term_states: dict | None, run_dir) -> None:
    """Load the saved parameters of the plan's loss terms (joint's source head)."""
    for i, term in enumerate(loss_terms):
        saved = (term_states or {}).get(i)
        if not saved or not hasattr(term, "load_state_dict"):
            continue
        try:
            term.load_state_dict(saved)
        except RuntimeError as exc:
            raise CheckpointError(f"checkpoint in {run_dir}: loss term "
                                  f"'{getattr(term, 'name', i)}' does not fit "
                                  f"({state_dict_error(exc)}) — did job.yaml change?") from None


def _load_generation(run_dir: Path, validate: bool = True, warn=None,
                     epochs: int | None = None):
    """``(tensors, metadata, info)`` of the newest valid generation."""
    folder = run_dir / "checkpoint"
    problems = []
    for name in (LAST, PREV):
        path = folder / name
        if not path.is_file():
            continue
        try:
            tensors, meta, info = _read(path, folder)
            if validate:
                _check(tensors, info, path)
                checkpoint_checks.check_consistency(info, path, epochs)
                checkpoint_checks.verify(tensors, info, path)
        except CheckpointError as exc:
            problems.append(str(exc))
            continue
        if problems and warn is not None:
            warn(f"{problems[0]}; resuming from the previous checkpoint (epoch "
                 f"{info['epoch']}) instead")
        return tensors, meta, info
    if problems:
        raise CheckpointError(f"{problems[0]} — and no earlier checkpoint is usable; start "
                              "the run again")
    raise CheckpointError(f"{run_dir} has no usable checkpoint (checkpoint/{LAST}) — it "
                          "stopped before its first epoch ended; start it again")


def _read(path: Path, folder: Path):
    tensors, meta = read_safetensors(path)
    if META_KEY in meta:
        try:
            info = json.loads(meta[META_KEY])
        except ValueError:
            raise CheckpointError(f"{path}: its '{META_KEY}' metadata is not JSON — a "
                                  "damaged checkpoint") from None
        return tensors, meta, runfolder.check_checkpoint_info(info, path)
    legacy = folder / LEGACY_JSON  # the two-file format of older zoo versions
    try:  # bounded, regular files only
        info = runfolder.read_json(legacy)
    except (OSError, ValueError, CheckpointError):
        raise CheckpointError(f"{path} has no resume state (no '{META_KEY}' metadata, no "
                              f"usable {LEGACY_JSON}) — a damaged checkpoint") from None
    info = runfolder.check_checkpoint_info(info, legacy)
    if str(meta.get("epoch")) != str(info.get("epoch")):
        raise CheckpointError(f"{folder}: checkpoint files disagree (epoch "
                              f"{meta.get('epoch')} vs {info.get('epoch')}) — a crash during "
                              "saving")
    return tensors, meta, info


def _check(tensors: dict, info: dict, path: Path) -> None:
    """Every tensor the JSON state names is in the file."""
    if not any(k.startswith("model.") for k in tensors):
        raise CheckpointError(f"{path} holds no model weights — a damaged checkpoint")
    for k in info.get("best_from_model") or []:
        if f"model.{k}" not in tensors:
            raise CheckpointError(f"{path} names tensor {k}, which it lacks — a damaged "
                                  "checkpoint")
    opt = info.get("optimizer") or {}
    for idx, entry in (opt.get("state") or {}).items():
        for name, value in (entry or {}).items():
            if value == "tensor" and f"opt.{idx}.{name}" not in tensors:
                raise CheckpointError(f"{path} lacks optimizer tensor {idx}.{name} — a "
                                      "damaged checkpoint")


def check_resumable(resume: str | Path, classes: list) -> None:
    """Refuse, before anything is written, a run that cannot be resumed as it is."""
    run_dir = runfolder.require_run_dir(resume)
    if (runfolder.read_summary(run_dir) or {}).get("status") == "completed":
        raise CheckpointError(f"{run_dir} has already completed — nothing to resume "
                              f"(`zoo eval {run_dir}` re-evaluates it)")
    # a missing splits.json is fine (nothing to compare); a damaged one is a one-line error
    saved = (runfolder.read_splits(run_dir).get("classes")
             if (run_dir / "splits.json").exists() else None)
    if saved is not None and list(saved) != list(classes):
        raise CheckpointError(f"{run_dir} was trained on {len(saved)} classes, but its data now "
                              f"gives {len(classes)} ({', '.join(map(str, classes[:4]))}"
                              f"{', ...' if len(classes) > 4 else ''}) — resuming needs the "
                              "same data; did job.yaml or the dataset change?")


def check_same_data(run_dir: str | Path, bundle) -> None:
    """Refuse a resume whose data changed: files added or removed since the run started
    (the split lists in ``splits.json`` differ from what the dataset gives now)."""
    run_dir = Path(run_dir)
    if not (run_dir / "splits.json").exists():
        return  # nothing recorded to compare with
    saved = runfolder.read_splits(run_dir)  # bounded and checked; one line if malformed
    for split in ("train", "val", "test"):
        before = saved.get(split)
        now = list(getattr(getattr(bundle, split), "sample_ids", None) or [])
        if not isinstance(before, list) or not before or not now:
            continue  # a dataset without sample ids: classes were compared already
        if list(map(str, before)) != list(map(str, now)):
            old, new = set(map(str, before)), set(map(str, now))
            added, removed = len(new - old), len(old - new)
            what = (f"{added} added, {removed} removed" if added or removed
                    else "the same files in a different split")
            raise CheckpointError(f"{run_dir}: the data changed since the run started "
                                  f"({split} split: {what}) — resuming needs the same data; "
                                  "restore it, or start a new run")


class Saver:
    """The ``checkpoint`` callable :func:`zoo.engine.loop.fit` is given.

    Called: write the state now.  ``hold(state, weights)``: pacing skipped this epoch's
    checkpoint; keep it in memory so :meth:`flush` can write it if a signal stops the run.
    """

    def __init__(self, run_dir: Path, model, meta: dict, loss_terms: list, deferred):
        self.run_dir, self.model, self.meta = Path(run_dir), model, meta
        self.loss_terms, self.deferred = loss_terms, deferred
        self.pending = None

    keeps_best = True  # takes the best epoch's weights as the model's own: best_weights.live

    def __call__(self, state) -> None:
        with self.deferred():  # a checkpoint is written whole or not at all
            stored = save_checkpoint(self.run_dir, self.model, state, self.meta,
                                     self.loss_terms)
            if isinstance(state.best_state, best_weights.LiveBest):
                from zoo.engine.state import snapshot  # lazy: imports torch

                folder = self.run_dir / "checkpoint"  # the weights stay in this generation
                state.best_state = best_weights.keep_on_disk(
                    folder, folder / LAST, self.model, state.best_state, stored
                ) or snapshot(self.model)
        self.pending = None

    def hold(self, state, weights: dict) -> None:
        # the loss terms' state as of this epoch's end too (joint: its head and how many
        # source batches it drew), so a flushed checkpoint is one consistent moment
        terms = [_Weights({k: v.detach().clone() for k, v in t.state_dict().items()}
                          if hasattr(t, "state_dict") else {},
                          getattr(t, "name", type(t).__name__)) for t in self.loss_terms]
        self.pending = (state, weights, terms)

    def flush(self) -> None:
        if self.pending is not None:
            state, weights, terms = self.pending
            save_checkpoint(self.run_dir, _Weights(weights), state, self.meta, terms)
            self.pending = None


class _Weights:
    """A saved ``state_dict`` standing in for the model (or a loss term) when saving."""

    def __init__(self, weights: dict, name: str = "model"):
        self.weights = weights
        self.name = name

    def state_dict(self) -> dict:
        return self.weights
