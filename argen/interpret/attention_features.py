"""Attention-output SAEs: which heads a feature comes from (Kissane et al., "Interpreting Attention Layer Outputs with
Sparse Autoencoders", arXiv 2406.17759, §3.1 and §4).

An SAE on ``blocks.{i}.attn.z``, the concatenated per-head outputs before the output projection (H heads of Dh
each, flattened to H·Dh), has decoder rows that split into H slices of Dh, one per head. A feature's attribution to
head h is the norm of its row's slice h over the sum of the slices' norms: the share of what it writes that lives in
that head's output (the paper's "weight-based head attribution"), so a feature that one head alone carries has
attribution 1 there.
"""

from __future__ import annotations

from torch import Tensor

from argen.errors import ArgenError
from argen.interpret.sae import SparseAutoencoder


def head_attribution(sae: SparseAutoencoder, heads: int) -> Tensor:
    """(M, H) share of each latent's unit decoder row that lies in each head's slice (rows sum to 1)."""
    width = sae.config.width
    if heads < 1 or width % heads:
        raise ArgenError(f"the SAE reads width {width}, not a whole number of {heads} heads: pass the SAE of an "
                         "attn.z hook point and the model's head count")  # fmt: skip
    directions = sae.decoder_directions().detach()  # (M, H·Dh)
    norms = directions.view(directions.shape[0], heads, width // heads).norm(dim=-1)  # (M, H)
    return norms / norms.sum(dim=1, keepdim=True).clamp_min(1e-12)


def top_heads(attribution: Tensor) -> list[tuple[int, float]]:
    """(M, H) attributions → for each latent, its most attributed head and that head's share."""
    share, head = attribution.max(dim=1)
    return list(zip(head.tolist(), share.tolist()))
