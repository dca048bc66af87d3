"""The best epoch's weights, kept in the checkpoint file rather than copied in memory.

A run restores its best epoch's weights before the test split. Held in memory they are a
copy of every trained tensor, on the model's device, for the whole run: 45 MB for a
resnet18, 1.2 GB for a ViT-L (issue 27 §3 measured the copy in the peak RSS). timm's
``train.py``, Lightning's ``ModelCheckpoint`` and the HF ``Trainer`` keep theirs as a file.

Here: when an epoch improves and its checkpoint is written in the same step, the loop
passes :func:`live` (the model's own tensors, no copy) as the best weights; the checkpoint
stores them once, as the model's; :func:`keep_on_disk` hard-links that generation to
``checkpoint/best.safetensors`` and returns a :class:`BestOnDisk`, a read-only mapping
that reads the trained tensors back when something needs them (a later checkpoint's
``best.*``, the restore before the test split, a new phase). Frozen parameters stay shared
with the model, as :func:`zoo.engine.state.snapshot` shares them. A generation is never
written in place (a new one is a new file, renamed over ``last``), so the link keeps
exactly the weights it was made from. Where hard links fail, or the epoch's checkpoint was
held back by pacing, the copy stays in memory as before.
"""
from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from zoo.errors import CheckpointError
from zoo.io import atomic

BEST = "best.safetensors"


class LiveBest(dict):
    """The best epoch's weights as the model's own tensors, valid only until the model
    trains again: the checkpoint written right after the epoch turns them into a
    :class:`BestOnDisk` (``zoo.engine.checkpoint.Saver``) or the loop copies them."""


def live(model) -> LiveBest:
    return LiveBest((k, v.detach()) for k, v in model.state_dict().items())


class BestOnDisk(Mapping):
    """``name -> tensor`` like a state dict; trained tensors are read from ``path``."""

    def __init__(self, path: Path, stored: dict, shared: dict, specs: dict, order: list):
        self.path = Path(path)
        self.stored = stored    # state-dict key -> tensor name in the file
        self.shared = shared    # state-dict key -> the model's own (frozen) tensor
        self.specs = specs      # stored key -> _Spec: shape, dtype, device
        self.order = order

    def __getitem__(self, key):
        if key in self.shared:
            return self.shared[key]
        if key not in self.stored:
            raise KeyError(key)
        return self._read([key])[key]

    def __iter__(self):
        return iter(self.order)

    def __len__(self) -> int:
        return len(self.order)

    def materialize(self) -> dict:
        """Every tensor, the stored ones read in one pass over the file."""
        read = self._read(list(self.stored))
        return {k: self.shared[k] if k in self.shared else read[k] for k in self.order}

    def items(self):
        return self.materialize().items()

    def values(self):
        return self.materialize().values()

    def unshared(self, names: set) -> "BestOnDisk":
        """A copy whose shared tensors named in ``names`` are copies: frozen until now,
        they train in the next phase (``zoo.engine.loop``)."""
        shared = {k: (v.clone() if k in names else v) for k, v in self.shared.items()}
        return BestOnDisk(self.path, self.stored, shared, self.specs, self.order)

    def _read(self, keys: list) -> dict:
        from safetensors import safe_open  # lazy: safetensors

        try:
            with safe_open(str(self.path), framework="pt") as fh:
                read = {k: fh.get_tensor(self.stored[k]) for k in keys}
            for k, v in read.items():
                want = self.specs[k]
                if (tuple(v.shape), v.dtype) != (want.shape, want.dtype):
                    raise ValueError(f"{self.stored[k]} is {tuple(v.shape)} {v.dtype}, was "
                                     f"written as {tuple(want.shape)} {want.dtype}")
            return {k: v.to(self.specs[k].device) for k, v in read.items()}
        except Exception as exc:  # removed or changed under a running job
            raise CheckpointError(
                f"the best epoch's weights in {self.path} cannot be read ({exc}) — do not "
                "remove or change a running job's checkpoint/ folder; rerun the job or "
                "--resume it") from exc


def keep_on_disk(folder: Path, generation: Path, model, best: LiveBest,
                 stored: dict) -> BestOnDisk | None:
    """Hard-link ``generation`` (the checkpoint just written, holding ``best`` as
    ``stored`` names) to ``folder/best.safetensors``; ``None`` where that fails (no hard
    links on this filesystem) and the caller keeps a copy instead."""
    path = Path(folder) / BEST
    if not atomic.hard_link(generation, path):
        return None
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
    return BestOnDisk(path, {k: stored[k] for k in best if k not in frozen},
                      {k: v for k, v in best.items() if k in frozen},
                      {k: _Spec(v) for k, v in best.items() if k not in frozen}, list(best))


class _Spec:
    """What a stored tensor read back must be (shape, dtype) and where it goes (device)."""
    __slots__ = ("shape", "dtype", "device")

    def __init__(self, tensor):
        self.shape, self.dtype, self.device = tuple(tensor.shape), tensor.dtype, tensor.device


def materialized(best: Mapping | None) -> dict | None:
    """``best`` as a plain dict (read from disk in one pass where it lives there)."""
    return best.materialize() if isinstance(best, BestOnDisk) else best


def discard(run_dir: Path) -> None:
    """Remove the link once the run has restored its best weights: the file keeps a whole
    generation (optimizer state included) on disk that nothing reads any more."""
    try:
        (Path(run_dir) / "checkpoint" / BEST).unlink()
    except OSError:
        pass
