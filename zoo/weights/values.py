"""Weight *values* are checked where weights are imported or loaded, not only their shapes.

A file whose tensors hold NaN or Inf would otherwise load and the run fail later with a
non-finite loss and "lower the learning rate" — the wrong problem.  A bool or integer tensor
where the model holds floating point would be cast silently by ``load_state_dict``.  Both are
one line naming the file, the tensor and the problem (:class:`~zoo.errors.WeightsError`).
"""
from __future__ import annotations

from zoo.errors import WeightsError


def check_weight_values(state: dict, expected: dict, where: str) -> None:
    """Every tensor of ``state`` that ``expected`` (the model's own tensors, same names)
    also has: floating point where the model's is, and finite."""
    import torch  # lazy: torch

    for name, value in state.items():
        own = expected.get(name)
        if not isinstance(value, torch.Tensor) or own is None:
            continue
        if own.is_floating_point() and not value.is_floating_point():
            raise WeightsError(f"weights from {where}: tensor '{name}' is {value.dtype} where "
                               f"the model holds {own.dtype}: not floating point (it would "
                               "be cast silently) — was the file written by another tool "
                               "or damaged?")
        if value.is_floating_point() and value.numel() and not bool(
                torch.isfinite(value).all()):
            raise WeightsError(f"weights from {where}: tensor '{name}' contains NaN/Inf: not "
                               "finite — the file is damaged or was saved from a diverged "
                               "model; use other weights")
