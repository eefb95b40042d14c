"""What an SAE costs the generator: its next-token loss with the SAE's reconstruction spliced in at the hook point,
minus without (the "delta loss" of Gao et al., arXiv 2406.04093 §4.1, there on a language model's next token)."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from argen.interpret.activations import editing
from argen.interpret.sae import SparseAutoencoder
from argen.orders.base import Order


@torch.no_grad()
def next_token_loss(
    model: nn.Module,
    order: Order,
    tokenizer: nn.Module,
    ids: list[Tensor],
    labels: Tensor | None,
    *,
    batch_size: int = 64,
) -> float:
    """Mean cross-entropy (nats per token) of the generator on the N sequences of ``ids``, teacher-forced."""
    model.eval()
    layout = order.layout(tokenizer.grid_shapes)
    total, count = 0.0, 0
    for start in range(0, ids[0].shape[0], batch_size):
        grids = [grid[start : start + batch_size] for grid in ids]
        inputs, targets = order.train_inputs(grids, tokenizer)
        batch_labels = None if labels is None else labels[start : start + batch_size]
        logits = order.logits(model(inputs, batch_labels, layout=layout), layout)  # (B, L, V)
        total += float(F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten(), reduction="sum"))
        count += targets.numel()
    return total / max(count, 1)


def reconstruction_edit(sae: SparseAutoencoder) -> Callable[[Tensor], Tensor]:
    """An ``editing`` function replacing the activation (B, L, D) or (B, L, H, Dh) by the SAE's reconstruction."""

    def replace(activation: Tensor) -> Tensor:
        flat = activation.flatten(2) if activation.dim() == 4 else activation
        reconstruction = sae(flat.reshape(-1, flat.shape[-1]).float()).reconstruction
        return reconstruction.to(activation.dtype).view(activation.shape)

    return replace


def spliced_loss_increase(
    model: nn.Module,
    order: Order,
    tokenizer: nn.Module,
    ids: list[Tensor],
    labels: Tensor | None,
    *,
    hook: str,
    edit: Callable[[Tensor], Tensor],
    batch_size: int = 64,
) -> dict[str, float]:
    """{"loss": clean loss, "spliced_loss": with ``edit`` at ``hook``, "delta_loss": their difference}."""
    clean = next_token_loss(model, order, tokenizer, ids, labels, batch_size=batch_size)
    with editing(model, hook, edit):
        spliced = next_token_loss(model, order, tokenizer, ids, labels, batch_size=batch_size)
    return {"loss": clean, "spliced_loss": spliced, "delta_loss": spliced - clean}
