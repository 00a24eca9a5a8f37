"""The tour behind ``relu-regions demo`` (arXiv 2311.18022): Yarotsky's x^2 as a construction,
a random construction counted exactly and by sampling, random nets of the same size for
comparison, and a short two-phase fit of x^3 against Kaiming."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from .analysis.regions import count_regions
from .analysis.sampling import sample_regions
from .nets.composite import random_peaks
from .nets.mlp import kaiming_, mlp
from .nets.parametrize import ConstructionNet
from .plots import plot_regions
from .training.config import Phase
from .training.fitting import fit

MAX_DEMO_DEPTH = 20
FIT_TARGET = "x**3"
FIT_MAX_DEPTH = 6  # the short fit runs at min(depth, FIT_MAX_DEPTH): a few seconds
FIT_SEEDS = 5
FIT_PHASES = (Phase("lm", 40), Phase("lm", 120))


def run_demo(depth: int = 6, seed: int = 0, nets: int = 20, out: Path | str = "demo-out",
             train: bool = True, device: str = "cpu") -> dict:
    """The demo's numbers (a JSON-ready dict) and its two plots, written to the folder ``out``.

    ``depth``: hidden layers, 1 to MAX_DEMO_DEPTH; ``nets``: random nets counted per init;
    ``train``: also run :func:`demo_fit` (the result's ``fit``, else None). The caller checks
    the values (the CLI names its options in the messages).
    """
    d, out_dir = depth, Path(out)
    # 1. Yarotsky's x^2: peaks 1/2, scales 4^-(i+1): exact at the 2^d + 1 dyadic knots.
    square = ConstructionNet.build(d, peaks=0.5, thm31=False, c1=1.0)
    x = np.linspace(0, 1, 4097)
    with torch.no_grad():
        err = np.abs(square(torch.tensor(x).unsqueeze(1)).numpy()[:, 0] - x**2).max()
    # 2. A random construction (Theorem 3.1 scales): exactly 2^d pieces, convex.
    peaks = random_peaks([seed], (d + 1,))[0].tolist()
    net = ConstructionNet.build(d, peaks=peaks, thm31=True, c1=1.0)
    exact = count_regions(net, 0, 1)
    sampled = sample_regions(net, 0, 1, samples=10_001)
    plot = plot_regions(net, 0, 1, out_dir / "construction.png", count=exact,
                        title=f"construction, depth {d}: {exact.linear_pieces} linear pieces")
    # 3. Random nets of the same size: He (Kaiming) normal weights with zero biases, and
    # PyTorch's default init (Kaiming-uniform weights, uniform biases).
    g = torch.Generator().manual_seed(seed)
    kaiming = [count_regions(kaiming_(mlp(4, d), g), 0, 1).linear_pieces for _ in range(nets)]
    torch.manual_seed(seed)  # nn.Linear's own init draws from the global generator
    default = [count_regions(mlp(4, d), 0, 1).linear_pieces for _ in range(nets)]
    plot_k = plot_regions(mlp(4, d), 0, 1, out_dir / "default_init.png",
                          title=f"PyTorch default init, width 4, depth {d}")
    return {
        "depth": d, "max_pieces": 2**d,
        "yarotsky_square_max_error": float(err), "yarotsky_bound": 4.0 ** -(d + 1),
        "construction": {**exact.to_dict(), "convexity": exact.convexity().to_dict()},
        "construction_sampled": sampled.to_dict(),
        "kaiming_pieces": kaiming,
        "kaiming_pieces_mean": float(np.mean(kaiming)),
        "default_init_pieces": default,
        "default_init_pieces_mean": float(np.mean(default)),
        "plots": [str(plot), str(plot_k)],
        "fit": demo_fit(d, seed, device) if train else None,
    }


def demo_fit(depth: int, seed: int, device: str = "cpu") -> dict:
    """Fit FIT_TARGET with FIT_SEEDS seeds at depth min(depth, FIT_MAX_DEPTH), two-phase
    (Theorem 3.1 pretraining) vs Kaiming, on the short FIT_PHASES budget: per-seed MSEs and the
    MSE of the best fit with 2^depth pieces."""
    budget = dict(depth=min(depth, FIT_MAX_DEPTH), seeds=FIT_SEEDS, seed=seed,
                  phase1=FIT_PHASES[0], phase2=FIT_PHASES[1], device=device)
    ours = fit(FIT_TARGET, method="pretrain-thm31", **budget)
    base = fit(FIT_TARGET, method="kaiming", optimum=False, **budget)
    return {"two_phase_mse": ours.mse.tolist(), "kaiming_mse": base.mse.tolist(),
            "optimal_mse": ours.optimal_mse}
