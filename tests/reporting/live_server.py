"""Run the viewer's FastAPI app with uvicorn in a thread on a free loopback port (for tests)."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

#: The token of the viewers these tests start (``kidneyseg serve`` makes a random one per start).
TOKEN = "test-token-not-secret"


@contextlib.contextmanager
def live_server(workdir: Path, model_dir: Path | None = None, *, token: str = TOKEN, predictor=None,
                **kwargs) -> Iterator[str]:  # type: ignore[no-untyped-def]
    """Yield the base URL (``http://127.0.0.1:PORT``) of a running viewer; stops it afterwards.

    ``predictor``: an object with ``predict_case`` used for ``model_dir`` instead of loading it.

    Requests need ``token`` (header ``X-Kidneyseg-Token``, ``?token=``, or the cookie that ``/?token=`` sets).
    The socket is bound before the server starts, as ``kidneyseg serve`` does, so no other process can take the port.
    """
    import uvicorn

    from kidneyseg.reporting.server import Viewer, create_app

    viewer = Viewer(workdir, model_dir, **kwargs)
    if predictor is not None:
        viewer._predictors[viewer.model_dir] = predictor
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = int(sock.getsockname()[1])
    app = create_app(viewer, host="127.0.0.1", port=port, token=token)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("viewer did not start")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()
