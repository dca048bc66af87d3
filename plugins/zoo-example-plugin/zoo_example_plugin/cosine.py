"""The cosine classifier module (imports torch: only the factory imports this)."""
import torch
import torch.nn.functional as F
from torch import nn


class CosineClassifier(nn.Module):
    """logits = s * cos(x, w_c): features and class weights are L2-normalised.

    The scale s is learned (kept positive as exp(log_scale)) unless learn_scale
    is False.  Gidaris & Komodakis, CVPR 2018; "Baseline++" in Chen et al.,
    ICLR 2019 (A Closer Look at Few-shot Classification).
    """

    def __init__(self, in_features, num_classes, scale=10.0, learn_scale=True):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(num_classes, in_features) * 0.01)
        log_scale = torch.tensor(float(scale)).log()
        if learn_scale:
            self.log_scale = nn.Parameter(log_scale)
        else:
            self.register_buffer("log_scale", log_scale)

    def forward(self, x):
        cos = F.linear(F.normalize(x, dim=1), F.normalize(self.weight, dim=1))
        return self.log_scale.exp() * cos
