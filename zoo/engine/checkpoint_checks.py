"""A checkpoint's contents are verified, not only its structure.

:func:`tensor_digest` is a sha256 of every tensor's name, dtype, shape and bytes (in name
order); :mod:`zoo.engine.checkpoint` stores it in the JSON state (``tensor_sha256``) and
:func:`verify` recomputes it on load, so rotten bytes in the tensor data are caught and the
previous generation (``prev.safetensors``) is used instead of resuming silently from
different weights.  :func:`check_consistency` checks that the JSON state tells one story:
the keys resuming reads are present, the epoch is within the plan, and the history holds
one record per epoch, in order (early stopping ends the history early, nothing else does).

Every problem is a :class:`~zoo.errors.CheckpointError` naming the file: the loader treats
it as a damaged generation and falls back to the previous one.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

from zoo.errors import CheckpointError

DIGEST_KEY = "tensor_sha256"
#: keys of the JSON state that resuming reads (null is allowed; absence is damage)
REQUIRED_KEYS = ("epoch", "best_value", "best_epoch", "history")


def tensor_digest(tensors: dict) -> str:
    """sha256 over ``(name, dtype, shape, bytes)`` of every tensor, in name order."""
    import torch  # lazy: torch (this module is imported by run-folder tools)

    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach()
        h.update(f"{name}|{str(t.dtype)}|{tuple(t.shape)}\n".encode())
        if t.numel():
            flat = t.to("cpu").contiguous().reshape(-1).view(torch.uint8)
            h.update(memoryview(flat.numpy()))
    return h.hexdigest()


def _damaged(path: Path, what: str) -> CheckpointError:
    return CheckpointError(f"{path}: {what} — a damaged or edited checkpoint")


def verify(tensors: dict, info: dict, path: Path) -> None:
    """The tensor data matches the checksum stored with it (checkpoints written before
    checksums existed have none and are accepted)."""
    stored = info.get(DIGEST_KEY)
    if stored is None:
        return
    if not isinstance(stored, str) or stored != tensor_digest(tensors):
        raise _damaged(path, "its tensor data does not match the checksum stored with it")


def check_consistency(info: dict, path: Path, planned_epochs: int | None = None) -> None:
    """The JSON state is complete and agrees with itself and with the plan."""
    missing = [k for k in REQUIRED_KEYS if k not in info]
    if missing:
        raise _damaged(path, f"its state lacks {', '.join(repr(k) for k in missing)}")
    epoch, history = info["epoch"], info["history"]
    if planned_epochs is not None and epoch > planned_epochs:
        raise _damaged(path, f"it says epoch {epoch}, but the plan has {planned_epochs} "
                             "epochs")
    numbers = [r.get("epoch") for r in history]
    if numbers != list(range(1, len(numbers) + 1)):
        raise _damaged(path, f"its history's epochs are {numbers[:6]}"
                             f"{'...' if len(numbers) > 6 else ''}, not 1, 2, ... in order")
    stopped_early = bool(info.get("stopped_early"))
    if len(history) != epoch and not (stopped_early and len(history) <= epoch):
        raise _damaged(path, f"it says epoch {epoch} but holds {len(history)} epochs of "
                             "history")
    best_epoch = info.get("best_epoch")
    if isinstance(best_epoch, int) and best_epoch > len(history):
        raise _damaged(path, f"its best epoch {best_epoch} is after its last recorded "
                             f"epoch {len(history)}")
