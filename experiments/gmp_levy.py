"""Levy 1D regression under SP / WN / BN / GmP (Chen & Ge, arXiv:2305.15912, Section 4.1, Fig. 2).

Runs two variants and prints their markdown tables (StudyResult.to_markdown) beside the paper's
numbers:
  1. the paper's training set (data_seed=0, the notebook's numpy draw) with --seeds inits;
  2. a fresh data set per seed (data_seed=None), to show how much the data draw matters.
Figures of variant 1 go to --out (default docs/figures/).

    python experiments/gmp_levy.py                 # full study (10 seeds, up to 10k epochs)
    python experiments/gmp_levy.py --epochs 200    # quick look
"""

from __future__ import annotations

import argparse
import json
import sys

from relu_regions.atomic import atomic_write_text
from relu_regions.gmp.studies import run_levy


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=int, default=10)
    p.add_argument("--epochs", type=int, default=10_000)
    p.add_argument("--out", default="docs/figures")
    p.add_argument("--json", default=None, help="also write both results as JSON here")
    p.add_argument("--skip-fresh-data", action="store_true", help="run only the paper-data variant")
    args = p.parse_args(argv)

    paper = run_levy(seeds=args.seeds, epochs=args.epochs, out=args.out, progress=True, data_seed=0)
    print(paper.to_markdown("Levy, the paper's training set (data_seed=0)"))
    print("\nfigures:", ", ".join(paper.figures))
    results = {"paper_data": paper.to_dict()}
    if not args.skip_fresh_data:
        fresh = run_levy(seeds=args.seeds, epochs=args.epochs, progress=True, data_seed=None)
        print()
        print(fresh.to_markdown("Levy, a new training set per seed (data_seed=None)"))
        results["fresh_data"] = fresh.to_dict()
    if args.json:
        atomic_write_text(args.json, json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
