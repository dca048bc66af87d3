"""Runtime.backward_and_step: the update it makes, and when the gradients are freed."""
import torch
from torch import nn

from zoo.engine.runtime import Runtime


def _model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 3))


def _loss(model, seed=1):
    g = torch.Generator().manual_seed(seed)
    x, y = torch.randn(8, 6, generator=g), torch.randint(0, 3, (8,), generator=g)
    return nn.functional.cross_entropy(model(x), y)


def _expected_sgd(model, lr, clip=None):
    """The weights one plain SGD step from fresh gradients gives (the reference)."""
    ref = _model()
    ref.load_state_dict(model.state_dict())
    _loss(ref).backward()
    if clip:
        nn.utils.clip_grad_norm_(ref.parameters(), clip)
    with torch.no_grad():
        return [p - lr * p.grad for p in ref.parameters()]


def test_step_updates_then_frees_the_gradients():
    model = _model()
    expected = _expected_sgd(model, lr=0.1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    Runtime(torch.device("cpu")).backward_and_step(_loss(model), opt)
    for p, want in zip(model.parameters(), expected):
        assert torch.allclose(p, want, atol=1e-6)
        assert p.grad is None  # freed after the step, not kept until the next backward


def test_no_gradient_is_alive_during_the_next_forward():
    # the last step's gradients (one copy of the trainable weights) must not sit in memory
    # through the next forward: that is the step's memory peak
    model = _model()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    alive = []
    model.register_forward_pre_hook(
        lambda m, args: alive.append(sum(p.grad is not None for p in m.parameters())))
    rt = Runtime(torch.device("cpu"))
    for seed in range(3):
        rt.backward_and_step(_loss(model, seed), opt)
    assert alive == [0, 0, 0]


def test_gradients_left_on_the_model_are_not_accumulated():
    # an LR range test or a plugin may leave gradients behind: the step uses fresh ones only
    model = _model()
    expected = _expected_sgd(model, lr=0.1)
    for p in model.parameters():
        p.grad = torch.full_like(p, 100.0)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    Runtime(torch.device("cpu")).backward_and_step(_loss(model), opt)
    for p, want in zip(model.parameters(), expected):
        assert torch.allclose(p, want, atol=1e-6)


def test_gradient_clipping_applies_before_the_step():
    model = _model()
    expected = _expected_sgd(model, lr=0.5, clip=0.01)
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    Runtime(torch.device("cpu"), grad_clip=0.01).backward_and_step(_loss(model), opt)
    for p, want in zip(model.parameters(), expected):
        assert torch.allclose(p, want, atol=1e-6)
        assert p.grad is None
