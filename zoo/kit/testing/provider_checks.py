"""The plugin kit's contract check of a backbone provider: :func:`check_backbone_provider`
(re-exported by :mod:`zoo.kit.testing.checks` and ``zoo.testing``)."""
from __future__ import annotations

from zoo.kit.testing.components import _fail


def check_backbone_provider(provider, arch: str | None = None, *,
                            image_size: int | None = None, pretrained: bool = False,
                            batch: int = 2):
    """Check a :class:`zoo.backbones.BackboneProvider`; return the built backbone.

    - ``list_models()`` / ``list_models(pretrained=True)`` return lists of unique strings
      without building a model (``create`` is blocked while they run);
    - ``version()`` (optional) is a stable string; ``info(arch)`` is a dict;
    - ``create(arch)`` returns a :class:`zoo.backbones.Backbone` whose forward output width
      on a ``(batch, 3, S, S)`` input is ``feature_dim`` (and ``info``'s ``feature_dim``);
    - ``layer_groups(backbone)`` names every parameter of ``backbone.body`` exactly once,
      in ordered, uniquely named, non-empty groups.
    """
    import torch  # lazy: torch (the pytest plugin imports the kit)

    from zoo.backbones import Backbone, TransferModel, build_layer_groups  # lazy: imports torch

    pname = getattr(provider, "name", type(provider).__name__)
    names = _listed_names(provider, pname)
    arch = arch or names[0]
    if arch not in names:
        _fail(f"provider {pname!r}: {arch!r} is not in list_models() ({names[:5]} ...)")
    if hasattr(provider, "version"):
        v1, v2 = provider.version(), provider.version()
        if not isinstance(v1, str) or v1 != v2:
            _fail(f"provider {pname!r}: version() must return the same str every call "
                  f"(got {v1!r}, {v2!r}); it keys zoo's model-list cache")
    info = provider.info(arch)
    if not isinstance(info, dict):
        _fail(f"provider {pname!r}: info({arch!r}) must return a dict, got "
              f"{type(info).__name__}")
    backbone = provider.create(arch, None, pretrained=pretrained)
    if not isinstance(backbone, Backbone):
        _fail(f"provider {pname!r}: create({arch!r}) returned {type(backbone).__name__}; wrap "
              "the model in zoo.backbones.Backbone(body, feature_dim, name=..., provider=...)")
    _check_forward(pname, arch, backbone, info, image_size, batch)
    gnames = _check_layer_groups(pname, arch, backbone, provider.layer_groups(backbone))
    model = TransferModel(backbone, torch.nn.Linear(backbone.feature_dim, 2))
    built = build_layer_groups(model, provider)
    if [g.name for g in built][:-1] != gnames:
        _fail(f"provider {pname!r}: build_layer_groups disagrees with layer_groups")
    return backbone


def _listed_names(provider, pname: str) -> list:
    """``list_models()`` with ``create`` blocked while it runs; both listings checked."""
    blocked = []

    def _blocked_create(*args, **kwargs):
        blocked.append(args)
        raise AssertionError("create called while listing")

    had_own = "create" in vars(provider) if hasattr(provider, "__dict__") else False
    original = vars(provider).get("create") if had_own else None
    try:
        provider.create = _blocked_create
        names = provider.list_models(pretrained=False)
        tagged = provider.list_models(pretrained=True)
    except AttributeError:  # __slots__ or a read-only attribute: list without the guard
        names = provider.list_models(pretrained=False)
        tagged = provider.list_models(pretrained=True)
    finally:
        if had_own:
            provider.create = original
        elif "create" in getattr(provider, "__dict__", {}):
            del provider.create
    if blocked:
        _fail(f"provider {pname!r}: list_models() called create(); listing must not build "
              "models (keep names in a list or ask the library's registry)")
    for label, value in (("list_models()", names), ("list_models(pretrained=True)", tagged)):
        if not isinstance(value, (list, tuple)) or not all(isinstance(n, str) for n in value):
            _fail(f"provider {pname!r}: {label} must return a list of str, got "
                  f"{type(value).__name__}")
        if len(set(value)) != len(value):
            dup = sorted({n for n in value if list(value).count(n) > 1})[:3]
            _fail(f"provider {pname!r}: {label} has duplicate names {dup}")
    if not names:
        _fail(f"provider {pname!r}: list_models() is empty")
    return list(names)


def _check_forward(pname: str, arch: str, backbone, info: dict, image_size, batch: int):
    """The forward output is ``(batch, feature_dim)``, as ``info`` says too."""
    import torch  # lazy: torch (the pytest plugin imports the kit)

    if not isinstance(backbone.feature_dim, int) or backbone.feature_dim <= 0:
        _fail(f"provider {pname!r}: feature_dim of {arch!r} must be a positive int")
    size = int(image_size or backbone.pretrained_cfg.input_size)
    backbone.eval()
    with torch.no_grad():
        out = backbone(torch.randn(batch, 3, size, size))
    if tuple(out.shape) != (batch, backbone.feature_dim):
        _fail(f"provider {pname!r}: {arch!r} says feature_dim={backbone.feature_dim} but its "
              f"forward on a ({batch}, 3, {size}, {size}) input gives {tuple(out.shape)}; "
              "the body must return pooled features (N, feature_dim)")
    if "feature_dim" in info and info["feature_dim"] != backbone.feature_dim:
        _fail(f"provider {pname!r}: info({arch!r})['feature_dim'] is {info['feature_dim']} "
              f"but the backbone's is {backbone.feature_dim}")


def _check_layer_groups(pname: str, arch: str, backbone, groups) -> list:
    """Every body parameter in exactly one ordered, uniquely named, non-empty group; the
    group names."""
    body = [n for n, _ in backbone.body.named_parameters()]
    seen: dict[str, str] = {}
    gnames = []
    for item in groups:
        if (not isinstance(item, (tuple, list)) or len(item) != 2
                or not isinstance(item[0], str) or not isinstance(item[1], (list, tuple))):
            _fail(f"provider {pname!r}: layer_groups must be a list of (name, [parameter "
                  f"names]) pairs, got {item!r:.80}")
        gname, params = item
        gnames.append(gname)
        if not params:
            _fail(f"provider {pname!r}: layer group {gname!r} is empty")
        for p in params:
            if p not in body:
                _fail(f"provider {pname!r}: layer group {gname!r} names {p!r}, which is not "
                      "a parameter of backbone.body (names are relative to the body)")
            if p in seen:
                _fail(f"provider {pname!r}: parameter {p!r} is in layer groups "
                      f"{seen[p]!r} and {gname!r}; each parameter belongs to one group")
            seen[p] = gname
    if len(set(gnames)) != len(gnames) or "head" in gnames:
        _fail(f"provider {pname!r}: layer group names must be unique and not 'head': "
              f"{gnames}")
    missing = [p for p in body if p not in seen]
    if missing:
        _fail(f"provider {pname!r}: {len(missing)} parameters of {arch!r} are in no layer "
              f"group (e.g. {missing[0]!r}); strategies could not freeze or train them")
    return gnames
