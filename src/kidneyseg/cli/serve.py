"""`kidneyseg serve`: a local web viewer (open/upload a study, predict, look at it in NiiVue, download).

Binds to 127.0.0.1 by default; everything it writes stays under ``--workdir``
(files put in ``WORKDIR/inbox/`` can be opened from the page).  Prints the
address to open, with a token made for this start (``http://127.0.0.1:PORT/?token=...``):
the viewer answers only requests that carry it.  Without ``--model``, 'Run
prediction' uses the built-in default model of the study's modality.
"""

from __future__ import annotations

import argparse
import ipaddress
import socket
from pathlib import Path

from kidneyseg.errors import InputError

NAME = "serve"
HELP = "local web viewer: upload a study, run the model, scroll slices with overlays, download results"
DESCRIPTION = __doc__


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1, this machine only)")
    parser.add_argument("--port", type=int, default=8000, help="port (default 8000; 0 picks a free one)")
    parser.add_argument("--model", type=Path, metavar="DIR",
                        help="model folder used by 'Run prediction' (default: the built-in model of the study's "
                             "modality)")
    parser.add_argument("--task", help="label convention when the model does not name one")
    parser.add_argument("--workdir", type=Path, default=Path("kidneyseg_viewer"),
                        help="working folder: uploads, predictions, reports (default ./kidneyseg_viewer)")
    parser.add_argument("--max-upload-mb", type=float, default=1024.0,
                        help="largest upload accepted, and largest size a zip may unpack to (MB, default 1024)")
    parser.add_argument("--max-studies", type=int, default=8,
                        help="studies held in memory; opening one more closes the least recently used (default 8)")
    parser.add_argument("--uncertainty", action="store_true",
                        help="ask the model for its uncertainty map with each prediction and show it as a second "
                             "overlay (slower)")
    parser.add_argument("--no-qc", action="store_true",
                        help="skip the QC score and pass/review flag of each structure (their uncertainty costs "
                             "a few seconds per prediction)")


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host:port`` (``port`` 0: a free one, read back with ``getsockname``).

    It listens before uvicorn starts, so the address printed is usable at once (connections wait in the backlog).
    """
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise InputError("cannot resolve --host", found=repr(host), expected="an address of this machine",
                         fix="use 127.0.0.1 (this machine only) or an address of one of its interfaces") from exc
    family, kind, proto, _, addr = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(addr)
        sock.listen(128)
    except OSError as exc:
        sock.close()
        raise InputError("cannot listen on the address", found=f"{host}:{port}: {exc.strerror or exc}",
                         expected="a free port on an address of this machine",
                         fix="choose another --port (0 picks a free one)") from exc
    sock.set_inheritable(True)
    return sock


def url_of(host: str, port: int, token: str) -> str:
    """The address to open: loopback for a wildcard bind, IPv6 in brackets, with the token."""
    shown = "127.0.0.1" if host in ("0.0.0.0", "", "::") else host
    if ":" in shown:
        shown = f"[{shown}]"
    return f"http://{shown}:{port}/?token={token}"


def run(args: argparse.Namespace) -> int:
    import logging
    import secrets

    from kidneyseg._optional import require

    require("uvicorn", "kidneyseg serve")
    import uvicorn

    from kidneyseg.reporting.server import Viewer, create_app

    log = logging.getLogger("kidneyseg.serve")
    if not 0 <= args.port <= 65535:
        raise InputError("port out of range", found=args.port, expected="0..65535")
    if args.max_upload_mb <= 0:
        raise InputError("--max-upload-mb must be positive", found=args.max_upload_mb, expected="> 0")
    if args.max_studies < 1:
        raise InputError("--max-studies must be at least 1", found=args.max_studies, expected=">= 1")
    if args.model is not None and not (args.model / "model.json").is_file():
        raise InputError("model folder has no model.json", path=args.model, expected="a folder from `kidneyseg train`",
                         fix="pass the model folder itself")
    if not _is_loopback(args.host):
        log.warning("binding to %s: anyone who can reach this address and has the token in the printed address "
                    "can upload and download studies", args.host)
    viewer = Viewer(args.workdir, args.model, max_upload_bytes=int(args.max_upload_mb * 1024 * 1024), task=args.task,
                    max_studies=args.max_studies, uncertainty=args.uncertainty,
                    qc=not args.no_qc)
    sock = bind(args.host, args.port)
    port = int(sock.getsockname()[1])
    token = secrets.token_urlsafe(32)
    app = create_app(viewer, host=args.host, port=port, token=token)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    log.info("working folder %s; model %s", viewer.workdir,
             viewer.model_dir or "built-in default of each study's modality")
    print(f"kidneyseg viewer: open {url_of(args.host, port, token)}", flush=True)
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()
    return 0
