"""The ported tokenizers against the official code: fixtures recorded by bench/interop.py from tiny random-weight
models of FoundationVision/VAR and FoundationVision/LlamaGen (state dicts under the published key names, images, the
official ids and decoded images) are converted with argen.convert and must give equal ids and decodes within 1e-4,
in float32. Also: the `argen convert` command on files in the published layouts."""

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from argen.cli import main
from argen.convert.llamagen import convert_vq
from argen.convert.var import convert_vqvae
from argen.errors import ArgenError
from argen.tokenizers import build_tokenizer, load_tokenizer

FIXTURES = Path(__file__).parent / "fixtures" / "interop"


def fixture(name: str) -> tuple[dict[str, torch.Tensor], torch.Tensor, list[torch.Tensor], torch.Tensor]:
    tensors = load_file(str(FIXTURES / f"{name}.safetensors"))
    state = {key.removeprefix("state/"): value for key, value in tensors.items() if key.startswith("state/")}
    ids = [tensors[f"ids/{index}"] for index in range(sum(key.startswith("ids/") for key in tensors))]
    return state, tensors["images"].float(), ids, tensors["decoded"]


def published_state(name: str) -> dict[str, torch.Tensor]:
    state = fixture(name)[0]
    if name == "llamagen":  # the training buffer bench/interop.py leaves out of the fixture
        state["quantize.codebook_used"] = torch.zeros(65536)
    return state


def converted(name: str):
    state = published_state(name)
    if name == "var":
        return convert_vqvae(state, patch_nums=[1, 2, 3, 4, 5, 6, 8, 10, 13, 16])
    return convert_vq(state, image_size=32)


@pytest.mark.parametrize("name", ["var", "llamagen"])
def test_encode_and_decode_equal_the_official_code(name):
    _, images, official_ids, official_decoded = fixture(name)
    config, state = converted(name)
    tokenizer = build_tokenizer(config).eval()
    tokenizer.load_state_dict(state)
    ids = tokenizer.encode(images)
    assert len(ids) == len(official_ids)
    assert all(torch.equal(mine, theirs) for mine, theirs in zip(ids, official_ids))
    with torch.no_grad():
        decoded = tokenizer.decode(official_ids)
    assert decoded.shape == official_decoded.shape
    assert float((decoded - official_decoded).abs().max()) < 1e-4


def test_the_comparison_can_fail():
    """A converter that lost one tensor's values would be caught: perturb φ and the ids or the decode move."""
    _, images, official_ids, official_decoded = fixture("var")
    config, state = converted("var")
    state["quantizer.phis.0.weight"] = state["quantizer.phis.0.weight"] + 0.01
    tokenizer = build_tokenizer(config).eval()
    tokenizer.load_state_dict(state)
    with torch.no_grad():
        moved = float((tokenizer.decode(official_ids) - official_decoded).abs().max())
    assert moved > 1e-4


def test_sizes_are_read_from_the_weights():
    var_config, _ = converted("var")
    assert (var_config.kind, var_config.width, var_config.channel_mult, var_config.blocks) == (
        "var-vqvae",
        32,
        [1, 1],
        1,
    )
    assert (var_config.latent_dim, var_config.codebook_size, var_config.phi_count, var_config.image_size) == (
        8,
        64,
        4,
        32,
    )
    llamagen_config, _ = converted("llamagen")
    assert (llamagen_config.kind, llamagen_config.latent_dim, llamagen_config.code_dim) == ("llamagen-vq", 16, 4)
    assert (llamagen_config.codebook_size, llamagen_config.downsample) == (64, 1)


def test_a_state_dict_of_the_other_family_is_refused():
    with pytest.raises(ArgenError, match="VAR"):
        convert_vqvae(published_state("llamagen"))
    with pytest.raises(ArgenError):
        convert_vq(published_state("var"))


def run_cli(capsys, *argv: str, fails: bool = False) -> str:
    """Run `argen ARGV`; the error line if ``fails`` (which must be one line), else the output."""
    code = 0
    try:
        main(list(argv))
    except SystemExit as exit_:
        code = exit_.code
    captured = capsys.readouterr()
    assert (code != 0) == fails, captured.err
    if fails:
        assert len(captured.err.strip().splitlines()) == 1, captured.err
    return captured.err if fails else captured.out


def test_convert_command_writes_a_tokenizer_directory(tmp_path, capsys):
    var_file, llamagen_file = tmp_path / "vae_ch32v64z8.pth", tmp_path / "vq_tiny.pt"
    torch.save(published_state("var"), var_file)  # VAR: a plain state dict
    torch.save({"model": published_state("llamagen"), "steps": 1}, llamagen_file)  # LlamaGen: wrapped
    run_cli(capsys, "convert", "var", "--vae", str(var_file), "--out", str(tmp_path / "var"))
    run_cli(
        capsys,
        "convert",
        "llamagen",
        "--vq",
        str(llamagen_file),
        "--out",
        str(tmp_path / "llamagen"),
        "--image-size",
        "32",
    )
    for name in ("var", "llamagen"):
        tokenizer, document = load_tokenizer(tmp_path / name)
        _, images, official_ids, _ = fixture(name)
        assert all(torch.equal(a, b) for a, b in zip(tokenizer.encode(images), official_ids))
        assert document["extra"]["source"].endswith((".pth", ".pt"))


def test_convert_refuses_the_generator_half(tmp_path, capsys):
    var_file = tmp_path / "vae.pth"
    torch.save(published_state("var"), var_file)
    message = run_cli(
        capsys,
        "convert",
        "var",
        "--vae",
        str(var_file),
        "--var",
        "var_d16.pth",
        "--out",
        str(tmp_path / "o"),
        fails=True,
    )
    assert "issue 25" in message and not (tmp_path / "o").exists()
