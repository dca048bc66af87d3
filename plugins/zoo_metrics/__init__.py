"""Built-in metrics on torchmetrics.

Scalar metrics go into ``summary.json``'s ``test`` block (accuracy-like ones as fractions in
[0, 1]); non-scalar ones (``confusion``, ``per-class``) are written to their own files.
"""
from zoo.hookspecs import hookimpl

from .files import write_confusion, write_per_class


def accuracy(num_classes: int):
    from torchmetrics.classification import MulticlassAccuracy  # lazy: torchmetrics

    return MulticlassAccuracy(num_classes=num_classes, average="micro", validate_args=False)


def top5(num_classes: int):
    if num_classes < 5:
        return None  # top-5 of fewer than 5 classes is always 1: not a metric
    from torchmetrics.classification import MulticlassAccuracy  # lazy: torchmetrics

    return MulticlassAccuracy(num_classes=num_classes, top_k=5, average="micro",
                              validate_args=False)


def f1(num_classes: int):
    from torchmetrics.classification import MulticlassF1Score  # lazy: torchmetrics

    return MulticlassF1Score(num_classes=num_classes, average="macro", validate_args=False)


def ece(num_classes: int):
    from torchmetrics.classification import MulticlassCalibrationError  # lazy: torchmetrics

    return MulticlassCalibrationError(num_classes=num_classes, n_bins=15, norm="l1")


def nll(num_classes: int):
    from zoo_metrics.likelihood import NegativeLogLikelihood  # lazy: imports torch

    return NegativeLogLikelihood()


def per_class(num_classes: int):
    from torchmetrics.classification import MulticlassAccuracy  # lazy: torchmetrics

    return MulticlassAccuracy(num_classes=num_classes, average=None)


def confusion(num_classes: int):
    from torchmetrics.classification import MulticlassConfusionMatrix  # lazy: torchmetrics

    return MulticlassConfusionMatrix(num_classes=num_classes)


@hookimpl
def register_metrics(register):
    # default=True: the metrics of a job that names none (the first is the default monitor)
    register("accuracy", accuracy, mode="max", default=True, description="top-1 accuracy")
    register("top5", top5, mode="max", default=True, min_classes=5,
             description="top-5 accuracy (5+ classes)")
    register("f1", f1, mode="max", default=True, description="macro F1 score")
    register("ece", ece, mode="min", description="expected calibration error (15 bins)")
    register("nll", nll, mode="min", description="negative log-likelihood (mean)")
    register("per-class", per_class, mode="max", scalar=False, writer=write_per_class,
             writes=("per_class.csv",), description="accuracy of each class (per_class.csv)")
    # always=True: every run writes confusion.csv/.png, whether or not the job names it
    register("confusion", confusion, mode="max", scalar=False, always=True,
             writer=write_confusion, writes=("confusion.csv", "confusion.png"),
             description="confusion matrix (confusion.csv, confusion.png)")
