"""Token caches: a dataset's ids, encoded once, so generator training never runs the tokenizer's encoder again.

A cache is a safetensors file of one integer grid per tokenizer grid (the smallest type that holds the codebook),
the labels, and the fingerprint of the tokenizer release that made it: a cache made by another tokenizer is refused.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from tqdm import tqdm

from argen.checkpoint import atomic_write
from argen.data import ImageDataset, images_to_float
from argen.data.dataset import one_line
from argen.errors import ArgenError

TOKEN_CACHE_FORMAT = "argen-token-cache-1"


@torch.no_grad()
def encode_dataset(
    tokenizer, dataset: ImageDataset, *, batch_size: int = 256, progress: bool = True
) -> list[torch.Tensor]:
    """Encode every image of ``dataset``: one (N, h_i, w_i) LongTensor per grid of ``tokenizer``.

    The outputs are allocated once, after the first batch, and each batch is copied into them: keeping every batch's
    small id tensors alive between the large, freed activations of the next batches fragmented the heap (with
    `argen.allocator.keep_freed_memory`, which never hands freed memory back) until encoding CIFAR-10's 50 000
    images held ~10 GB.
    """
    tokenizer.eval()
    grids: list[torch.Tensor] = []
    for start in tqdm(range(0, len(dataset), batch_size), desc="encode", unit="batch", disable=not progress):
        ids = tokenizer.encode(images_to_float(dataset.images[start : start + batch_size]))
        if not grids:
            grids = [torch.empty((len(dataset), *grid.shape[1:]), dtype=grid.dtype) for grid in ids]
        for output, grid in zip(grids, ids):
            output[start : start + len(grid)] = grid
    return grids


def save_token_cache(
    path: str | Path,
    *,
    ids: list[torch.Tensor],
    labels: torch.Tensor | None,
    classes: list[str],
    codebook_size: int,
    fingerprint: str,
    spec: str,
    split: str,
) -> None:
    """Store ids as the smallest integer type that holds the codebook, with the tokenizer's fingerprint and the
    class names (safetensors metadata is str → str, so they are stored as JSON)."""
    from safetensors.torch import save_file

    storage = torch.int16 if codebook_size <= 2**15 else torch.int32
    tensors = {f"grid_{index}": grid.to(storage).contiguous() for index, grid in enumerate(ids)}
    if labels is not None:
        tensors["labels"] = labels.to(torch.int64).contiguous()
    metadata = {
        "format": TOKEN_CACHE_FORMAT,
        "tokenizer_fingerprint": fingerprint,
        "data": spec,
        "split": split,
        "codebook_size": str(codebook_size),
        "classes": json.dumps(classes),
    }
    atomic_write(path, lambda temporary: save_file(tensors, str(temporary), metadata=metadata))


def load_token_cache(path: str | Path, *, fingerprint: str) -> tuple[list[torch.Tensor], torch.Tensor | None, dict]:
    """Read a token cache made by the tokenizer with ``fingerprint``; a cache from any other tokenizer is refused."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
            tensors = {name: handle.get_tensor(name) for name in handle.keys()}
    except Exception as error:
        raise ArgenError(f"{path} is not a readable token cache ({one_line(error)}); delete it to re-encode") from None
    if metadata.get("format") != TOKEN_CACHE_FORMAT:
        raise ArgenError(f"{path} is not an argen token cache; delete it or pass another path")
    if metadata.get("tokenizer_fingerprint") != fingerprint:
        raise ArgenError(
            f"{path} was encoded by another tokenizer (fingerprint {metadata.get('tokenizer_fingerprint')}, this one "
            f"is {fingerprint}); re-encode with `argen encode` or delete the cache"
        )
    metadata["classes"] = json.loads(metadata.get("classes", "[]"))
    grid_count = sum(name.startswith("grid_") for name in tensors)
    ids = [tensors[f"grid_{index}"].long() for index in range(grid_count)]
    return ids, tensors.get("labels"), metadata
