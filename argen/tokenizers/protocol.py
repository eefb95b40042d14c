"""What orders, samplers and the pipeline may use of a tokenizer: the tokenizer contract as a `typing.Protocol`.

Every `argen.tokenizers.Tokenizer` satisfies it; so may any other object (a ported tokenizer, a test's fake) that
has these members. Legend: B batch, C image channels, F latent channels, H/W image, h/w grid.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Protocol

from torch import Tensor


class TokenizerSettings(Protocol):
    """The part of a tokenizer's config the contract reads."""

    @property
    def kind(self) -> str: ...  # the registered tokenizer kind, e.g. "vq" or "multiscale"


class TokenizerProtocol(Protocol):
    """Images ⇄ token ids, one (B, h, w) grid per scale or band."""

    @property
    def config(self) -> TokenizerSettings: ...

    @property
    def codebook_size(self) -> int: ...

    @property
    def grid_shapes(self) -> Sequence[tuple[int, int]]: ...

    def encode(self, images: Tensor) -> list[Tensor]:
        """(B, C, H, W) images in [-1, 1] → one (B, h, w) id grid per scale or band."""
        ...

    def decode(self, ids: list[Tensor]) -> Tensor:
        """Id grids → (B, C, H, W) images."""
        ...

    def decode_latent(self, latent: Tensor) -> Tensor:
        """(B, F, h, w) latent → (B, C, H, W) images."""
        ...

    def embed(self, ids: list[Tensor]) -> list[Tensor]:
        """Id grids → their code vectors, one (B, F, h, w) per grid."""
        ...

    def compose(self, ids: list[Tensor], upto: int) -> Tensor:
        """The (B, F, h, w) latent of the first ``upto`` grids."""
        ...

    def parameters(self) -> Iterator[Tensor]: ...

    def buffers(self) -> Iterator[Tensor]: ...


__all__ = ["TokenizerProtocol", "TokenizerSettings"]
