"""Nets assembled from several constructions (arXiv:2311.18022, the extensions it reports).

A *term* is one width-4 construction (construction.py) read along a direction p of the input:

    G_j(x) = - sign_j * sum_i s_ji W_i(u_j),     u_j = (p_j . x - lo_j) / (hi_j - lo_j)

A *sum* adds terms and one affine part, written in the data box's unit coordinates z:

    F(x) = c0 + sum_m c_m z_m + sum_j G_j(x),    z_m = (x_m - blo_m) / (bhi_m - blo_m)

- one term on a 1D input: the paper's convex (sign +1) or concave (sign -1) construction;
- two terms on a 1D input, signs +1 and -1: a difference of convex functions ("dc"), the paper's
  route to non-convex targets such as x^3 - x;
- terms along several directions of an nD input ("ridge"): a quadratic form is a sum of squares
  along its eigenvectors, so x^2 + y^2 + xy takes two terms.

A *composition* feeds a sum into one more 1D construction, H(x) = F_out(F_in(x)) ("radial"):
with F_in ~ x^2 + y^2 and F_out ~ q^(3/2) it is z = r^3, 1D sub-networks combined linearly and
composed.

Every layout is a plain ReLU MLP: terms run side by side (block-diagonal hidden layers of width
4J), and a sum's output row times the next construction's input column is one Linear layer.
Layouts work on a flat parameter matrix Theta (seeds, P) like the trainer (train.py).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from numpy.typing import ArrayLike
from scipy.optimize import lsq_linear

from ..errors import InputError
from ..nets import construction
from .shapes import PEAK_RANGE, SHAPES, SHAPES_1D, SHAPES_ND

# A net as its Linear layers [(W (N, o, i), b (N, o))], N seeds at once
RawLayers = list[tuple[torch.Tensor, torch.Tensor]]

# A curvature share below this counts as noise when "auto" tells convex and concave apart.
MINOR_CURVATURE = 0.05
# "auto" in 2D: ridge when a quadratic explains the data to this relative RMS error.
QUADRATIC_FIT = 1e-3
# Log-scales stay above this: the width-4 net carries s_k inside its neurons and divides by it
# (S = s_{k+1} / s_k), so a scale that underflowed to 0 would release as 0/0 or x/0.
LOG_SCALE_FLOOR = -300.0


@dataclass(frozen=True)
class Term:
    """One construction read along ``direction`` (p), on the range ``interval`` of p . x."""

    direction: tuple
    interval: tuple
    sign: float


class SumLayout:
    """Theta = [per term: peak logits, log scales] + [c0, c_1..c_k] (module docstring, F)."""

    def __init__(self, terms, depth: int, thm31: bool, box,
                 margin: float = construction.DEFAULT_MARGIN) -> None:
        self.terms, self.depth, self.thm31, self.margin = list(terms), depth, bool(thm31), margin
        self.box = [tuple(map(float, b)) for b in box]
        self.k = len(self.box)
        P = np.array([t.direction for t in self.terms],
                     dtype=np.float64).reshape(len(self.terms), -1)
        if P.shape[1] != self.k or np.linalg.matrix_rank(P) < self.k:
            raise InputError(f"the term directions must span the {self.k}D input")
        # Least-norm map from the affine part's slopes (per input) to the terms' c1 (release).
        lens = np.array([t.interval[1] - t.interval[0] for t in self.terms])
        self._c1_map = np.linalg.pinv(P.T) * lens[:, None]

    # --- sizes
    @property
    def n_peaks(self) -> int:
        return self.depth + 1 if self.thm31 else self.depth

    @property
    def n_scales(self) -> int:
        return 1 if self.thm31 else self.depth

    @property
    def n_params(self) -> int:
        return len(self.terms) * (self.n_peaks + self.n_scales) + 1 + self.k

    @property
    def widths(self) -> list:
        return [self.k] + [4 * len(self.terms)] * self.depth + [1]

    @property
    def max_pieces(self) -> int:
        """Linear pieces along a line: 2^d per term, breakpoints of different terms add up."""
        return len(self.terms) * (2**self.depth - 1) + 1

    # --- Theta <-> derived parameters
    def split(self, theta: torch.Tensor
              ) -> tuple[list[tuple[torch.Tensor, torch.Tensor]], torch.Tensor, torch.Tensor]:
        """Theta (N, P) -> ([(peaks, scales) per term], c0 (N,), c (N, k))."""
        per = self.n_peaks + self.n_scales
        parts = []
        for j in range(len(self.terms)):
            block = theta[..., j * per:(j + 1) * per]
            peaks = construction.peaks_from_logits(block[..., :self.n_peaks], self.margin)
            log_s = block[..., self.n_peaks:].clamp(min=LOG_SCALE_FLOOR)
            scales = construction.scales_from_log(log_s, peaks, self.depth, self.thm31)
            parts.append((peaks, scales))
        rest = theta[..., len(self.terms) * per:]
        return parts, rest[..., 0], rest[..., 1:]

    def join(self, peaks: torch.Tensor, scales_or_s0: torch.Tensor, c0: torch.Tensor,
             c: torch.Tensor) -> torch.Tensor:
        """Inverse of ``split`` (peaks (N, J, n_peaks), scales (N, J, n_scales), c0, c (N, k))."""
        logits = construction.logits_from_peaks(peaks, self.margin)
        blocks = torch.cat([logits, scales_or_s0.log()], dim=-1).flatten(1)
        return torch.cat([blocks, c0.reshape(-1, 1), c.reshape(-1, self.k)], dim=1)

    # --- forward
    def _z(self, x):
        lo = x.new_tensor([b[0] for b in self.box])
        hi = x.new_tensor([b[1] for b in self.box])
        return (x - lo) / (hi - lo)

    @staticmethod
    def _along(term: Term, x):
        """u = (p . x - lo) / (hi - lo), the term's input on points x (n, k) or (N, n, k)."""
        return ((x * x.new_tensor(term.direction)).sum(-1) - term.interval[0]) / (
            term.interval[1] - term.interval[0])

    def sawtooths(self, term: Term, peaks: torch.Tensor,
                  x: torch.Tensor) -> Iterator[torch.Tensor]:
        """W_0..W_{d-1} of one term on points x (n, k) or (N, n, k): W_i = T_{a_i}(W_{i-1})."""
        w = self._along(term, x)
        for i in range(self.depth):
            w = construction.triangle(w, peaks[..., i:i + 1])
            yield w

    def pattern(self, theta: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """The derived form's activation pattern on points x (n, k): for every term and level i,
        the triangle's two ReLUs, W_{i-1} > 0 and W_{i-1} > a_i (W_{-1} = u); (N, 2 J d, n).

        Where it is constant, ``predict`` is affine in x, and so is its gradient in Theta
        (train.derived_jacobian_runs).
        """
        parts, _, _ = self.split(theta)
        masks = []
        for term, (peaks, _) in zip(self.terms, parts, strict=True):
            inputs = [self._along(term, x).expand(theta.shape[0], -1)]
            inputs += itertools.islice(self.sawtooths(term, peaks, x), self.depth - 1)
            for i, w in enumerate(inputs):
                masks += [w > 0, w > peaks[..., i:i + 1]]
        return torch.stack(masks, dim=1)

    def predict(self, theta: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Derived-form F on points x (n, k), or per seed (N, n, k); returns (N, n)."""
        parts, c0, c = self.split(theta)
        z = self._z(x)
        out = c0.unsqueeze(-1) + (z * c.unsqueeze(-2)).sum(-1)
        for term, (peaks, scales) in zip(self.terms, parts, strict=True):
            for i, w in enumerate(self.sawtooths(term, peaks, x)):
                out = out - term.sign * scales[..., i:i + 1] * w
        return out

    def raw(self, theta: torch.Tensor) -> RawLayers:
        """The MLP's layers [(W (N, o, i), b (N, o))], computing ``predict`` exactly.

        Term j is ``construction.raw_weights`` on t = p_j . x with its own c1_j; the c1_j are the
        least-norm solution of sum_j c1_j u_j = sum_m c_m z_m + const, and term 0 carries c0 and
        that constant.
        """
        parts, c0, c = self.split(theta)
        blen = theta.new_tensor([b[1] - b[0] for b in self.box])
        blo = theta.new_tensor([b[0] for b in self.box])
        c1 = (c / blen) @ theta.new_tensor(self._c1_map).T  # (N, J)
        lo = theta.new_tensor([t.interval[0] for t in self.terms])
        lens = theta.new_tensor([t.interval[1] - t.interval[0] for t in self.terms])
        bias = c0 - (c * blo / blen).sum(-1) + (c1 * lo / lens).sum(-1)
        nets = []
        for j, (term, (peaks, scales)) in enumerate(zip(self.terms, parts, strict=True)):
            t_lo, t_hi = (theta.new_tensor(v) for v in term.interval)
            c0_j = bias if j == 0 else torch.zeros_like(bias)
            nets.append(construction.raw_weights(peaks, scales, c0_j, c1[:, j], t_lo, t_hi,
                                                 term.sign))
        return side_by_side(nets, [theta.new_tensor(t.direction) for t in self.terms])


def side_by_side(nets: Sequence[RawLayers], directions: Sequence[torch.Tensor]) -> RawLayers:
    """Equal-depth nets on projections p_j . x, summed: one MLP with block-diagonal hidden
    layers."""
    first = [net[0] for net in nets]
    layers = [(torch.cat([w * p.reshape(1, 1, -1)
                          for (w, _), p in zip(first, directions, strict=True)], dim=1),
               torch.cat([b for _, b in first], dim=1))]
    for k in range(1, len(nets[0]) - 1):
        layers.append((_block_diag([net[k][0] for net in nets]),
                       torch.cat([net[k][1] for net in nets], dim=1)))
    layers.append((torch.cat([net[-1][0] for net in nets], dim=2), sum(net[-1][1] for net in nets)))
    return layers


def _block_diag(blocks):
    """Batched block-diagonal matrix of (N, o_j, i_j) blocks."""
    n = blocks[0].shape[0]
    rows, cols = sum(b.shape[1] for b in blocks), sum(b.shape[2] for b in blocks)
    out = blocks[0].new_zeros(n, rows, cols)
    r = c = 0
    for b in blocks:
        out[:, r:r + b.shape[1], c:c + b.shape[2]] = b
        r, c = r + b.shape[1], c + b.shape[2]
    return out


class ComposedLayout:
    """H(x) = F_out(F_in(x)): a sum (inner) feeding one 1D construction (outer) on q = F_in(x)."""

    def __init__(self, inner: SumLayout, outer: SumLayout):
        if outer.k != 1 or len(outer.terms) != 1:
            raise InputError("the outer construction of a composition is one 1D term")
        self.inner, self.outer = inner, outer
        self.depth, self.thm31 = inner.depth + outer.depth, inner.thm31

    @property
    def n_params(self) -> int:
        return self.inner.n_params + self.outer.n_params

    @property
    def widths(self) -> list:
        return self.inner.widths[:-1] + self.outer.widths[1:]

    @property
    def max_pieces(self) -> None:
        return None

    def _parts(self, theta):
        return theta[..., :self.inner.n_params], theta[..., self.inner.n_params:]

    def predict(self, theta: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        t_in, t_out = self._parts(theta)
        q = self.inner.predict(t_in, x)
        return self.outer.predict(t_out, q.unsqueeze(-1))

    def raw(self, theta: torch.Tensor) -> RawLayers:
        """Inner layers, then the outer's: the inner output row and the outer input column meet
        in one Linear layer (W = W_out0 W_in_last, b = W_out0 b_in_last + b_out0)."""
        t_in, t_out = self._parts(theta)
        inner, outer = self.inner.raw(t_in), self.outer.raw(t_out)
        (w_last, b_last), (w_first, b_first) = inner[-1], outer[0]
        merged = (torch.bmm(w_first, w_last),
                  torch.bmm(w_first, b_last.unsqueeze(-1)).squeeze(-1) + b_first)
        return inner[:-1] + [merged] + outer[1:]


# ---------------------------------------------------------------------------------------------
# Choosing a layout for data

def detect_shape(x: ArrayLike, y: ArrayLike) -> str:
    """"convex", "concave" or "dc" for 1D samples, from the sign of the sampled curvature.

    The curvature's positive and negative mass (the total rise and fall of the slope) decide: a
    share below ``MINOR_CURVATURE`` is treated as noise, otherwise the target needs both signs
    (dc). Few points (< 50): the slope changes between consecutive samples (exact for the data:
    the samples are convex iff none is negative). More points: the slope changes of a
    least-squares Chebyshev fit of degree 12 on a fine grid, which smooths out noise.
    """
    x, y = np.asarray(x, dtype=np.float64).ravel(), np.asarray(y, dtype=np.float64).ravel()
    # Repeated x (a radial target's radii on a grid) would divide by zero: one mean y per x.
    x, inverse = np.unique(x, return_inverse=True)
    y = np.bincount(inverse, weights=y) / np.bincount(inverse)
    if len(x) < 50:
        change = np.diff(np.diff(y) / np.diff(x))
    else:
        grid = np.linspace(x[0], x[-1], 1001)
        change = np.polynomial.Chebyshev.fit(x, y, 12).deriv(2)(grid)
    pos, neg = np.clip(change, 0, None).sum(), np.clip(-change, 0, None).sum()
    if pos + neg == 0 or min(pos, neg) <= MINOR_CURVATURE * (pos + neg):
        return "convex" if pos >= neg else "concave"
    return "dc"


@dataclass
class Quadratic:
    """Least-squares y ~ beta0 + b . x + x^T A x, with A's eigen-decomposition."""

    b: np.ndarray
    A: np.ndarray
    eigenvalues: np.ndarray
    eigenvectors: np.ndarray  # columns
    relative_error: float  # RMS residual / std(y)

    def form(self, x: np.ndarray) -> np.ndarray:
        """b . x + x^T A x (the fit without its constant)."""
        return x @ self.b + np.einsum("ni,ij,nj->n", x, self.A, x)


def fit_quadratic(x: np.ndarray, y: np.ndarray) -> Quadratic:
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    k = x.shape[1]
    pairs = [(i, j) for i in range(k) for j in range(i, k)]
    design = np.column_stack([np.ones(len(x)), x] + [x[:, i] * x[:, j] for i, j in pairs])
    coef, *_ = np.linalg.lstsq(design, y, rcond=None)
    A = np.zeros((k, k))
    for (i, j), v in zip(pairs, coef[1 + k:], strict=True):
        A[i, j] = A[j, i] = v if i == j else v / 2
    resid = design @ coef - y
    spread = float(np.std(y)) or 1.0
    lam, vec = np.linalg.eigh(A)
    return Quadratic(coef[1:1 + k], A, lam, vec, float(np.sqrt(np.mean(resid**2)) / spread))


def _projection_range(p, box):
    corners = np.array(np.meshgrid(*[list(b) for b in box])).reshape(len(box), -1).T
    t = corners @ p
    return float(t.min()), float(t.max())


def build_layout(shape: str, x: np.ndarray, y: np.ndarray, box: Sequence[Sequence[float]],
                 depth: int, thm31: bool
                 ) -> tuple[SumLayout | ComposedLayout, str, np.ndarray | None]:
    """The layout for ``shape`` on data (x (n,) or (n, k), y); returns (layout, shape, q_target).

    1D: convex / concave (one term), dc (two terms, signs + and -), auto by ``detect_shape``.
    nD: terms along the eigenvectors of the least-squares quadratic (sign of each eigenvalue);
    ridge sums them, radial composes their sum with one more construction (depth each); auto is
    ridge when the quadratic fits to ``QUADRATIC_FIT``, else radial. ``q_target`` is the
    quadratic form the inner sum of a composition starts from (None otherwise).
    """
    if shape not in SHAPES:
        raise InputError(f"shape {shape!r} is not one of {', '.join(SHAPES)}")
    x = np.asarray(x, dtype=np.float64)
    box = [tuple(map(float, b)) for b in box]
    if x.ndim == 1:
        if shape in SHAPES_ND:
            raise InputError(f"shape {shape!r} is for 2D inputs; 1D takes {', '.join(SHAPES_1D)}")
        shape = detect_shape(x, y) if shape == "auto" else shape
        signs = {"convex": (1.0,), "concave": (-1.0,), "dc": (1.0, -1.0)}[shape]
        return SumLayout([Term((1.0,), box[0], s) for s in signs], depth, thm31, box), shape, None
    if shape in SHAPES_1D:
        raise InputError(f"shape {shape!r} is for 1D inputs; {x.shape[1]}D takes "
                         f"{', '.join(SHAPES_ND)}")
    quad = fit_quadratic(x, y)
    if shape == "auto":
        shape = "ridge" if quad.relative_error <= QUADRATIC_FIT else "radial"
    terms = []
    for lam, p in zip(quad.eigenvalues, quad.eigenvectors.T, strict=True):
        terms.append(Term(tuple(p), _projection_range(p, box), 1.0 if lam >= 0 else -1.0))
    inner = SumLayout(terms, depth, thm31, box)
    if shape == "ridge":
        return inner, shape, None
    q = quad.form(x)
    pad = 0.02 * (q.max() - q.min() or 1.0)
    q_box = (float(q.min() - pad), float(q.max() + pad))
    outer_sign = 1.0 if detect_shape(q, y) != "concave" else -1.0
    outer = SumLayout([Term((1.0,), q_box, outer_sign)], depth, thm31, [q_box])
    return ComposedLayout(inner, outer), shape, q


# ---------------------------------------------------------------------------------------------
# Initialization: random peaks, the rest by linear least squares

def random_peaks(seeds: Sequence[int], shape: tuple[int, ...]) -> torch.Tensor:
    """Peaks uniform on PEAK_RANGE of ``shape`` per seed, one numpy stream per seed."""
    n = math.prod(shape)
    return torch.tensor(np.stack([np.random.default_rng(s).uniform(*PEAK_RANGE, n).reshape(shape)
                                  for s in seeds]), dtype=torch.float64)


def linear_fit(layout: SumLayout, peaks: torch.Tensor, x: ArrayLike | torch.Tensor,
               y: ArrayLike) -> torch.Tensor:
    """Given peaks (N, J, n_peaks), the least-squares scales and affine part -> Theta (N, P).

    F is linear in (c0, c, scales) for fixed peaks (variable projection); scales stay >= 1e-12
    (bounded least squares). Theorem 3.1 ties each term's scales to its s_0, one column per term.
    ``x``: (n, k) shared by all seeds, or (N, n, k) per seed.
    """
    x = torch.as_tensor(x, dtype=torch.float64).cpu()
    y = np.asarray(y, dtype=np.float64)
    one = torch.tensor(1.0, dtype=torch.float64)
    rows = []
    for s, a in enumerate(peaks.cpu()):
        xs = x[s] if x.dim() == 3 else x
        cols = [np.ones((len(y), 1)), layout._z(xs).numpy()]
        for j, term in enumerate(layout.terms):
            W = torch.stack(list(layout.sawtooths(term, a[j], xs)), dim=1).numpy()
            if layout.thm31:
                W = (W @ construction.thm31_scales(one, a[j], layout.depth).numpy())[:, None]
            cols.append(-term.sign * W)
        A = np.column_stack(cols)
        n_free = 1 + layout.k
        lower = np.r_[np.full(n_free, -np.inf), np.full(A.shape[1] - n_free, 1e-12)]
        rows.append(lsq_linear(A, y, bounds=(lower, np.inf), method="bvls").x)
    sol = torch.tensor(np.stack(rows), dtype=torch.float64)
    n = sol.shape[0]
    scales = sol[:, 1 + layout.k:].reshape(n, len(layout.terms), layout.n_scales)
    return layout.join(peaks.cpu(), scales, sol[:, 0], sol[:, 1:1 + layout.k])


def initial_theta(layout: SumLayout | ComposedLayout, seeds: Sequence[int], x: ArrayLike,
                  y: ArrayLike, q_target: np.ndarray | None = None) -> torch.Tensor:
    """Phase-1 start per seed: random peaks (stream = seed), everything else by least squares.

    A composition starts its inner sum on ``q_target`` (the quadratic form) and then fits the
    outer construction to y as a function of each seed's inner output.
    """
    x = torch.as_tensor(np.asarray(x, dtype=np.float64))
    x = x.unsqueeze(-1) if x.dim() == 1 else x
    if isinstance(layout, SumLayout):
        return linear_fit(layout, random_peaks(seeds, (len(layout.terms), layout.n_peaks)), x, y)
    inner, outer = layout.inner, layout.outer
    n_in, n_out = len(inner.terms) * inner.n_peaks, outer.n_peaks
    peaks = random_peaks(seeds, (n_in + n_out,))
    theta_in = linear_fit(inner, peaks[:, :n_in].reshape(-1, len(inner.terms), inner.n_peaks),
                          x, q_target)
    q = inner.predict(theta_in, x).unsqueeze(-1)
    theta_out = linear_fit(outer, peaks[:, n_in:].reshape(-1, 1, n_out), q, y)
    return torch.cat([theta_in, theta_out], dim=1)
