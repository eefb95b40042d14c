"""The ``.argz`` container: its bytes, the header's schema, the limits every field is held to, and the checks.

File format (version 1), everything little-endian:
``MAGIC (9 bytes) | format version (u16) | header length (u32) | header: zlib-compressed JSON | CRC-32 of the header
(u32) | streams``. The header holds the model's fingerprints (tokenizer, generator and, lossless, residual
releases), the mode, the order, the class prior, the block size, the image count, shape and names, every stream's
length and CRC-32, and per block the CRC-32 of its decoded content. The streams are laid out step-major (all
images' step 0, then step 1, ..., then the residual), so a truncated file still decodes its complete first steps.

A file is hostile until checked: `unpack` inflates the header with a size limit, validates every field against a
schema (types, ranges, lengths, names that are plain relative paths and distinct) and only then hands it on, so
a small file cannot make the decoder allocate much (each block is decoded and checked before the next one).

No cryptographic digest. The file carries CRC-32s of the header and of every stream (accidental damage: a flipped
bit or a cut is caught with probability 1 − 2^-32 per piece) and, end to end, a CRC-32 of every block's *decoded*
content, computed from the original images, so a wrong decode is refused rather than written. A SHA-256 of header
and payload inside the file would add nothing against tampering: whoever edits the file recomputes it as easily
as a CRC. Authenticity needs a key (a signature or a digest kept apart from the file, e.g. ``sha256sum``), which
is the user's business and needs no format change. What protects the reader from a hostile file is the schema
and the limits below, not a digest; so the format stays at version 1 and every existing file still decodes.
"""

from __future__ import annotations

import json
import math
import struct
import zlib

import numpy as np
from torch import Tensor

from argen.errors import ArgenError

JsonValue = str | int | float | bool | None | list["JsonValue"] | dict[str, "JsonValue"]
Header = dict[str, JsonValue]

MAGIC = b"\x89ARGZ\r\n\x1a\n"  # PNG-style: a high byte and line endings catch text-mode transfers
FORMAT_VERSION = 1
SUFFIX = ".argz"
MODES = ("lossy", "lossless")
CLASS_PRIORS = ("uniform", "null")
_FIXED = struct.Struct("<HI")  # format version, header length
_CRC = struct.Struct("<I")

# Limits (issue 26): what a file may declare, checked before anything is allocated from it.
MAX_HEADER_BYTES = 16 * 2**20  # the inflated JSON: whatever it holds, json.loads of it stays well below 1 GB
MAX_IMAGES = 10_000_000
MAX_BLOCK_SIZE = 1024  # images per model call: a decoder allocates one block's activations and tables at a time
MAX_STREAMS = 4096
MAX_CHANNELS, MAX_SIDE = 4, 16384
MAX_TEXT = 4096  # directories, fingerprints, versions
MAX_NAME_CHARS = 1024
MAX_NAME_PART_BYTES = 250  # a file-name component is ≤ 255 bytes on common file systems, less ".png"
MAX_NAME_DIGITS = 18
MAX_STREAM_BYTES = 2**40
_U32 = 2**32 - 1


class DamagedFile(ValueError):
    """A header field that the writer never produces; `unpack` turns it into a one-line ArgenError."""


# ---------------------------------------------------------------------------------------------------------------
# Names: plain relative paths, distinct by construction


def name_problem(name: object) -> str | None:
    """Why ``name`` cannot be an output file name (``NAME.png`` under the output folder), or None."""
    if not isinstance(name, str) or not name:
        return "is not a non-empty string"
    if len(name) > MAX_NAME_CHARS:
        return f"is longer than {MAX_NAME_CHARS} characters"
    if "\x00" in name or name.startswith("/"):
        return "is not a plain relative path"
    for part in name.split("/"):  # "a//b", "./a" and "a/." would land on another name's file
        if part in ("", ".", ".."):
            return "is not a plain relative path"
        if len(part.encode("utf-8", "surrogatepass")) > MAX_NAME_PART_BYTES:
            return f"has a part longer than {MAX_NAME_PART_BYTES} bytes"
    return None


def unique_names(names: list[str]) -> list[str]:
    """``names`` with repeats renamed ``NAME-2``, ``NAME-3``…, never onto a name already present (e.g. a real
    ``x-2`` beside two ``x``): every first occurrence keeps its name, and the result is distinct by construction."""
    taken = set(names)
    seen: set[str] = set()
    unique = []
    for name in names:
        if name in seen:
            number = 2
            while f"{name}-{number}" in taken:
                number += 1
            name = f"{name}-{number}"
            taken.add(name)
        seen.add(name)
        unique.append(name)
    return unique


def encode_names(names: list[str]) -> list[str] | dict[str, JsonValue]:
    """Names as a list, or as {prefix, start, digits} when they are ``prefix + zero-padded counter`` (an npz)."""
    if names:
        stem = names[0].rstrip("0123456789")
        digits = len(names[0]) - len(stem)
        if 0 < digits <= MAX_NAME_DIGITS:
            start = int(names[0][len(stem) :])
            expected = [f"{stem}{start + index:0{digits}d}" for index in range(len(names))]
            if expected == names:
                return {"prefix": stem, "start": start, "digits": digits}
    return list(names)


def decode_names(names: list[str] | dict[str, JsonValue], count: int) -> list[str]:
    """The ``count`` names of a checked header (see `encode_names`)."""
    if isinstance(names, dict):
        return [f"{names['prefix']}{names['start'] + index:0{names['digits']}d}" for index in range(count)]
    return list(names)


# ---------------------------------------------------------------------------------------------------------------
# The schema


def _shown(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _integer(value: object, field: str, low: int, high: int) -> int:
    if type(value) is not int or not low <= value <= high:  # type(): a JSON true is no count
        raise DamagedFile(f"{field} is {_shown(value)}, not an integer from {low} to {high}")
    return value


def _text(value: object, field: str, choices: tuple[str, ...] | None = None) -> str:
    if not isinstance(value, str) or len(value) > MAX_TEXT or (choices is not None and value not in choices):
        wanted = f"one of {', '.join(choices)}" if choices else f"a text of at most {MAX_TEXT} characters"
        raise DamagedFile(f"{field} is {_shown(value)}, not {wanted}")
    return value


def _mapping(value: object, field: str) -> dict[str, JsonValue]:
    if not isinstance(value, dict):
        raise DamagedFile(f"{field} is {_shown(value)}, not a mapping")
    return value


def _array(value: object, field: str, length: int) -> list[JsonValue]:
    if not isinstance(value, list) or len(value) != length:
        size = len(value) if isinstance(value, list) else _shown(value)
        raise DamagedFile(f"{field} has {size} entries where the header's counts give {length}")
    return value


def _check_model(header: Header, lossless: bool) -> None:
    model = _mapping(header.get("model"), "model")
    _text(model.get("directory"), "model.directory")
    fingerprints = _mapping(model.get("fingerprints"), "model.fingerprints")
    for part in ("tokenizer", "generator", *(("residual",) if lossless else ())):
        _text(fingerprints.get(part), f"model.fingerprints.{part}")
    if lossless:
        _text(model.get("residual_directory"), "model.residual_directory")
    environment = _mapping(header.get("environment", {}), "environment")  # absent in files of arithmetic 1
    for key in ("torch", "device", "capability", "products"):
        if key in environment:
            _text(environment[key], f"environment.{key}")
    if "arithmetic" in environment:
        _integer(environment["arithmetic"], "environment.arithmetic", 1, 10**6)


def _check_names(names: object, count: int) -> None:
    if isinstance(names, dict):
        prefix = _text(names.get("prefix"), "names.prefix")
        start = _integer(names.get("start"), "names.start", 0, 10**MAX_NAME_DIGITS - 1)
        digits = _integer(names.get("digits"), "names.digits", 1, MAX_NAME_DIGITS)
        longest = len(prefix) + max(digits, len(str(start + count - 1)))
        problem = name_problem(prefix + "0")
        if longest > MAX_NAME_CHARS:
            problem = f"makes names longer than {MAX_NAME_CHARS} characters"
        if problem:
            raise DamagedFile(f"names.prefix {_shown(prefix)} {problem}")
        return  # prefix + distinct counters: distinct names
    listed = _array(names, "names", count)
    for name in listed:
        problem = name_problem(name)
        if problem:
            raise DamagedFile(f"the name {_shown(name)} {problem}")
    if len(set(listed)) != len(listed):
        raise DamagedFile("names repeat, so fewer files would be written than images decoded")


def check_header(header: object) -> Header:
    """``header`` if it is one that `pack` writes (every field typed, bounded and consistent), else `DamagedFile`."""
    header = _mapping(header, "the header")
    lossless = _text(header.get("mode"), "mode", MODES) == "lossless"
    _text(header.get("order"), "order")
    _text(header.get("class_prior"), "class_prior", (*CLASS_PRIORS, "none"))
    _check_model(header, lossless)
    block_size = _integer(header.get("block_size"), "block_size", 1, MAX_BLOCK_SIZE)
    count = _integer(header.get("count"), "count", 1, MAX_IMAGES)
    shape = _array(header.get("shape"), "shape", 3)
    _integer(shape[0], "shape[0] (channels)", 1, MAX_CHANNELS)
    _integer(shape[1], "shape[1] (height)", 1, MAX_SIDE)
    _integer(shape[2], "shape[2] (width)", 1, MAX_SIDE)
    token_streams = _integer(header.get("token_streams"), "token_streams", 1, MAX_STREAMS)
    per_block = token_streams + lossless  # one content check per step (or for all tokens) and the residual's
    for block, checks in enumerate(_array(header.get("checks"), "checks", math.ceil(count / block_size))):
        for check in _array(checks, f"checks[{block}]", per_block):
            _integer(check, f"checks[{block}]", 0, _U32)
    for index, stream in enumerate(_array(header.get("streams"), "streams", per_block)):
        stream = _mapping(stream, f"streams[{index}]")
        size = _integer(stream.get("bytes"), f"streams[{index}].bytes", 0, MAX_STREAM_BYTES)
        if size % 4:
            raise DamagedFile(f"streams[{index}].bytes is {size}, not a whole number of 32-bit words")
        _integer(stream.get("crc32"), f"streams[{index}].crc32", 0, _U32)
    _check_names(header.get("names"), count)
    return header


# ---------------------------------------------------------------------------------------------------------------
# Bytes


def content_checksum(*arrays: Tensor | np.ndarray | None) -> int:
    """CRC-32 of arrays as int32 (ids, labels) or uint8 (pixels) bytes, in order: a block's content check."""
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


def pack(header: Header, streams: list[bytes]) -> bytes:
    """The bytes of an ``.argz`` file: magic, version, the compressed JSON header, its CRC, the streams."""
    document = dict(header, streams=[{"bytes": len(data), "crc32": zlib.crc32(data)} for data in streams])
    text = json.dumps(document, separators=(",", ":")).encode()
    if len(text) > MAX_HEADER_BYTES:
        raise ArgenError(
            f"the file header would take {len(text) / 2**20:.1f} MiB, more than the {MAX_HEADER_BYTES // 2**20} MiB "
            "a reader accepts: compress fewer images (or shorter names) per file"
        )
    encoded = zlib.compress(text, 9)
    return b"".join(
        [MAGIC, _FIXED.pack(FORMAT_VERSION, len(encoded)), encoded, _CRC.pack(zlib.crc32(encoded)), *streams]
    )


def _inflate(encoded: bytes) -> bytes:
    """The header's JSON, refused (not allocated) beyond MAX_HEADER_BYTES: a small zlib bomb stays small."""
    inflater = zlib.decompressobj()
    try:
        text = inflater.decompress(encoded, MAX_HEADER_BYTES + 1)
    except zlib.error:
        raise DamagedFile("cannot be inflated") from None
    if len(text) > MAX_HEADER_BYTES or inflater.unconsumed_tail:
        raise DamagedFile(f"inflates to more than {MAX_HEADER_BYTES // 2**20} MiB")
    if not inflater.eof or inflater.unused_data:
        raise DamagedFile("is not one whole zlib stream")
    return text


def _parse(encoded: bytes) -> Header:
    try:
        return check_header(json.loads(_inflate(encoded)))
    except RecursionError:  # JSON nested thousands deep
        raise DamagedFile("is nested too deeply") from None
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise DamagedFile("is not JSON") from None
    except ValueError as error:  # DamagedFile, or an integer too long for Python to read
        if isinstance(error, DamagedFile):
            raise
        raise DamagedFile("holds a number that cannot be read") from None


def unpack(data: bytes, *, source: str = "the file") -> tuple[Header, list[bytes | None]]:
    """Check and split an ``.argz`` file: (header, streams), a stream None where the file was cut short.

    Anything that is not a whole, intact argen file is an `ArgenError` of one line; a file whose bytes are
    intact but which `pack` could not have written says that it is damaged and why.
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
        raise ArgenError(f"{source} is damaged: its header fails its checksum")
    try:
        header = _parse(encoded)
    except DamagedFile as error:
        raise ArgenError(f"{source} is damaged: its header {error}") from None
    offset = start + length + _CRC.size
    streams: list[bytes | None] = []
    for index, stream in enumerate(header["streams"]):
        size = stream["bytes"]
        piece = data[offset : offset + size]
        if len(piece) < size:
            streams.append(None)
        elif zlib.crc32(piece) != stream["crc32"]:
            raise ArgenError(f"{source} is damaged: stream {index} ({stream_name(header, index)}) fails its checksum")
        else:
            streams.append(piece)
        offset += size
    if offset < len(data):
        raise ArgenError(f"{source} is damaged: it has {len(data) - offset} unexpected bytes after its last stream")
    return header, streams


def stream_name(header: Header, index: int) -> str:
    token_streams = header["token_streams"]
    if index >= token_streams:
        return "residual"
    return f"step {index}" if token_streams > 1 else "tokens"
