"""The published tokenizers against their official code: VAR's multi-scale VQVAE (arXiv 2404.02905) and LlamaGen's
VQ-16 (arXiv 2406.06525), converted with `argen.convert` and compared on the same random weights.

    python bench/interop.py --var-path ../VAR --llamagen-path ../LlamaGen            # writes the fixtures
    python bench/interop.py --var-path ../VAR --llamagen-path ../LlamaGen --full-size  # + the published sizes

The official repositories are checkouts kept outside this one (only torch is needed; VAR's ``huggingface_hub``
mixin is stubbed when the package is absent). Every parameter is re-randomised (the official initialisations leave
parts near identity, which would make the comparison weak) and rounded to bfloat16-representable values, so that
the fixtures store the weights as bfloat16 without loss while both sides compute in float32. The tiny models go to
``tests/fixtures/interop/{var,llamagen}.safetensors``: their state dicts under the published key names
(``state/…``), an image batch (``images``), the official ids (``ids/N``) and decoded images (``decoded``);
`tests/test_interop_tokenizers.py` converts and compares them. ``--full-size`` builds the published sizes at 256 px
(VQVAE ch 160, V 4096, Cvae 32; VQ-16 ch 128, z 256, 16384×8) and prints the same comparison; nothing is written.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import time
import types
from pathlib import Path

import torch
from safetensors.torch import save_file

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from argen.convert.llamagen import convert_vq  # noqa: E402
from argen.convert.var import convert_vqvae  # noqa: E402
from argen.tokenizers import build_tokenizer  # noqa: E402

FIXTURES = ROOT / "tests" / "fixtures" / "interop"
PATCH_NUMS = (1, 2, 3, 4, 5, 6, 8, 10, 13, 16)


def import_var(var_path: Path) -> types.ModuleType:
    """VAR's ``models`` package (its ``dist`` module and ``huggingface_hub`` mixin made importable)."""
    sys.path.insert(0, str(var_path))
    if importlib.util.find_spec("huggingface_hub") is None and "huggingface_hub" not in sys.modules:
        stub = types.ModuleType("huggingface_hub")
        stub.PyTorchModelHubMixin = type(
            "PyTorchModelHubMixin", (), {"__init_subclass__": classmethod(lambda c, **k: None)}
        )
        sys.modules["huggingface_hub"] = stub
    import models  # noqa: F401  (VAR's package)

    return sys.modules["models"]


def import_llamagen(llamagen_path: Path) -> types.ModuleType:
    path = llamagen_path / "tokenizer" / "tokenizer_image" / "vq_model.py"
    spec = importlib.util.spec_from_file_location("llamagen_vq_model", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@torch.no_grad()
def randomise(model: torch.nn.Module, *, seed: int) -> None:
    """Every parameter redrawn (conv weights ~ N(0, 1/fan_in), norms around 1, biases and codes spread), rounded
    to bfloat16-representable values."""
    generator = torch.Generator().manual_seed(seed)
    for name, parameter in model.named_parameters():
        noise = torch.randn(parameter.shape, generator=generator)
        if "embedding" in name:
            value = noise
        elif parameter.dim() > 1:
            value = noise / parameter[0].numel() ** 0.5
        elif "norm" in name and name.endswith("weight"):
            value = 1 + 0.2 * noise
        else:
            value = 0.2 * noise
        parameter.copy_(value.to(torch.bfloat16).float())


def images(count: int, size: int, *, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return (torch.rand(count, 3, size, size, generator=generator) * 2 - 1).to(torch.bfloat16).float()


def build_var(models: types.ModuleType, *, tiny: bool) -> torch.nn.Module:
    """The official VQVAE; tiny: ch 32 with official Encoder/Decoder of two levels and one block (32 px → 16²)."""
    if not tiny:
        return models.VQVAE(vocab_size=4096, z_channels=32, ch=160, test_mode=True, v_patch_nums=PATCH_NUMS)
    vae = models.VQVAE(vocab_size=64, z_channels=8, ch=32, test_mode=True, v_patch_nums=PATCH_NUMS)
    basic = sys.modules["models.basic_vae"]
    network = dict(ch=32, ch_mult=(1, 1), num_res_blocks=1, dropout=0.0, in_channels=3, z_channels=8)
    vae.encoder = basic.Encoder(double_z=False, **network)
    vae.decoder = basic.Decoder(**network)
    return vae.eval()


def build_llamagen(module: types.ModuleType, *, tiny: bool) -> torch.nn.Module:
    if not tiny:
        return module.VQ_16().eval()
    arguments = module.ModelArgs(codebook_size=64, codebook_embed_dim=4, encoder_ch_mult=[1, 1], decoder_ch_mult=[1, 1])
    arguments.z_channels = 16
    model = module.VQModel(arguments)
    model.encoder = module.Encoder(ch=32, ch_mult=(1, 1), num_res_blocks=1, z_channels=16)
    model.decoder = module.Decoder(ch=32, ch_mult=(1, 1), num_res_blocks=1, z_channels=16)
    return model.eval()


@torch.no_grad()
def official_var(vae: torch.nn.Module, batch: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
    ids = vae.img_to_idxBl(batch)  # one (B, s·s) per scale
    decoded = vae.idxBl_to_img(ids, same_shape=True, last_one=True)
    return [grid.view(batch.shape[0], side, side) for grid, side in zip(ids, PATCH_NUMS)], decoded


@torch.no_grad()
def official_llamagen(model: torch.nn.Module, batch: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
    quantized, _, (_, _, flat) = model.encode(batch)
    decoded = model.decode_code(flat, shape=tuple(quantized.shape))
    height, width = quantized.shape[-2:]
    return [flat.view(batch.shape[0], height, width)], decoded


@torch.no_grad()
def compare(tokenizer: torch.nn.Module, batch: torch.Tensor, ids: list[torch.Tensor], decoded: torch.Tensor) -> str:
    """argen's encode and decode against the official ones: ids equal? max |Δ| of decoding the official ids."""
    mine = tokenizer.encode(batch)
    equal = all(torch.equal(a, b) for a, b in zip(mine, ids))
    mismatched = sum(int((a != b).sum()) for a, b in zip(mine, ids))
    difference = float((tokenizer.decode(ids) - decoded).abs().max())
    total = sum(grid.numel() for grid in ids)
    return f"ids equal: {equal} ({mismatched} of {total} differ), decode max |Δ| {difference:.3g}"


# A 65536-float training buffer of LlamaGen's quantizer: zeros in a fresh model, dropped by the converter, and the
# largest tensor of the tiny model; the test puts it back before converting.
UNRECORDED = ("quantize.codebook_used",)


def record(
    name: str, model: torch.nn.Module, batch: torch.Tensor, ids: list[torch.Tensor], decoded: torch.Tensor
) -> None:
    tensors = {
        f"state/{key}": value.to(torch.bfloat16) if value.is_floating_point() else value
        for key, value in model.state_dict().items()
        if key not in UNRECORDED
    }
    tensors |= {"images": batch.to(torch.bfloat16), "decoded": decoded.contiguous()}
    tensors |= {f"ids/{index}": grid.contiguous() for index, grid in enumerate(ids)}
    FIXTURES.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(FIXTURES / f"{name}.safetensors"))


def run_family(name: str, build, official, convert, *, tiny: bool, seed: int) -> None:
    """Build, randomise and run the official model; convert, compare, and record the tiny one as a fixture."""
    size = 32 if tiny else 256
    model = build(tiny)
    randomise(model, seed=seed)
    batch = images(2 if tiny else 1, size, seed=seed + 1)
    started = time.perf_counter()
    ids, decoded = official(model, batch)
    official_seconds = time.perf_counter() - started
    config, state = convert(model.state_dict(), size)
    tokenizer = build_tokenizer(config).eval()
    tokenizer.load_state_dict(state)
    parameters = sum(parameter.numel() for parameter in model.parameters()) / 1e6
    print(
        f"{name} {'tiny' if tiny else 'full-size'} ({parameters:.2f} M parameters, {size} px, official encode+decode "
        f"{official_seconds:.1f} s): {compare(tokenizer, batch, ids, decoded)}",
        flush=True,
    )
    if tiny:
        record(name, model, batch, ids, decoded)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--var-path", type=Path, help="a checkout of FoundationVision/VAR")
    parser.add_argument("--llamagen-path", type=Path, help="a checkout of FoundationVision/LlamaGen")
    parser.add_argument("--full-size", action="store_true", help="also compare the published sizes at 256 px")
    parser.add_argument("--seed", type=int, default=0)
    arguments = parser.parse_args()
    torch.set_grad_enabled(False)
    families = []
    if arguments.var_path:
        models = import_var(arguments.var_path)
        families.append(
            ("var", lambda tiny: build_var(models, tiny=tiny), official_var,
             lambda state, size: convert_vqvae(state, patch_nums=list(PATCH_NUMS)))
        )  # fmt: skip
    if arguments.llamagen_path:
        module = import_llamagen(arguments.llamagen_path)
        families.append(
            ("llamagen", lambda tiny: build_llamagen(module, tiny=tiny), official_llamagen,
             lambda state, size: convert_vq(state, image_size=size))
        )  # fmt: skip
    for tiny in [True, False] if arguments.full_size else [True]:
        for name, build, official, convert in families:
            run_family(name, build, official, convert, tiny=tiny, seed=arguments.seed)


if __name__ == "__main__":
    main()
