"""`kidneyseg <command>`: one entry point, one module per command.

Each module in this package (not starting with ``_``) defines::

    NAME = "info"                 # the subcommand
    HELP = "one line of help"
    def add_arguments(parser: argparse.ArgumentParser) -> None: ...
    def run(args: argparse.Namespace) -> int: ...

Commands are discovered from the package, so each command lives in its own
file.  Heavy imports (torch, MONAI) happen inside ``run``.

Errors derived from :class:`kidneyseg.errors.KidneysegError` become one line
on stderr and exit code 2; ``--debug`` shows the traceback instead.  A reader
that closes the output pipe early (``kidneyseg info DIR | head``) ends the
command quietly with exit code 1, as the Python documentation recommends.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import pkgutil
import sys
from collections.abc import Sequence
from types import ModuleType

from kidneyseg import __version__
from kidneyseg.errors import KidneysegError

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2


def _command_modules() -> list[ModuleType]:
    mods = []
    for info in pkgutil.iter_modules(__path__):
        if info.name.startswith("_"):
            continue
        mod = importlib.import_module(f"{__name__}.{info.name}")
        if hasattr(mod, "NAME") and hasattr(mod, "run"):
            mods.append(mod)
    return sorted(mods, key=lambda m: m.NAME)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every discovered subcommand."""
    parser = argparse.ArgumentParser(
        prog="kidneyseg",
        description="Kidney, tumour and cyst segmentation in CT, MR and ultrasound.",
    )
    parser.add_argument("--version", action="version", version=f"kidneyseg {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    parser.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for mod in _command_modules():
        p = sub.add_parser(mod.NAME, help=mod.HELP, description=getattr(mod, "DESCRIPTION", mod.HELP))
        p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
        mod.add_arguments(p)
        p.set_defaults(_run=mod.run)
    return parser


def _configure_logging(quiet: bool) -> None:
    logging.basicConfig(
        level=logging.WARNING if quiet else logging.INFO,
        format="%(levelname)s: %(message)s",
        stream=sys.stderr,
    )
    logging.captureWarnings(True)


def _plain_pages() -> None:
    """Ask numpy not to madvise its large arrays as transparent huge pages, unless ``NUMPY_MADVISE_HUGEPAGE`` says.

    With the Linux defaults of many distributions (THP ``enabled=madvise``, ``defrag=madvise``) a madvised
    allocation compacts memory synchronously on its first touch when no free huge page is at hand, which on
    a machine whose memory is full of page cache stalls a fresh process for seconds: the CT default on a
    512x512x200 CT took 12.9-14.0 s with huge pages and 7.6 s without, on this project's machine, same code
    (docs/prediction.md, "Speed"). Ordinary 4 KiB pages cost a few more page faults and never stall.
    """
    if "NUMPY_MADVISE_HUGEPAGE" in os.environ:  # the user's choice, which numpy read at import
        return
    try:
        from numpy._core.multiarray import _set_madvise_hugepage  # type: ignore[attr-defined]
    except ImportError:  # pragma: no cover - numpy < 2 spells it numpy.core
        try:
            from numpy.core.multiarray import _set_madvise_hugepage  # type: ignore[no-redef]
        except ImportError:
            return
    _set_madvise_hugepage(False)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code (0 ok, 1 some work failed, 2 bad input)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    _plain_pages()
    debug = bool(getattr(args, "debug", False)) or os.environ.get("KIDNEYSEG_DEBUG") == "1"
    _configure_logging(getattr(args, "quiet", False))
    if not getattr(args, "command", None):
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    try:
        code = int(args._run(args) or 0)
        sys.stdout.flush()  # a closed pipe (`kidneyseg info DIR | head`) shows here, not at interpreter exit
        return code
    except BrokenPipeError:
        _silence_stdout()
        return EXIT_FAILURE
    except KidneysegError as exc:
        if debug:
            raise
        print(f"kidneyseg {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("kidneyseg: interrupted", file=sys.stderr)
        return 130


def _silence_stdout() -> None:
    """After a broken pipe: point stdout at /dev/null so the flush at exit stays quiet (Python docs, SIGPIPE note)."""
    try:
        fd = sys.stdout.fileno()
    except (AttributeError, OSError, ValueError):  # a replaced stdout (tests): nothing to redirect
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, fd)
    finally:
        os.close(devnull)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
