"""The torch side of the domain-adaptation strategies (:mod:`.domain`): loss terms and AdaBN.

Written from the papers:

* :class:`DANNTerm` — Ganin & Lempitsky, "Unsupervised Domain Adaptation by
  Backpropagation", ICML 2015: a domain classifier on the backbone features, trained to
  tell source from target, behind a gradient reversal layer, so the backbone learns
  features the classifier cannot separate.  The reversal coefficient ramps up as
  ``λ_p = 2 / (1 + exp(−10·p)) − 1`` with training progress ``p`` ∈ [0, 1] (their §5.2.2).
* :class:`MCCTerm` — Jin, Wang, Long & Wang, "Minimum Class Confusion for Versatile Domain
  Adaptation", ECCV 2020: on target predictions ``Ŷ = softmax(z/T)``, the entropy-weighted
  class correlation ``C = Ŷᵀ diag(W) Ŷ``, ``W_i ∝ 1 + exp(−H(Ŷ_i))`` (summing to the batch
  size), rows normalised, and the loss is the mean off-diagonal mass
  ``(1/|C|) Σ_j Σ_{j'≠j} C̃_jj'``.  It beats DANN on Office-31 (89.4 vs 82.2 mean
  accuracy, ResNet-50), Office-Home and VisDA (their Tables 1–3).
* :func:`adabn_fit` — Li, Wang, Shi, Liu & Hou, "Revisiting Batch Normalization for
  Practical Domain Adaptation" (AdaBN), ICLR-W 2017 / arXiv 2016: replace every BatchNorm
  layer's statistics by the target domain's, no gradient step.

Every term reads target images from ``ctx.streams["target_unlabeled"]`` (the loop puts one
batch of each stream a phase declares there, labels dropped); the task loss of the step is
the supervised loss on the labeled source batch.
"""
from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from zoo.engine.tta import batchnorm_layers, reestimate_bn  # noqa: F401 (domain.py)
from zoo.errors import ConfigError
from zoo.strategy import LossContext, LossTerm, PhaseContext

TARGET = "target_unlabeled"


def target_batch(ctx: LossContext, term: str) -> torch.Tensor:
    """The step's unlabeled target images, or a ConfigError saying what is missing."""
    streams = getattr(ctx, "streams", None) or {}
    batch = streams.get(TARGET)
    if batch is None:
        raise ConfigError(f"loss term '{term}' needs unlabeled target images on every step "
                          f"(stream '{TARGET}'), and this loop gave none — name them with "
                          "--target-data (or run a job whose loop supports data streams)")
    if isinstance(batch, (tuple, list)):  # (inputs, labels): the labels are never read
        batch = batch[0]
    return batch


class _ReverseGrad(torch.autograd.Function):
    """Identity forward; gradient × (−coeff) backward (DANN's gradient reversal layer)."""

    @staticmethod
    def forward(ctx, x, coeff: float):
        ctx.coeff = coeff
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        return -ctx.coeff * grad, None


def reverse_grad(x: torch.Tensor, coeff: float = 1.0) -> torch.Tensor:
    """Gradient reversal: ``x`` forward, ``−coeff ×`` the gradient backward."""
    return _ReverseGrad.apply(x, float(coeff))


def dann_coefficient(progress: float) -> float:
    """``2 / (1 + exp(−10·p)) − 1``: 0 at the start, → 1 at the end (Ganin & Lempitsky §5.2.2)."""
    p = min(1.0, max(0.0, float(progress)))
    return 2.0 / (1.0 + math.exp(-10.0 * p)) - 1.0


class DANNTerm(LossTerm):
    """``BCE(D(R(f_s)), source) + BCE(D(R(f_t)), target)``, R the gradient reversal.

    ``D`` (``feature_dim → hidden → hidden → 1``, ReLU, dropout 0.5 as in the paper's
    domain classifier) trains with the phase (its parameters are the term's).  ``lam``
    scales the reversal (the paper's λ); its schedule needs the phase's length in steps:
    ``total_steps`` when the plan knows it, else learned from the first epoch.
    """

    name = "dann"
    needs_features = True

    def __init__(self, feature_dim: int, hidden: int = 256, lam: float = 1.0,
                 epochs: int = 1, total_steps: int | None = None):
        super().__init__()
        self.domain = nn.Sequential(
            nn.Linear(feature_dim, hidden), nn.ReLU(), nn.Dropout(0.5),
            nn.Linear(hidden, hidden), nn.ReLU(), nn.Dropout(0.5), nn.Linear(hidden, 1))
        self.lam = float(lam)
        self.epochs = max(1, int(epochs))
        self.total_steps = total_steps
        self.calls = 0
        self._epoch_calls: dict[int, int] = {}
        self.last: dict = {}   # the last step's coefficient and domain accuracy (tests, logs)

    # The schedule's position (steps taken, the first epoch's length) is part of the term's
    # state_dict, as tensors, so the checkpoint holds it and a resumed run continues the
    # same λ ramp instead of restarting it (issue 24: DANN resumed with another history).
    # Plain ints while training: no host sync on a device tensor every step.
    _PROGRESS = ("progress_calls", "progress_first_epoch")

    def _save_to_state_dict(self, destination, prefix, keep_vars):
        super()._save_to_state_dict(destination, prefix, keep_vars)
        destination[prefix + "progress_calls"] = torch.tensor(self.calls)
        destination[prefix + "progress_first_epoch"] = torch.tensor(
            self._epoch_calls.get(1, 0))

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict,
                              missing_keys, unexpected_keys, error_msgs):
        saved = {k: state_dict.pop(prefix + k, None) for k in self._PROGRESS}
        if saved["progress_calls"] is not None:
            self.calls = int(saved["progress_calls"])
        if saved["progress_first_epoch"] is not None and int(saved["progress_first_epoch"]):
            self._epoch_calls = {1: int(saved["progress_first_epoch"])}
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict,
                                      missing_keys, unexpected_keys, error_msgs)

    def progress(self, ctx: LossContext) -> float:
        if self.total_steps:
            return self.calls / self.total_steps
        first = self._epoch_calls.get(1)
        if ctx.epoch > 1 and first:  # steps per epoch are known after the first one
            return ((ctx.epoch - 1) * first + ctx.step) / (self.epochs * first)
        return (ctx.epoch - 0.5) / self.epochs  # first epoch: its middle

    def domain_loss(self, source: torch.Tensor, target: torch.Tensor,
                    coeff: float) -> torch.Tensor:
        """Unweighted domain-classification loss of the two feature batches (reversed)."""
        feats = torch.cat([source, target]).float()
        labels = torch.cat([source.new_zeros(len(source)), target.new_ones(len(target))]).float()
        logits = self.domain(reverse_grad(feats, coeff)).squeeze(1)
        with torch.no_grad():  # a tensor, no host sync on the training step
            self.last["domain_accuracy"] = ((logits > 0).float() == labels).float().mean()
        return F.binary_cross_entropy_with_logits(logits, labels)

    def forward(self, ctx: LossContext) -> torch.Tensor:
        target = target_batch(ctx, self.name).to(ctx.inputs.device, non_blocking=True)
        source = ctx.features if ctx.features is not None else ctx.model.backbone(ctx.inputs)
        coeff = self.lam * dann_coefficient(self.progress(ctx))
        self.calls += 1
        self._epoch_calls[ctx.epoch] = self._epoch_calls.get(ctx.epoch, 0) + 1
        self.last["coefficient"] = coeff
        return self.domain_loss(source, ctx.model.backbone(target), coeff)


def mcc_loss(logits: torch.Tensor, temperature: float = 2.5) -> torch.Tensor:
    """Minimum class confusion of one batch of target logits (Jin et al. 2020, Eq. 1–6)."""
    n, classes = logits.shape
    probs = F.softmax(logits.float() / temperature, dim=1)
    entropy = -(probs * torch.log(probs + 1e-8)).sum(dim=1).detach()
    weight = 1.0 + torch.exp(-entropy)        # confident samples count more
    weight = (n * weight / weight.sum()).unsqueeze(1)
    confusion = (probs * weight).t() @ probs  # C × C class correlation
    confusion = confusion / confusion.sum(dim=1, keepdim=True)  # category normalisation
    return (confusion.sum() - confusion.trace()) / classes


class MCCTerm(LossTerm):
    """``μ·L_MCC`` on the step's target batch: ``head(backbone(x_t))`` through :func:`mcc_loss`."""

    name = "mcc"
    needs_features = True

    def __init__(self, mu: float = 1.0, temperature: float = 2.5):
        super().__init__()
        self.mu, self.temperature = float(mu), float(temperature)
        self.last: dict = {}

    def forward(self, ctx: LossContext) -> torch.Tensor:
        target = target_batch(ctx, self.name).to(ctx.inputs.device, non_blocking=True)
        logits = ctx.model.head(ctx.model.backbone(target))
        loss = mcc_loss(logits, self.temperature)
        self.last["mcc"] = loss.detach()  # a tensor, no host sync on the training step
        return self.mu * loss


@torch.no_grad()
def adabn_fit(ctx: PhaseContext, max_batches: int | None = None) -> dict:
    """Re-estimate every BatchNorm layer's running statistics on the unlabeled target.

    Statistics are reset and accumulated as a cumulative average over the target batches
    (``momentum=None``), so the result is the target mean/variance, not a blend with the
    source's (:func:`zoo.engine.tta.reestimate_bn`, which ``zoo adapt --method adabn`` runs
    too).  Only BatchNorm layers are in train mode; dropout and the weights stay as they
    are.  Returns what it did (``{"layers": n, "images": m}``).
    """
    model = ctx.model
    name = f"{getattr(model.backbone, 'provider', '?')}:{getattr(model.backbone, 'name', '?')}"
    if not batchnorm_layers(model.backbone):
        ctx.log(f"adabn: {name} has no BatchNorm layer — nothing to re-estimate, the model "
                "is unchanged (AdaBN only adapts BatchNorm statistics)")
        return {"layers": 0, "images": 0}
    done = reestimate_bn(model.backbone, ctx.loader(TARGET), ctx.device, max_batches)
    model.eval()
    if done["images"] == 0:
        raise ConfigError("adabn: the unlabeled target stream gave no image — name target "
                          "images with --target-data")
    ctx.log(f"adabn: re-estimated {done['layers']} BatchNorm layers of {name} on "
            f"{done['images']} unlabeled target images")
    return done
