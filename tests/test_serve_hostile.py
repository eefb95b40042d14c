"""Hostile and careless requests to `argen serve` (issue 26): each gets a 4xx with one line, or a 500 with an error id
and one log line, and the server answers the next request. Runs the app in-process with Starlette's TestClient."""

from __future__ import annotations

import asyncio
import io
import json
import shutil
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

pytest.importorskip("starlette", reason="argen serve needs the serve extra: pip install -e '.[serve]'")
pytest.importorskip("httpx", reason="Starlette's TestClient needs httpx")

from starlette.testclient import TestClient  # noqa: E402

from argen.cli import run  # noqa: E402
from argen.data.images import read_image  # noqa: E402
from argen.errors import ArgenError  # noqa: E402
from argen.pipeline import Pipeline, PipelineOutput, to_pil  # noqa: E402
from argen.serve import requests as schema  # noqa: E402
from argen.serve.app import create_app, pil_to_tensor  # noqa: E402
from argen.serve.models import load_models  # noqa: E402
from argen.serve.server import LOOPBACK, trusted_hosts_for  # noqa: E402

MODEL = Path(__file__).resolve().parent.parent / "checkpoints" / "fashion-mnist" / "scale"


def png(image: Image.Image, format: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=format)
    return buffer.getvalue()


def png_declaring(width: int, height: int) -> bytes:
    data = bytearray(png(Image.new("1", (8, 8))))
    header = struct.pack(">II", width, height) + bytes(data[24:29])
    data[16:29] = header
    data[29:33] = struct.pack(">I", zlib.crc32(b"IHDR" + header))
    return bytes(data)


@pytest.fixture(scope="module")
def models():
    return load_models([MODEL])


@pytest.fixture(scope="module")
def client(models):
    app = create_app(models, trusted_hosts=trusted_hosts_for("::1"))
    with TestClient(app, base_url="http://[::1]:8000", raise_server_exceptions=False) as client:
        yield client


def still_serving(client: TestClient) -> None:
    response = client.get("/api/models")
    assert response.status_code == 200 and response.json()["models"][0]["name"] == "scale"


def one_line_error(response, status: int, expected: str) -> None:
    assert response.status_code == status, response.text
    message = response.json()["error"]
    assert expected in message and "\n" not in message and len(message) < 300, message


IMAGE = png(Image.new("L", (28, 28), 128))
CASES = {
    "label ²": ("json", {"label": "²", "seed": 0}, 400, "unknown class '²'"),
    "label of 5000 digits": ("json", {"label": "9" * 5000}, 400, "label must be a class index or name"),
    "label integer of 4000 digits": ("json", {"label": 10**4000}, 400, "is out of range"),
    "seed of 5000 digits": ("raw", b'{"seed": ' + b"9" * 5000 + b"}", 400, "not valid JSON"),
    "seed text of 5000 digits": ("form", ({"seed": "9" * 5000}, {"image": IMAGE}), 400, "seed must be an integer"),
    "JSON nested 30 000 deep": ("raw", b"[" * 30000 + b"]" * 30000, 400, "nests too deeply"),
    "temperature 1e-40": ("json", {"temperature": 1e-40}, 400, "temperature must be 0 (greedy) or at least"),
    "PNG declaring 100000×100000": ("form", ({}, {"image": png_declaring(100_000, 100_000)}), 413, "scale it down"),
    "PNG declaring 5000×5000": ("form", ({}, {"image": png_declaring(5000, 5000)}), 413, "the limit is"),
    "form field as a file part": ("form", ({}, {"image": IMAGE, "cfg_scale": b"2"}), 400, "as a text field"),
    "image as a text part": ("form", ({"image": "picture.png"}, {}), 400, "as a file part"),
    "EPS upload": ("form", ({}, {"image": b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 8 8\n"}), 415, "not an image"),
    "long unknown field": ("json", {"x" * 10_000: 1}, 400, "unknown field"),
}


@pytest.mark.parametrize("name", list(CASES))
def test_a_hostile_request_gets_one_line_and_the_server_serves_on(client, name):
    kind, payload, status, expected = CASES[name]
    if kind == "json":
        response = client.post("/api/generate", json=payload)
    elif kind == "raw":
        response = client.post("/api/generate", content=payload, headers={"Content-Type": "application/json"})
    else:
        fields, files = payload
        files = {key: (f"{key}.png", value, "image/png") for key, value in files.items()}
        response = client.post("/api/edit", data=fields, files=files or {"none": ("", b"", "text/plain")})
    one_line_error(response, status, expected)
    still_serving(client)


def test_a_lab_tiff_upload_is_converted(client):
    lab = Image.new("LAB", (28, 28), (200, 128, 128))
    response = client.post("/api/upload", files={"image": ("lab.tif", png(lab, "TIFF"), "image/tiff")})
    assert response.status_code == 200, response.text
    still_serving(client)


def test_the_loopback_check_covers_ipv6(client):
    assert "::1" in LOOPBACK and "[::1]" in trusted_hosts_for("::1") and trusted_hosts_for("0.0.0.0") is None
    response = client.get("/api/models", headers={"Host": "evil.example"})
    assert response.status_code == 400
    assert client.get("/api/models", headers={"Host": "[::1]:8000"}).status_code == 200


def test_an_unexpected_error_is_a_500_with_an_id_and_one_log_line(client, monkeypatch, caplog):
    def broken(self):
        raise RuntimeError("something deep\nwith a second line")

    monkeypatch.setattr("argen.serve.models.ServedModel.describe", broken)
    with caplog.at_level("ERROR", logger="argen.serve"):
        response = client.get("/api/models")
    one_line_error(response, 500, "internal error ")
    error_id = response.json()["error"].split()[2].rstrip(":")
    lines = [record for record in caplog.records if record.name == "argen.serve"]
    assert len(lines) == 1 and error_id in lines[0].getMessage() and lines[0].exc_info is None
    monkeypatch.undo()
    still_serving(client)


def test_a_stalled_body_is_cut_off(monkeypatch):
    monkeypatch.setattr(schema, "BODY_TIMEOUT_SECONDS", 0.2)

    class Stalled:
        headers: dict = {}

        async def stream(self):
            yield b'{"seed":'
            await asyncio.sleep(60)

    with pytest.raises(schema.BadRequest) as caught:
        asyncio.run(schema.read_body(Stalled(), 1000))
    assert caught.value.status == 408


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (
            lambda directory: edit_json(directory / "generator" / "config.json", ["extra", "classes"], 5),
            "model broken .*classes 5",
        ),
        (
            lambda directory: edit_json(directory / "sampling.json", ["recommended", "cfg_scale"], float("nan")),
            "broken/sampling.json: cfg_scale .*nan",  # refused by the model directory's loader, naming the file
        ),
    ],
)
def test_model_metadata_that_cannot_be_served_is_refused_at_start_naming_the_model(tmp_path, edit, expected):
    directory = tmp_path / "broken"
    shutil.copytree(MODEL, directory)
    edit(directory)
    with pytest.raises(ArgenError, match=expected):
        load_models([directory])


def edit_json(path: Path, keys: list[str], value: object) -> None:
    document = json.loads(path.read_text())
    document.setdefault(keys[0], {})[keys[1]] = value
    path.write_text(json.dumps(document))


def test_a_transparent_png_gives_the_same_pixels_to_serve_and_to_argen_edit(client, tmp_path, monkeypatch):
    array = np.zeros((28, 28, 2), dtype=np.uint8)
    array[..., 0] = np.arange(28, dtype=np.uint8)[None] * 9
    array[..., 1] = np.where(np.arange(28)[:, None] < 14, 255, 60)  # the lower half mostly transparent
    picture = png(Image.fromarray(array, "LA"))
    (tmp_path / "picture.png").write_bytes(picture)
    seen = []

    def recording(pipeline, images, masks, labels, **options):
        seen.append(images.clone())
        return PipelineOutput(images=to_pil(images), ids=[], labels=None, forward_passes=0, pixels=images)

    monkeypatch.setattr(Pipeline, "edit", recording)
    response = client.post("/api/edit", files={"image": ("p.png", picture, "image/png")}, data={"seed": "1"})
    assert response.status_code == 200, response.text
    run(["edit", "--model", str(MODEL), "--image", str(tmp_path / "picture.png"), "--keep-steps", "1",
         "--out", str(tmp_path / "out.png")])  # fmt: skip
    assert len(seen) == 2 and torch.equal(seen[0], seen[1])
    expected = torch.from_numpy(read_image(picture, channels=1).transpose(2, 0, 1).copy())[None]
    assert torch.equal(seen[0], expected) and int(seen[0][0, 0, 27, 0]) > int(array[27, 0, 0])  # onto white
    upload = client.post("/api/upload", files={"image": ("p.png", picture, "image/png")}).json()["image"]
    decoded = Image.open(io.BytesIO(__import__("base64").b64decode(upload.split(",", 1)[1])))
    assert torch.equal(pil_to_tensor(decoded), expected)
