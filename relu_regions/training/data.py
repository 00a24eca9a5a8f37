"""The data a fit trains on, from its config: a target (expression or callable), a Dataset, or
arrays (x, y); the domain (interval) the net is built on; the held-out split."""

from __future__ import annotations

import numpy as np

from .. import targets
from ..errors import InputError
from .auto import auto_points


class CallableTarget(targets.Target):
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


def as_target(target):
    """An expression (str / Target) or a callable, as a Target."""
    if isinstance(target, (str, targets.Target)):
        return targets.parse_target(target)
    if callable(target):
        return CallableTarget(target)
    raise InputError(f"target must be an expression in x (e.g. 'x**3') or a callable, got "
                     f"{type(target).__name__}")


def make_dataset(config, data=None) -> targets.Dataset:
    """The Dataset for ``config`` (its target, interval, points / sparse, test_fraction, seed), or
    ``data`` (a Dataset or arrays (x, y)) on ``config.interval`` (default: the data's range; a
    target given with data only names the run)."""
    if data is None:
        if config.target is None:
            raise InputError("give a target (an expression in x, or a callable) or data")
        target = as_target(config.target)
        interval = config.interval or (0.0, 1.0)
        points = config.points
        if points is None and target.dims == 1:  # as many points as the depth needs (auto.py)
            points = auto_points(config.depth)
        data = (targets.sparse(target, interval, config.sparse, config.sparse, seed=config.seed)
                if config.sparse else targets.dense(target, interval, points))
    else:  # a target given too only names the run
        if config.sparse is not None or config.points is not None:
            raise InputError("points and sparse sample a target; data brings its own points")
        data = on_interval(as_dataset(data), config.interval)
    if config.test_fraction:
        data = split(data, config.test_fraction, config.seed)
    return data


def as_dataset(data) -> targets.Dataset:
    """A Dataset, or arrays (x, y) with x (n,) or (n, k): sorted like ``targets.from_csv``."""
    if isinstance(data, targets.Dataset):
        return data
    if not (isinstance(data, (tuple, list)) and len(data) == 2):
        raise InputError(f"data must be a Dataset or a pair (x, y) of arrays, got "
                         f"{type(data).__name__}")
    try:
        x, y = (np.asarray(getattr(a, "detach", lambda: a)(), dtype=np.float64).copy()
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
    return targets.Dataset(x=x, y=y, test_x=x, test_y=y, interval=box, name="data")


def on_interval(data: targets.Dataset, interval) -> targets.Dataset:
    """``data`` with its domain set to ``interval`` (each input), refusing points outside."""
    if interval is None:
        return data
    lo, hi = (float(v) for v in interval)
    same = data.test_x is data.x or np.array_equal(data.test_x, data.x)
    sets = [data.x] if same else [data.x, data.test_x]
    outside = sum(int(((x < lo) | (x > hi)).reshape(len(x), -1).any(axis=1).sum()) for x in sets)
    if outside:
        raise InputError(f"{outside} of {sum(map(len, sets))} data points lie outside "
                         f"the interval [{lo:g}, {hi:g}]; widen the interval or leave it out "
                         "(the default is the data's range)")
    box = (lo, hi) if data.dims == 1 else tuple((lo, hi) for _ in range(data.dims))
    return targets.Dataset(data.x, data.y, data.test_x, data.test_y, box, data.name)


def split(data: targets.Dataset, fraction: float, seed: int) -> targets.Dataset:
    """A seeded random share ``fraction`` of the points as the test set (the rest train)."""
    if data.test_x is not data.x and not np.array_equal(data.test_x, data.x):
        raise InputError("the data already has separate test points; drop test_fraction")
    return targets.hold_out(data, fraction, seed)
