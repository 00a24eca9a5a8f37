"""The data a fit trains on, from its config: a target (expression or callable), a Dataset, or
arrays (x, y); the domain (interval) the net is built on; the held-out split. The datasets
themselves are made in :mod:`relu_regions.targets`."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .. import targets
from ..errors import InputError
from .auto import auto_points

if TYPE_CHECKING:
    from numpy.typing import ArrayLike

    from .config import FitConfig


def make_dataset(config: FitConfig,
                 data: targets.Dataset | tuple[ArrayLike, ArrayLike] | None = None
                 ) -> targets.Dataset:
    """The Dataset for ``config`` (its target, interval, points / sparse, test_fraction, seed), or
    ``data`` (a Dataset or arrays (x, y)) on ``config.interval`` (default: the data's range; a
    target given with data only names the run)."""
    if data is None:
        if config.target is None:
            raise InputError("give a target (an expression in x, or a callable) or data")
        target = targets.as_target(config.target)
        interval = config.interval or (0.0, 1.0)
        points = config.points
        if points is None and target.dims == 1:  # as many points as the depth needs (auto.py)
            points = auto_points(config.depth)
        data = (targets.sparse(target, interval, config.sparse, config.sparse, seed=config.seed)
                if config.sparse else targets.dense(target, interval, points))
    else:  # a target given too only names the run
        if config.sparse is not None or config.points is not None:
            raise InputError("points and sparse sample a target; data brings its own points")
        data = targets.on_interval(targets.as_dataset(data), config.interval)
    if config.test_fraction:
        data = targets.hold_out(data, config.test_fraction, config.seed)
    return data
