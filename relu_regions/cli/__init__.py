"""The ``relu-regions`` command: parses arguments, calls the Python API, prints. No logic here.

``parser`` builds the parser (light: no torch); each command lives in its own module (``count``,
``train``, ``sweep``, ``track``, ``gmp``, ``report``, ``demo``), each with ``run(args) -> dict`` and
``show(dict) -> str``, and only the chosen one is imported.
"""

from __future__ import annotations

import importlib
import json
import sys
from collections.abc import Sequence

from ..errors import InputError
from .parser import build_parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    args.argv = argv
    if args.command is None:
        parser.print_help()
        return 2
    command = importlib.import_module(f"{__name__}.{args.command}")
    try:
        out = command.run(args)
    except InputError as e:
        print(f"relu-regions {args.command}: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # a path the user named cannot be written (e.g. --out under a file)
        where = f" ({e.filename})" if e.filename else ""
        print(f"relu-regions {args.command}: error: {e.strerror or e}{where}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    try:
        print(json.dumps(out, indent=2) if args.json else command.show(out))
    except BrokenPipeError:  # e.g. piped into head
        sys.stderr.close()
    return 0
