"""Grids of training runs (``grid``): a TOML file names the axes, cells run in local processes
or on a Dask cluster, results land in ``results.csv`` / ``summary.csv`` / ``sweep.png``.

``relu_regions.sweep.load_config`` and ``run_sweep`` are the entry points.
"""

from .grid import SweepConfig, SweepResult, load_config, parse_config, run_cell, run_sweep  # noqa: F401

__all__ = ["SweepConfig", "SweepResult", "load_config", "parse_config", "run_cell", "run_sweep"]
