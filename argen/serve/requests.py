"""The schema layer of `argen serve`: every request is read and checked here before a model sees it.

Each field is checked for its type, range and length; numbers must be finite; labels are class indices (ASCII digits)
or class names; form fields must be text parts and pictures file parts; JSON bodies are bounded in bytes and
nesting; bodies must arrive within `BODY_TIMEOUT_SECONDS`; pictures go through the one image reader
(`argen.data.images`), which checks their pixel count from the header before decoding, at most `DECODE_SLOTS` at a
time. Every refusal is a `BadRequest`: a 4xx status and one line saying what to change, echoing at most
`SHOWN_CHARACTERS` of what was sent.
"""

from __future__ import annotations

import asyncio
import json
import math
import secrets
import threading

import numpy as np
import torch
from starlette.datastructures import UploadFile
from starlette.requests import Request

from argen.data.images import ImageTooLarge, UnreadableImage, image_size, read_image
from argen.errors import ArgenError
from argen.serve.models import MAX_CFG_SCALE, MAX_TEMPERATURE, MIN_TEMPERATURE, ServedModel

MAX_JSON_BYTES = 64 * 1024
MAX_UPLOAD_BYTES = 4 * 1024 * 1024  # a whole multipart request: image + mask + fields
MAX_IMAGE_PIXELS = 4096 * 4096  # checked from the header, before a single pixel is decoded
MAX_IMAGES = 16  # per request
MAX_SEED = 2**63 - 1
MAX_TEXT = 200  # characters of a text field (a class name, a number)
SHOWN_CHARACTERS = 40
BODY_TIMEOUT_SECONDS = 30.0  # a client that stalls half-way through its body is cut off after this
# Two pictures decode at once at most: 16 concurrent uploads declaring 4096×4096 RGBA would otherwise hold ~4 GB.
DECODE_SLOTS = 2
DECODE_WAIT_SECONDS = 60.0
DECODES = threading.BoundedSemaphore(DECODE_SLOTS)
FILE_FIELDS = ("image", "mask")
GENERATE_FIELDS = ("model", "label", "cfg_scale", "seed", "temperature", "top_k", "top_p", "num", "stream")
EDIT_FIELDS = (
    "model", "label", "image", "mask", "invert", "keep_steps", "paste_back", "cfg_scale", "seed", "temperature",
    "top_k", "top_p", "num",
)  # fmt: skip
UPLOAD_FIELDS = ("model", "image")


class BadRequest(Exception):
    """A request the server refuses: ``status`` (4xx) and a one-line ``message`` saying what to change."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.message = " ".join(str(message).split())  # one line, whatever the source said
        self.status = status


def shown(value: object, *, as_json: bool = False) -> str:
    """``value`` as a refusal quotes it (repr for text, JSON with ``as_json`` or for other values), cut to
    `SHOWN_CHARACTERS`: a refusal never echoes a whole body."""
    try:
        text = repr(value) if isinstance(value, str) and not as_json else json.dumps(value)
    except (TypeError, ValueError):
        text = type(value).__name__
    return text if len(text) <= SHOWN_CHARACTERS else text[: SHOWN_CHARACTERS - 1] + "…"


def parse_number(name: str, value: object, *, low: float, high: float, integer: bool = False) -> int | float:
    """A JSON number or a form field's text → int/float in [low, high], else BadRequest naming the field."""
    kind = "an integer" if integer else "a number"
    if isinstance(value, str):
        try:
            if len(value) > MAX_TEXT:
                raise ValueError
            value = int(value) if integer else float(value)
        except ValueError:
            raise BadRequest(f"{name} must be {kind}, got {shown(value)}") from None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise BadRequest(f"{name} must be {kind}, got {shown(value)}")
    if integer and isinstance(value, float):
        if not value.is_integer():
            raise BadRequest(f"{name} must be {kind}, got {shown(value)}")
        value = int(value)
    if isinstance(value, float) and not math.isfinite(value):
        raise BadRequest(f"{name} must be a finite number, got {value}")
    if not low <= value <= high:
        raise BadRequest(f"{name} must be between {low} and {high}, got {shown(value)}")
    return int(value) if integer else float(value)


def parse_flag(name: str, value: object) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "1", "on", "yes", "false", "0", "off", "no"):
        return value.lower() in ("true", "1", "on", "yes")
    raise BadRequest(f"{name} must be true or false, got {shown(value)}")


def present(fields: dict, name: str) -> bool:
    """Whether a field was given: a form's empty text box counts as not given."""
    return fields.get(name) not in (None, "")


def check_fields(fields: dict, known: tuple[str, ...]) -> None:
    unknown = [name for name in fields if name not in known]
    if unknown:
        raise BadRequest(f"unknown field {shown(unknown[0])}: the fields are {', '.join(known)}")


def check_parts(fields: dict) -> None:
    """Form fields must be text parts, pictures file parts (``-F cfg_scale=@file`` sends a file)."""
    for name, value in fields.items():
        if name in FILE_FIELDS and not isinstance(value, bytes) and value != "":
            raise BadRequest(f"send {name} as a file part (a picture), not as text")
        if name not in FILE_FIELDS and isinstance(value, bytes):
            raise BadRequest(f"send {shown(name)} as a text field, not as a file part")


def choose_model(models: dict[str, ServedModel], fields: dict) -> ServedModel:
    if not present(fields, "model"):
        return next(iter(models.values()))
    name = fields["model"]
    if not isinstance(name, str) or name not in models:
        served = ", ".join(models)
        raise BadRequest(f"unknown model {shown(name, as_json=True)}: this server has {served} (GET /api/models)")
    return models[name]


def choose_label(model: ServedModel, fields: dict) -> int | None:
    """The class index of ``label`` (an index, ASCII digits, or a class name); None for an unconditional model."""
    count = model.pipeline.model.config.num_classes
    if not present(fields, "label"):
        return 0 if count > 0 else None
    if count == 0:
        raise BadRequest(f"model {model.name} is unconditional: leave label out")
    label = fields["label"]
    if isinstance(label, str):
        text = label.strip()
        if len(text) > MAX_TEXT:
            raise BadRequest(f"label must be a class index or name, got {shown(label)}")
        if text.isascii() and text.lstrip("-").isdigit():
            label = int(text)  # "²" and other non-ASCII digits are names, which int() would choke on
        elif label in model.classes:
            return model.classes.index(label)
        else:
            raise BadRequest(f"unknown class {shown(label)}; model {model.name} knows: {', '.join(model.classes)}")
    if isinstance(label, bool) or not isinstance(label, int):
        raise BadRequest(f"label must be a class index or name, got {shown(label)}")
    if not 0 <= label < count:
        raise BadRequest(f"class {shown(label)} is out of range: model {model.name} has {count} classes")
    return label


def sampling_options(model: ServedModel, fields: dict) -> dict:
    """cfg_scale, temperature, top_k, top_p, seed and num, checked against ``model``; a missing seed is drawn, a
    missing sampling setting is the model's recommended one (MODEL/sampling.json, else the library default)."""
    recommended = model.pipeline.sampling_settings()

    def given(name: str) -> object:
        return fields[name] if present(fields, name) else recommended[name]

    codebook = model.pipeline.tokenizer.codebook_size
    options = {
        "cfg_scale": parse_number("cfg_scale", given("cfg_scale"), low=0.0, high=MAX_CFG_SCALE),
        "temperature": parse_number("temperature", given("temperature"), low=0.0, high=MAX_TEMPERATURE),
        "top_k": parse_number("top_k", given("top_k"), low=0, high=codebook, integer=True),
        "top_p": parse_number("top_p", given("top_p"), low=0.0, high=1.0),
        "num": parse_number(
            "num", fields["num"] if present(fields, "num") else 1, low=1, high=MAX_IMAGES, integer=True
        ),
    }
    if 0 < options["temperature"] < MIN_TEMPERATURE:
        raise BadRequest(f"temperature must be 0 (greedy) or at least {MIN_TEMPERATURE}, got {options['temperature']}")
    if options["top_p"] == 0.0:
        raise BadRequest("top_p must be above 0 (1 keeps every id), got 0.0")
    if options["cfg_scale"] != 1.0 and model.pipeline.model.config.num_classes == 0:
        raise BadRequest(f"model {model.name} is unconditional: guidance needs classes, use cfg_scale 1")
    seed = parse_number("seed", fields["seed"], low=0, high=MAX_SEED, integer=True) if present(fields, "seed") else None
    options["seed"] = secrets.randbelow(2**31) if seed is None else seed
    return options


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refused with 413 as soon as it is known to exceed ``limit`` bytes, 408 when it stalls."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and len(declared) < 20 and int(declared) > limit:
        raise BadRequest(f"the request is {int(declared)} bytes; the limit is {limit} bytes", 413)
    body = bytearray()
    try:
        async with asyncio.timeout(BODY_TIMEOUT_SECONDS):
            async for chunk in request.stream():
                body += chunk
                if len(body) > limit:
                    raise BadRequest(f"the request is over the limit of {limit} bytes", 413)
    except TimeoutError:
        seconds = f"{BODY_TIMEOUT_SECONDS:.0f}"
        raise BadRequest(f"the request body did not arrive within {seconds} s: send it again", 408) from None
    return bytes(body)


async def read_json(request: Request) -> dict:
    body = await read_body(request, MAX_JSON_BYTES)
    try:
        fields = json.loads(body)
    # ValueError covers JSONDecodeError and integers of more than 4300 digits; RecursionError deep nesting.
    except (UnicodeDecodeError, ValueError) as error:
        raise BadRequest(f"the request body is not valid JSON ({str(error)[:80]}): send one JSON object") from None
    except RecursionError:
        raise BadRequest("the request body nests too deeply: send one flat JSON object") from None
    if not isinstance(fields, dict):
        raise BadRequest(f"the request body must be a JSON object, got {type(fields).__name__}")
    return fields


async def read_form(request: Request, limit: int) -> dict:
    """A multipart/form-data request as {name: text, or bytes for file parts}, its whole size capped at ``limit``."""
    content_type = request.headers.get("content-type", "")
    if not content_type.startswith("multipart/form-data"):
        raise BadRequest(f"send multipart/form-data (an image file and fields), got {shown(content_type)}", 415)
    body = await read_body(request, limit)

    async def receive() -> dict:
        return {"type": "http.request", "body": body, "more_body": False}

    form = await Request(request.scope, receive).form(max_files=4, max_fields=32, max_part_size=limit)
    fields = {}
    for name, value in form.multi_items():
        fields[name] = await value.read() if isinstance(value, UploadFile) else value
    await form.close()
    check_parts(fields)
    return fields


def decode_picture(data: bytes, name: str, *, channels: int, size: int | None) -> np.ndarray:
    """Uploaded bytes → uint8 (H, W, C) by the one image reader; 415 for what is not an image, 413 for too many
    pixels, 503 when the decoding slots stay taken."""
    if not DECODES.acquire(timeout=DECODE_WAIT_SECONDS):
        raise BadRequest("the server is busy decoding other pictures: try again in a moment", 503)
    try:
        return read_image(data, channels=channels, size=size, max_pixels=MAX_IMAGE_PIXELS, name=name)
    except ImageTooLarge as error:
        raise BadRequest(str(error), 413) from None
    except UnreadableImage as error:
        raise BadRequest(str(error), 415) from None
    finally:
        DECODES.release()


def picture_size(data: bytes, name: str) -> tuple[int, int]:
    """(W, H) from the header; 415 when there is no image header, 413 when PIL already finds it a bomb."""
    try:
        return image_size(data, name=name)
    except ImageTooLarge as error:
        raise BadRequest(str(error), 413) from None
    except ArgenError as error:
        raise BadRequest(str(error), 415) from None


def prepared_image(model: ServedModel, fields: dict) -> tuple[torch.Tensor, tuple[int, int]]:
    """The uploaded picture at the model's size and channels, uint8 (1, C, H, W), and the size it was sent at."""
    data = fields.get("image")
    if not isinstance(data, bytes):
        raise BadRequest("send the picture as a file field named image")
    config = model.pipeline.tokenizer.config
    size = picture_size(data, "the upload")
    pixels = decode_picture(data, "the upload", channels=config.channels, size=config.image_size)
    return torch.from_numpy(pixels.transpose(2, 0, 1).copy())[None], size


def prepared_mask(model: ServedModel, fields: dict, image_size: tuple[int, int]) -> torch.Tensor:
    """The mask (white = regenerate; transparent counts as white, like every transparent pixel) at the model's size:
    bool (1, H, W), all True when none was sent. It must have the size of the image it was drawn on."""
    size = model.pipeline.tokenizer.config.image_size
    data = fields.get("mask")
    if data in (None, b"", ""):
        return torch.ones(1, size, size, dtype=torch.bool)
    mask_size = picture_size(data, "the mask")
    if mask_size != image_size:
        (mask_width, mask_height), (width, height) = mask_size, image_size
        raise BadRequest(
            f"the mask is {mask_width}×{mask_height} pixels but the image is {width}×{height}: "
            "draw the mask at the image's size"
        )
    grey = decode_picture(data, "the mask", channels=1, size=size)[..., 0]
    return torch.from_numpy(grey >= 128)[None]  # (1, H, W)
