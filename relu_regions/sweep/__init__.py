"""Grids of training runs: a TOML file names the axes (``config``), cells run in local processes
or on a Dask cluster (``grid``), results land in ``results.csv`` / ``summary.csv`` / ``sweep.png``.

``relu_regions.sweep.load_config`` and ``run_sweep`` are the entry points.
"""

from .config import SweepConfig, load_config, parse_config
from .grid import SweepResult, run_cell, run_sweep

__all__ = ["SweepConfig", "SweepResult", "load_config", "parse_config", "run_cell", "run_sweep"]
