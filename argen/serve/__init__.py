"""`argen serve`: a local web app on model directories: generate and watch the image refine step by step, paint a
mask over it (or over an uploaded picture) and inpaint, outpaint or class-edit it.

The page (``static/``: plain HTML, CSS and JavaScript, no external CDN, so it works offline) talks to a small JSON
API beside it: `argen.serve.app` documents the routes, `argen.serve.requests` checks every request, `argen.serve.models`
loads and checks the models, `argen.serve.server` serves. Needs the ``serve`` extra (Starlette + uvicorn +
python-multipart).
"""

from argen.serve.app import create_app
from argen.serve.models import ServedModel, default_model_directories, load_models
from argen.serve.server import serve

__all__ = ["ServedModel", "create_app", "default_model_directories", "load_models", "serve"]
