"""The run folder: what ``FitResult.save`` (and ``relu-regions train --out``) writes, and
:func:`load_run`, which reads it back into a FitResult.

Files: ``checkpoints/seed-NNNN.pt`` (one per seed, ``relu_regions.checkpoint`` format),
``train.csv`` / ``test.csv`` (the points), ``history.npz`` (loss per seed and step, phase
boundary), ``metrics.json`` (summary, per-seed figures, config, command, versions, data hash),
``pieces.csv`` (the best seed's linear pieces, 1D), ``fit.png`` and ``history.png``.
The folder is written beside its destination and swapped in, so a reader never sees a mix of an
old and a new run.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..validation import one_line

FILES = ("metrics.json", "history.npz", "train.csv", "test.csv", "checkpoints")


def provenance(data, argv=None) -> dict:
    """What a run needs to be reproduced: command, versions, and a hash of the data."""
    import hashlib
    import platform

    import torch

    from .. import __version__

    digest = hashlib.sha256()
    for a in (data.x, data.y, data.test_x, data.test_y):
        digest.update(np.ascontiguousarray(a, dtype=np.float64).tobytes())
    return {"command": list(argv) if argv else None,
            "versions": {"relu_regions": __version__, "torch": torch.__version__,
                         "numpy": np.__version__, "python": platform.python_version()},
            "data_sha256": digest.hexdigest()}


def check_out_dir(path, force: bool, what: str = "--out", forced: str = "replaces the old run"
                  ) -> Path:
    """Refuse a non-folder, or a non-empty folder without ``force``; nothing is created here."""
    try:
        path = Path(os.fspath(path))
    except TypeError:
        raise InputError(f"{what} {path!r} must be a path") from None
    if path.exists() and not path.is_dir():
        raise InputError(f"{what} {str(path)!r} exists and is not a directory")
    if path.is_dir() and any(path.iterdir()) and not force:
        raise InputError(f"{what} {str(path)!r} is not empty; choose a new one or pass --force "
                         f"(which {forced})")
    return path


def save_run(result, folder, *, force: bool = False, command=None) -> Path:
    """Write ``result``'s run folder beside ``folder``, then swap it in (``force``: the old
    folder's content is replaced as a whole, never mixed)."""
    folder = check_out_dir(folder, force)
    folder.parent.mkdir(parents=True, exist_ok=True)
    new = Path(tempfile.mkdtemp(prefix=f".{folder.name}.new-", dir=folder.parent))
    try:
        os.chmod(new, 0o777 & ~_umask())
        _write(result, new, command)
        _swap(new, folder)
    except BaseException:
        shutil.rmtree(new, ignore_errors=True)
        raise
    return folder


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


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
    from .. import checkpoint
    from .. import targets as T
    from ..checkpoint import atomic_write, atomic_write_text

    data = result.data
    info = provenance(data, argv=command)
    for s, model in zip(result.seeds, result.models):
        checkpoint.save(model, out / "checkpoints" / f"seed-{s:04d}.pt",
                        {"method": result.method, "target": data.name, "seed": s,
                         "interval": list(result.interval), "depth": result.depth,
                         "phases": result.phases, **info})
    atomic_write_text(out / "train.csv", T.to_csv_text(data.x, data.y))
    atomic_write_text(out / "test.csv", T.to_csv_text(data.test_x, data.test_y))
    atomic_write(out / "history.npz", lambda f: np.savez(
        f, loss=result.history["loss"], phase_boundary=result.history["phase_boundary"]))
    atomic_write_text(out / "metrics.json", json.dumps({**result.to_dict(), **info}, indent=2))
    if data.dims == 1:
        atomic_write_text(out / "pieces.csv", _pieces_csv(result))
    draw_run(out, result)


def _pieces_csv(result) -> str:
    from ..analysis.regions import PIECE_COLUMNS as cols, count_regions, pieces_rows, pieces_table

    lo, hi = result.data.box[0]
    try:
        rows = pieces_rows(pieces_table(count_regions(result.best, lo, hi), result.best))
    except InputError:  # a diverged best seed (non-finite weights) has no pieces
        rows = []
    return ",".join(cols) + "\n" + "".join(",".join(repr(r[c]) for c in cols) + "\n"
                                           for r in rows)


def draw_run(out: Path, result) -> list:
    """fit.png (best seed; a surface and its error in 2D) and history.png of a run folder."""
    from ..plots import plot_fit, plot_history, plot_surface

    i = result.best_index
    draw = plot_fit if result.data.dims == 1 else plot_surface
    return [draw(result.models[i], result.data, out / "fit.png",
                 title=f"{result.method} ({result.shape}), depth {result.depth}, seed "
                       f"{result.seeds[i]}: MSE {result.mse[i]:.2e}"),
            plot_history(result.history["loss"], result.history["phase_boundary"],
                         out / "history.png", title=f"{result.method} on {result.target}")]


def load_run(folder):
    """The FitResult of a run folder written by ``FitResult.save`` / ``train --out``: models,
    per-seed figures, history, data and (when recorded) the config; ``.provenance`` holds the
    stored command, versions and data hash."""
    from .. import checkpoint
    from .. import targets as T
    from .config import FitConfig
    from .result import FitResult

    run = Path(folder)
    try:
        metrics = json.loads((run / "metrics.json").read_text())
        with np.load(run / "history.npz", allow_pickle=False) as h:
            loss, boundary = h["loss"], int(h["phase_boundary"])
        train, test = T.from_csv(run / "train.csv"), T.from_csv(run / "test.csv")
        seeds = [int(s) for s in metrics["seed_list"]]
    except (OSError, ValueError, KeyError, TypeError) as e:
        if isinstance(e, InputError):
            raise
        raise InputError(f"{run} is not a complete run folder ({one_line(e, 150)})") from None
    interval = metrics["interval"]
    interval = tuple(interval) if not isinstance(interval[0], list) else tuple(map(tuple, interval))
    data = T.Dataset(train.x, train.y, test.x, test.y, interval, metrics["target"])
    models = [checkpoint.load(run / "checkpoints" / f"seed-{s:04d}.pt")[0] for s in seeds]
    floats = lambda k: (None if metrics.get(k) is None  # noqa: E731
                        else np.array([np.nan if v is None else v for v in metrics[k]], float))
    return FitResult(
        method=metrics["method"], target=metrics["target"], depth=metrics["depth"],
        width=(metrics.get("config") or {}).get("width", 4), seeds=seeds, interval=interval,
        mse=floats("mse"), train_mse=floats("train_mse"),
        pieces=np.array(metrics["pieces"]), optimal_mse=metrics.get("optimal_mse"),
        efficiency=floats("efficiency"), history={"loss": loss, "phase_boundary": boundary},
        models=models, seconds=metrics.get("seconds", 0.0), phases=metrics.get("phases", {}),
        diverged=metrics.get("diverged", []), shape=metrics.get("shape", "convex"),
        widths=metrics.get("widths", []), optimal_pieces=metrics.get("optimal_pieces"),
        max_pieces=metrics.get("max_pieces"),
        regions=None if metrics.get("regions") is None else np.array(metrics["regions"]),
        plane_pieces=(None if metrics.get("plane_pieces") is None
                      else np.array(metrics["plane_pieces"])),
        config=FitConfig.from_dict(metrics["config"]) if metrics.get("config") else None,
        data=data, errors={k: floats(k) for k in ("r2", "rel_rmse", "max_abs_error")
                           if k in metrics},
        provenance={k: metrics.get(k) for k in ("command", "versions", "data_sha256")})
