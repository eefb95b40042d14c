"""argen compress / decompress: round trips for every order, lossless exactness, progressive prefixes, refusal of
wrong-model, truncated and corrupted files, deterministic probability quantization (tiny random models, seconds)."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import argen
from argen import onednn
from argen.checkpoint import release_fingerprint, save_release
from argen.cli import main
from argen.codec import ARITHMETIC, MAGIC, Codec, pack, quantize_log_probs, unpack
from argen.codec.container import decode_names, encode_names
from argen.codec.probabilities import WEIGHT_TABLE, Streams, UndecodableStream
from argen.codec.residual import RESIDUAL_KIND, ResidualConfig, ResidualModel, stage_map
from argen.data import float_to_images, images_to_float
from argen.errors import ArgenError
from argen.model import Transformer, preset_config
from argen.orders import ORDERS, build_order
from argen.pipeline import Pipeline
from argen.tokenizers import TokenizerConfig, build_tokenizer

SIZE = 12
KIND_FOR_ORDER = {"raster": "vq", "scale": "multiscale", "frequency": "frequency", "neighbor": "vq"}


def build_model_directory(
    directory: Path, order_name: str, *, seed: int = 0, classes: int = 3, channels: int = 1
) -> Path:
    """A tiny random tokenizer + generator (+ residual model) saved as a model directory."""
    torch.manual_seed(seed)
    config = TokenizerConfig(
        kind=KIND_FOR_ORDER[order_name], image_size=SIZE, channels=channels, downsample=1, width=8, blocks=0,
        latent_dim=4, codebook_size=16, code_dim=4, scales=[1, 2, 3, 6],
    )  # fmt: skip
    tokenizer = build_tokenizer(config).eval()
    order = build_order(order_name, tokenizer)
    model = Transformer(preset_config("tiny", num_classes=classes, **order.model_settings(tokenizer)))
    with torch.no_grad():  # away from the zero-initialised modulation, so classes and steps matter
        for parameter in model.parameters():
            parameter.add_(0.05 * torch.randn_like(parameter))
    names = [f"class{index}" for index in range(classes)]
    Pipeline(tokenizer, model.eval(), order, classes=names).save_pretrained(directory)
    residual_config = ResidualConfig(channels=channels, image_size=SIZE, width=8, blocks=1, mixtures=3, stages=4)
    residual = ResidualModel(residual_config)
    with torch.no_grad():
        for parameter in residual.parameters():
            parameter.add_(0.02 * torch.randn_like(parameter))
    save_release(
        directory / "residual", kind=RESIDUAL_KIND, config=residual_config, state_dict=residual.state_dict(),
        extra={"tokenizer_fingerprint": release_fingerprint(directory / "tokenizer")},
    )  # fmt: skip
    return directory


def make_images(count: int, *, seed: int = 0) -> torch.Tensor:
    """Structured images (bars and blobs, Fashion-MNIST-like dark background) and pure noise, uint8 (N, 1, S, S)."""
    generator = torch.Generator().manual_seed(seed)
    images = torch.zeros(count, 1, SIZE, SIZE, dtype=torch.uint8)
    for index in range(count):
        if index % 3 == 2:  # out of distribution: uniform noise over all 256 values
            images[index] = torch.randint(0, 256, (1, SIZE, SIZE), generator=generator, dtype=torch.uint8)
        else:
            row = int(torch.randint(0, SIZE, (1,), generator=generator))
            images[index, 0, row] = 255
            images[index, 0, 2:9, 3:8] = int(torch.randint(60, 200, (1,), generator=generator))
    return images


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("codec-models")
    return {name: build_model_directory(root / name, name) for name in ORDERS}


# ---------------------------------------------------------------------------------------------------------------
# Quantization


def test_weight_table_is_exact_powers_of_two():
    assert WEIGHT_TABLE.dtype == torch.float64 and len(WEIGHT_TABLE) == 24 * 16 + 1
    assert WEIGHT_TABLE[0] == 2**24 and WEIGHT_TABLE[16] == 2**23 and WEIGHT_TABLE[-1] == 1
    assert WEIGHT_TABLE[8] == math.floor(2**23.5)  # 11863283
    assert bool((WEIGHT_TABLE[1:] <= WEIGHT_TABLE[:-1]).all())


def test_quantization_is_deterministic_and_row_wise():
    logits = torch.randn(64, 50, generator=torch.Generator().manual_seed(1)) * 4
    logits[0, 3] = float("-inf")  # an impossible symbol still gets the smallest weight, so it stays encodable
    weights = quantize_log_probs(logits)
    assert weights.dtype == np.float64 and weights.shape == (64, 50)
    assert np.array_equal(weights, quantize_log_probs(logits.clone()))
    assert np.array_equal(weights[5:6], quantize_log_probs(logits[5:6]))  # no dependence on the rest of the batch
    assert weights[0, 3] == 1 and weights.max(axis=1).tolist() == [2**24] * 64
    # Known values: a symbol 1 bit below the best gets weight 2^23; log-probs and logits agree.
    two = torch.log(torch.tensor([[0.5, 0.25, 0.25]]))
    assert quantize_log_probs(two).tolist() == [[2**24, 2**23, 2**23]]
    assert np.array_equal(quantize_log_probs(two + 7.0), quantize_log_probs(two))
    with pytest.raises(ArgenError):
        quantize_log_probs(torch.tensor([[float("nan"), 0.0]]))


def test_quantization_matches_the_model_distribution():
    logits = torch.randn(200, 100, generator=torch.Generator().manual_seed(2)) * 3
    weights = torch.from_numpy(quantize_log_probs(logits)).double()
    quantized = weights / weights.sum(1, keepdim=True)
    exact = logits.double().softmax(-1)
    kl = (exact * (exact.log() - quantized.log())).sum(1) / math.log(2)
    assert float(kl.max()) < 1e-3  # bits per symbol lost to the 1/16-bit grid


def test_names_are_stored_compactly_when_they_count():
    counted = [f"test_{index:05d}" for index in range(3, 40)]
    assert encode_names(counted) == {"prefix": "test_", "start": 3, "digits": 5}
    assert decode_names(encode_names(counted), len(counted)) == counted
    assert encode_names(["a", "b1"]) == ["a", "b1"]


# ---------------------------------------------------------------------------------------------------------------
# Round trips


@pytest.mark.parametrize("order", list(ORDERS))
def test_round_trip_every_order(models, order):
    codec = Codec(models[order])
    images = make_images(20)
    data, report = codec.compress(images, block_size=8, progress=False)
    decoded = codec.decompress(data, progress=False)
    ids = codec.tokenizer.encode(images_to_float(images))
    assert torch.equal(decoded.pixels, float_to_images(codec.tokenizer.decode(ids)))  # the tokenizer's reconstruction
    assert decoded.names == [f"{index:05d}" for index in range(20)] and not decoded.lossless
    # The code is the model's likelihood: the streams are within a few words per stream of the ideal length.
    assert abs(report.payload_bits - sum(report.model_bits.values())) < 64 * len(report.stream_bytes) + 0.01 * (
        report.payload_bits
    )
    exact, report = codec.compress(images, block_size=8, lossless=True, progress=False)
    assert report.lossless and "residual" in report.model_bits
    assert torch.equal(codec.decompress(exact, progress=False).pixels, images)


@pytest.mark.skipif(not onednn.enabled, reason="this torch build or CPU has no oneDNN products")
@pytest.mark.parametrize("order", ["raster", "scale"])
def test_round_trip_with_every_product_through_onednn(models, order, monkeypatch):
    """Encoder and decoder feed the model different row counts; the oneDNN-or-torch choice is by shape, so both
    sides still compute the same floats (here every product goes through oneDNN, as the shipped models' large ones)."""
    monkeypatch.setattr(onednn, "MIN_MULTIPLY_ADDS", 0)
    codec = Codec(models[order])
    images = make_images(12, seed=5)
    data, _ = codec.compress(images, block_size=5, lossless=True, progress=False)
    assert unpack(data)[0]["environment"]["products"] == "onednn"
    assert torch.equal(codec.decompress(data, progress=False).pixels, images)


def test_lossless_is_exact_on_a_few_hundred_images_with_noise(models):
    codec = Codec(models["scale"])
    images = make_images(300, seed=3)
    data, report = codec.compress(images, lossless=True, block_size=128, progress=False)
    assert torch.equal(codec.decompress(data, progress=False).pixels, images)
    assert report.images == 300 and report.file_bytes == len(data)


@pytest.mark.parametrize("order", ["raster", "frequency"])
def test_rgb_images_round_trip(order, tmp_path):
    """Three channels through the tokenizer, the generator's streams and the residual model's per-channel passes."""
    codec = Codec(build_model_directory(tmp_path / order, order, channels=3))
    generator = torch.Generator().manual_seed(5)
    images = torch.randint(0, 256, (12, 3, SIZE, SIZE), generator=generator, dtype=torch.uint8)
    images[:6] //= 8  # dark, smooth-ish images beside pure noise
    lossy, _ = codec.compress(images, block_size=5, progress=False)
    ids = codec.tokenizer.encode(images_to_float(images))
    reconstruction = float_to_images(codec.tokenizer.decode(ids))
    assert torch.equal(codec.decompress(lossy, progress=False).pixels, reconstruction)
    exact, report = codec.compress(images, block_size=5, lossless=True, progress=False)
    assert report.lossless and torch.equal(codec.decompress(exact, progress=False).pixels, images)
    with pytest.raises(ArgenError):  # a grayscale image is not silently widened to RGB
        codec.check_images(images[:, :1])


@pytest.mark.parametrize("class_prior", ["uniform", "null"])
def test_class_priors_round_trip(models, class_prior):
    codec = Codec(models["raster"])
    images = make_images(9)
    data, report = codec.compress(images, class_prior=class_prior, progress=False)
    assert torch.equal(codec.decompress(data, progress=False).pixels, codec.decompress(data, progress=False).pixels)
    assert (report.model_bits["class"] > 0) == (class_prior == "uniform")


def test_the_uniform_prior_picks_the_cheapest_class(models):
    codec = Codec(models["scale"])
    ids = codec.tokenizer.encode(images_to_float(make_images(6)))
    chosen = codec._cheapest_classes(ids)
    inputs, targets = codec.order.train_inputs(ids, codec.tokenizer)
    costs = []
    for label in range(codec.num_classes):
        labels = torch.full((6,), label)
        logits = codec.order.logits(codec.model(inputs, labels, layout=codec.layout), codec.layout)
        costs.append(torch.nn.functional.cross_entropy(logits.transpose(1, 2), targets, reduction="none").sum(1))
    assert torch.equal(chosen, torch.stack(costs, 1).argmin(1))


def test_given_classes_skip_the_search_and_still_round_trip(models):
    codec = Codec(models["raster"])
    images = make_images(10)
    searched, report = codec.compress(images, block_size=4, progress=False)
    assert report.classes is not None and report.classes.shape == (10,)
    # the search's own choice given back codes the same bytes
    again, _ = codec.compress(images, block_size=4, progress=False, classes=report.classes)
    assert again == searched
    # any other class is a valid (longer or equal) code that decodes to the same reconstruction
    other = (report.classes + 1) % codec.num_classes
    forced, forced_report = codec.compress(images, block_size=4, lossless=True, progress=False, classes=other)
    assert torch.equal(forced_report.classes, other)
    assert torch.equal(codec.decompress(forced, progress=False).pixels, images)
    with pytest.raises(ArgenError, match="class ids"):
        codec.compress(images, progress=False, classes=torch.full((10,), codec.num_classes))
    with pytest.raises(ArgenError, match="uniform class prior"):
        codec.compress(images, progress=False, class_prior="null", classes=report.classes)


@pytest.mark.parametrize("order", ["scale", "frequency"])
def test_progressive_prefixes_decode_the_first_steps(models, order):
    codec = Codec(models[order])
    images = make_images(10)
    data, _ = codec.compress(images, block_size=4, lossless=True, progress=False)
    ids = codec.tokenizer.encode(images_to_float(images))
    header, streams = unpack(data)
    header_end = len(data) - sum(len(stream) for stream in streams)
    for steps in range(1, codec.layout.num_steps + 1):
        expected = float_to_images(codec.order.preview(ids, steps, codec.tokenizer))
        assert torch.equal(codec.decompress(data, steps=steps, progress=False).pixels, expected)
        # A file cut right after step `steps` still decodes those steps, and only those.
        prefix = data[: header_end + sum(len(stream) for stream in streams[:steps])]
        assert torch.equal(codec.decompress(prefix, steps=steps, progress=False).pixels, expected)
        with pytest.raises(ArgenError, match=f"truncated.*--steps {steps}"):
            codec.decompress(prefix, progress=False)


def test_steps_is_refused_for_non_progressive_orders_and_out_of_range(models):
    codec = Codec(models["raster"])
    data, _ = codec.compress(make_images(2), progress=False)
    with pytest.raises(ArgenError, match="not progressive"):
        codec.decompress(data, steps=1, progress=False)
    scale = Codec(models["scale"])
    data, _ = scale.compress(make_images(2), progress=False)
    with pytest.raises(ArgenError, match="between 1 and 4"):
        scale.decompress(data, steps=5, progress=False)


# ---------------------------------------------------------------------------------------------------------------
# Files that must be refused


def test_a_file_from_another_model_is_refused_naming_both(models, tmp_path):
    other = build_model_directory(tmp_path / "other", "scale", seed=7)
    data, _ = Codec(models["scale"]).compress(make_images(3), progress=False)
    with pytest.raises(ArgenError, match=f"{models['scale'].resolve()}.*not with {other}"):
        Codec(other).decompress(data, progress=False)
    with pytest.raises(ArgenError, match="raster"):
        Codec(models["raster"]).decompress(data, progress=False)


def test_a_residual_model_of_another_tokenizer_is_refused(models, tmp_path):
    other = build_model_directory(tmp_path / "other", "scale", seed=8)
    codec = Codec(models["scale"], residual=other / "residual")
    with pytest.raises(ArgenError, match="another tokenizer"):
        codec.compress(make_images(2), lossless=True, progress=False)
    with pytest.raises(ArgenError, match="train-residual"):
        Codec(models["scale"], residual=tmp_path / "nothing").compress(make_images(2), lossless=True, progress=False)


def test_truncated_and_corrupted_files_are_one_line_errors(models):
    codec = Codec(models["frequency"])
    data, _ = codec.compress(make_images(12), lossless=True, block_size=5, progress=False)
    header, streams = unpack(data)
    header_end = len(data) - sum(len(stream) for stream in streams)
    cuts = [0, 3, len(MAGIC) + 2, header_end - 2, header_end + 1, len(data) - 1]
    for cut in cuts:
        with pytest.raises(ArgenError) as error:
            codec.decompress(data[:cut], progress=False)
        assert "\n" not in str(error.value) and ("truncated" in str(error.value) or "not an argen" in str(error.value))
    for position in (len(MAGIC) + 8, header_end + 2, len(data) - 3):  # header, first stream, residual stream
        damaged = bytearray(data)
        damaged[position] ^= 0x40
        with pytest.raises(ArgenError, match="damaged") as error:
            codec.decompress(bytes(damaged), progress=False)
        assert "\n" not in str(error.value)
    with pytest.raises(ArgenError, match="unexpected bytes"):
        codec.decompress(data + b"\x00", progress=False)
    with pytest.raises(ArgenError, match="not an argen compressed file"):
        codec.decompress(b"PK\x03\x04 a zip file", progress=False)
    newer = bytearray(data)
    newer[len(MAGIC)] = 9
    with pytest.raises(ArgenError, match="format version 9"):
        codec.decompress(bytes(newer), progress=False)


def test_a_block_checksum_catches_probabilities_that_differ(models):
    """What another machine computing other floats would produce: the streams decode, the content check fails."""
    codec = Codec(models["raster"])
    data, _ = codec.compress(make_images(4), progress=False)
    header, streams = unpack(data)
    header["checks"][0][0] ^= 1
    forged = pack({key: value for key, value in header.items() if key != "streams"}, streams)
    # Nothing recorded differs from this machine: the likelier cause is an altered file, and the message says so.
    with pytest.raises(ArgenError, match="fails its checksum though this machine matches.*damaged or was altered"):
        codec.decompress(forged, progress=False)
    # Same argen, other product library (ARGEN_ONEDNN set differently, or a torch without oneDNN): says how to match.
    here = header["environment"]["products"]
    there = "torch" if here == "onednn" else "onednn"
    other = pack({key: value for key, value in header.items() if key not in ("streams", "environment")}
                 | {"environment": {**header["environment"], "products": there}}, streams)  # fmt: skip
    with pytest.raises(ArgenError, match=rf"CPU products by {there} there, {here} here.*ARGEN_ONEDNN="):
        codec.decompress(other, progress=False)
    # A file from before the arithmetic version was recorded (or with another one) says which argen made it.
    del header["environment"]["arithmetic"]
    older = pack({key: value for key, value in header.items() if key != "streams"}, streams)
    with pytest.raises(
        ArgenError, match=rf"argen arithmetic 1 there, {ARITHMETIC} here.*with an argen of arithmetic 1"
    ):
        codec.decompress(older, progress=False)


def test_a_file_read_with_moved_probabilities_names_the_cause_not_damage(models, monkeypatch):
    """What a newer argen whose arithmetic moved meets: the streams' bytes are intact, the probabilities differ, so
    decoding either fails in the entropy coder or fails a block checksum; both name the recorded difference and
    neither says "damaged". Where nothing recorded differs, the file is the likelier culprit and the message leads
    with that (issue 26: forged header fields must not blame the machine)."""
    data, _ = Codec(models["raster"]).compress(make_images(8), lossless=True, progress=False)
    moved = Codec(models["raster"])
    with torch.no_grad():
        for parameter in moved.pipeline.model.parameters():
            parameter.mul_(1.01)
    header, streams = unpack(data)
    del header["environment"]["arithmetic"]  # as written by arithmetic 1
    older = pack({key: value for key, value in header.items() if key != "streams"}, streams)
    with pytest.raises(ArgenError, match="computes other probabilities") as error:
        moved.decompress(older, progress=False)
    assert "damaged" not in str(error.value) and "\n" not in str(error.value)
    assert "argen arithmetic 1 there" in str(error.value)
    with pytest.raises(ArgenError, match="this machine matches the one that made it.*damaged or was altered") as error:
        moved.decompress(data, progress=False)
    assert "\n" not in str(error.value)
    # Whichever way it fails: here the entropy coder itself gives up on an intact stream (as it does in practice on
    # a file of arithmetic 1 read by arithmetic 2).

    def refuse(self, stream, weights, symbols=None):
        if self.encoding:
            return original(self, stream, weights, symbols)
        raise UndecodableStream(f"the compressed stream {stream} cannot be decoded (invalid)")

    original = Streams.code
    monkeypatch.setattr(Streams, "code", refuse)
    with pytest.raises(ArgenError, match=r"block 0 cannot be decoded: .*argen arithmetic 1 there") as error:
        moved.decompress(older, progress=False)
    assert "damaged" not in str(error.value)


def test_images_the_model_cannot_take_are_refused(models):
    codec = Codec(models["raster"])
    with pytest.raises(ArgenError, match="--resize"):
        codec.compress(torch.zeros(2, 1, SIZE + 1, SIZE, dtype=torch.uint8), progress=False)
    with pytest.raises(ArgenError, match="--resize"):
        codec.compress(torch.zeros(2, 3, SIZE, SIZE, dtype=torch.uint8), progress=False)
    with pytest.raises(ArgenError, match="uint8"):
        codec.compress(torch.zeros(2, 1, SIZE, SIZE), progress=False)


def test_stage_map_partitions_the_pixels():
    for stages in (1, 2, 4):
        counts = torch.bincount(stage_map(SIZE, SIZE, stages).flatten())
        assert counts.tolist() == [SIZE * SIZE // stages] * stages


# ---------------------------------------------------------------------------------------------------------------
# A fresh process, the API and the CLI


@pytest.mark.parametrize("through_onednn", [False, True])
def test_a_fresh_process_with_other_threads_decodes_the_same_images(models, tmp_path, through_onednn, monkeypatch):
    if through_onednn:  # every product through oneDNN, on both sides: its kernels must not depend on the threads
        if not onednn.enabled:
            pytest.skip("this torch build or CPU has no oneDNN products")
        monkeypatch.setattr(onednn, "MIN_MULTIPLY_ADDS", 0)
    images = make_images(16)
    data, _ = argen.compress(models["neighbor"], images, tmp_path / "x.argz", lossless=True, progress=False)
    script = (
        "import sys, torch, numpy; torch.set_num_threads(2); import argen, argen.onednn; "
        f"argen.onednn.MIN_MULTIPLY_ADDS = {onednn.MIN_MULTIPLY_ADDS}; "
        "r = argen.decompress(sys.argv[1], progress=False); numpy.save(sys.argv[2], r.pixels.numpy())"
    )
    subprocess.run([sys.executable, "-c", script, str(tmp_path / "x.argz"), str(tmp_path / "out.npy")], check=True)
    assert np.array_equal(np.load(tmp_path / "out.npy"), images.numpy())


def test_cli_round_trip_of_png_files_and_folders(models, tmp_path, capsys):
    images = make_images(5)
    folder = tmp_path / "pictures"
    (folder / "sub").mkdir(parents=True)
    paths = []
    for index, image in enumerate(images):
        path = (folder / "sub" if index % 2 else folder) / f"picture{index}.png"
        Image.fromarray(image[0].numpy()).save(path)
        paths.append(path)
    single = tmp_path / "alone.png"
    Image.fromarray(images[0, 0].numpy()).save(single)
    out = tmp_path / "all.argz"
    main(["compress", "--model", str(models["scale"]), "--lossless", str(folder), str(single), "--out", str(out)])
    assert "bits/dim" in capsys.readouterr().out
    main(["decompress", str(out), "--out", str(tmp_path / "decoded"), "--npz", str(tmp_path / "decoded.npz")])
    assert "exact images" in capsys.readouterr().out
    for index, path in enumerate(paths):
        decoded = tmp_path / "decoded" / path.relative_to(folder)
        assert np.array_equal(np.asarray(Image.open(decoded)), images[index, 0].numpy())
    assert np.array_equal(np.asarray(Image.open(tmp_path / "decoded" / "alone.png")), images[0, 0].numpy())
    # Progressive, through the CLI: the coarse images of 2 scales.
    main(["decompress", str(out), "--out", str(tmp_path / "coarse"), "--steps", "2"])
    assert "2 of 4 steps" in capsys.readouterr().out


def test_cli_refuses_wrong_sizes_unless_resize_and_reads_npz(models, tmp_path, capsys):
    big = tmp_path / "big.png"
    Image.fromarray(np.full((20, 30), 128, dtype=np.uint8)).save(big)
    with pytest.raises(SystemExit):
        main(["compress", "--model", str(models["raster"]), str(big), "--out", str(tmp_path / "x.argz")])
    assert "--resize" in capsys.readouterr().err
    main(["compress", "--model", str(models["raster"]), str(big), "--resize", "--out", str(tmp_path / "x.argz")])
    assert "converted or resized 1" in capsys.readouterr().out
    array = make_images(4)[:, 0].numpy()
    np.savez(tmp_path / "batch.npz", images=array)
    main(["compress", "--model", str(models["raster"]), str(tmp_path / "batch.npz"), "--lossless",
          "--out", str(tmp_path / "b.argz")])  # fmt: skip
    result = argen.decompress(tmp_path / "b.argz", progress=False)
    assert result.names == [f"batch_{index:05d}" for index in range(4)]
    assert np.array_equal(result.pixels[:, 0].numpy(), array)
    with pytest.raises(SystemExit):
        main(["decompress", str(tmp_path / "nothing.argz"), "--out", str(tmp_path / "o")])
    assert "cannot read" in capsys.readouterr().err


def test_hostile_names_are_refused(models, tmp_path):
    codec = Codec(models["raster"])
    with pytest.raises(ArgenError, match="not a plain relative path"):
        codec.compress(make_images(1), names=["../escape"], progress=False)
    data, _ = codec.compress(make_images(1), names=["escape"], progress=False)
    header, streams = unpack(data)
    header["names"] = ["../escape"]
    forged = pack({key: value for key, value in header.items() if key != "streams"}, streams)
    with pytest.raises(ArgenError, match="damaged: its header the name '../escape' is not a plain relative path"):
        codec.decompress(forged, progress=False)
    result = codec.decompress(data, progress=False)
    result.names = ["../escape"]  # and the writer checks again, whatever hands it the names
    with pytest.raises(ArgenError, match="not a plain relative path"):
        argen.codec.write_pngs(result, tmp_path / "out")


def test_train_residual_command_writes_a_release_that_compresses(models, tmp_path, capsys):
    from conftest import write_idx_dataset

    data = write_idx_dataset(tmp_path / "idx", train=40, test=8, size=SIZE)
    model = tmp_path / "model"
    for part in ("tokenizer", "generator"):
        (model / part).mkdir(parents=True)
        for name in ("config.json", "model.safetensors"):
            (model / part / name).write_bytes((models["raster"] / part / name).read_bytes())
    main(["train-residual", "--model", str(model), "--data", "fashion-mnist", "--data-dir", str(data),
          "--steps", "3", "--batch-size", "8", "--width", "8", "--blocks", "1", "--no-progress"])  # fmt: skip
    assert "residual model at step 3" in capsys.readouterr().out
    assert (model / "residual" / "config.json").is_file() and (model / "residual-run" / "train_state.pt").is_file()
    images = make_images(4)
    payload, _ = argen.compress(model, images, lossless=True, progress=False)
    assert torch.equal(argen.decompress(payload, progress=False).pixels, images)
    assert payload.startswith(MAGIC)
