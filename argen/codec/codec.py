"""The generator as an entropy model: `Codec` codes uint8 images to ``.argz`` bytes and back.

A generator gives a probability to every token, step by step, in a known order; an entropy coder turns those
probabilities into a code whose length is the model's negative log-likelihood. Encoding runs the order's inference
schedule with teacher forcing (one model call per step, batched over the images, KV cache as in sampling);
decoding replays the very same schedule, sampling nothing and taking each step's tokens from the coder.

- **Lossy** (default): the token stream alone; the decoded image is the tokenizer's reconstruction of the ids. For
  next-scale and next-frequency models the stream is **progressive**: it is stored step by step, so a prefix
  decodes the first K scales or bands (``decompress(steps=K)``), the later grids left empty (the composed latent
  of the first K grids is decoded, as `Order.preview` does).
- **Lossless**: tokens plus the pixels given the reconstruction, coded with a small learned p(x | x̂)
  (`argen.codec.residual`), so that the round trip is exact in every pixel value.
- **Class**: guidance is off. A class-conditional model's class is coded too: ``class_prior="uniform"`` (default)
  codes it with a uniform prior (log2(classes) bits) and the encoder picks, per image, the class under which the
  tokens cost least; ``"null"`` uses the model's null class and codes nothing. On the shipped Fashion-MNIST models
  the uniform prior saves 5-26 bits per image over the null class (measured on 256 test images; see
  docs/compression.md).

Determinism: both sides run one schedule with one batch composition (blocks of ``block_size`` images, recorded in
the header), quantize probabilities the same way (`argen.codec.probabilities`) and check each decoded block against
the encoder's checksums, so a mismatch is a one-line error, never wrong images (`argen.codec.environment`).
"""

from __future__ import annotations

import time

import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm

from argen.codec.container import (
    CLASS_PRIORS,
    MAX_BLOCK_SIZE,
    MAX_IMAGES,
    Header,
    JsonValue,
    decode_names,
    encode_names,
    name_problem,
    pack,
    stream_name,
    unpack,
)
from argen.codec.environment import environment, mismatch_message
from argen.codec.probabilities import Streams, UndecodableStream
from argen.codec.reports import CompressionReport, DecompressionResult
from argen.codec.schedule import Schedule
from argen.errors import ArgenError

DEFAULT_BLOCK_SIZE = 256


class Codec(Schedule):
    """A model directory as an entropy model: `compress` uint8 images to ``.argz`` bytes and `decompress` them.

    ``residual`` (a directory) is the p(x | x̂) model for lossless mode; by default ``DIR/residual`` when it exists.
    """

    # -- public --------------------------------------------------------------------------------------------------

    def check_images(self, images: Tensor) -> None:
        """ArgenError unless ``images`` are uint8 (N, C, H, W) of the shape this model takes."""
        if images.dtype != torch.uint8 or images.dim() != 4:
            raise ArgenError(f"images must be uint8 (N, C, H, W), got {images.dtype} {tuple(images.shape)}")
        if tuple(images.shape[1:]) != self.shape:
            channels, size = self.shape[0], self.shape[1]
            kind = "grayscale" if channels == 1 else "RGB"
            got = f"{images.shape[3]}×{images.shape[2]} with {images.shape[1]} channel(s)"
            raise ArgenError(
                f"this model takes {size}×{size} {kind} images, got {got}: pass --resize (resize=True) to resize "
                "and convert them (the decompressed images are then the resized ones)"
            )
        if not 1 <= len(images) <= MAX_IMAGES:
            raise ArgenError(f"one file holds 1 to {MAX_IMAGES} images, got {len(images)}")

    def _check_settings(
        self, count: int, names: list[str] | None, *, class_prior: str, block_size: int, classes: Tensor | None
    ) -> tuple[list[str], Tensor | None]:
        """The compression settings checked against what a reader accepts → (names, classes)."""
        if class_prior not in CLASS_PRIORS:
            raise ArgenError(f"unknown class prior {class_prior!r}: choose one of {', '.join(CLASS_PRIORS)}")
        if not 1 <= block_size <= MAX_BLOCK_SIZE:
            raise ArgenError(f"block size must be from 1 to {MAX_BLOCK_SIZE}, got {block_size}")
        if classes is not None:
            if not self.num_classes or class_prior != "uniform":
                raise ArgenError("classes= needs a class-conditional model and the uniform class prior")
            classes = torch.as_tensor(classes).long()
            if classes.shape != (count,) or bool(((classes < 0) | (classes >= self.num_classes)).any()):
                raise ArgenError(f"classes must be {count} class ids in 0..{self.num_classes - 1}, one per image")
        names = list(names) if names is not None else [f"{index:05d}" for index in range(count)]
        if len(names) != count:
            raise ArgenError(f"got {len(names)} names for {count} images")
        for name in names:
            problem = name_problem(name)
            if problem:
                raise ArgenError(f"the image name {name!r} {problem}: give plain relative names like 'a/b'")
        if len(set(names)) != count:
            repeated = next(name for name in names if names.count(name) > 1)
            raise ArgenError(f"the image name {repeated!r} repeats: every image needs its own name (its file)")
        return names, classes

    def compress(
        self,
        images: Tensor,
        *,
        names: list[str] | None = None,
        lossless: bool = False,
        class_prior: str = "uniform",
        block_size: int = DEFAULT_BLOCK_SIZE,
        progress: bool = True,
        extra: dict[str, JsonValue] | None = None,
        classes: Tensor | None = None,
    ) -> tuple[bytes, CompressionReport]:
        """uint8 (N, C, H, W) images → (the ``.argz`` bytes, a report). ``names`` (distinct plain relative paths)
        default to 00000, 00001, ...

        With the uniform class prior each image is coded under the class that makes its tokens cheapest, found by one
        teacher-forced pass per class; ``classes`` ((N,) ids, e.g. an earlier report's ``classes`` or the true
        labels) codes them under those instead, skipping the search. Any class decodes, so the file stays exact."""
        self.check_images(images)
        count = len(images)
        names, classes = self._check_settings(
            count, names, class_prior=class_prior, block_size=block_size, classes=classes
        )
        if lossless:
            self.residual()
        streams = Streams(self.token_streams + (1 if lossless else 0))
        bits = {"class": 0.0, "tokens": 0.0, "residual": 0.0}
        checks, chosen = [], []
        start = time.perf_counter()
        for offset in tqdm(range(0, count, block_size), desc="compress", unit="block", disable=not progress):
            block = images[offset : offset + block_size]
            _, block_checks, block_classes = self._block(
                streams, len(block), class_prior=class_prior, lossless=lossless, steps=self.layout.num_steps,
                images=block, bits=bits, classes=None if classes is None else classes[offset : offset + block_size],
            )  # fmt: skip
            checks.append(block_checks)
            chosen += [] if block_classes is None else [block_classes]
        payloads = streams.payloads()
        seconds = time.perf_counter() - start
        model: dict[str, JsonValue] = {"directory": str(self.directory.resolve()), "fingerprints": self.fingerprints}
        if lossless:
            model["residual_directory"] = str(self.residual_directory.resolve())
        # The quantization constants (LOG2_STEPS, WEIGHT_BITS, CODER_PRECISION) belong to format version 1.
        header = {
            "mode": "lossless" if lossless else "lossy", "order": self.order.name, "model": model,
            "class_prior": class_prior if self.num_classes else "none", "block_size": block_size, "count": count,
            "shape": list(self.shape), "names": encode_names(names), "token_streams": self.token_streams,
            "environment": environment(self.device), "checks": checks, **(extra or {}),
        }  # fmt: skip
        data = pack(header, payloads)
        report = CompressionReport(
            images=count, dims=int(np.prod(self.shape)), file_bytes=len(data),
            header_bytes=len(data) - sum(len(payload) for payload in payloads),
            stream_bytes=[len(payload) for payload in payloads],
            model_bits=bits if lossless else {key: value for key, value in bits.items() if key != "residual"},
            ideal_bits=sum(streams.ideal), seconds=seconds, lossless=lossless,
            classes=torch.cat(chosen) if chosen else None,
        )  # fmt: skip
        return data, report

    def check_file(self, header: Header, *, source: str, need_residual: bool) -> None:
        """Refuse, naming both, a file that another model (or residual model) made, or one that cannot be its."""
        recorded = header["model"]["fingerprints"]
        mine = {key: self.fingerprints[key] for key in ("tokenizer", "generator")}
        theirs = {key: recorded.get(key) for key in mine}
        if mine != theirs or header["order"] != self.order.name:
            raise ArgenError(
                f"{source} was compressed with the {header['order']} model {header['model']['directory']} "
                f"(tokenizer {theirs['tokenizer']}, generator {theirs['generator']}), not with {self.directory} "
                f"({self.order.name}: tokenizer {mine['tokenizer']}, generator {mine['generator']}): decompress "
                "with the model that made it (--model DIR)"
            )
        # Fields a writer of this very model always sets the same way: anything else is a damaged header.
        if tuple(header["shape"]) != self.shape or header["token_streams"] != self.token_streams:
            raise ArgenError(f"{source} is damaged: its image shape or step count does not fit the model that made it")
        if (header["class_prior"] == "none") != (self.num_classes == 0):
            raise ArgenError(f"{source} is damaged: its class prior {header['class_prior']!r} does not fit its model")
        if need_residual:
            self.residual()
            if recorded.get("residual") != self.fingerprints["residual"]:
                raise ArgenError(
                    f"{source} was compressed with the residual model {header['model']['residual_directory']} "
                    f"({recorded.get('residual')}), not with {self.residual_directory} "
                    f"({self.fingerprints['residual']}): pass --residual with the one that made it"
                )

    def _payloads(
        self, header: Header, streams: list[bytes | None], *, source: str, steps: int, lossless: bool
    ) -> list[np.ndarray]:
        """The u32 words of the streams needed to decode ``steps`` steps (and the residual), or a truncation error."""
        needed = (steps if self.progressive else 1) + (1 if lossless else 0)
        wanted = [*range(needed - 1 if lossless else needed), *([len(streams) - 1] if lossless else [])]
        missing = [index for index in wanted if streams[index] is None]
        if missing:
            complete = next((index for index, stream in enumerate(streams) if stream is None), len(streams))
            hint = ""
            if self.progressive and complete > 0:
                shown = min(complete, self.token_streams)
                hint = f"; its first {shown} step(s) are complete and --steps {shown} decodes them"
            raise ArgenError(f"{source} is truncated: {stream_name(header, missing[0])} is cut short{hint}")
        return [np.frombuffer(streams[index], dtype="<u4").astype(np.uint32) for index in wanted]

    def decompress(
        self, data: bytes, *, steps: int | None = None, progress: bool = True, source: str = "the file"
    ) -> DecompressionResult:
        """``.argz`` bytes → the images. ``steps`` (next-scale / next-frequency models) decodes only the first K
        steps of the progressive stream: the coarse, lossy images of K scales or bands (of a lossless file too)."""
        header, streams = unpack(data, source=source)
        num_steps = self.layout.num_steps
        if steps is not None:
            if not self.progressive:
                raise ArgenError(
                    f"--steps needs a next-scale or next-frequency model; {source} was made with a {header['order']} "
                    "model, whose stream is not progressive"
                )
            if not 1 <= steps <= num_steps:
                raise ArgenError(f"--steps must be between 1 and {num_steps} (this model's steps), got {steps}")
        # --steps K is always the lossy image of K steps (K = all: a lossless file's reconstruction).
        lossless = header["mode"] == "lossless" and steps is None
        steps = num_steps if steps is None else steps
        self.check_file(header, source=source, need_residual=lossless)
        payloads = self._payloads(header, streams, source=source, steps=steps, lossless=lossless)
        decoder = Streams(len(payloads), payloads=payloads)
        count, block_size = header["count"], header["block_size"]
        pieces = []  # one block at a time, each checked before the next is decoded: memory follows real content
        start = time.perf_counter()
        blocks = range(0, count, block_size)
        for block, offset in enumerate(tqdm(blocks, desc="decompress", unit="block", disable=not progress)):
            batch = min(block_size, count - offset)
            try:
                pixels, checks, _ = self._block(
                    decoder, batch, class_prior=header["class_prior"], lossless=lossless, steps=steps
                )
            except UndecodableStream:
                # Every stream's bytes passed their CRC-32 in `unpack`: a stream that cannot be decoded was read
                # with other probabilities than it was written with, the checksum failure's cause one step earlier.
                failure = "cannot be decoded"
                raise ArgenError(mismatch_message(header, source, block, self.device, failure=failure)) from None
            stored = header["checks"][block]
            if checks != stored[: steps if self.progressive else 1] + (stored[-1:] if lossless else []):
                failure = "fails its checksum"
                raise ArgenError(mismatch_message(header, source, block, self.device, failure=failure))
            pieces.append(pixels.cpu())
        return DecompressionResult(
            pixels=torch.cat(pieces), names=decode_names(header["names"], count), steps=steps, num_steps=num_steps,
            lossless=lossless, seconds=time.perf_counter() - start, header=header,
        )  # fmt: skip
