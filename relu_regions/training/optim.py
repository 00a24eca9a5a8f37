"""The optimizers over Theta (N, P), every seed at once, in the manner of ``torch.optim``.

An optimizer holds Theta and a *model* (anything with ``predict(theta) -> (N, n)`` and
``jacobian(theta)``); ``step()`` makes one full-batch update and returns each seed's MSE, and
``state_dict()`` / ``load_state_dict()`` hold what a resumed run needs. The loss is the *sum*
over seeds of each seed's MSE, so each seed's gradient is its own, and Adam (elementwise) and
Levenberg-Marquardt (per-seed damping, per-seed Gram and solves) update every seed exactly as if
it were trained alone.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

MU_MIN, MU_MAX = 1e-15, 1e15


def per_seed_mse(predict: Callable[[torch.Tensor], torch.Tensor], theta: torch.Tensor,
                 y: torch.Tensor) -> torch.Tensor:
    """Each row's MSE, (N,), without gradients."""
    with torch.no_grad():
        r = predict(theta) - y
        return (r * r).mean(dim=1)


def row_wise(fn: Callable) -> Callable:
    """Mark a model function (``predict`` or ``jacobian``) whose row s depends only on row s of
    Theta, bit for bit: :class:`LM` then calls it on the seeds that need it, not on all."""
    fn.row_wise = True
    return fn


def _is_row_wise(fn) -> bool:
    return getattr(fn, "row_wise", False)


class Functions:
    """A model from two functions: ``predict(theta)`` and ``jacobian(theta)``."""

    def __init__(self, predict, jacobian=None):
        self.predict, self.jacobian = predict, jacobian


class Optimizer:
    """One full-batch update per :meth:`step` on every seed's row of Theta.

    ``theta`` is the current Theta (N, P); :meth:`state_dict` holds the optimizer's own state
    (not Theta), and :meth:`load_state_dict` restores it on a fresh optimizer built at the
    stored Theta (or pass it as ``state``).
    """

    def __init__(self, model, theta: torch.Tensor, y: torch.Tensor, lr: float):
        self.model, self.y, self.lr = model, y, lr
        self.theta = theta

    @property
    def result(self) -> torch.Tensor:
        """Theta now, detached."""
        return self.theta.detach()

    def step(self) -> torch.Tensor:
        raise NotImplementedError

    def state_dict(self) -> dict:
        raise NotImplementedError

    def load_state_dict(self, state: dict) -> None:
        raise NotImplementedError


class Adam(Optimizer):
    """Full-batch Adam on every seed at once; a diverged seed is frozen, not the others."""

    def __init__(self, model, theta, y, lr, state=None):
        super().__init__(model, theta.clone().requires_grad_(True), y, lr)
        self._adam = torch.optim.Adam([self.theta], lr=lr)
        if state is not None:
            self.load_state_dict(state)

    def step(self) -> torch.Tensor:
        theta = self.theta
        self._adam.zero_grad(set_to_none=True)
        r = self.model.predict(theta) - self.y
        mse = (r * r).mean(dim=1)
        bad = ~torch.isfinite(mse)
        mse.masked_fill(bad, 0.0).sum().backward()
        if bad.any():  # a diverged seed must not poison the others: freeze it
            theta.grad[bad] = 0.0
        self._adam.step()
        return mse.detach()

    def state_dict(self) -> dict:
        return self._adam.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self._adam.load_state_dict(state)



class LM(Optimizer):
    """Levenberg-Marquardt (Marquardt scaling) on every seed at once, damping per seed.

    Each step solves (J'J + mu (diag(J'J) + tiny I)) delta = -J'r per seed and keeps the step
    only if it lowers that seed's MSE (mu /= 3), else raises mu (x 4, at most 1e15).

    Work per seed is only what the seed needs: J'J and J'r are formed for the seeds whose
    parameters moved in the last step (a rejected step leaves them as they were); a seed rejected
    at the largest damping is at a fixed point (the same state gives the same rejected step) and
    stops. With a :func:`row_wise` model, J is computed for those seeds only and the trial step
    predicted for the seeds still moving (docs/training.md, "Cost"). ``model.jacobian(theta)``
    returns a plain (N, n, P) tensor or the compact pair (rows per activation run, Q') of
    :func:`~relu_regions.training.jacobians.mlp_jacobian_runs`.
    Every per-seed product and solve runs on that seed's own rows, so a seed's result is the same,
    bit for bit, whichever seeds share the batch.

    State: {"mu", "mse", "frozen"} ("frozen" may be missing in an old state: such a seed then
    repeats its rejected step once and stops again).
    """

    def __init__(self, model, theta, y, lr, state=None):
        super().__init__(model, theta, y, lr)
        n = theta.shape[0]
        self.mu = torch.full((n,), lr, dtype=theta.dtype, device=theta.device)
        self.frozen = torch.zeros(n, dtype=torch.bool, device=theta.device)
        self.gram = None
        if state is not None:
            self.load_state_dict(state)
            return
        with torch.no_grad():
            self.r = model.predict(theta) - y  # residual at theta (None: not known yet)
        self.mse = (self.r * self.r).mean(dim=1)
        self.stale = ~self.frozen  # seeds whose J'J / J'r (in ``gram``) are not those of theta

    def state_dict(self) -> dict:
        return {"mu": self.mu, "mse": self.mse, "frozen": self.frozen}

    def load_state_dict(self, state: dict) -> None:
        self.mu, self.mse = state["mu"], state["mse"]
        self.frozen = state.get("frozen", torch.zeros_like(self.frozen))
        self.r, self.gram, self.stale = None, None, ~self.frozen

    @property
    def result(self) -> torch.Tensor:
        return self.theta

    def step(self) -> torch.Tensor:
        with torch.no_grad():
            if not bool(self.frozen.all()):
                if self.r is None:
                    self.r = self.model.predict(self.theta) - self.y
                if bool(self.stale.any()):
                    self._refresh_gram()
                self._try_step()
        return self.mse.clone()

    def _refresh_gram(self):
        """[J r]'[J r] of the stale seeds, from their own rows (the Jacobian of only those
        seeds when the model's ``jacobian`` is :func:`row_wise`)."""
        n_seeds = self.theta.shape[0]
        todo = self.stale.nonzero().squeeze(1)
        subset = _is_row_wise(self.model.jacobian) and todo.shape[0] < n_seeds
        theta, r = (self.theta[todo], self.r[todo]) if subset else (self.theta, self.r)
        J = self.model.jacobian(theta)
        J, project = J if isinstance(J, tuple) else (J, None)
        rhs = r if project is None else project(r)
        rows = torch.cat([J.transpose(1, 2), rhs.unsqueeze(1)], dim=1)  # (N or todo, P+1, m)
        counts = [rows.shape[2]] * rows.shape[0] if project is None else project.rows.tolist()
        if self.gram is None:
            self.gram = rows.new_zeros(n_seeds, rows.shape[1], rows.shape[1])
        mine = torch.arange(todo.shape[0], device=todo.device) if subset else todo
        self.gram[todo] = torch.stack(_gram(rows, counts, mine))
        self.stale = torch.zeros_like(self.stale)

    def _try_step(self):
        """One damped step per active seed, kept where it lowers that seed's MSE."""
        theta, frozen, mu = self.theta, self.frozen, self.mu
        active = (~frozen).nonzero().squeeze(1)
        every = active.shape[0] == theta.shape[0]
        G = self.gram if every else self.gram[active]
        step_a = _damped_steps(G, mu if every else mu[active])
        if every:
            trial = theta + step_a
        else:
            delta = torch.zeros_like(theta)
            delta[active] = step_a
            trial = theta + delta
        if every or not _is_row_wise(self.model.predict):
            r_trial = self.model.predict(trial) - self.y
            trial_mse = (r_trial * r_trial).mean(dim=1)
        else:  # stopped seeds need no prediction
            r_active = self.model.predict(trial[active]) - self.y
            r_trial, trial_mse = self.r.clone(), self.mse.clone()
            r_trial[active] = r_active
            trial_mse[active] = (r_active * r_active).mean(dim=1)
        better = torch.isfinite(trial_mse) & (trial_mse < self.mse) & ~frozen
        self.theta = torch.where(better[:, None], trial, theta)
        self.r = torch.where(better[:, None], r_trial, self.r)
        self.mse = torch.where(better, trial_mse, self.mse)
        self.frozen = frozen | (~better & (mu == MU_MAX))
        self.mu = torch.where(better, mu / 3, mu * 4).clamp(MU_MIN, MU_MAX)
        self.stale = better


OPTIMIZERS = {"lm": LM, "adam": Adam}


def _gram(rows: torch.Tensor, counts, seeds) -> list:
    """[A_s A_s' for s in seeds], A_s = the seed's own leading ``counts[s]`` columns of (N, P+1, m).

    One 2D product per seed on a fresh copy of its own rows, so a seed's Gram matrix does not
    depend on which seeds share the batch or how far the others are padded: MKL's product rounds
    by the operands' memory alignment, which a view into the batch inherits from the seed's
    position and the padding.
    """
    out = []
    for s in seeds.tolist():
        a = rows[s, :, :counts[s]].clone(memory_format=torch.contiguous_format)
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
    # One seed at a time (each factor in a fresh buffer): batched, MKL rounds every matrix by
    # its memory alignment, which depends on its position in the batch (an odd P^2 puts every
    # other matrix off 16 bytes), and a seed's step would depend on its neighbours.
    steps = []
    for i in range(A.shape[0]):
        L, info = torch.linalg.cholesky_ex(A[i])
        steps.append(torch.cholesky_solve(g[i], L) if int(info) == 0
                     else torch.linalg.solve_ex(A[i], g[i])[0])
    return torch.stack(steps).squeeze(-1)


def run(optimizer: Optimizer, steps: int, history: list,
        progress: Callable[[torch.Tensor], object] | None = None, first: int = 0,
        on_step: Callable[[int, torch.Tensor, dict], object] | None = None) -> torch.Tensor:
    """Steps ``first`` .. ``steps - 1`` of ``optimizer``; each step's MSE goes to ``history``,
    ``progress(mse)`` and ``on_step(step, theta, state)`` (checkpoints). Returns Theta."""
    for step in range(first, steps):
        mse = optimizer.step()
        history.append(mse)
        if progress:
            progress(mse)
        if on_step:
            on_step(step + 1, optimizer.result, optimizer.state_dict())
    return optimizer.result


def _runner(kind):
    """The function form of an optimizer: ``run_lm(predict, jacobian, theta, y, phase, history,
    progress, start, on_step)``; ``start`` = (step, theta, state) resumes."""
    def run_kind(predict, jacobian, theta, y, phase, history: list, progress=None, start=None,
                 on_step=None):
        first, state = 0, None
        if start is not None:
            first, theta, state = start
        opt = OPTIMIZERS[kind](Functions(predict, jacobian), theta, y, phase.lr, state)
        return run(opt, phase.steps, history, progress, first, on_step)
    return run_kind


run_lm = _runner("lm")
run_adam = _runner("adam")
