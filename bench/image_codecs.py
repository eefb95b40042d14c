"""JPEG and WebP at a given bits per pixel: the reference rows of a tokenizer table.

For each image, the quality setting whose file comes closest to (and not above) the target size is picked by binary
search, so the codec gets at most the tokenizer's bit budget; PSNR and SSIM are measured on the decoded pixels with
the same functions `argen eval-tokenizer` uses. File headers are counted (a 32×32 JPEG spends ~600 bits on them),
which is what a user storing the file pays; `--no-headers` subtracts the size of a 1×1-pixel file of the same codec
and quality instead.

    python bench/image_codecs.py --data folder:../shared/data/cifar10-jpeg.tar.gz --bits-per-image 1300 --limit 2000
"""

from __future__ import annotations

import argparse
import io
import json

import numpy as np
import torch
from PIL import Image

from argen.data import load_dataset
from argen.metrics.evaluate import torchmetrics_ssim
from argen.tokenizers.losses import psnr


def encoded_size(image: Image.Image, codec: str, quality: int) -> tuple[int, np.ndarray]:
    buffer = io.BytesIO()
    image.save(buffer, format=codec, quality=quality)
    decoded = np.asarray(Image.open(io.BytesIO(buffer.getvalue())).convert(image.mode))
    return 8 * buffer.tell(), decoded


def best_under(image: Image.Image, codec: str, budget_bits: float, overhead: int) -> tuple[int, np.ndarray]:
    """(bits, pixels) at the highest quality whose file stays within ``budget_bits`` (quality 1 if none does)."""
    low, high = 1, 100
    best = encoded_size(image, codec, 1)
    while low <= high:
        middle = (low + high) // 2
        bits, pixels = encoded_size(image, codec, middle)
        if bits - overhead <= budget_bits:
            best, low = (bits, pixels), middle + 1
        else:
            high = middle - 1
    return best[0] - overhead, best[1]


def structural_similarity(fake: torch.Tensor, real: torch.Tensor) -> float:
    """SSIM as `argen eval-tokenizer` reports it (torchmetrics, images in [0, 1])."""
    metric = torchmetrics_ssim()
    metric.update((fake + 1) / 2, (real + 1) / 2)
    return float(metric.compute())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True)
    parser.add_argument("--split", default="test")
    parser.add_argument("--bits-per-image", type=float, required=True, help="the tokenizer's bits per image")
    parser.add_argument("--limit", type=int, default=2000)
    parser.add_argument("--no-headers", action="store_true", help="do not count the codec's fixed file overhead")
    parser.add_argument("--json")
    arguments = parser.parse_args()
    dataset = load_dataset(arguments.data, split=arguments.split)
    images = dataset.images[: arguments.limit]  # uint8 (N, C, H, W)
    results = {}
    for codec in ("JPEG", "WEBP"):
        decoded, bits = [], []
        for array in images:
            pixels = array.permute(1, 2, 0).numpy()
            image = Image.fromarray(pixels[..., 0] if pixels.shape[-1] == 1 else pixels)
            overhead = encoded_size(image.resize((1, 1)), codec, 50)[0] if arguments.no_headers else 0
            size, out = best_under(image, codec, arguments.bits_per_image, overhead)
            bits.append(size)
            decoded.append(torch.from_numpy(out.reshape(pixels.shape).copy()).permute(2, 0, 1))
        real = images.float() / 127.5 - 1
        fake = torch.stack(decoded).float() / 127.5 - 1
        results[codec.lower()] = {
            "images": len(images),
            "bits_per_image": float(np.mean(bits)),
            "bits_per_pixel": float(np.mean(bits)) / (images.shape[2] * images.shape[3]),
            "psnr": float(psnr(fake, real)),
            "ssim": structural_similarity(fake, real),
        }
        print(codec, json.dumps(results[codec.lower()]))
    if arguments.json:
        with open(arguments.json, "w") as handle:
            json.dump(results, handle, indent=2)


if __name__ == "__main__":
    main()
