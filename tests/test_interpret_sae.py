"""Sparse autoencoders (argen.interpret.sae), activation capture and splicing (argen.interpret.activations, splice)."""

import json

import pytest
import torch

from argen.errors import ArgenError
from argen.interpret.activations import Activations, capture_activations, hook_points, recording, steering
from argen.interpret.sae import (
    SparseAutoencoder,
    SparseAutoencoderConfig,
    evaluate_sparse_autoencoder,
    load_sparse_autoencoder,
    sparse_autoencoder_loss,
    train_sparse_autoencoder,
)
from argen.interpret.splice import reconstruction_edit, spliced_loss_increase
from argen.pipeline import Pipeline
from argen.train import TrainingConfig

RASTER = "checkpoints/fashion-mnist/raster"


def exact_sae(width: int) -> SparseAutoencoder:
    """k = latents = 2·width, encoder and decoder [I; -I], no biases: relu(x) - relu(-x) = x for every x."""
    sae = SparseAutoencoder(SparseAutoencoderConfig(kind="topk", width=width, latents=2 * width, k=2 * width))
    identity = torch.eye(width)
    with torch.no_grad():
        sae.encoder.weight.copy_(torch.cat([identity, -identity]))
        sae.encoder.bias.zero_()
        sae.decoder_weight.copy_(torch.cat([identity, -identity]))
        sae.decoder_bias.zero_()
    return sae


def test_topk_with_k_equal_to_width_reconstructs_the_identity_problem_exactly():
    x = torch.randn(256, 6)
    sae = exact_sae(6)
    assert torch.allclose(sae(x).reconstruction, x, atol=1e-6)
    metrics = evaluate_sparse_autoencoder(sae, x)
    assert metrics["fvu"] < 1e-10
    assert metrics["l0"] == pytest.approx(6.0)  # one of each ± pair fires (x ≠ 0 almost surely)


def test_trained_topk_learns_the_identity_problem(tmp_path):
    torch.manual_seed(0)
    x = torch.randn(2048, 4)
    config = SparseAutoencoderConfig(kind="topk", width=4, latents=8, k=8)
    training = TrainingConfig(
        out=str(tmp_path / "sae"), steps=300, batch_size=256, learning_rate=1e-2, warmup_steps=10, progress=False
    )
    train_sparse_autoencoder(x, config, training)
    sae = load_sparse_autoencoder(tmp_path / "sae")
    assert evaluate_sparse_autoencoder(sae, x)["fvu"] < 0.02
    assert json.loads((tmp_path / "sae" / "config.json").read_text())["kind"] == "sparse-autoencoder"


def dictionary_data(count: int, *, width: int = 16, features: int = 48, active: int = 3, seed: int = 0):
    """x = sparse combination of random unit features: a problem with more true features than dimensions."""
    generator = torch.Generator().manual_seed(seed)
    dictionary = torch.nn.functional.normalize(torch.randn(features, width, generator=generator), dim=1)
    codes = torch.zeros(count, features)
    chosen = torch.rand(count, features, generator=generator).argsort(1)[:, :active]
    codes.scatter_(1, chosen, torch.rand(count, active, generator=generator) + 0.5)
    return codes @ dictionary


def train_with_planted_dead(auxk_coefficient: float, *, steps: int = 300) -> float:
    """Fraction of 16 planted dead latents still dead after training (latents whose encoder rows are shrunk 20×, so
    they never reach the top k and get no gradient from the main loss)."""
    torch.manual_seed(0)
    x = dictionary_data(4096)
    config = SparseAutoencoderConfig(
        kind="topk", width=16, latents=64, k=4, auxk_coefficient=auxk_coefficient, dead_tokens=512
    )
    sae = SparseAutoencoder(config)
    planted = torch.arange(16)
    with torch.no_grad():
        sae.encoder.weight[planted] *= 0.05
        sae.tokens_since_fired[planted] = 10_000
    optimizer = torch.optim.Adam(sae.parameters(), lr=3e-3)
    sae.train()
    for step in range(steps):
        batch = x[(step * 256) % 4096 :][:256]
        loss, _ = sparse_autoencoder_loss(sae, {"activations": batch})
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    codes = sae.eval()(x).codes
    return float((codes[:, planted] == 0).all(0).float().mean())


def test_auxk_revives_planted_dead_latents():
    without = train_with_planted_dead(0.0)
    with_auxk = train_with_planted_dead(1 / 32)
    assert without == 1.0  # the main loss alone never reaches them
    assert with_auxk <= 0.25


def test_relu_sae_trains_and_is_sparser_with_a_larger_penalty():
    torch.manual_seed(0)
    x = dictionary_data(2048)
    l0 = []
    for coefficient in (1e-3, 1.0):
        sae = SparseAutoencoder(SparseAutoencoderConfig(kind="relu", width=16, latents=64, l1_coefficient=coefficient))
        optimizer = torch.optim.Adam(sae.parameters(), lr=3e-3)
        for step in range(150):
            loss, _ = sparse_autoencoder_loss(sae, {"activations": x[(step * 256) % 2048 :][:256]})
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        l0.append(evaluate_sparse_autoencoder(sae, x)["l0"])
    assert l0[1] < 0.5 * l0[0]


def test_bad_sae_config_is_refused():
    with pytest.raises(ArgenError, match="--k"):
        SparseAutoencoderConfig(kind="topk", width=4, latents=8, k=9)
    with pytest.raises(ArgenError, match="kind"):
        SparseAutoencoderConfig(kind="gated", width=4, latents=8)


@pytest.fixture(scope="module")
def raster():
    return Pipeline.from_pretrained(RASTER)


def sequences(count: int = 12):
    generator = torch.Generator().manual_seed(0)
    return [torch.randint(0, 1024, (count, 7, 7), generator=generator)], torch.arange(count) % 10


def test_splicing_an_exact_reconstruction_leaves_the_loss(raster):
    ids, labels = sequences()
    exact = spliced_loss_increase(
        raster.model, raster.order, raster.tokenizer, ids, labels, hook="blocks.1.resid_post",
        edit=reconstruction_edit(exact_sae(112)),
    )  # fmt: skip
    assert abs(exact["delta_loss"]) < 1e-4
    zeroed = spliced_loss_increase(
        raster.model, raster.order, raster.tokenizer, ids, labels, hook="blocks.1.resid_post", edit=torch.zeros_like
    )
    assert zeroed["delta_loss"] > 0.1  # the splice reaches the model: a destroyed activation costs loss


def test_capture_is_sharded_and_matches_a_recorded_forward(raster, tmp_path):
    ids, labels = sequences()
    hooks = ["blocks.0.resid_pre", "blocks.2.resid_post"]
    capture_activations(
        raster.model, raster.order, raster.tokenizer, ids, labels, hooks, tmp_path / "acts",
        shard_bytes=5 * 49 * 112 * 4 * 2, batch_size=4, progress=False,
    )  # fmt: skip
    acts = Activations(tmp_path / "acts")
    assert len(acts.manifest["shards"]) == 3
    inputs, targets = raster.order.train_inputs(ids, raster.tokenizer)
    with torch.no_grad(), recording(raster.model, hooks) as recorded:
        raster.model(inputs, labels, layout=raster.order.layout(raster.tokenizer.grid_shapes))
    for hook in hooks:
        assert torch.allclose(acts.load(hook), recorded[hook].flatten(0, 1), atol=1e-5)
    positions = acts.positions()
    assert torch.equal(positions["token"], targets.flatten())
    assert torch.equal(positions["label"], labels.repeat_interleave(49))
    assert positions["step"][:49].tolist() == list(range(49))
    assert positions["row"][:49].tolist() == [p // 7 for p in range(49)]


def test_hook_names_and_steering_by_zero(raster):
    names = hook_points(raster.model)
    assert "blocks.0.resid_pre" in names and "blocks.2.resid_post" in names
    ids, labels = sequences(2)
    inputs, _ = raster.order.train_inputs(ids, raster.tokenizer)
    layout = raster.order.layout(raster.tokenizer.grid_shapes)
    with torch.no_grad():
        plain = raster.model(inputs, labels, layout=layout)
        with steering(raster.model, "blocks.1.resid_post", torch.ones(112), 0.0):
            steered_zero = raster.model(inputs, labels, layout=layout)
        with steering(raster.model, "blocks.1.resid_post", torch.ones(112), 2.0):
            steered = raster.model(inputs, labels, layout=layout)
    assert torch.equal(plain, steered_zero)
    assert not torch.allclose(plain, steered)
    with pytest.raises(ArgenError, match="no hook point"):
        with recording(raster.model, ["blocks.9.resid_post"]):
            pass
