"""Depth-dependent defaults: the settings ``fit`` uses when the user leaves them unset.

One pure function, so the choice is in one place and testable without training. The numbers
behind every branch are in docs/training.md ("Defaults", "Growth, the warp layer and the
polish"; the probes in docs/research-log.md); measured with
``experiments/depth.py`` (x^3, x^11 and exp(2x)/8, width 4, error integrated exactly on the net's
pieces).
"""

from __future__ import annotations

from ..validation import plural

# Up to depth GROW_ABOVE direct training was best (direct depth 6 beat depth 5 grown by one
# layer); deeper, growing from GROW_FROM (train there, then insert one construction layer at a
# time) beat direct training and growing from depth 5 (docs/training.md, "Growth").
GROW_FROM = 6
GROW_ABOVE = 6
# Samples per possible piece: a continuous PL function with n pieces interpolates at most ~2n
# samples of a convex function, so 4 per possible piece keeps even 2^d pieces from interpolating.
POINTS_PER_PIECE = 4
# The warp layer (growth.insert_warp) replaces the first fold of a growth that adds at least
# this many layers: it won at depths 9 and 10, while at depth 8 (one fold left) it lost on
# fit's own point count, so that short a growth folds only (docs/training.md, "The warp layer").
WARP_MIN_ADDED = 3
MIN_POINTS = 500  # the library's dense default (targets.dense)
# fit's optimum column (the best fit of the training data with as many pieces as the net can
# have): from this many pieces on it is the curvature start refined once, without the dynamic-
# programming start (work pieces * n^2) and the restarts, which took minutes from depth 8 on
# and found the same MSE on x^3 (docs/training.md, "The optimum column").
QUICK_OPTIMUM_PIECES = 256
# Above this many pieces (depth 15 and deeper) the column is skipped, with a note. The banded
# knot search is linear in pieces and points, 0.55 s here on 65,536 points (docs/training.md,
# "The optimum column"); deeper, 4 points per possible piece reach 2^28 at depth 26.
MAX_OPTIMUM_PIECES = 16384
TWO_PHASE = ("pretrain", "pretrain-thm31")
# methods whose nets are the width-4 construction (skip: its layout, with random weights)
CONSTRUCTION_METHODS = (*TWO_PHASE, "skip")


def auto_points(depth: int) -> int:
    """Dense training points for a 1D target at this depth: max(500, 4 * 2^depth)."""
    return max(MIN_POINTS, POINTS_PER_PIECE * 2**depth)


def auto_settings(depth: int, method: str = "pretrain-thm31", single: bool = True,
                  dims: int = 1) -> dict:
    """Settings for ``fit`` at ``depth`` that the caller did not choose: a dict with any of
    ``grow_from`` (train at that depth first, then grow) and ``points`` (dense 1D data).

    ``single``: the layout is one construction (convex or concave; growth needs that);
    ``dims``: input dimensions. Only two-phase methods grow; the baselines keep their protocol.
    """
    out = {}
    if dims == 1:
        out["points"] = auto_points(depth)
    if method in TWO_PHASE and single and dims == 1 and depth > GROW_ABOVE:
        out["grow_from"] = GROW_FROM
    return out


def use_warp(depth: int, grow_from: int, warp: bool = True, dims: int = 1) -> bool:
    """Whether a growth from ``grow_from`` to ``depth`` starts with the warp layer: when the
    ``warp`` setting allows it, the input is 1D, and at least WARP_MIN_ADDED layers are added."""
    return bool(warp) and dims == 1 and depth - grow_from >= WARP_MIN_ADDED


def describe_training(training: dict, depth: int, points: bool = True) -> str:
    """:attr:`FitResult.training` in words: '2048 training points; 16 starts per seed; grown from
    depth 6 (a warp layer, then 2 folds; the best paths polished for 400 steps)' (``points=False``:
    without the first part)."""
    parts = []
    if points and training.get("points"):
        parts.append(f"{training['points']} training points")
    if training.get("starts"):
        parts.append(f"{plural(training['starts'], 'start')} per seed")
    grow_from = training.get("grow_from")
    if grow_from is not None and grow_from < depth:
        folds = depth - grow_from - bool(training.get("warp"))
        kind = ("a warp layer, then " if training.get("warp") else "") + plural(folds, "fold")
        if training.get("polish"):
            kind += f"; the best paths polished for {plural(training['polish'], 'step')}"
        parts.append(f"grown from depth {grow_from} ({kind})")
    return "; ".join(parts)
