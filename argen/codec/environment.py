"""What computes the probabilities: recorded in every file, and named when a file does not decode here.

The model's float outputs must match bit for bit between encoder and decoder. They do across thread counts and
batch sizes on the CPU tested (AVX-512, torch 2.13; tests check thread counts and a fresh process), but another
torch version, another CPU vector ISA (torch picks AVX2 / AVX-512 kernels at run time), another BLAS, or another
device (a file made on a GPU decodes on that kind of GPU only) may round differently. The header records the torch
version, device, CPU capability and argen's own arithmetic version, so that a failure names the difference.
"""

from __future__ import annotations

import torch

from argen import onednn
from argen.codec.container import Header, JsonValue

# The version of argen's own model arithmetic, raised whenever a change moves the models' floats (2: AdaLN terms and
# gated residuals as one addcmul, guidance before the output layers, channels-last tokenizer convolutions on a CPU;
# 3: large CPU products through oneDNN, `argen.onednn`). Files carry it, so that one that fails its checksum after
# such a change says so; files without it are from 1.
ARITHMETIC = 3
_LABELS = {"arithmetic": "argen arithmetic", "products": "CPU products by"}


def environment(device: torch.device) -> dict[str, JsonValue]:
    """What the header records about the machine that computes the probabilities."""
    capability = torch.backends.cpu.get_cpu_capability() if device.type == "cpu" else torch.cuda.get_device_name(device)
    # Which library computes the transformer's large CPU products (files of arithmetic < 3 only knew torch's).
    products = "onednn" if device.type == "cpu" and onednn.enabled else "torch"
    return {
        "torch": torch.__version__, "device": device.type, "capability": capability, "arithmetic": ARITHMETIC,
        "products": products,
    }  # fmt: skip


def mismatch_message(header: Header, source: str, block: int, device: torch.device, *, failure: str) -> str:
    """The one line for a block whose intact streams decode to content that fails its check (or do not decode).

    Header and streams passed their CRC-32s, so the bytes are what some writer wrote. Where the recorded machine
    differs from this one, that difference is the likely cause and is named; where nothing recorded differs, the
    likelier cause is a file altered after it was written (anyone can recompute a CRC), so the file is called
    damaged, with the remaining machine cause named second.
    """
    recorded = {"arithmetic": 1, "products": "torch", **header.get("environment", {})}
    here = environment(device)
    differences = [
        f"{_LABELS.get(key, key)} {recorded.get(key)} there, {here[key]} here"
        for key in here
        if recorded.get(key) != here[key]
    ]
    if not differences:
        return (
            f"{source}: block {block} {failure} though this machine matches the one that made it (torch "
            f"{here['torch']}, {here['device']} {here['capability']}, argen arithmetic {ARITHMETIC}): the file is "
            "damaged or was altered after it was written (or another build of argen or its libraries computes "
            "other probabilities); compress the images again"
        )
    where = "where it was made"
    if recorded["arithmetic"] != here["arithmetic"]:
        where += f" with an argen of arithmetic {recorded['arithmetic']} (the argen version that wrote it)"
    elif recorded["products"] != here["products"]:
        where += f", or here with ARGEN_ONEDNN={1 if recorded['products'] == 'onednn' else 0} in the environment"
    return (
        f"{source}: block {block} {failure}: this machine computes other probabilities than the one that "
        f"compressed it ({'; '.join(differences)}); decompress it {where}"
    )
