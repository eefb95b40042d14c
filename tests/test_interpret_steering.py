"""Hook points of the model, steering through the Pipeline and the CLI, head attribution of attention-output SAEs."""

import numpy as np
import pytest
import torch

from argen.checkpoint import save_release
from argen.cli import main
from argen.errors import ArgenError
from argen.interpret.activations import hook_points, recording
from argen.interpret.attention_features import head_attribution, top_heads
from argen.interpret.sae import SAE_KIND, SparseAutoencoder, SparseAutoencoderConfig
from argen.interpret.steering import FeatureEdit, steering
from argen.model import Transformer, TransformerConfig
from argen.model.layers import block_step
from argen.pipeline import Pipeline

RASTER = "checkpoints/fashion-mnist/raster"


@pytest.fixture(scope="module")
def raster():
    return Pipeline.from_pretrained(RASTER)


def saved_sae(directory, hook: str, width: int, seed: int = 0) -> str:
    torch.manual_seed(seed)
    sae = SparseAutoencoder(SparseAutoencoderConfig(kind="topk", width=width, latents=64, k=8, hook=hook))
    save_release(directory, kind=SAE_KIND, config=sae.config, state_dict=sae.state_dict())
    return str(directory)


@pytest.mark.parametrize("adaln", [False, True])
def test_block_modules_give_block_step_floats(adaln):
    """The module chain (what hooks need) and the fused function run the same operations: equal bit for bit."""
    torch.manual_seed(0)
    config = TransformerConfig(vocab_size=16, num_classes=3, width=32, depth=2, heads=4, adaln=adaln, max_steps=8)
    model = Transformer(config)
    block = model.blocks[0]
    if adaln:
        torch.nn.init.normal_(block.modulation.weight, std=0.1)
    x, condition = torch.randn(2, 8, 32), torch.randn(2, 32)
    terms = block.modulate(torch.nn.functional.silu(condition))
    mask = torch.ones(8, 8, dtype=torch.bool).tril()
    assert torch.equal(block(x, terms, mask=mask), block_step(x, block.weights(), terms, mask, None, 0))


def test_identity_hook_points_leave_the_weights_and_are_listed(raster):
    names = hook_points(raster.model)
    for index in range(3):
        assert {f"blocks.{index}.attn.z", f"blocks.{index}.mlp_out", f"blocks.{index}.resid_post"} <= set(names)
    assert not [key for key in raster.model.state_dict() if key.endswith((".z", "mlp_out"))]


def test_hooks_fire_in_plain_forwards_and_in_sampling(raster):
    calls = []
    with recording(raster.model, ["blocks.0.attn.z", "blocks.2.mlp_out"]) as recorded:
        handle = raster.model.blocks[1].attention.z.register_forward_hook(lambda *_: calls.append(1))
        try:
            raster([3, 7], seed=0)
        finally:
            handle.remove()
        assert recorded["blocks.0.attn.z"].shape[-2:] == (4, 28)  # (B, L, H, Dh) of the last call
        assert recorded["blocks.2.mlp_out"].shape[-1] == 112
    assert len(calls) == 49  # one per raster step: nothing replayed from an earlier generation
    assert not raster.model.blocks_hooked()


def test_steering_by_zero_is_exact_and_alternation_serves_nothing_stale(raster, tmp_path):
    sae = saved_sae(tmp_path / "sae", "blocks.1.resid_post", 112)
    labels = [0, 5, 7, 9]
    plain = raster(labels, seed=3).ids[0]
    with steering(raster, steer=[f"{sae}:5=0"]):
        zero = raster(labels, seed=3).ids[0]
    assert torch.equal(plain, zero)  # hooked (module) path, nothing reused: the same ids bit for bit
    with steering(raster, steer=[f"{sae}:5=12"]):
        steered = raster(labels, seed=3).ids[0]
        steered_again = raster(labels, seed=3).ids[0]
    plain_again = raster(labels, seed=3).ids[0]
    fresh = Pipeline.from_pretrained(RASTER)
    with steering(fresh, steer=[FeatureEdit(sae, 5, 12.0)]):
        steered_fresh = fresh(labels, seed=3).ids[0]
    assert not torch.equal(plain, steered)
    assert torch.equal(steered, steered_again) and torch.equal(steered, steered_fresh)
    assert torch.equal(plain, plain_again)


def test_clamp_sets_the_feature_through_the_sae(raster, tmp_path):
    """With the exact SAE [I; -I] feature 3 reads relu(x_3) along e_3: clamping to v moves x_3 by v - relu(x_3)."""
    config = SparseAutoencoderConfig(kind="topk", width=112, latents=224, k=224, hook="blocks.0.mlp_out")
    sae = SparseAutoencoder(config)
    with torch.no_grad():
        identity = torch.eye(112)
        sae.encoder.weight.copy_(torch.cat([identity, -identity]))
        sae.encoder.bias.zero_()
        sae.decoder_weight.copy_(torch.cat([identity, -identity]))
        sae.decoder_bias.zero_()
    save_release(tmp_path / "sae", kind=SAE_KIND, config=sae.config, state_dict=sae.state_dict())
    ids = [torch.randint(0, 1024, (2, 7, 7), generator=torch.Generator().manual_seed(0))]
    inputs, _ = raster.order.train_inputs(ids, raster.tokenizer)
    layout = raster.order.layout(raster.tokenizer.grid_shapes)
    with torch.no_grad():
        with recording(raster.model, ["blocks.0.mlp_out"]) as recorded:
            raster.model(inputs, torch.tensor([1, 2]), layout=layout)
        plain = recorded["blocks.0.mlp_out"]
        with steering(raster.model, clamp=[f"{tmp_path / 'sae'}:3=7.5"]):
            with recording(raster.model, ["blocks.0.mlp_out"]) as recorded:  # registered after: sees the clamp
                raster.model(inputs, torch.tensor([1, 2]), layout=layout)
    expected = plain.clone()
    expected[..., 3] += 7.5 - plain[..., 3].clamp_min(0)
    assert bool((plain[..., 3] > 0).any()) and bool((plain[..., 3] < 0).any())
    assert torch.allclose(recorded["blocks.0.mlp_out"], expected, atol=1e-5)


def test_bad_steer_arguments_are_refused(raster, tmp_path):
    with pytest.raises(ArgenError, match="SAE:FEATURE=VALUE"):
        FeatureEdit.parse("no-colon=3")
    with pytest.raises(ArgenError, match="not an SAE directory"):
        with steering(raster, steer=[f"{tmp_path}/missing:1=2"]):
            pass
    sae = saved_sae(tmp_path / "wide", "blocks.0.resid_post", 112)
    with pytest.raises(ArgenError, match="out of range"):
        with steering(raster, steer=[f"{sae}:999=1"]):
            pass


def test_sample_command_steers(tmp_path):
    sae = saved_sae(tmp_path / "sae", "blocks.1.resid_post", 112)
    common = ["sample", "--model", RASTER, "--labels", "1,8", "--per-label", "2", "--seed", "4"]
    for name, extra in (("plain", []), ("zero", ["--steer", f"{sae}:2=0"]), ("far", ["--steer", f"{sae}:2=20"])):
        main([*common, *extra, "--out", str(tmp_path / f"{name}.png"), "--save-npz", str(tmp_path / f"{name}.npz")])
    images = {name: np.load(tmp_path / f"{name}.npz")["images"] for name in ("plain", "zero", "far")}
    assert np.array_equal(images["plain"], images["zero"])
    assert not np.array_equal(images["plain"], images["far"])


def test_head_attribution_finds_a_planted_head():
    """Latents whose decoder rows live in one head's slice are attributed to that head alone."""
    heads, head_dim, latents = 4, 8, 12
    sae = SparseAutoencoder(SparseAutoencoderConfig(kind="topk", width=heads * head_dim, latents=latents, k=4))
    planted = torch.arange(latents) % heads
    with torch.no_grad():
        rows = torch.randn(latents, heads, head_dim) * 0.01
        rows[torch.arange(latents), planted] = torch.randn(latents, head_dim)
        sae.decoder_weight.copy_(rows.flatten(1))
    attribution = head_attribution(sae, heads)
    assert torch.allclose(attribution.sum(1), torch.ones(latents))
    assert [head for head, _ in top_heads(attribution)] == planted.tolist()
    assert min(share for _, share in top_heads(attribution)) > 0.9
    with pytest.raises(ArgenError, match="whole number"):
        head_attribution(sae, 5)
