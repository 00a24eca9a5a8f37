"""Targets and data sets: a safe expression parser; dense, sparse and CSV data
(docs/architecture.md).

The paper's experiments (arXiv:2311.18022) fit x^3, x^11, sin(x), tanh(3x) on 500 evenly spaced
points in [0, 1] ("dense") or on 10 random training and 10 random test points ("sparse").

    >>> f = parse_target("x**3")
    >>> data = dense(f, (0.0, 1.0), points=500)

The parser never hands user text to eval/exec/compile: it parses with `ast`, checks every node
against a whitelist once, and evaluates the checked tree itself with numpy.
"""

from __future__ import annotations

import ast
import csv
import difflib
import io
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from numpy.typing import ArrayLike

from .errors import InputError, read_user_file
from .validation import check_int, check_interval

MAX_TEXT = 500  # characters of target text
MAX_DEPTH = 32  # nesting levels of the expression tree
MAX_EXPONENT = 1000.0  # largest |constant exponent| in a power
MAX_CSV_BYTES = 64 * 2**20

# Whitelisted functions by bare name -> (numpy function, number of arguments).
FUNCTIONS: dict[str, tuple[object, int]] = {
    **{name: (getattr(np, name), 1) for name in (
        "sin", "cos", "tan", "arcsin", "arccos", "arctan",
        "sinh", "cosh", "tanh", "arcsinh", "arccosh", "arctanh",
        "exp", "expm1", "exp2", "log", "log1p", "log2", "log10",
        "sqrt", "cbrt", "square", "abs", "sign", "floor", "ceil",
    )},
    **{name: (getattr(np, name), 2) for name in ("maximum", "minimum", "hypot", "arctan2")},
}
CONSTANTS = {"pi": math.pi, "e": math.e}
# Names people type from other languages -> ours (a hint in the refusal, never accepted).
ALIASES = {"max": "maximum", "min": "minimum", "ln": "log", "asin": "arcsin", "acos": "arccos",
           "atan": "arctan", "asinh": "arcsinh", "acosh": "arccosh", "atanh": "arctanh",
           "atan2": "arctan2", "fabs": "abs", "sgn": "sign", "sq": "square", "pow": "**"}


def _help_text() -> str:
    one = sorted(n for n, (_, k) in FUNCTIONS.items() if k == 1)
    two = sorted(n for n, (_, k) in FUNCTIONS.items() if k == 2)
    return ("Expressions (--target, and numbers in options such as --interval=-pi,pi): numbers, "
            "the variable x (y, and r = hypot(x, y), make a 2D target), the constants "
            f"{', '.join(CONSTANTS)}; operators + - * / and ** for powers (not ^); "
            f"functions {', '.join(one)}; with two arguments {', '.join(two)}. "
            "Example: 'tanh(3*x) + 0.1*sin(20*x)'.")


HELP = _help_text()  # for --help texts: the whole language in one paragraph
_BINARY = {ast.Add: np.add, ast.Sub: np.subtract, ast.Mult: np.multiply,
           ast.Div: np.divide, ast.Pow: np.power}
_UNARY = {ast.UAdd: np.positive, ast.USub: np.negative}

# Checked tree: ("x",) | ("y",) | ("r",) | ("const", float) | ("unary", ufunc, node)
#               | ("binary", ufunc, node, node) | ("call", ufunc, node, ...)


def _short(text: str) -> str:
    """Keep error messages one short line."""
    return text if len(text) <= 60 else text[:57] + "..."


def _snippet(node: ast.AST, text: str) -> str:
    piece = ast.get_source_segment(text, node) or type(node).__name__
    return piece if len(piece) <= 40 else piece[:37] + "..."


def _refuse(text: str, what: str) -> InputError:
    return InputError(f"target {_short(text)!r}: {what}")


_ALLOWED = "only numbers, x (and y, r for 2D), pi, e, + - * / ** and whitelisted functions"
VARIABLES = ("x", "y", "r")  # r = hypot(x, y); y or r make a 2D target


def _check(node: ast.AST, text: str, depth: int) -> tuple:
    """Validate one AST node against the whitelist and return the checked tree (core trusts it)."""
    if depth > MAX_DEPTH:
        raise _refuse(text, f"nested deeper than {MAX_DEPTH} levels")
    piece = repr(_snippet(node, text))
    if isinstance(node, ast.Constant):
        v = node.value
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise _refuse(text, f"{piece} is not allowed; {_ALLOWED} (real numbers only)")
        try:
            v = float(v)  # a huge int literal fails here instead of becoming inf silently
        except OverflowError:
            raise _refuse(text, f"number {piece} is too large") from None
        if not math.isfinite(v):
            raise _refuse(text, f"number {piece} is not finite")
        return ("const", v)
    if isinstance(node, ast.Name):
        if node.id in VARIABLES:
            return (node.id,)
        if node.id in CONSTANTS:
            return ("const", CONSTANTS[node.id])
        if node.id in FUNCTIONS:
            raise _refuse(text, f"function {node.id} needs parentheses: write {node.id}(x)")
        raise _refuse(text, f"name {node.id!r} is not allowed"
                      f"{_closest(node.id, (*VARIABLES, *CONSTANTS, *FUNCTIONS))}; use x (y, r "
                      "in 2D), pi, e or a function call")
    if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
        return _fold(("unary", _UNARY[type(node.op)], _check(node.operand, text, depth + 1)))
    if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
        left = _check(node.left, text, depth + 1)
        right = _check(node.right, text, depth + 1)
        if isinstance(node.op, ast.Pow):
            # Constants are already folded in float64: an exponent is never a Python int power.
            if right[0] == "const" and not abs(right[1]) <= MAX_EXPONENT:
                raise _refuse(text, f"exponent {right[1]:g} in {piece} is too large "
                              f"(|exponent| <= {MAX_EXPONENT:g} allowed)")
            if right[0] != "const" and any(isinstance(n, ast.BinOp) and isinstance(n.op, ast.Pow)
                                           for n in ast.walk(node.right)):
                raise _refuse(text, f"power tower {piece} is not allowed; a variable exponent "
                              "may not contain another power")
        return _fold(("binary", _BINARY[type(node.op)], left, right))
    if isinstance(node, ast.Call):
        if not isinstance(node.func, ast.Name):
            if isinstance(node.func, ast.Attribute):
                raise _refuse(text, f"call {piece} is not allowed; call whitelisted functions "
                              f"by bare name, e.g. {node.func.attr}(x)")
            args = ", ".join(_snippet(a, text) for a in node.args) or "..."
            left = _snippet(node.func, text)
            left = left if isinstance(node.func, (ast.Constant, ast.Call)) else f"({left})"
            raise _refuse(text, f"{piece} is not allowed; to multiply, write {left}*({args})")
        name = node.func.id
        if name in VARIABLES or name in CONSTANTS:
            args = ", ".join(_snippet(a, text) for a in node.args) or "..."
            raise _refuse(text, f"{name}({args}) multiplies nothing: write {name}*({args})")
        if name not in FUNCTIONS:
            raise _refuse(text, f"function {name!r} is not allowed{_closest(name, FUNCTIONS)}; "
                          "allowed: " + ", ".join(sorted(FUNCTIONS)))
        if node.keywords:
            raise _refuse(text, f"keyword arguments in {piece} are not allowed")
        fn, arity = FUNCTIONS[name]
        if len(node.args) != arity or any(isinstance(a, ast.Starred) for a in node.args):
            raise _refuse(text, f"{name} takes exactly {arity} argument(s), got {piece}")
        return _fold(("call", fn, *(_check(a, text, depth + 1) for a in node.args)))
    if isinstance(node, ast.Attribute) and (node.attr in CONSTANTS or node.attr in FUNCTIONS):
        raise _refuse(text, f"{piece} is not allowed; write {node.attr} without the prefix")
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitXor):
        raise _refuse(text, f"use ** for powers: {text.replace('^', '**')}")
    if isinstance(node, (ast.UnaryOp, ast.BinOp)):
        raise _refuse(text, f"operator in {piece} is not allowed; only unary + -, and + - * / **")
    raise _refuse(text, f"{piece} ({type(node).__name__}) is not allowed; {_ALLOWED}")


def _closest(name: str, allowed) -> str:
    """' (did you mean maximum?)' for a near miss or a name from another language, else ''."""
    if name in ALIASES:
        return f" (did you mean {ALIASES[name]}?)"
    allowed = list(allowed)
    if name.lower() in allowed:
        return f" (did you mean {name.lower()}?)"
    close = difflib.get_close_matches(name, allowed, n=1)
    return f" (did you mean {close[0]}?)" if close else ""


_SUPERSCRIPTS = str.maketrans("⁰¹²³⁴⁵⁶⁷⁸⁹", "0123456789")


def _syntax_hint(text: str) -> str | None:
    """How to fix the common ways a formula from paper or another language fails to parse:
    ``3x``, ``sin x``, ``x^``, ``x²``, ``|x|``, ``y = ...``. None when no rule applies."""
    names = "|".join(sorted(FUNCTIONS, key=len, reverse=True))
    # sin x -> sin(x) only where the argument ends the term (sin x**2 could mean either).
    fixed = re.sub(rf"\b({names})\s+([A-Za-z_]\w*|\d+\.?\d*|\.\d+)(?=\s*(?:[-+),]|$))",
                   r"\1(\2)", text)
    if fixed != text:
        return f"write {fixed}"
    m = re.search(rf"\b({names})\s+[\w.]", text)
    if m:
        return f"a function's argument goes in parentheses: {m[1]}(...)"
    # A number or a closing parenthesis directly before a name or '(' ; not 1e5 (an exponent).
    fixed = re.sub(r"((?<![\w.])(?:\d+\.?\d*|\.\d+)(?![eE][+-]?\d)|\))\s*(?=[A-Za-z_(])",
                   r"\1*", text)
    if fixed != text:
        return f"write {fixed}"
    if "^" in text:
        return f"use ** for powers: {text.replace('^', '**')}"
    if any(c in text for c in "⁰¹²³⁴⁵⁶⁷⁸⁹"):
        fixed = re.sub("[⁰¹²³⁴⁵⁶⁷⁸⁹]+", lambda k: "**" + k[0].translate(_SUPERSCRIPTS), text)
        return f"use ** for powers: {fixed}"
    if re.fullmatch(r"\|[^|]+\|", text) or text.count("|") >= 2:
        return "write abs(...) for |...|, e.g. abs(x)"
    if "=" in text:
        return f"give only the right-hand side, e.g. {text.split('=')[-1].strip() or 'x**3'}"
    return None


def _fold(tree: tuple) -> tuple:
    """Replace an operation on constants by its float64 value (never Python int arithmetic)."""
    if all(t[0] == "const" for t in tree[2:]):
        with np.errstate(all="ignore"):
            return ("const", float(tree[1](*(np.float64(t[1]) for t in tree[2:]))))
    return tree


def _evaluate(tree: tuple, env: dict):
    kind = tree[0]
    if kind in VARIABLES:
        return env[kind]
    if kind == "const":
        return np.float64(tree[1])  # a scalar: numpy broadcasts it
    return tree[1](*(_evaluate(t, env) for t in tree[2:]))


def _uses(tree: tuple) -> set:
    if tree[0] in VARIABLES:
        return {tree[0]}
    return set().union(*(_uses(t) for t in tree[2:] if isinstance(t, tuple)))


@dataclass(frozen=True)
class Target:
    """A checked target expression y = f(x); call it on float64 arrays."""

    text: str
    _tree: tuple = field(repr=False, compare=False)

    @property
    def dims(self) -> int:
        """1 for a target in x alone, 2 when it uses y or r."""
        return 2 if _uses(self._tree) & {"y", "r"} else 1

    def __call__(self, x) -> np.ndarray:
        """Evaluate on points `x` ((n,) in 1D, (n, 2) in 2D); InputError if a value is not
        finite."""
        try:
            x = np.asarray(x, dtype=np.float64)
        except (TypeError, ValueError):
            raise InputError(f"points for target {_short(self.text)!r} must be numbers") from None
        if self.dims == 2:
            if x.ndim != 2 or x.shape[1] != 2:
                raise InputError(f"target {_short(self.text)!r} is 2D; points must be (n, 2)")
            env = {"x": x[:, 0], "y": x[:, 1], "r": np.hypot(x[:, 0], x[:, 1])}
            shape = x.shape[:1]
        else:
            env, shape = {"x": x}, x.shape
        with np.errstate(all="ignore"):
            y = np.array(np.broadcast_to(_evaluate(self._tree, env), shape), dtype=np.float64)
        bad = ~np.isfinite(y)
        if bad.any():
            i = np.flatnonzero(bad.ravel())[0]
            at = x.reshape(len(y.ravel()), -1)[i].tolist()
            raise InputError(f"target {_short(self.text)!r} is not finite at "
                             f"x={at[0] if len(at) == 1 else tuple(at)!r} (value {y.ravel()[i]}); "
                             "choose an interval where it is finite")
        return y

    def to_dict(self) -> dict:
        return {"text": self.text}


def parse_target(text: str | Target) -> Target:
    """Parse a target such as ``"x**3"`` or ``"tanh(3*x)"`` into a safe callable Target."""
    if isinstance(text, Target):
        return text
    if not isinstance(text, str):
        raise InputError(f"target must be a string expression in x, got {type(text).__name__}")
    if len(text) > MAX_TEXT:
        raise InputError(f"target text has {len(text)} characters; at most {MAX_TEXT} allowed")
    if not text.strip():
        raise InputError("target text is empty; give an expression in x, e.g. 'x**3'")
    if not text.strip().replace("\t", " ").isprintable():
        raise InputError(f"target {_short(text)!r} contains control characters; only printable "
                         "text is allowed")
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except (SyntaxError, ValueError, RecursionError, MemoryError) as err:
        hint = _syntax_hint(text.strip())
        raise InputError(f"target {_short(text)!r} is not a valid expression: "
                         + (hint or f"{getattr(err, 'msg', None) or err}")) from None
    return Target(text=text.strip(), _tree=_check(tree.body, text.strip(), 0))


def parse_number(text: str | float, what: str = "value") -> float:
    """A finite number written in the expression language, without variables: ``-1``, ``pi``,
    ``-pi/2``, ``2*e``, ``1e-3``, ``sqrt(2)``. Parsed and folded by the same whitelist as
    targets (never eval); ``what`` names the value in the message."""
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        value = float(text)
    elif _is_number(str(text)):  # plain floats, and inf/nan, which are refused below
        value = float(text)
    else:
        try:
            target = parse_target(text)
        except InputError as err:
            raise InputError(f"{what} {str(text)!r} is not a number or a constant expression "
                             f"({str(err).split(': ', 1)[-1]})") from None
        if target._tree[0] != "const":
            raise InputError(f"{what} {str(text)!r} must be a number or an expression of "
                             f"numbers and {', '.join(CONSTANTS)} (no variables)")
        value = target._tree[1]
    if not math.isfinite(value):
        raise InputError(f"{what} {str(text)!r} is not finite")
    return value


# --------------------------------------------------------------------------------------------
# Data sets


@dataclass
class Dataset:
    """Training and test samples in float64: x of shape (n,) in 1D or (n, 2) in 2D, y (n,). For
    dense data the test points are the training points. ``interval`` is (lo, hi) in 1D and one
    (lo, hi) per input in 2D."""

    x: np.ndarray
    y: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray
    interval: tuple
    name: str

    @property
    def dims(self) -> int:
        return 1 if self.x.ndim == 1 else self.x.shape[1]

    @property
    def box(self) -> list:
        """One (lo, hi) per input."""
        return [tuple(self.interval)] if self.dims == 1 else [tuple(b) for b in self.interval]

    @property
    def held_out(self) -> bool:
        """True when the test points are not the training points (sparse, a held-out share)."""
        return not (self.test_x is self.x or np.array_equal(self.test_x, self.x))

    def to_dict(self) -> dict:
        box = [[float(v) for v in b] for b in self.box]
        return {"name": self.name, "interval": box[0] if self.dims == 1 else box,
                "x": self.x.tolist(), "y": self.y.tolist(),
                "test_x": self.test_x.tolist(), "test_y": self.test_y.tolist()}



DEFAULT_POINTS = {1: 500, 2: 41}  # 1D: points; 2D: points per axis (a 41 x 41 grid)


def dense(target: str | Target, interval: Sequence[float] = (0.0, 1.0),
          points: int | None = None) -> Dataset:
    """Evenly spaced samples of the target on [lo, hi] (np.linspace); test = train.

    1D: ``points`` samples (default 500, the paper's main setting on [0, 1]; arXiv:2311.18022).
    2D (a target in x and y): a ``points`` x ``points`` grid on the square [lo, hi]^2 (default
    41 per axis).
    """

    f = parse_target(target)
    lo, hi = check_interval(interval)
    points = check_int(DEFAULT_POINTS[f.dims] if points is None else points, "points", low=2)
    axis = np.linspace(lo, hi, points)
    if f.dims == 1:
        y = f(axis)
        return Dataset(x=axis, y=y, test_x=axis, test_y=y, interval=(lo, hi), name=f.text)
    x = np.stack(np.meshgrid(axis, axis, indexing="ij"), axis=-1).reshape(-1, 2)
    y = f(x)
    return Dataset(x=x, y=y, test_x=x, test_y=y, interval=((lo, hi), (lo, hi)), name=f.text)


def sparse(target: str | Target, interval: Sequence[float] = (0.0, 1.0), n_train: int = 10,
           n_test: int | None = None, seed: int = 0) -> Dataset:
    """`n_train` uniform random training points and separate random test points, sorted.

    The paper's sparse setting uses 10 training and 10 test points (arXiv:2311.18022, the text of
    Table 1). Train and test draw from independent child streams of `seed`, so changing `n_test`
    never changes the training points.
    """

    f = parse_target(target)
    lo, hi = check_interval(interval)
    n_train = check_int(n_train, "n_train", low=2)
    n_test = n_train if n_test is None else check_int(n_test, "n_test", low=1)
    seed = check_int(seed, "seed", low=0)
    train_rng, test_rng = (np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(2))
    if f.dims == 2:  # uniform on the square [lo, hi]^2
        x, tx = train_rng.uniform(lo, hi, (n_train, 2)), test_rng.uniform(lo, hi, (n_test, 2))
        return Dataset(x=x, y=f(x), test_x=tx, test_y=f(tx), interval=((lo, hi), (lo, hi)),
                       name=f.text)
    x = np.sort(train_rng.uniform(lo, hi, n_train))
    tx = np.sort(test_rng.uniform(lo, hi, n_test))
    return Dataset(x=x, y=f(x), test_x=tx, test_y=f(tx), interval=(lo, hi), name=f.text)


def from_csv(path: Path | str, test_fraction: float = 0.0, seed: int = 0) -> Dataset:
    """Read x,y (1D) or x,y,z (2D: z over the points (x, y)) samples from a CSV file (optional
    header row; '#' lines and blank lines skipped).

    Rejects a missing/unreadable file, no data, rows with another number of columns than the
    first, non-numeric or non-finite values and duplicate points. Rows are sorted by x (then y).
    With test_fraction > 0 a seeded random subset becomes the test set; with 0 the test set is the
    training set.
    """
    try:
        test_fraction = float(test_fraction)
    except (TypeError, ValueError):
        raise InputError(f"test_fraction={test_fraction!r} must be a number in [0, 1)") from None
    if not 0.0 <= test_fraction < 1.0:
        raise InputError(f"test_fraction={test_fraction!r} is not allowed; need 0 <= value < 1")
    seed = check_int(seed, "seed", low=0)
    p, text = read_user_file(path, "CSV file", MAX_CSV_BYTES)
    try:
        rows = list(csv.reader(io.StringIO(text)))
    except csv.Error as err:
        raise InputError(f"CSV file {str(p)!r} cannot be read: {err}") from None

    rows_out = []
    header_line = _first_data_line(rows)
    width = None  # 2 columns (x,y) or 3 (x,y,z), fixed by the first data row
    for lineno, row in enumerate(rows, start=1):
        cells = [c.strip() for c in row]
        if not any(cells) or cells[0].startswith("#"):
            continue
        if width is None and len(cells) in (2, 3):
            width = len(cells)
        if len(cells) != width:
            raise InputError(f"CSV file {str(p)!r} line {lineno}: {len(cells)} columns; need "
                             + ("2 (x,y) or 3 (x,y,z)" if width is None else f"{width} like the "
                                "first row"))
        try:
            values = [float(c) for c in cells]
        except ValueError:
            if lineno == header_line and not any(map(_is_number, cells)):
                continue  # a header names every column
            raise InputError(f"CSV file {str(p)!r} line {lineno}: {','.join(cells)!r} is not "
                             f"{width} numbers") from None
        if not all(map(math.isfinite, values)):
            raise InputError(f"CSV file {str(p)!r} line {lineno}: {values} is not finite")
        rows_out.append(values)
    if len(rows_out) < 2:
        raise InputError(f"CSV file {str(p)!r} has {len(rows_out)} data rows; need at least 2")

    table = np.array(rows_out, dtype=np.float64)
    x, y = (table[:, 0], table[:, 1]) if width == 2 else (table[:, :2], table[:, 2])
    order = np.lexsort(x.T[::-1]) if x.ndim == 2 else np.argsort(x, kind="stable")
    x, y = x[order], y[order]
    dup = np.flatnonzero((np.diff(x, axis=0) == 0).reshape(len(x) - 1, -1).all(axis=1))
    if dup.size:
        at = x[dup[0]].tolist()
        raise InputError(f"CSV file {str(p)!r}: duplicate x={at!r}; each point must appear once")
    interval = ((float(x[0]), float(x[-1])) if x.ndim == 1 else
                tuple((float(c.min()), float(c.max())) for c in x.T))
    if x.ndim == 2 and any(lo == hi for lo, hi in interval):
        raise InputError(f"CSV file {str(p)!r}: every x (or y) value is the same; need a 2D spread")
    data = Dataset(x=x, y=y, test_x=x, test_y=y, interval=interval, name=p.stem)
    return hold_out(data, test_fraction, seed, "rows") if test_fraction else data


def hold_out(data: Dataset, fraction: float, seed: int, what: str = "points") -> Dataset:
    """``data`` with a seeded random share ``fraction`` of its points as the test set."""
    if data.held_out:
        raise InputError("the data already has separate test points; drop test_fraction")
    n = len(data.x)
    n_test = max(1, round(fraction * n))
    if n - n_test < 2:
        raise InputError(f"test_fraction={fraction} leaves {n - n_test} training {what} of {n}; "
                         "need at least 2")
    test = np.zeros(n, dtype=bool)
    test[np.random.default_rng(seed).choice(n, n_test, replace=False)] = True
    return Dataset(x=data.x[~test], y=data.y[~test], test_x=data.x[test], test_y=data.y[test],
                   interval=data.interval, name=data.name)


class CallableTarget(Target):
    """A Python callable on numpy arrays as a target (1D: f(x) for x of shape (n,))."""

    def __init__(self, fn):
        object.__setattr__(self, "fn", fn)
        object.__setattr__(self, "text", getattr(fn, "__name__", type(fn).__name__))

    @property
    def dims(self) -> int:
        return 1

    def __call__(self, x) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64)
        try:
            y = np.asarray(self.fn(x), dtype=np.float64)
        except (TypeError, ValueError) as err:
            raise InputError(f"the target callable {self.text!r} must map a float64 array of "
                             f"shape (n,) to numbers ({type(err).__name__}: {err})") from None
        if y.shape != x.shape:
            raise InputError(f"the target callable {self.text!r} returned shape {y.shape} for "
                             f"points of shape {x.shape}; it must work elementwise on arrays")
        bad = ~np.isfinite(y)
        if bad.any():
            i = np.flatnonzero(bad)[0]
            raise InputError(f"the target callable {self.text!r} is not finite at x={x[i]!r}; "
                             "choose an interval where it is finite")
        return y


def as_target(target: str | Target | Callable[[np.ndarray], ArrayLike]) -> Target:
    """An expression (str / Target) or a callable, as a Target."""
    if isinstance(target, (str, Target)):
        return parse_target(target)
    if callable(target):
        return CallableTarget(target)
    raise InputError(f"target must be an expression in x (e.g. 'x**3') or a callable, got "
                     f"{type(target).__name__}")


def as_dataset(data: Dataset | tuple[ArrayLike, ArrayLike]) -> Dataset:
    """A Dataset, or arrays (x, y) with x (n,) or (n, k): sorted like ``targets.from_csv``."""
    if isinstance(data, Dataset):
        return data
    if not (isinstance(data, (tuple, list)) and len(data) == 2):
        raise InputError(f"data must be a Dataset or a pair (x, y) of arrays, got "
                         f"{type(data).__name__}")
    try:
        x, y = (np.asarray(a.detach() if hasattr(a, "detach") else a, dtype=np.float64).copy()
                for a in data)
    except (TypeError, ValueError):
        raise InputError("data (x, y) must be arrays of numbers") from None
    x = x[:, 0] if x.ndim == 2 and x.shape[1] == 1 else x
    y = y.reshape(-1) if y.ndim == 2 and y.shape[1] == 1 else y
    if x.ndim not in (1, 2) or y.ndim != 1 or len(x) != len(y) or len(x) < 2:
        raise InputError(f"data (x, y) must be x of shape (n,) or (n, k) and y of shape (n,) "
                         f"with n >= 2, got {x.shape} and {y.shape}")
    if not (np.isfinite(x).all() and np.isfinite(y).all()):
        raise InputError("data (x, y) has non-finite values")
    order = np.lexsort(x.T[::-1]) if x.ndim == 2 else np.argsort(x, kind="stable")
    x, y = x[order], y[order]
    box = ((float(x[0]), float(x[-1])) if x.ndim == 1
           else tuple((float(c.min()), float(c.max())) for c in x.T))
    if any(lo == hi for lo, hi in (box if x.ndim == 2 else [box])):
        raise InputError("data (x, y): every x is the same; need a spread of points")
    return Dataset(x=x, y=y, test_x=x, test_y=y, interval=box, name="data")


def on_interval(data: Dataset, interval: Sequence[float] | None) -> Dataset:
    """``data`` with its domain set to ``interval`` (each input), refusing points outside."""
    if interval is None:
        return data
    lo, hi = (float(v) for v in interval)
    sets = [data.x, data.test_x] if data.held_out else [data.x]
    outside = sum(int(((x < lo) | (x > hi)).reshape(len(x), -1).any(axis=1).sum()) for x in sets)
    if outside:
        raise InputError(f"{outside} of {sum(map(len, sets))} data points lie outside "
                         f"the interval [{lo:g}, {hi:g}]; widen the interval or leave it out "
                         "(the default is the data's range)")
    box = (lo, hi) if data.dims == 1 else tuple((lo, hi) for _ in range(data.dims))
    return Dataset(data.x, data.y, data.test_x, data.test_y, box, data.name)


def _first_data_line(rows: list[list[str]]) -> int:
    """Line number of the first non-blank, non-comment row (the only place a header may be)."""
    for lineno, row in enumerate(rows, start=1):
        cells = [c.strip() for c in row]
        if any(cells) and not cells[0].startswith("#"):
            return lineno
    return 0


def _is_number(cell: str) -> bool:
    try:
        float(cell)
    except ValueError:
        return False
    return True


def to_csv_text(x: ArrayLike, y: ArrayLike) -> str:
    """x,y (or x,y,z for 2D points) rows with a header, every float written exactly (repr
    round-trips in float64)."""
    x = np.asarray(x, dtype=np.float64)
    cols = [x] if x.ndim == 1 else list(x.T)
    header = "x,y\n" if x.ndim == 1 else "x,y,z\n"
    return header + "".join(",".join(repr(float(v)) for v in row) + "\n"
                            for row in zip(*cols, y, strict=True))
