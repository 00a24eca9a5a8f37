"""The run folder: what ``FitResult.save`` (and ``relu-regions train --out``) writes, and
:func:`read_run`, which reads it back (``result.load_run`` makes a FitResult of it).

Files: ``checkpoints/seed-NNNN.pt`` (one per seed, ``relu_regions.checkpoint`` format),
``train.csv`` / ``test.csv`` (the points), ``history.npz`` (loss per seed and step, phase
boundary), ``metrics.json`` (summary, per-seed figures, config, command, versions, data hash),
``pieces.csv`` (the best seed's linear pieces, 1D), ``fit.png`` and ``history.png``.
The folder is written beside its destination and swapped in, so a reader never sees a mix of an
old and a new run.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .. import __version__, checkpoint, targets
from ..analysis.pieces import PIECE_COLUMNS, pieces_table, write_pieces_csv
from ..analysis.regions import count_regions
from ..atomic import atomic_write, atomic_write_text, umask
from ..errors import InputError
from ..plots import plot_fit, plot_history, plot_surface
from ..validation import one_line

FILES = ("metrics.json", "history.npz", "train.csv", "test.csv", "checkpoints")


def provenance(data: targets.Dataset, argv: Sequence[str] | None = None) -> dict:
    """What a run needs to be reproduced: command, versions, and a hash of the data."""
    digest = hashlib.sha256()
    for a in (data.x, data.y, data.test_x, data.test_y):
        digest.update(np.ascontiguousarray(a, dtype=np.float64).tobytes())
    return {"command": list(argv) if argv else None,
            "versions": {"relu_regions": __version__, "torch": torch.__version__,
                         "numpy": np.__version__, "python": platform.python_version()},
            "data_sha256": digest.hexdigest()}


def check_out_dir(path: Path | str, force: bool, what: str = "--out",
                  forced: str = "replaces the old run", flag: str = "--force") -> Path:
    """Refuse a non-folder, or a non-empty folder without ``force``; nothing is created here."""
    try:
        path = Path(os.fspath(path))
    except TypeError:
        raise InputError(f"{what} {path!r} must be a path") from None
    if path.exists() and not path.is_dir():
        raise InputError(f"{what} {str(path)!r} exists and is not a directory")
    if path.is_dir() and any(path.iterdir()) and not force:
        raise InputError(f"{what} {str(path)!r} is not empty; choose a new one or pass {flag} "
                         f"(which {forced})")
    return path


def save_run(result: Any, folder: Path | str, *, force: bool = False,
             command: Sequence[str] | None = None) -> Path:
    """Write ``result``'s run folder beside ``folder``, then swap it in (``force``: the old
    folder's content is replaced as a whole, never mixed). ``result`` is a ``FitResult`` (typed
    ``Any``: ``training.result`` imports this module)."""
    folder = check_out_dir(folder, force, "folder", flag="force=True")
    folder.parent.mkdir(parents=True, exist_ok=True)
    new = Path(tempfile.mkdtemp(prefix=f".{folder.name}.new-", dir=folder.parent))
    try:
        os.chmod(new, 0o777 & ~umask())
        _write(result, new, command)
        _swap(new, folder)
    except BaseException:
        shutil.rmtree(new, ignore_errors=True)
        raise
    return folder


def _swap(new: Path, folder: Path) -> None:
    if not folder.exists():
        os.replace(new, folder)
        return
    old = Path(tempfile.mkdtemp(prefix=f".{folder.name}.old-", dir=folder.parent))
    os.rmdir(old)
    os.replace(folder, old)
    os.replace(new, folder)
    shutil.rmtree(old, ignore_errors=True)


def _write(result, out: Path, command) -> None:
    data = result.data
    info = provenance(data, argv=command)
    for s, model in zip(result.seeds, result.models, strict=True):
        checkpoint.save(model, out / "checkpoints" / f"seed-{s:04d}.pt",
                        {"method": result.method, "target": data.name, "seed": s,
                         "interval": list(result.interval), "depth": result.depth,
                         "phases": result.phases, **info})
    atomic_write_text(out / "train.csv", targets.to_csv_text(data.x, data.y))
    atomic_write_text(out / "test.csv", targets.to_csv_text(data.test_x, data.test_y))
    pieces = result.history.get("pieces") or {}
    atomic_write(out / "history.npz", lambda f: np.savez(
        f, loss=result.history["loss"], phase_boundary=result.history["phase_boundary"],
        **{f"pieces_{k}": v for k, v in pieces.items()}))
    atomic_write_text(out / "metrics.json", json.dumps({**result.to_dict(), **info}, indent=2))
    if data.dims == 1:
        _write_pieces(result, out / "pieces.csv")
    draw_run(out, result)


def _write_pieces(result, path: Path) -> None:
    lo, hi = result.data.box[0]
    try:
        table = pieces_table(count_regions(result.best, lo, hi), result.best)
    except InputError:  # a diverged best seed (non-finite weights) has no pieces: header only
        table = {c: np.empty(0) for c in PIECE_COLUMNS}
    write_pieces_csv(path, table)


def draw_run(out: Path, result: Any) -> list:
    """fit.png (best seed; a surface and its error in 2D) and history.png of a run folder."""
    i = result.best_index
    draw = plot_fit if result.data.dims == 1 else plot_surface
    return [draw(result.models[i], result.data, out / "fit.png",
                 title=f"{result.method} ({result.shape}), depth {result.depth}, seed "
                       f"{result.seeds[i]}: MSE {result.mse[i]:.2e}"),
            plot_history(result.history["loss"], result.history["phase_boundary"],
                         out / "history.png", title=f"{result.method} on {result.target}",
                         pieces=result.history.get("pieces"))]


def read_run(folder: Path | str) -> dict:
    """The parts of a run folder written by :func:`save_run`, as keyword arguments of
    :meth:`FitResult.from_dict <relu_regions.training.result.FitResult.from_dict>`: ``d`` (the
    metrics), ``models``, ``history`` and ``data``."""
    run = Path(folder)
    if not run.is_dir():
        raise InputError(f"no run folder at {run}: give the --out folder of a train run "
                         "(or FitResult.save's folder)")
    try:
        metrics = json.loads((run / "metrics.json").read_text())
        with np.load(run / "history.npz", allow_pickle=False) as h:
            loss, boundary = h["loss"], int(h["phase_boundary"])
            pieces = {k[len("pieces_"):]: h[k] for k in h.files if k.startswith("pieces_")}
        train, test = targets.from_csv(run / "train.csv"), targets.from_csv(run / "test.csv")
        seeds = [int(s) for s in metrics["seed_list"]]
        interval = metrics["interval"]
        interval = (tuple(interval) if not isinstance(interval[0], list)
                    else tuple(map(tuple, interval)))
    except (OSError, ValueError, KeyError, TypeError) as e:
        if isinstance(e, InputError):
            raise
        raise InputError(f"{run} is not a complete run folder ({one_line(e, 150)})") from None
    data = targets.Dataset(train.x, train.y, test.x, test.y, interval, metrics["target"])
    models = [checkpoint.load(run / "checkpoints" / f"seed-{s:04d}.pt")[0] for s in seeds]
    return {"d": metrics, "models": models, "data": data,
            "history": {"loss": loss, "phase_boundary": boundary, "pieces": pieces or None}}
