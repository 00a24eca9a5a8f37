"""The ``relu-regions`` command: parses arguments, calls the Python API, prints. No logic here."""

from __future__ import annotations

import argparse
import dataclasses
import json
import re
import sys
import time
from pathlib import Path

from .errors import InputError
from .training.config import MAX_DEPTH
from .validation import plural

MAX_COUNT_DEPTH = MAX_DEPTH  # one limit for count, train and sweep (training.config)
MAX_JSON_PIECES = 1_000_000  # a JSON list of rows costs ~0.5 KB a row in Python


class Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (and exit code 2), a value may start with '-'
    (``--interval -1,1``, see :func:`join_values`), and an epilog may be computed when the help
    is shown (``lazy_epilog``: a function, so that --help imports nothing it does not print)."""

    lazy_epilog = None

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", _Formatter)
        super().__init__(*args, **kwargs)

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message}\n")

    def parse_args(self, args=None, namespace=None):
        """As argparse, but an unknown option names the command and the closest known one."""
        args, extras = self.parse_known_args(args, namespace)
        if extras:
            import difflib

            sub = self._subparsers._group_actions[0].choices.get(getattr(args, "command", None)) \
                if self._subparsers else None
            parser = sub or self
            known = [s for a in parser._actions for s in a.option_strings]
            first = extras[0].split("=")[0]
            close = difflib.get_close_matches(first.lower(), known, n=1)
            hint = f" (did you mean {close[0]}?)" if close and first.startswith("-") else ""
            parser.error(f"unrecognized argument{'s' if len(extras) > 1 else ''}: "
                         f"{' '.join(extras)}{hint}")
        return args

    def parse_known_args(self, args=None, namespace=None):
        args = sys.argv[1:] if args is None else list(args)
        return super().parse_known_args(join_values(self, args), namespace)

    def format_help(self):
        if self.lazy_epilog is not None:
            self.epilog, self.lazy_epilog = self.lazy_epilog(), None
        return super().format_help()


class _Formatter(argparse.HelpFormatter):
    """Descriptions and epilogs: paragraphs are wrapped, lines indented by two spaces (the
    examples) are kept as they are."""

    def _fill_text(self, text, width, indent):
        import textwrap

        out = []
        for block in text.split("\n\n"):
            lines = block.split("\n")
            if any(line.startswith("  ") for line in lines):
                out.append("\n".join(indent + line for line in lines))
            else:
                out.append(textwrap.fill(" ".join(lines), width, initial_indent=indent,
                                         subsequent_indent=indent))
        return "\n\n".join(out)


# A value that starts with '-': a number (-1, -.5, -1,1), a parenthesis, or a name of the
# expression language (-pi, -x**2, -sin(x)). '--anything' is never a value.
_DASH_VALUE = re.compile(r"-(?:[\d.(]|([A-Za-z_]\w*))")


def join_values(parser: argparse.ArgumentParser, args: list[str]) -> list[str]:
    """``--opt -1,1`` -> ``--opt=-1,1`` for each option of ``parser`` that takes one value.

    argparse reads a token that starts with '-' (and is not a plain negative number) as an
    option, so ``--interval -1,1`` failed with "expected one argument" while
    ``--interval=-1,1`` worked. Joining only value-like tokens keeps ``--out --force``'s error.
    """
    takes_value = {s for a in parser._actions if a.option_strings and a.nargs is None
                   for s in a.option_strings}
    out, i = [], 0
    while i < len(args):
        token = args[i]
        if token == "--":  # everything after is positional
            return out + args[i:]
        nxt = args[i + 1] if i + 1 < len(args) else None
        if token.startswith("--") and token not in parser._option_string_actions:
            # argparse accepts a unique prefix (--int for --interval): so does this
            full = [s for s in parser._option_string_actions if s.startswith(token)]
            token = full[0] if len(full) == 1 else token
        if token in takes_value and nxt is not None and _is_dash_value(nxt):
            out.append(f"{token}={nxt}")
            i += 2
            continue
        out.append(token)
        i += 1
    return out


def _is_dash_value(token: str) -> bool:
    m = _DASH_VALUE.match(token)
    if not m:
        return False
    if m[1] is None:
        return True
    from .targets import CONSTANTS, FUNCTIONS, VARIABLES

    return m[1] in CONSTANTS or m[1] in FUNCTIONS or m[1] in VARIABLES


def float_list(text: str) -> list[float]:
    """'0.3,0.5,0.7' -> [0.3, 0.5, 0.7]; each value a number or a constant expression of the
    target language ('-pi', 'pi/2', '2*e'); anything else is a usage error."""
    from .targets import parse_number

    values = []
    for v in text.split(","):
        try:
            values.append(parse_number(v.strip()))
        except InputError as err:
            if "not finite" in str(err):
                raise argparse.ArgumentTypeError(f"expected finite numbers, got {text!r}") from None
            raise argparse.ArgumentTypeError(
                f"expected comma-separated numbers (or constants such as pi, -pi/2), got "
                f"{text!r}: {v.strip()!r} is not a number") from None
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
    from .analysis.regions import (
        count_regions,
        count_regions_segment,
        pieces_rows,
        pieces_table,
        sample_regions,
        write_pieces_csv,
    )
    from .nets.parametrize import ConstructionNet
    from .validation import check_int

    check_int(args.seed, "--seed", low=0)
    if args.plot:
        from .plots import check_figure_path

        check_figure_path(args.plot, "--plot")
    for option, path in (("--plot", args.plot), ("--pieces", args.pieces)):
        if path is not None and Path(path).is_dir():
            raise InputError(f"{option} {path} is a folder; give a file name, e.g. "
                             f"{Path(path) / ('pieces.csv' if option == '--pieces' else 'plot.png')}")
    info = {}
    if args.checkpoint:
        if args.depth is not None or args.a is not None:
            raise InputError("--checkpoint counts a saved model: drop --depth/--a")
        model, config = checkpoint.load(args.checkpoint)
        n_in = next(m for m in model.modules() if isinstance(m, torch.nn.Linear)).in_features
        saved = config.get("model", {}).get("interval") or config.get("interval")
        if args.segment_from is None and (n_in == 2 or args.box or args.through):
            return _count_plane(args, model, n_in, saved, {"checkpoint": str(args.checkpoint)})
        if n_in > 1 and args.segment_from is None:
            raise InputError(f"the model takes {n_in} inputs; count it on the plane through "
                             f"three points with --through P0 P1 P2, or along a segment with "
                             f"--from X0 --to X1 (e.g. --from={','.join(['-1'] * n_in)} "
                             f"--to {','.join(['1'] * n_in)})")
        saved = saved if n_in == 1 else None  # a 2D run saves one interval per input
        lo, hi = args.interval or (tuple(saved) if saved else (0.0, 1.0))
        info["checkpoint"] = str(args.checkpoint)
    else:
        if args.depth is None:
            raise InputError("give --depth D (count the construction) or --checkpoint PATH")
        if args.box or args.through:
            raise InputError("--box and --through count a saved model with 2 or more inputs "
                             "(--checkpoint); the construction has one input")
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
        if args.interval is not None:
            raise InputError("--interval is for a 1D input; a segment is given by --from and "
                             "--to alone")
        segment = (args.segment_from, args.segment_to)
        result = count_regions_segment(model, *segment)
        info["segment"] = {"from": list(segment[0]), "to": list(segment[1])}
    else:
        segment = (None, None)
        result = count_regions(model, lo, hi)
    seconds = time.perf_counter() - start
    out = {**info, **result.to_dict(), "convexity": result.convexity().to_dict(),
           "seconds": round(seconds, 4)}
    if args.pieces:
        if args.json and result.linear_pieces > MAX_JSON_PIECES:
            raise InputError(f"--json lists at most {MAX_JSON_PIECES} pieces and this count has "
                             f"{result.linear_pieces}; drop --json to write only {args.pieces}")
        table = pieces_table(result, model, *segment)
        if args.json:
            out["pieces"] = pieces_rows(table)
        out["pieces_file"] = str(write_pieces_csv(args.pieces, table))
    if args.sample:
        out["sampled"] = sample_regions(model, lo, hi, samples=args.sample).to_dict()
    if args.plot:
        from .plots import plot_regions

        out["plot"] = str(plot_regions(model, lo, hi, args.plot, count=result))
    return out


def _count_plane(args, model, n_in, saved, info) -> dict:
    """count on a plane: the box of a 2-input model, or the plane through three points."""
    from .analysis.plane import count_regions_2d, count_regions_plane, parse_points

    if args.interval or args.sample or args.pieces:
        raise InputError("--interval, --sample and --pieces are for 1D inputs; a plane takes "
                         "--box")
    if args.through:
        points = parse_points(args.through, n_in, args.data)
        start = time.perf_counter()
        result = count_regions_plane(model, *points, extent=args.box)
        marks = result.plane["points"]
    else:
        if n_in != 2:
            raise InputError(f"--box counts a model with 2 inputs; this one takes {n_in}: add "
                             f"--through P0 P1 P2")
        box = args.box
        if box is None and saved and len(saved) == 2 and all(len(b) == 2 for b in saved):
            box = [saved[0][0], saved[0][1], saved[1][0], saved[1][1]]  # its training domain
        start = time.perf_counter()
        result = count_regions_2d(model, box if box is not None else (0.0, 1.0, 0.0, 1.0))
        marks = None
    out = {**info, **result.to_dict(), "seconds": round(time.perf_counter() - start, 4)}
    if args.plot:
        from .plots import plot_region_map

        out["plot"] = str(plot_region_map(result, args.plot, points=marks))
    return out


def show_count(out: dict) -> str:
    lines = []
    if "edges" in out:  # a plane count
        x0, x1, y0, y1 = out["box"]
        lines += [f"checkpoint: {out['checkpoint']}"] if "checkpoint" in out else []
        if "plane" in out:
            lines.append("plane through three points, coordinates (u, v) in input units")
        lines += [
            f"box               [{x0:g}, {x1:g}] x [{y0:g}, {y1:g}]",
            f"activation regions {out['activation_regions']}",
            f"linear pieces     {out['linear_pieces']}",
            f"vertices, edges   {out['vertices']}, {out['edges']}",
            f"min cell area     {out['min_cell_area']:.3e}"
            + ("" if out["resolved"] else "  (below float64 resolution: counts not guaranteed)"),
            f"rounding snaps    {out['snapped']} (touching zeros / concurrent lines)",
            f"time              {out['seconds']:.3f} s",
        ]
        if "plot" in out:
            lines.append(f"plot              {out['plot']}")
        return "\n".join(lines)
    if "depth" in out:
        lines.append(f"construction: depth {out['depth']}, "
                     f"{'Theorem 3.1 scales' if out['thm31'] else 'free scales'}")
    if "checkpoint" in out:
        lines.append(f"checkpoint: {out['checkpoint']}")
    if "segment" in out:
        ends = [", ".join(f"{v:g}" for v in out["segment"][k]) for k in ("from", "to")]
        where = (f"segment           ({ends[0]}) to ({ends[1]}); positions t in [0, 1] along "
                 "it, slopes dy/dt")
    else:
        where = f"interval          [{out['lo']:g}, {out['hi']:g}]"
    lines += [
        where,
        f"linear pieces     {out['linear_pieces']}",
        f"activation regions {out['activation_regions']}",
        f"breakpoints       {out['breakpoints']} (knots where the slope changes: {out['knots']})",
        f"min piece width   {out['min_piece_width']:.3e}"
        + ("" if out["resolved"] else "  (below float64 resolution: counts are a lower bound)"),
        f"convexity         the slope rises at {plural(out['convexity']['convex_knots'], 'knot')}"
        f", falls at {plural(out['convexity']['concave_knots'], 'knot')}",
        f"rounding snaps    {out['snapped']} (touching zeros / simultaneous switches)",
        f"time              {out['seconds']:.3f} s",
    ]
    if "sampled" in out:
        s = out["sampled"]
        lines.append(f"sampling ({s['samples']} points) sees {plural(s['linear_pieces'], 'piece')}, "
                     f"{plural(s['activation_regions'], 'region')} (never more than exist)")
    if "plot" in out:
        lines.append(f"plot              {out['plot']}")
    if "pieces_file" in out:
        from .analysis.regions import PIECE_COLUMNS

        lines.append(f"pieces            {out['pieces_file']} ({plural(out['linear_pieces'], 'row')}"
                     f": {','.join(PIECE_COLUMNS)})")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# train

def phase_spec(text: str):
    """'lm:400' or 'adam:1000:1e-3' -> Phase (``training.config.parse_phase``)."""
    from .training.config import parse_phase

    try:
        return parse_phase(text, "phase")
    except InputError as e:
        raise argparse.ArgumentTypeError(f"expected OPTIMIZER:STEPS[:LR] (e.g. lm:100, "
                                         f"adam:1000:1e-3): {e}") from None


CLI_PARSERS = {"phase": phase_spec, "interval": interval}


def add_fit_options(parser) -> None:
    """One option per FitConfig field (its metadata: flag, help, choices, parse), so a new field
    reaches ``train`` without editing this file. Options not given stay out of the namespace
    (``argparse.SUPPRESS``): the config's own defaults apply."""
    from .training import config

    for f in config.fields():
        meta = f.metadata
        if meta.get("cli") is False:
            continue
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        flag = meta.get("flag", "--" + f.name.replace("_", "-"))
        shown = default.spec() if isinstance(default, config.Phase) else default
        help_text = meta.get("help", f.name) + ("" if default is None else f" (default {shown})")
        kwargs = dict(dest=f.name, default=argparse.SUPPRESS, help=help_text)
        if isinstance(default, bool):
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, **kwargs)
            continue
        parse = meta.get("parse", type(default) if default is not None else str)
        parser.add_argument(flag, type=CLI_PARSERS.get(parse, parse), choices=meta.get("choices"),
                            metavar=meta.get("metavar"), **kwargs)


def fit_overrides(args) -> dict:
    """The FitConfig fields given on the command line."""
    from .training import config

    return {f.name: getattr(args, f.name) for f in config.fields()
            if f.metadata.get("cli") is not False and hasattr(args, f.name)}


def cmd_train(args) -> dict:
    from . import targets as T
    from .training import fitting

    progress = _progress_mode(args)
    if args.resume is not None:
        return _resume_train(args, progress)
    if args.checkpoint_every is not None and not args.out:
        raise InputError("--checkpoint-every needs --out DIR (the state is kept there)")
    if (args.target is None) == (args.data is None):
        raise InputError("give exactly one of --target EXPR or --data CSV")
    from .validation import check_device

    check_device(getattr(args, "device", "cpu"))  # FitConfig checks it too; this names --device
    from .training.run_folder import check_out_dir

    out_dir = check_out_dir(Path(args.out), args.force) if args.out else None
    data = T.from_csv(args.data) if args.data is not None else None
    target = T.parse_target(args.target) if args.target is not None else None
    # The state file also keeps the command; it is first written after N steps, when every
    # argument has been checked.
    state_path = out_dir / "state.pt" if args.checkpoint_every else None
    result = fitting.fit(target, data=data, progress=progress, checkpoint=state_path,
                         checkpoint_every=args.checkpoint_every,
                         checkpoint_meta=json.dumps({"argv": args.argv}), **fit_overrides(args))
    # --out was checked before training; since then it may hold this run's own state.pt
    return _train_output(result, out_dir, True, ["relu-regions", *args.argv])


def _progress_mode(args):
    if args.quiet:
        return False
    if not sys.stderr.isatty():
        return "lines"
    return not args.json


def _resume_train(args, progress) -> dict:
    """Continue the interrupted run in ``args.resume`` (its settings and data are in state.pt)
    and write its run folder there."""
    from .training import fitting
    from .training.stages import load_train_state

    folder = Path(args.resume)
    given = [k for k in fit_overrides(args)] + [k for k in ("target", "data", "out")
                                                if getattr(args, k) is not None]
    if given:
        raise InputError(f"--resume reuses the interrupted run's settings; drop --{given[0]}")
    state = load_train_state(folder)
    try:
        command = json.loads(state.get("meta") or "")["argv"]
    except (ValueError, KeyError, TypeError):
        command = None
    result = fitting.fit(resume=state, progress=progress, checkpoint=folder / "state.pt",
                         checkpoint_every=args.checkpoint_every or _stored_every(command),
                         checkpoint_meta=state.get("meta", ""))
    return _train_output(result, folder, True, ["relu-regions", *command] if command else None)


def _stored_every(argv):
    """--checkpoint-every N of the interrupted command (so a resumed run keeps saving)."""
    argv = argv or []
    for i, a in enumerate(argv):
        if a.startswith("--checkpoint-every="):
            return int(a.split("=", 1)[1])
        if a == "--checkpoint-every" and i + 1 < len(argv):
            return int(argv[i + 1])
    return None


def _train_output(result, out_dir, force, command) -> dict:
    out = result.summary()
    if out_dir is not None:
        folder = result.save(out_dir, force=force, command=command)
        out["out"] = str(out_dir)
        out["files"] = sorted(p.name + "/" * p.is_dir() for p in Path(folder).iterdir())
    return out


def cmd_report(args) -> dict:
    """Summary of a run folder written by ``train --out``, and its plots drawn again."""
    from .training.run_folder import draw_run, load_run

    result = load_run(args.folder)
    plots = draw_run(Path(args.folder), result)
    return {**result.summary(), **result.provenance, "plots": [str(p) for p in plots]}


def show_report(out: dict) -> str:
    import shlex

    lines = [show_train(out),
             f"command: {shlex.join(out['command'] or [])}",
             "versions: " + ", ".join(f"{k} {v}" for k, v in (out["versions"] or {}).items()),
             f"data sha256: {out['data_sha256']}",
             "plots: " + ", ".join(out["plots"])]
    return "\n".join(lines)


def show_train(out: dict) -> str:
    from .training.result import describe_training  # numpy only: keeps --help light

    seeds = plural(out['seeds'], 'seed')
    depth = f"depth {out['depth']}"
    if out.get("shape") == "radial":  # F_out(F_in(x, y)): two constructions stacked
        depth += f" per construction ({2 * out['depth']} hidden layers, radial)"
    lines = [f"{out['method']} on {out['target']}, {depth}, {seeds} ({out['seconds']:.1f} s)"]
    how = describe_training(out.get("training") or {}, out["depth"])
    if how:
        lines.append(how)
    if out.get("inputs") == 2:
        lines.append("2D fit: the target uses y or r (or the CSV has 3 columns), so the nets take "
                     "two inputs (x, y)")
    which = "test MSE (held-out points)" if out.get("held_out") else "MSE"
    lines.append(f"{which}  min {_num(out['mse_min'])}   mean {_num(out['mse_mean'])}   "
                 f"median {_num(out['mse_median'])}")
    if out.get("held_out"):
        lines.append(f"train MSE (fitted points)  mean {_num(out.get('train_mse_mean'))}")
    if out.get("overfit_note"):
        lines.append(out["overfit_note"])
    if out.get("r2_mean") is not None:
        lines.append(f"{'test ' if out.get('held_out') else ''}R^2 {out['r2_mean']:.6f}, RMSE / "
                     f"std of the target {out['rel_rmse_mean']:.3e}, max |error| "
                     f"{out['max_abs_error_mean']:.3e} (means over seeds)")
    if out.get("regions") is not None:
        lines.append("regions on the input box, per seed (exact): "
                     + _per_seed(out["regions"], out["plane_pieces"]))
    lines.append(f"linear pieces (mean over seeds) {out['pieces_mean']:.1f} " + _pieces_note(out))
    if out.get("optimal_mse") is not None:
        eff = out["efficiency_mean"]
        lines.append(f"optimum with {out['optimal_pieces']} pieces {out['optimal_mse']:.3e}; "
                     f"efficiency (optimum / achieved training MSE, mean) "
                     f"{_num(eff, '.3g')}" + _efficiency_note(out))  # 1e-05, not 0.000
    if out.get("diverged"):
        lines.append(f"diverged seeds: {out['diverged']}")
    if out.get("out"):  # what the folder holds, listed from the folder itself
        lines.append(f"wrote {out['out']}/: " + ", ".join(out.get("files", [])))
    return "\n".join(lines)


def _per_seed(regions, pieces, shown: int = 8) -> str:
    """'r regions / p pieces' per seed, the first ``shown`` of them, then the means."""
    cell = lambda r, p: "-" if r < 0 else f"{r}/{p}"  # noqa: E731  (-1: diverged or not counted)
    text = ", ".join(cell(r, p) for r, p in zip(regions[:shown], pieces[:shown]))
    if len(regions) > shown:
        text += f", ... ({len(regions) - shown} more)"
    counted = [(r, p) for r, p in zip(regions, pieces) if r >= 0]
    if counted:
        n = len(counted)
        text += (f" activation regions/linear pieces; mean {sum(r for r, _ in counted) / n:.1f}"
                 f"/{sum(p for _, p in counted) / n:.1f}")
    return text


def _num(v, fmt=".3e") -> str:
    return "-" if v is None else format(v, fmt)


def _efficiency_note(out: dict) -> str:
    if (out.get("efficiency_mean") or 0) <= 1:
        return ""
    return (f" (above 1: phase 2 can add pieces beyond the construction's, so the "
            f"{out['optimal_pieces']}-piece optimum is not a bound)")


def _pieces_note(out: dict) -> str:
    if "max_pieces" not in out:  # metrics written before the field existed
        return ""
    if out["max_pieces"] is None:
        return "(along the diagonal of the input box)"
    if out.get("shape") == "dc":
        return f"(two constructions: up to {out['max_pieces']})"
    if out.get("method") in ("kaiming", "raai"):  # random init: no construction in the net
        return f"(a depth-{out['depth']} construction has {out['max_pieces']})"
    return f"(the construction has {out['max_pieces']}; raw training may add or lose some)"


# ---------------------------------------------------------------------------------------------
# sweep

def cmd_sweep(args) -> dict:
    from .sweep.grid import load_config, run_sweep

    config = load_config(args.config)
    result = run_sweep(config, Path(args.out), workers=args.workers, scheduler=args.scheduler,
                       progress=not args.json and sys.stderr.isatty(), force=args.force)
    return {"out": args.out, "report": result.report(), "failed": len(result.failed)}


def _sweep_keys_help() -> str:
    """The TOML keys: every FitConfig field, a list making it an axis (docs/sweeps.md)."""
    import textwrap

    from .training import config

    names = [f.name for f in config.fields() if f.metadata.get("sweep", True)]
    keys = textwrap.fill(", ".join(names), 88, initial_indent="  ", subsequent_indent="  ")
    return ("TOML keys: every fit setting under its own name (see `train --help`);\na list "
            "makes it an axis of the grid:\n" + keys + "\n  targets, depths, methods: older "
            "spellings of the target, depth and method axes\n  seeds: a count (0..N-1) or a "
            "list (required, with target)\n\nexample (docs/sweeps.md):\n"
            '  targets = ["x**3", "sin(3*x)"]\n  depths = [3, 4]\n  shape = ["convex", "dc"]\n'
            '  seeds = 2\n  phase2 = "lm:40"\n\n'
            "  relu-regions sweep experiments/sweep_example.toml --out runs/sweep")


def show_sweep(out: dict) -> str:
    return out["report"]


# ---------------------------------------------------------------------------------------------
# gmp

def cmd_gmp(args) -> dict:
    from .gmp.studies import run_banana, run_levy
    from .validation import check_device

    if args.seeds < 1:
        raise InputError(f"--seeds must be >= 1, got {args.seeds}")
    if args.epochs is not None and args.epochs < 1:
        raise InputError(f"--epochs must be >= 1, got {args.epochs}")
    check_device(args.device)
    from .training.run_folder import check_out_dir

    out_dir = check_out_dir(Path(args.out), args.force) if args.out else None
    run = run_levy if args.study == "levy" else run_banana
    kwargs = {"epochs": args.epochs} if args.epochs else {}
    result = run(seeds=args.seeds, out=out_dir, device=args.device,
                 progress=not args.json and sys.stderr.isatty(), **kwargs)
    return {"study": args.study, **result.to_dict()}


def show_gmp(out: dict) -> str:
    """Per method: the test metric over seeds (and the paper's), the stability metric, epochs."""
    seeds = out["seeds"]
    rows = [("method", "lr", f"{out['metric'].replace('_', ' ')} mean ± std", "paper", "stability median",
             "worst seed", "epochs (mean)")]
    for name, m in out["methods"].items():
        paper = "" if m["paper_metric"] is None else f"{m['paper_metric']:.3f}"
        rows.append((name, f"{m['lr']:g}", f"{m['metric_mean']:.3f} ± {m['metric_std']:.3f}",
                     paper, f"{m['stability_median']:.3g}", f"{max(m['stability_values']):.3g}",
                     f"{sum(m['epochs_run']) / len(m['epochs_run']):.0f}"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    table = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    lines = [f"GmP study {out['study']}: {plural(len(seeds), 'seed')}, up to {out['max_epochs']} "
             f"epochs, {out['seconds']:.0f} s",
             f"stability: {out['stability_metric']}", "", *table]
    if out.get("figures"):
        lines += ["", "figures: " + ", ".join(out["figures"])]
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# demo

def cmd_demo(args) -> dict:
    import numpy as np
    import torch

    from .analysis.regions import count_regions, sample_regions
    from .nets.mlp import kaiming_, mlp
    from .nets.parametrize import ConstructionNet
    from .plots import plot_regions
    from .validation import check_device, check_int

    check_int(args.seed, "--seed", low=0)
    d, out_dir = args.depth, Path(args.out)
    if out_dir.exists() and not out_dir.is_dir():
        raise InputError(f"--out {out_dir} exists and is not a folder")
    if not 1 <= d <= 20:
        raise InputError(f"--depth must be between 1 and 20 for the demo, got {d}")
    if args.nets < 1:
        raise InputError(f"--nets must be >= 1, got {args.nets}")
    check_device(args.device)
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
                   help="input interval (default 0,1; for a checkpoint, its own), e.g. "
                        "-1,1 or -pi,pi")
    c.add_argument("--from", dest="segment_from", type=float_list, metavar="X0",
                   help="count an nD model along the segment from X0 (comma-separated, e.g. "
                        "-1,-1) ...")
    c.add_argument("--to", dest="segment_to", type=float_list, metavar="X1", help="... to X1")
    c.add_argument("--box", type=float_list, metavar="X0,X1,Y0,Y1",
                   help="count a 2-input model on this box, exactly (default: its training "
                        "domain); with --through, the box in the plane's coordinates; negative "
                        "values as --box=-1,1,-1,1")
    c.add_argument("--through", nargs=3, metavar="P",
                   help="count on the plane through three input points: comma lists, or row "
                        "numbers of the CSV file given with --data")
    c.add_argument("--data", type=Path, metavar="CSV", help="points for --through")
    c.add_argument("--sample", type=int, metavar="N", help="also run the sampling estimator "
                                                         "on N grid points")
    c.add_argument("--plot", type=Path, metavar="FILE.png", help="save a plot of the output "
                                                                 "with its breakpoints (a plane: "
                                                                 "its region map, .png or .svg)")
    c.add_argument("--pieces", type=Path, metavar="FILE.csv",
                   help="write one row per linear piece: start,end,slope,value_start,value_end "
                        "(with --json also listed in the output)")
    c.add_argument("--json", action="store_true", help="print JSON")
    c.set_defaults(run=cmd_count, show=show_count)

    t = sub.add_parser(
        "train", help="fit width-4 nets to a target or data, many seeds at once",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Two-phase training (or a baseline) on a target or CSV data, all seeds in\n"
                    "one batched computation. Every fit setting (relu_regions.FitConfig) is an\n"
                    f"option below. Depth: 1 to {MAX_DEPTH} for count, train and sweep.",
        epilog="examples:\n  relu-regions train --target 'x**3' --depth 5 --seeds 10 --out run1\n"
               "  relu-regions train --data points.csv --test-fraction 0.2 --interval=-1,1\n"
               "  relu-regions train --resume run1")
    src = t.add_mutually_exclusive_group()
    src.add_argument("--target", metavar="EXPR", help="target in x (or x and y: a 2D fit), "
                     "e.g. 'x**3', 'tanh(3*x)'")
    src.add_argument("--data", type=Path, metavar="CSV", help="x,y samples (x,y,z: a 2D fit) "
                     "instead of a target")
    add_fit_options(t)
    t.add_argument("--out", metavar="DIR", help="write the run folder here: checkpoints, "
                   "metrics.json, pieces.csv, plots")
    t.add_argument("--force", action="store_true", help="replace the run in a non-empty --out "
                   "(the new run is written beside it, then swapped in)")
    t.add_argument("--checkpoint-every", type=int, metavar="N",
                   help="save the training state to --out every N steps (atomic), so a killed "
                        "run can continue with --resume")
    t.add_argument("--resume", metavar="DIR",
                   help="continue the interrupted run in DIR (its settings and data are reused)")
    t.add_argument("--quiet", action="store_true", help="no progress (by default a bar on a "
                   "terminal, else a line to stderr every ~10 s)")
    t.add_argument("--json", action="store_true", help="print JSON (no progress bar)")
    t.set_defaults(run=cmd_train, show=show_train)

    w = sub.add_parser("sweep", help="run a grid of trainings from a TOML file, locally or on Dask",
                       formatter_class=argparse.RawDescriptionHelpFormatter,
                       description="Expand a grid of fit settings x seeds from CONFIG.toml, run "
                                   "the cells in parallel\n(local processes, or a Dask cluster "
                                   "with --scheduler) and gather results.csv,\nsummary.csv, "
                                   "results.json and sweep.png in --out.",
                       epilog=_sweep_keys_help())
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
                                   "command, versions, data hash) and regenerate its plots.",
                       epilog="example: relu-regions report run1   (after relu-regions train "
                              "--target 'x**3' --out run1)")
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
    p.lazy_epilog = _top_epilog
    for name, parser in sub.choices.items():
        if name in EPILOGS:
            parser.lazy_epilog = EPILOGS[name]
        elif name == "train":  # its own examples, then the expression language
            parser.lazy_epilog = _and_language(parser.epilog)
    return p


# Examples for the --help of the commands that do not write their own epilog, and the first
# example of each command for the top-level help; functions, so that building the parser
# imports nothing that only the help text needs.
EXAMPLES = {
    "count": ["relu-regions count --depth 10 --thm31",
              "relu-regions count --depth 4 --a 0.3,0.6,0.4,0.5 --sample 100001 --plot c.png",
              "relu-regions count --checkpoint run1/checkpoints/seed-0000.pt --pieces p.csv",
              "relu-regions count --checkpoint run2d/checkpoints/seed-0000.pt --from -1,-1 "
              "--to 1,1"],
    "train": ["relu-regions train --target 'x**3' --out run1"],
    "sweep": ["relu-regions sweep experiments/sweep_example.toml --out sweep1"],
    "gmp": ["relu-regions gmp levy --seeds 3 --out gmp-levy"],
    "report": ["relu-regions report run1"],
    "demo": ["relu-regions demo --depth 8 --no-train --out demo"],
}


def _examples(name: str) -> str:
    return "example" + ("s" if len(EXAMPLES[name]) > 1 else "") + ":\n" + "\n".join(
        f"  {e}" for e in EXAMPLES[name])


def _language() -> str:
    """targets.HELP wrapped to 88 columns (some commands print their epilog raw)."""
    import textwrap

    from .targets import HELP

    return textwrap.fill(HELP, 88)


def _and_language(text):
    return lambda: (text + "\n\n" if text else "") + _language()


EPILOGS = {"count": lambda: _examples("count") + "\n\n" + _language(),
           "gmp": lambda: _examples("gmp"), "demo": lambda: _examples("demo")}


def _top_epilog() -> str:
    return ("examples:\n" + "\n".join(f"  {EXAMPLES[k][0]}" for k in EXAMPLES)
            + "\n\n'relu-regions COMMAND --help' describes a command.\n\n" + _language())


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
    except OSError as e:  # a path the user named cannot be written (e.g. --out under a file)
        where = f" ({e.filename})" if e.filename else ""
        print(f"relu-regions {args.command}: error: {e.strerror or e}{where}", file=sys.stderr)
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
