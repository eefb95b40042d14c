"""`argen serve`: the local web app (`argen.serve`) on the shipped or the given model directories."""

from __future__ import annotations

import argparse

from argen.errors import ArgenError, install_hint

NAME = "serve"
HELP = "a local web page: generate step by step, paint a mask and inpaint / outpaint / class-edit"
DESCRIPTION = (
    "Serve a page and a small JSON API (documented in the README) on the model directories: choose a model, class, "
    "guidance and seed and watch the image refine step by step; paint a mask over it or over an uploaded picture and "
    "inpaint, outpaint or class-edit it. Listens on localhost only unless --host says otherwise. Needs the serve "
    "extra (pip install 'argen[serve]', or pip install -e '.[serve]' in a clone)."
)
ORDER = 105  # after demo, the other way to look at the shipped models


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: this machine only)")
    parser.add_argument("--port", type=int, default=8000, help="port to listen on (0: any free one, printed)")
    parser.add_argument(
        "--models",
        nargs="+",
        metavar="DIR",
        help="model directories (argen train --out), or folders of them (default: the shipped "
        "checkpoints/fashion-mnist/{raster,scale,frequency,neighbor})",
    )
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")


def run(arguments: argparse.Namespace) -> None:
    if not 0 <= arguments.port <= 65535:
        raise ArgenError(f"--port must be between 0 and 65535, got {arguments.port}")
    try:
        from argen.serve import serve
    except ImportError as error:
        missing = error.name or "a dependency"
        raise ArgenError(f"argen serve needs the serve extra ({missing} is missing): {install_hint('serve')}") from None
    serve(arguments.models, host=arguments.host, port=arguments.port, device=arguments.device)
