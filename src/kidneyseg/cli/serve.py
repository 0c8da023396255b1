"""`kidneyseg serve`: a local web viewer (open/upload a study, predict, scroll with overlays, download).

Binds to 127.0.0.1 by default; everything it writes stays under ``--workdir``
(files put in ``WORKDIR/inbox/`` can be opened from the page).
"""

from __future__ import annotations

import argparse
import ipaddress
from pathlib import Path

from kidneyseg.errors import InputError

NAME = "serve"
HELP = "local web viewer: upload a study, run the model, scroll slices with overlays, download results"
DESCRIPTION = __doc__


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1, this machine only)")
    parser.add_argument("--port", type=int, default=8000, help="port (default 8000; 0 picks a free one)")
    parser.add_argument("--model", type=Path, metavar="DIR", help="model folder used by 'Run prediction'")
    parser.add_argument("--task", help="label convention when the model does not name one")
    parser.add_argument("--workdir", type=Path, default=Path("kidneyseg_viewer"),
                        help="working folder: uploads, predictions, reports (default ./kidneyseg_viewer)")
    parser.add_argument("--max-upload-mb", type=float, default=1024.0, help="largest upload accepted (MB, default 1024)")


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def run(args: argparse.Namespace) -> int:
    import logging

    from kidneyseg._optional import require

    require("uvicorn", "kidneyseg serve")
    import uvicorn

    from kidneyseg.reporting.server import Viewer, create_app

    log = logging.getLogger("kidneyseg.serve")
    if not 0 <= args.port <= 65535:
        raise InputError("port out of range", found=args.port, expected="0..65535")
    if args.max_upload_mb <= 0:
        raise InputError("--max-upload-mb must be positive", found=args.max_upload_mb, expected="> 0")
    if args.model is not None and not (args.model / "model.json").is_file():
        raise InputError("model folder has no model.json", path=args.model, expected="a folder from `kidneyseg train`",
                         fix="pass the model folder itself")
    if not _is_loopback(args.host):
        log.warning("binding to %s: the viewer has no login; anyone who can reach this address can upload and "
                    "download studies", args.host)
    viewer = Viewer(args.workdir, args.model, max_upload_bytes=int(args.max_upload_mb * 1024 * 1024), task=args.task)
    app = create_app(viewer)
    config = uvicorn.Config(app, host=args.host, port=args.port, log_level="warning")
    server = uvicorn.Server(config)
    log.info("kidneyseg viewer on http://%s:%s/ (working folder %s)", args.host, args.port, viewer.workdir)
    server.run()
    return 0
