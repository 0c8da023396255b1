"""Run the viewer's FastAPI app with uvicorn in a thread on a free loopback port (for tests)."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def live_server(workdir: Path, model_dir: Path | None = None, **kwargs) -> Iterator[str]:  # type: ignore[no-untyped-def]
    """Yield the base URL (``http://127.0.0.1:PORT``) of a running viewer; stops it afterwards."""
    import uvicorn

    from kidneyseg.reporting.server import Viewer, create_app

    viewer = Viewer(workdir, model_dir, **kwargs)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(viewer), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
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
