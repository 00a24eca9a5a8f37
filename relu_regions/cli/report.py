"""``relu-regions report``: the summary of a ``train --out`` folder, its plots drawn again."""

from __future__ import annotations

import argparse
import shlex
from pathlib import Path

from ..training.result import load_run
from ..training.run_folder import draw_run
from . import train


def run(args: argparse.Namespace) -> dict:
    result = load_run(args.folder)
    plots = draw_run(Path(args.folder), result)
    return {**result.summary(), **result.provenance, "plots": [str(p) for p in plots]}


def show(out: dict) -> str:
    lines = [train.show(out),
             f"command: {shlex.join(out['command'] or [])}",
             "versions: " + ", ".join(f"{k} {v}" for k, v in (out["versions"] or {}).items()),
             f"data sha256: {out['data_sha256']}",
             "plots: " + ", ".join(out["plots"])]
    return "\n".join(lines)
