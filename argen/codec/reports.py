"""What a compression measured and what a decompression returns."""

from __future__ import annotations

from dataclasses import dataclass, field

from PIL import Image
from torch import Tensor

from argen.codec.container import Header
from argen.pipeline import to_pil


@dataclass
class CompressionReport:
    """What `Codec.compress` measured. Bits are totals over the images; ``model_bits`` is the model's own negative
    log-likelihood (float probabilities), ``ideal_bits`` that of the quantized probabilities the coder used."""

    images: int
    dims: int  # subpixels per image, C·H·W
    file_bytes: int
    header_bytes: int
    stream_bytes: list[int]
    model_bits: dict[str, float]  # "class", "tokens", "residual"
    ideal_bits: float
    seconds: float
    lossless: bool
    # (N,) the class each image was coded under (uniform class prior of a class-conditional model), else None:
    # pass it back as ``compress(classes=...)`` to code the same images again without the per-class search.
    classes: Tensor | None = None

    @property
    def bits_per_dim(self) -> float:
        return 8 * self.file_bytes / max(1, self.images * self.dims)

    @property
    def payload_bits(self) -> int:
        return 8 * sum(self.stream_bytes)

    @property
    def images_per_second(self) -> float:
        return self.images / max(self.seconds, 1e-9)

    def summary(self) -> str:
        model = sum(self.model_bits.values())
        overhead = 100 * (self.payload_bits / model - 1) if model else 0.0
        return (
            f"{self.images} images → {self.file_bytes} bytes ({self.bits_per_dim:.4f} bits/dim, "
            f"{'lossless' if self.lossless else 'lossy'}); model NLL {model / 8:.0f} bytes, streams "
            f"{self.payload_bits // 8} bytes ({overhead:+.2f} %), header {self.header_bytes} bytes; "
            f"{self.seconds:.2f} s ({self.images_per_second:.1f} images/s)"
        )


@dataclass
class DecompressionResult:
    """pixels: uint8 (N, C, H, W); names: one per image, distinct; steps: how many steps of the schedule were
    decoded."""

    pixels: Tensor
    names: list[str]
    steps: int
    num_steps: int
    lossless: bool
    seconds: float
    header: Header = field(repr=False, default_factory=dict)

    @property
    def images(self) -> list[Image.Image]:
        return to_pil(self.pixels)

    @property
    def images_per_second(self) -> float:
        return len(self.pixels) / max(self.seconds, 1e-9)
