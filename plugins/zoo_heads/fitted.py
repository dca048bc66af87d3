"""Heads that are *fitted* in closed form, not trained: ``ncm`` and ``knn``; and the
text-initialisable ``linear`` head.

- :class:`NCMHead`: nearest class mean on centred, L2-normalised features (SimpleShot's CL2N,
  Wang et al. 2019, arXiv:1911.04623): ``z = normalize(x - mean)``; class ``c``'s logit is
  ``-scale · ||z - centroid_c||²`` with ``centroid_c`` the mean of the class's ``z``.
- :class:`KNNHead`: k nearest neighbours by cosine similarity with temperature-weighted
  votes (``exp(sim / T)``; Wu et al. 2018, "Unsupervised Feature Learning via Non-Parametric
  Instance Discrimination", as DINO's k-NN evaluation does).  Logits are the log of the vote
  shares, so softmax gives the votes back.
- :class:`LinearHead`: ``nn.Sequential([Dropout], Linear)`` as before (same state-dict keys),
  plus ``normalize`` (L2-normalise features first, as CLIP's and WiSE-FT's zero-shot heads
  do) and :meth:`LinearHead.init_from_text`.

Fitted heads hold what they fitted in *buffers*, so a run's ``model.safetensors`` carries it
and ``predict``/``export``/``eval`` work unchanged.  The k-NN memory's size is only known after
fitting: :class:`KNNHead` resizes its buffers to a loaded state dict.

Capabilities a strategy may look for (duck-typed): ``fit_features(features, labels)`` (the
``ncm``/``knn`` strategies) and ``init_from_text(class_embeddings, logit_scale)`` (the
``zero-shot`` strategy and ``head.init: text``).  This module imports torch: only the
factories in :mod:`zoo_heads` import it.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class LinearHead(nn.Sequential):
    """One linear layer (optional dropout before it; optional L2-normalised inputs)."""

    def __init__(self, *layers: nn.Module, normalize: bool = False):
        super().__init__(*layers)
        self.normalize = bool(normalize)

    @property
    def linear(self) -> nn.Linear:
        return self[-1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.normalize:
            x = F.normalize(x, dim=-1)
        return super().forward(x)

    @torch.no_grad()
    def init_from_text(self, class_embeddings: torch.Tensor, logit_scale: float) -> None:
        """Rows = ``logit_scale × class_embeddings`` (unit rows), bias 0 — WiSE-FT's
        zero-shot head (Wortsman et al. 2022).  With ``normalize`` the logits are exactly
        CLIP's zero-shot logits; without it they are also scaled by each image's feature norm
        (same ranking of classes, sharper or softer probabilities)."""
        linear = self.linear
        if tuple(class_embeddings.shape) != tuple(linear.weight.shape):
            raise ValueError(f"text classifier of shape {tuple(class_embeddings.shape)} does "
                             f"not fit a linear head of shape {tuple(linear.weight.shape)}")
        linear.weight.copy_(class_embeddings.to(linear.weight) * float(logit_scale))
        if linear.bias is not None:
            linear.bias.zero_()


class NCMHead(nn.Module):
    """Nearest class mean on centred, L2-normalised features (SimpleShot CL2N)."""

    fitted = "ncm"  # what the ``ncm`` strategy looks for

    def __init__(self, in_features: int, num_classes: int, scale: float = 10.0):
        super().__init__()
        self.register_buffer("mean", torch.zeros(in_features))
        self.register_buffer("centroids", torch.zeros(num_classes, in_features))
        self.register_buffer("scale", torch.tensor(float(scale)))

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(x.float() - self.mean, dim=-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.embed(x)
        # ||z - c||² = |z|² - 2 z·c + |c|², with |z| = 1: one matmul, no (N, C, D) tensor
        dist = 1.0 - 2.0 * z @ self.centroids.t() + (self.centroids ** 2).sum(1)
        return -self.scale * dist

    @torch.no_grad()
    def fit_features(self, features: torch.Tensor, labels: torch.Tensor) -> dict:
        """Centre on the train mean, normalise, average per class; returns counts."""
        features = features.float().to(self.mean.device)
        labels = labels.long().to(self.mean.device)
        self.mean.copy_(features.mean(0))
        z = self.embed(features)
        num_classes = self.centroids.shape[0]
        counts = torch.bincount(labels, minlength=num_classes)
        sums = torch.zeros_like(self.centroids).index_add_(0, labels, z)
        self.centroids.copy_(sums / counts.clamp_min(1).unsqueeze(1).to(sums))
        return {"samples": int(labels.numel()),
                "empty_classes": int((counts == 0).sum())}


class KNNHead(nn.Module):
    """k nearest neighbours (cosine similarity), votes weighted by ``exp(sim / T)``."""

    fitted = "knn"  # what the ``knn`` strategy looks for

    def __init__(self, in_features: int, num_classes: int, k: int = 20,
                 temperature: float = 0.07):
        super().__init__()
        self.num_classes = int(num_classes)
        self.k = int(k)
        self.temperature = float(temperature)
        self.register_buffer("bank", torch.zeros(0, in_features))
        self.register_buffer("bank_labels", torch.zeros(0, dtype=torch.long))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = self.bank.shape[0]
        if n == 0:  # not fitted: uniform
            return x.new_zeros(x.shape[0], self.num_classes)
        sim = F.normalize(x.float(), dim=-1) @ self.bank.t()
        top, idx = sim.topk(min(self.k, n), dim=1)
        weights = torch.exp((top - 1.0) / self.temperature)  # shifted: no overflow at small T
        votes = torch.zeros(x.shape[0], self.num_classes, device=x.device, dtype=weights.dtype)
        votes.scatter_add_(1, self.bank_labels[idx], weights)
        share = votes / votes.sum(1, keepdim=True).clamp_min(1e-30)
        return torch.log(share.clamp_min(1e-8))

    @torch.no_grad()
    def fit_features(self, features: torch.Tensor, labels: torch.Tensor) -> dict:
        """Remember the L2-normalised train features and their labels."""
        self.bank = F.normalize(features.float(), dim=-1).to(self.bank.device)
        self.bank_labels = labels.long().to(self.bank_labels.device)
        return {"samples": int(labels.numel()), "k": min(self.k, int(labels.numel()))}

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # the memory's size is the fitted train split's: take the saved shape
        for name in ("bank", "bank_labels"):
            value = state_dict.get(prefix + name)
            if value is not None:
                setattr(self, name, torch.empty_like(value, device=getattr(self, name).device))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
