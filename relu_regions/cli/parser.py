"""The parser of ``relu-regions``: every command's options, help and examples. Torch-free and
light: it imports no command module (``relu_regions.cli.main`` imports the chosen one to run
it), and help text that needs more is computed when the help is shown."""

from __future__ import annotations

import argparse
import textwrap
from pathlib import Path

from .. import __version__
from ..nets.shapes import PEAK_RANGE
from ..training import config
from .common import Parser, add_fit_options, float_list, interval


def build_parser() -> Parser:
    p = Parser(prog="relu-regions",
               description="Deep, narrow ReLU networks that use their depth: the exponential "
                           "construction, exact linear-region counting, two-phase training.")
    p.add_argument("--version", action="version", version=f"relu-regions {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)

    c = sub.add_parser("count", help="count breakpoints, activation regions and linear pieces "
                                     "exactly", description="Count the construction (--depth) "
                       "or a saved model (--checkpoint) exactly, in float64.")
    c.add_argument("--depth", type=int, help="hidden layers of the construction")
    c.add_argument("--a", type=float_list, metavar="A0,A1,..",
                   help="peaks: one per hidden layer, or one for all (default: random in "
                        f"[{PEAK_RANGE[0]}, {PEAK_RANGE[1]}] from --seed)")
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
    c.add_argument("--max-memory", metavar="SIZE",
                   help="a plane count in tiles within this memory, e.g. 2GB or 500MB (the "
                        "grid is chosen from the model's widths; the counts are the untiled "
                        "ones)")
    c.add_argument("--workers", type=int, metavar="N",
                   help="count a plane's tiles on N local processes (this one and N - 1 "
                        "spawned)")
    c.add_argument("--scheduler", metavar="ADDR",
                   help="count a plane's tiles on a Dask cluster, e.g. tcp://host:8786")
    c.add_argument("--tiles", type=int, nargs=2, metavar=("NX", "NY"),
                   help="count a plane on this grid of tiles")
    c.add_argument("--json", action="store_true", help="print JSON")

    t = sub.add_parser(
        "train", help="fit width-4 nets to a target or data, many seeds at once",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Two-phase training (or a baseline) on a target or CSV data, all seeds in\n"
                    "one batched computation. Every fit setting (relu_regions.FitConfig) is an\n"
                    f"option below. Depth: 1 to {config.MAX_DEPTH} for count, train and sweep.",
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

    k = sub.add_parser("track", help="count regions along random segments through data points, "
                                     "for every checkpoint of a run",
                       description="Exact activation regions, linear pieces and decision "
                                   "crossings along --lines random segments (and on --planes "
                                   "random planes) centred at data points, for every checkpoint "
                                   "matching --checkpoints; writes track.csv, track.json, "
                                   "counts.png (counts against the step) and density.png "
                                   "(breakpoints per unit length against the distance from the "
                                   "data) in --out.")
    k.add_argument("--checkpoints", required=True, metavar="GLOB",
                   help="checkpoint files written by relu_regions.checkpoint.save, a quoted "
                        "pattern such as 'ckpts/*.pt'; each one's step is the 'step' of its "
                        "metadata, else the last number in its name, else (if some file has "
                        "neither) its position in name order")
    k.add_argument("--data", required=True, type=Path, metavar="CSV",
                   help="data points: rows of the model's n inputs, or n + 1 columns whose last "
                        "(a target or label) is ignored; a header row is skipped")
    k.add_argument("--lines", type=int, default=100, metavar="N",
                   help="segments, each through another data point (default 100)")
    k.add_argument("--length", type=float, required=True, metavar="L",
                   help="each segment's length in input units, centred at its point (planes: "
                        "squares of side L)")
    k.add_argument("--planes", type=int, default=0, metavar="N",
                   help="also N planes through data points and two random directions "
                        "(default 0)")
    k.add_argument("--seed", type=int, default=0, help="seed of the points and directions "
                                                       "(default 0)")
    k.add_argument("--bins", type=int, default=10, help="distance bins of density.png "
                                                        "(default 10)")
    k.add_argument("--out", default="track-out", metavar="DIR",
                   help="folder for the files (default track-out)")
    k.add_argument("--force", action="store_true", help="allow a non-empty --out")
    k.add_argument("--workers", type=int, metavar="N",
                   help="count the checkpoints on N local processes (default: this process)")
    k.add_argument("--scheduler", metavar="ADDR", help="count them on a Dask cluster, e.g. "
                                                       "tcp://host:8786")
    k.add_argument("--quiet", action="store_true", help="no progress")
    k.add_argument("--json", action="store_true", help="print JSON")

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

    r = sub.add_parser("report", help="summarize a run folder and draw its plots again",
                       description="Print the summary of a `train --out` folder (metrics, "
                                   "command, versions, data hash) and regenerate its plots.",
                       epilog="example: relu-regions report run1   (after relu-regions train "
                              "--target 'x**3' --out run1)")
    r.add_argument("folder", metavar="DIR", help="a folder written by `relu-regions train --out`")
    r.add_argument("--json", action="store_true", help="print JSON")

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
              "--to 1,1",
              "relu-regions count --checkpoint clf.pt --through 0 1 2 --data points.csv "
              "--max-memory 2GB --workers 2"],
    "train": ["relu-regions train --target 'x**3' --out run1"],
    "sweep": ["relu-regions sweep experiments/sweep_example.toml --out sweep1"],
    "track": ["relu-regions track --checkpoints 'ckpts/*.pt' --data test.csv --lines 100 "
              "--length 0.5",
              "relu-regions track --checkpoints 'ckpts/*.pt' --data test.csv --length 0.5 "
              "--planes 10 --workers 2 --out track1 --json"],
    "gmp": ["relu-regions gmp levy --seeds 3 --out gmp-levy"],
    "report": ["relu-regions report run1"],
    "demo": ["relu-regions demo --depth 8 --no-train --out demo"],
}


def _examples(name: str) -> str:
    return "example" + ("s" if len(EXAMPLES[name]) > 1 else "") + ":\n" + "\n".join(
        f"  {e}" for e in EXAMPLES[name])


def _language() -> str:
    """targets.HELP wrapped to 88 columns (some commands print their epilog raw)."""
    from ..targets import HELP

    return textwrap.fill(HELP, 88)


def _and_language(text):
    return lambda: (text + "\n\n" if text else "") + _language()


EPILOGS = {"count": lambda: _examples("count") + "\n\n" + _language(),
           "gmp": lambda: _examples("gmp"), "demo": lambda: _examples("demo"),
           "track": lambda: _examples("track")}


def _top_epilog() -> str:
    return ("examples:\n" + "\n".join(f"  {EXAMPLES[k][0]}" for k in EXAMPLES)
            + "\n\n'relu-regions COMMAND --help' describes a command.\n\n" + _language())


def _sweep_keys_help() -> str:
    """The TOML keys: every FitConfig field, a list making it an axis (docs/sweeps.md)."""
    names = [f.name for f in config.fields() if f.metadata.get("sweep", True)]
    keys = textwrap.fill(", ".join(names), 88, initial_indent="  ", subsequent_indent="  ")
    return ("TOML keys: every fit setting under its own name (see `train --help`);\na list "
            "makes it an axis of the grid:\n" + keys + "\n  targets, depths, methods: older "
            "spellings of the target, depth and method axes\n  seeds: a count (0..N-1) or a "
            "list (required, with target)\n\nexample (docs/sweeps.md):\n"
            '  targets = ["x**3", "sin(3*x)"]\n  depths = [3, 4]\n  shape = ["convex", "dc"]\n'
            '  seeds = 2\n  phase2 = "lm:40"\n\n'
            "  relu-regions sweep experiments/sweep_example.toml --out runs/sweep")

