"""Probabilities → code: the deterministic quantization both sides apply, and the range coder's streams.

Coder: constriction (Bamler, "Understanding Entropy Coding With Asymmetric Numeral Systems (ANS): a Statistician's
Perspective", arXiv 2201.01741), here its range coder. Why it: a maintained Rust library with wheels for every
major platform and no dependency beyond numpy; exact integer coding with a documented, deterministic fixed-point
quantization of the float probabilities it is given (24-bit precision, every symbol kept encodable); vectorised
numpy calls that code a whole step's tokens with one table per token, which is what an autoregressive model needs;
FIFO order, so a step is coded as soon as its probabilities exist and decoding reads the stream front to back.
(torchac needs a C++ build at run time and 16-bit CDFs; craystack is research code in pure numpy; pure-Python
arithmetic coders are orders of magnitude slower.)

Encoder and decoder must see bit-identical probabilities, or the decoder drifts into garbage: `quantize_log_probs`
uses elementwise IEEE operations and an integer table (no exp, no reduction whose order could vary), log2-
probabilities rounded to 1/16 bit, turned into integer weights whose sums are exact in float64, which constriction
then maps to its fixed point (one rounding per symbol). Legend: N symbols, V alphabet size.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

from argen.errors import ArgenError, install_hint

LOG2_STEPS = 16  # log2-probabilities are rounded to 1/16 bit
WEIGHT_BITS = 24  # dynamic range of the weights: the least likely symbol ≥ 2^-24 of the most likely one
CODER_PRECISION = 24  # constriction's default categorical precision (u32 words)


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


class UndecodableStream(ArgenError):
    """The entropy coder could not decode a stream whose bytes passed their checksum: the probabilities differ."""


class Streams:
    """One constriction range coder per stream; encoding or decoding, with the same ``code`` call on both sides."""

    def __init__(self, count: int, *, payloads: list[np.ndarray] | None = None):
        try:  # an optional extra: imported here so that the rest of argen runs without it
            import constriction
        except ImportError:
            raise ArgenError(
                f"compression needs the constriction package: {install_hint('compress')} (or pip install constriction)"
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
            except Exception as error:  # constriction raises plain exceptions on streams it cannot decode
                raise UndecodableStream(f"the compressed stream {stream} cannot be decoded ({error})") from None
        self.ideal[stream] += ideal_bits(weights, values)
        return values

    def payloads(self) -> list[bytes]:
        return [coder.get_compressed().astype("<u4").tobytes() for coder in self._coders]
