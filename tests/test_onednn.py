"""argen.onednn: the CPU products through oneDNN equal torch's, forward and backward, and whole models with them equal
models without them; the paths are chosen by shape, never by timing."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from argen import onednn
from argen.onednn import Linear, linear

needs_onednn = pytest.mark.skipif(not onednn.enabled, reason="this torch build or CPU has no oneDNN products")


@pytest.fixture
def every_product(monkeypatch):
    """Route every CPU fp32 product through oneDNN, however small (the tests' models are tiny)."""
    monkeypatch.setattr(onednn, "MIN_MULTIPLY_ADDS", 0)


@needs_onednn
@pytest.mark.parametrize("shape", [(64, 48), (3, 40, 48), (2, 5, 7, 48)])
@pytest.mark.parametrize("bias", [False, True])
def test_forward_and_gradients_equal_torch_linear(shape, bias, every_product):
    generator = torch.Generator().manual_seed(0)
    inputs = torch.randn(*shape, generator=generator)
    weight = torch.randn(24, 48, generator=generator)
    offset = torch.randn(24, generator=generator) if bias else None
    grad = torch.randn(*shape[:-1], 24, generator=generator)
    results = []
    for function in (linear, F.linear):
        leaves = [tensor.clone().requires_grad_() for tensor in (inputs, weight, offset) if tensor is not None]
        out = function(leaves[0], leaves[1], leaves[2] if bias else None)
        out.backward(grad)
        results.append([out.detach(), *(leaf.grad for leaf in leaves)])
    for ours, theirs in zip(*results, strict=True):
        torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-5)


@needs_onednn
def test_strided_inputs_and_weights(every_product):
    generator = torch.Generator().manual_seed(1)
    inputs = torch.randn(48, 70, generator=generator).t()[::2]  # (35, 48), neither row- nor column-contiguous
    weight = torch.randn(48, 24, generator=generator).t()
    torch.testing.assert_close(linear(inputs, weight), F.linear(inputs, weight), rtol=1e-5, atol=1e-5)


@needs_onednn
def test_the_path_is_chosen_by_shape(monkeypatch):
    """Below the threshold (and for anything but fp32 CPU tensors outside autocast) it is F.linear bit for bit;
    above it, oneDNN's op is called."""
    called = []
    product = onednn._product
    monkeypatch.setattr(onednn, "_product", lambda *arguments: called.append(1) or product(*arguments))
    weight = torch.randn(64, 32)
    small = torch.randn(4, 32)
    assert torch.equal(linear(small, weight), F.linear(small, weight)) and not called
    assert torch.equal(linear(small.double(), weight.double()), F.linear(small.double(), weight.double()))
    large = torch.randn(onednn.MIN_MULTIPLY_ADDS // (32 * 64) + 1, 32)
    linear(large, weight)
    assert called == [1]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert linear(large, weight).dtype == torch.bfloat16  # autocast's F.linear, not oneDNN's fp32 product
    assert called == [1]
    monkeypatch.setattr(onednn, "enabled", False)
    assert torch.equal(linear(large, weight), F.linear(large, weight)) and called == [1]


def test_linear_keeps_nn_linear_parameters_and_state_dict():
    layer = Linear(8, 4)
    assert isinstance(layer, torch.nn.Linear)
    assert set(layer.state_dict()) == {"weight", "bias"}
    inputs = torch.randn(3, 8)
    torch.testing.assert_close(layer(inputs), F.linear(inputs, layer.weight, layer.bias))


@needs_onednn
def test_a_training_step_with_onednn_matches_torch(monkeypatch):
    """A transformer's loss and gradients agree with and without oneDNN products."""
    from test_transformer import make

    order, tokenizer, layout, model = make("scale")
    ids = tokenizer.random_ids(4)
    labels = torch.tensor([0, 1, 2, 0])
    inputs, targets = order.train_inputs(ids, tokenizer)

    def loss_and_gradients(threshold: int):
        monkeypatch.setattr(onednn, "MIN_MULTIPLY_ADDS", threshold)
        model.zero_grad()
        logits = model(inputs, labels, layout=layout)
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))
        loss.backward()
        return loss.detach(), [parameter.grad.clone() for parameter in model.parameters()]

    never = 10**18
    ours, theirs = loss_and_gradients(0), loss_and_gradients(never)
    torch.testing.assert_close(ours[0], theirs[0], rtol=1e-5, atol=1e-6)
    for mine, reference in zip(ours[1], theirs[1], strict=True):
        torch.testing.assert_close(mine, reference, rtol=1e-4, atol=1e-6)


@needs_onednn
@pytest.mark.parametrize("channels_last", [False, True])
def test_convolution_equals_torch_and_is_chosen_by_shape(channels_last, monkeypatch):
    from argen.onednn import Conv2d

    called = []
    convolution = torch.mkldnn_convolution
    monkeypatch.setattr(torch, "mkldnn_convolution", lambda *arguments: called.append(1) or convolution(*arguments))
    torch.manual_seed(0)
    layer = Conv2d(8, 16, 3, padding=1)
    reference = torch.nn.Conv2d(8, 16, 3, padding=1)
    reference.load_state_dict(layer.state_dict())
    large, small = torch.randn(1, 8, 14, 14), torch.randn(1, 8, 7, 7)
    if channels_last:
        layer, reference = layer.to(memory_format=torch.channels_last), reference.to(memory_format=torch.channels_last)
        large, small = (x.contiguous(memory_format=torch.channels_last) for x in (large, small))
    with torch.no_grad():
        torch.testing.assert_close(layer(large), reference(large), rtol=1e-5, atol=1e-5)
        assert called == [1]
        assert torch.equal(layer(small), reference(small)) and called == [1]  # 7 × 7: PyTorch's own choice
    out = layer(large)  # with gradients: PyTorch's convolution, which has a backward
    assert out.requires_grad and called == [1]
