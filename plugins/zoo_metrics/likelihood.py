"""Mean negative log-likelihood of the true class, as a torchmetrics ``Metric``."""
import torch
from torchmetrics import Metric


class NegativeLogLikelihood(Metric):
    higher_is_better = False
    full_state_update = False

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.add_state("total", default=torch.tensor(0.0, dtype=torch.float64),
                       dist_reduce_fx="sum")
        self.add_state("count", default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, preds: torch.Tensor, target: torch.Tensor) -> None:
        # preds are probabilities (the loop passes softmax outputs to every metric)
        logp = torch.log(preds.double().clamp_min(1e-12))
        self.total += -logp.gather(1, target.view(-1, 1)).sum()
        self.count += target.numel()

    def compute(self) -> torch.Tensor:
        return (self.total / self.count.clamp_min(1)).float()
