"""The key-value cache of one generation (legend: B batch, L sequence, D width)."""

from __future__ import annotations

import torch
from torch import Tensor

from argen.errors import ArgenError


class KVCache:
    """Keys and values of the sequence positions fed so far, per layer, and their steps.

    Preallocated for ``capacity`` positions; a forward pass writes its positions after the cached ones and then
    advances ``length``. `rollback` forgets everything after a given length (speculative decoding needs it).

    A cache lives for one generation, so it also holds what the transformer computes once per generation rather
    than once per call (``memo``: the class conditioning and AdaLN modulations, the position embeddings), and a host
    copy of the cached steps, so that deciding whether a call needs an attention mask never waits for the device.
    """

    def __init__(
        self,
        *,
        layers: int,
        batch: int,
        heads: int,
        head_dim: int,
        capacity: int,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str | None = None,
    ):
        shape = (layers, batch, heads, capacity, head_dim)
        self.keys = torch.zeros(shape, dtype=dtype, device=device)
        self.values = torch.zeros(shape, dtype=dtype, device=device)
        self.steps = torch.zeros(capacity, dtype=torch.long, device=device)
        self.host_steps = torch.zeros(capacity, dtype=torch.long)
        self.length = 0
        self.memo: dict[str, object] = {}

    @property
    def batch(self) -> int:
        return self.keys.shape[1]

    @property
    def capacity(self) -> int:
        return self.keys.shape[3]

    def update(self, layer: int, keys: Tensor, values: Tensor) -> tuple[Tensor, Tensor]:
        """Write (B, heads, n, head_dim) keys and values after the cached ones; return all of them for ``layer``."""
        end = self.length + keys.shape[2]
        if end > self.capacity:
            raise ArgenError(f"KV cache holds {self.capacity} positions, {end} were fed: make a larger one")
        if keys.shape[0] != self.batch:
            raise ArgenError(f"KV cache was made for batch {self.batch}, got {keys.shape[0]}")
        self.keys[layer, :, :, self.length : end] = keys
        self.values[layer, :, :, self.length : end] = values
        return self.keys[layer, :, :, :end], self.values[layer, :, :, :end]

    def advance(self, steps: Tensor, host_steps: Tensor | None = None) -> None:
        """Commit the positions just written by every layer, with their steps (n,) (``host_steps``: the same on the
        CPU, when the caller has them, which saves a device-to-host copy)."""
        end = self.length + steps.numel()
        self.steps[self.length : end] = steps
        self.host_steps[self.length : end] = steps.cpu() if host_steps is None else host_steps
        self.length = end

    @property
    def last_step(self) -> int:
        """The step of the newest cached position (steps never decrease along a layout), -1 when empty."""
        return int(self.host_steps[self.length - 1]) if self.length else -1

    def rollback(self, length: int) -> None:
        """Keep the first ``length`` cached positions and forget the rest."""
        if not 0 <= length <= self.length:
            raise ArgenError(f"cannot roll a KV cache of length {self.length} back to {length}")
        self.length = length


__all__ = ["KVCache"]
