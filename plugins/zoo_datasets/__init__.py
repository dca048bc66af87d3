"""Built-in datasets: ``demo``, ``folder``, ``imagefolder``, ``unlabeled``, ``webdataset``,
``hf-stream``, ``digits``, ``photos``, ``csv:PATH``, ``hf:NAME``, ``torchvision:NAME``,
``shift:NAME``.

Every factory has the signature ``factory(spec, split, transform, seed)`` and returns a
:class:`zoo_datasets.base.ImageDataset`: items are ``(transform(uint8 (3, H, W)), label)``,
with ``classes``, ``targets``, ``sample_ids`` and ``warnings`` attributes.  Splits are
stratified and decided by ``seed`` alone (:mod:`zoo.engine.splits`, the core's one split);
the expensive part of a dataset is built once and shared by its three splits
(:mod:`zoo_datasets.memo`).

Lazy-import rule: this module imports neither torch nor PIL nor scikit-learn; each factory
imports its implementation module when called.  (The factories are named ``*_dataset``
because importing submodule ``demo`` sets the package attribute ``demo``.)
"""
from zoo.hookspecs import hookimpl

from zoo.engine.splits import check_split

from .claims import is_imagefolder, is_saved_dataset  # torch-free layout tests


def demo_dataset(spec, split, transform=None, seed=0):
    """Generated shapes and textures (8 classes, 32×32, 2,400 images); no files needed."""
    from .demo import build  # lazy: the implementation loads on first use (folder, tv import torch)

    return build(spec, check_split(split), transform, seed)


def folder_dataset(spec, split, transform=None, seed=0):
    """An ImageFolder at ``spec.path`` (class subfolders, or train/val/test folders)."""
    # lazy: the implementation loads on first use (folder, tv import torch)
    from .folder import build

    return build(spec, check_split(split), transform, seed)


def imagefolder_dataset(spec, split, transform=None, seed=0):
    """A Hugging Face imagefolder at ``spec.path`` labeled by its metadata.csv/.jsonl."""
    from .metadata import build  # lazy: the implementation loads on first use (imports torch)

    return build(spec, check_split(split), transform, seed)




def csv_dataset(spec, split, transform=None, seed=0):
    """``csv:PATH`` — images listed in a CSV (path,label[,split]; see ``zoo_datasets.csvdata``)."""
    from .csvdata import build  # lazy: the implementation loads on first use (imports torch)

    return build(spec, check_split(split), transform, seed)


def hf_dataset(spec, split, transform=None, seed=0):
    """``hf:NAME`` — a Hugging Face ``datasets`` dataset (see ``zoo_datasets.hf``)."""
    from .hf import build  # lazy: datasets and torch load on first use

    return build(spec, check_split(split), transform, seed)


def digits_dataset(spec, split, transform=None, seed=0):
    """scikit-learn's 8×8 handwritten digits, upscaled to 32×32 RGB."""
    # lazy: the implementation loads on first use (folder, tv import torch)
    from .digits import build

    return build(spec, check_split(split), transform, seed)


def torchvision_dataset(spec, split, transform=None, seed=0):
    """``torchvision:NAME`` — CIFAR10, MNIST, Flowers102, ... (see ``zoo_datasets.tv``)."""
    from .tv import build  # lazy: the implementation loads on first use (folder, tv import torch)

    return build(spec, check_split(split), transform, seed)


def photos_dataset(spec, split, transform=None, seed=0):
    """Crops of scikit-image photos (default: six colour photos, 64×64); no download."""
    from .photos import build  # lazy: scikit-image and torch load on first use

    return build(spec, check_split(split), transform, seed)


def shift_dataset(spec, split, transform=None, seed=0):
    """``shift:NAME`` — dataset NAME with a controlled domain shift (see ``zoo_datasets.shift``)."""
    # lazy: the implementation loads on first use (folder, tv import torch)
    from .shift import build

    return build(spec, check_split(split), transform, seed)


def webdataset_dataset(spec, split, transform=None, seed=0):
    """WebDataset tar shards at ``spec.path`` (written by ``zoo data shard``), streamed."""
    from .stream import build  # lazy: torch and webdataset load on first use

    return build(spec, check_split(split), transform, seed)


def hf_stream_dataset(spec, split, transform=None, seed=0):
    """A Hugging Face ``datasets`` dataset (hub name or local folder), streamed."""
    from .hf_stream import build  # lazy: torch and datasets load on first use

    return build(spec, check_split(split), transform, seed)


def unlabeled_dataset(spec, split, transform=None, seed=0):
    """Every image under ``spec.path``, labels unused (a UDA job's ``target_data``)."""
    from .unlabeled import build  # lazy: the implementation loads on first use (imports torch)

    return build(spec, check_split(split), transform, seed)


@hookimpl
def register_datasets(register):
    # job_defaults: native 32-px images keep these jobs fast (a strategy's own defaults win)
    register("demo", demo_dataset, default=True, job_defaults={"data": {"image_size": 32}},
             description="generated shapes and textures: 8 classes, 32x32, no download")
    register("folder", folder_dataset, serves_paths=True,  # --data PATH
             description="images in class subfolders at data.path (ImageFolder layout)")
    register("imagefolder", imagefolder_dataset, claims_paths=is_imagefolder,
             description="a Hugging Face imagefolder at data.path labeled by metadata.csv/"
                         ".jsonl (claims --data PATH laid out that way)")
    register("csv", csv_dataset, prefix=True,
             description="csv:PATH, images listed in a CSV: path,label[,split], paths "
                         "relative to the CSV")
    register("hf", hf_dataset, prefix=True, claims_paths=is_saved_dataset,
             description="hf:PATH or hf:ORG/NAME, a Hugging Face datasets dataset (save_to_disk"
                         ", parquet, Hub cache); needs pip install 'zoo[hf]'")
    register("unlabeled", unlabeled_dataset, serves_unlabeled_paths=True,  # target_data PATH
             description="every image under data.path, labels unused (target_data of a UDA job)")
    register("webdataset", webdataset_dataset,
             description="WebDataset tar shards at data.path (zoo data shard), streamed: "
                         "shuffle buffer, sharded over ranks and workers, exact resume")
    register("hf-stream", hf_stream_dataset,
             description="a Hugging Face datasets dataset (data.path: hub name or folder) in "
                         "streaming mode: shuffle buffer, split over ranks/workers, exact resume")
    register("digits", digits_dataset, job_defaults={"data": {"image_size": 32}},
             description="scikit-learn handwritten digits: 10 classes, 8x8 upscaled to 32x32")
    register("torchvision", torchvision_dataset, prefix=True,
             description="torchvision:NAME, e.g. torchvision:CIFAR10 (downloads to $ZOO_HOME)")
    register("photos", photos_dataset,
             description="crops of scikit-image photos, one class each (default six colour "
                         "photos, 64x64; data.params images/crop/gray), no download")
    register("shift", shift_dataset, prefix=True,
             description="shift:NAME, dataset NAME shifted: data.params.transform=invert|rotate|"
                         "noise|grayscale|blur|jpeg|color|background, severity=1..5")
