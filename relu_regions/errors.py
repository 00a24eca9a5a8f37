"""The one exception type for bad user input (docs/architecture.md, Conventions), and the one
reader of user-named files."""

from __future__ import annotations

import os
from pathlib import Path


class InputError(ValueError):
    """A value the user gave is not allowed.

    Raised once, at the boundary, with a message that names the value and what is allowed.
    The CLI prints it as ``error: <message>`` and exits with code 2.
    """


def read_user_file(path: Path | str, what: str, max_bytes: int) -> tuple[Path, str]:
    """(Path, UTF-8 text) of a file the user named; ``what`` names it in the messages ("CSV
    file"). Refuses a non-path, a missing or non-regular file, more than ``max_bytes`` and an
    unreadable or non-UTF-8 file, each with one InputError line."""
    try:
        p = Path(os.fspath(path))
    except TypeError:
        raise InputError(f"{what} path {path!r} must be a path string") from None
    if not p.is_file():
        raise InputError(f"{what} {str(p)!r} does not exist or is not a regular file")
    try:
        if p.stat().st_size > max_bytes:
            raise InputError(f"{what} {str(p)!r} is larger than {max_bytes // 2**20} MiB")
        return p, p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise InputError(f"{what} {str(p)!r} cannot be read: {err}") from None
