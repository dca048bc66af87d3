"""Loss terms of the regularized strategies (imports torch; imported only by ``plan``).

Each term is a :class:`zoo.strategy.LossTerm`: ``forward(ctx)`` returns a weighted scalar
that the loop adds to the task loss.  Parameters of a term train with the phase (the joint
strategy's source head); frozen reference copies are kept out of ``parameters()`` so the
optimizer never sees them.
"""
from __future__ import annotations

import copy

import torch
from torch import nn
from torch.nn import functional as F

from zoo.errors import ConfigError
from zoo.strategy import LossContext, LossTerm


class L2SPTerm(LossTerm):
    """``α/2·Σ‖w − w_source‖²`` over the backbone + ``β/2·‖w_head‖²`` (Li et al. 2018).

    The source weights are buffers (a snapshot taken when the plan is made), so they move
    with ``.to(device)`` and never train.
    """

    name = "l2-sp"
    needs_features = False  # reads the model's parameters only: cached-feature steps are fine

    def __init__(self, model, alpha: float, beta: float):
        super().__init__()
        self.alpha, self.beta = float(alpha), float(beta)
        self.source_names: list[str] = []
        for i, (pname, p) in enumerate(model.backbone.body.named_parameters()):
            self.source_names.append(f"backbone.body.{pname}")
            self.register_buffer(f"source_{i}", p.detach().clone(), persistent=False)
        self.head_names = [f"head.{n}" for n, p in model.head.named_parameters()
                           if p.dim() > 1]  # weights, not biases (as in the paper)

    def sp(self, model) -> torch.Tensor:
        """``Σ‖w − w_source‖²`` over the backbone (no weighting)."""
        params = dict(model.named_parameters())
        total = None
        for i, pname in enumerate(self.source_names):
            d = (params[pname].float() - getattr(self, f"source_{i}").float()).pow(2).sum()
            total = d if total is None else total + d
        return total if total is not None else torch.zeros(())

    def head_l2(self, model) -> torch.Tensor:
        params = dict(model.named_parameters())
        total = None
        for pname in self.head_names:
            d = params[pname].float().pow(2).sum()
            total = d if total is None else total + d
        return total if total is not None else torch.zeros(())

    def forward(self, ctx: LossContext) -> torch.Tensor:
        return 0.5 * self.alpha * self.sp(ctx.model) + 0.5 * self.beta * self.head_l2(ctx.model)


class _Hidden:
    """Holds a module outside ``nn.Module`` registration (not in parameters()/state_dict)."""

    def __init__(self, module: nn.Module):
        self.module = module


class LwFTerm(LossTerm):
    """``λ·T²·KL(softmax(z_src/T) ‖ softmax(z/T))``: keep the source model's outputs.

    ``z_src``: the frozen source model (a deep copy of the backbone made at plan time, in
    eval mode) on the step's images; ``z``: the *current* backbone's features (``ctx.features``)
    through the (frozen) source classifier.  Learning without Forgetting, Li & Hoiem 2016.
    """

    name = "lwf"
    needs_features = True

    def __init__(self, backbone, lam: float, temperature: float):
        super().__init__()
        if backbone.source_classifier is None:
            raise ConfigError(f"strategy 'lwf' needs the source classifier of "
                              f"{backbone.provider}:{backbone.name}, which it does not have")
        teacher = copy.deepcopy(backbone).eval()
        teacher.requires_grad_(False)
        self._teacher = _Hidden(teacher)
        self.lam, self.temperature = float(lam), float(temperature)

    @property
    def teacher(self) -> nn.Module:
        return self._teacher.module

    def _apply(self, fn, *args, **kwargs):  # .to(device) / .half() reach the hidden copy too
        self._teacher.module._apply(fn, *args, **kwargs)
        return super()._apply(fn, *args, **kwargs)

    def distill(self, model, inputs, features) -> torch.Tensor:
        """``T²·KL(teacher ‖ student)`` for these inputs (unweighted)."""
        T = self.temperature
        with torch.no_grad():
            self.teacher.eval()
            target = self.teacher.source_logits(self.teacher(inputs)).float()
        student = model.backbone.source_logits(features).float()
        return F.kl_div(F.log_softmax(student / T, dim=1), F.softmax(target / T, dim=1),
                        reduction="batchmean") * (T * T)

    def forward(self, ctx: LossContext) -> torch.Tensor:
        features = ctx.features if ctx.features is not None else ctx.model.backbone(ctx.inputs)
        return self.lam * self.distill(ctx.model, ctx.inputs, features)


class JointSourceTerm(LossTerm):
    """``λ·CE(source_head(backbone(x_src)), y_src)`` on the next source batch each step.

    Owns the second head (trainable: the loop's optimizer gets it through ``parameters()``)
    and an endless, deterministic stream over a DataLoader of the source train split (pass
    ``p`` in the order of sampler epoch ``p``; the count drawn is checkpointed).
    """

    name = "joint-source"
    needs_features = True  # runs the backbone on images: never on cached features

    def __init__(self, feature_dim: int, num_source_classes: int, loader, lam: float):
        super().__init__()
        self.head = nn.Linear(feature_dim, num_source_classes)
        self.lam = float(lam)
        self.loader = loader
        self._iter = None
        self._pass = 0
        # source batches drawn so far: a buffer, so it is in the checkpoint with the head and
        # a resumed run continues the source stream where it stopped (exact resume)
        self.register_buffer("drawn", torch.zeros((), dtype=torch.long))

    @property
    def batches(self) -> int:
        return int(self.drawn)

    def _start_pass(self) -> None:
        # zoo's sampler orders a pass by (seed, pass number) only: the same in every process
        sampler = getattr(self.loader, "sampler", None)
        if hasattr(sampler, "set_epoch"):
            sampler.set_epoch(self._pass)
        self._iter = iter(self.loader)

    def next_batch(self):
        if self._iter is None:  # first use, or after a resume: skip what was drawn before
            self._pass, skip = divmod(int(self.drawn), max(1, len(self.loader)))
            self._start_pass()
            for _ in range(skip):
                next(self._iter)
        try:
            batch = next(self._iter)
        except StopIteration:
            self._pass += 1
            self._start_pass()
            batch = next(self._iter)
        self.drawn += 1
        return batch

    def source_loss(self, model, inputs, targets) -> torch.Tensor:
        """Unweighted CE of the source head on one source batch."""
        logits = self.head(model.backbone(inputs))
        return F.cross_entropy(logits.float(), targets)

    def forward(self, ctx: LossContext) -> torch.Tensor:
        inputs, targets = self.next_batch()
        device = ctx.inputs.device if ctx.inputs is not None else self.head.weight.device
        inputs = inputs.to(device, non_blocking=True)
        if ctx.inputs is not None and ctx.inputs.is_contiguous(
                memory_format=torch.channels_last) and inputs.dim() == 4:
            inputs = inputs.to(memory_format=torch.channels_last)
        targets = torch.as_tensor(targets).to(device, non_blocking=True)
        return self.lam * self.source_loss(ctx.model, inputs, targets)
