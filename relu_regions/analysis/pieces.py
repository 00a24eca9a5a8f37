"""The pieces table: one row per linear piece of a count, with its ends, slope and the output at
both ends, as arrays, JSON rows or CSV."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from numpy.typing import ArrayLike
from torch import nn

from ..atomic import atomic_write
from ..errors import InputError
from ..nets.reader import layer_stack
from ..validation import check_point
from .regions import CHUNK, RegionCount, rows_times

PIECE_COLUMNS = ("start", "end", "slope", "value_start", "value_end")


def pieces_table(count: RegionCount, model: nn.Module, x0: ArrayLike | None = None,
                 x1: ArrayLike | None = None) -> dict:
    """One row per linear piece of ``count`` (a count of ``model``): its ends, slope and the
    output at both ends, as float64 arrays under :data:`PIECE_COLUMNS`.

    For a segment count pass its ``x0``, ``x1``: positions are then t in [0, 1] along
    ``x0 + t (x1 - x0)`` and the slope is dy/dt. The values are the network evaluated at the
    ends in float64 (not slope times width summed up, which would accumulate rounding), so the
    pieces join: ``value_end[i] == value_start[i + 1]``. With k > 1 outputs the slope and value
    columns have k columns each (rows of the vector map's pieces).
    """
    edges = np.concatenate([[count.lo], count.knots, [count.hi]])
    if (x0 is None) != (x1 is None):
        raise InputError("give both x0 and x1 (a segment count) or neither")
    layers, leaks = layer_stack(model)
    if x0 is None:
        inputs = edges[:, None]
    else:
        n_in = layers[0][0].shape[1]
        x0, x1 = check_point(x0, n_in, "x0"), check_point(x1, n_in, "x1")
        inputs = x0 + edges[:, None] * (x1 - x0)
    if inputs.shape[1] != layers[0][0].shape[1]:
        raise InputError(f"the model takes {layers[0][0].shape[1]} inputs; pass the segment's "
                         "x0 and x1")
    values = np.concatenate([_forward(layers, leaks, inputs[i:i + CHUNK])
                             for i in range(0, len(inputs), CHUNK)])
    return {"start": edges[:-1], "end": edges[1:], "slope": np.asarray(count.slopes, float),
            "value_start": values[:-1], "value_end": values[1:]}


def _forward(layers, leaks, h):
    """The network's output at the rows of ``h`` (one column per output, squeezed for one),
    float64 numpy (the counter's arithmetic)."""
    for (w, b), leak in zip(layers[:-1], leaks, strict=True):
        z = rows_times(h, w) + b
        h = np.maximum(z, 0.0) if not leak.any() else np.where(z > 0, z, leak * z)
    w, b = layers[-1]
    y = rows_times(h, w) + b
    return y[:, 0] if y.shape[1] == 1 else y


def pieces_rows(table: dict) -> list[dict]:
    """The table as a list of ``{column: value}`` dicts (JSON)."""
    cols = [table[c].tolist() for c in PIECE_COLUMNS]
    return [dict(zip(PIECE_COLUMNS, row, strict=True)) for row in zip(*cols, strict=True)]


def write_pieces_csv(path: Path | str, table: dict, rows_per_block: int = 1 << 16) -> Path:
    """Write the table as CSV (header ``start,end,slope,value_start,value_end``, every float in
    17 significant digits, which round-trips float64), atomically. With k > 1 outputs each of
    slope, value_start and value_end is k columns, suffixed _0 ... _k-1."""
    names = [c if table[c].ndim == 1 else f"{c}_{o}" for c in PIECE_COLUMNS
             for o in range(1 if table[c].ndim == 1 else table[c].shape[1])]
    columns = np.column_stack([table[c] for c in PIECE_COLUMNS])

    def write(f):
        f.write((",".join(names) + "\n").encode())
        for i in range(0, len(columns), rows_per_block):
            np.savetxt(f, columns[i:i + rows_per_block], fmt="%.17g", delimiter=",")

    atomic_write(Path(path), write)
    return Path(path)
