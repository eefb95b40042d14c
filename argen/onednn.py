"""Linear layers through oneDNN on x86 CPUs, where PyTorch's fp32 matmul goes through MKL.

Why: on AMD CPUs MKL takes its AVX2 code path even where the CPU has AVX-512, so ``F.linear`` reaches half of what
the cores can do; oneDNN (which PyTorch also ships, as its ``mkldnn`` backend) picks AVX-512 kernels from the CPU's
features. On the AMD EPYC (Zen 5) this was written on, one thread, the 13 products of one forward of the shipped
1m transformer take 966 µs through MKL and 577 µs through oneDNN at 98 rows, 65 ms against 27 ms at a training
batch's 6272 rows, while at 2 rows MKL's lower fixed cost wins (67 against 180 µs; ``python bench/kernels.py``,
``bench/results/kernels.md``). The fp32 peak of a large product is ~110 GFLOP/s through ``torch.mm`` and ~245
through oneDNN here. On Intel CPUs MKL already uses AVX-512 and the two are closer.

`Linear` is an ``nn.Linear`` (same parameters, same state dict) whose forward calls oneDNN's fp32 matmul
(``torch.ops.mkldnn._linear_pointwise``, the op inductor emits for CPU linears) for fp32 CPU products large enough
to pay for oneDNN's higher fixed cost per call (`MIN_MULTIPLY_ADDS`), and ``F.linear`` otherwise: on GPUs, under
autocast, for other dtypes, for small products, inside ``torch.compile`` (inductor chooses its own kernels) and where
PyTorch was built without oneDNN. The op has no autograd formula, so training goes through `_Product`, whose
backward is two more oneDNN products. The results equal ``F.linear``'s up to float rounding (the two libraries sum
in different orders), not bit for bit.

``argen.onednn.enabled = False`` (or ``ARGEN_ONEDNN=0`` in the environment) turns it off.
"""

from __future__ import annotations

import os
import platform

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def _available() -> bool:
    if os.environ.get("ARGEN_ONEDNN", "1") == "0":
        return False
    if platform.machine().lower() not in ("x86_64", "amd64") or not torch.backends.mkldnn.is_available():
        return False
    try:
        torch.ops.mkldnn._linear_pointwise  # noqa: B018 (absent from builds without oneDNN)
    except (AttributeError, RuntimeError):
        return False
    return True


enabled = _available()

# oneDNN costs ~18 µs more per call than MKL (measured inside a sampling loop; ~12 µs in a micro-benchmark that
# repeats one call) and then runs twice as fast on this CPU, so it wins from about 1.5 M multiply-adds (rows × K × N)
# per product: e.g. 49 rows through the 112 → 1024 output layer (79 vs 127 µs), not 98 rows through a 112 → 112 one.
# A rule on the shape, not a timing, so that a product always takes the same path and gives the same floats (the
# codec needs an encoder and a decoder to agree bit for bit).
MIN_MULTIPLY_ADDS = 1_500_000


def _product(inputs: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    """inputs (..., K) @ weight (N, K)ᵀ + bias, by oneDNN (strided operands are fine)."""
    return torch.ops.mkldnn._linear_pointwise(inputs, weight, bias, "none", [], "")


class _Product(torch.autograd.Function):
    """`_product` with gradients: dx = dy @ W and dW = dyᵀ @ x, each a oneDNN product too."""

    @staticmethod
    def forward(ctx, inputs: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        ctx.save_for_backward(inputs, weight)
        ctx.has_bias = bias is not None
        return _product(inputs, weight, bias)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor | None, Tensor | None, Tensor | None]:
        inputs, weight = ctx.saved_tensors
        grad_inputs = grad_weight = grad_bias = None
        if ctx.needs_input_grad[0]:
            grad_inputs = _product(grad, weight.t(), None)  # (..., N) @ (N, K)
        flat_grad = grad.reshape(-1, grad.shape[-1])  # (M, N)
        if ctx.needs_input_grad[1]:
            grad_weight = _product(flat_grad.t(), inputs.reshape(-1, inputs.shape[-1]).t(), None)  # (N, M) @ (M, K)
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_bias = flat_grad.sum(0)
        return grad_inputs, grad_weight, grad_bias


def _plain_cpu_fp32(inputs: Tensor, weight: Tensor) -> bool:
    """fp32 CPU operands outside autocast and ``torch.compile`` (where PyTorch's own kernels are the ones to use)."""
    return (
        inputs.device.type == "cpu"
        and inputs.dtype == torch.float32
        and weight.dtype == torch.float32
        and not torch.is_autocast_enabled("cpu")
        and not torch.compiler.is_compiling()
    )


def linear(inputs: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """``F.linear(inputs, weight, bias)``, through oneDNN where that is faster (see the module docstring)."""
    # The common small product is decided first: at batch 1 the other checks would cost ~1 µs per call.
    if inputs.numel() * weight.shape[0] < MIN_MULTIPLY_ADDS or not enabled:
        return F.linear(inputs, weight, bias)
    if inputs.dim() >= 2 and _plain_cpu_fp32(inputs, weight):
        if torch.is_grad_enabled() and (
            inputs.requires_grad or weight.requires_grad or (bias is not None and bias.requires_grad)
        ):
            return _Product.apply(inputs, weight, bias)
        return _product(inputs, weight, bias)
    return F.linear(inputs, weight, bias)


class Linear(nn.Linear):
    """``nn.Linear`` computed by `linear`: the same parameters and state dict."""

    def forward(self, inputs: Tensor) -> Tensor:
        return linear(inputs, self.weight, self.bias)


# PyTorch sends a batch-1 convolution of under 20480 input values to its im2col path, which is slower than oneDNN's
# on this CPU from 14 × 14 pixels and 16 output channels (measured inside the shipped decoder: 16 → 16 channels at
# 28 × 28, 46 against 70 µs; 64 → 32 at 14 × 14, 71 against 94 µs; at 7 × 7 im2col wins, 31 against 58 µs; the whole
# decoder at batch 1: 0.81 → 0.73 ms, bench/kernels.py).
MIN_CONVOLUTION_PIXELS, MIN_CONVOLUTION_OUTPUTS = 14 * 14, 16


class Conv2d(nn.Conv2d):
    """``nn.Conv2d`` that calls oneDNN's convolution for inference on fp32 CPU tensors of at least
    `MIN_CONVOLUTION_PIXELS` pixels and `MIN_CONVOLUTION_OUTPUTS` output channels (the tokenizer's decoder at batch 1);
    ``nn.Conv2d``'s own forward otherwise (training, GPUs, autocast, small grids: PyTorch's choice is right there)."""

    def forward(self, inputs: Tensor) -> Tensor:
        if (
            enabled
            and inputs.dim() == 4
            and self.padding_mode == "zeros"
            and not isinstance(self.padding, str)
            and self.out_channels >= MIN_CONVOLUTION_OUTPUTS
            and inputs.shape[-2] * inputs.shape[-1] >= MIN_CONVOLUTION_PIXELS
            and not (torch.is_grad_enabled() and (inputs.requires_grad or self.weight.requires_grad))
            and _plain_cpu_fp32(inputs, self.weight)
        ):
            return torch.mkldnn_convolution(
                inputs, self.weight, self.bias, self.padding, self.stride, self.dilation, self.groups
            )
        return super().forward(inputs)


__all__ = [
    "MIN_CONVOLUTION_OUTPUTS",
    "MIN_CONVOLUTION_PIXELS",
    "MIN_MULTIPLY_ADDS",
    "Conv2d",
    "Linear",
    "enabled",
    "linear",
]
