"""Built-in datasets: ``demo``, ``folder``, ``digits`` and ``torchvision:NAME``.

Every factory has the signature ``factory(spec, split, transform, seed)`` and returns a
:class:`zoo_datasets.base.ImageDataset`: items are ``(transform(uint8 (3, H, W)), label)``,
with ``classes``, ``targets``, ``sample_ids`` and ``warnings`` attributes.  Splits are
stratified and decided by ``seed`` alone (:mod:`zoo_datasets.splits`); the expensive part of
a dataset is built once and shared by its three splits (:mod:`zoo_datasets.memo`).

Lazy-import rule: this module imports neither torch nor PIL nor scikit-learn; each factory
imports its implementation module when called.  (The factories are named ``*_dataset``
because importing submodule ``demo`` sets the package attribute ``demo``.)
"""
from zoo.hookspecs import hookimpl

from .splits import check_split


def demo_dataset(spec, split, transform=None, seed=0):
    """Generated shapes and textures (8 classes, 32×32, 2,400 images); no files needed."""
    from .demo import build

    return build(spec, check_split(split), transform, seed)


def folder_dataset(spec, split, transform=None, seed=0):
    """An ImageFolder at ``spec.path`` (class subfolders, or train/val/test folders)."""
    from .folder import build

    return build(spec, check_split(split), transform, seed)


def digits_dataset(spec, split, transform=None, seed=0):
    """scikit-learn's 8×8 handwritten digits, upscaled to 32×32 RGB."""
    from .digits import build

    return build(spec, check_split(split), transform, seed)


def torchvision_dataset(spec, split, transform=None, seed=0):
    """``torchvision:NAME`` — CIFAR10, MNIST, Flowers102, ... (see ``zoo_datasets.tv``)."""
    from .tv import build

    return build(spec, check_split(split), transform, seed)


@hookimpl
def register_datasets(register):
    register("demo", demo_dataset,
             description="generated shapes and textures: 8 classes, 32x32, no download")
    register("folder", folder_dataset,
             description="images in class subfolders at data.path (ImageFolder layout)")
    register("digits", digits_dataset,
             description="scikit-learn handwritten digits: 10 classes, 8x8 upscaled to 32x32")
    register("torchvision", torchvision_dataset, prefix=True,
             description="torchvision:NAME, e.g. torchvision:CIFAR10 (downloads to $ZOO_HOME)")
