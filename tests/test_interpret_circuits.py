"""Circuits from per-head codes (argen.interpret.circuits) on synthetic per-head activations with planted heads.

The mechanism is planted directly in per-head activations rather than in a trained generator (training a generator on
a synthetic task would take minutes): in the positives, heads 2 and 5 write a task direction; every other head has the
same distribution in positives and negatives. An edge is planted too: heads 1 and 6 each look alike in both sets,
but in the positives they agree on their (shared) direction while in the negatives they never do.
"""

import pytest
import torch

from argen.interpret.circuits import circuit_scores, find_circuit, precision_recall, unique_share


def planted(count: int, *, positive: bool, heads: int = 8, width: int = 8, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed + (0 if positive else 1))
    fixed = torch.Generator().manual_seed(9)
    directions = torch.nn.functional.normalize(torch.randn(heads, 4, width, generator=fixed), dim=-1)
    # Every head writes one of its 4 "ordinary" directions, chosen at random, plus noise.
    choice = torch.randint(0, 4, (count, heads), generator=generator)
    x = directions[torch.arange(heads), choice] * 3 + 0.1 * torch.randn(count, heads, width, generator=generator)
    if positive:  # the node heads write a direction the negatives never contain
        task = torch.nn.functional.normalize(torch.randn(2, width, generator=torch.Generator().manual_seed(7)), dim=-1)
        x[:, 2] = task[0] * 3 + 0.1 * torch.randn(count, width, generator=generator)
        x[:, 5] = task[1] * 3 + 0.1 * torch.randn(count, width, generator=generator)
        # the edge: head 6 repeats head 1's choice
        x[:, 6] = directions[6, choice[:, 1]] * 3 + 0.1 * torch.randn(count, width, generator=generator)
    else:  # head 6 never repeats head 1's choice in the negatives
        other = (choice[:, 1] + 1 + torch.randint(0, 3, (count,), generator=generator)) % 4
        x[:, 6] = directions[6, other] * 3 + 0.1 * torch.randn(count, width, generator=generator)
    return x


def test_circuit_method_recovers_the_planted_heads_and_edge():
    positive, negative = planted(200, positive=True), planted(200, positive=False)
    circuit = find_circuit(positive, negative, latents=8, steps=300)
    assert precision_recall(circuit.nodes, [2, 5]) == (1.0, 1.0), circuit.node_scores
    assert (1, 6) in circuit.edges, circuit.edge_scores
    assert precision_recall(circuit.edges, [(1, 6)])[0] >= 0.5


def test_unique_share_and_scores_on_given_codes():
    positive = torch.tensor([[0, 1], [0, 2], [3, 1]])
    negative = torch.tensor([[0, 1], [1, 2]])
    assert unique_share(positive[:, 0], negative[:, 0]) == 1 / 3
    nodes, edges = circuit_scores(positive, negative)
    assert nodes.tolist() == pytest.approx([1 / 3, 0.0])
    assert float(edges[0, 1]) == pytest.approx(2 / 3 - 1 / 3)  # (0, 2) and (3, 1) are unseen pairs
