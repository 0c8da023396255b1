"""Errors that the command line turns into one line on stderr and exit code 2.

Every input check raises :class:`KidneysegError` (or a subclass) with the file,
the value found, the value expected and how to fix it.  Never ``assert`` for
input checks and never print and carry on.
"""

from __future__ import annotations

from os import PathLike


class KidneysegError(Exception):
    """A user-facing error: bad input, bad option, missing optional dependency.

    Parameters
    ----------
    what:
        Short statement of the problem ("spacing is not positive").
    path:
        The file or folder concerned, if any.
    found:
        The value found.
    expected:
        The value expected.
    fix:
        What the user can do about it.
    """

    def __init__(
        self,
        what: str,
        *,
        path: str | PathLike[str] | None = None,
        found: object | None = None,
        expected: object | None = None,
        fix: str | None = None,
    ) -> None:
        self.what = what
        self.path = None if path is None else str(path)
        self.found = found
        self.expected = expected
        self.fix = fix
        super().__init__(self._message())

    def _message(self) -> str:
        parts = []
        if self.path:
            parts.append(f"{self.path}: {self.what}")
        else:
            parts.append(self.what)
        if self.found is not None:
            parts.append(f"found {self.found}")
        if self.expected is not None:
            parts.append(f"expected {self.expected}")
        msg = "; ".join(parts)
        if self.fix:
            msg += f". Fix: {self.fix}"
        return msg


class InputError(KidneysegError):
    """An input file or folder cannot be used."""


class GeometryError(InputError):
    """Spacing, affine, orientation or grid problems."""


class OutputError(KidneysegError):
    """An output cannot be written where asked."""


class MissingDependencyError(KidneysegError):
    """An optional dependency is not installed."""


class RegistryError(KidneysegError):
    """A name that is not in a registry; the message lists the valid names."""


def unknown_name(kind: str, name: str, valid: list[str] | tuple[str, ...]) -> RegistryError:
    """Build the error for a name missing from a registry, listing the valid names."""
    return RegistryError(
        f"unknown {kind} '{name}'",
        expected="one of: " + ", ".join(sorted(valid)),
        fix=f"pick one of the listed {kind} names",
    )
