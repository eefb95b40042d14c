"""The web app behind `argen serve`: Starlette routes over a few loaded pipelines, served by uvicorn.

Routes (JSON in and out unless said so; every refusal is a 4xx whose body is ``{"error": "one line"}``):

- ``GET /`` the page, ``GET /static/...`` its script and style sheet.
- ``GET /api/models`` the served models (name, order, classes, steps, image size, channels) and the request limits.
- ``POST /api/generate`` a JSON object ``{"model", "label", "cfg_scale", "seed", "temperature", "top_k", "top_p",
  "num"}`` → NDJSON (``application/x-ndjson``): one line ``{"step": s, "steps": S, "images": [...]}`` as soon as
  step s is done (the image decoded from the steps so far), then ``{"done": true, "images": [...], "seed": ...,
  "forward_passes": ..., "seconds": ...}``. With ``"stream": false`` only that last object comes back, as JSON.
- ``POST /api/upload`` multipart ``image`` (+ ``model``) → ``{"image": ...}``: the picture centre-cropped to a square
  and resized to the model's size and channels, ready to be masked and edited.
- ``POST /api/edit`` multipart ``image``, ``mask`` (white = regenerate; default: all of it), ``model``, ``label``,
  ``invert`` (outpainting: regenerate what is outside the mask), ``keep_steps`` (class editing: keep the image's
  first K steps, regenerate the rest under ``label``), ``paste_back``, ``cfg_scale``, ``seed``, ``temperature``,
  ``top_k``, ``top_p``, ``num`` → ``{"images": [...], "intermediates": [[...], ...], "seed", "forward_passes",
  "seconds"}``.

Images travel as PNG data URLs (``data:image/png;base64,...``). A missing ``seed`` draws one and returns it, so every
result can be reproduced. Models run in worker threads with one lock per pipeline: requests for different models
run at once, requests for the same model take turns (sampling toggles the transformer's eval mode, so a pipeline is
not shared between threads mid-call).
"""

from __future__ import annotations

import base64
import io
import json
import math
import queue
import secrets
import socket
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import torch
from PIL import Image, ImageOps, UnidentifiedImageError
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from argen.checkpoint import CONFIG_NAME, shipped_checkpoint
from argen.data import float_to_images
from argen.errors import ArgenError
from argen.pipeline import Pipeline, PipelineOutput, to_pil
from argen.samplers import SAMPLERS

STATIC = Path(__file__).resolve().parent / "static"
MAX_JSON_BYTES = 64 * 1024
MAX_UPLOAD_BYTES = 4 * 1024 * 1024  # a whole multipart request: image + mask + fields
MAX_IMAGE_PIXELS = 4096 * 4096  # checked from the header, before a single pixel is decoded
MAX_IMAGES = 16  # per request
MAX_SEED = 2**63 - 1
LOOPBACK = ("127.0.0.1", "localhost")
GENERATE_FIELDS = ("model", "label", "cfg_scale", "seed", "temperature", "top_k", "top_p", "num", "stream")
EDIT_FIELDS = (
    "model", "label", "image", "mask", "invert", "keep_steps", "paste_back", "cfg_scale", "seed", "temperature",
    "top_k", "top_p", "num",
)  # fmt: skip


class BadRequest(Exception):
    """A request the server refuses: ``status`` (4xx) and a one-line ``message`` saying what to change."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.message = " ".join(str(message).split())  # one line, whatever the source said
        self.status = status


@dataclass
class ServedModel:
    """One pipeline behind the API: its name in requests, where it came from, and the lock its calls take."""

    name: str
    directory: Path
    pipeline: Pipeline
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def steps(self) -> int:
        return self.pipeline.order.layout(self.pipeline.tokenizer.grid_shapes).num_steps

    @property
    def classes(self) -> list[str]:
        count = self.pipeline.model.config.num_classes
        names = list(self.pipeline.classes)
        return names if len(names) == count else [str(index) for index in range(count)]

    def describe(self) -> dict:
        config = self.pipeline.tokenizer.config
        return {
            "name": self.name,
            "order": self.pipeline.order.name,
            "directory": str(self.directory),
            "classes": self.classes,
            "steps": self.steps,
            "image_size": config.image_size,
            "channels": config.channels,
            "grid_shapes": [list(shape) for shape in self.pipeline.tokenizer.grid_shapes],
            "codebook_size": self.pipeline.tokenizer.codebook_size,
            "parameters": sum(parameter.numel() for parameter in self.pipeline.model.parameters()),
            "sampling": self.pipeline.sampling_settings(),  # the model's recommended settings (sampling.json)
        }


def default_model_directories(data: str = "fashion-mnist") -> list[Path]:
    """The shipped model directories (``checkpoints/DATA/<order>/``), found the way `argen demo` finds them."""
    root = shipped_checkpoint(data)
    if root is None:
        raise ArgenError(
            f"no shipped checkpoints for {data} (looked for checkpoints/{data}/ here and beside the package): "
            "run from a clone of the repository or pass --models DIR ..."
        )
    return model_directories([root])


def is_model_directory(path: Path) -> bool:
    return (path / "generator" / CONFIG_NAME).is_file() and (path / "tokenizer" / CONFIG_NAME).is_file()


def model_directories(paths: list[str | Path]) -> list[Path]:
    """Each path as given when it is a model directory, else the model directories directly inside it."""
    found = []
    for path in map(Path, paths):
        if is_model_directory(path):
            found.append(path)
            continue
        inside = sorted(child for child in path.iterdir() if is_model_directory(child)) if path.is_dir() else []
        if not inside:
            raise ArgenError(
                f"{path} is not a model directory (generator/ + tokenizer/, made by `argen train`) and holds none"
            )
        found.extend(inside)
    return found


def load_models(paths: list[str | Path], *, device: str = "cpu") -> dict[str, ServedModel]:
    """Load each model directory once; a model is named after its directory (``frequency``, ``frequency-2``...)."""
    models: dict[str, ServedModel] = {}
    for directory in model_directories(paths):
        name, copy = directory.resolve().name, 2
        while name in models:
            name, copy = f"{directory.resolve().name}-{copy}", copy + 1
        models[name] = ServedModel(name, directory, Pipeline.from_pretrained(directory, device=device))
    return models


# ----------------------------------------------------------------------------------------------------------------
# Reading requests


def parse_number(name: str, value, *, low: float, high: float, integer: bool = False) -> int | float:
    """A JSON number or a form field's text → int/float in [low, high], else BadRequest naming the field."""
    kind = "an integer" if integer else "a number"
    if isinstance(value, str):
        try:
            value = int(value) if integer else float(value)
        except ValueError:
            raise BadRequest(f"{name} must be {kind}, got {value!r}") from None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise BadRequest(f"{name} must be {kind}, got {json.dumps(value)}")
    if integer and isinstance(value, float):
        if not value.is_integer():
            raise BadRequest(f"{name} must be {kind}, got {value}")
        value = int(value)
    if isinstance(value, float) and not math.isfinite(value):
        raise BadRequest(f"{name} must be a finite number, got {value}")
    if not low <= value <= high:
        raise BadRequest(f"{name} must be between {low} and {high}, got {value}")
    return int(value) if integer else float(value)


def parse_flag(name: str, value) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "1", "on", "yes", "false", "0", "off", "no"):
        return value.lower() in ("true", "1", "on", "yes")
    raise BadRequest(f"{name} must be true or false, got {json.dumps(value)}")


def present(fields: dict, name: str) -> bool:
    """Whether a field was given: a form's empty text box counts as not given."""
    return fields.get(name) not in (None, "")


def choose_model(models: dict[str, ServedModel], fields: dict) -> ServedModel:
    if not present(fields, "model"):
        return next(iter(models.values()))
    name = fields["model"]
    if not isinstance(name, str) or name not in models:
        raise BadRequest(f"unknown model {json.dumps(name)}: this server has {', '.join(models)} (GET /api/models)")
    return models[name]


def choose_label(model: ServedModel, fields: dict) -> int | None:
    """The class index of ``label`` (an index or a class name); None for an unconditional model."""
    conditional = model.pipeline.model.config.num_classes > 0
    if not present(fields, "label"):
        return 0 if conditional else None
    if not conditional:
        raise BadRequest(f"model {model.name} is unconditional: leave label out")
    label = fields["label"]
    if isinstance(label, bool) or not isinstance(label, (int, str)):
        raise BadRequest(f"label must be a class index or name, got {json.dumps(label)}")
    try:
        return model.pipeline.class_index(label)
    except ArgenError as error:
        raise BadRequest(f"{error} (model {model.name})") from None


def sampling_options(model: ServedModel, fields: dict) -> dict:
    """cfg_scale, temperature, top_k, top_p, seed and num, checked against ``model``; a missing seed is drawn, a
    missing sampling setting is the model's recommended one (MODEL/sampling.json, else the library default)."""
    recommended = model.pipeline.sampling_settings()
    options = {
        "cfg_scale": parse_number("cfg_scale", fields.get("cfg_scale", recommended["cfg_scale"]), low=0.0, high=20.0),
        "temperature": parse_number(
            "temperature", fields.get("temperature", recommended["temperature"]), low=0.0, high=10.0
        ),
        "top_k": parse_number(
            "top_k",
            fields.get("top_k", recommended["top_k"]),
            low=0,
            high=model.pipeline.tokenizer.codebook_size,
            integer=True,
        ),
        "top_p": parse_number("top_p", fields.get("top_p", recommended["top_p"]), low=0.0, high=1.0),
        "num": parse_number("num", fields.get("num", 1), low=1, high=MAX_IMAGES, integer=True),
    }
    if options["top_p"] == 0.0:
        raise BadRequest("top_p must be above 0 (1 keeps every id), got 0.0")
    if options["cfg_scale"] != 1.0 and model.pipeline.model.config.num_classes == 0:
        raise BadRequest(f"model {model.name} is unconditional: guidance needs classes, use cfg_scale 1")
    seed = fields.get("seed")
    options["seed"] = (
        parse_number("seed", seed, low=0, high=MAX_SEED, integer=True) if present(fields, "seed") else None
    )
    if options["seed"] is None:
        options["seed"] = secrets.randbelow(2**31)
    return options


def check_fields(fields: dict, known: tuple[str, ...]) -> None:
    unknown = [name for name in fields if name not in known]
    if unknown:
        raise BadRequest(f"unknown field {unknown[0]!r}: the fields are {', '.join(known)}")


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refused with 413 as soon as it is known to exceed ``limit`` bytes."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise BadRequest(f"the request is {int(declared)} bytes; the limit is {limit} bytes", 413)
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise BadRequest(f"the request is over the limit of {limit} bytes", 413)
    return bytes(body)


async def read_json(request: Request) -> dict:
    body = await read_body(request, MAX_JSON_BYTES)
    try:
        fields = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise BadRequest(f"the request body is not valid JSON ({error}): send one JSON object") from None
    if not isinstance(fields, dict):
        raise BadRequest(f"the request body must be a JSON object, got {type(fields).__name__}")
    return fields


async def read_form(request: Request, limit: int) -> dict:
    """A multipart/form-data request as {name: text or bytes (files)}, its whole size capped at ``limit``."""
    content_type = request.headers.get("content-type", "")
    if not content_type.startswith("multipart/form-data"):
        raise BadRequest(f"send multipart/form-data (an image file and fields), got {content_type or 'no type'!r}", 415)
    body = await read_body(request, limit)

    async def receive() -> dict:
        return {"type": "http.request", "body": body, "more_body": False}

    form = await Request(request.scope, receive).form(max_files=4, max_fields=32, max_part_size=limit)
    fields = {}
    for name, value in form.multi_items():
        fields[name] = await value.read() if isinstance(value, UploadFile) else value
    await form.close()
    return fields


def open_image(data: bytes, name: str) -> Image.Image:
    """Uploaded bytes → a decoded PIL image; 415 for what is not an image, 413 for too many pixels."""
    try:
        image = Image.open(io.BytesIO(data))
    except (UnidentifiedImageError, OSError, ValueError):
        raise BadRequest(f"{name} cannot be read as an image: send a PNG, JPEG, WebP, BMP or GIF", 415) from None
    width, height = image.size
    if width * height > MAX_IMAGE_PIXELS:
        raise BadRequest(
            f"{name} is {width}×{height} pixels; the limit is {MAX_IMAGE_PIXELS} pixels: scale it down first", 413
        )
    try:
        image.load()
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError):
        raise BadRequest(f"{name} is truncated or corrupt: upload it again or save it anew", 415) from None
    return image


def fit_image(image: Image.Image, *, size: int, channels: int) -> Image.Image:
    """Any picture → ``size``×``size`` in the model's mode ("L" or "RGB"): transparent parts become black (the
    Fashion-MNIST background), then a centre square crop and a resize."""
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        image = image.convert("RGBA")
        background = Image.new("RGBA", image.size, (0, 0, 0, 255))
        image = Image.alpha_composite(background, image)
    image = image.convert("L" if channels == 1 else "RGB")
    if image.size != (size, size):
        image = ImageOps.fit(image, (size, size), Image.LANCZOS)
    return image


def pil_to_tensor(image: Image.Image) -> torch.Tensor:
    """PIL "L"/"RGB" → uint8 (1, C, H, W)."""
    array = torch.frombuffer(bytearray(image.tobytes()), dtype=torch.uint8)
    channels = len(image.getbands())
    return array.view(image.height, image.width, channels).permute(2, 0, 1).unsqueeze(0).contiguous()


def data_url(image: Image.Image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def data_urls(pixels: torch.Tensor) -> list[str]:
    """uint8 (B, C, H, W) → one PNG data URL per image."""
    return [data_url(image) for image in to_pil(pixels)]


# ----------------------------------------------------------------------------------------------------------------
# Running the models


class Cancelled(Exception):
    """The client went away: stop sampling at the next step."""


def generation_events(model: ServedModel, label: int | None, options: dict) -> Iterator[dict]:
    """Sample in a worker thread and yield ``{"step", "steps", "images"}`` after each step, then the final event.

    The step loop is the public sampler API (`argen.samplers.SAMPLERS`, whose per-step callback this streams), seeded
    the way `Pipeline.__call__` seeds it: the last images equal ``pipeline(labels, seed=seed, ...)``'s.
    """
    pipeline, steps = model.pipeline, model.steps
    events: queue.Queue = queue.Queue()
    cancelled = threading.Event()
    labels = None if label is None else torch.full((options["num"],), label, dtype=torch.long)

    def after_step(step: int, ids: list[torch.Tensor]) -> None:
        if cancelled.is_set():
            raise Cancelled
        pixels = float_to_images(pipeline.order.preview(ids, step + 1, pipeline.tokenizer))
        events.put({"step": step + 1, "steps": steps, "images": data_urls(pixels)})

    def work() -> None:
        try:
            started = time.perf_counter()
            with model.lock, torch.no_grad():
                generator = torch.Generator(device=pipeline.device)
                generator.manual_seed(options["seed"])
                result = SAMPLERS["ar"](
                    pipeline.model, pipeline.order, pipeline.tokenizer, labels=labels,
                    batch_size=None if labels is not None else options["num"], cfg_scale=options["cfg_scale"],
                    temperature=options["temperature"], top_k=options["top_k"], top_p=options["top_p"],
                    generator=generator, callback=after_step,
                )  # fmt: skip
                pixels = float_to_images(pipeline.tokenizer.decode(result.ids))
            events.put(
                {
                    "done": True, "model": model.name, "label": label, "seed": options["seed"],
                    "images": data_urls(pixels), "forward_passes": result.forward_passes,
                    "seconds": round(time.perf_counter() - started, 4),
                }
            )  # fmt: skip
        except Cancelled:
            pass
        except ArgenError as error:
            events.put({"error": " ".join(str(error).split())})
        except Exception as error:  # a bug: the stream says so in one line and the server goes on
            events.put({"error": f"{type(error).__name__}: {' '.join(str(error).split())}"})
        finally:
            events.put(None)

    threading.Thread(target=work, name=f"argen-serve-{model.name}", daemon=True).start()
    try:
        while (event := events.get()) is not None:
            yield event
    finally:
        cancelled.set()  # the response was closed early (client gone): the worker stops at its next step


def run_edit(
    pipeline: Pipeline, images: torch.Tensor, masks: torch.Tensor, labels: list[int] | None, **options
) -> PipelineOutput:
    """The one place the app calls `Pipeline.edit`: images uint8 (B, C, H, W), masks bool (B, H, W) with True =
    regenerate, one label per image (None for unconditional models)."""
    edit = getattr(pipeline, "edit", None)
    if edit is None:
        raise BadRequest("this argen has no Pipeline.edit: editing needs a newer argen (one with `argen edit`)", 501)
    return edit(images, masks, labels, **options)


# ----------------------------------------------------------------------------------------------------------------
# Routes


def prepared_image(model: ServedModel, fields: dict) -> tuple[Image.Image, tuple[int, int]]:
    """The uploaded picture at the model's size and mode, and the size it was sent at."""
    data = fields.get("image")
    if not isinstance(data, bytes):
        raise BadRequest("send the picture as a file field named image")
    config = model.pipeline.tokenizer.config
    source = open_image(data, "the upload")
    return fit_image(source, size=config.image_size, channels=config.channels), source.size


def prepared_mask(model: ServedModel, fields: dict, image_size: tuple[int, int]) -> torch.Tensor:
    """The mask (white = regenerate; transparent counts as black) at the model's size: bool (1, H, W), all True when
    none was sent. It must have the size of the image it was drawn on."""
    size = model.pipeline.tokenizer.config.image_size
    if fields.get("mask") in (None, b"", ""):
        return torch.ones(1, size, size, dtype=torch.bool)
    if not isinstance(fields["mask"], bytes):
        raise BadRequest("send the mask as a file field named mask (a PNG, white = regenerate)")
    mask = open_image(fields["mask"], "the mask")
    if mask.size != image_size:
        (mask_width, mask_height), (width, height) = mask.size, image_size
        raise BadRequest(
            f"the mask is {mask_width}×{mask_height} pixels but the image is {width}×{height}: "
            "draw the mask at the image's size"
        )
    return pil_to_tensor(fit_image(mask, size=size, channels=1))[:, 0] >= 128  # (1, H, W)


class Routes:
    """The endpoints over one set of models; `create_app` mounts them."""

    def __init__(self, models: dict[str, ServedModel], *, max_upload_bytes: int):
        self.models = models
        self.max_upload_bytes = max_upload_bytes

    async def page(self, request: Request) -> Response:
        return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})

    async def list_models(self, request: Request) -> Response:
        limits = {
            "max_upload_bytes": self.max_upload_bytes, "max_image_pixels": MAX_IMAGE_PIXELS,
            "max_images": MAX_IMAGES, "max_seed": MAX_SEED,
        }  # fmt: skip
        return JSONResponse({"models": [model.describe() for model in self.models.values()], "limits": limits})

    async def generate(self, request: Request) -> Response:
        fields = await read_json(request)
        check_fields(fields, GENERATE_FIELDS)
        model = choose_model(self.models, fields)
        label = choose_label(model, fields)
        options = sampling_options(model, fields)
        if parse_flag("stream", fields.get("stream", True)):
            events = generation_events(model, label, options)

            async def lines() -> AsyncIterator[str]:
                try:
                    while (event := await run_in_threadpool(next, events, None)) is not None:
                        yield json.dumps(event) + "\n"
                        # uvicorn drops what is sent to a closed connection without a word: ask, and stop sampling
                        if await request.is_disconnected():
                            break
                finally:
                    events.close()

            return StreamingResponse(lines(), media_type="application/x-ndjson", headers={"Cache-Control": "no-cache"})
        events = await run_in_threadpool(lambda: list(generation_events(model, label, options)))
        return JSONResponse(events[-1], status_code=500 if "error" in events[-1] else 200)

    async def upload(self, request: Request) -> Response:
        fields = await read_form(request, self.max_upload_bytes)
        check_fields(fields, ("model", "image"))
        model = choose_model(self.models, fields)
        image, _ = await run_in_threadpool(lambda: prepared_image(model, fields))
        return JSONResponse({"model": model.name, "image": data_url(image)})

    async def edit(self, request: Request) -> Response:
        fields = await read_form(request, self.max_upload_bytes)
        check_fields(fields, EDIT_FIELDS)
        model = choose_model(self.models, fields)
        label = choose_label(model, fields)
        options = sampling_options(model, fields)
        invert = parse_flag("invert", fields.get("invert", False))
        options["paste_back"] = parse_flag("paste_back", fields.get("paste_back", True))
        options["keep_steps"] = (
            parse_number("keep_steps", fields["keep_steps"], low=0, high=model.steps, integer=True)
            if present(fields, "keep_steps")
            else None
        )
        # The edit API's "off" values for top-k and top-p are None.
        options["top_k"] = options["top_k"] or None
        options["top_p"] = options["top_p"] if options["top_p"] < 1 else None

        def work() -> dict:
            image, image_size = prepared_image(model, fields)
            mask = prepared_mask(model, fields, image_size)
            started = time.perf_counter()
            with model.lock:
                output = run_edit(
                    model.pipeline, pil_to_tensor(image), ~mask if invert else mask,
                    None if label is None else [label], return_intermediates=True, **options,
                )  # fmt: skip
            return {
                "model": model.name, "label": label, "seed": options["seed"], "images": data_urls(output.pixels),
                "intermediates": [data_urls(step) for step in output.intermediate_pixels or []],
                "forward_passes": output.forward_passes, "seconds": round(time.perf_counter() - started, 4),
            }  # fmt: skip

        try:
            return JSONResponse(await run_in_threadpool(work))
        except ArgenError as error:  # the edit refused these inputs
            raise BadRequest(str(error)) from None

    async def refused(self, request: Request, error: Exception) -> Response:
        """Every error as ``{"error": "one line"}`` with its status; the server goes on."""
        if isinstance(error, BadRequest):
            return JSONResponse({"error": error.message}, status_code=error.status)
        if isinstance(error, HTTPException):
            message = error.detail
            if error.status_code == 404:
                message = f"no page {request.url.path}: the page is / and the API /api/models, generate, upload, edit"
            elif error.status_code == 405:
                message = f"{request.method} is not allowed on {request.url.path}"
            return JSONResponse({"error": " ".join(str(message).split())}, status_code=error.status_code)
        return JSONResponse({"error": f"{type(error).__name__}: {' '.join(str(error).split())}"}, status_code=500)


def create_app(
    models: dict[str, ServedModel],
    *,
    trusted_hosts: list[str] | None = None,
    max_upload_bytes: int = MAX_UPLOAD_BYTES,
) -> Starlette:
    """The Starlette app serving ``models`` (from `load_models`). ``trusted_hosts``: the Host headers accepted
    (a page on another site cannot reach a localhost server through DNS rebinding); None accepts any."""
    if not models:
        raise ArgenError("no models to serve: pass at least one model directory")
    routes = Routes(models, max_upload_bytes=max_upload_bytes)
    table = [
        Route("/", routes.page),
        Route("/api/models", routes.list_models),
        Route("/api/generate", routes.generate, methods=["POST"]),
        Route("/api/upload", routes.upload, methods=["POST"]),
        Route("/api/edit", routes.edit, methods=["POST"]),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ]
    middleware = [Middleware(TrustedHostMiddleware, allowed_hosts=trusted_hosts)] if trusted_hosts else []
    handlers = {BadRequest: routes.refused, HTTPException: routes.refused, Exception: routes.refused}
    return Starlette(routes=table, middleware=middleware, exception_handlers=handlers)


# ----------------------------------------------------------------------------------------------------------------
# Serving


def listen(host: str, port: int) -> socket.socket:
    """A listening socket on host:port (port 0: a free one), or a one-line ArgenError."""
    try:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        return socket.create_server((host, port), family=family)
    except OSError as error:
        raise ArgenError(f"cannot listen on {host}:{port}: {error.strerror or error}: pick another --port") from None


def trusted_hosts_for(host: str) -> list[str] | None:
    return list(LOOPBACK) if host in LOOPBACK else None


@contextmanager
def background_server(app: Starlette, *, host: str = "127.0.0.1", port: int = 0) -> Iterator[str]:
    """Serve ``app`` from a thread for the ``with`` block and yield its base URL (tests, notebooks)."""
    import uvicorn

    sock = listen(host, port)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        for _ in range(500):  # up to 5 s to start
            if server.started or not thread.is_alive():
                break
            time.sleep(0.01)
        if not server.started:
            raise RuntimeError("the server did not start")
        bound_host, bound_port = sock.getsockname()[:2]
        yield f"http://{bound_host}:{bound_port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


def serve(
    paths: list[str | Path] | None = None,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    device: str = "cpu",
    announce: Callable[[str], None] = print,
) -> None:
    """Load the models (default: the shipped ones) and serve the page and the API until Ctrl-C."""
    import uvicorn

    models = load_models(paths or default_model_directories(), device=device)
    app = create_app(models, trusted_hosts=trusted_hosts_for(host))
    sock = listen(host, port)
    bound_port = sock.getsockname()[1]
    shown = f"[{host}]" if ":" in host else host
    announce(f"argen serve: http://{shown}:{bound_port}/ serving {', '.join(models)} (Ctrl-C stops)")
    if host not in LOOPBACK:
        announce(f"argen: warning: listening on {host}: anyone who can reach this machine can use these models")
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    try:
        server.run(sockets=[sock])
    except KeyboardInterrupt:  # uvicorn shuts down cleanly on Ctrl-C, then passes the signal on: stopping is normal
        pass
    finally:
        sock.close()
    announce("argen serve: stopped")
