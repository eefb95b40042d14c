"""The generator as an entropy model: `argen compress` / `argen decompress` (``.argz`` files).

One file per concern, in the order the bytes flow:

- `probabilities`: model outputs → integer weights that are equal on every machine, and the range coder's streams;
- `schedule`: the order's inference schedule run with teacher forcing (encode) or from the coder (decode);
- `codec`: `Codec`, that schedule with files, settings and checks: `Codec.compress`, `Codec.decompress`;
- `residual`: the small p(x | x̂) model that makes lossless mode exact;
- `container`: the ``.argz`` bytes, the header's schema and limits, names and checks;
- `environment`: what the file records about the machine, and the message when another one computes otherwise;
- `inputs` / `files`: image files in, PNG files out (`compress`, `decompress`);
- `reports`: what a compression measured and what a decompression returns.
"""

from argen.codec.codec import Codec
from argen.codec.container import CLASS_PRIORS, FORMAT_VERSION, MAGIC, SUFFIX, pack, unpack
from argen.codec.environment import ARITHMETIC
from argen.codec.files import compress, decompress, read_header, write_pngs
from argen.codec.inputs import read_inputs
from argen.codec.probabilities import quantize_log_probs
from argen.codec.reports import CompressionReport, DecompressionResult

__all__ = [
    "ARITHMETIC",
    "CLASS_PRIORS",
    "FORMAT_VERSION",
    "MAGIC",
    "SUFFIX",
    "Codec",
    "CompressionReport",
    "DecompressionResult",
    "compress",
    "decompress",
    "pack",
    "quantize_log_probs",
    "read_header",
    "read_inputs",
    "unpack",
    "write_pngs",
]
