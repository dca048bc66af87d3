"""What a LoRA/DoRA rank costs, checked at plan time before peft allocates anything.

The rank ``r`` is bounded by the adapted modules themselves — a rank above
``min(fan_in, fan_out)`` of every target adds parameters and no expressiveness — and the
adapters' memory (weights, gradients and AdamW's two moments: 16 bytes per parameter) is
estimated and checked against the memory available (:func:`zoo.engine.budget.check_memory`).
"""
from __future__ import annotations

from torch import nn

from zoo.engine.budget import bounded_int, check_memory

BYTES_PER_TRAINED_PARAM = 16  # fp32 weight + gradient + AdamW's exp_avg and exp_avg_sq


def _fans(module: nn.Module) -> tuple[int, int]:
    if isinstance(module, nn.Conv2d):
        kh, kw = module.kernel_size
        return module.in_channels * kh * kw, module.out_channels
    return module.in_features, module.out_features


def check_adapter_budget(body: nn.Module, targets: list[str], r: int, strategy: str,
                         dora: bool = False) -> int:
    """``r`` within what the targets can use, and the adapters' memory within what is
    available; returns the estimated number of adapter parameters."""
    mods = dict(body.named_modules())
    fans = [_fans(mods[name]) for name in targets]
    max_rank = max(min(a, b) for a, b in fans)
    bounded_int(r, f"strategy '{strategy}': parameter 'r'", 1, max_rank,
                f"no adapted module of this backbone has a rank above {max_rank} "
                "(min(fan_in, fan_out)); a larger r adds memory, not capacity")
    params = sum(r * (a + b) + (b if dora else 0) for a, b in fans)
    check_memory(params * BYTES_PER_TRAINED_PARAM,
                 f"strategy '{strategy}': r={r} adapters on {len(targets)} modules "
                 f"({params:,} parameters)", "lower strategy.params.r")
    return params
