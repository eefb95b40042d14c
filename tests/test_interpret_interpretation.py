"""Automatic interpretation (argen.interpret.interpretation): synthetic latents with known rules are recovered."""

import torch

from argen.interpret.interpretation import (
    Atom,
    Predicate,
    auc,
    cell_statistics,
    detection_scores,
    interpret_latent,
    with_regions,
)


def synthetic_table(sequences: int = 300, side: int = 7, seed: int = 0) -> dict[str, torch.Tensor]:
    """A raster-like position table: 49 positions per sequence, random classes and tokens, and random intensity."""
    generator = torch.Generator().manual_seed(seed)
    length = side * side
    position = torch.arange(length).repeat(sequences)
    table = {
        "sequence": torch.arange(sequences).repeat_interleave(length),
        "position": position,
        "label": torch.randint(0, 10, (sequences,), generator=generator).repeat_interleave(length),
        "step": position,
        "row": position // side,
        "col": position % side,
        "grid_height": torch.full_like(position, side),
        "grid_width": torch.full_like(position, side),
        "token": torch.randint(0, 64, (sequences * length,), generator=generator),
        "intensity": torch.rand(sequences * length, generator=generator),
    }
    return with_regions(table)


def latent_from(rule: Predicate, table: dict[str, torch.Tensor], seed: int = 1) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    magnitude = torch.rand(table["sequence"].numel(), generator=generator) + 0.1
    return torch.where(rule.holds(table), magnitude, torch.zeros_like(magnitude))


def test_detection_recovers_the_predicates_of_synthetic_latents():
    table = synthetic_table()
    rules = [
        Predicate((Atom("label", 3, 3),)),
        Predicate((Atom("token", 17, 17),)),
        Predicate((Atom("row", -float("inf"), 1),)),
        Predicate((Atom("label", 7, 7), Atom("horizontal", 2, 2))),
        Predicate((Atom("intensity", 0.75, float("inf")),)),
    ]
    for rule in rules:
        found = interpret_latent(latent_from(rule, table), table, count=400)
        found_set = found.predicate.holds(table)
        agreement = float((found_set == rule.holds(table)).float().mean())
        assert agreement > 0.98, (rule.describe(), found.predicate.describe())
        assert found.detection["f1"] > 0.95 and found.detection["auc"] > 0.95
        if rule.atoms[0].name == "label" and len(rule.atoms) == 1:
            # A whole-image rule: random marks in a firing image satisfy it too, so fuzzing cannot tell (chance).
            assert found.fuzzing["accuracy"] == 0.5
        else:
            assert found.fuzzing["f1"] > 0.9


def test_a_latent_without_a_rule_scores_low():
    table = synthetic_table()
    generator = torch.Generator().manual_seed(3)
    noise = torch.rand(table["sequence"].numel(), generator=generator)
    random_latent = torch.where(noise > 0.8, noise, torch.zeros_like(noise))
    found = interpret_latent(random_latent, table, count=400)
    assert found.detection["f1"] < 0.8


def test_scores_of_a_wrong_predicate_are_poor():
    table = synthetic_table()
    truth = Predicate((Atom("label", 3, 3),))
    activation = latent_from(truth, table)
    positive = (activation > 0).nonzero().squeeze(1)[:200]
    negative = (activation == 0).nonzero().squeeze(1)[:200]
    assert detection_scores(truth, table, positive, negative)["f1"] == 1.0
    assert detection_scores(Predicate((Atom("label", 4, 4),)), table, positive, negative)["f1"] == 0.0
    assert auc(torch.tensor([0.9, 0.8, 0.1]), torch.tensor([True, True, False])) == 1.0


def test_cell_statistics_read_the_cell_of_each_position():
    images = torch.zeros(1, 1, 28, 28, dtype=torch.uint8)
    images[0, 0, :4, :4] = 255  # the top-left cell of a 7×7 grid is white
    table = {
        "sequence": torch.zeros(49, dtype=torch.long), "row": torch.arange(49) // 7, "col": torch.arange(49) % 7,
        "grid_height": torch.full((49,), 7), "grid_width": torch.full((49,), 7),
    }  # fmt: skip
    statistics = cell_statistics(images, table)
    assert statistics["intensity"][0] == 1.0 and statistics["intensity"][1:].max() == 0.0
    assert statistics["edge"][1] > 0 and statistics["edge"][48] == 0.0
