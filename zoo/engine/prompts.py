"""Prompts for text-built classifiers: CLIP's ImageNet template set, user template files,
and class descriptions (``classes.yaml``).

A class's prompts are its templates filled with its description (Radford et al. 2021, §3.1.4:
prompt engineering and ensembling).  The default template set is the 80 templates CLIP used
for ImageNet (``Prompt_Engineering_for_ImageNet.ipynb`` in openai/CLIP); ``simple`` is the
single ``"a photo of a {}."``; any other value is a UTF-8 text file, one template per line,
each with one ``{}`` where the class description goes (``#`` starts a comment line).

Descriptions: a ``classes.yaml`` in the data folder maps class (folder) names to a description
(a string) or several (a list: each is filled into every template); classes it does not name
are described by their name with ``_`` and ``-`` read as spaces.  Imports no torch.
"""
from __future__ import annotations

from pathlib import Path

from zoo.errors import ConfigError, did_you_mean
from zoo.io.yamlio import load_yaml, read_bounded

IMAGENET_TEMPLATES: tuple[str, ...] = (
    "a bad photo of a {}.", "a photo of many {}.", "a sculpture of a {}.",
    "a photo of the hard to see {}.", "a low resolution photo of the {}.",
    "a rendering of a {}.", "graffiti of a {}.", "a bad photo of the {}.",
    "a cropped photo of the {}.", "a tattoo of a {}.", "the embroidered {}.",
    "a photo of a hard to see {}.", "a bright photo of a {}.", "a photo of a clean {}.",
    "a photo of a dirty {}.", "a dark photo of the {}.", "a drawing of a {}.",
    "a photo of my {}.", "the plastic {}.", "a photo of the cool {}.",
    "a close-up photo of a {}.", "a black and white photo of the {}.",
    "a painting of the {}.", "a painting of a {}.", "a pixelated photo of the {}.",
    "a sculpture of the {}.", "a bright photo of the {}.", "a cropped photo of a {}.",
    "a plastic {}.", "a photo of the dirty {}.", "a jpeg corrupted photo of a {}.",
    "a blurry photo of the {}.", "a photo of the {}.", "a good photo of the {}.",
    "a rendering of the {}.", "a {} in a video game.", "a photo of one {}.",
    "a doodle of a {}.", "a close-up photo of the {}.", "a photo of a {}.",
    "the origami {}.", "the {} in a video game.", "a sketch of a {}.", "a doodle of the {}.",
    "a origami {}.", "a low resolution photo of a {}.", "the toy {}.",
    "a rendition of the {}.", "a photo of the clean {}.", "a photo of a large {}.",
    "a rendition of a {}.", "a photo of a nice {}.", "a photo of a weird {}.",
    "a blurry photo of a {}.", "a cartoon {}.", "art of a {}.", "a sketch of the {}.",
    "a embroidered {}.", "a pixelated photo of a {}.", "itap of the {}.",
    "a jpeg corrupted photo of the {}.", "a good photo of a {}.", "a plushie {}.",
    "a photo of the nice {}.", "a photo of the small {}.", "a photo of the weird {}.",
    "the cartoon {}.", "art of the {}.", "a drawing of the {}.", "a photo of the large {}.",
    "a black and white photo of a {}.", "the plushie {}.", "a dark photo of a {}.",
    "itap of a {}.", "graffiti of the {}.", "a toy {}.", "itap of my {}.",
    "a photo of a cool {}.", "a photo of a small {}.", "a tattoo of the {}.",
)
SIMPLE_TEMPLATES: tuple[str, ...] = ("a photo of a {}.",)
TEMPLATE_SETS = {"imagenet80": IMAGENET_TEMPLATES, "simple": SIMPLE_TEMPLATES}
CLASSES_FILE = "classes.yaml"
MAX_TEMPLATE_BYTES = 1 << 20


def load_templates(spec: str | list | tuple | None = None) -> list[str]:
    """``imagenet80`` (default), ``simple``, a list of templates, or a template file."""
    if spec is None or spec == "":
        spec = "imagenet80"
    if isinstance(spec, (list, tuple)):
        templates, where = [str(t) for t in spec], "strategy.params.templates"
    elif str(spec) in TEMPLATE_SETS:
        return list(TEMPLATE_SETS[str(spec)])
    else:
        path = Path(str(spec)).expanduser()
        if not path.is_file():
            raise ConfigError(f"templates {spec!r}: no such file, and not a built-in set "
                              f"({', '.join(TEMPLATE_SETS)}) — give a text file with one "
                              "template per line, each with one {}")
        try:
            text = read_bounded(path, MAX_TEMPLATE_BYTES, "template file").decode("utf-8")
        except UnicodeDecodeError:
            raise ConfigError(f"templates file {path} is not UTF-8 text") from None
        templates = [ln.strip() for ln in text.splitlines()
                     if ln.strip() and not ln.strip().startswith("#")]
        where = str(path)
    bad = [t for t in templates if t.count("{}") != 1]
    if not templates or bad:
        raise ConfigError(f"{where}: " + (f"template {bad[0]!r} needs exactly one {{}} where "
                                          "the class name goes" if bad else "no templates"))
    return templates


def readable(name: str) -> str:
    """A folder name as words: ``golden_retriever`` → ``golden retriever``."""
    return " ".join(str(name).replace("_", " ").replace("-", " ").split())


def class_descriptions(classes: list, folder: str | Path | None = None) -> list[list[str]]:
    """Per class (in the dataset's order): its descriptions, from ``folder/classes.yaml``
    when there is one, else its readable name."""
    mapping: dict = {}
    path = Path(folder) / CLASSES_FILE if folder else None
    if path is not None and path.is_file():
        data, _ = load_yaml(path)
        if data is None:
            data = {}
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: expected a mapping of class names to descriptions")
        names = [str(c) for c in classes]
        unknown = [str(k) for k in data if str(k) not in names]
        if unknown:
            raise ConfigError(f"{path}: '{unknown[0]}' is not a class of this data"
                              f"{did_you_mean(unknown[0], names)} (classes: "
                              f"{', '.join(names[:6])}{', ...' if len(names) > 6 else ''})")
        for key, value in data.items():
            values = value if isinstance(value, list) else [value]
            if not values or not all(isinstance(v, str) and v.strip() for v in values):
                raise ConfigError(f"{path}: class '{key}' needs a description (a string or "
                                  "a list of strings)")
            mapping[str(key)] = [v.strip() for v in values]
    return [mapping.get(str(c), [readable(c)]) for c in classes]


def class_prompts(classes: list, templates: list[str],
                  folder: str | Path | None = None) -> list[list[str]]:
    """Per class: every template filled with every description of the class."""
    return [[t.replace("{}", d) for d in descs for t in templates]
            for descs in class_descriptions(classes, folder)]
