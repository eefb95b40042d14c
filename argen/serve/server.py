"""Serving the app: the listening socket, the Host check for loopback addresses, uvicorn in the foreground (`serve`)
or in a thread (`background_server`, for tests and notebooks)."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from starlette.applications import Starlette

from argen.errors import ArgenError
from argen.serve.app import create_app
from argen.serve.models import default_model_directories, load_models

LOOPBACK = ("127.0.0.1", "localhost", "::1")
# The Host headers a loopback server accepts: a page on another site cannot reach it through DNS rebinding, since its
# requests carry that site's name. IPv6 literals keep their brackets in a Host header.
LOOPBACK_HOSTS = ["127.0.0.1", "localhost", "[::1]"]


def listen(host: str, port: int) -> socket.socket:
    """A listening socket on host:port (port 0: a free one), or a one-line ArgenError."""
    try:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        return socket.create_server((host, port), family=family)
    except OSError as error:
        raise ArgenError(f"cannot listen on {host}:{port}: {error.strerror or error}: pick another --port") from None


def trusted_hosts_for(host: str) -> list[str] | None:
    """The Host headers to accept when listening on ``host``: the loopback names for a loopback address, else any."""
    return list(LOOPBACK_HOSTS) if host in LOOPBACK else None


def uvicorn_server(app: Starlette):
    import uvicorn

    # timeout_keep_alive: idle keep-alive connections are closed after 5 s rather than held open.
    return uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off", timeout_keep_alive=5))


@contextmanager
def background_server(app: Starlette, *, host: str = "127.0.0.1", port: int = 0) -> Iterator[str]:
    """Serve ``app`` from a thread for the ``with`` block and yield its base URL (tests, notebooks)."""
    sock = listen(host, port)
    server = uvicorn_server(app)
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
        shown = f"[{bound_host}]" if ":" in bound_host else bound_host
        yield f"http://{shown}:{bound_port}"
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
    models = load_models(paths or default_model_directories(), device=device)
    app = create_app(models, trusted_hosts=trusted_hosts_for(host))
    sock = listen(host, port)
    bound_port = sock.getsockname()[1]
    shown = f"[{host}]" if ":" in host else host
    announce(f"argen serve: http://{shown}:{bound_port}/ serving {', '.join(models)} (Ctrl-C stops)")
    if host not in LOOPBACK:
        announce(f"argen: warning: listening on {host}: anyone who can reach this machine can use these models")
    server = uvicorn_server(app)
    try:
        server.run(sockets=[sock])
    except KeyboardInterrupt:  # uvicorn shuts down cleanly on Ctrl-C, then passes the signal on: stopping is normal
        pass
    finally:
        sock.close()
    announce("argen serve: stopped")
