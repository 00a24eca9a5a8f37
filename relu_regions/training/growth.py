"""Layer growth: train at a smaller depth, then insert one construction layer at a time.

See docs/training.md for the curriculum and the measurements behind INSERT_PATHS.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import torch

from ..analysis.limits import curvature_knots
from .functional import _small_matmul, flatten_layers, raw_shapes, unflatten_layers
from .optim import per_seed_mse

if TYPE_CHECKING:
    from ..nets.composite import RawLayers

# The insertion settings (a_new, S) grow() runs as paths, all folding by range: two interleaved
# 3 x 3 grids, peaks 0.3 .. 0.8 and scale ratios on a factor-2 ladder 1/8 .. 4. Which one trains
# best differs from net to net (docs/training.md).
INSERT_PATHS = tuple([(a, S) for a in (0.3, 0.5, 0.7) for S in (0.25, 1.0, 4.0)]
                     + [(a, S) for a in (0.4, 0.6, 0.8) for S in (0.125, 0.5, 2.0)])


def insert_layer(theta: torch.Tensor, depth: int, a_last: torch.Tensor | float, x: torch.Tensor,
                 y: torch.Tensor, *, a_new: torch.Tensor | float, S: torch.Tensor | float,
                 by_range: torch.Tensor | bool) -> torch.Tensor:
    """Raw Theta at ``depth`` -> ``depth + 1``, inserting one construction layer before the output.

    The new hidden layer folds the last hidden layer's (t1, t2) once more like the construction
    (peak a_new, scale ratio S): sum' = current output + C (C keeps it positive); g = t1/a -
    t2/(a(1-a)) (= s W_last in the construction) is mapped onto [0, 1] by its range over the
    samples, v = (g - g_min) / A, A = g_max - g_min, and t1' = relu(S A v), t2' = relu(S A (v -
    a_new)), bias' = S A (a constant). For an untrained construction this is the construction's
    next layer when the samples reach g's extremes (g_min = 0, A = s); after phase 2 the range
    keeps the fold meaningful even where the old bias neuron has died or g has shrunk.
    ``by_range=False`` folds g / bias neuron instead, exactly as the construction does (grow()
    uses range folding; docs/training.md). ``a_new``, ``S``, ``by_range``: scalars or one value
    per row of Theta. The output row is then the least-squares fit over the new layer's 4 units,
    unless "sum' - C" (the old function exactly) is better: the error never rises at an
    insertion. (Curriculum found by measurement; docs/training.md.)
    """
    layers = unflatten_layers(theta, raw_shapes(depth))
    n = theta.shape[0]
    a_new, S = (torch.as_tensor(v, dtype=theta.dtype, device=theta.device).expand(n)
                for v in (a_new, S))
    by_range = torch.as_tensor(by_range, device=theta.device).expand(n)
    h = last_hidden(layers, x)
    w_out, b_out = layers[-1]
    out = torch.bmm(h, w_out.transpose(1, 2)).squeeze(-1) + b_out
    big_c = 1 + out.abs().amax(dim=1)
    read = torch.zeros(n, 4, dtype=theta.dtype, device=theta.device)
    read[:, 1], read[:, 2] = 1 / a_last, -1 / (a_last * (1 - a_last))
    w_new = torch.zeros(n, 4, 4, dtype=theta.dtype, device=theta.device)
    b_new = torch.zeros(n, 4, dtype=theta.dtype, device=theta.device)
    g = torch.bmm(h, read.unsqueeze(-1)).squeeze(-1)
    g_min = g.amin(dim=1)
    amp = g.amax(dim=1) - g_min
    amp = torch.where(amp > 0, amp, torch.ones_like(amp))  # a constant g: nothing to fold
    # by_range False: the construction's own normalization, g_min = 0 and A = the bias neuron
    g_min = torch.where(by_range, g_min, torch.zeros_like(g_min))
    amp = torch.where(by_range, amp, h[:, 0, 3])
    w_new[:, 0], b_new[:, 0] = w_out[:, 0], b_out[:, 0] + big_c
    w_new[:, 1] = S[:, None] * read
    w_new[:, 2] = S[:, None] * read
    b_new[:, 1] = -S * g_min
    b_new[:, 2] = -S * (g_min + a_new * amp)
    b_new[:, 3] = S * amp
    h2 = torch.relu(torch.baddbmm(b_new.unsqueeze(1), h, w_new.transpose(1, 2)))
    basis = torch.cat([h2, torch.ones_like(h2[..., :1])], dim=-1)
    target = y.reshape(1, -1, 1).expand(n, -1, 1)
    # One row at a time (a fresh copy each): batched, MKL rounds every matrix by its memory
    # alignment, i.e. by its position in the batch (an odd number of points puts every other
    # one off 16 bytes), and a seed's net would depend on the seeds beside it.
    coef = torch.stack([torch.linalg.lstsq(basis[i], target[i], driver="gelsd").solution
                        for i in range(n)]).squeeze(-1)
    keep_old = torch.zeros_like(coef)
    keep_old[:, 0], keep_old[:, 4] = 1.0, -big_c

    def err(c):  # a fixed-order sum: MKL's batched product with 5 columns depends on the batch
        fitted = _small_matmul(basis, c.unsqueeze(-1)).squeeze(-1)
        return (fitted - y).pow(2).mean(dim=1)

    coef = torch.where((err(coef) <= err(keep_old))[:, None], coef, keep_old)
    new_layers = list(layers[:-1]) + [(w_new, b_new), (coef[:, :4].unsqueeze(1), coef[:, 4:])]
    return flatten_layers(new_layers)


def last_hidden(layers: RawLayers, x: torch.Tensor) -> torch.Tensor:
    """The last hidden layer's activations (rows, points, width) of every row's net on x."""
    h = x.reshape(1, -1, 1).expand(layers[0][0].shape[0], -1, 1)
    for w, b in layers[:-1]:
        h = torch.relu(torch.baddbmm(b.unsqueeze(1), h, w.transpose(1, 2)))
    return h


def insert_warp(theta: torch.Tensor, depth: int, x: torch.Tensor, *,
                knots: Sequence[float] | None = None) -> torch.Tensor:
    """Raw Theta at ``depth`` -> ``depth + 1``, inserting a new FIRST hidden layer that warps the
    input: u = relu(x - lo) + sum_j c_j relu(x - k_j) over the samples' range [lo, hi], with
    c_j = 0, so the net is the same function on [lo, hi] (the old first layer reads u through its
    input weight; the hinge units feed it with zero weights). Phase 2 can then move every knot of
    the net at once by one PL map of x (the identity at insertion): the knots are what limits
    grown nets at depth 10 (docs/training.md). ``knots``: the 3 hinges (default: the quartiles
    of [lo, hi]). Only for width 4 (1 + 3 units) and 1D input.
    """
    layers = unflatten_layers(theta, raw_shapes(depth))
    (w1, b1), n = layers[0], theta.shape[0]
    lo, hi = x.min(), x.max()
    k = (torch.tensor(knots, dtype=theta.dtype, device=theta.device) if knots is not None
         else lo + (hi - lo) * torch.tensor([0.25, 0.5, 0.75], dtype=theta.dtype,
                                            device=theta.device))
    w0 = torch.ones(n, 4, 1, dtype=theta.dtype, device=theta.device)
    b0 = -torch.cat([lo.reshape(1), k]).to(theta.dtype).expand(n, 4).clone()
    w1_new = torch.zeros(n, 4, 4, dtype=theta.dtype, device=theta.device)
    w1_new[:, :, 0] = w1[:, :, 0]
    b1_new = b1 + w1[:, :, 0] * lo  # u_0 = x - lo on [lo, hi]
    return flatten_layers([(w0, b0), (w1_new, b1_new)] + list(layers[1:]))


def curvature_hinges(x: torch.Tensor, y: torch.Tensor) -> list[float]:
    """The warp's 3 hinges where the data's |f''|^(2/5) has a quarter, half and three quarters of
    its integral (the L2-optimal density of free knots, docs/limits.md; f'' by smoothed
    finite differences, as the optimum's curvature start in ``analysis.limits``). For x^3 they
    are near (j/4)^(5/7); on x^11 they beat the quartiles (docs/training.md, "The warp layer").
    """
    xs, order = torch.sort(x.detach().reshape(-1).cpu())
    ys = y.detach().reshape(-1).cpu()[order]
    return [float(k) for k in curvature_knots(xs.double().numpy(), ys.double().numpy(), 4)]


def best_rows(mse: torch.Tensor, k: int, n: int,
              keep: int = 1) -> Callable[[torch.Tensor], torch.Tensor]:
    """Row j*n + s of a batch is try j of seed s; returns pick(t): each seed's row with the lowest
    ``mse`` (a NaN counts as worst), or its ``keep`` lowest, as rows r*n + s by rank r (ties:
    the first try)."""
    keep = min(keep, k)
    order = torch.nan_to_num(mse, nan=math.inf).reshape(k, n).argsort(dim=0, stable=True)[:keep]

    def pick(t):
        rows = t.reshape(k, n, *t.shape[1:])[order, torch.arange(n, device=t.device)]
        return rows.reshape(keep * n, *t.shape[1:])
    return pick


def grow(theta: torch.Tensor, d0: int, depth: int, a_last: torch.Tensor | float, x: torch.Tensor,
         y: torch.Tensor, train: Callable[[torch.Tensor, list, int], torch.Tensor],
         predict: Callable[[torch.Tensor, int], torch.Tensor], history: list,
         warp: bool = False, keep: int = 1, starts: int = 1,
         on_pick: Callable[[torch.Tensor, int], object] | None = None) -> torch.Tensor:
    """From depth ``d0`` to ``depth``, one inserted layer at a time (:func:`insert_layer`, folding
    by range), along several paths: each (a_new, S) of INSERT_PATHS is one path, used for every
    insertion on it. All paths train as one batch; per seed the path with the lowest final
    training MSE is kept (like phase 1's starts), or its ``keep`` best paths, as rows r*n + s by
    rank r (``fit`` polishes them and then keeps one). ``train(theta, history, depth)`` trains a
    batch at a depth; ``predict(theta, depth)`` evaluates it.

    ``warp``: the first added layer is a warp of the input (:func:`insert_warp`) instead of a
    fold, its hinges at :func:`curvature_hinges`; the later ones fold as before (the gain:
    docs/training.md, "The warp layer"; ``auto.use_warp`` decides when).

    ``starts``: Theta holds that many starts per seed (rows j*n + s, as phase 1's); each seed
    keeps its best start by training MSE just before the first fold, i.e. after the warp stage
    when there is one: the warp stage decides which depth-d0 net grows well, and the best net
    before it often does not (docs/training.md, "The warp layer"). ``on_pick(theta,
    depth)`` is called with the kept rows. ``history``: the loss history of Theta's rows so far
    (one value per row in each entry); it ends holding the kept rows' history and the stages'.

    Only range folding: folding by the bias neuron adds nothing once phase 2 has killed that
    neuron (on x^3 those paths ended at one MSE whatever their peak) and lost on x^11 in 9 of 10
    seeds; their slots went to a second grid (docs/training.md).
    """
    k, n = len(INSERT_PATHS), theta.shape[0] // starts

    def _best_start(theta, a_last, trial_history, d):
        pick = best_rows(per_seed_mse(lambda th: predict(th, d), theta, y), starts, n)
        theta = pick(theta)
        if on_pick is not None:
            on_pick(theta, d)
        return theta, pick(a_last), [pick(h) for h in trial_history]

    a_new, scale = (torch.tensor([p[j] for p in INSERT_PATHS], dtype=theta.dtype,
                                 device=theta.device).repeat_interleave(n) for j in (0, 1))
    a_last = torch.as_tensor(a_last, dtype=theta.dtype, device=theta.device).expand(
        theta.shape[0])
    trial_history, history[:] = list(history), []
    for d in range(d0, depth):
        if warp and d == d0:
            # The warp is the same on every path, so it trains once per start; the paths part at
            # the first fold (LM treats rows independently: the same as k identical copies).
            theta = insert_warp(theta, d, x, knots=curvature_hinges(x, y))  # a_last stays
        else:
            if starts > 1:
                theta, a_last, trial_history = _best_start(theta, a_last, trial_history, d)
                starts = 1
            if theta.shape[0] == n:
                theta, a_last = theta.repeat(k, 1), a_last.repeat(k)
                trial_history = [_copies(h, k) for h in trial_history]
            theta = insert_layer(theta, d, a_last, x, y, a_new=a_new, S=scale, by_range=True)
            a_last = a_new
        theta = train(theta, trial_history, d + 1)
    if starts > 1:  # a warp and no fold
        theta, a_last, trial_history = _best_start(theta, a_last, trial_history, depth)
    if theta.shape[0] == n:  # a warp and no fold: one path
        history += trial_history
        return theta
    pick = best_rows(per_seed_mse(lambda th: predict(th, depth), theta, y), k, n, keep)
    history += [pick(h) for h in trial_history]
    return pick(theta)


def _copies(t, k: int):
    """k copies of a batch, stacked as rows j*n + s (the layout of the paths)."""
    return t.repeat(k, *([1] * (t.dim() - 1)))
