"""The three Jacobians the optimizers use, and their compact per-run form.

Raw weights: :func:`mlp_jacobian` (per point, back-propagation) or, for a 1D input,
:func:`mlp_jacobian_runs` (two rows per activation run: the same J'J and J'r from far fewer rows).
Derived parameters (phase 1): :func:`jvp_jacobian` (forward mode, all tangents in one pass) or
:func:`derived_jacobian_runs` (forward mode at two points per run). Other coordinates (GmP):
:func:`chain_jacobian`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torch.autograd.forward_ad as fwAD

from .functional import _deltas, _hidden_masks, _jacobian_rows, _small_matmul, mlp_jacobian

if TYPE_CHECKING:
    from ..nets.composite import RawLayers, SumLayout


class RunProjection:
    """Q' of :func:`mlp_jacobian_runs`: values at the points (N, ..., n) -> run rows (N, ..., m).

    Rows 2k and 2k + 1 of a seed belong to its run k: sum of the values / sqrt(n_run) and
    sum (x - c) value / sqrt(S) (0 if S = 0). ``rows`` (N,) counts a seed's own rows; runs
    beyond a seed's last are zero padding, at the end. Sums run point by point (scatter_add), so a
    seed's rows do not depend on the batch.
    """

    def __init__(self, run, counts, centred, spread):
        self.run, self.centred = run, centred
        self.inv_count = torch.where(counts > 0, counts.clamp_min(1).rsqrt(), 0.0)
        self.inv_spread = torch.where(spread > 0, spread.rsqrt(), 0.0)
        self.rows = 2 * (run.amax(dim=1) + 1)

    def __call__(self, values: torch.Tensor) -> torch.Tensor:
        lead, n_runs = values.shape[:-1], self.inv_count.shape[1]
        shape = (lead[0],) + (1,) * (len(lead) - 1) + (-1,)
        run = self.run.view(shape).expand(*lead, -1)
        total = values.new_zeros(*lead, n_runs).scatter_add_(-1, run, values)
        moment = values.new_zeros(*lead, n_runs).scatter_add_(
            -1, run, self.centred.view(shape) * values)
        return torch.stack([total * self.inv_count.view(shape),
                            moment * self.inv_spread.view(shape)], dim=-1).flatten(-2)


def _sorted(x: torch.Tensor):
    """1D points in increasing order, and the order (None if already sorted)."""
    order = torch.argsort(x, stable=True) if bool((x[1:] < x[:-1]).any()) else None
    return (x if order is None else x[order]), order


@dataclass
class Runs:
    """Maximal runs of consecutive points (in increasing x) that share one activation pattern.

    ``run`` (N, n) is each point's run index; per run (N, R): ``first`` / ``last`` point index,
    ``counts``, ``centre`` c and ``spread`` S = sum (x - c)^2; ``centred`` (N, n) = x - c;
    ``xs`` (n,) the points.
    Seeds with fewer runs are padded with empty runs (count 0, first = last = point 0).
    """

    run: torch.Tensor
    first: torch.Tensor
    last: torch.Tensor
    counts: torch.Tensor
    centre: torch.Tensor
    centred: torch.Tensor
    spread: torch.Tensor
    xs: torch.Tensor

    @classmethod
    def of(cls, pattern: torch.Tensor, xs: torch.Tensor) -> Runs:
        """``pattern`` (N, units, n) of the points ``xs`` (n,), in increasing order."""
        n_seeds, n = pattern.shape[0], xs.shape[0]
        change = (pattern[:, :, 1:] != pattern[:, :, :-1]).any(dim=1)
        run = torch.cat([change.new_zeros(n_seeds, 1, dtype=torch.long), change.cumsum(dim=1)],
                        dim=1)
        n_runs = int(run[:, -1].max()) + 1
        index = torch.arange(n, device=xs.device).expand(n_seeds, n)
        ends = [torch.zeros(n_seeds, n_runs, dtype=torch.long, device=xs.device).scatter_reduce_(
            1, run, index, how, include_self=False) for how in ("amin", "amax")]
        xs = xs.expand(n_seeds, n)
        counts = xs.new_zeros(n_seeds, n_runs).scatter_add_(1, run, torch.ones_like(xs))
        centre = xs.new_zeros(n_seeds, n_runs).scatter_add_(1, run, xs) / counts.clamp_min(1)
        centred = xs - centre.gather(1, run)
        spread = xs.new_zeros(n_seeds, n_runs).scatter_add_(1, run, centred * centred)
        return cls(run, ends[0], ends[1], counts, centre, centred, spread, xs[0])

    def rows_from_ends(self, at_first: torch.Tensor, at_last: torch.Tensor) -> torch.Tensor:
        """Q'v for values v affine in x within each run, from v at the runs' first and last
        points (..., R) (seed first, runs last) -> (..., 2R): sum v / sqrt(n_run) = sqrt(n_run)
        v(c) and sum (x - c) v / sqrt(S) = sqrt(S) B with B the slope (0 for a one-point run),
        the rows of :class:`RunProjection` without a pass over the points."""
        shape = (self.first.shape[0],) + (1,) * (at_first.dim() - 2) + (-1,)
        x_first, x_last = self.xs[self.first], self.xs[self.last]
        width = (x_last - x_first).view(shape)
        slope = torch.where(width > 0, (at_last - at_first) / torch.where(width > 0, width, 1.0),
                            0.0)
        at_centre = at_first + (self.centre - x_first).view(shape) * slope
        return torch.stack([self.counts.sqrt().view(shape) * at_centre,
                            self.spread.sqrt().view(shape) * slope], dim=-1).flatten(-2)

    def projection(self, order: torch.Tensor | None = None) -> RunProjection:
        """Q' for values at the points in increasing order, or in the caller's ``order``."""
        if order is None:
            return RunProjection(self.run, self.counts, self.centred, self.spread)
        unsort = torch.empty_like(order).scatter_(
            0, order, torch.arange(order.shape[0], device=order.device))
        return RunProjection(self.run[:, unsort], self.counts, self.centred[:, unsort], self.spread)


def mlp_jacobian_runs(layers: RawLayers, x: torch.Tensor, masks: list[torch.Tensor] | None = None
                      ) -> tuple[torch.Tensor, RunProjection]:
    """The Jacobian compressed per activation run: (Q'J (N, m, P), Q') with J = Q (Q'J); 1D x.

    Consecutive points with the same activation pattern form a run; there the network is affine
    in x, every activation h is affine in x, and delta (d out / d z) is constant. Q has two
    orthonormal columns per run, 1/sqrt(n_run) and (x - c)/sqrt(S) (c the run's mean point,
    S = sum (x - c)^2), so J = Q (Q'J) exactly and Q'J = [delta (x) Q'h, delta Q'1] per run: the
    activations projected per run (two moments each) and delta at one point of the run. J'J then
    costs m P^2 with m = 2 runs instead of n P^2, and J'r = (Q'J)'(Q'r). Exact in exact
    arithmetic, for any order of the points (unsorted points are sorted to find the runs).

    Only the activation pattern needs every point (one forward pass); the rest costs per run:
    Q'h from h at each run's first and last points under the run's pattern
    (:meth:`Runs.rows_from_ends`, as :func:`derived_jacobian_runs` does for phase 1), delta
    at its first point. Rounding: as :func:`derived_jacobian_runs`. ``masks``: the hidden
    layers' z > 0 at x (as :func:`~relu_regions.training.functional.mlp_forward` gives them),
    if known, saves that pass.
    """
    n_seeds = layers[0][0].shape[0]
    xs, order = _sorted(x)
    with torch.no_grad():
        if masks is None:
            masks = _hidden_masks(layers, xs)[1]
        elif order is not None:
            masks = [m[..., order] for m in masks]
        runs = Runs.of(torch.cat(masks, dim=1), xs)
    # Each run's pattern (its first point's; padding runs borrow point 0, weight 0).
    pattern = [m.gather(2, runs.first.unsqueeze(1).expand(-1, m.shape[1], -1)).to(xs.dtype)
               for m in masks]
    ends = torch.stack([runs.first, runs.last], dim=2).flatten(1)  # (N, 2R): first, last per run
    h = xs[ends].unsqueeze(1)
    hs = [h]
    for (w, b), on in zip(layers[:-1], pattern, strict=True):
        h = (b.unsqueeze(-1) + _small_matmul(w, h)) * on.repeat_interleave(2, dim=2)
        hs.append(h)
    deltas = _deltas(layers, pattern, _small_matmul)  # per run: (N, o, R)
    bias_factor = torch.stack([runs.counts.sqrt(), torch.zeros_like(runs.counts)], dim=2)
    rows = _jacobian_rows(layers, [runs.rows_from_ends(h[..., 0::2], h[..., 1::2]) for h in hs],
                          [d.repeat_interleave(2, dim=2) for d in deltas],
                          bias_factor.reshape(n_seeds, 1, -1))
    return rows.transpose(1, 2), runs.projection(order)


def derived_jacobian_runs(layout: SumLayout, theta: torch.Tensor,
                          x: torch.Tensor) -> tuple[torch.Tensor, RunProjection]:
    """Phase 1's Jacobian (derived parameters, 1D input) as the compact pair (Q'J, Q').

    Inside a run of the derived net's activation pattern (``layout.pattern``) every Jacobian row
    is affine in x: J(x) = J(c) + (x - c) B. Forward mode at the run's first and last points gives
    B = (J_last - J_first) / (x_last - x_first) (0 for a one-point run) and J(c), and the rows
    sqrt(n_run) J(c), sqrt(S) B pair with :class:`RunProjection`'s Q' like
    :func:`mlp_jacobian_runs`' rows: the same J'J and J'r, from 2 points per run instead of n.
    Rounding: the centred x of a run sum to 0 only up to rounding, and the cross term that this
    drops grows with |x| / (run width): J'J to ~1e-16 relative on [0, 1], ~1e-12 at x ~ 1e4 on a
    unit-width interval (the LM step is then slightly less exact, never accepted unless it lowers
    the loss).
    """
    xs, order = _sorted(x)
    with torch.no_grad():
        runs = Runs.of(layout.pattern(theta, xs.unsqueeze(-1)), xs)
    ends = torch.stack([runs.first, runs.last], dim=2).flatten(1)  # (N, 2R): first, last per run
    points = xs[ends].unsqueeze(-1)  # per seed (N, 2R, 1)
    n_params = theta.shape[1]
    expanded = points.repeat_interleave(n_params, dim=0)  # jvp_jacobian's row s*P + p is seed s
    J = jvp_jacobian(lambda th: layout.predict(th, expanded), theta)  # (N, 2R, P)
    J = J.transpose(1, 2)  # (N, P, 2R): runs last
    rows = runs.rows_from_ends(J[..., 0::2], J[..., 1::2]).transpose(1, 2)
    return rows, runs.projection(order)


def lm_jacobian(layers: RawLayers, x: torch.Tensor, masks: list[torch.Tensor] | None = None
                ) -> torch.Tensor | tuple[torch.Tensor, RunProjection]:
    """The Jacobian :func:`run_lm` should get for raw weights: for a 1D input the compact pair
    (Q'J, Q') per activation run (:func:`mlp_jacobian_runs`, same J'J and J'r from fewer rows;
    ``masks`` as there), otherwise the plain J of :func:`mlp_jacobian`."""
    return mlp_jacobian_runs(layers, x, masks) if x.dim() == 1 else mlp_jacobian(layers, x)


def chain_jacobian(J: torch.Tensor | tuple[torch.Tensor, RunProjection],
                   D: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, RunProjection]:
    """J @ D (the chain rule to other coordinates) for a plain J or a compact pair (Q'J, Q'):
    the compact rows only ever combine on the parameter side, so Q' carries over.

    One product per seed on fresh copies of its own rows (a compact pair: only its own, not the
    padding): batched, MKL rounds a matrix by its memory alignment and the padded row count, and
    a seed's result would depend on the seeds beside it."""
    if isinstance(J, tuple):
        out = J[0].new_zeros(*J[0].shape[:2], D.shape[2])
        for s, m in enumerate(J[1].rows.tolist()):
            out[s, :m] = J[0][s, :m].clone(memory_format=torch.contiguous_format) @ D[s].clone()
        return out, J[1]
    return torch.stack([J[s].clone(memory_format=torch.contiguous_format) @ D[s].clone()
                        for s in range(J.shape[0])])


def jvp_jacobian(predict: Callable[[torch.Tensor], torch.Tensor],
                 theta: torch.Tensor) -> torch.Tensor:
    """(N, n, P) by forward-mode AD, all P tangents in one batched pass (for small P: phase 1).

    Row s*P + p of the expanded batch carries seed s with tangent e_p.
    """
    n_seeds, n_params = theta.shape
    primal = theta.repeat_interleave(n_params, dim=0)
    tangent = torch.eye(n_params, dtype=theta.dtype, device=theta.device).repeat(n_seeds, 1)
    with fwAD.dual_level():
        out = predict(fwAD.make_dual(primal, tangent))
        d = fwAD.unpack_dual(out).tangent
    return d.reshape(n_seeds, n_params, -1).transpose(1, 2)
