"""Checks of user-given values, in one message style, at the boundary (the core trusts them).

Every message says what was given, what is allowed and, where it is not obvious, how to fix it:
``depth must be an integer >= 1, got 0``. Each check raises :class:`InputError`, which the CLI
prints as one ``error:`` line with exit code 2. Torch-free, so the CLI's ``--help`` stays fast.

>>> check_int(5, "depth", low=1)
5
>>> check_int(True, "depth", low=1)
Traceback (most recent call last):
...
relu_regions.errors.InputError: depth must be an integer >= 1, got True
"""

from __future__ import annotations

import contextlib
import difflib
import math
import numbers
import os
from collections.abc import Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

from .errors import InputError

if TYPE_CHECKING:  # numpy and torch are imported where used: --help loads neither
    import numpy as np
    import torch


def _range(low, high) -> str:
    if low is not None and high is not None:
        return f" in [{low}, {high}]"
    if low is not None:
        return f" >= {low}"
    if high is not None:
        return f" <= {high}"
    return ""


def is_int(value: object) -> bool:
    """A Python or NumPy integer, not a bool (``True`` is an ``int`` to Python, never to a user)."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def check_int(value: object, name: str, low: int | None = None, high: int | None = None,
              hint: str = "") -> int:
    """``value`` as an ``int`` if it is an integer in ``[low, high]``, else InputError."""
    if (not is_int(value) or (low is not None and value < low)
            or (high is not None and value > high)):
        raise InputError(f"{name} must be an integer{_range(low, high)}, got {value!r}"
                         + (f"; {hint}" if hint else ""))
    return int(value)


def check_float(value: object, name: str, low: float | None = None, high: float | None = None,
                low_open: bool = False, hint: str = "") -> float:
    """``value`` as a finite ``float`` in the range (``low`` excluded when ``low_open``)."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if ok and low is not None:
        ok = value > low if low_open else value >= low
    if ok and high is not None:
        ok = value <= high
    if not ok:
        rule = f" > {low}" if low_open and high is None else _range(low, high)
        raise InputError(f"{name} must be a finite number{rule}, got {value!r}"
                         + (f"; {hint}" if hint else ""))
    return float(value)


def check_interval(interval: Sequence[float], name: str = "interval") -> tuple[float, float]:
    """Two finite floats lo < hi (an interval, or a counter's (lo, hi))."""
    try:
        lo, hi = (float(v) for v in interval)
    except (TypeError, ValueError):
        raise InputError(f"{name} must be two numbers (lo, hi), got {interval!r}") from None
    if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
        raise InputError(f"{name} must be finite with lo < hi, got ({lo}, {hi})")
    return lo, hi


def check_point(x: Sequence[float] | np.ndarray, n_in: int, name: str) -> np.ndarray:
    """``x`` as a float64 vector of ``n_in`` finite numbers (a point of a model's input space)."""
    import numpy as np  # here, not at the top: the CLI's --help does not load numpy

    try:
        x = np.asarray(x, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError):
        raise InputError(f"{name} must be a vector of {n_in} numbers") from None
    if x.size != n_in or not np.isfinite(x).all():
        got = (x.tolist() if x.size <= 8 else f"{x.size} numbers"
               + ("" if np.isfinite(x).all() else ", some not finite"))
        raise InputError(f"{name} must be {n_in} finite number{'s' if n_in != 1 else ''} (the "
                         f"model's input size), got {got}")
    return x


def check_level(level: object, outputs: int) -> float | None:
    """The level set's value for a model with one output (default 0); None for ``outputs`` > 1,
    whose decision boundary is the argmax's and takes no level."""
    if outputs > 1:
        if level is not None:
            raise InputError(f"level is for a model with one output; this one has {outputs}: its "
                             "decision boundary is where the argmax changes (drop level)")
        return None
    if level is None:
        return 0.0
    try:
        value = float(level)
    except (TypeError, ValueError):
        value = math.nan
    if not math.isfinite(value):
        raise InputError(f"level must be a finite number, got {level!r}")
    return value


def check_choice(value: object, name: str, allowed: Iterable) -> str:
    """``value`` if it is one of ``allowed``; otherwise the message lists them and the closest."""
    allowed = list(allowed)
    if value in allowed:
        return value
    close = difflib.get_close_matches(str(value), [str(a) for a in allowed], n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    raise InputError(f"{name} must be one of {', '.join(map(str, allowed))}; got {value!r}{hint}")


def plural(n: int, word: str) -> str:
    """'1 seed', '3 seeds'."""
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def one_line(err: BaseException, limit: int = 300) -> str:
    """The first line of an exception, prefixed by its type, at most ``limit`` characters."""
    text = str(err).strip().splitlines()
    msg = f"{type(err).__name__}: {text[0]}" if text else type(err).__name__
    return msg if len(msg) <= limit else msg[:limit - 3] + "..."


def json_safe(value: Any) -> Any:
    """``value`` with every non-finite float as ``None`` (JSON has no NaN), through dicts, lists,
    tuples and NumPy arrays/scalars."""
    if hasattr(value, "tolist") and not isinstance(value, (str, bytes)):
        value = value.tolist()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


@contextlib.contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """Run the block with ``n`` intra-op torch threads (``None``: leave as is), then restore.

    Our nets are tiny: intra-op threads mostly add OpenMP spin on a busy machine."""
    if n is None:
        yield
        return
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@contextlib.contextmanager
def env_defaults(**values: str) -> Iterator[None]:
    """Set environment variables that are not already set; restore afterwards."""
    added = [k for k in values if k not in os.environ]
    for k in added:
        os.environ[k] = values[k]
    try:
        yield
    finally:
        for k in added:
            os.environ.pop(k, None)


def check_device(name: str | torch.device, option: str = "--device") -> str:
    """``name`` as a torch device string if this machine can run on it, else InputError.

    A CPU-only torch build fails deep inside the first tensor move with an AssertionError
    ("Torch not compiled with CUDA enabled"); checked here, the user gets one line that says what
    is missing and how to run anyway. torch is imported only when called (the CLI's ``--help``
    path imports this module).
    """
    if name == "cpu":  # the default: no torch import needed to say yes
        return name
    import torch

    fix = (f"run on the CPU with {option} cpu" if option.startswith("-")
           else f"run on the CPU with {option}='cpu'")
    if not isinstance(name, (str, torch.device)):
        raise InputError(f"{option} must be a device name such as 'cpu' or 'cuda', got {name!r}")
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError, TypeError):
        raise InputError(f"{option} {str(name)!r} is not a torch device name; use cpu, cuda, "
                         f"cuda:N or mps (or {fix})") from None
    kind = device.type
    if kind == "cpu":
        return str(device)
    build = f"this torch build ({torch.__version__})"
    if kind == "cuda":
        if not torch.backends.cuda.is_built():
            raise InputError(f"{option} {name}: {build} has no CUDA support; {fix}, or install a "
                             "CUDA build of torch")
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise InputError(f"{option} {name}: no CUDA device is visible to {build}; {fix}")
        if device.index is not None and device.index >= count:
            raise InputError(f"{option} {name}: only {count} CUDA device(s) (cuda:0 to "
                             f"cuda:{count - 1}); choose one of them or {fix}")
        return str(device)
    if kind == "mps":
        if not torch.backends.mps.is_built():
            raise InputError(f"{option} {name}: {build} has no MPS (Apple GPU) support; {fix}")
        if not torch.backends.mps.is_available():
            raise InputError(f"{option} {name}: MPS is not available on this machine; {fix}")
        return str(device)
    raise InputError(f"{option} {name}: device type {kind!r} is not supported here; use cpu, "
                     f"cuda or mps (or {fix})")
