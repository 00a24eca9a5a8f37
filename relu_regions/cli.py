"""The ``relu-regions`` command: parses arguments, calls the Python API, prints. No logic here."""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np

from .errors import InputError

MAX_COUNT_DEPTH = 26  # 2^26 pieces: ~6 GB of working arrays, the most this machine class holds


class Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (and exit code 2)."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message}\n")


def float_list(text: str) -> list[float]:
    """'0.3,0.5,0.7' -> [0.3, 0.5, 0.7]; anything else is a usage error."""
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None
    if not all(math.isfinite(v) for v in values):
        raise argparse.ArgumentTypeError(f"expected finite numbers, got {text!r}")
    return values


def interval(text: str) -> tuple[float, float]:
    values = float_list(text)
    if len(values) != 2 or not values[0] < values[1]:
        raise argparse.ArgumentTypeError(f"expected LO,HI with LO < HI, got {text!r}")
    return values[0], values[1]


def random_peaks(n: int, seed: int) -> list[float]:
    """The CLI's default peaks: the trainer's draw (uniform on [0.25, 0.75]) for one seed."""
    from .nets.composite import random_peaks

    return random_peaks([seed], (n,))[0].tolist()


# ---------------------------------------------------------------------------------------------
# count

def cmd_count(args) -> dict:
    import torch

    from . import checkpoint
    from .nets.parametrize import ConstructionNet
    from .analysis.regions import count_regions, count_regions_segment, sample_regions

    info = {}
    if args.checkpoint:
        if args.depth is not None or args.a is not None:
            raise InputError("--checkpoint counts a saved model: drop --depth/--a")
        model, config = checkpoint.load(args.checkpoint)
        n_in = next(m for m in model.modules() if isinstance(m, torch.nn.Linear)).in_features
        if n_in > 1 and args.segment_from is None:
            raise InputError(f"the model takes {n_in} inputs; count it along a segment with "
                             f"--from X0 --to X1 (e.g. --from={','.join(['-1'] * n_in)} "
                             f"--to {','.join(['1'] * n_in)})")
        saved = config.get("model", {}).get("interval") or config.get("interval")
        saved = saved if n_in == 1 else None  # a 2D run saves one interval per input
        lo, hi = args.interval or (tuple(saved) if saved else (0.0, 1.0))
        info["checkpoint"] = str(args.checkpoint)
    else:
        if args.depth is None:
            raise InputError("give --depth D (count the construction) or --checkpoint PATH")
        if not 1 <= args.depth <= MAX_COUNT_DEPTH:
            raise InputError(f"--depth must be between 1 and {MAX_COUNT_DEPTH}, got {args.depth}")
        n_peaks = args.depth + 1 if args.thm31 else args.depth
        peaks = args.a if args.a is not None else random_peaks(n_peaks, args.seed)
        if len(peaks) not in (1, args.depth, n_peaks):
            raise InputError(f"--a needs 1 or {args.depth} values (one per hidden layer), "
                             f"got {len(peaks)}")
        lo, hi = args.interval or (0.0, 1.0)
        model = ConstructionNet.build(args.depth, peaks=peaks, thm31=args.thm31,
                                      interval=(lo, hi), concave=args.concave)
        info.update(depth=args.depth, thm31=args.thm31,
                    peaks=[round(v, 6) for v in model.construction.peaks().tolist()])
    start = time.perf_counter()
    if args.segment_from is not None or args.segment_to is not None:
        if args.segment_from is None or args.segment_to is None:
            raise InputError("a segment needs both --from and --to")
        if args.sample or args.plot:
            raise InputError("--sample and --plot work on an interval of a 1D input, not on a "
                             "segment")
        result = count_regions_segment(model, args.segment_from, args.segment_to)
    else:
        result = count_regions(model, lo, hi)
    seconds = time.perf_counter() - start
    out = {**info, **result.to_dict(), "convexity": result.convexity().to_dict(),
           "seconds": round(seconds, 4)}
    if args.sample:
        out["sampled"] = sample_regions(model, lo, hi, samples=args.sample).to_dict()
    if args.plot:
        from .plots import plot_regions

        out["plot"] = str(plot_regions(model, lo, hi, args.plot, count=result))
    return out


def show_count(out: dict) -> str:
    lines = []
    if "depth" in out:
        lines.append(f"construction: depth {out['depth']}, "
                     f"{'Theorem 3.1 scales' if out['thm31'] else 'free scales'}")
    if "checkpoint" in out:
        lines.append(f"checkpoint: {out['checkpoint']}")
    lines += [
        f"interval          [{out['lo']:g}, {out['hi']:g}]",
        f"linear pieces     {out['linear_pieces']}",
        f"activation regions {out['activation_regions']}",
        f"breakpoints       {out['breakpoints']} (knots where the slope changes: {out['knots']})",
        f"min piece width   {out['min_piece_width']:.3e}"
        + ("" if out["resolved"] else "  (below float64 resolution: counts are a lower bound)"),
        f"convexity         {out['convexity']['convex_knots']} knots bend up, "
        f"{out['convexity']['concave_knots']} bend down",
        f"rounding snaps    {out['snapped']} (touching zeros / simultaneous switches)",
        f"time              {out['seconds']:.3f} s",
    ]
    if "sampled" in out:
        s = out["sampled"]
        lines.append(f"sampling ({s['samples']} points) sees {s['linear_pieces']} pieces, "
                     f"{s['activation_regions']} regions")
    if "plot" in out:
        lines.append(f"plot              {out['plot']}")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# train

def phase_spec(text: str):
    """'lm:400' or 'adam:1000:1e-3' -> Phase."""
    from .training.trainer import OPTIMIZERS, Phase

    parts = text.split(":")
    try:
        if len(parts) not in (2, 3) or parts[0] not in OPTIMIZERS:
            raise ValueError
        steps = int(parts[1])
        lr = float(parts[2]) if len(parts) == 3 else 1e-3
        if steps < 0 or not (math.isfinite(lr) and lr > 0):
            raise ValueError
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected OPTIMIZER:STEPS[:LR] with OPTIMIZER in {'/'.join(OPTIMIZERS)}, STEPS >= 0, "
            f"LR > 0, got {text!r}") from None
    return Phase(parts[0], steps, lr)


def check_out_dir(path: Path, force: bool) -> Path:
    """Refuse to mix a new run into an old one; nothing is created here."""
    if path.exists() and not path.is_dir():
        raise InputError(f"--out {path} exists and is not a folder")
    if path.is_dir() and any(path.iterdir()) and not force:
        raise InputError(f"--out {path} is not empty; choose a new folder or pass --force")
    return path


def cmd_train(args) -> dict:
    from . import checkpoint
    from . import targets as T
    from .training.trainer import fit, provenance

    resume = None
    if args.resume is not None:
        args, resume = resume_args(args)
    if args.checkpoint_every is not None:
        if not args.out:
            raise InputError("--checkpoint-every needs --out DIR (the state is kept there)")
        if args.checkpoint_every < 1:
            raise InputError(f"--checkpoint-every must be >= 1, got {args.checkpoint_every}")
    if (args.target is None) == (args.data is None):
        raise InputError("give exactly one of --target EXPR or --data CSV")
    if args.sparse is not None and args.data is not None:
        raise InputError("--sparse draws points from --target; a CSV brings its own points")
    out_dir = check_out_dir(Path(args.out), args.force) if args.out else None
    lo, hi = args.interval or (0.0, 1.0)
    if args.data is not None:
        data = T.from_csv(args.data)
        target = None
    else:
        target = T.parse_target(args.target)
        data = (T.sparse(target, (lo, hi), args.sparse, args.sparse, seed=args.seed)
                if args.sparse else T.dense(target, (lo, hi), args.points))
    # The state file also keeps the command, so --resume needs nothing else; it is first written
    # after N steps, when every argument has been checked.
    state_path = out_dir / "state.pt" if args.checkpoint_every else None
    result = fit(data=data, target=target, depth=args.depth, seeds=args.seeds, seed=args.seed,
                 method=args.method, phase1=args.phase1, phase2=args.phase2, shape=args.shape,
                 sparse=args.sparse, device=args.device, parameterization=args.param,
                 starts=args.starts, grow_from=args.grow_from, checkpoint=state_path,
                 checkpoint_every=args.checkpoint_every, resume=resume,
                 checkpoint_meta=json.dumps({"argv": args.argv}),
                 progress=not args.json and sys.stderr.isatty())
    out = result.summary()
    if out_dir is not None:
        info = provenance(data, argv=sys.argv)
        for s, model in zip(result.seeds, result.models):
            checkpoint.save(model, out_dir / "checkpoints" / f"seed-{s:04d}.pt",
                            {"method": result.method, "target": data.name, "seed": s,
                             "interval": list(result.interval), "depth": result.depth,
                             "phases": result.phases, **info})
        from .checkpoint import atomic_write, atomic_write_text

        atomic_write_text(out_dir / "train.csv", T.to_csv_text(data.x, data.y))
        atomic_write_text(out_dir / "test.csv", T.to_csv_text(data.test_x, data.test_y))
        atomic_write(out_dir / "history.npz", lambda f: np.savez(
            f, loss=result.history["loss"], phase_boundary=result.history["phase_boundary"]))
        metrics = {**result.to_dict(), **info}
        atomic_write_text(out_dir / "metrics.json", json.dumps(metrics, indent=2))
        draw_run(out_dir, metrics, result.models, data, result.history["loss"],
                 result.history["phase_boundary"])
        if state_path is not None:
            state_path.unlink(missing_ok=True)  # the run is complete
        out["out"] = str(out_dir)
    return out


def resume_args(args):
    """The arguments of the interrupted run in ``args.resume`` and its saved training state."""
    from .training.trainer import load_train_state

    folder = Path(args.resume)
    state = load_train_state(folder / "state.pt")
    try:
        argv = json.loads(state.get("meta") or "")["argv"]
        if not (isinstance(argv, list) and all(isinstance(a, str) for a in argv)):
            raise ValueError("argv is not a list of strings")
    except (ValueError, KeyError, TypeError) as e:
        raise InputError(f"{folder}/state.pt does not record the command to resume ({e})") from None
    try:
        original = build_parser().parse_args(argv)
    except SystemExit:
        raise InputError(f"{folder}/state.pt records a command this version cannot parse") from None
    if original.command != "train" or original.resume is not None:
        raise InputError(f"{folder}/state.pt is not from a train run")
    original.out, original.force, original.json = str(folder), True, args.json
    original.argv = argv
    return original, state


def draw_run(out_dir: Path, metrics: dict, models, data, loss, boundary) -> list:
    """fit.png (best seed; a surface and its error in 2D) and history.png of a run folder."""
    from .plots import plot_fit, plot_history, plot_surface

    mse = np.array(metrics["mse"], dtype=float)
    best = int(np.nanargmin(mse))
    seed = metrics["seed_list"][best]
    draw = plot_fit if data.dims == 1 else plot_surface
    return [draw(models[best], data, out_dir / "fit.png",
                 title=f"{metrics['method']} ({metrics.get('shape', 'convex')}), depth "
                       f"{metrics['depth']}, seed {seed}: MSE {mse[best]:.2e}"),
            plot_history(loss, boundary, out_dir / "history.png",
                         title=f"{metrics['method']} on {metrics['target']}")]


def cmd_report(args) -> dict:
    """Summary of a run folder written by ``train --out``, and its plots drawn again."""
    from . import checkpoint
    from . import targets as T

    run = Path(args.folder)
    try:
        metrics = json.loads((run / "metrics.json").read_text())
        with np.load(run / "history.npz", allow_pickle=False) as h:
            loss, boundary = h["loss"], int(h["phase_boundary"])
        train, test = T.from_csv(run / "train.csv"), T.from_csv(run / "test.csv")
    except (OSError, ValueError, KeyError) as e:
        if isinstance(e, InputError):
            raise
        raise InputError(f"{run} is not a complete run folder ({type(e).__name__}: "
                         f"{str(e).splitlines()[0][:150] if str(e) else ''})") from None
    data = T.Dataset(train.x, train.y, test.x, test.y, tuple(metrics["interval"]), metrics["target"])
    models = [checkpoint.load(run / "checkpoints" / f"seed-{s:04d}.pt")[0]
              for s in metrics["seed_list"]]
    plots = draw_run(run, metrics, models, data, loss, boundary)
    keys = ("method", "target", "depth", "shape", "seeds", "mse_min", "mse_mean", "mse_median",
            "pieces_mean", "optimal_mse", "optimal_pieces", "efficiency_mean", "diverged", "seconds", "command",
            "versions", "data_sha256")
    return {**{k: metrics.get(k) for k in keys}, "plots": [str(p) for p in plots]}


def show_report(out: dict) -> str:
    lines = [show_train(out),
             f"command: {' '.join(out['command'] or [])}",
             "versions: " + ", ".join(f"{k} {v}" for k, v in (out["versions"] or {}).items()),
             f"data sha256: {out['data_sha256']}",
             "plots: " + ", ".join(out["plots"])]
    return "\n".join(lines)


def show_train(out: dict) -> str:
    lines = [f"{out['method']} on {out['target']}, depth {out['depth']}, {out['seeds']} seeds "
             f"({out['seconds']:.1f} s)",
             f"MSE  min {out['mse_min']:.3e}   mean {out['mse_mean']:.3e}   "
             f"median {out['mse_median']:.3e}",
             f"linear pieces (mean over seeds) {out['pieces_mean']:.1f} " + _pieces_note(out)]
    if out.get("optimal_mse") is not None:
        lines.append(f"optimum with {out['optimal_pieces']} pieces {out['optimal_mse']:.3e}; "
                     f"efficiency (optimum / achieved, mean) {out['efficiency_mean']:.3f}")
    if out.get("diverged"):
        lines.append(f"diverged seeds: {out['diverged']}")
    if out.get("out"):
        lines.append(f"wrote {out['out']}/metrics.json, fit.png, history.png, checkpoints/")
    return "\n".join(lines)


def _pieces_note(out: dict) -> str:
    if "max_pieces" not in out:  # metrics written before the field existed
        return ""
    if out["max_pieces"] is None:
        return "(along the diagonal of the input box)"
    if out.get("shape") == "dc":
        return f"(two constructions: up to {out['max_pieces']})"
    return f"(the construction has {out['max_pieces']}; raw training may add or lose some)"


# ---------------------------------------------------------------------------------------------
# sweep

def cmd_sweep(args) -> dict:
    from .sweep.grid import load_config, run_sweep

    config = load_config(args.config)
    result = run_sweep(config, Path(args.out), workers=args.workers, scheduler=args.scheduler,
                       progress=not args.json and sys.stderr.isatty(), force=args.force)
    return {"out": args.out, "report": result.report(), "failed": len(result.failed)}


def show_sweep(out: dict) -> str:
    return out["report"]


# ---------------------------------------------------------------------------------------------
# gmp

def cmd_gmp(args) -> dict:
    from .gmp.studies import run_banana, run_levy

    if args.seeds < 1:
        raise InputError(f"--seeds must be >= 1, got {args.seeds}")
    out_dir = check_out_dir(Path(args.out), args.force) if args.out else None
    run = run_levy if args.study == "levy" else run_banana
    kwargs = {"epochs": args.epochs} if args.epochs else {}
    result = run(seeds=args.seeds, out=out_dir, device=args.device,
                 progress=not args.json and sys.stderr.isatty(), **kwargs)
    return {"study": args.study, **result.to_dict()}


def show_gmp(out: dict) -> str:
    return json.dumps(out, indent=2)


# ---------------------------------------------------------------------------------------------
# demo

def cmd_demo(args) -> dict:
    import torch

    from .nets.mlp import kaiming_, mlp
    from .nets.parametrize import ConstructionNet
    from .plots import plot_regions
    from .analysis.regions import count_regions, sample_regions

    d, out_dir = args.depth, Path(args.out)
    if not 1 <= d <= 20:
        raise InputError(f"--depth must be between 1 and 20 for the demo, got {d}")
    # 1. Yarotsky's x^2: peaks 1/2, scales 4^-(i+1): exact at the 2^d + 1 dyadic knots.
    square = ConstructionNet.build(d, peaks=0.5, thm31=False, c1=1.0)
    x = np.linspace(0, 1, 4097)
    with torch.no_grad():
        err = np.abs(square(torch.tensor(x).unsqueeze(1)).numpy()[:, 0] - x**2).max()
    # 2. A random construction (Theorem 3.1 scales): exactly 2^d pieces, convex.
    net = ConstructionNet.build(d, peaks=random_peaks(d + 1, args.seed), thm31=True, c1=1.0)
    exact = count_regions(net, 0, 1)
    sampled = sample_regions(net, 0, 1, samples=10_001)
    plot = plot_regions(net, 0, 1, out_dir / "construction.png", count=exact,
                        title=f"construction, depth {d}: {exact.linear_pieces} linear pieces")
    # 3. Random nets of the same size: He (Kaiming) normal weights with zero biases, and
    # PyTorch's default init (Kaiming-uniform weights, uniform biases).
    g = torch.Generator().manual_seed(args.seed)
    if args.nets < 1:
        raise InputError(f"--nets must be >= 1, got {args.nets}")
    kaiming = [count_regions(kaiming_(mlp(4, d), g), 0, 1).linear_pieces for _ in range(args.nets)]
    torch.manual_seed(args.seed)  # nn.Linear's own init draws from the global generator
    default = [count_regions(mlp(4, d), 0, 1).linear_pieces for _ in range(args.nets)]
    plot_k = plot_regions(mlp(4, d), 0, 1, out_dir / "default_init.png",
                          title=f"PyTorch default init, width 4, depth {d}")
    trained = None
    if not args.no_train:
        trained = _demo_fit(d, args.seed, args.device)
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
        "fit": trained,
    }


def _demo_fit(depth, seed, device):
    """Fit x^3 with 5 seeds, two-phase vs Kaiming, on a short budget (a few seconds)."""
    from .training.trainer import Phase, fit

    budget = dict(depth=min(depth, 6), seeds=5, seed=seed, phase1=Phase("lm", 40),
                  phase2=Phase("lm", 120), device=device)
    ours = fit("x**3", method="pretrain-thm31", **budget)
    base = fit("x**3", method="kaiming", optimum=False, **budget)
    d = budget["depth"]
    summary = (f"4. Fitting x^3 on 500 points, depth {d}, 5 seeds, 160 steps each: "
               f"two-phase (Theorem 3.1) mean MSE {ours.mse.mean():.2e}, Kaiming "
               f"{base.mse.mean():.2e};\n   the best {2 ** d}-piece fit has MSE "
               f"{ours.optimal_mse:.2e}. Try: relu-regions train --target 'x**3' --out run1")
    return {"two_phase_mse": ours.mse.tolist(), "kaiming_mse": base.mse.tolist(),
            "optimal_mse": ours.optimal_mse, "summary": summary}


def show_demo(out: dict) -> str:
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


# ---------------------------------------------------------------------------------------------

def build_parser() -> Parser:
    p = Parser(prog="relu-regions",
               description="Deep, narrow ReLU networks that use their depth: the exponential "
                           "construction, exact linear-region counting, two-phase training.")
    from . import __version__

    p.add_argument("--version", action="version", version=f"relu-regions {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)

    c = sub.add_parser("count", help="count breakpoints, activation regions and linear pieces "
                                     "exactly", description="Count the construction (--depth) "
                       "or a saved model (--checkpoint) exactly, in float64.")
    c.add_argument("--depth", type=int, help="hidden layers of the construction")
    c.add_argument("--a", type=float_list, metavar="A0,A1,..",
                   help="peaks: one per hidden layer, or one for all (default: random in "
                        "[0.25, 0.75] from --seed)")
    c.add_argument("--seed", type=int, default=0, help="seed for the random peaks (default 0)")
    c.add_argument("--thm31", action="store_true", help="couple the scales by Theorem 3.1")
    c.add_argument("--concave", action="store_true", help="the concave construction")
    c.add_argument("--checkpoint", type=Path, help="count a saved model instead")
    c.add_argument("--interval", type=interval, metavar="LO,HI",
                   help="input interval (default 0,1; for a checkpoint, its own); negative "
                        "values as --interval=-1,1")
    c.add_argument("--from", dest="segment_from", type=float_list, metavar="X0",
                   help="count an nD model along the segment from X0 (comma-separated) ...")
    c.add_argument("--to", dest="segment_to", type=float_list, metavar="X1", help="... to X1")
    c.add_argument("--sample", type=int, metavar="N", help="also run the sampling estimator "
                                                         "on N grid points")
    c.add_argument("--plot", type=Path, metavar="FILE.png", help="save a plot of the output "
                                                                 "with its breakpoints")
    c.add_argument("--json", action="store_true", help="print JSON")
    c.set_defaults(run=cmd_count, show=show_count)

    t = sub.add_parser("train", help="fit width-4 nets to a 1D target, many seeds at once",
                       description="Two-phase training (or a baseline) on a 1D target, all seeds "
                                   "in one batched computation.")
    src = t.add_mutually_exclusive_group()
    src.add_argument("--target", metavar="EXPR", help="target in x, e.g. 'x**3', 'tanh(3*x)'")
    src.add_argument("--data", type=Path, metavar="CSV", help="x,y samples instead of a target")
    t.add_argument("--interval", type=interval, metavar="LO,HI",
                   help="input interval (default 0,1); negative values as --interval=-1,1")
    t.add_argument("--depth", type=int, default=5, help="hidden layers (default 5)")
    t.add_argument("--seeds", type=int, default=30, help="runs, trained together (default 30)")
    t.add_argument("--seed", type=int, default=0, help="first seed (default 0)")
    from .nets.composite import SHAPES
    from .training.trainer import DEFAULT_PHASE1, DEFAULT_PHASE2, METHODS

    t.add_argument("--method", default="pretrain-thm31", choices=METHODS,
                   help="default pretrain-thm31")
    pts = t.add_mutually_exclusive_group()
    pts.add_argument("--points", type=int, help="evenly spaced points (default 500; a 2D target: "
                     "points per axis of a grid, default 41)")
    pts.add_argument("--sparse", type=int, metavar="N", help="N random training and N test points")
    t.add_argument("--phase1", type=phase_spec, default=DEFAULT_PHASE1, metavar="OPT:STEPS[:LR]",
                   help=f"phase 1 (default {DEFAULT_PHASE1.optimizer}:{DEFAULT_PHASE1.steps}); "
                        f"e.g. adam:1000:1e-3 for the paper's protocol")
    t.add_argument("--phase2", type=phase_spec, default=DEFAULT_PHASE2, metavar="OPT:STEPS[:LR]",
                   help=f"phase 2 (default {DEFAULT_PHASE2.optimizer}:{DEFAULT_PHASE2.steps}); "
                        f"one-phase methods get both budgets with this optimizer")
    t.add_argument("--shape", choices=SHAPES, default="auto",
                   help="construction layout: 1D convex, concave or dc (convex minus convex); 2D "
                        "ridge (sum along the quadratic's axes) or radial (a construction of that "
                        "sum); auto picks from the data (default)")
    t.add_argument("--starts", type=int, default=None,
                   help="starts per seed (random peaks), each through phase 1 and a share of "
                        "phase 2 (a quarter; with --grow-from the first depth's stage); the "
                        "best continues (default 8; 16 with --grow-from)")
    t.add_argument("--grow-from", type=int, metavar="D0",
                   help="train at depth D0 first, then add one layer at a time up to --depth "
                        "(18 insertion paths per seed, the best kept)")
    t.add_argument("--param", choices=("sp", "gmp"), default="sp",
                   help="raw-weight training on standard weights (sp, default) or on GmP "
                        "coordinates (radius, angles, offset; Chen & Ge)")
    t.add_argument("--out", metavar="DIR", help="write checkpoints, metrics.json and plots here")
    t.add_argument("--force", action="store_true", help="allow a non-empty --out")
    t.add_argument("--checkpoint-every", type=int, metavar="N",
                   help="save the training state to --out every N steps (atomic), so a killed "
                        "run can continue with --resume")
    t.add_argument("--resume", metavar="DIR",
                   help="continue the interrupted run in DIR (its other options are reused)")
    t.add_argument("--device", default="cpu", help="torch device (default cpu)")
    t.add_argument("--json", action="store_true", help="print JSON (no progress bar)")
    t.set_defaults(run=cmd_train, show=show_train)

    w = sub.add_parser("sweep", help="run a grid of trainings from a TOML file, locally or on Dask",
                       description="Expand targets x depths x methods x seeds from CONFIG.toml, "
                                   "run the cells in parallel (local processes, or a Dask "
                                   "cluster with --scheduler) and gather results.csv, "
                                   "summary.csv, results.json and sweep.png in --out.")
    w.add_argument("config", metavar="CONFIG.toml")
    w.add_argument("--out", required=True, metavar="DIR")
    w.add_argument("--workers", type=int, help="local processes (default: all cores; 0 = here)")
    w.add_argument("--scheduler", metavar="ADDR", help="Dask scheduler, e.g. tcp://host:8786")
    w.add_argument("--force", action="store_true", help="allow a non-empty --out")
    w.add_argument("--json", action="store_true", help="print JSON")
    w.set_defaults(run=cmd_sweep, show=show_sweep)

    g = sub.add_parser("gmp", help="GmP studies of Chen & Ge: Levy regression, Banana "
                                   "classification (SP, WN, BN, GmP)",
                       description="Run the 1D Levy or 2D Banana study and report per-method "
                                   "test RMSE / accuracy and the CAB stability metric.")
    g.add_argument("study", choices=("levy", "banana"))
    g.add_argument("--seeds", type=int, default=5, help="seeds per method (default 5)")
    g.add_argument("--epochs", type=int, help="maximum epochs (default: the paper's)")
    g.add_argument("--out", metavar="DIR", help="write figures here")
    g.add_argument("--force", action="store_true", help="allow a non-empty --out")
    g.add_argument("--device", default="cpu", help="torch device (default cpu)")
    g.add_argument("--json", action="store_true", help="print JSON")
    g.set_defaults(run=cmd_gmp, show=show_gmp)

    r = sub.add_parser("report", help="summarize a run folder and draw its plots again",
                       description="Print the summary of a `train --out` folder (metrics, "
                                   "command, versions, data hash) and regenerate its plots.")
    r.add_argument("folder", metavar="DIR", help="a folder written by `relu-regions train --out`")
    r.add_argument("--json", action="store_true", help="print JSON")
    r.set_defaults(run=cmd_report, show=show_report)

    d = sub.add_parser("demo", help="a short tour: build, count, plot, compare with Kaiming",
                       description="Build a construction, count it exactly, plot it, and compare "
                                   "with random Kaiming nets of the same size.")
    d.add_argument("--depth", type=int, default=6, help="hidden layers (default 6)")
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--nets", type=int, default=20, help="Kaiming nets to count (default 20)")
    d.add_argument("--out", default="demo-out", help="folder for the plots (default demo-out)")
    d.add_argument("--no-train", action="store_true", help="skip the short training run")
    d.add_argument("--device", default="cpu", help="torch device (default cpu)")
    d.add_argument("--json", action="store_true", help="print JSON")
    d.set_defaults(run=cmd_demo, show=show_demo)
    return p


def main(argv=None) -> int:
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    args.argv = argv
    if args.command is None:
        parser.print_help()
        return 2
    try:
        out = args.run(args)
    except InputError as e:
        print(f"relu-regions {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    try:
        print(json.dumps(out, indent=2) if args.json else args.show(out))
    except BrokenPipeError:  # e.g. piped into head
        sys.stderr.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
