"""What the commands share: the argparse subclass and its help formatter, option value types
(numbers, intervals, phases; a value may start with '-'), and the FitConfig options of ``train``.
Torch-free: building the parser imports this module."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import difflib
import math
import re
import sys
import textwrap
from collections.abc import Sequence
from types import ModuleType
from typing import NoReturn

from ..errors import InputError
from ..training import config


class Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (and exit code 2), a value may start with '-'
    (``--interval -1,1``, see :func:`join_values`), and an epilog may be computed when the help
    is shown (``lazy_epilog``: a function, so that --help imports nothing it does not print)."""

    lazy_epilog = None

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", _Formatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message}\n")

    def parse_args(self, args: Sequence[str] | None = None,
                   namespace: argparse.Namespace | None = None) -> argparse.Namespace:
        """As argparse, but an unknown option names the command and the closest known one, also
        when a required option is missing (a misspelt required option is the typo it is, not a
        missing option)."""
        args = sys.argv[1:] if args is None else list(args)
        with _nothing_required(self):
            lenient, extras = self.parse_known_args(args, argparse.Namespace())
        if extras:
            sub = self._subparsers._group_actions[0].choices.get(
                getattr(lenient, "command", None)) if self._subparsers else None
            parser = sub or self
            known = [s for a in parser._actions for s in a.option_strings]
            first = extras[0].split("=")[0]
            close = difflib.get_close_matches(first.lower(), known, n=1)
            hint = f" (did you mean {close[0]}?)" if close and first.startswith("-") else ""
            parser.error(f"unrecognized argument{'s' if len(extras) > 1 else ''}: "
                         f"{' '.join(extras)}{hint}")
        return self.parse_known_args(args, namespace)[0]

    def parse_known_args(self, args: Sequence[str] | None = None,
                         namespace: argparse.Namespace | None = None
                         ) -> tuple[argparse.Namespace, list[str]]:
        args = sys.argv[1:] if args is None else list(args)
        return super().parse_known_args(join_values(self, args), namespace)

    def format_help(self) -> str:
        if self.lazy_epilog is not None:
            self.epilog, self.lazy_epilog = self.lazy_epilog(), None
        return super().format_help()


class _Formatter(argparse.HelpFormatter):
    """Descriptions and epilogs: paragraphs are wrapped, lines indented by two spaces (the
    examples) are kept as they are."""

    def _fill_text(self, text, width, indent):
        out = []
        for block in text.split("\n\n"):
            lines = block.split("\n")
            if any(line.startswith("  ") for line in lines):
                out.append("\n".join(indent + line for line in lines))
            else:
                out.append(textwrap.fill(" ".join(lines), width, initial_indent=indent,
                                         subsequent_indent=indent))
        return "\n\n".join(out)


# A value that starts with '-': a number (-1, -.5, -1,1), a parenthesis, or a name of the
# expression language (-pi, -x**2, -sin(x)). '--anything' is never a value.
_DASH_VALUE = re.compile(r"-(?:[\d.(]|([A-Za-z_]\w*))")


def join_values(parser: argparse.ArgumentParser, args: list[str]) -> list[str]:
    """``--opt -1,1`` -> ``--opt=-1,1`` for each option of ``parser`` that takes one value.

    argparse reads a token that starts with '-' (and is not a plain negative number) as an
    option, so ``--interval -1,1`` failed with "expected one argument" while
    ``--interval=-1,1`` worked. Joining only value-like tokens keeps ``--out --force``'s error.
    """
    takes_value = {s for a in parser._actions if a.option_strings and a.nargs is None
                   for s in a.option_strings}
    out, i = [], 0
    while i < len(args):
        token = args[i]
        if token == "--":  # everything after is positional
            return out + args[i:]
        nxt = args[i + 1] if i + 1 < len(args) else None
        if token.startswith("--") and token not in parser._option_string_actions:
            # argparse accepts a unique prefix (--int for --interval): so does this
            full = [s for s in parser._option_string_actions if s.startswith(token)]
            token = full[0] if len(full) == 1 else token
        if token in takes_value and nxt is not None and _is_dash_value(nxt):
            out.append(f"{token}={nxt}")
            i += 2
            continue
        out.append(token)
        i += 1
    return out


def _is_dash_value(token: str) -> bool:
    m = _DASH_VALUE.match(token)
    if not m:
        return False
    if m[1] is None:
        return True
    from ..targets import CONSTANTS, FUNCTIONS, VARIABLES  # numpy: only when a value needs it

    return m[1] in CONSTANTS or m[1] in FUNCTIONS or m[1] in VARIABLES


def float_list(text: str) -> list[float]:
    """'0.3,0.5,0.7' -> [0.3, 0.5, 0.7]; each value a number or a constant expression of the
    target language ('-pi', 'pi/2', '2*e'); anything else is a usage error."""
    from ..targets import parse_number  # numpy: only when a value needs it

    values = []
    for v in text.split(","):
        try:
            values.append(parse_number(v.strip()))
        except InputError as err:
            if "not finite" in str(err):
                raise argparse.ArgumentTypeError(f"expected finite numbers, got {text!r}") from None
            raise argparse.ArgumentTypeError(
                f"expected comma-separated numbers (or constants such as pi, -pi/2), got "
                f"{text!r}: {v.strip()!r} is not a number") from None
    return values


def interval(text: str) -> tuple[float, float]:
    values = float_list(text)
    if len(values) != 2 or not values[0] < values[1]:
        raise argparse.ArgumentTypeError(f"expected LO,HI with LO < HI, got {text!r}")
    return values[0], values[1]


def phase_spec(text: str) -> config.Phase:
    """'lm:400' or 'adam:1000:1e-3' -> Phase (``training.config.parse_phase``)."""
    try:
        return config.parse_phase(text, "phase")
    except InputError as e:
        raise argparse.ArgumentTypeError(f"expected OPTIMIZER:STEPS[:LR] (e.g. lm:100, "
                                         f"adam:1000:1e-3): {e}") from None


CLI_PARSERS = {"phase": phase_spec, "interval": interval}


def add_fit_options(parser: argparse.ArgumentParser) -> None:
    """One option per FitConfig field (its metadata: flag, help, choices, parse), so a new field
    reaches ``train`` without editing the CLI. Options not given stay out of the namespace
    (``argparse.SUPPRESS``): the config's own defaults apply."""
    for f in config.fields():
        meta = f.metadata
        if meta.get("cli") is False:
            continue
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        flag = meta.get("flag", "--" + f.name.replace("_", "-"))
        shown = default.spec() if isinstance(default, config.Phase) else default
        help_text = meta.get("help", f.name) + ("" if default is None else f" (default {shown})")
        kwargs = dict(dest=f.name, default=argparse.SUPPRESS, help=help_text)
        if isinstance(default, bool):
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, **kwargs)
            continue
        parse = meta.get("parse", type(default) if default is not None else str)
        parser.add_argument(flag, type=CLI_PARSERS.get(parse, parse), choices=meta.get("choices"),
                            metavar=meta.get("metavar"), **kwargs)


def fit_overrides(args: argparse.Namespace) -> dict:
    """The FitConfig fields given on the command line."""
    return {f.name: getattr(args, f.name) for f in config.fields()
            if f.metadata.get("cli") is not False and hasattr(args, f.name)}


def progress_shown(args: argparse.Namespace) -> bool:
    """A progress bar for a long command: on a terminal, unless the output is JSON."""
    return not args.json and sys.stderr.isatty()


def say_if_compiling(module: ModuleType) -> None:
    """A fresh environment's first count compiles the counter's kernels (seconds, once): say so
    on stderr, where it does not mix with --json."""
    from ..analysis import jit  # numba: only for the commands that count

    if not jit.is_cached(module):
        print(f"compiling the exact counter ({module.__name__.rpartition('.')[2]}) once; later "
              f"counts load it from {jit.cache_dir()}", file=sys.stderr)


def option_names(message: str) -> str:
    """``message`` (from the Python API) with FitConfig's two-word setting names spelled as the
    command line's options: ``grow_from`` -> ``--grow-from``."""
    names = [f.name for f in dataclasses.fields(config.FitConfig) if "_" in f.name]
    return re.sub(r"(?<![\w-])(" + "|".join(names) + r")\b",
                  lambda m: "--" + m.group(1).replace("_", "-"), message)


def progress_mode(args: argparse.Namespace) -> bool | str:
    """How a long command shows progress: none with --quiet, a line every ~10 s when stderr is
    piped, else a bar (none with --json on a terminal, whose output is the JSON)."""
    if args.quiet:
        return False
    if not sys.stderr.isatty():
        return "lines"
    return not args.json


def finite_numbers(cells: Sequence[str]) -> list[float] | None:
    """CSV cells as finite floats, or None if one is not a finite number."""
    try:
        values = [float(c) for c in cells]
    except ValueError:
        return None
    return values if all(math.isfinite(v) for v in values) else None


@contextlib.contextmanager
def _nothing_required(parser: argparse.ArgumentParser):
    """Every option of ``parser`` and its commands optional for a while (to find unknown ones
    before argparse reports a missing required one)."""
    actions = []
    stack = [parser]
    while stack:
        p = stack.pop()
        for action in p._actions:
            if action.required:
                actions.append(action)
                action.required = False
            if isinstance(action, argparse._SubParsersAction):
                stack.extend(action.choices.values())
    try:
        yield
    finally:
        for action in actions:
            action.required = True
