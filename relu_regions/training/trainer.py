"""The two-phase trainer and its baselines, many seeds at once (PAPERS.md part A, training protocol).

Every phase trains a matrix Theta of shape (seeds, P): one flat parameter vector per seed, mapped
to predictions by batched tensor operations over all seeds at once (stacked weights, ``bmm``).
The loss is the *sum* over seeds of each seed's MSE, so each seed's gradient is its own, and Adam
(elementwise) and Levenberg-Marquardt (per-seed damping, per-seed Gram and solves) update every
seed exactly as if it were trained alone.

Phase 1 (derived parameters): Theta = [peak logits, log scales, c0, c1] -> derived-form F.
Release: derived -> raw width-4 weights (``construction.raw_weights``), the same function.
Phase 2 (raw weights): Theta = all weights and biases of the Linear/ReLU stack, flattened.
Starts: every seed runs several starts (random peaks) through phase 1 and a share of phase 2 as
extra rows of the batch, and keeps the one with the lowest raw training MSE.

Methods (same total step budget): ``kaiming``, ``raai`` (random init, raw training only),
``skip`` (construction init with random peaks, raw training only), ``pretrain`` (two phases, free
scales), ``pretrain-thm31`` (two phases, Theorem 3.1 scales).
"""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.autograd.forward_ad as fwAD

from ..nets import construction as C
from ..errors import InputError
from ..nets.mlp import kaiming_, raai_
from ..nets.parametrize import linear_relu_stack

METHODS = ("kaiming", "raai", "skip", "pretrain", "pretrain-thm31")
PARAMETERIZATIONS = ("sp", "gmp")
OPTIMIZERS = ("lm", "adam")


# ---------------------------------------------------------------------------------------------
# Configuration

@dataclass
class Phase:
    """One training phase: optimizer ("lm" = Levenberg-Marquardt, "adam"), steps, learning rate.

    A step is one full-batch update (an "epoch" in the paper). ``lr`` is Adam's step size, or
    LM's initial damping.
    """

    optimizer: str = "lm"
    steps: int = 300
    lr: float = 1e-3

    def validate(self, name: str) -> "Phase":
        if self.optimizer not in OPTIMIZERS:
            raise InputError(f"{name} optimizer {self.optimizer!r} is not one of {OPTIMIZERS}")
        if isinstance(self.steps, bool) or not isinstance(self.steps, int) or self.steps < 0:
            raise InputError(f"{name} steps must be a whole number >= 0, got {self.steps!r}")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise InputError(f"{name} learning rate must be a positive number, got {self.lr!r}")
        return self


# The defaults are the best measured on this machine (docs/training.md): LM in both phases.
DEFAULT_PHASE1 = Phase("lm", 100, 1e-3)
DEFAULT_PHASE2 = Phase("lm", 400, 1e-3)
# The paper's protocol, for reproduction: Adam lr 1e-3, 1000 steps of phase 1.
PAPER_PHASE1 = Phase("adam", 1000, 1e-3)
PAPER_PHASE2 = Phase("adam", 1000, 1e-3)


# ---------------------------------------------------------------------------------------------
# Flat parameter layouts

def raw_shapes(depth: int, width: int = 4):
    return shapes_of([1] + [width] * depth + [1])


def shapes_of(widths):
    """[(W shape, b shape)] of the Linear layers of an MLP with these widths."""
    return [((o, i), (o,)) for i, o in zip(widths[:-1], widths[1:])]


def flatten_layers(layers) -> torch.Tensor:
    """[(W (N,o,i), b (N,o)), ...] -> Theta (N, P)."""
    n = layers[0][0].shape[0]
    return torch.cat([t.reshape(n, -1) for wb in layers for t in wb], dim=1)


def unflatten_layers(theta: torch.Tensor, shapes):
    """Theta (..., P) -> [(W (..., o, i), b (..., o)), ...]."""
    out, at = [], 0
    lead = theta.shape[:-1]
    for ws, bs in shapes:
        nw, nb = math.prod(ws), math.prod(bs)
        w = theta[..., at:at + nw].reshape(*lead, *ws)
        b = theta[..., at + nw:at + nw + nb].reshape(*lead, *bs)
        out.append((w, b))
        at += nw + nb
    return out


def mlp_forward(layers, x: torch.Tensor) -> torch.Tensor:
    """All seeds' Linear/ReLU stacks on points x (n,) or (n, k): layers [(W (N,o,i), b (N,o))]
    -> (N, n).

    Points run along the last axis (activations (N, width, n)), so each hidden layer is one
    batched (o x i) @ (i x n) product: several times faster than (n x i) @ (i x o) for width 4.
    """
    h = _first_layer(layers[0], x)
    for w, b in layers[1:]:
        h = torch.baddbmm(b.unsqueeze(-1), w, torch.relu(h))
    return h.squeeze(1)


def _inputs(x):
    """Points x (n,) or (n, k) as (1, k, n): inputs along the second axis, points last."""
    return x.reshape(x.shape[0], -1).T.unsqueeze(0)


def _first_layer(layer, x):
    """z_1 = W_1 x + b_1 (N, o, n), elementwise per input (a product with the input broadcast
    over seeds would be folded into one matrix product across seeds, and a seed's gradient would
    then depend on its batch neighbours)."""
    w, b = layer
    inputs = _inputs(x)
    z = b.unsqueeze(-1) + w[:, :, :1] * inputs[:, :1]
    for m in range(1, inputs.shape[1]):
        z = z + w[:, :, m:m + 1] * inputs[:, m:m + 1]
    return z


def _hidden_masks(layers, x):
    """Activations (N, width, n) of the input and every hidden layer, and the masks z > 0."""
    hs = [_inputs(x).expand(layers[0][0].shape[0], -1, -1)]
    masks = []
    for k, (w, b) in enumerate(layers[:-1]):
        z = _first_layer(layers[0], x) if k == 0 else torch.baddbmm(b.unsqueeze(-1), w, hs[-1])
        masks.append(z > 0)
        hs.append(torch.relu(z))
    return hs, masks


def _deltas(layers, masks):
    """delta_k = d out / d z_k (N, o, n) per layer: delta_L = 1, (W_{k+1}' delta_{k+1}) * mask_k."""
    w_last = layers[-1][0]
    delta = torch.ones(w_last.shape[0], 1, masks[0].shape[-1] if masks else 1,
                       dtype=w_last.dtype, device=w_last.device)
    out = [delta]
    for k in range(len(layers) - 1, 0, -1):
        delta = torch.bmm(layers[k][0].transpose(1, 2), delta) * masks[k - 1]
        out.append(delta)
    return out[::-1]


def _jacobian_rows(layers, hs, deltas, bias_factor):
    """Rows [delta_k (x) h_{k-1}, bias_factor * delta_k] over all layers, as (N, P, m).

    ``hs``/``deltas``: per point (or per run row) inputs (N, i, m) and deltas (N, o, m) of each
    layer; ``bias_factor`` (N or 1, 1, m). Elementwise only: a seed's rows do not depend on m.
    """
    n_seeds, m = hs[0].shape[0], hs[-1].shape[-1]
    sizes = [w.shape[1] * (w.shape[2] + 1) for w, _ in layers]
    out = hs[-1].new_empty(n_seeds, sum(sizes), m)
    at = 0
    for (w, _), h, delta, size in zip(layers, hs, deltas, sizes):
        o, i = w.shape[1:]
        block = out[:, at:at + o * i].view(n_seeds, o, i, m)
        torch.mul(delta.unsqueeze(2), h.unsqueeze(1), out=block)
        torch.mul(delta, bias_factor, out=out[:, at + o * i:at + size])
        at += size
    return out


def mlp_jacobian(layers, x: torch.Tensor) -> torch.Tensor:
    """d output / d Theta, (N, n, P), in ``flatten_layers`` order, by back-propagation per point.

    With h_k the activations and delta_k = d out / d z_k: d out / d W_k = delta_k h_{k-1}^T and
    d out / d b_k = delta_k, where delta_L = 1 and delta_k = (W_{k+1}^T delta_{k+1}) * [z_k > 0].
    """
    hs, masks = _hidden_masks(layers, x)
    ones = torch.ones(1, 1, x.shape[0], dtype=x.dtype, device=x.device)
    return _jacobian_rows(layers, hs, _deltas(layers, masks), ones).transpose(1, 2)


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
    ``counts``, ``centre`` c and ``spread`` S = sum (x - c)^2; ``centred`` (N, n) = x - c.
    Seeds with fewer runs are padded with empty runs (count 0, first = last = point 0).
    """

    run: torch.Tensor
    first: torch.Tensor
    last: torch.Tensor
    counts: torch.Tensor
    centre: torch.Tensor
    centred: torch.Tensor
    spread: torch.Tensor

    @classmethod
    def of(cls, pattern: torch.Tensor, xs: torch.Tensor) -> "Runs":
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
        return cls(run, ends[0], ends[1], counts, centre, centred, spread)

    def projection(self, order=None) -> RunProjection:
        """Q' for values at the points in increasing order, or in the caller's ``order``."""
        if order is None:
            return RunProjection(self.run, self.counts, self.centred, self.spread)
        unsort = torch.empty_like(order).scatter_(
            0, order, torch.arange(order.shape[0], device=order.device))
        return RunProjection(self.run[:, unsort], self.counts, self.centred[:, unsort], self.spread)


def mlp_jacobian_runs(layers, x: torch.Tensor):
    """The Jacobian compressed per activation run: (Q'J (N, m, P), Q') with J = Q (Q'J); 1D x.

    Consecutive points with the same activation pattern form a run; there the network is affine
    in x, every activation h is affine in x, and delta (d out / d z) is constant. Q has two
    orthonormal columns per run, 1/sqrt(n_run) and (x - c)/sqrt(S) (c the run's mean point,
    S = sum (x - c)^2), so J = Q (Q'J) exactly and Q'J = [delta (x) Q'h, delta Q'1] per run: the
    activations projected per run (two moments each) and delta at one point of the run. J'J then
    costs m P^2 with m = 2 runs instead of n P^2, and J'r = (Q'J)'(Q'r). Exact in exact
    arithmetic, for any order of the points (unsorted points are sorted to find the runs).
    """
    n_seeds = layers[0][0].shape[0]
    xs, order = _sorted(x)
    hs, masks = _hidden_masks(layers, xs)
    runs = Runs.of(torch.cat(masks, dim=1), xs)
    project = runs.projection()  # for values in increasing x
    # The first point of each run carries its deltas (padding runs borrow point 0; weight 0).
    deltas = [d.gather(2, runs.first.unsqueeze(1).expand(-1, d.shape[1], -1))
              .repeat_interleave(2, dim=2) for d in _deltas(layers, masks)]
    bias_factor = torch.stack([runs.counts.sqrt(), torch.zeros_like(runs.counts)], dim=2)
    rows = _jacobian_rows(layers, [project(h) for h in hs], deltas,
                          bias_factor.reshape(n_seeds, 1, -1))
    return rows.transpose(1, 2), project if order is None else runs.projection(order)


def derived_jacobian_runs(layout, theta: torch.Tensor, x: torch.Tensor):
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
    J_first, J_last = J[:, 0::2], J[:, 1::2]
    x_first, x_last = xs[runs.first], xs[runs.last]
    width = x_last - x_first
    slope = torch.where((width > 0).unsqueeze(-1),
                        (J_last - J_first) / torch.where(width > 0, width, 1.0).unsqueeze(-1), 0.0)
    at_centre = J_first + (runs.centre - x_first).unsqueeze(-1) * slope
    rows = torch.stack([runs.counts.sqrt().unsqueeze(-1) * at_centre,
                        runs.spread.sqrt().unsqueeze(-1) * slope], dim=2).flatten(1, 2)
    return rows, runs.projection(order)


def lm_jacobian(layers, x: torch.Tensor):
    """The Jacobian :func:`run_lm` should get for raw weights: for a 1D input the compact pair
    (Q'J, Q') per activation run (:func:`mlp_jacobian_runs`, same J'J and J'r from fewer rows),
    otherwise the plain J of :func:`mlp_jacobian`."""
    return mlp_jacobian_runs(layers, x) if x.dim() == 1 else mlp_jacobian(layers, x)


def chain_jacobian(J, D: torch.Tensor):
    """J @ D (the chain rule to other coordinates) for a plain J or a compact pair (Q'J, Q'):
    the compact rows only ever combine on the parameter side, so Q' carries over."""
    if isinstance(J, tuple):
        return torch.bmm(J[0], D), J[1]
    return torch.bmm(J, D)


def jvp_jacobian(predict, theta: torch.Tensor) -> torch.Tensor:
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


@dataclass
class GmPLayout:
    """Raw training on GmP coordinates (Chen & Ge, Section 3): per unit w = r u(angles), b = r lambda.

    Flat per layer: [angles (o, i-1), r (o), lambda (o)]. With one input the direction is the
    sign, which lives in r (``gmp.to_hyperspherical``). A unit with zero weights (the
    construction's constant "bias" neuron) has no direction and lambda = b / r is undefined: it
    keeps its bias as a constant offset b0, so b = r lambda + b0 (b0 = 0 for every other unit).
    """

    shapes: list

    def from_raw(self, theta: torch.Tensor):
        from ..gmp.layers import to_hyperspherical

        parts, offsets = [], []
        for w, b in unflatten_layers(theta, self.shapes):
            r, angles = to_hyperspherical(w)
            dead = r == 0
            safe_r = torch.where(dead, torch.ones_like(r), r)
            lam = torch.where(dead, torch.zeros_like(b), b / safe_r)
            offsets.append(torch.where(dead, b, torch.zeros_like(b)))
            parts += [angles.flatten(1), r, lam]
        return torch.cat(parts, dim=1), torch.cat(offsets, dim=1)

    def to_raw(self, theta: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
        from ..gmp.layers import from_hyperspherical

        layers, at, at_b = [], 0, 0
        for (o, i), _ in self.shapes:
            n_ang = o * (i - 1)
            angles = theta[:, at:at + n_ang].reshape(theta.shape[0], o, i - 1)
            r, lam = theta[:, at + n_ang:at + n_ang + o], theta[:, at + n_ang + o:at + n_ang + 2 * o]
            w = r.unsqueeze(-1) if i == 1 else from_hyperspherical(r, angles)
            layers.append((w, r * lam + offsets[:, at_b:at_b + o]))
            at, at_b = at + n_ang + 2 * o, at_b + o
        return flatten_layers(layers)


# ---------------------------------------------------------------------------------------------
# Optimizers over Theta (N, P); predict(Theta) -> (N, n) is batched over seeds, row by row

def _per_seed_mse(predict, theta, y):
    with torch.no_grad():
        r = predict(theta) - y
        return (r * r).mean(dim=1)


def run_adam(predict, jacobian, theta, y, phase: Phase, history: list, progress=None,
             start=None, on_step=None):
    """Full-batch Adam on every seed at once (loss = sum of per-seed MSEs).

    ``start`` = (step, theta, optimizer state) resumes; ``on_step(step, theta, state)`` is called
    after every step (checkpoints).
    """
    first = 0
    if start is not None:
        first, theta, state = start
    theta = theta.clone().requires_grad_(True)
    opt = torch.optim.Adam([theta], lr=phase.lr)
    if start is not None:
        opt.load_state_dict(state)
    for step in range(first, phase.steps):
        opt.zero_grad(set_to_none=True)
        r = predict(theta) - y
        mse = (r * r).mean(dim=1)
        bad = ~torch.isfinite(mse)
        mse.masked_fill(bad, 0.0).sum().backward()
        if bad.any():  # a diverged seed must not poison the others: freeze it
            theta.grad[bad] = 0.0
        opt.step()
        history.append(mse.detach())
        if progress:
            progress(mse.detach())
        if on_step:
            on_step(step + 1, theta.detach(), opt.state_dict())
    return theta.detach()


MU_MIN, MU_MAX = 1e-15, 1e15


def _gram(rows: torch.Tensor, counts, seeds) -> list:
    """[A_s A_s' for s in seeds], A_s = the seed's own leading ``counts[s]`` columns of (N, P+1, m).

    One 2D product per seed on its own rows, so a seed's Gram matrix does not depend on which
    seeds share the batch or how far the others are padded.
    """
    out = []
    for s in seeds.tolist():
        a = rows[s, :, :counts[s]]
        out.append(a @ a.T)
    return out


def _damped_steps(gram: torch.Tensor, mu: torch.Tensor) -> torch.Tensor:
    """Solve (H + mu (diag H + tiny)) delta = -g per seed, from [[H, g], [g', .]] (N, P+1, P+1).

    Cholesky (the matrix is positive definite unless rounding says otherwise; then LU, and a
    singular system gives a non-finite step that the caller rejects).
    """
    H, g = gram[:, :-1, :-1], -gram[:, :-1, -1:]
    d = torch.diagonal(H, dim1=1, dim2=2)
    floor = 1e-12 * d.mean(dim=1, keepdim=True).clamp_min(1e-300)
    A = H.clone()
    A.diagonal(dim1=1, dim2=2).add_(mu[:, None] * (d + floor))
    L, info = torch.linalg.cholesky_ex(A)
    # Triangular solves (and LU) one seed at a time: batched, they round differently at some
    # batch positions, and a seed's result would depend on its neighbours.
    steps = [torch.cholesky_solve(g[i:i + 1], L[i:i + 1]) if ok == 0
             else torch.linalg.solve_ex(A[i:i + 1], g[i:i + 1])[0]
             for i, ok in enumerate(info.tolist())]
    return torch.cat(steps).squeeze(-1)


def run_lm(predict, jacobian, theta, y, phase: Phase, history: list, progress=None,
           start=None, on_step=None):
    """Levenberg-Marquardt (Marquardt scaling) on every seed at once, damping per seed.

    Each step solves (J'J + mu (diag(J'J) + tiny I)) delta = -J'r per seed and keeps the step
    only if it lowers that seed's MSE (mu /= 3), else raises mu (x 4, at most 1e15).

    Work per seed is only what the seed needs: J'J and J'r are formed for the seeds whose
    parameters moved in the last step (a rejected step leaves them as they were); a seed rejected
    at the largest damping is at a fixed point (the same state gives the same rejected step) and
    stops. ``jacobian(theta)`` returns a plain (N, n, P) tensor or the compact pair (rows per
    activation run, Q') of :func:`mlp_jacobian_runs` / :func:`lm_jacobian`.
    Every per-seed product and solve runs on that seed's own rows, so a seed's result is the same,
    bit for bit, whichever seeds share the batch.

    ``start`` = (step, theta, {"mu", "mse", "frozen"}) resumes ("frozen" may be missing: such a
    seed then repeats its rejected step once and stops again); ``on_step(step, theta, state)`` is
    called after every step (checkpoints).
    """
    first = 0
    n_seeds = theta.shape[0]
    r = None  # residual at theta
    if start is not None:
        first, theta, state = start
        mu, mse = state["mu"], state["mse"]
        frozen = state.get("frozen", torch.zeros(n_seeds, dtype=torch.bool, device=theta.device))
    else:
        mu = torch.full((n_seeds,), phase.lr, dtype=theta.dtype, device=theta.device)
        frozen = torch.zeros(n_seeds, dtype=torch.bool, device=theta.device)
        with torch.no_grad():
            r = predict(theta) - y
        mse = (r * r).mean(dim=1)
    stale = ~frozen  # seeds whose J'J / J'r (in ``gram``) are not those of their current theta
    gram = None
    for step in range(first, phase.steps):
        with torch.no_grad():
            if not bool(frozen.all()):
                if r is None:
                    r = predict(theta) - y
                if bool(stale.any()):
                    J = jacobian(theta)
                    J, project = J if isinstance(J, tuple) else (J, None)
                    rhs = r if project is None else project(r)
                    rows = torch.cat([J.transpose(1, 2), rhs.unsqueeze(1)], dim=1)  # (N, P+1, m)
                    counts = ([rows.shape[2]] * n_seeds if project is None
                              else project.rows.tolist())
                    if gram is None:
                        gram = rows.new_zeros(n_seeds, rows.shape[1], rows.shape[1])
                    todo = stale.nonzero().squeeze(1)
                    gram[todo] = torch.stack(_gram(rows, counts, todo))
                    stale = torch.zeros_like(stale)
                active = (~frozen).nonzero().squeeze(1)
                every = active.shape[0] == n_seeds
                G = gram if every else gram[active]
                mu_a = mu if every else mu[active]
                step_a = _damped_steps(G, mu_a)
                if every:
                    trial = theta + step_a
                else:
                    delta = torch.zeros_like(theta)
                    delta[active] = step_a
                    trial = theta + delta
                r_trial = predict(trial) - y
                trial_mse = (r_trial * r_trial).mean(dim=1)
                better = torch.isfinite(trial_mse) & (trial_mse < mse) & ~frozen
                theta = torch.where(better[:, None], trial, theta)
                r = torch.where(better[:, None], r_trial, r)
                mse = torch.where(better, trial_mse, mse)
                frozen = frozen | (~better & (mu == MU_MAX))
                mu = torch.where(better, mu / 3, mu * 4).clamp(MU_MIN, MU_MAX)
                stale = better
        history.append(mse.clone())
        if progress:
            progress(mse)
        if on_step:
            on_step(step + 1, theta, {"mu": mu, "mse": mse, "frozen": frozen})
    return theta


def optimize(predict, jacobian, theta, y, phase: Phase, history: list, progress=None,
             stages: "Stages | None" = None, start=None, final: dict | None = None):
    """Run one training stage; with ``stages``, checkpointed and resumable.

    ``start`` = (step, theta, optimizer state) continues a run at that step; ``final`` (a dict)
    receives the optimizer's last "theta" and "state", which is what a continuation needs (after
    picking rows with :func:`_pick_rows`).
    """
    if stages is not None:
        return stages.run(predict, jacobian, theta, y, phase, history, progress, start, final)
    return _run_stage(predict, jacobian, theta, y, phase, history, progress, start,
                      _keep_last(final))


def _run_stage(predict, jacobian, theta, y, phase, history, progress, start, on_step):
    """``phase``'s optimizer on Theta (nothing for 0 steps)."""
    if phase.steps == 0:
        return theta
    run = run_lm if phase.optimizer == "lm" else run_adam
    return run(predict, jacobian, theta, y, phase, history, progress, start=start, on_step=on_step)


def _keep_last(final: dict | None, then=None):
    """on_step callback that stores the last (theta, state) in ``final``, then calls ``then``."""
    def on_step(step, theta, state):
        if final is not None:
            final.update(theta=theta, state=state)
        if then is not None:
            then(step, theta, state)
    return on_step


def _map_tensors(obj, fn):
    """``obj`` (nested dicts, lists, tuples) with ``fn`` applied to every tensor in it."""
    if isinstance(obj, torch.Tensor):
        return fn(obj)
    if isinstance(obj, dict):
        return {k: _map_tensors(v, fn) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_map_tensors(v, fn) for v in obj)
    return obj


def _pick_rows(obj, pick, rows: int):
    """Apply ``pick`` (rows of a batch -> one per seed) to every tensor in ``obj`` (nested dicts,
    lists) whose first dimension is the batch's ``rows``; other values are kept."""
    return _map_tensors(obj, lambda t: pick(t) if t.dim() >= 1 and t.shape[0] == rows else t)


# /2: every start runs phase 1 and a share of phase 2 before the pick, the kept start continues
# that run (the stages of /1 differ); finished stages keep the optimizer's final state.
TRAIN_STATE_FORMAT = "relu-regions-train-state/2"


class Stages:
    """Numbers the optimize() calls of one fit, checkpoints them, and resumes them.

    A checkpoint (``torch.save``, read back with ``weights_only=True``) holds the outputs (and the
    optimizer's final state) of the stages already finished and, for the stage under way, its
    step, Theta, optimizer state and loss history. Resuming replays the fit: finished stages
    return their stored outputs, the code between stages (pick the best start, release, insert a
    layer) is deterministic and runs again, and the stage under way continues from its step, so
    the result is bit-identical to a run that was never interrupted (same seeds, float64, CPU).
    """

    def __init__(self, path=None, every: int | None = None, state: dict | None = None,
                 meta: str = ""):
        self.path, self.every, self.meta = path, every, meta
        self.index, self.state = 0, state
        self.outputs = list(state["outputs"]) if state else []
        self.finals = list(state["finals"]) if state else []
        self.total_steps = 0

    def run(self, predict, jacobian, theta, y, phase, history, progress, start=None, final=None):
        k = self.index
        self.index += 1
        if k < len(self.outputs):  # finished before the interruption
            if final is not None:
                final.update(_to_device(self.finals[k], theta.device))
            return self.outputs[k].to(theta.device)
        if self.state is not None and self.state["stage"] == k:
            history[:] = list(self.state["history"])
            start = (self.state["step"], self.state["theta"].to(theta.device),
                     _to_device(self.state["optimizer"], theta.device))
            self.state = None
        last: dict = {}
        save = lambda step, th, opt: self._maybe_save(k, step, th, opt, history)  # noqa: E731
        out = _run_stage(predict, jacobian, theta, y, phase, history, progress, start,
                         _keep_last(last, save))
        self.outputs.append(out.detach().clone())
        self.finals.append(_to_cpu(last))
        if final is not None:
            final.update(last)
        return out

    def _maybe_save(self, stage, step, theta, opt_state, history):
        self.total_steps += 1
        if self.path is None or not self.every or self.total_steps % self.every:
            return
        from ..checkpoint import atomic_write

        state = {"format": TRAIN_STATE_FORMAT, "stage": stage, "step": step,
                 "theta": theta.detach().cpu(), "optimizer": _to_cpu(opt_state),
                 "outputs": [o.cpu() for o in self.outputs], "finals": self.finals,
                 "history": [h.cpu() for h in history], "meta": self.meta}
        atomic_write(Path(self.path), lambda f: torch.save(state, f))


def _to_cpu(obj):
    return _to_device(obj, "cpu")


def _to_device(obj, device):
    """A copy of ``obj`` (nested dicts, lists) with every tensor on ``device``, detached."""
    return _map_tensors(obj, lambda t: t.detach().to(device, copy=True))


def load_train_state(path) -> dict:
    """Read a training checkpoint written by :class:`Stages` (never runs code)."""
    import pickle
    import warnings

    path = Path(path)
    if not path.is_file():
        raise InputError(f"no training state at {path}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            state = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError) as e:
        raise InputError(f"{path} is not a readable training state "
                         f"({str(e).splitlines()[0][:150] if str(e) else type(e).__name__})") from None
    fmt = state.get("format") if isinstance(state, dict) else None
    ours = TRAIN_STATE_FORMAT.split("/")[0] + "/"
    if isinstance(fmt, str) and fmt.startswith(ours) and fmt != TRAIN_STATE_FORMAT:
        raise InputError(f"{path} was written by another version of relu-regions ({fmt}; this one "
                         f"reads {TRAIN_STATE_FORMAT}) whose training stages differ; "
                         "start the run again")
    if fmt != TRAIN_STATE_FORMAT:
        raise InputError(f"{path} is not a relu-regions training state")
    return state


# ---------------------------------------------------------------------------------------------
# Initializations

# The insertion settings (a_new, S) grow() runs as paths, all folding by range: two interleaved
# 3 x 3 grids, peaks 0.3 .. 0.8 and scale ratios on a factor-2 ladder 1/8 .. 4. Which one trains
# best differs from net to net (docs/training.md).
INSERT_PATHS = tuple([(a, S) for a in (0.3, 0.5, 0.7) for S in (0.25, 1.0, 4.0)]
                     + [(a, S) for a in (0.4, 0.6, 0.8) for S in (0.125, 0.5, 2.0)])
STARTS, GROW_STARTS = 8, 16  # phase-1 starts per seed: default, and when growing (fit)
PICK_SHARE = 0.25  # of phase 2's steps, run on every start before each seed keeps its best


def insert_layer(theta, depth, a_last, x, y, *, a_new, S, by_range):
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
    h = x.reshape(1, -1, 1).expand(n, -1, 1)
    for w, b in layers[:-1]:
        h = torch.relu(torch.baddbmm(b.unsqueeze(1), h, w.transpose(1, 2)))
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
    coef = torch.linalg.lstsq(basis, target, driver="gelsd").solution.squeeze(-1)
    keep_old = torch.zeros_like(coef)
    keep_old[:, 0], keep_old[:, 4] = 1.0, -big_c
    err = lambda c: (torch.bmm(basis, c.unsqueeze(-1)).squeeze(-1) - y).pow(2).mean(dim=1)  # noqa: E731
    coef = torch.where((err(coef) <= err(keep_old))[:, None], coef, keep_old)
    new_layers = list(layers[:-1]) + [(w_new, b_new), (coef[:, :4].unsqueeze(1), coef[:, 4:])]
    return flatten_layers(new_layers)


def _best_rows(mse, k: int, n: int):
    """Row j*n + s of a batch is try j of seed s; returns pick(t): each seed's row with the lowest
    ``mse`` (a NaN counts as worst)."""
    best = torch.nan_to_num(mse, nan=math.inf).reshape(k, n).argmin(dim=0)
    return lambda t: t.reshape(k, n, *t.shape[1:])[best, torch.arange(n, device=t.device)]


def grow(theta, d0, depth, a_last, x, y, train, predict, history):
    """From depth ``d0`` to ``depth``, one inserted layer at a time (:func:`insert_layer`, folding
    by range), along several paths: each (a_new, S) of INSERT_PATHS is one path, used for every
    insertion on it. All paths train as one batch; per seed the path with the lowest final
    training MSE is kept (like phase 1's starts). ``train(theta, history, depth)`` trains a batch
    at a depth; ``predict(theta, depth)`` evaluates it.

    Only range folding: folding by the bias neuron adds nothing once phase 2 has killed that
    neuron (on x^3 those paths ended at one MSE whatever their peak) and lost on x^11 in 9 of 10
    seeds; their slots went to a second grid (docs/training.md).
    """
    k, n = len(INSERT_PATHS), theta.shape[0]
    a_new, scale = (torch.tensor([p[j] for p in INSERT_PATHS], dtype=theta.dtype,
                                 device=theta.device).repeat_interleave(n) for j in (0, 1))
    theta, a_last = theta.repeat(k, 1), a_last.repeat(k)
    trial_history: list = []
    for d in range(d0, depth):
        theta = insert_layer(theta, d, a_last, x, y, a_new=a_new, S=scale, by_range=True)
        theta, a_last = train(theta, trial_history, d + 1), a_new
    pick = _best_rows(_per_seed_mse(lambda th: predict(th, depth), theta, y), k, n)
    history += [pick(h) for h in trial_history]
    return pick(theta)


def random_theta(method, seeds, widths, box):
    """Kaiming / RAAI raw weights per seed (torch.Generator per seed). Each input is mapped to
    [0, 1] by folding (x_m - lo_m)/(hi_m - lo_m) into the first layer, as the construction does."""
    init = kaiming_ if method == "kaiming" else raai_
    lo = torch.tensor([b[0] for b in box], dtype=torch.float64)
    length = torch.tensor([b[1] - b[0] for b in box], dtype=torch.float64)
    rows = []
    for s in seeds:
        net = init(linear_relu_stack(widths), torch.Generator().manual_seed(int(s)))
        with torch.no_grad():
            w0, b0 = net[0].weight, net[0].bias
            b0 -= w0 @ (lo / length)
            w0 /= length
        rows.append(torch.cat([p.detach().reshape(-1) for p in net.parameters()]))
    return torch.stack(rows)


# ---------------------------------------------------------------------------------------------
# fit

@dataclass
class FitResult:
    """Per-seed results of :func:`fit`. ``mse`` is the test MSE (= training MSE on dense data)."""

    method: str
    target: str
    depth: int
    width: int
    seeds: list
    interval: tuple
    mse: np.ndarray
    train_mse: np.ndarray
    pieces: np.ndarray
    optimal_mse: float | None
    efficiency: np.ndarray | None
    history: dict
    models: list = field(repr=False)
    seconds: float = 0.0
    phases: dict = field(default_factory=dict)
    diverged: list = field(default_factory=list)
    shape: str = "convex"
    widths: list = field(default_factory=list)
    optimal_pieces: int | None = None
    max_pieces: int | None = None  # of the construction along the 1D input (None in nD)

    def summary(self) -> dict:
        finite = self.mse[np.isfinite(self.mse)]
        return {
            "method": self.method, "target": self.target, "depth": self.depth,
            "shape": self.shape, "widths": self.widths, "seeds": len(self.seeds),
            "mse_min": float(finite.min()) if finite.size else None,
            "mse_mean": float(finite.mean()) if finite.size else None,
            "mse_median": float(np.median(finite)) if finite.size else None,
            "pieces_mean": float(self.pieces.mean()),
            "max_pieces": self.max_pieces,
            "optimal_mse": self.optimal_mse, "optimal_pieces": self.optimal_pieces,
            "efficiency_mean": (float(np.mean(self.efficiency[np.isfinite(self.efficiency)]))
                                if self.efficiency is not None
                                and np.isfinite(self.efficiency).any() else None),
            "diverged": self.diverged, "seconds": round(self.seconds, 3),
        }

    def to_dict(self) -> dict:
        return {**self.summary(), "interval": list(self.interval), "phases": self.phases,
                "mse": _json_floats(self.mse), "train_mse": _json_floats(self.train_mse),
                "pieces": self.pieces.tolist(), "seed_list": list(self.seeds),
                "efficiency": None if self.efficiency is None else _json_floats(self.efficiency),
                "phase_boundary": self.history["phase_boundary"]}


def _json_floats(values) -> list:
    """Floats for JSON: a diverged seed's NaN/inf becomes null (JSON has no NaN)."""
    return [float(v) if np.isfinite(v) else None for v in np.asarray(values, dtype=np.float64)]


def fit(target=None, depth: int = 5, seeds=30, method: str = "pretrain-thm31",
        interval=(0.0, 1.0), points: int | None = None, sparse: int | None = None, data=None,
        phase1: Phase | None = None, phase2: Phase | None = None, width: int = 4,
        shape: str = "auto", seed: int = 0, count: bool = True, optimum: bool = True,
        device="cpu", progress: bool = False, threads: int | None = 1,
        parameterization: str = "sp", starts: int | None = None, grow_from: int | None = None,
        checkpoint=None, checkpoint_every: int | None = None, resume: dict | None = None,
        checkpoint_meta: str = "") -> FitResult:
    """Train ``seeds`` nets of width-4 constructions, ``depth`` hidden layers each, in one batch.

    target: an expression in x (``"x**3"``) or a callable on numpy arrays; or give ``data`` (a
    :class:`~relu_regions.targets.Dataset`, e.g. from ``targets.from_csv``). ``points``: dense
    data (evenly spaced; default 500 points in 1D, a 41 x 41 grid for a target in x and y, as
    ``targets.dense``); ``sparse=n``: n random training points and n separate test points.
    ``seeds``: a count (seeds seed..seed+N-1) or a list. ``phase1``/``phase2``: optimizer, steps,
    lr; one-phase methods get ``phase1.steps + phase2.steps`` raw steps with phase 2's
    optimizer (the same total budget). ``shape``: the construction's layout —
    1D "convex", "concave", "dc" (convex minus convex), nD "ridge" or "radial"; "auto" picks from
    the data (``composite.build_layout``); kaiming/raai train the same net (one term: width
    ``width``). ``threads``: torch intra-op threads while fitting (default 1: the batched ops are small, and extra threads only add synchronization, 100x slower on a busy
    machine); the previous setting is restored. None leaves it alone. ``parameterization``:
    raw-weight training on the standard weights ("sp") or on GmP coordinates ("gmp").
    ``starts``: starts per seed (random peaks each). Every start runs phase 1 and a share of
    phase 2: a quarter (``PICK_SHARE``), or when growing the depth-``grow_from`` stage. Each seed
    keeps the start with the lowest raw training MSE there; at a fixed depth that start's run
    continues to the end of phase 2, exactly as if it had been trained alone (phase 1 and 2 have
    local minima, and phase 1's loss is a poor guide to the basin phase 2 ends in:
    docs/training.md).
    Default 8, or 16 when growing (growth magnifies the depth-``grow_from`` basin; with 8, 2 of
    30 seeds started from a poorer one and ended 4-14x worse: docs/training.md).
    ``grow_from``: train at this depth first, then insert one construction layer at a time up to
    ``depth`` (see :func:`insert_layer`), splitting phase 2's steps between the depths; the
    insertions run along 18 paths per seed (:func:`grow`), the best on the training loss is kept.
    ``checkpoint``/``checkpoint_every``: write the training state to that file every N steps;
    ``resume``: a state from :func:`load_train_state` to continue (same arguments otherwise);
    ``checkpoint_meta``: text stored in the state (the CLI keeps the original command there).
    """
    if checkpoint_every is not None and (isinstance(checkpoint_every, bool)
                                         or not isinstance(checkpoint_every, int)
                                         or checkpoint_every < 1):
        raise InputError(f"checkpoint_every must be a whole number >= 1, got {checkpoint_every!r}")
    stages = Stages(checkpoint, checkpoint_every, resume, checkpoint_meta)
    if starts is None:
        growing = grow_from is not None and grow_from != depth
        starts = GROW_STARTS if growing else STARTS
    if isinstance(starts, bool) or not isinstance(starts, int) or starts < 1:
        raise InputError(f"starts must be a whole number >= 1, got {starts!r}")
    if grow_from is not None and (isinstance(grow_from, bool) or not isinstance(grow_from, int)
                                  or not 1 <= grow_from <= depth):
        raise InputError(f"grow_from must be a depth between 1 and depth={depth}, got {grow_from!r}")
    if parameterization not in PARAMETERIZATIONS:
        raise InputError(f"parameterization {parameterization!r} is not one of "
                         f"{', '.join(PARAMETERIZATIONS)}")
    with _torch_threads(threads):
        return _fit(target, depth, seeds, method, interval, points, sparse, data, phase1, phase2,
                    width, shape, seed, count, optimum, device, progress, parameterization, starts,
                    grow_from, stages)


def _fit(target, depth, seeds, method, interval, points, sparse, data, phase1, phase2, width,
         shape, seed, count, optimum, device, progress, parameterization, starts,
         grow_from, stages) -> FitResult:
    from ..nets import composite as K
    from .. import targets as T

    method = _check_method(method)
    depth = C.check_depth(depth)
    phase1 = (phase1 or DEFAULT_PHASE1).validate("phase 1")
    phase2 = (phase2 or DEFAULT_PHASE2).validate("phase 2")
    seed_list = _seed_list(seeds, seed)
    if data is None:
        if target is None:
            raise InputError("give a target expression or data")
        data = (T.sparse(target, interval, sparse, sparse, seed=seed) if sparse
                else T.dense(target, interval, points))
    box = data.box
    constructed = method in ("pretrain", "pretrain-thm31", "skip")
    if constructed and width != 4:
        raise InputError(f"the construction is width 4; width={width} only for kaiming/raai")
    d0 = grow_from or depth
    layout, shape, q_target = K.build_layout(shape, data.x, data.y, box, d0,
                                             thm31=method != "pretrain")
    single = isinstance(layout, K.SumLayout) and len(layout.terms) == 1
    if grow_from is not None and not single:
        raise InputError(f"grow_from needs a single construction (convex or concave), not {shape!r}")
    full = layout if d0 == depth else K.build_layout(shape, data.x, data.y, box, depth,
                                                      thm31=method != "pretrain")[0]
    if constructed:
        widths = full.widths
    else:  # the same net as the construction's, or the plain width-`width` net for one term
        widths = ([len(box)] + [width] * depth + [1]) if single else layout.widths
    dev = torch.device(device)
    x = torch.tensor(data.x, dtype=torch.float64, device=dev)
    y = torch.tensor(data.y, dtype=torch.float64, device=dev)
    points_nk = x.reshape(x.shape[0], -1)
    start = time.perf_counter()
    history: list = []
    total = phase1.steps + phase2.steps
    bar = _progress_bar(total, len(seed_list), enabled=progress)
    tick = (lambda mse: bar.update(1) or bar.set_postfix(mse=f"{float(mse.mean()):.2e}")) if bar else None

    shapes = shapes_of(widths)
    raw_predict = lambda theta: mlp_forward(unflatten_layers(theta, shapes), x)  # noqa: E731

    def train_raw(theta, phase, shapes=shapes, history=history, final=None, then=None):
        """Phase 2 (or the only phase) on standard or GmP coordinates; returns raw Theta.

        ``final`` (a dict) receives what a continuation needs: the optimizer's coordinates and
        state, and (GmP) the offsets; ``then`` = (step, such a dict with rows picked) continues
        that run from ``step`` instead of starting from ``theta``.
        """
        raw_predict = lambda theta: mlp_forward(unflatten_layers(theta, shapes), x)  # noqa: E731
        raw_jacobian = lambda theta: lm_jacobian(unflatten_layers(theta, shapes), x)  # noqa: E731
        start = None if then is None else (then[0], then[1]["theta"], then[1]["state"])
        if parameterization == "sp":
            return optimize(raw_predict, raw_jacobian, theta, y, phase, history, tick, stages,
                            start, final)
        gmp = GmPLayout(shapes)
        coords, offsets = (gmp.from_raw(theta) if then is None
                           else (then[1]["theta"], then[1]["offsets"]))
        to_raw = lambda c: gmp.to_raw(c, offsets)  # noqa: E731
        # jvp_jacobian runs seed s with each of the P tangents in rows s*P .. s*P + P - 1.
        n_coords = sum(o * (i + 1) for (o, i), _ in shapes)
        expanded = offsets.repeat_interleave(n_coords, dim=0)
        d_raw = lambda c: jvp_jacobian(lambda e: gmp.to_raw(e, expanded), c)  # noqa: E731
        jac = lambda c: chain_jacobian(raw_jacobian(to_raw(c)), d_raw(c))  # noqa: E731
        coords = optimize(lambda c: raw_predict(to_raw(c)), jac, coords, y, phase, history, tick,
                          stages, start, final)
        if final is not None:
            final["offsets"] = offsets
        return to_raw(coords)

    def release(theta1):
        return flatten_layers(layout.raw(theta1))

    boundary = 0
    if method in ("pretrain", "pretrain-thm31"):
        derived_predict = lambda th: layout.predict(th, points_nk)  # noqa: E731
        # Start k of seed s draws its peaks from stream s + 100000 k (k = 0 is the seed itself).
        n = len(seed_list)
        start_seeds = [s + 100_000 * k for k in range(starts) for s in seed_list]
        theta1 = K.initial_theta(layout, start_seeds, data.x, data.y, q_target).to(dev)
        # 1D: forward mode at two points per activation run, when the runs (about one per
        # linear piece) are at most half the points; else at every point.
        if isinstance(layout, K.SumLayout) and x.dim() == 1 and 2 * layout.max_pieces <= len(x):
            derived_jacobian = lambda th: derived_jacobian_runs(layout, th, x)  # noqa: E731
        else:
            derived_jacobian = lambda th: jvp_jacobian(derived_predict, th)  # noqa: E731
        per_start: list = []
        theta1 = optimize(derived_predict, derived_jacobian, theta1, y, phase1, per_start, tick,
                          stages)
        boundary = phase1.steps  # one history entry per step (per_start is empty on a resume)
        if d0 == depth and starts == 1:
            history += per_start
            theta = train_raw(release(theta1), phase2)
        else:
            # Every start also runs a share of phase 2 (at depth d0), and each seed keeps the
            # start with the lowest raw training MSE there: phase 1's loss is a poor guide to
            # where phase 2 ends (docs/training.md). At a fixed depth the kept start continues
            # its run (optimizer state and all) to the end of phase 2; growing gives each added
            # layer an equal share of phase 2 and the rest to depth d0.
            each = phase2.steps // (depth - d0 + 2)
            share = (phase2.steps - each * (depth - d0) if d0 < depth
                     else min(phase2.steps, max(1, round(PICK_SHARE * phase2.steps))))
            d0_shapes = shapes if d0 == depth else raw_shapes(d0, width)
            last: dict = {}
            theta = train_raw(release(theta1), Phase(phase2.optimizer, share, phase2.lr),
                              shapes=d0_shapes, history=per_start, final=last)
            d0_predict = lambda th: mlp_forward(unflatten_layers(th, d0_shapes), x)  # noqa: E731
            pick = _best_rows(_per_seed_mse(d0_predict, theta, y), starts, n)
            history += [pick(h) for h in per_start]
            if d0 == depth and share < phase2.steps:
                theta = train_raw(pick(theta), phase2,
                                  then=(share, _pick_rows(last, pick, theta.shape[0])))
            elif d0 == depth:
                theta = pick(theta)
            else:
                at = lambda d: raw_shapes(d, width)  # noqa: E731
                predict_at = lambda th, d: mlp_forward(unflatten_layers(th, at(d)), x)  # noqa: E731
                a_last = pick(layout.split(theta1)[0][0][0][:, d0 - 1])
                theta = grow(
                    pick(theta), d0, depth, a_last, x, y,
                    lambda th, hist, d: train_raw(th, Phase(phase2.optimizer, each, phase2.lr),
                                                  shapes=at(d), history=hist),
                    predict_at, history)
    else:
        raw_phase = Phase(phase2.optimizer, total, phase2.lr)
        if method == "skip":
            theta = release(K.initial_theta(layout, seed_list, data.x, data.y, q_target).to(dev))
        else:
            theta = random_theta(method, seed_list, widths, box).to(dev)
        theta = train_raw(theta, raw_phase)
    if bar:
        bar.close()

    models = [_to_module(t, shapes, widths) for t in theta.cpu()]
    train_mse = _per_seed_mse(raw_predict, theta, y).cpu().numpy()
    if data.test_x is data.x or np.array_equal(data.test_x, data.x):
        mse = train_mse.copy()
    else:
        tx = torch.tensor(data.test_x, dtype=torch.float64, device=dev)
        ty = torch.tensor(data.test_y, dtype=torch.float64, device=dev)
        test_predict = lambda th: mlp_forward(unflatten_layers(th, shapes), tx)  # noqa: E731
        mse = _per_seed_mse(test_predict, theta, ty).cpu().numpy()
    pieces = np.array([_pieces(m, box) if count else -1 for m in models])
    n_pieces = None if data.dims > 1 else 2**depth if single else full.max_pieces
    optimal = eff = None
    if optimum and n_pieces and not sparse and np.array_equal(data.test_x, data.x):
        from ..analysis.limits import efficiency, optimal_pwl

        optimal = float(optimal_pwl(data.x, data.y, n_pieces).mse)
        eff = np.full(mse.shape, np.nan)  # NaN for a diverged seed
        finite = np.isfinite(mse)
        if finite.any():
            eff[finite] = efficiency(optimal, mse[finite])
    hist = torch.stack(history, dim=1).cpu().numpy() if history else np.zeros((len(seed_list), 0))
    return FitResult(
        method=method, target=getattr(target, "text", target if isinstance(target, str) else data.name),
        depth=depth, width=width, seeds=seed_list, interval=data.interval, mse=mse,
        train_mse=train_mse, pieces=pieces, optimal_mse=optimal, efficiency=eff,
        history={"loss": hist, "phase_boundary": boundary}, models=models,
        seconds=time.perf_counter() - start,
        phases={"phase1": vars(phase1), "phase2": vars(phase2), "shape": shape,
                "parameterization": parameterization, "starts": starts, "grow_from": grow_from},
        diverged=[int(s) for s, m in zip(seed_list, mse) if not np.isfinite(m)],
        shape=shape, widths=list(widths), optimal_pieces=n_pieces if optimal else None,
        max_pieces=n_pieces,
    )


@contextlib.contextmanager
def _torch_threads(n):
    if n is None:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def provenance(data, argv=None) -> dict:
    """What a run needs to be reproduced: command, versions, and a hash of the data."""
    import hashlib
    import platform

    from .. import __version__

    digest = hashlib.sha256()
    for a in (data.x, data.y, data.test_x, data.test_y):
        digest.update(np.ascontiguousarray(a, dtype=np.float64).tobytes())
    return {"command": list(argv) if argv else None,
            "versions": {"relu_regions": __version__, "torch": torch.__version__,
                         "numpy": np.__version__, "python": platform.python_version()},
            "data_sha256": digest.hexdigest()}


def _to_module(theta, shapes, widths):
    net = linear_relu_stack(widths)
    with torch.no_grad():
        for (w, b), layer in zip(unflatten_layers(theta, shapes), net[::2]):
            layer.weight.copy_(w)
            layer.bias.copy_(b)
    return net


def _pieces(model, box) -> int:
    """Linear pieces on the interval (1D), or along the box's diagonal (nD)."""
    from ..analysis.regions import count_regions, count_regions_segment

    try:
        if len(box) == 1:
            return count_regions(model, *box[0]).linear_pieces
        return count_regions_segment(model, [b[0] for b in box], [b[1] for b in box]).linear_pieces
    except InputError:  # non-finite weights after divergence
        return -1


def _check_method(method):
    if method not in METHODS:
        raise InputError(f"method {method!r} is not one of {', '.join(METHODS)}")
    return method


def _seed_list(seeds, seed):
    if isinstance(seeds, (list, tuple)):
        if not seeds or not all(isinstance(s, int) and s >= 0 for s in seeds):
            raise InputError(f"seeds must be non-negative whole numbers, got {seeds!r}")
        return list(seeds)
    if isinstance(seeds, bool) or not isinstance(seeds, int) or seeds < 1:
        raise InputError(f"seeds must be a whole number >= 1, got {seeds!r}")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise InputError(f"seed must be a whole number >= 0, got {seed!r}")
    return list(range(seed, seed + seeds))


def _progress_bar(total, n_seeds, enabled):
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=f"training {n_seeds} seeds", unit="step", leave=False)
