"""`argen convert`: a published checkpoint (VAR, LlamaGen) → an argen directory.

The tokenizer half works today (``--vae`` / ``--vq`` → an argen tokenizer directory); the generator half
(``--var`` / ``--gpt``) is accepted and refused until the transformer has the model options of issue 25.
"""

from __future__ import annotations

import argparse

NAME = "convert"
HELP = "convert a published VAR or LlamaGen checkpoint into an argen directory"
DESCRIPTION = (
    "Read the official .pth/.pt file without executing it (tensors only), read the sizes from the weights and write "
    "config.json + model.safetensors. Today: the tokenizers (VAR's VQVAE, LlamaGen's VQ-16); the transformers follow."
)
ORDER = 95
GENERATOR_REFUSAL = "transformer conversion needs the model options of issue 25, not built yet; convert the {} alone"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    families = parser.add_subparsers(dest="family", required=True, metavar="{var,llamagen}")
    var = families.add_parser("var", help="VAR (arXiv 2404.02905): vae_ch160v4096z32.pth [+ var_dN.pth]")
    var.add_argument("--vae", required=True, help="VAR's VQVAE file, e.g. vae_ch160v4096z32.pth")
    var.add_argument("--var", help="VAR's transformer, e.g. var_d16.pth (not supported yet)")
    var.add_argument(
        "--patch-nums",
        default="1,2,3,4,5,6,8,10,13,16",
        help="the scale sides, coarse to fine (VAR's 256-px default; 1,2,3,4,6,9,13,18,24,32 for its 512-px model)",
    )
    var.add_argument("--quant-resi", type=float, default=0.5, help="φ's blend ratio (VAR's VQVAE default 0.5)")
    llamagen = families.add_parser("llamagen", help="LlamaGen (arXiv 2406.06525): vq_ds16_c2i.pt [+ c2i_*.pt]")
    llamagen.add_argument("--vq", required=True, help="LlamaGen's tokenizer file, e.g. vq_ds16_c2i.pt")
    llamagen.add_argument("--gpt", help="LlamaGen's GPT file, e.g. c2i_B_256.pt (not supported yet)")
    llamagen.add_argument("--image-size", type=int, default=256, help="image side the tokenizer works at (c2i: 256)")
    for family in (var, llamagen):
        family.add_argument("--out", required=True, help="directory to write (config.json + model.safetensors)")
        family.add_argument("--dtype", choices=("fp32", "bf16", "fp16"), default="fp32", help="stored float type")


def patch_numbers(text: str) -> list[int]:
    from argen.errors import ArgenError

    try:
        return [int(part) for part in text.split(",")]
    except ValueError:
        raise ArgenError(f"--patch-nums must be comma-separated integers like 1,2,3,4, got {text!r}") from None


def run(arguments: argparse.Namespace) -> None:
    from argen.convert import write_tokenizer
    from argen.convert.files import load_state_dict
    from argen.errors import ArgenError

    if arguments.family == "var":
        if arguments.var:
            raise ArgenError(GENERATOR_REFUSAL.format("tokenizer (--vae)"))
        from argen.convert.var import convert_vqvae

        source = arguments.vae
        patch_nums = patch_numbers(arguments.patch_nums)
        config, state = convert_vqvae(
            load_state_dict(source), patch_nums=patch_nums, quant_resi=arguments.quant_resi, source=source
        )
    else:
        if arguments.gpt:
            raise ArgenError(GENERATOR_REFUSAL.format("tokenizer (--vq)"))
        from argen.convert.llamagen import convert_vq

        source = arguments.vq
        config, state = convert_vq(load_state_dict(source), image_size=arguments.image_size, source=source)
    out = write_tokenizer(arguments.out, config, state, source=source, dtype=arguments.dtype)
    print(
        f"converted {source} → {out} ({config.kind}: {config.image_size} px, codebook {config.codebook_size}, "
        f"{len(config.scales) if config.kind == 'var-vqvae' else 1} grid(s))"
    )
