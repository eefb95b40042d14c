"""The generator as an entropy model: `argen compress` / `argen decompress` (``.argz`` files).

A generator gives a probability to every token, step by step, in a known order; an entropy coder turns those
probabilities into a code whose length is the model's negative log-likelihood. Encoding runs the order's inference
schedule with teacher forcing (one model call per step, batched over the images, KV cache as in sampling);
decoding replays the very same schedule, sampling nothing and taking each step's tokens from the coder.

- **Lossy** (default): the token stream alone; the decoded image is the tokenizer's reconstruction of the ids. For
  next-scale and next-frequency models the stream is **progressive**: it is stored step by step, so a prefix
  decodes the first K scales or bands (``decompress(steps=K)``), the later grids left empty (the composed latent
  of the first K grids is decoded, as `Order.preview` does).
- **Lossless**: tokens plus the pixels given the reconstruction, coded with a small learned p(x | x̂)
  (`argen.residual`), so that the round trip is exact in every pixel value.
- **Class**: guidance is off. A class-conditional model's class is coded too: ``class_prior="uniform"`` (default)
  codes it with a uniform prior (log2(classes) bits) and the encoder picks, per image, the class under which the
  tokens cost least; ``"null"`` uses the model's null class and codes nothing. On the shipped Fashion-MNIST models
  the uniform prior saves 5-26 bits per image over the null class (measured on 256 test images; see
  docs/compression.md).

Coder: constriction (Bamler, "Understanding Entropy Coding With Asymmetric Numeral Systems (ANS): a Statistician's
Perspective", arXiv 2201.01741), here its range coder. Why it: a maintained Rust library with wheels for every
major platform and no dependency beyond numpy; exact integer coding with a documented, deterministic fixed-point
quantization of the float probabilities it is given (24-bit precision, every symbol kept encodable); vectorised
numpy calls that code a whole step's tokens with one table per token, which is what an autoregressive model needs;
FIFO order, so a step is coded as soon as its probabilities exist and decoding reads the stream front to back.
(torchac needs a C++ build at run time and 16-bit CDFs; craystack is research code in pure numpy; pure-Python
arithmetic coders are orders of magnitude slower.)

Determinism. Encoder and decoder must see bit-identical probabilities, or the decoder drifts into garbage. So:

1. both run the same cached step schedule with the same batch composition: images go in fixed blocks of
   ``block_size`` (recorded in the header), and a step's model call sees only the tokens of earlier steps, which
   are equal on both sides;
2. probabilities are quantized by `quantize_log_probs` with elementwise IEEE operations and an integer table (no
   exp, no reduction whose order could vary): log2-probabilities rounded to 1/16 bit, turned into integer weights
   whose sums are exact in float64, which constriction then maps to its fixed point (one rounding per symbol);
3. each block's decoded tokens and pixels are checked against checksums the encoder stored, so a mismatch is a
   one-line error, never wrong images.

What could still break it: the model's float outputs themselves must match. They do across thread counts and
batch sizes on the CPU tested (AVX-512, torch 2.13; tests check thread counts and a fresh process), but another
torch version, another CPU vector ISA (torch picks AVX2 / AVX-512 kernels at run time), another BLAS, or another
device (a file made on a GPU decodes on that kind of GPU only) may round differently. The header records the torch
version, device and CPU capability so that such an error names the difference.

File format (version 1), everything little-endian:
``MAGIC (9 bytes) | format version (u16) | header length (u32) | header: zlib-compressed JSON | CRC-32 of the header
(u32) | streams``. The header holds the model's fingerprints (tokenizer, generator and, lossless, residual
releases), the mode, the order, the class prior, the block size, the image count, shape and names, every stream's
length and CRC-32, and per block the CRC-32 of its decoded content. The streams are laid out step-major (all
images' step 0, then step 1, ..., then the residual), so a truncated file still decodes its complete first steps.
"""

from __future__ import annotations

import json
import math
import struct
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from argen.errors import ArgenError

MAGIC = b"\x89ARGZ\r\n\x1a\n"  # PNG-style: a high byte and line endings catch text-mode transfers
FORMAT_VERSION = 1
SUFFIX = ".argz"
LOG2_STEPS = 16  # log2-probabilities are rounded to 1/16 bit
WEIGHT_BITS = 24  # dynamic range of the weights: the least likely symbol ≥ 2^-24 of the most likely one
CODER_PRECISION = 24  # constriction's default categorical precision (u32 words)
CLASS_PRIORS = ("uniform", "null")
DEFAULT_BLOCK_SIZE = 256
_FIXED = struct.Struct("<HI")  # format version, header length
_CRC = struct.Struct("<I")


# ---------------------------------------------------------------------------------------------------------------
# Probability quantization


def _weight_table() -> Tensor:
    """(WEIGHT_BITS·LOG2_STEPS + 1,) float64: entry j = ⌊2^(WEIGHT_BITS − j/LOG2_STEPS)⌋, in exact integers.

    ⌊N^(1/16)⌋ is four nested integer square roots (⌊√⌊√x⌋⌋ = ⌊x^(1/4)⌋), so the table is the same on every
    machine, with no libm involved.
    """
    top = WEIGHT_BITS * LOG2_STEPS
    values = []
    for j in range(top + 1):
        root = 2 ** (top - j)
        for _ in range(4):
            root = math.isqrt(root)
        values.append(root)
    return torch.tensor(values, dtype=torch.float64)  # ≤ 2^24: exact


WEIGHT_TABLE = _weight_table()


def quantize_log_probs(log_probs: Tensor) -> np.ndarray:
    """(N, V) logits or natural-log probabilities → (N, V) integer weights (float64) for the coder.

    w = ⌊2^(24 − j/16)⌋ with j = round(16 · log2(max / p)) clamped to 24 bits, i.e. the probability relative to the
    row's most likely symbol, rounded to 1/16 bit. Only subtraction, multiplication by a constant, rounding and a
    table lookup: each is exactly rounded IEEE arithmetic, so equal inputs give equal weights everywhere. Rounding
    to 1/16 bit costs at most ~0.0005 bits per symbol (the relative error of a weight is below 2^(1/32) − 1).
    """
    top = log_probs.max(dim=-1, keepdim=True).values
    scaled = (top - log_probs).mul_(LOG2_STEPS / math.log(2))  # ≥ 0; +inf for impossible symbols, NaN for rows
    if bool(torch.isnan(scaled).any()):  # with a NaN or nothing possible (-inf - -inf)
        raise ArgenError("the model produced NaN or all-impossible probabilities; its weights are broken")
    index = scaled.clamp_(max=WEIGHT_BITS * LOG2_STEPS).round_().long()
    # float64 for the coder: constriction sums the weights in the float type it is given, and in float64 sums of
    # integers this small (< 2^53) are exact, while float32 sums of 2^24-sized weights round and can leave a
    # symbol with no probability.
    return WEIGHT_TABLE[index.cpu()].numpy()


def ideal_bits(weights: np.ndarray, symbols: np.ndarray) -> float:
    """Code length in bits of ``symbols`` (N,) under the normalised ``weights`` (N, V)."""
    chosen = weights[np.arange(len(symbols)), symbols]
    return float(np.sum(np.log2(weights.sum(axis=1, dtype=np.float64)) - np.log2(chosen, dtype=np.float64)))


# ---------------------------------------------------------------------------------------------------------------
# Streams


class _UndecodableStream(ArgenError):
    """The entropy coder could not decode a stream whose bytes passed their checksum: the probabilities differ."""


class _Streams:
    """One constriction range coder per stream; encoding or decoding, with the same ``code`` call on both sides."""

    def __init__(self, count: int, *, payloads: list[np.ndarray] | None = None):
        try:
            import constriction
        except ImportError:
            raise ArgenError(
                "compression needs the constriction package: pip install 'argen[compress]' (or constriction)"
            ) from None

        self.encoding = payloads is None
        self._family = constriction.stream.model.Categorical(perfect=False)
        if self.encoding:
            self._coders = [constriction.stream.queue.RangeEncoder() for _ in range(count)]
        else:
            self._coders = [constriction.stream.queue.RangeDecoder(payload) for payload in payloads]
        self.ideal = [0.0] * count

    def code(self, stream: int, weights: np.ndarray, symbols: Tensor | None = None) -> np.ndarray:
        """Encode ``symbols`` (N,) or decode N symbols with the (N, V) ``weights``; returns the symbols, int32."""
        coder = self._coders[stream]
        if self.encoding:
            values = symbols.detach().cpu().numpy().astype(np.int32).reshape(-1)
            if len(values) and (values.min() < 0 or values.max() >= weights.shape[1]):
                raise ArgenError(f"a symbol lies outside its alphabet of {weights.shape[1]}")
            coder.encode(values, self._family, weights)
        else:
            try:
                values = np.asarray(coder.decode(self._family, weights), dtype=np.int32)
            except Exception as error:  # constriction raises plain exceptions on streams that run dry
                raise _UndecodableStream(
                    f"the compressed stream {stream} ended early or is damaged ({error})"
                ) from None
        self.ideal[stream] += ideal_bits(weights, values)
        return values

    def payloads(self) -> list[bytes]:
        return [coder.get_compressed().astype("<u4").tobytes() for coder in self._coders]


def _crc(*arrays: Tensor | np.ndarray | None) -> int:
    """CRC-32 of arrays as int32 (ids, labels) or uint8 (pixels) bytes, in order."""
    value = 0
    for array in arrays:
        if array is None:
            continue
        if isinstance(array, Tensor):
            array = array.detach().cpu().numpy()
        if array.dtype != np.uint8:
            array = array.astype("<i4")
        value = zlib.crc32(np.ascontiguousarray(array).tobytes(), value)
    return value


# ---------------------------------------------------------------------------------------------------------------
# Container


def pack(header: dict[str, Any], streams: list[bytes]) -> bytes:
    """The bytes of an ``.argz`` file: magic, version, the compressed JSON header, its CRC, the streams."""
    document = dict(header, streams=[{"bytes": len(data), "crc32": zlib.crc32(data)} for data in streams])
    encoded = zlib.compress(json.dumps(document, separators=(",", ":")).encode(), 9)
    return b"".join(
        [MAGIC, _FIXED.pack(FORMAT_VERSION, len(encoded)), encoded, _CRC.pack(zlib.crc32(encoded)), *streams]
    )


def unpack(data: bytes, *, source: str = "the file") -> tuple[dict[str, Any], list[bytes | None]]:
    """Check and split an ``.argz`` file: (header, streams), a stream None where the file was cut short.

    Anything that is not a whole, intact argen file is an `ArgenError` of one line.
    """
    if not data.startswith(MAGIC):
        if MAGIC.startswith(data[: len(MAGIC)]) and len(data) < len(MAGIC):
            raise ArgenError(f"{source} is truncated: it ends inside the argen magic bytes")
        raise ArgenError(f"{source} is not an argen compressed file (.argz): it does not start with the magic bytes")
    start = len(MAGIC) + _FIXED.size
    if len(data) < start:
        raise ArgenError(f"{source} is truncated: it ends inside the file header")
    version, length = _FIXED.unpack_from(data, len(MAGIC))
    if version != FORMAT_VERSION:
        raise ArgenError(
            f"{source} has format version {version}, this argen reads version {FORMAT_VERSION}: "
            "use the argen version that wrote it"
        )
    if len(data) < start + length + _CRC.size:
        raise ArgenError(f"{source} is truncated: it ends inside the file header ({len(data)} bytes)")
    encoded = data[start : start + length]
    (stored,) = _CRC.unpack_from(data, start + length)
    if zlib.crc32(encoded) != stored:
        raise ArgenError(f"{source} is corrupted: its header fails the checksum")
    try:
        header = json.loads(zlib.decompress(encoded))
        layout = [(int(entry["bytes"]), int(entry["crc32"])) for entry in header["streams"]]
        _check_header(header)
    except (ValueError, KeyError, TypeError, zlib.error):
        raise ArgenError(f"{source} is corrupted: its header cannot be read") from None
    offset = start + length + _CRC.size
    streams: list[bytes | None] = []
    for index, (size, checksum) in enumerate(layout):
        piece = data[offset : offset + size]
        if len(piece) < size:
            streams.append(None)
        elif zlib.crc32(piece) != checksum:
            raise ArgenError(
                f"{source} is corrupted: stream {index} ({_stream_name(header, index)}) fails its checksum"
            )
        else:
            streams.append(piece)
        offset += size
    if offset < len(data):
        raise ArgenError(f"{source} has {len(data) - offset} unexpected bytes after its last stream: it is corrupted")
    return header, streams


def _check_header(header: dict[str, Any]) -> None:
    """Raise (caught by `unpack`) unless the header has the fields and types decoding relies on."""
    for key, kind in (("mode", str), ("order", str), ("block_size", int), ("count", int), ("shape", list)):
        if not isinstance(header[key], kind):
            raise TypeError(key)
    if header["mode"] not in ("lossy", "lossless") or header["block_size"] < 1 or header["count"] < 0:
        raise ValueError("header")
    if len(header["checks"]) != math.ceil(header["count"] / header["block_size"]):
        raise ValueError("checks")
    fingerprints = header["model"]["fingerprints"]
    str(header["model"]["directory"]), str(fingerprints["tokenizer"]), str(fingerprints["generator"])
    int(header["token_streams"]), str(header["class_prior"])
    if len(header["streams"]) != header["token_streams"] + (header["mode"] == "lossless"):
        raise ValueError("streams")
    names = header["names"]
    if isinstance(names, dict):
        int(names["start"]), int(names["digits"]), str(names["prefix"])
    elif not (isinstance(names, list) and len(names) == header["count"] and all(isinstance(n, str) for n in names)):
        raise ValueError("names")


def _stream_name(header: dict[str, Any], index: int) -> str:
    token_streams = int(header.get("token_streams", 1))
    if index >= token_streams:
        return "residual"
    return f"step {index}" if token_streams > 1 else "tokens"


def encode_names(names: list[str]) -> list[str] | dict[str, Any]:
    """Names as a list, or as {prefix, start, digits} when they are ``prefix + zero-padded counter`` (an npz)."""
    if names:
        stem = names[0].rstrip("0123456789")
        digits = len(names[0]) - len(stem)
        if digits:
            start = int(names[0][len(stem) :])
            expected = [f"{stem}{start + index:0{digits}d}" for index in range(len(names))]
            if expected == names:
                return {"prefix": stem, "start": start, "digits": digits}
    return list(names)


def decode_names(names: list[str] | dict[str, Any], count: int) -> list[str]:
    if isinstance(names, dict):
        return [f"{names['prefix']}{names['start'] + index:0{names['digits']}d}" for index in range(count)]
    return list(names)


# ---------------------------------------------------------------------------------------------------------------
# Results


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
    """pixels: uint8 (N, C, H, W); names: one per image; steps: how many steps of the schedule were decoded."""

    pixels: Tensor
    names: list[str]
    steps: int
    num_steps: int
    lossless: bool
    seconds: float
    header: dict[str, Any] = field(repr=False, default_factory=dict)

    @property
    def images(self):
        from argen.pipeline import to_pil

        return to_pil(self.pixels)

    @property
    def images_per_second(self) -> float:
        return len(self.pixels) / max(self.seconds, 1e-9)


# ---------------------------------------------------------------------------------------------------------------
# The codec


# The version of argen's own model arithmetic, raised whenever a change moves the models' floats (2: AdaLN terms and
# gated residuals as one addcmul, guidance before the output layers, channels-last tokenizer convolutions on a CPU;
# 3: large CPU products through oneDNN, `argen.onednn`). Files carry it, so that one that fails its checksum after
# such a change says so; files without it are from 1.
ARITHMETIC = 3


def _environment(device: torch.device) -> dict[str, Any]:
    from argen import onednn

    capability = torch.backends.cpu.get_cpu_capability() if device.type == "cpu" else torch.cuda.get_device_name(device)
    # Which library computes the transformer's large CPU products (files of arithmetic < 3 only knew torch's).
    products = "onednn" if device.type == "cpu" and onednn.enabled else "torch"
    return {
        "torch": torch.__version__, "device": device.type, "capability": capability, "arithmetic": ARITHMETIC,
        "products": products,
    }  # fmt: skip


class Codec:
    """A model directory as an entropy model: `compress` uint8 images to ``.argz`` bytes and `decompress` them.

    ``residual`` (a directory) is the p(x | x̂) model for lossless mode; by default ``DIR/residual`` when it exists.
    """

    def __init__(self, directory: str | Path, *, residual: str | Path | None = None, device: str = "cpu"):
        from argen.checkpoint import release_fingerprint
        from argen.orders.scale import CoarseToFineOrder
        from argen.pipeline import Pipeline
        from argen.residual import RESIDUAL_DIRECTORY

        self.directory = Path(directory)
        self.pipeline = Pipeline.from_pretrained(self.directory, device=device)
        self.device = torch.device(device)
        self.tokenizer, self.model, self.order = self.pipeline.tokenizer, self.pipeline.model, self.pipeline.order
        self.layout = self.order.layout(self.tokenizer.grid_shapes)
        self.progressive = isinstance(self.order, CoarseToFineOrder)
        self.fingerprints = {
            "tokenizer": release_fingerprint(self.directory / "tokenizer"),
            "generator": release_fingerprint(self.directory / "generator"),
        }
        config = self.tokenizer.config
        self.shape = (int(config.channels), int(config.image_size), int(config.image_size))
        self.num_classes = int(self.model.config.num_classes)
        self.residual_directory = Path(residual) if residual is not None else self.directory / RESIDUAL_DIRECTORY
        self._residual = None

    @property
    def token_streams(self) -> int:
        return self.layout.num_steps if self.progressive else 1

    def residual(self):
        """The residual model (loaded once), checked to belong to this tokenizer."""
        if self._residual is None:
            from argen.checkpoint import release_fingerprint
            from argen.residual import load_residual

            if not (self.residual_directory / "config.json").is_file():
                raise ArgenError(
                    f"lossless mode needs a residual model and {self.residual_directory} has none: train one with "
                    f"`argen train-residual --model {self.directory}` or pass --residual DIR"
                )
            model, document = load_residual(self.residual_directory)
            trained_for = document.get("extra", {}).get("tokenizer_fingerprint")
            if trained_for != self.fingerprints["tokenizer"]:
                raise ArgenError(
                    f"the residual model {self.residual_directory} was trained for another tokenizer (fingerprint "
                    f"{trained_for}, this model's is {self.fingerprints['tokenizer']}): retrain it with "
                    f"`argen train-residual --model {self.directory}`"
                )
            if (model.config.channels, model.config.image_size) != self.shape[:2]:
                raise ArgenError(f"the residual model {self.residual_directory} is for another image shape")
            self._residual = model.to(self.device).eval()
            self.fingerprints["residual"] = release_fingerprint(self.residual_directory)
        return self._residual

    # -- the one schedule both sides run -------------------------------------------------------------------------

    @torch.no_grad()
    def _block(
        self,
        streams: _Streams,
        batch: int,
        *,
        class_prior: str,
        lossless: bool,
        steps: int,
        images: Tensor | None = None,
        bits: dict[str, float] | None = None,
        classes: Tensor | None = None,
        chosen: list[Tensor] | None = None,
    ) -> tuple[Tensor, list[int]]:
        """Code (``images`` given) or decode one block of ``batch`` images; returns (uint8 pixels, content CRCs).

        Every model call and every probability is computed the same way on both sides; only where the symbols
        come from differs (the images' tokens, or the coder).
        """
        import torch.nn.functional as F

        from argen.data import float_to_images, images_to_float

        encoding = images is not None
        layout, order, tokenizer, device = self.layout, self.order, self.tokenizer, self.device
        truth_ids = truth_targets = labels_true = None
        if encoding:
            images = images.to(device)
            truth_ids = tokenizer.encode(images_to_float(images))
            truth_targets = order.targets(truth_ids)  # (B, L)
        labels = None
        if self.num_classes:
            if class_prior == "uniform":
                if encoding:
                    labels_true = classes.to(device) if classes is not None else self._cheapest_classes(truth_ids)
                    if chosen is not None:
                        chosen.append(labels_true.cpu())
                weights = quantize_log_probs(torch.zeros(batch, self.num_classes))
                labels = torch.from_numpy(streams.code(0, weights, labels_true)).long().to(device)
                if bits is not None:
                    bits["class"] += batch * math.log2(self.num_classes)
            else:
                labels = torch.full((batch,), self.num_classes, dtype=torch.long, device=device)
        ids = [torch.zeros(batch, h, w, dtype=torch.long, device=device) for h, w in layout.grid_shapes]
        cache = self.model.new_cache(batch, capacity=layout.length)
        checks: list[int] = []
        for step in range(steps):
            inputs = order.step_inputs(step, ids, tokenizer)
            outputs = self.model(inputs, labels, layout=layout, index=layout.inputs_of_step[step], cache=cache)
            outputs = outputs[:, -len(layout.inputs_of_step[step]) :]  # this step's positions
            logits = order.logits(outputs, layout, step)  # (B, T_s, V)
            flat = logits.reshape(-1, logits.shape[-1])
            true = truth_targets[:, layout.targets_of_step[step].to(device)].reshape(-1) if encoding else None
            stream = step if self.progressive else 0
            symbols = streams.code(stream, quantize_log_probs(flat), true)
            if bits is not None:
                chosen = F.log_softmax(flat.double(), dim=-1).gather(1, true.view(-1, 1))
                bits["tokens"] += float(-chosen.sum()) / math.log(2)
            ids = order.scatter(ids, step, torch.from_numpy(symbols).long().view(batch, -1).to(device))
            if self.progressive:
                checks.append(_crc(labels if step == 0 else None, ids[step]))
        if not self.progressive:
            checks.append(_crc(labels, *ids))
        if steps < layout.num_steps:
            return float_to_images(order.preview(ids, steps, tokenizer)), checks
        reconstruction = float_to_images(tokenizer.decode(ids))
        if not lossless:
            return reconstruction, checks
        residual = self.residual()
        known = images.clone() if encoding else torch.zeros_like(reconstruction)
        stream = self.token_streams
        flat_known = known.view(batch, known.shape[1], -1)  # (B, C, H·W), a view: writes land in ``known``
        for stage in range(residual.config.stages):
            where = (residual.stages_of == stage).flatten().nonzero().flatten()
            true = flat_known[:, :, where] if encoding else None  # (B, C, P)
            if bits is None:
                log_pmf = residual.stage_log_pmf(known, reconstruction, stage)  # (B, C, P, 256)
            else:
                log_pmf, chosen = residual.stage_log_pmf(known, reconstruction, stage, values=true)
                bits["residual"] += float(-chosen.double().sum()) / math.log(2)
            symbols = streams.code(stream, quantize_log_probs(log_pmf.reshape(-1, 256)), true)
            flat_known[:, :, where] = torch.from_numpy(symbols).to(torch.uint8).view(batch, known.shape[1], -1)
        checks.append(_crc(known))
        return known, checks

    @torch.no_grad()
    def _cheapest_classes(self, ids: list[Tensor]) -> Tensor:
        """(B,) the class under which each image's tokens cost least (one teacher-forced pass per class).

        Only the encoder runs this: any class decodes, so these floats need not match anything."""
        import torch.nn.functional as F

        inputs, targets = self.order.train_inputs(ids, self.tokenizer)
        costs = []
        for label in range(self.num_classes):
            labels = torch.full((targets.shape[0],), label, dtype=torch.long, device=self.device)
            logits = self.order.logits(self.model(inputs, labels, layout=self.layout), self.layout)
            # on a contiguous (B·L, V) block: cross-entropy over a transposed (B, V, L) view reads V-strided memory
            flat = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), reduction="none")
            costs.append(flat.view(targets.shape).sum(1))
        return torch.stack(costs, dim=1).argmin(dim=1)

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

    def compress(
        self,
        images: Tensor,
        *,
        names: list[str] | None = None,
        lossless: bool = False,
        class_prior: str = "uniform",
        block_size: int = DEFAULT_BLOCK_SIZE,
        progress: bool = True,
        extra: dict[str, Any] | None = None,
        classes: Tensor | None = None,
    ) -> tuple[bytes, CompressionReport]:
        """uint8 (N, C, H, W) images → (the ``.argz`` bytes, a report). ``names`` default to 00000, 00001, ...

        With the uniform class prior each image is coded under the class that makes its tokens cheapest, found by one
        teacher-forced pass per class; ``classes`` ((N,) ids, e.g. an earlier report's ``classes`` or the true
        labels) codes them under those instead, skipping the search. Any class decodes, so the file stays exact."""
        from tqdm.auto import tqdm

        self.check_images(images)
        if class_prior not in CLASS_PRIORS:
            raise ArgenError(f"unknown class prior {class_prior!r}: choose one of {', '.join(CLASS_PRIORS)}")
        if block_size < 1:
            raise ArgenError(f"block size must be at least 1, got {block_size}")
        count = len(images)
        if classes is not None:
            if not self.num_classes or class_prior != "uniform":
                raise ArgenError("classes= needs a class-conditional model and the uniform class prior")
            classes = torch.as_tensor(classes).long()
            if classes.shape != (count,) or bool(((classes < 0) | (classes >= self.num_classes)).any()):
                raise ArgenError(f"classes must be {count} class ids in 0..{self.num_classes - 1}, one per image")
        names = list(names) if names is not None else [f"{index:05d}" for index in range(count)]
        if len(names) != count:
            raise ArgenError(f"got {len(names)} names for {count} images")
        if lossless:
            self.residual()
        streams = _Streams(self.token_streams + (1 if lossless else 0))
        bits = {"class": 0.0, "tokens": 0.0, "residual": 0.0}
        checks = []
        chosen: list[Tensor] = []
        start = time.perf_counter()
        for offset in tqdm(range(0, count, block_size), desc="compress", unit="block", disable=not progress):
            block = images[offset : offset + block_size]
            _, block_checks = self._block(
                streams, len(block), class_prior=class_prior, lossless=lossless, steps=self.layout.num_steps,
                images=block, bits=bits, chosen=chosen,
                classes=None if classes is None else classes[offset : offset + block_size],
            )  # fmt: skip
            checks.append(block_checks)
        payloads = streams.payloads()
        seconds = time.perf_counter() - start
        model: dict[str, Any] = {"directory": str(self.directory.resolve()), "fingerprints": dict(self.fingerprints)}
        if lossless:
            model["residual_directory"] = str(self.residual_directory.resolve())
        # The quantization constants (LOG2_STEPS, WEIGHT_BITS, CODER_PRECISION) belong to format version 1.
        header = {
            "mode": "lossless" if lossless else "lossy",
            "order": self.order.name,
            "model": model,
            "class_prior": class_prior if self.num_classes else "none",
            "block_size": block_size,
            "count": count,
            "shape": list(self.shape),
            "names": encode_names(names),
            "token_streams": self.token_streams,
            "environment": _environment(self.device),
            "checks": checks,
            **(extra or {}),
        }
        data = pack(header, payloads)
        report = CompressionReport(
            images=count,
            dims=int(np.prod(self.shape)),
            file_bytes=len(data),
            header_bytes=len(data) - sum(len(payload) for payload in payloads),
            stream_bytes=[len(payload) for payload in payloads],
            model_bits=bits if lossless else {key: value for key, value in bits.items() if key != "residual"},
            ideal_bits=sum(streams.ideal),
            seconds=seconds,
            lossless=lossless,
            classes=torch.cat(chosen) if chosen else None,
        )
        return data, report

    def check_file(self, header: dict[str, Any], *, source: str, need_residual: bool) -> None:
        """Refuse, naming both, a file that another model (or residual model) made."""
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
        if need_residual:
            self.residual()
            if recorded.get("residual") != self.fingerprints["residual"]:
                raise ArgenError(
                    f"{source} was compressed with the residual model {header['model']['residual_directory']} "
                    f"({recorded.get('residual')}), not with {self.residual_directory} "
                    f"({self.fingerprints['residual']}): pass --residual with the one that made it"
                )

    def _mismatch(self, header: dict[str, Any], source: str, block: int, *, failure: str = "fails its checksum") -> str:
        recorded = {"arithmetic": 1, "products": "torch", **header.get("environment", {})}
        here = _environment(self.device)
        names = {"arithmetic": "argen arithmetic", "products": "CPU products by"}
        differences = [
            f"{names.get(key, key)} {recorded.get(key)} there, {here[key]} here"
            for key in here
            if recorded.get(key) != here[key]
        ]
        # Every stream and the header passed their CRC-32s, so the bytes are what was written: what differs is how
        # the probabilities are computed, named here where the file recorded it.
        why = (
            "; ".join(differences)
            if differences
            else ("same torch, device, CPU kind and argen arithmetic: another build of argen or its libraries")
        )
        where = "where it was made"
        if recorded["arithmetic"] != here["arithmetic"]:
            where += f" with an argen of arithmetic {recorded['arithmetic']} (the argen version that wrote it)"
        elif recorded["products"] != here["products"]:
            where += f", or here with ARGEN_ONEDNN={1 if recorded['products'] == 'onednn' else 0} in the environment"
        return (
            f"{source}: block {block} {failure}: this machine computes other probabilities than "
            f"the one that compressed it ({why}); decompress it {where}"
        )

    def decompress(
        self, data: bytes, *, steps: int | None = None, progress: bool = True, source: str = "the file"
    ) -> DecompressionResult:
        """``.argz`` bytes → the images. ``steps`` (next-scale / next-frequency models) decodes only the first K
        steps of the progressive stream: the coarse, lossy images of K scales or bands (of a lossless file too)."""
        from tqdm.auto import tqdm

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
        if tuple(header["shape"]) != self.shape or header["token_streams"] != self.token_streams:
            raise ArgenError(f"{source} does not fit this model's image shape or schedule: it is corrupted")
        needed = (steps if self.progressive else 1) + (1 if lossless else 0)
        wanted = [*range(needed - 1 if lossless else needed), *([len(streams) - 1] if lossless else [])]
        missing = [index for index in wanted if streams[index] is None]
        if missing:
            complete = next((index for index, stream in enumerate(streams) if stream is None), len(streams))
            hint = ""
            if self.progressive and complete > 0:
                shown = min(complete, self.token_streams)
                hint = f"; its first {shown} step(s) are complete and --steps {shown} decodes them"
            raise ArgenError(f"{source} is truncated: {_stream_name(header, missing[0])} is cut short{hint}")
        payloads = [np.frombuffer(streams[index], dtype="<u4").astype(np.uint32) for index in wanted]
        decoder = _Streams(needed, payloads=payloads)
        count, block_size = header["count"], header["block_size"]
        pieces = []
        start = time.perf_counter()
        blocks = range(0, count, block_size)
        for block_index, offset in enumerate(tqdm(blocks, desc="decompress", unit="block", disable=not progress)):
            batch = min(block_size, count - offset)
            try:
                pixels, checks = self._block(
                    decoder, batch, class_prior=header["class_prior"], lossless=lossless, steps=steps
                )
            except _UndecodableStream:
                # Every stream's bytes passed their CRC-32 in `unpack`: a stream that cannot be decoded was read
                # with other probabilities than it was written with, the checksum failure's cause one step earlier.
                raise ArgenError(self._mismatch(header, source, block_index, failure="cannot be decoded")) from None
            stored = header["checks"][block_index]
            expected = stored[: steps if self.progressive else 1] + (stored[-1:] if lossless else [])
            if checks != expected:
                raise ArgenError(self._mismatch(header, source, block_index))
            pieces.append(pixels.cpu())
        seconds = time.perf_counter() - start
        return DecompressionResult(
            pixels=torch.cat(pieces) if pieces else torch.zeros(0, *self.shape, dtype=torch.uint8),
            names=decode_names(header["names"], count),
            steps=steps,
            num_steps=num_steps,
            lossless=lossless,
            seconds=seconds,
            header=header,
        )


# ---------------------------------------------------------------------------------------------------------------
# Files and the two top-level functions


def read_inputs(
    inputs: list[str | Path], *, shape: tuple[int, int, int], resize: bool = False
) -> tuple[Tensor, list[str], int]:
    """Image files, folders of them (recursive) and npz files of uint8 images → (uint8 (N, C, H, W), names, how
    many were resized or converted).

    Pixels are taken exactly as stored (no EXIF rotation, no colour management), so lossless means the file's own
    pixel values. An image whose size, channel count, bit depth or transparency the model cannot take is refused
    unless ``resize``; then it is converted, composited on white and resized (shorter side, centre crop) as
    `argen.data` does for training. Names: the file's path without suffix (relative to a folder argument), or
    ``STEM_00000``… for an npz; repeated names get ``-2``, ``-3``….
    """
    from argen.data import load_images_npz
    from argen.data.folder import list_image_files
    from argen.data.pixels import resize_tensor_images

    channels, size, _ = shape
    arrays: list[Tensor] = []
    names: list[str] = []
    converted = 0
    for entry in inputs:
        path = Path(entry)
        if path.is_dir():
            files = [(path / relative, relative.with_suffix("").as_posix()) for relative in list_image_files(path)]
            if not files:
                raise ArgenError(f"{path} holds no image files (PNG/JPEG/WebP/BMP)")
        elif path.suffix.lower() == ".npz":
            images, _ = load_images_npz(path)
            if tuple(images.shape[1:]) != shape:
                if not resize:
                    raise ArgenError(
                        f"{path} holds {images.shape[3]}×{images.shape[2]} images with {images.shape[1]} channel(s) "
                        f"and the model takes {size}×{size} with {channels}: pass --resize to resize them"
                    )
                images = resize_tensor_images(images, image_size=size, channels=channels)
                converted += len(images)
            digits = max(5, len(str(len(images) - 1)))
            arrays.extend(images)
            names.extend(f"{path.stem}_{index:0{digits}d}" for index in range(len(images)))
            continue
        elif path.is_file():
            files = [(path, path.stem)]
        else:
            raise ArgenError(f"{path} does not exist: give image files, folders of images or npz files")
        for file, name in files:
            pixels, changed = read_image_file(file, shape=shape, resize=resize)
            arrays.append(pixels)
            names.append(name)
            converted += changed
    if not arrays:
        raise ArgenError("no images to compress")
    seen: dict[str, int] = {}
    unique = []
    for name in names:
        seen[name] = seen.get(name, 0) + 1
        unique.append(name if seen[name] == 1 else f"{name}-{seen[name]}")
    return torch.stack(arrays), unique, converted


def read_image_file(path: Path, *, shape: tuple[int, int, int], resize: bool) -> tuple[Tensor, bool]:
    """One image file → (uint8 (C, H, W), whether it was converted); see `read_inputs`."""
    from PIL import Image

    from argen.data.dataset import one_line
    from argen.data.folder import ALPHA_MODES, decode_image

    channels, size, _ = shape
    try:
        with Image.open(path) as image:
            image.load()
            problem = None
            if image.mode == "1":
                image = image.convert("L")  # bilevel → 0/255, exact
            elif image.mode == "P":
                image = image.convert("RGBA" if "transparency" in image.info else "RGB")
            if image.mode in ALPHA_MODES:
                alpha = np.asarray(image.getchannel("A"))
                if alpha.min() < 255:
                    problem = "has transparency"
                else:
                    image = image.convert("RGB" if image.mode.startswith(("RGB", "P")) else "L")
            if problem is None and image.mode not in ("L", "RGB"):
                problem = f"is a {image.mode} image"
            if problem is None and image.mode == "RGB" and channels == 1:
                array = np.asarray(image)
                if (array == array[..., :1]).all():  # grey stored as RGB: the grey values are the pixels
                    image = image.convert("L")
            native = {"L": 1, "RGB": 3}.get(image.mode)
            if problem is None and native != channels:
                problem = f"has {native} channel(s)"
            if problem is None and image.size != (size, size):
                problem = f"is {image.size[0]}×{image.size[1]}"
            if problem is None:
                array = np.array(image)  # a copy: PIL's buffer is read-only
                return torch.from_numpy(array[None] if array.ndim == 2 else array.transpose(2, 0, 1).copy()), False
    except (OSError, ValueError, SyntaxError) as error:
        raise ArgenError(f"cannot read {path} as an image ({one_line(error)}): fix or remove it") from None
    if not resize:
        kind = "grayscale" if channels == 1 else "RGB"
        raise ArgenError(
            f"{path} {problem}, and the model takes {size}×{size} {kind} images: pass --resize to convert it "
            "(the decompressed image is then the converted one)"
        )
    pixels = decode_image(path, image_size=size, channels=channels)
    return torch.from_numpy(np.array(pixels if channels == 3 else pixels[None])), True


def safe_output_path(directory: Path, name: str, suffix: str = ".png") -> Path:
    """``directory/name.png``, refusing names that would escape ``directory`` (a damaged or hostile file)."""
    relative = Path(name)
    if relative.is_absolute() or ".." in relative.parts or not name.strip() or "\x00" in name:
        raise ArgenError(f"the file names an image {name!r} that is not a plain relative path: it is corrupted")
    return directory / (name + suffix)


def compress(
    model: str | Path,
    inputs: list[str | Path] | Tensor,
    out: str | Path | None = None,
    *,
    lossless: bool = False,
    residual: str | Path | None = None,
    names: list[str] | None = None,
    class_prior: str = "uniform",
    block_size: int = DEFAULT_BLOCK_SIZE,
    resize: bool = False,
    device: str = "cpu",
    progress: bool = True,
    classes: Tensor | None = None,
) -> tuple[bytes, CompressionReport]:
    """Compress images with the model directory ``model``: what `argen compress` does (``classes``: see
    `Codec.compress`).

    ``inputs`` are image files, folders or npz files (see `read_inputs`), or a uint8 (N, C, H, W) tensor. ``out``
    (optional) is where the ``.argz`` file is written, atomically. Returns the file's bytes and a report::

        data, report = argen.compress("checkpoints/fashion-mnist/frequency", ["shirt.png"], "shirt.argz")
        result = argen.decompress("shirt.argz", steps=3)  # the coarse image of 3 frequency bands
    """
    from argen.checkpoint import atomic_write

    codec = Codec(model, residual=residual, device=device)
    if isinstance(inputs, Tensor):
        images = inputs
    else:
        images, found, converted = read_inputs(list(inputs), shape=codec.shape, resize=resize)
        names = names if names is not None else found
        if converted and progress:
            print(f"converted or resized {converted} image(s) to {codec.shape[1]}×{codec.shape[2]} (--resize)")
    data, report = codec.compress(
        images, names=names, lossless=lossless, class_prior=class_prior, block_size=block_size, progress=progress,
        classes=classes,
    )  # fmt: skip
    if out is not None:
        atomic_write(out, lambda temporary: temporary.write_bytes(data))
    return data, report


def read_header(source: str | Path | bytes) -> dict[str, Any]:
    """The checked header of an ``.argz`` file (or its bytes)."""
    data, name = _read(source)
    return unpack(data, source=name)[0]


def _read(source: str | Path | bytes) -> tuple[bytes, str]:
    if isinstance(source, (bytes, bytearray, memoryview)):
        return bytes(source), "the data"
    path = Path(source)
    try:
        return path.read_bytes(), str(path)
    except OSError as error:
        raise ArgenError(f"cannot read {path}: {error.strerror}") from None


def decompress(
    source: str | Path | bytes,
    out: str | Path | None = None,
    *,
    model: str | Path | None = None,
    residual: str | Path | None = None,
    steps: int | None = None,
    device: str = "cpu",
    progress: bool = True,
) -> DecompressionResult:
    """Decompress an ``.argz`` file (a path or its bytes): what `argen decompress` does.

    ``model`` defaults to the model directory recorded in the file; ``steps`` decodes only the first K steps of a
    next-scale / next-frequency stream. With ``out``, every image is written there as ``NAME.png``.
    """
    data, name = _read(source)
    header, _ = unpack(data, source=name)
    directory = Path(model) if model is not None else Path(header["model"]["directory"])
    if not (directory / "generator").is_dir():
        raise ArgenError(
            f"{name} was made with the model {directory}, which is not there: pass --model with that model directory"
        )
    if residual is None and header["mode"] == "lossless" and model is None:
        residual = header["model"].get("residual_directory")
    codec = Codec(directory, residual=residual, device=device)
    result = codec.decompress(data, steps=steps, progress=progress, source=name)
    if out is not None:
        write_pngs(result, out)
    return result


def write_pngs(result: DecompressionResult, directory: str | Path) -> list[Path]:
    """Write each decoded image to ``directory/NAME.png`` (atomically); returns the paths."""
    from argen.checkpoint import atomic_write

    directory = Path(directory)
    paths = []
    for name, image in zip(result.names, result.images):
        path = safe_output_path(directory, name)
        atomic_write(path, lambda temporary, image=image: image.save(temporary, format="PNG"))
        paths.append(path)
    return paths


__all__ = [
    "CLASS_PRIORS",
    "Codec",
    "CompressionReport",
    "DecompressionResult",
    "MAGIC",
    "compress",
    "decompress",
    "quantize_log_probs",
    "read_header",
    "read_inputs",
]
