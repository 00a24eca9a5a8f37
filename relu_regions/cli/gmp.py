"""``relu-regions gmp``: the Levy or Banana study of Chen & Ge (arXiv 2305.15912), a table of
per-method test metric and stability."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import InputError
from ..gmp import studies  # the module, not its functions: tests replace studies.run_levy
from ..training.run_folder import check_out_dir
from ..validation import check_device, plural
from .common import progress_shown


def run(args: argparse.Namespace) -> dict:
    if args.seeds < 1:
        raise InputError(f"--seeds must be >= 1, got {args.seeds}")
    if args.epochs is not None and args.epochs < 1:
        raise InputError(f"--epochs must be >= 1, got {args.epochs}")
    check_device(args.device)
    out_dir = check_out_dir(Path(args.out), args.force) if args.out else None
    study = studies.run_levy if args.study == "levy" else studies.run_banana
    kwargs = {"epochs": args.epochs} if args.epochs else {}
    result = study(seeds=args.seeds, out=out_dir, device=args.device,
                   progress=progress_shown(args), **kwargs)
    return {"study": args.study, **result.to_dict()}


def show(out: dict) -> str:
    """Per method: the test metric over seeds (and the paper's), the stability metric, epochs."""
    seeds = out["seeds"]
    rows = [("method", "lr", f"{out['metric'].replace('_', ' ')} mean ± std", "paper",
             "stability median", "worst seed", "epochs (mean)")]
    for name, m in out["methods"].items():
        paper = "" if m["paper_metric"] is None else f"{m['paper_metric']:.3f}"
        rows.append((name, f"{m['lr']:g}", f"{m['metric_mean']:.3f} ± {m['metric_std']:.3f}",
                     paper, f"{m['stability_median']:.3g}", f"{max(m['stability_values']):.3g}",
                     f"{sum(m['epochs_run']) / len(m['epochs_run']):.0f}"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    table = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    lines = [f"GmP study {out['study']}: {plural(len(seeds), 'seed')}, up to {out['max_epochs']} "
             f"epochs, {out['seconds']:.0f} s",
             f"stability: {out['stability_metric']}", "", *table]
    if out.get("figures"):
        lines += ["", "figures: " + ", ".join(out["figures"])]
    return "\n".join(lines)

