"""`argen serve`'s JSON API on the shipped checkpoints: streaming generation, upload, edit, the catalogue of bad
requests (each a 4xx with a one-line message, the server serving on afterwards), concurrent requests, the command.

The server runs in a thread on 127.0.0.1 on a free port (the command in a subprocess, also on a free port) and is
stopped at the end. Until `Pipeline.edit` exists, a stand-in (a fresh sample inside the mask, the input outside) takes
its place in these tests only.
"""

import base64
import io
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import urllib.error
import urllib.request
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch
from PIL import Image

pytest.importorskip("starlette", reason="argen serve needs the serve extra: pip install -e '.[serve]'")
pytest.importorskip("uvicorn", reason="argen serve needs the serve extra: pip install -e '.[serve]'")

from argen.cli import run  # noqa: E402
from argen.errors import ArgenError  # noqa: E402
from argen.pipeline import Pipeline, PipelineOutput, to_pil  # noqa: E402
from argen.serve.app import create_app, pil_to_tensor  # noqa: E402
from argen.serve.models import default_model_directories, load_models  # noqa: E402
from argen.serve.server import background_server  # noqa: E402

REPOSITORY = Path(__file__).resolve().parent.parent
STEPS = {"raster": 49, "scale": 6, "frequency": 6, "neighbor": 13}  # the shipped 7×7 latents
UPLOAD_LIMIT = 200_000  # small, so that the oversized request of the catalogue stays small too


# ----------------------------------------------------------------------------------------------------------------
# Helpers (test_browser.py uses them too)


def stand_in_edit(
    self, images, masks, labels, *, keep_steps=None, paste_back=True, cfg_scale=1.0, top_k=None, top_p=None,
    temperature=1.0, seed=None, return_intermediates=False, num=1,
):  # fmt: skip
    """Pipeline.edit's signature with the simplest behaviour: a fresh sample of ``labels`` inside the mask."""
    output = self(
        labels, cfg_scale=cfg_scale, top_k=top_k or 0, top_p=top_p or 1.0, temperature=temperature, seed=seed,
        return_intermediates=return_intermediates,
    )  # fmt: skip
    pixels = torch.where(masks[:, None], output.pixels, images) if paste_back else output.pixels
    return PipelineOutput(
        images=to_pil(pixels), ids=output.ids, labels=output.labels, forward_passes=output.forward_passes,
        pixels=pixels, intermediate_pixels=output.intermediate_pixels,
    )  # fmt: skip


class EditRecorder:
    """Replaces Pipeline.edit (the real one, or the stand-in until it exists) by a wrapper that records each call."""

    def __init__(self):
        self.calls = []
        self.original = getattr(Pipeline, "edit", None) or stand_in_edit
        recorder = self

        def recording(pipeline, images, masks, labels, **options):
            recorder.calls.append({"images": images.clone(), "masks": masks.clone(), "labels": labels, **options})
            return recorder.original(pipeline, images, masks, labels, **options)

        self.function = recording


def fetch(url, *, data=None, headers=None, method=None, timeout=60):
    """(status, body bytes) of one request; HTTP errors are returned, not raised."""
    try:
        with urllib.request.urlopen(
            urllib.request.Request(url, data, headers or {}, method=method), timeout=timeout
        ) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def post_json(url, fields, **options):
    return fetch(url, data=json.dumps(fields).encode(), headers={"Content-Type": "application/json"}, **options)


def multipart(fields: dict, files: dict) -> tuple[bytes, dict]:
    """A multipart/form-data body: text ``fields`` and ``files`` {name: bytes}."""
    boundary = uuid.uuid4().hex
    parts = []
    for name, value in fields.items():
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode())
    for name, data in files.items():
        head = f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; filename="{name}.png"\r\n'
        parts.append(head.encode() + b"Content-Type: image/png\r\n\r\n" + data + b"\r\n")
    body = b"".join(parts) + f"--{boundary}--\r\n".encode()
    return body, {"Content-Type": f"multipart/form-data; boundary={boundary}"}


def post_form(url, fields=None, files=None, **options):
    body, headers = multipart(fields or {}, files or {})
    return fetch(url, data=body, headers=headers, **options)


def png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def decode(url: str) -> Image.Image:
    assert url.startswith("data:image/png;base64,")
    return Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1])))


def pixels_of(url: str) -> torch.Tensor:
    """A PNG data URL → uint8 (1, C, H, W)."""
    return pil_to_tensor(decode(url))


def stream_events(url, fields, *, timeout=60) -> list[dict]:
    request = urllib.request.Request(
        url + "/api/generate", json.dumps(fields).encode(), {"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=timeout) as response:
        assert response.headers["Content-Type"].startswith("application/x-ndjson")
        return [json.loads(line) for line in response if line.strip()]


def right_half_mask(size=28) -> Image.Image:
    mask = Image.new("L", (size, size), 0)
    mask.paste(255, (size // 2, 0, size, size))
    return mask


# ----------------------------------------------------------------------------------------------------------------
# Fixtures


@pytest.fixture(scope="module")
def models():
    return load_models(default_model_directories())


@pytest.fixture(scope="module")
def recorder():
    recorder = EditRecorder()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(Pipeline, "edit", recorder.function, raising=False)
        yield recorder


@pytest.fixture(scope="module")
def server(models, recorder):
    app = create_app(models, trusted_hosts=["127.0.0.1", "localhost"], max_upload_bytes=UPLOAD_LIMIT)
    with background_server(app) as url:
        yield url


@pytest.fixture(scope="module")
def sample_png(server):
    """A generated Fashion-MNIST sample (a trouser) as PNG bytes, to edit."""
    status, body = post_json(server + "/api/generate", {"model": "scale", "label": 1, "seed": 3, "stream": False})
    assert status == 200
    return base64.b64decode(json.loads(body)["images"][0].split(",", 1)[1])


# ----------------------------------------------------------------------------------------------------------------
# What works


def test_models_lists_the_shipped_orders(server):
    status, body = fetch(server + "/api/models")
    assert status == 200
    listing = json.loads(body)
    assert {model["name"]: model["steps"] for model in listing["models"]} == STEPS
    for model in listing["models"]:
        assert model["order"] == model["name"] and len(model["classes"]) == 10 and model["image_size"] == 28
    assert listing["limits"]["max_upload_bytes"] == UPLOAD_LIMIT


def test_the_page_and_its_files_are_served_and_need_no_network(server):
    status, page = fetch(server + "/")
    assert status == 200 and b'<canvas id="mask"' in page and b'id="generate"' in page
    for name in ("app.js", "style.css"):
        status, text = fetch(server + f"/static/{name}")
        assert status == 200 and len(text) > 500
        assert b"http://" not in text and b"https://" not in text  # no CDN: the page works offline
    assert b"http://" not in page and b"https://" not in page


@pytest.mark.parametrize("order", list(STEPS))
def test_generate_streams_every_step_and_ends_with_the_pipelines_image(server, models, order):
    events = stream_events(server, {"model": order, "label": "Trouser", "cfg_scale": 2.0, "seed": 7})
    steps, last = events[:-1], events[-1]
    assert [event["step"] for event in steps] == list(range(1, STEPS[order] + 1))
    assert all(event["steps"] == STEPS[order] and decode(event["images"][0]).size == (28, 28) for event in steps)
    assert last["done"] and last["label"] == 1 and last["seed"] == 7 and last["forward_passes"] == STEPS[order]
    expected = models[order].pipeline([1], cfg_scale=2.0, seed=7)
    assert torch.equal(pixels_of(last["images"][0]), expected.pixels)  # the same seed, the same image


def test_steps_are_sent_while_the_next_ones_are_still_running(models):
    """Step 2 waits until the client has read step 1: a server that buffered the stream would never send it."""
    model = load_models([models["scale"].directory])["scale"]
    released, stalled = threading.Event(), []
    preview = model.pipeline.order.preview

    def gated_preview(ids, step, tokenizer):
        if step == 2 and not released.wait(timeout=30):
            stalled.append(step)
        return preview(ids, step, tokenizer)

    model.pipeline.order.preview = gated_preview
    with background_server(create_app({"scale": model})) as url:
        request = urllib.request.Request(
            url + "/api/generate", json.dumps({"seed": 1}).encode(), {"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=60) as response:
            first = json.loads(response.readline())
            assert first["step"] == 1 and not released.is_set()
            released.set()
            rest = [json.loads(line) for line in response if line.strip()]
    assert not stalled and rest[-1]["done"] and len(rest) == 6


def test_a_client_that_goes_away_stops_the_sampling(models):
    model = load_models([models["raster"].directory])["raster"]
    released, previewed = threading.Event(), []
    preview = model.pipeline.order.preview

    def gated_preview(ids, step, tokenizer):
        previewed.append(step)
        if step == 2:
            released.wait(timeout=30)
        return preview(ids, step, tokenizer)

    model.pipeline.order.preview = gated_preview
    with background_server(create_app({"raster": model})) as url:
        host, port = url.removeprefix("http://").split(":")
        body = json.dumps({"seed": 1}).encode()
        with socket.create_connection((host, int(port)), timeout=30) as connection:
            connection.sendall(
                b"POST /api/generate HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                + f"Content-Length: {len(body)}\r\n\r\n".encode()
                + body
            )
            assert connection.recv(4096).startswith(b"HTTP/1.1 200")
        released.set()
        for _ in range(3000):  # up to 30 s for the worker to notice
            working = any(thread.name == "argen-serve-raster" for thread in threading.enumerate())
            if not working:
                break
            threading.Event().wait(0.01)
    # Step 2 cannot finish before the client has gone, and the worker stops at the next step it starts.
    assert not working and 1 <= len(previewed) < 10  # of 49


def test_generate_without_streaming_and_without_a_seed(server):
    status, body = post_json(server + "/api/generate", {"model": "frequency", "label": 5, "num": 3, "stream": False})
    assert status == 200
    result = json.loads(body)
    assert result["done"] and len(result["images"]) == 3 and isinstance(result["seed"], int)
    again = json.loads(post_json(server + "/api/generate", {**result_request(result), "num": 3, "stream": False})[1])
    assert again["images"] == result["images"]  # the seed it drew reproduces the images


def result_request(result):
    return {"model": result["model"], "label": result["label"], "seed": result["seed"]}


def test_upload_fits_any_picture_to_the_models_size(server):
    picture = Image.new("RGBA", (120, 60), (0, 0, 0, 0))
    picture.paste((255, 255, 255, 255), (45, 10, 75, 50))
    status, body = post_form(server + "/api/upload", {"model": "raster"}, {"image": png(picture)})
    assert status == 200
    image = decode(json.loads(body)["image"])
    assert image.size == (28, 28) and image.mode == "L"
    # Centre-cropped; transparent → white, the one image reader's background (argen.data.images).
    assert image.getpixel((14, 14)) > 200 and image.getpixel((1, 1)) == 255


@pytest.mark.parametrize("order", ["raster", "frequency"])
def test_inpainting_keeps_the_pixels_outside_the_mask(server, recorder, sample_png, order):
    fields = {"model": order, "label": "Dress", "seed": 2, "cfg_scale": 2.0}
    status, body = post_form(server + "/api/edit", fields, {"image": sample_png, "mask": png(right_half_mask())})
    assert status == 200, body
    result = json.loads(body)
    call = recorder.calls[-1]
    expected_mask = torch.zeros(1, 28, 28, dtype=torch.bool)
    expected_mask[..., 14:] = True
    assert torch.equal(call["masks"], expected_mask) and call["labels"] == [3] and call["seed"] == 2
    assert call["keep_steps"] is None and call["paste_back"] is True and call["return_intermediates"] is True
    edited, original = pixels_of(result["images"][0]), pixels_of("data:image/png;base64," + b64(sample_png))
    assert torch.equal(edited[..., :14], original[..., :14])
    assert result["intermediates"] and all(len(step) == 1 for step in result["intermediates"])


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def test_outpainting_inverts_the_mask_and_class_editing_keeps_steps(server, recorder, sample_png):
    mask = png(right_half_mask())
    status, body = post_form(
        server + "/api/edit",
        {"model": "scale", "label": 0, "invert": "true", "seed": 1},
        {"image": sample_png, "mask": mask},
    )
    assert status == 200, body
    assert recorder.calls[-1]["masks"][..., :14].all() and not recorder.calls[-1]["masks"][..., 14:].any()
    edited, original = pixels_of(json.loads(body)["images"][0]), pixels_of("data:image/png;base64," + b64(sample_png))
    assert torch.equal(edited[..., 14:], original[..., 14:])
    status, body = post_form(
        server + "/api/edit", {"model": "frequency", "label": "Sandal", "keep_steps": 2, "paste_back": "false"},
        {"image": sample_png},
    )  # fmt: skip
    assert status == 200, body
    call = recorder.calls[-1]
    assert call["keep_steps"] == 2 and call["paste_back"] is False and call["masks"].all() and call["labels"] == [5]


def test_a_mask_drawn_on_a_larger_picture_is_scaled_with_it(server, recorder, sample_png):
    large = Image.open(io.BytesIO(sample_png)).resize((56, 56), Image.NEAREST)
    status, body = post_form(
        server + "/api/edit", {"model": "neighbor", "label": 1}, {"image": png(large), "mask": png(right_half_mask(56))}
    )
    assert status == 200, body
    assert torch.equal(recorder.calls[-1]["masks"][0].any(0), torch.arange(28) >= 14)


# ----------------------------------------------------------------------------------------------------------------
# Bad requests: each a 4xx with a one-line message, and the server serves the next good request


def huge_png() -> bytes:
    return png(Image.new("1", (5000, 5000)))  # a few KB on disk, 25 M pixels once decoded


def truncated_png() -> bytes:
    data = png(Image.effect_noise((64, 64), 50).convert("L"))
    return data[: len(data) // 2]


def bad_requests():
    """(name, path, send) → send(url) makes the request and returns (status, body)."""
    generate = "/api/generate"

    def json_body(fields):
        return lambda url: post_json(url + generate, fields)

    def raw(path, body, content_type="application/json", method="POST"):
        return lambda url: fetch(url + path, data=body, headers={"Content-Type": content_type}, method=method)

    def form(path, fields, files):
        return lambda url: post_form(url + path, fields, files)

    image = png(Image.new("L", (28, 28), 128))
    cases = {
        "malformed JSON": (400, raw(generate, b'{"model": "scale",')),
        "JSON that is not an object": (400, raw(generate, b"[1, 2]")),
        "JSON that is not UTF-8": (400, raw(generate, b"\xff\xfe{}")),
        "unknown model": (400, json_body({"model": "diffusion"})),
        "model that is not a string": (400, json_body({"model": 3})),
        "unknown class name": (400, json_body({"model": "scale", "label": "Giraffe"})),
        "class out of range": (400, json_body({"model": "scale", "label": 10})),
        "negative class": (400, json_body({"model": "scale", "label": -1})),
        "class as a list": (400, json_body({"model": "scale", "label": [1]})),
        "cfg_scale as text": (400, json_body({"cfg_scale": "strong"})),
        "cfg_scale NaN": (400, raw(generate, b'{"cfg_scale": NaN}')),
        "cfg_scale infinite": (400, raw(generate, b'{"cfg_scale": Infinity}')),
        "cfg_scale huge": (400, json_body({"cfg_scale": 1e9})),
        "cfg_scale as a boolean": (400, json_body({"cfg_scale": True})),
        "negative seed": (400, json_body({"seed": -1})),
        "fractional seed": (400, json_body({"seed": 1.5})),
        "seed beyond 64 bits": (400, json_body({"seed": 2**70})),
        "negative temperature": (400, json_body({"temperature": -1})),
        "top_p zero": (400, json_body({"top_p": 0})),
        "top_p above one": (400, json_body({"top_p": 1.5})),
        "top_k above the codebook": (400, json_body({"top_k": 10**6})),
        "no images": (400, json_body({"num": 0})),
        "too many images": (400, json_body({"num": 10**4})),
        "unknown field": (400, json_body({"cfg": 2.0})),
        "stream not a boolean": (400, json_body({"stream": "maybe"})),
        "JSON body over the limit": (413, json_body({"model": "x" * 100_000})),
        "GET on generate": (405, raw(generate, None, method="GET")),
        "unknown route": (404, raw("/api/nothing", None, method="GET")),
        "upload that is not an image": (415, form("/api/upload", {}, {"image": b"this is not a picture"})),
        "upload of a huge image": (413, form("/api/upload", {}, {"image": huge_png()})),
        "upload of a truncated image": (415, form("/api/upload", {}, {"image": truncated_png()})),
        "upload over the size limit": (413, form("/api/upload", {}, {"image": b"\0" * (UPLOAD_LIMIT + 1)})),
        "upload as JSON": (415, raw("/api/upload", b'{"image": "x"}')),
        "upload without an image": (400, form("/api/upload", {"model": "scale"}, {})),
        "upload with the image as text": (400, form("/api/upload", {"image": "picture.png"}, {})),
        "upload for an unknown model": (400, form("/api/upload", {"model": "nope"}, {"image": image})),
        "malformed multipart": (400, raw("/api/upload", b"--x\r\nnonsense", "multipart/form-data; boundary=x")),
        "edit with a mask of another size": (
            400, form("/api/edit", {}, {"image": image, "mask": png(Image.new("L", (20, 28)))}),
        ),
        "edit with a mask that is not an image": (415, form("/api/edit", {}, {"image": image, "mask": b"nope"})),
        "edit keeping more steps than there are": (400, form("/api/edit", {"keep_steps": 99}, {"image": image})),
        "edit with invert not a boolean": (400, form("/api/edit", {"invert": "perhaps"}, {"image": image})),
        "edit with a bad number": (400, form("/api/edit", {"cfg_scale": "1,5"}, {"image": image})),
        "edit without an image": (400, form("/api/edit", {"model": "scale"}, {})),
    }  # fmt: skip
    return cases


BAD_REQUESTS = bad_requests()


@pytest.mark.parametrize("name", list(BAD_REQUESTS))
def test_a_bad_request_gets_a_one_line_4xx_and_the_server_serves_on(server, name):
    expected, send = BAD_REQUESTS[name]
    status, body = send(server)
    assert status == expected, body
    message = json.loads(body)["error"]
    assert message and "\n" not in message and len(message) < 300
    status, body = post_json(server + "/api/generate", {"model": "scale", "label": 2, "seed": 0, "stream": False})
    assert status == 200 and json.loads(body)["done"]


def test_messages_say_what_to_change(server):
    cases = [
        ({"model": "diffusion"}, 'unknown model "diffusion": this server has frequency, neighbor, raster, scale'),
        ({"label": "Giraffe"}, "unknown class 'Giraffe'"),
        ({"seed": -1}, "seed must be between 0 and"),
        ({"cfg": 2}, "unknown field 'cfg'"),
    ]
    for fields, expected in cases:
        assert expected in json.loads(post_json(server + "/api/generate", fields)[1])["error"]


def test_another_host_header_is_refused(server):
    status, _ = fetch(server + "/api/models", headers={"Host": "attacker.example"})
    assert status == 400
    assert fetch(server + "/api/models")[0] == 200


# ----------------------------------------------------------------------------------------------------------------
# Concurrency


def test_concurrent_requests_are_all_served_with_the_right_images(server, sample_png):
    requests = [
        (order, label, seed)
        for order in ("raster", "scale", "frequency", "neighbor")
        for label, seed in ((0, 1), (7, 2))
    ]

    def generate(request):
        order, label, seed = request
        events = stream_events(server, {"model": order, "label": label, "seed": seed, "cfg_scale": 2.0})
        return events[-1]["images"][0]

    def edit(_):
        status, body = post_form(
            server + "/api/edit", {"model": "scale", "seed": 4}, {"image": sample_png, "mask": png(right_half_mask())}
        )
        return status

    with ThreadPoolExecutor(max_workers=len(requests) + 2) as pool:
        edits = [pool.submit(edit, index) for index in range(2)]
        together = list(pool.map(generate, requests, timeout=120))
        assert [future.result(timeout=120) for future in edits] == [200, 200]
    one_by_one = [generate(request) for request in requests]
    assert together == one_by_one


# ----------------------------------------------------------------------------------------------------------------
# The command


def test_the_command_serves_on_a_free_port_and_stops_on_ctrl_c():
    environment = {"PYTHONPATH": str(REPOSITORY), "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "argen", "serve", "--port", "0", "--models", "checkpoints/fashion-mnist/scale"]
    process = subprocess.Popen(
        command, cwd=REPOSITORY, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, **environment},
    )  # fmt: skip
    try:
        lines = []
        reader = threading.Thread(target=lambda: lines.append(process.stdout.readline()), daemon=True)
        reader.start()
        reader.join(timeout=120)
        assert lines and lines[0].startswith("argen serve: http://127.0.0.1:"), (lines, process.poll())
        url = lines[0].split()[2].rstrip("/")
        status, body = fetch(url + "/api/models")
        assert status == 200 and [model["name"] for model in json.loads(body)["models"]] == ["scale"]
        assert post_json(url + "/api/generate", {"stream": False})[0] == 200
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=30) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=30)
        process.stdout.close()
        process.stderr.close()


def test_the_command_refuses_what_it_cannot_serve(tmp_path):
    with pytest.raises(ArgenError, match="not a model directory"):
        run(["serve", "--models", str(tmp_path)])
    with pytest.raises(ArgenError, match="--port must be between 0 and 65535"):
        run(["serve", "--port", "70000"])
    with background_server(create_app(load_models([REPOSITORY / "checkpoints/fashion-mnist/scale"]))) as url:
        port = url.rsplit(":", 1)[1]
        with pytest.raises(ArgenError, match=f"cannot listen on 127.0.0.1:{port}"):
            run(["serve", "--port", port, "--models", str(REPOSITORY / "checkpoints/fashion-mnist/scale")])


def test_a_folder_of_model_directories_serves_each_with_unique_names():
    root = REPOSITORY / "checkpoints" / "fashion-mnist"
    models = load_models([root, root / "scale"])
    assert list(models) == ["frequency", "neighbor", "raster", "scale", "scale-2"]
