"""Editing (inpainting, outpainting, class editing) for every order, on tiny random-weight pipelines built in memory."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from argen.cli import run
from argen.data import float_to_images, images_to_float
from argen.data.masks import as_masks, box_mask, fill_masked, known_cells
from argen.errors import ArgenError
from argen.model import Transformer, TransformerConfig
from argen.orders import ORDERS, build_order
from argen.pipeline import Pipeline
from argen.samplers.forced import can_requantize, generate_forced, requantizer, resample
from argen.tokenizers import TokenizerConfig, build_tokenizer

TOKENIZER_FOR = {"raster": "vq", "neighbor": "vq", "scale": "multiscale", "frequency": "frequency"}
SIZE = 16


def make_pipeline(order_name: str, *, seed: int = 0) -> Pipeline:
    torch.manual_seed(seed)
    config = TokenizerConfig(
        kind=TOKENIZER_FOR[order_name], image_size=SIZE, width=8, latent_dim=8, codebook_size=32, scales=[1, 2, 4]
    )
    tokenizer = build_tokenizer(config).eval()
    order = build_order(order_name, tokenizer)
    model = Transformer(TransformerConfig(width=32, depth=1, heads=2, num_classes=3, **order.model_settings(tokenizer)))
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(0.05 * torch.randn_like(parameter))  # random logits, so that sampling varies
    return Pipeline(tokenizer, model.eval(), order, classes=["zero", "one", "two"])


@pytest.fixture(scope="module")
def pipelines() -> dict[str, Pipeline]:
    return {name: make_pipeline(name) for name in ORDERS}


def make_images(count: int = 3, *, seed: int = 0) -> torch.Tensor:
    """uint8 (count, 1, 16, 16): a bright rectangle on a dark noisy field."""
    generator = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 40, (count, 1, SIZE, SIZE), generator=generator, dtype=torch.uint8)
    for index in range(count):
        top, left = (int(value) for value in torch.randint(0, 8, (2,), generator=generator))
        images[index, :, top : top + 6, left : left + 8] = 200
    return images


def right_half(count: int = 3) -> torch.Tensor:
    masks = torch.zeros(count, SIZE, SIZE, dtype=torch.bool)
    masks[:, :, SIZE // 2 :] = True
    return masks


def num_steps(pipeline: Pipeline) -> int:
    return pipeline.order.layout(pipeline.tokenizer.grid_shapes).num_steps


def same(first: list[torch.Tensor], second: list[torch.Tensor]) -> bool:
    return all(torch.equal(a, b) for a, b in zip(first, second))


LABELS = [0, 1, 2]


# -- the contract, for every order -----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(ORDERS))
@pytest.mark.parametrize("fill", ["keep", "smooth"])
def test_known_tokens_are_the_images_own(pipelines, name, fill):
    pipeline = pipelines[name]
    images, masks = make_images(), right_half()
    seen = images_to_float(images) if fill == "keep" else fill_masked(images_to_float(images), masks)
    encoded = pipeline.tokenizer.encode(seen)
    known = known_cells(masks, pipeline.tokenizer.grid_shapes)
    assert any(bool(grid.any()) for grid in known) and not all(bool(grid.all()) for grid in known)
    for particles in (1, 3):
        output = pipeline.edit(
            images, masks, LABELS, cfg_scale=2.0, seed=1, fill=fill, known_tokens="encoded", particles=particles
        )
        for grid, expected, where in zip(output.ids, encoded, known):
            assert torch.equal(grid[where], expected[where])


@pytest.mark.parametrize("name", ["scale", "frequency"])
def test_requantized_known_tokens_quantize_what_the_composition_still_lacks(pipelines, name):
    pipeline = pipelines[name]
    images, masks = make_images(), right_half()
    assert can_requantize(pipeline.order, pipeline.tokenizer)
    output = pipeline.edit(images, masks, LABELS, cfg_scale=2.0, seed=1)  # requantized is the default here
    latent = pipeline.tokenizer.encoder(fill_masked(images_to_float(images), masks))
    refresh = requantizer(pipeline.tokenizer, latent)
    known = known_cells(masks, pipeline.tokenizer.grid_shapes)
    for step, (grid, where) in enumerate(zip(output.ids, known)):
        expected = refresh(step, output.ids).view_as(grid)
        assert torch.equal(grid[where], expected[where])
    encoded = pipeline.edit(images, masks, LABELS, cfg_scale=2.0, seed=1, known_tokens="encoded")
    assert not same(output.ids, encoded.ids)  # the two rules differ once a coarse cell over the hole is regenerated


@pytest.mark.parametrize("name", ["raster", "neighbor"])
def test_requantizing_is_refused_where_it_has_no_meaning(pipelines, name):
    assert not can_requantize(pipelines[name].order, pipelines[name].tokenizer)
    with pytest.raises(ArgenError, match="coarse-to-fine"):
        pipelines[name].edit(make_images(), right_half(), LABELS, known_tokens="requantized")


@pytest.mark.parametrize("name", list(ORDERS))
def test_keeping_every_step_returns_the_reconstruction(pipelines, name):
    pipeline = pipelines[name]
    images = make_images()
    reconstruction = float_to_images(pipeline.tokenizer.decode(pipeline.tokenizer.encode(images_to_float(images))))
    for paste_back in (True, False):
        output = pipeline.edit(images, None, [2, 0, 1], keep_steps=num_steps(pipeline), paste_back=paste_back, seed=3)
        assert torch.equal(output.pixels, reconstruction)
        assert same(output.ids, pipeline.tokenizer.encode(images_to_float(images)))


@pytest.mark.parametrize("name", list(ORDERS))
def test_keeping_no_step_is_plain_generation_with_the_same_seed(pipelines, name):
    pipeline = pipelines[name]
    plain = pipeline(labels=LABELS, cfg_scale=2.0, top_k=8, seed=7)
    everything = torch.ones(3, SIZE, SIZE, dtype=torch.bool)
    for masks in (None, everything):
        edited = pipeline.edit(make_images(), masks, LABELS, keep_steps=0, cfg_scale=2.0, top_k=8, seed=7)
        assert same(edited.ids, plain.ids) and torch.equal(edited.pixels, plain.pixels)


@pytest.mark.parametrize("name", list(ORDERS))
def test_class_editing_keeps_the_first_steps(pipelines, name):
    pipeline = pipelines[name]
    images = make_images()
    encoded = pipeline.tokenizer.encode(images_to_float(images))
    layout = pipeline.order.layout(pipeline.tokenizer.grid_shapes)
    keep = 2
    output = pipeline.edit(images, None, "two", keep_steps=keep, cfg_scale=2.0, seed=0)
    flat = torch.cat([grid.flatten(1) for grid in output.ids], 1)
    expected = torch.cat([grid.flatten(1) for grid in encoded], 1)
    kept = layout.target_flat[torch.cat(layout.targets_of_step[:keep])]
    assert torch.equal(flat[:, kept], expected[:, kept])
    assert output.labels.tolist() == [2, 2, 2]


@pytest.mark.parametrize("name", list(ORDERS))
def test_outside_the_mask_the_output_is_the_input(pipelines, name):
    pipeline = pipelines[name]
    images = make_images()
    for masks in (right_half(), box_mask(SIZE, SIZE, (3, 4, 11, 12)).expand(3, SIZE, SIZE), ~right_half()):
        output = pipeline.edit(images, masks, LABELS, cfg_scale=1.5, seed=2, num=2, return_intermediates=True)
        repeated, outside = images.repeat_interleave(2, 0), ~masks.repeat_interleave(2, 0)[:, None]
        assert output.pixels.shape == repeated.shape and len(output.images) == 6
        assert torch.equal(output.pixels[outside.expand_as(repeated)], repeated[outside.expand_as(repeated)])
        assert len(output.intermediates) == num_steps(pipeline) == output.forward_passes
        assert torch.equal(output.intermediate_pixels[-1], output.pixels)
        assert np.array_equal(np.asarray(output.images[1]), output.pixels[1, 0].numpy())
    raw = pipeline.edit(images, right_half(), LABELS, seed=2, paste_back=False)
    assert torch.equal(raw.pixels, float_to_images(pipeline.tokenizer.decode(raw.ids)))


@pytest.mark.parametrize("name", list(ORDERS))
def test_what_lies_under_the_mask_never_reaches_the_edit(pipelines, name):
    pipeline = pipelines[name]
    images, masks = make_images(), right_half()
    other = images.clone()
    other[masks[:, None]] = 255 - other[masks[:, None]]
    first = pipeline.edit(images, masks, LABELS, cfg_scale=2.0, seed=4)
    second = pipeline.edit(other, masks, LABELS, cfg_scale=2.0, seed=4)
    assert same(first.ids, second.ids)
    assert torch.equal(first.pixels[masks[:, None]], second.pixels[masks[:, None]])


@pytest.mark.parametrize("name", list(ORDERS))
def test_the_seed_fixes_the_edit(pipelines, name):
    pipeline = pipelines[name]
    options = dict(cfg_scale=2.0, particles=2)
    first = pipeline.edit(make_images(), right_half(), LABELS, seed=5, **options)
    again = pipeline.edit(make_images(), right_half(), LABELS, seed=5, **options)
    other = pipeline.edit(make_images(), right_half(), LABELS, seed=6, **options)
    assert same(first.ids, again.ids) and not same(first.ids, other.ids)


# -- refusals --------------------------------------------------------------------------------------------------------


def test_sizes_and_options_that_do_not_fit_are_refused(pipelines):
    pipeline = pipelines["frequency"]
    images = make_images()
    with pytest.raises(ArgenError, match="the mask is 12×16 .* the image is 16×16"):
        pipeline.edit(images, torch.ones(3, SIZE, 12, dtype=torch.bool), LABELS)
    with pytest.raises(ArgenError, match="resize"):
        pipeline.edit(torch.zeros(1, 1, 20, 20, dtype=torch.uint8), None, [0])
    with pytest.raises(ArgenError, match="2 masks for 3 images"):
        pipeline.edit(images, right_half(2), LABELS)
    with pytest.raises(ArgenError, match="2 labels for 3 images"):
        pipeline.edit(images, right_half(), [0, 1])
    with pytest.raises(ArgenError, match="keep_steps"):
        pipeline.edit(images, None, LABELS, keep_steps=num_steps(pipeline) + 1)
    with pytest.raises(ArgenError, match="unknown class"):
        pipeline.edit(images, None, "four", keep_steps=1)
    with pytest.raises(ArgenError, match="channels"):
        pipeline.edit(torch.zeros(1, 3, SIZE, SIZE, dtype=torch.uint8), None, [0])
    with pytest.raises(ArgenError, match="box"):
        box_mask(SIZE, SIZE, (4, 4, 4, 8))


# -- pieces ----------------------------------------------------------------------------------------------------------


def test_a_cell_is_known_only_when_no_masked_pixel_lies_in_it():
    known = known_cells(right_half(1), [(1, 1), (2, 2), (4, 4), (3, 3)])
    assert not bool(known[0].any())
    assert known[1][0].tolist() == [[True, False], [True, False]]
    assert known[2][0].tolist() == [[True, True, False, False]] * 4
    assert known[3][0].tolist() == [[True, False, False]] * 3  # the middle column's window straddles column 8


def test_masks_from_pil_white_regenerates_and_one_mask_serves_all():
    array = np.zeros((SIZE, SIZE), dtype=np.uint8)
    array[:, 10:] = 255
    masks = as_masks(Image.fromarray(array), batch=2, height=SIZE, width=SIZE)
    assert masks.shape == (2, SIZE, SIZE) and masks.dtype == torch.bool
    assert bool(masks[:, :, 10:].all()) and not bool(masks[:, :, :10].any())
    assert torch.equal(as_masks([Image.fromarray(array)] * 2, batch=2, height=SIZE, width=SIZE), masks)
    assert torch.equal(as_masks(torch.from_numpy(array // 255), batch=2, height=SIZE, width=SIZE), masks)


def test_fill_keeps_known_pixels_and_continues_them_smoothly():
    images = torch.linspace(-1, 1, SIZE).view(1, 1, 1, SIZE).expand(2, 3, SIZE, SIZE).clone()
    images[1] = 0.25
    masks = right_half(2)
    masks[:, :, :2] = True  # holes on both sides
    filled = fill_masked(images, masks)
    assert torch.equal(filled[~masks[:, None].expand_as(filled)], images[~masks[:, None].expand_as(images)])
    assert torch.allclose(filled[1], torch.full_like(filled[1], 0.25))  # a constant image stays constant
    known = images[0][:, :, 2:8]
    assert float(filled[0].min()) >= float(known.min()) - 1e-6 and float(filled[0].max()) <= float(known.max()) + 1e-6
    assert torch.equal(fill_masked(images, torch.ones(2, SIZE, SIZE, dtype=torch.bool)), torch.zeros_like(images))


class FakeCache:
    def __init__(self, rows: int):
        self.keys = torch.arange(rows, dtype=torch.float32).view(1, rows, 1, 1, 1)
        self.values = self.keys.clone()


def test_resampling_follows_the_weights_and_moves_the_cache_rows():
    ids = [torch.arange(6).view(6, 1, 1)]  # 2 images × 3 particles
    log_weights = torch.tensor([[0.0, -50.0, -50.0], [0.0, 0.0, 0.0]])
    cache = FakeCache(12)  # guided: conditional rows 0-5, then unconditional rows 6-11
    resampled, weights = resample(ids, log_weights, cache, generator=torch.Generator().manual_seed(0), guided=True)
    assert resampled[0].flatten().tolist() == [0, 0, 0, 3, 4, 5]  # image 0 collapses on its heavy particle
    assert cache.keys.flatten().tolist() == [0, 0, 0, 3, 4, 5, 6, 6, 6, 9, 10, 11]
    assert weights.tolist() == [[0.0, 0.0, 0.0], [0.0, 0.0, 0.0]]


def test_generate_forced_forces_known_tokens_at_their_step(pipelines):
    pipeline = pipelines["raster"]
    tokenizer, order = pipeline.tokenizer, pipeline.order
    image_ids = [torch.full((2, 4, 4), 7)]
    known = [torch.zeros(2, 4, 4, dtype=torch.bool)]
    known[0][:, :, 0] = True  # the first column of every row: after the previous row's unknown cells
    steps = []
    output = generate_forced(
        pipeline.model, order, tokenizer, image_ids=image_ids, known=known, labels=torch.tensor([0, 1]),
        generator=torch.Generator().manual_seed(0), particles=2,
        callback=lambda step, ids: steps.append([grid.clone() for grid in ids]),
    )  # fmt: skip
    assert bool((output.ids[0][:, :, 0] == 7).all()) and output.forward_passes == 16
    for step, grids in enumerate(steps):
        row, col = divmod(step, 4)
        if col == 0:
            assert bool((grids[0][:, row, 0] == 7).all())


# -- argen edit ------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def model_directory(tmp_path_factory, pipelines):
    directory = tmp_path_factory.mktemp("edit") / "frequency"
    pipelines["frequency"].save_pretrained(directory)
    return directory


def test_argen_edit_writes_the_edit(model_directory, tmp_path, capsys):
    image = make_images(1)[0, 0].numpy()
    Image.fromarray(image).save(tmp_path / "image.png")
    mask = np.zeros((SIZE, SIZE), dtype=np.uint8)
    mask[:, 8:] = 255
    Image.fromarray(mask).save(tmp_path / "mask.png")
    common = ["edit", "--model", str(model_directory), "--image", str(tmp_path / "image.png"), "--seed", "1"]
    run([*common, "--mask", str(tmp_path / "mask.png"), "--label", "one", "--out", str(tmp_path / "a.png")])
    edited = np.asarray(Image.open(tmp_path / "a.png"))
    assert edited.shape == (SIZE, SIZE) and np.array_equal(edited[:, :8], image[:, :8])
    run([*common, "--box", "4,4,12,12", "--outpaint", "--label", "2", "--out", str(tmp_path / "b.png")])
    outpainted = np.asarray(Image.open(tmp_path / "b.png"))
    assert np.array_equal(outpainted[4:12, 4:12], image[4:12, 4:12])
    run([*common, "--keep-steps", "1", "--label", "0", "--num", "3", "--out", str(tmp_path / "c.png")])
    assert Image.open(tmp_path / "c.png").size[0] > 3 * SIZE  # a row of three
    assert "wrote" in capsys.readouterr().out
    Image.fromarray(mask[:12]).save(tmp_path / "small.png")
    with pytest.raises(ArgenError, match="draw the mask at the image's size"):
        run([*common, "--mask", str(tmp_path / "small.png"), "--out", str(tmp_path / "d.png")])
    with pytest.raises(ArgenError, match="--mask MASK.png, --box"):
        run([*common, "--out", str(tmp_path / "d.png")])
    with pytest.raises(ArgenError, match="cannot be read as an image"):
        (tmp_path / "junk.png").write_bytes(b"not a png")
        run([*common, "--mask", str(tmp_path / "junk.png")])
    assert not (tmp_path / "d.png").exists()


def test_argen_edit_resize_takes_a_picture_of_another_size(model_directory, tmp_path):
    image = make_images(1)[0, 0].numpy()
    big = np.kron(image, np.ones((3, 3), dtype=np.uint8))  # the same picture at 3× the model's size
    Image.fromarray(big).save(tmp_path / "big.png")
    mask = np.zeros(big.shape, dtype=np.uint8)
    mask[:, 3 * 8 :] = 255  # drawn on the big picture: regenerate from column 8 of the model's grid on
    Image.fromarray(mask).save(tmp_path / "mask.png")
    common = ["edit", "--model", str(model_directory), "--image", str(tmp_path / "big.png"), "--seed", "1"]
    with pytest.raises(ArgenError):
        run([*common, "--mask", str(tmp_path / "mask.png"), "--out", str(tmp_path / "refused.png")])
    assert not (tmp_path / "refused.png").exists()
    run([*common, "--mask", str(tmp_path / "mask.png"), "--resize", "--out", str(tmp_path / "a.png")])
    edited = np.asarray(Image.open(tmp_path / "a.png"))
    resized = np.asarray(Image.fromarray(big).resize((SIZE, SIZE), Image.Resampling.BICUBIC))
    assert edited.shape == (SIZE, SIZE) and np.array_equal(edited[:, :8], resized[:, :8])
