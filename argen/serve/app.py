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

Requests are read and checked by `argen.serve.requests` (the schema layer), models loaded by `argen.serve.models`,
the app served by `argen.serve.server`. An unexpected error answers 500 with an error id and logs one line with that
id (logger ``argen.serve``); a client that goes away is logged at debug level only.

Images travel as PNG data URLs (``data:image/png;base64,...``). A missing ``seed`` draws one and returns it, so every
result can be reproduced. Models run in worker threads with one lock per pipeline: requests for different models
run at once, requests for the same model take turns (sampling toggles the transformer's eval mode, so a pipeline is
not shared between threads mid-call).
"""

from __future__ import annotations

import base64
import functools
import io
import json
import logging
import queue
import secrets
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import torch
from PIL import Image
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import ClientDisconnect, Request
from starlette.responses import FileResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from argen.data import float_to_images
from argen.errors import ArgenError
from argen.pipeline import Pipeline, PipelineOutput, to_pil
from argen.samplers import SAMPLERS
from argen.serve.models import ServedModel
from argen.serve.requests import (
    EDIT_FIELDS,
    GENERATE_FIELDS,
    MAX_IMAGE_PIXELS,
    MAX_IMAGES,
    MAX_SEED,
    MAX_UPLOAD_BYTES,
    UPLOAD_FIELDS,
    BadRequest,
    check_fields,
    choose_label,
    choose_model,
    parse_flag,
    parse_number,
    prepared_image,
    prepared_mask,
    present,
    read_form,
    read_json,
    sampling_options,
)

STATIC = Path(__file__).resolve().parent / "static"
LOG = logging.getLogger("argen.serve")
Endpoint = Callable[[Request], Awaitable[Response]]


def data_url(image: Image.Image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def data_urls(pixels: torch.Tensor) -> list[str]:
    """uint8 (B, C, H, W) → one PNG data URL per image."""
    return [data_url(image) for image in to_pil(pixels)]


def pil_to_tensor(image: Image.Image) -> torch.Tensor:
    """PIL "L"/"RGB" → uint8 (1, C, H, W)."""
    array = torch.frombuffer(bytearray(image.tobytes()), dtype=torch.uint8)
    channels = len(image.getbands())
    return array.view(image.height, image.width, channels).permute(2, 0, 1).unsqueeze(0).contiguous()


def internal_error_message(error: BaseException, where: str) -> str:
    """Log one line for an unexpected error (no traceback flood) and return the one line the client gets."""
    error_id = secrets.token_hex(4)
    first = str(error).strip().splitlines()[0][:200] if str(error).strip() else ""
    LOG.error("argen serve: internal error %s in %s: %s: %s", error_id, where, type(error).__name__, first)
    LOG.debug("argen serve: internal error %s", error_id, exc_info=error)
    return f"internal error {error_id}: the server log has one line about it; please report it"


def guarded(endpoint: Endpoint) -> Endpoint:
    """``endpoint`` with every error answered here: a BadRequest as its 4xx, a client gone away logged at debug
    level, anything else a 500 with an error id (Starlette's own 500 handler would re-raise and log a traceback)."""

    @functools.wraps(endpoint)
    async def handle(request: Request) -> Response:
        try:
            return await endpoint(request)
        except BadRequest as error:
            return JSONResponse({"error": error.message}, status_code=error.status)
        except ClientDisconnect:
            LOG.debug("argen serve: the client left during %s %s", request.method, request.url.path)
            return Response(status_code=400)
        except Exception as error:
            message = internal_error_message(error, f"{request.method} {request.url.path}")
            return JSONResponse({"error": message}, status_code=500)

    return handle


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
                    pipeline.engine, pipeline.order, pipeline.tokenizer, labels=labels,
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
        except Exception as error:  # a bug: the stream says so in one line, the log has it, the server goes on
            events.put({"error": internal_error_message(error, f"generate {model.name}")})
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
                            LOG.debug("argen serve: the client left a generation stream")
                            break
                finally:
                    events.close()

            return StreamingResponse(lines(), media_type="application/x-ndjson", headers={"Cache-Control": "no-cache"})
        events = await run_in_threadpool(lambda: list(generation_events(model, label, options)))
        return JSONResponse(events[-1], status_code=500 if "error" in events[-1] else 200)

    async def upload(self, request: Request) -> Response:
        fields = await read_form(request, self.max_upload_bytes)
        check_fields(fields, UPLOAD_FIELDS)
        model = choose_model(self.models, fields)
        image, _ = await run_in_threadpool(lambda: prepared_image(model, fields))
        return JSONResponse({"model": model.name, "image": data_urls(image)[0]})

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
                    model.pipeline, image, ~mask if invert else mask,
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
        """Starlette's own refusals (404, 405, malformed multipart) as ``{"error": "one line"}``."""
        assert isinstance(error, HTTPException)
        message = error.detail
        if error.status_code == 404:
            message = f"no page {request.url.path}: the page is / and the API /api/models, generate, upload, edit"
        elif error.status_code == 405:
            message = f"{request.method} is not allowed on {request.url.path}"
        return JSONResponse({"error": " ".join(str(message).split())[:300]}, status_code=error.status_code)


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
        Route("/api/models", guarded(routes.list_models)),
        Route("/api/generate", guarded(routes.generate), methods=["POST"]),
        Route("/api/upload", guarded(routes.upload), methods=["POST"]),
        Route("/api/edit", guarded(routes.edit), methods=["POST"]),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ]
    middleware = [Middleware(TrustedHostMiddleware, allowed_hosts=trusted_hosts)] if trusted_hosts else []
    return Starlette(routes=table, middleware=middleware, exception_handlers={HTTPException: routes.refused})
