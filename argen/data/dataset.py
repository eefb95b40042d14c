"""`ImageDataset`: one split of one image source, decoded and in memory (every source returns one)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

SPLITS = ("train", "test")


@dataclass
class ImageDataset:
    """Images of one split of one source, decoded and in memory.

    ``images`` uint8 (N, C, H, W) with C in {1, 3}; ``labels`` int64 (N,) indexing ``classes``, or None with
    ``classes == []`` for an unlabelled folder; ``skipped`` the image files that failed to decode.
    """

    images: torch.Tensor
    labels: torch.Tensor | None
    classes: list[str]
    skipped: list[str]
    spec: str
    split: str

    def __len__(self) -> int:
        return self.images.shape[0]

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(C, H, W)."""
        channels, height, width = self.images.shape[1:]
        return channels, height, width

    @property
    def num_classes(self) -> int:
        return len(self.classes)


def one_line(error: object) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
