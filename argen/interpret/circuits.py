"""Circuits from sparse codes of attention heads, after O'Neill & Bui, "Sparse Autoencoders Enable Scalable and
Reliable Circuit Identification in Language Models" (arXiv 2405.12522).

The method (§3): run the model on positive examples (the behaviour studied) and negative ones (the behaviour
absent), take every head's output at the position that matters, train one small SAE per head on both sets, and
discretise each example's head output to a code: the index of its strongest latent (§3.2). A head is a node of the
circuit when the codes it gives the positives are unique to them, i.e. never seen among the negatives (§3.3, node
score = the share of positives whose code is unique); a pair of heads is an edge when the pair of their codes is
unique to the positives beyond what either head explains alone (edge score = the share of positives whose code pair is
unseen among the negatives, minus the larger of the two node scores).

Input is per-head activations (N, H, Dh), e.g. the ``blocks.{i}.attn.z`` hook at one position, heads of several
layers concatenated on H.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from argen.errors import ArgenError
from argen.interpret.sae import SparseAutoencoder, SparseAutoencoderConfig, sparse_autoencoder_loss


@dataclass
class Circuit:
    nodes: list[int]  # heads, by index along H
    edges: list[tuple[int, int]]
    node_scores: Tensor  # (H,)
    edge_scores: Tensor  # (H, H), upper triangle


def train_head_autoencoders(
    activations: Tensor, *, latents: int = 16, k: int = 1, steps: int = 300, learning_rate: float = 1e-2, seed: int = 0
) -> list[SparseAutoencoder]:
    """One TopK SAE per head on ``activations`` (N, H, Dh) (positives and negatives together). Small and full-batch:
    a head's output at one position over a few hundred examples is a few kB, well below what the training loop's
    machinery is for."""
    if activations.dim() != 3:
        raise ArgenError(f"per-head activations must be (N, H, Dh), got {tuple(activations.shape)}")
    torch.manual_seed(seed)
    autoencoders = []
    for head in range(activations.shape[1]):
        x = activations[:, head].float()
        config = SparseAutoencoderConfig(kind="topk", width=x.shape[1], latents=latents, k=k, dead_tokens=x.shape[0])
        sae = SparseAutoencoder(config)
        with torch.no_grad():
            sae.decoder_bias.copy_(x.mean(0))
        optimizer = torch.optim.Adam(sae.parameters(), lr=learning_rate)
        sae.train()
        for _ in range(steps):
            loss, _ = sparse_autoencoder_loss(sae, {"activations": x})
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        autoencoders.append(sae.eval())
    return autoencoders


@torch.no_grad()
def head_codes(autoencoders: list[SparseAutoencoder], activations: Tensor) -> Tensor:
    """(N, H, Dh) → (N, H) discrete codes: each head's strongest latent (O'Neill & Bui §3.2)."""
    return torch.stack(
        [sae.encode(activations[:, head].float()).argmax(-1) for head, sae in enumerate(autoencoders)], dim=1
    )


def unique_share(positive: Tensor, negative: Tensor) -> float:
    """The share of the positives' codes (N,) or code tuples (N, T) never seen among the negatives'."""
    seen = {tuple(row) for row in negative.view(negative.shape[0], -1).tolist()}
    rows = positive.view(positive.shape[0], -1).tolist()
    return sum(tuple(row) not in seen for row in rows) / max(len(rows), 1)


def circuit_scores(positive: Tensor, negative: Tensor) -> tuple[Tensor, Tensor]:
    """Node scores (H,) and edge scores (H, H) from codes (N, H) of positives and (M, H) of negatives."""
    heads = positive.shape[1]
    nodes = torch.tensor([unique_share(positive[:, head], negative[:, head]) for head in range(heads)])
    edges = torch.zeros(heads, heads)
    for first in range(heads):
        for second in range(first + 1, heads):
            pair = unique_share(positive[:, [first, second]], negative[:, [first, second]])
            edges[first, second] = pair - max(nodes[first], nodes[second])
    return nodes, edges


def find_circuit(
    positive: Tensor,
    negative: Tensor,
    *,
    latents: int = 16,
    node_threshold: float = 0.5,
    edge_threshold: float = 0.2,
    steps: int = 300,
    seed: int = 0,
) -> Circuit:
    """The heads and head pairs whose codes are unique to the positives: ``positive`` (N, H, Dh) and ``negative``
    (M, H, Dh) per-head activations at the position that matters."""
    if positive.shape[1:] != negative.shape[1:]:
        raise ArgenError(f"positives {tuple(positive.shape)} and negatives {tuple(negative.shape)} differ in heads")
    autoencoders = train_head_autoencoders(torch.cat([positive, negative]), latents=latents, steps=steps, seed=seed)
    node_scores, edge_scores = circuit_scores(head_codes(autoencoders, positive), head_codes(autoencoders, negative))
    nodes = [head for head in range(positive.shape[1]) if node_scores[head] >= node_threshold]
    pairs = (edge_scores >= edge_threshold).nonzero().tolist()
    return Circuit(nodes, [(first, second) for first, second in pairs], node_scores, edge_scores)


def precision_recall(found: list[int], truth: list[int]) -> tuple[float, float]:
    """Precision and recall of a found set of heads (or pairs) against the true one."""
    hits = len(set(found) & set(truth))
    return hits / max(len(found), 1), hits / max(len(truth), 1)
