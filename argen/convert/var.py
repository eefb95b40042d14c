"""VAR's published files → argen: "Visual Autoregressive Modeling: Scalable Image Generation via Next-Scale
Prediction" (Tian et al., arXiv 2404.02905).

The tokenizer (``vae_ch160v4096z32.pth``, a plain state dict of VAR's ``VQVAE``) becomes an argen ``var-vqvae``
tokenizer: width, channel multipliers, blocks, latent channels, codebook and the number of φ convs are read from
the weights; the scale sides (``--patch-nums``, VAR's 1,2,3,4,5,6,8,10,13,16 at 256 px) and φ's blend ratio
(``quant_resi`` 0.5) are not in them and come from the caller, with VAR's defaults. The image size follows: the last
patch number times 2^downsample.
"""

from __future__ import annotations

import torch

from argen.convert.network import SHARED_RULES, Rule, fresh_idle_steps, level_indices, network_sizes, rename
from argen.errors import ArgenError
from argen.tokenizers import TokenizerConfig

PATCH_NUMS = [1, 2, 3, 4, 5, 6, 8, 10, 13, 16]  # VAR's train.py default, 256 px
QUANT_RESI = 0.5  # VQVAE(quant_resi=0.5)

RULES: list[Rule] = [
    (r"^(encoder|decoder)\.(?:down|up)\.(\d+)\.block\.", r"\1.levels.\2.blocks."),
    (r"^(encoder|decoder)\.(?:down|up)\.(\d+)\.attn\.", r"\1.levels.\2.attentions."),
    (r"^(encoder|decoder)\.(?:down|up)\.(\d+)\.(?:down|up)sample\.conv\.", r"\1.levels.\2.resample."),
    (r"^(encoder|decoder)\.mid\.block_1\.", r"\1.middle.0."),
    (r"^(encoder|decoder)\.mid\.attn_1\.", r"\1.middle.1."),
    (r"^(encoder|decoder)\.mid\.block_2\.", r"\1.middle.2."),
    *SHARED_RULES,
    (r"^quant_conv\.", "encoder.project."),
    (r"^post_quant_conv\.", "decoder.project."),
    (r"^quantize\.embedding\.", "quantizer.codebook."),
    (r"^quantize\.quant_resi\.qresi_ls\.(\d+)\.", r"quantizer.phis.\1."),  # PhiPartiallyShared (share_quant_resi ≥ 2)
    (r"^quantize\.quant_resi\.qresi\.", "quantizer.phis.0."),  # PhiShared (share_quant_resi = 1)
    (r"^quantize\.quant_resi\.(\d+)\.", r"quantizer.phis.\1."),  # PhiNonShared (share_quant_resi = 0)
]
DROPPED = ("quantize.ema_vocab_hit_SV",)  # training statistics of code usage


def convert_vqvae(
    state: dict[str, torch.Tensor],
    *,
    patch_nums: list[int] | None = None,
    quant_resi: float = QUANT_RESI,
    source: str = "VAR VQVAE",
) -> tuple[TokenizerConfig, dict[str, torch.Tensor]]:
    """VAR's VQVAE state dict → (``var-vqvae`` TokenizerConfig, argen state dict in fp32)."""
    scales = list(patch_nums or PATCH_NUMS)
    converted = {name: tensor.float() for name, tensor in rename(state, RULES, drop=DROPPED).items()}
    if "quantizer.codebook.weight" not in converted or not any(
        name.startswith("quantizer.phis.") for name in converted
    ):
        raise ArgenError(f"{source}: no quantize.embedding / quantize.quant_resi weights; is this VAR's vae_*.pth?")
    sizes = network_sizes(converted, source=source)
    phis = len(level_indices(converted, "quantizer.phis"))
    shared = any(name.startswith("quantize.quant_resi.qresi.") for name in state)
    non_shared = any(name.split(".")[2].isdigit() for name in state if name.startswith("quantize.quant_resi."))
    if non_shared and phis != len(scales):
        raise ArgenError(f"{source}: {phis} unshared φ convs but {len(scales)} patch numbers; pass --patch-nums")
    codebook_size, latent_dim = converted["quantizer.codebook.weight"].shape
    if latent_dim != sizes["latent_dim"]:
        raise ArgenError(f"{source}: codebook dimension {latent_dim} differs from the latent's {sizes['latent_dim']}")
    fresh_idle_steps(converted)
    config = TokenizerConfig(
        kind="var-vqvae",
        image_size=scales[-1] * 2 ** int(sizes["downsample"]),
        codebook_size=int(codebook_size),
        scales=scales,
        quant_resi=quant_resi,
        phi_count=0 if non_shared else 1 if shared else phis,
        restart_after=0,  # a published codebook: no dead-code restarts
        **sizes,
    )
    return config, converted


__all__ = ["PATCH_NUMS", "QUANT_RESI", "convert_vqvae"]
