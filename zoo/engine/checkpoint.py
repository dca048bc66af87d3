"""Resume checkpoints in ``checkpoint/``: safetensors for tensors, JSON for the rest (no pickle)."""
from __future__ import annotations

import json
from pathlib import Path

from zoo.errors import CheckpointError
from zoo.io import atomic
from zoo.io.runfolder import SCHEMA


def save_checkpoint(run_dir: Path, model, state, meta: dict) -> None:
    current = model.state_dict()
    tensors = {f"model.{k}": v for k, v in current.items()}
    best_from_model: list[str] = []  # best-epoch tensors that *are* the model's (frozen ones)
    if state.best_state is not None:
        for k, v in state.best_state.items():
            m = current.get(k)
            if (m is not None and v.numel() and v.data_ptr() == m.data_ptr()
                    and v.shape == m.shape and v.dtype == m.dtype):
                best_from_model.append(k)  # safetensors refuses shared memory; store it once
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
    info = {"schema": SCHEMA, "epoch": state.epoch, "best_value": state.best_value,
            "best_epoch": state.best_epoch, "bad_epochs": state.bad_epochs,
            "history": state.history, "optimizer": opt_json,
            "best_from_model": best_from_model, **meta}
    ckpt = run_dir / "checkpoint"
    # tensors first, then the JSON that points at them: a crash between the two leaves the
    # previous JSON, whose epoch is older; load_checkpoint checks they agree.
    atomic.save_safetensors(ckpt / "last.safetensors", tensors, {"epoch": str(state.epoch)})
    atomic.write_json(ckpt / "last.json", info)


def load_checkpoint(run_dir: Path):
    """``(model_state, FitState)`` from ``checkpoint/``; a one-line error when unusable."""
    import torch

    from zoo.engine.loop import FitState
    from zoo.weights.resolve import read_safetensors

    ckpt = Path(run_dir) / "checkpoint"
    try:
        info = json.loads((ckpt / "last.json").read_text())
    except (OSError, ValueError):
        raise CheckpointError(f"{run_dir} has no usable checkpoint (checkpoint/last.json) — "
                              "it stopped before its first epoch ended; start it again") from None
    tensors, meta = read_safetensors(ckpt / "last.safetensors")
    if str(meta.get("epoch")) != str(info.get("epoch")):
        raise CheckpointError(f"{run_dir}: checkpoint files disagree (epoch "
                              f"{meta.get('epoch')} vs {info.get('epoch')}) — a crash during "
                              "saving; start the run again")
    model_state = {k[6:]: v for k, v in tensors.items() if k.startswith("model.")}
    best = {k[5:]: v for k, v in tensors.items() if k.startswith("best.")}
    for k in info.get("best_from_model") or []:
        if k not in model_state:
            raise CheckpointError(f"{run_dir}: checkpoint/last.json names tensor {k}, which "
                                  "last.safetensors lacks — a damaged checkpoint")
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
    state = FitState(epoch=info["epoch"], best_value=info["best_value"],
                     best_epoch=info["best_epoch"], best_state=best,
                     bad_epochs=info.get("bad_epochs", 0), history=info.get("history", []),
                     optimizer_state=opt)
    del torch
    return model_state, state, info
