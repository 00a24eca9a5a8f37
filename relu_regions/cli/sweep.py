"""``relu-regions sweep``: a grid of trainings from a TOML file, run locally or on Dask."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..sweep.config import load_config
from ..sweep.grid import run_sweep
from .common import progress_shown


def run(args: argparse.Namespace) -> dict:
    config = load_config(args.config)
    result = run_sweep(config, Path(args.out), workers=args.workers, scheduler=args.scheduler,
                       progress=progress_shown(args), force=args.force)
    return {"out": args.out, "report": result.report(), "failed": len(result.failed)}


def show(out: dict) -> str:
    return out["report"]
