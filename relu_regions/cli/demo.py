"""``relu-regions demo``: checks the options, runs :func:`relu_regions.demo.run_demo`, prints."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..analysis import regions
from ..demo import FIT_MAX_DEPTH, FIT_PHASES, FIT_SEEDS, MAX_DEMO_DEPTH, run_demo
from ..errors import InputError
from ..validation import check_device, check_int
from .common import say_if_compiling


def run(args: argparse.Namespace) -> dict:
    check_int(args.seed, "--seed", low=0)
    out_dir = Path(args.out)
    if out_dir.exists() and not out_dir.is_dir():
        raise InputError(f"--out {out_dir} exists and is not a folder")
    if not 1 <= args.depth <= MAX_DEMO_DEPTH:
        raise InputError(f"--depth must be between 1 and {MAX_DEMO_DEPTH} for the demo, got "
                         f"{args.depth}")
    if args.nets < 1:
        raise InputError(f"--nets must be >= 1, got {args.nets}")
    check_device(args.device)
    say_if_compiling(regions)
    out = run_demo(args.depth, seed=args.seed, nets=args.nets, out=out_dir,
                   train=not args.no_train, device=args.device)
    if out["fit"] is not None:
        out["fit"]["summary"] = _fit_summary(out["fit"], min(args.depth, FIT_MAX_DEPTH))
    return out


def _fit_summary(fit: dict, depth: int) -> str:
    ours, base = fit["two_phase_mse"], fit["kaiming_mse"]
    steps = sum(phase.steps for phase in FIT_PHASES)
    return (f"4. Fitting x^3 on 500 points, depth {depth}, {FIT_SEEDS} seeds, {steps} steps each: "
            f"two-phase (Theorem 3.1) mean MSE {sum(ours) / len(ours):.2e}, Kaiming "
            f"{sum(base) / len(base):.2e};\n   the best {2 ** depth}-piece fit has MSE "
            f"{fit['optimal_mse']:.2e}. Try: relu-regions train --target 'x**3' --out run1")


def show(out: dict) -> str:
    d, c = out["depth"], out["construction"]
    lines = [
        f"relu-regions demo: width-4 ReLU nets with {d} hidden layers (at most 2^{d} = "
        f"{out['max_pieces']} pieces)",
        "",
        f"1. Yarotsky's construction (peaks 1/2, scales 4^-(i+1)) approximates x^2 with max error "
        f"{out['yarotsky_square_max_error']:.2e} (theory: 4^-(d+1) = {out['yarotsky_bound']:.2e}).",
        f"2. A random construction (Theorem 3.1 scales), counted exactly: "
        f"{c['linear_pieces']} linear pieces, {c['activation_regions']} activation regions, "
        f"convex: {c['convexity']['is_convex']}, narrowest piece {c['min_piece_width']:.2e}.",
        f"   A 10,001-point sampling estimate sees {out['construction_sampled']['linear_pieces']} "
        f"pieces.",
        f"3. Random nets of the same size ({len(out['kaiming_pieces'])} each), pieces on [0, 1]:",
        f"   Kaiming (He normal, zero biases): mean {out['kaiming_pieces_mean']:.1f}, max "
        f"{max(out['kaiming_pieces'])} (zero biases make the net positively homogeneous: "
        f"linear on x >= 0)",
        f"   PyTorch default init:             mean {out['default_init_pieces_mean']:.1f}, max "
        f"{max(out['default_init_pieces'])}",
    ]
    if out.get("fit"):
        lines.append(out["fit"]["summary"])
    lines.append("")
    lines.append("plots: " + ", ".join(out["plots"]))
    return "\n".join(lines)

