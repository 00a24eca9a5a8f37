"""Hand-built near-degenerate nets with exact answers: every tolerance of the counter, pinned.

Each constant of ``relu_regions.analysis.regions`` is a trade between two failures: too tight and
rounding noise splits a piece into slivers, too loose and real pieces vanish. Every case below has
an answer known exactly (by construction, and checked against the rational reference), and each
constant has a case on each side, so a constant moved by orders of magnitude fails a test here
(``tools/mutation.py --constants`` moves each one and lists the tests that catch it):

=================  ==================================================  ==========================
constant           too loose (real pieces vanish)                      too tight (noise splits)
=================  ==================================================  ==========================
ZERO_TOL           layer-2 crossing 1e-7 / 1e-10 from a layer-1 switch  a neuron touching zero
INTERP_ULPS        two crossings 1e-10 / 1e-13 apart, in one layer      a switch shared by two units
MERGE_ULPS         two crossings 1e-10 / 1e-13 apart                    (the same)
SLOPE_TOL          a knot whose slope changes by 1e-9 of itself         a knot only up to rounding
RESOLUTION_ULPS    a region 1e-13 wide is resolved                      one of ~30 ulps is not
=================  ==================================================  ==========================
"""

from fractions import Fraction

import numpy as np
import pytest
import torch
from exact_reference import exact_count
from torch import nn

from relu_regions.analysis import regions
from relu_regions.analysis.regions import count_regions, count_regions_segment
from relu_regions.errors import InputError

EPS_SLOPE = 2.0**-20  # a small slope next to O(1) values: slivers of noise / slope are wide


def net(*layers):
    """A Linear/ReLU stack with these exact float64 (W, b)."""
    mods = []
    for w, b in layers:
        w, b = torch.tensor(w, dtype=torch.float64), torch.tensor(b, dtype=torch.float64)
        lin = nn.Linear(w.shape[1], w.shape[0], dtype=torch.float64)
        with torch.no_grad():
            lin.weight.copy_(w)
            lin.bias.copy_(b)
        mods += [lin, nn.ReLU()]
    return nn.Sequential(*mods[:-1])


def assert_exact(model, lo, hi, r=None):
    """The counter agrees with the rational reference: counts, positions and slopes."""
    r = r or count_regions(model, lo, hi)
    breakpoints, regions, pieces, knots, slopes = exact_count(model, lo, hi)
    assert (r.activation_regions, r.linear_pieces) == (regions, pieces)
    scale = max(abs(lo), abs(hi), hi - lo)
    np.testing.assert_allclose(r.breakpoints, np.array(breakpoints, dtype=float),
                               rtol=0, atol=8 * np.spacing(scale))
    np.testing.assert_allclose(r.knots, np.array(knots, dtype=float), rtol=0,
                               atol=8 * np.spacing(scale))
    exact = np.array(slopes, dtype=float)
    np.testing.assert_allclose(r.slopes, exact, rtol=1e-12, atol=0)
    return r


# ---------------------------------------------------------------------------------------------
# Too loose: real pieces narrower than the tolerance would vanish

@pytest.mark.parametrize("gap", [1e-7, 1e-10, 1e-13])
def test_two_crossings_in_one_layer_gap_apart(gap):
    """u1 = relu(x - 1/2), u2 = relu(1/2 + gap - x) switch gap apart; the next layer passes both
    on and adds relu(u2 - gap/2), which switches halfway between. Slopes -3, -2, -1, 1.

    At u1's crossing u2 is about gap: a too-large INTERP_ULPS zeroes it there, and the next
    layer's crossing moves to the wrong side of 1/2; a too-large MERGE_ULPS drops u2's crossing.
    """
    model = net(([[1.0], [-1.0]], [-0.5, 0.5 + gap]),
                ([[1.0, 0.0], [0.0, 1.0], [0.0, 1.0]], [0.0, 0.0, -gap / 2]),
                ([[1.0, 2.0, 1.0]], [0.0]))
    r = assert_exact(model, 0, 1)
    assert r.activation_regions == r.linear_pieces == 4
    np.testing.assert_allclose(r.slopes, [-3, -2, -1, 1], rtol=1e-12, atol=0)
    width = float(Fraction(0.5 + gap) - Fraction(0.5)) / 2  # the float bias's own gap, halved
    assert r.min_region_width == pytest.approx(width, rel=1e-2)
    assert r.min_piece_width == r.min_region_width
    assert r.snapped == 0 and r.resolved


@pytest.mark.parametrize("hi", [1.0, 1.9])
@pytest.mark.parametrize("ulps", [100, 200])
def test_a_resolved_region_has_its_true_slope(hi, ulps):
    """Bug found here: on [0, 1.9] a region 100 ulps wide is resolved (64 ulps of the scale), but
    the interpolation zeroing (64 eps of the parent interval) set the second unit to 0 at the
    first crossing and masked it off in between: slope 0 instead of -1."""
    gap = ulps * np.spacing(1.0)
    model = net(([[1.0], [-1.0]], [-0.5, 0.5 + gap]), ([[1.0, 2.0]], [0.0]))
    r = assert_exact(model, 0, hi)
    assert r.resolved and r.activation_regions == 3
    np.testing.assert_array_equal(r.slopes, [-2, -1, 1])


@pytest.mark.parametrize("gap", [1e-7, 1e-10])
def test_second_layer_crossing_gap_after_a_first_layer_switch(gap):
    """z2 = relu(x) + relu(1) - (1 + gap) crosses at gap; at x = 0 it is -gap next to terms of
    size 1. A ZERO_TOL above ~gap / 2 snaps it to 0 there and the region (0, gap) vanishes."""
    model = net(([[1.0], [0.0]], [0.0, 1.0]), ([[1.0, 1.0], [1.0, 0.0]], [-(1.0 + gap), 0.0]),
                ([[1.0, 1.0]], [0.0]))
    r = assert_exact(model, -0.5, 1)
    assert r.activation_regions == r.linear_pieces == 3
    np.testing.assert_allclose(r.slopes, [0, 1, 2], rtol=1e-12, atol=0)
    assert r.snapped == 0 and r.resolved


@pytest.mark.parametrize("scale", [1.0, 1000.0])
def test_a_crossing_within_zero_tol_is_snapped_and_reported(scale):
    """The same net with gap 1e-13 < ZERO_TOL * 2: float64 cannot tell that crossing from
    rounding (docs of regions.py), so it is merged into the switch at 0 and counted in
    ``snapped`` — the reference's third region is reported, not hidden. The tolerance is
    relative: scaling the layer by 1000 changes nothing."""
    gap = 1e-13
    model = net(([[1.0], [0.0]], [0.0, 1.0]),
                ([[scale, scale], [1.0, 0.0]], [-scale * (1.0 + gap), 0.0]),
                ([[1.0 / scale, 1.0]], [0.0]))
    assert exact_count(model, -0.5, 1)[1] == 3
    r = count_regions(model, -0.5, 1)
    assert (r.activation_regions, r.snapped) == (2, 1)
    # A ZERO_TOL 100 times tighter resolves it: the snapping is what merged it.
    assert_exact(model, -0.5, 1, count_regions(model, -0.5, 1, zero_tol=regions.ZERO_TOL / 100))


def test_a_unit_that_reaches_zero_at_the_end_is_not_snapped():
    """relu(relu(x) - 1) on [-1, 1] is 0 throughout, its pre-activation exactly 0 at x = 1 after
    -1 at x = 0: no sign change was removed there, so nothing is reported as snapped."""
    model = net(([[1.0]], [0.0]), ([[1.0]], [-1.0]), ([[1.0]], [0.0]))
    r = assert_exact(model, -1, 1)
    assert (r.activation_regions, r.linear_pieces, r.snapped) == (2, 1, 0)


def test_a_knot_that_changes_the_slope_by_1e_9_of_itself():
    """relu(x - 1/4) + 1e-9 relu(x - 1/2): slopes 0, 1, 1 + 1e-9. A SLOPE_TOL above 1e-9 merges
    the last two pieces."""
    model = net(([[1.0], [1.0]], [-0.25, -0.5]), ([[1.0, 1e-9]], [0.0]))
    r = assert_exact(model, 0, 1)
    assert r.linear_pieces == 3 and np.array_equal(r.knots, [0.25, 0.5])


def test_a_region_1e_13_wide_is_resolved_one_of_30_ulps_is_not():
    """``resolved`` says whether the narrowest region is wider than RESOLUTION_ULPS ulps of the
    interval's scale (64 ulps of 1 = 1.4e-14)."""
    ulp = np.spacing(1.0)
    wide = net(([[1.0], [-1.0]], [-0.5, 0.5 + 1e-13]), ([[1.0, 2.0]], [0.0]))
    assert count_regions(wide, 0, 1).resolved
    narrow = net(([[1.0], [-1.0]], [-0.5, 0.5 + 30 * ulp]), ([[1.0, 2.0]], [0.0]))
    r = assert_exact(narrow, 0, 1)
    assert r.activation_regions == 3 and r.min_region_width == pytest.approx(30 * ulp, rel=0.1)
    assert not r.resolved


# ---------------------------------------------------------------------------------------------
# Too tight: rounding noise would split a piece

def test_a_neuron_touching_zero_next_to_large_terms_is_not_split():
    """z2 = 2^-20 (relu(x - c) + relu(c - x)) + relu(0.7 x + 1) - relu(a2 x + 1) - 2^-21 c, with
    0.7 - a2 = 2^-21 exactly: z2 = 2^-20 (|x - c| + (x - c) / 2) >= 0, zero only at c = 3/8.

    At c the two O(1) terms are interpolated with rounding, so z2 comes out about -1e-16 instead
    of 0; its slopes are ~1e-6, so without ZERO_TOL that noise is two crossings ~1e-10 from c,
    two slivers the reference does not have.
    """
    c, a = 0.375, 0.7
    a2 = a - 0.5 * EPS_SLOPE
    assert Fraction(a) - Fraction(a2) == Fraction(EPS_SLOPE) / 2
    model = net(([[1.0], [-1.0], [a], [a2]], [-c, c, 1.0, 1.0]),
                ([[EPS_SLOPE, EPS_SLOPE, 1.0, -1.0]], [-0.5 * EPS_SLOPE * c]), ([[1.0]], [0.0]))
    r = assert_exact(model, -0.6, 0.9)
    assert r.activation_regions == r.linear_pieces == 2 and r.resolved


@pytest.mark.parametrize("lo, hi", [(-0.7, 0.9), (-0.1, 0.9)])  # |z(lo)| above, below |z(hi)|
def test_a_switch_shared_by_two_units_stays_one_point(lo, hi):
    """relu(x - c) and relu(3 (c - x)) switch at c = 3/8 exactly, but their crossings are computed
    a few ulps apart. The second layer, relu(2^-20 u1 - u2), sees at the first crossing the second
    unit's interpolated value: a rounding residue that INTERP_ULPS must zero (and MERGE_ULPS must
    merge the two crossings), else it is a crossing ~1e-10 away and a sliver region."""
    c = 0.375
    model = net(([[1.0], [-3.0]], [-c, 3 * c]), ([[EPS_SLOPE, -1.0]], [0.0]), ([[1.0]], [0.0]))
    r = assert_exact(model, lo, hi)
    assert r.activation_regions == 2 and r.resolved


def test_slopes_equal_up_to_rounding_are_one_piece():
    """0.7 relu(0.62 (x-1)) + 0.7 relu(0.37 (x-1)) - 0.7 relu(0.99 (1-x)) is the line
    0.693 (x - 1) (0.62 + 0.37 = 0.99 exactly in float64), but the two sides' slopes are summed
    differently and differ in the last bit: SLOPE_TOL must call them one piece."""
    a, b, k = 0.62, 0.37, 0.7
    assert Fraction(a) + Fraction(b) == Fraction(a + b)
    assert k * a + k * b != k * (a + b)  # the rounding this case is about
    model = net(([[a], [b], [-(a + b)]], [-a, -b, a + b]), ([[k, k, -k]], [0.0]))
    r = assert_exact(model, 0, 2)
    assert (r.activation_regions, r.linear_pieces) == (2, 1)


# ---------------------------------------------------------------------------------------------
# Positions along a segment

def test_segment_positions_and_slopes_are_in_t():
    """Along x0 + t (x1 - x0) the counter reports t, and dy/dt: a 2D net relu(x + y - 1) on the
    segment (0, 0) -> (2, 1) switches at t = 1/3 with dy/dt 0 then 3."""
    model = net(([[1.0, 1.0]], [-1.0]), ([[1.0]], [0.0]))
    r = count_regions_segment(model, [0.0, 0.0], [2.0, 1.0])
    np.testing.assert_allclose(r.breakpoints, [1 / 3], rtol=0, atol=1e-16)
    np.testing.assert_allclose(r.slopes, [0.0, 3.0], rtol=1e-15, atol=0)
    assert (r.lo, r.hi) == (0.0, 1.0)


# ---------------------------------------------------------------------------------------------
# The reported fields

def test_summary_fields_and_convexity_of_a_hand_built_net():
    """relu(x) + relu(x - 1)/2 - relu(x - 2)/4 on [-1, 3]: slopes 0, 1, 1.5, 1.25; the jumps
    +1, +0.5, -0.25 are two convex knots (one of them smaller than 1) and one concave."""
    model = net(([[1.0], [1.0], [1.0]], [0.0, -1.0, -2.0]), ([[1.0, 0.5, -0.25]], [0.0]))
    r = assert_exact(model, -1, 3)
    np.testing.assert_array_equal(r.slopes, [0, 1, 1.5, 1.25])
    rep = r.convexity()
    assert (rep.convex_knots, rep.concave_knots, rep.is_convex, rep.is_concave) == (2, 1, False,
                                                                                    False)
    d = r.to_dict()
    assert (d["breakpoints"], d["knots"], d["activation_regions"], d["linear_pieces"]) == \
        (3, 3, 4, 4)
    assert "breakpoint_list" not in d  # arrays only on request
    full = r.to_dict(arrays=True)
    assert full["breakpoint_list"] == full["knot_list"] == [0.0, 1.0, 2.0]
    assert full["slope_list"] == [0.0, 1.0, 1.5, 1.25]
    assert (d["lo"], d["hi"], d["min_piece_width"], d["min_region_width"]) == (-1.0, 3.0, 1.0,
                                                                                1.0)


def test_a_model_with_several_inputs_is_sent_to_the_segment_counter():
    model = net(([[1.0, 2.0], [0.5, -1.0], [1.0, 1.0]], [0.0, 0.1, 0.2]),
                ([[1.0, 1.0, 1.0]], [0.0]))
    with pytest.raises(InputError, match="takes 2 inputs; count it along a segment"):
        count_regions(model, 0, 1)


def test_the_reported_arrays_grow_past_their_first_capacity():
    """The breakpoint/knot/slope buffers start at 2^23 values (counts of 2^23 pieces and more
    outgrow them); a small start exercises the growth."""
    buf = regions._Buffer()
    buf.data = np.empty(2)
    buf.append(np.arange(5.0))
    buf.tail(4)[:3] = [7.0, 8.0, 9.0]
    buf.size += 3
    np.testing.assert_array_equal(buf.array(), [0, 1, 2, 3, 4, 7, 8, 9])


def test_chunk_boundaries_inside_a_piece_add_no_knot():
    """Six switches at 0.1 .. 0.6 of which only the first and last bend the output (weights -1,
    0, 0, 0, 0, 2, passed through a second layer). Counted in chunks of 4 points, the chunks meet
    at switches inside the piece (slope -1, summed from magnitude 1): no knot there."""
    eye = np.eye(6).tolist()
    model = net(([[1.0]] * 6, [-0.1 * k for k in range(1, 7)]), (eye, [0.0] * 6),
                ([[-1.0, 0.0, 0.0, 0.0, 0.0, 2.0]], [0.0]))
    whole = assert_exact(model, 0, 1)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(regions, "CHUNK", 4)
        chunked = assert_exact(model, 0, 1)
    assert (whole.activation_regions, whole.linear_pieces) == (7, 3)
    assert chunked.to_dict() == whole.to_dict()


def test_the_last_piece_can_be_the_narrowest():
    """relu(x - 0.9) on [0, 1]: pieces 0.9 and 0.1 wide; the last one sets min_piece_width."""
    model = net(([[1.0]], [-0.9]), ([[1.0]], [0.0]))
    r = assert_exact(model, 0, 1)
    assert r.min_piece_width == pytest.approx(0.1, rel=1e-12)
    assert r.min_region_width == pytest.approx(0.1, rel=1e-12)


def test_the_row_wise_product_of_wide_layers_sums_each_unit_in_input_order():
    """Wide layers (WIDE_INPUTS inputs or more) sum W h input by input into a row of all units;
    each unit's sum must be the one the unit-by-unit loop gives, bit for bit (no fused or
    reordered additions), so a count does not depend on the layer's width."""
    from relu_regions.analysis.regions import WIDE_INPUTS, _times, _wide

    rng = np.random.default_rng(0)
    w = rng.standard_normal((37, WIDE_INPUTS + 5))
    h = rng.standard_normal(w.shape[1]) * 10.0 ** rng.integers(-8, 8, w.shape[1])
    wide, wt, out = _wide(w)
    assert wide and not _wide(w[:, :WIDE_INPUTS - 1])[0]
    _times(h, wt, out)
    for c in range(w.shape[0]):
        total = 0.0
        for j in range(w.shape[1]):
            total += h[j] * w[c, j]
        assert out[c] == total
