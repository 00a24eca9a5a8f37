"""Tests for relu_regions.targets: the safe parser (maths and security) and the data sets."""

import math
import time

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from relu_regions.errors import InputError
from relu_regions.targets import Dataset, dense, from_csv, parse_target, sparse

RNG_POINTS = np.random.default_rng(12345).uniform(-3.0, 3.0, 200)

# ---------------------------------------------------------------------------------------------
# The parser computes exactly what numpy computes

VALID = [
    ("x", lambda x: x),
    ("x**3", lambda x: x**3),
    ("x**11", lambda x: x**11),
    ("-x**2", lambda x: -(x**2)),
    ("(-x)**2", lambda x: (-x) ** 2),
    ("2**-1*x", lambda x: 0.5 * x),
    ("x**2**3", lambda x: x**8),  # ** is right-associative
    ("x**-2", lambda x: x**-2.0),
    ("sin(x)", np.sin),
    ("tanh(3*x)", lambda x: np.tanh(3 * x)),
    ("x**3 - x", lambda x: x**3 - x),
    ("1/(1+x**2)", lambda x: 1 / (1 + x**2)),
    ("exp(-x**2/2)/sqrt(2*pi)", lambda x: np.exp(-(x**2) / 2) / np.sqrt(2 * np.pi)),
    ("e**x", lambda x: np.e**x),
    ("log1p(abs(x))", lambda x: np.log1p(np.abs(x))),
    ("maximum(x, 0)", lambda x: np.maximum(x, 0)),
    ("minimum(sin(x), cos(x))", lambda x: np.minimum(np.sin(x), np.cos(x))),
    ("hypot(x, 1)", lambda x: np.hypot(x, 1)),
    ("arctan2(x, 2)", lambda x: np.arctan2(x, 2)),
    ("sign(x)*sqrt(abs(x))", lambda x: np.sign(x) * np.sqrt(np.abs(x))),
    ("cbrt(x) + floor(x) - ceil(x)", lambda x: np.cbrt(x) + np.floor(x) - np.ceil(x)),
    ("+x - -x", lambda x: x + x),
    ("3", lambda x: np.full_like(x, 3.0)),
    ("1e-3*x", lambda x: 1e-3 * x),
    ("sinh(x) - cosh(x) + arcsinh(x)", lambda x: np.sinh(x) - np.cosh(x) + np.arcsinh(x)),
    ("expm1(x) + square(x) + exp2(x)", lambda x: np.expm1(x) + np.square(x) + np.exp2(x)),
    ("arctan(x) + tan(x/4)", lambda x: np.arctan(x) + np.tan(x / 4)),
    ("  x * 2  ", lambda x: 2 * x),
    ("sin(12*x) + x", lambda x: np.sin(12 * x) + x),
    (("(1 + x)" + " * (1 + x)" * 20), lambda x: (1 + x) ** 21),
]


@pytest.mark.parametrize("text,ref", VALID, ids=[t for t, _ in VALID])
def test_parser_matches_numpy(text, ref):
    f = parse_target(text)
    np.testing.assert_allclose(f(RNG_POINTS), ref(RNG_POINTS), rtol=1e-12, atol=1e-300)
    assert f.text == text.strip()
    assert f(RNG_POINTS).dtype == np.float64


def test_domain_limited_functions_on_their_domain():
    x = np.linspace(0.1, 0.9, 50)
    cases = [
        ("x**0.5", np.sqrt),
        ("log(x) + log2(x) + log10(x)", lambda x: np.log(x) + np.log2(x) + np.log10(x)),
        ("arcsin(x) + arccos(x)", lambda x: np.arcsin(x) + np.arccos(x)),
        ("arctanh(x) + arccosh(1 + x)", lambda x: np.arctanh(x) + np.arccosh(1 + x)),
    ]
    for text, ref in cases:
        np.testing.assert_allclose(parse_target(text)(x), ref(x), rtol=1e-12)


def test_call_preserves_shape_and_accepts_lists():
    f = parse_target("x**2 + 1")
    assert f(np.zeros((3, 4))).shape == (3, 4)
    np.testing.assert_array_equal(f([1.0, 2.0]), [2.0, 5.0])
    assert parse_target(f) is f
    assert parse_target("x\t+ 1\n")(2.0) == 3.0  # surrounding / tab whitespace is fine
    with pytest.raises(InputError, match="must be numbers"):
        f(["a"])


# Random expression trees: (text, numpy reference) built side by side. Constants stay numpy
# scalars in the reference, as in the parser, so both run the very same ufunc calls.
_leaf = st.one_of(
    st.just(("x", lambda x: x)),
    st.floats(0.0, 10.0, allow_nan=False).map(lambda v: (repr(v), lambda x, v=v: np.float64(v))),
    st.just(("pi", lambda x: np.float64(np.pi))),
)
_unary_fns = ["sin", "cos", "tanh", "arctan", "exp", "abs", "sqrt", "log1p", "expm1"]


def _extend(children):
    def unary(pair):
        (t, f), name = pair
        g = getattr(np, name)
        return f"{name}({t})", lambda x: g(f(x))

    def binary(triple):
        (ta, fa), op, (tb, fb) = triple
        ufunc = {"+": np.add, "-": np.subtract, "*": np.multiply, "/": np.divide}[op]
        return f"({ta}) {op} ({tb})", lambda x: ufunc(fa(x), fb(x))

    def power(pair):
        (t, f), k = pair
        return f"({t})**{k}", lambda x: np.power(f(x), np.float64(k))

    return st.one_of(
        st.tuples(children, st.sampled_from(_unary_fns)).map(unary),
        st.tuples(children, st.sampled_from("+-*/"), children).map(binary),
        st.tuples(children, st.integers(-3, 4)).map(power),
        children.map(lambda p: (f"-({p[0]})", lambda x, f=p[1]: np.negative(f(x)))),
    )


@settings(max_examples=150, deadline=None)
@given(st.recursive(_leaf, _extend, max_leaves=12))
def test_random_expressions_match_numpy(pair):
    text, ref = pair
    if len(text) > 500:
        return
    f = parse_target(text)
    with np.errstate(all="ignore"):
        expected = np.broadcast_to(ref(RNG_POINTS), RNG_POINTS.shape)
    if np.isfinite(expected).all():
        np.testing.assert_array_equal(f(RNG_POINTS), expected)
    else:
        with pytest.raises(InputError, match="not finite at x="):
            f(RNG_POINTS)


# ---------------------------------------------------------------------------------------------
# Everything else is refused, before anything runs

MALICIOUS = [
    "__import__('os').system('touch {sentinel}')",
    "__import__",
    "exec(\"open('{sentinel}', 'w')\")",
    "eval(\"open('{sentinel}', 'w')\")",
    "open('{sentinel}', 'w')",
    "compile('1', 'f', 'eval')",
    "globals()",
    "x.__class__",
    "x.real",
    "sin.__globals__",
    "().__class__.__bases__[0].__subclasses__()",
    "np.sin(x)",
    "numpy.sin(x)",
    "[c for c in range(10)]",
    "{c: c for c in range(3)}",
    "(c for c in range(3))",
    "lambda: 0",
    "lambda x: x",
    "x[0]",
    "x[::-1]",
    "'abc'",
    "b'abc'",
    "f'{x}'",
    "None",
    "True * x",
    "...",
    "1j * x",
    "z",
    "X",
    "sin",
    "sin(x, x)",
    "sin()",
    "maximum(x)",
    "sin(x=1)",
    "sin(*[x])",
    "abs(**{})",
    "print(x)",
    "getattr(x, 'real')",
    "x if x else 1",
    "x < 1",
    "x and 1",
    "not x",
    "~x",
    "x % 2",
    "x // 2",
    "x @ x",
    "x << 2",
    "x ^ 2",
    "(x := 2)",
    "x, x",
    "[x]",
    "{x}",
    "x = 1",
    "import os",
    "x; x",
    "x +",
    "sin(x",
    "",
    "   ",
    "\t\n",
    "x\x00",
    "x**10**10",
    "9**9**9**9",
    "10**1000000",
    "(2**64)**(2**64)",
    "x**1001",
    "x**-1001",
    "x**x**x",
    "2**(x**2)",
    "1" + "0" * 400 + " * x",
    "1e999 * x",
    "-" * 400 + "x",
    "sin(" * 40 + "x" + ")" * 40,
    "x" + " + x" * 200,  # 801 characters
]


@pytest.mark.parametrize("text", MALICIOUS)
def test_malicious_or_invalid_is_rejected(text, tmp_path):
    sentinel = tmp_path / "sentinel"
    start = time.perf_counter()
    with pytest.raises(InputError) as info:
        parse_target(text.replace("{sentinel}", str(sentinel)))
    assert time.perf_counter() - start < 1.0  # no hang on power towers or deep nesting
    assert not sentinel.exists()  # nothing was executed
    assert "\n" not in str(info.value)  # one-line message
    assert len(str(info.value)) < 400


def test_rejections_name_the_offending_piece():
    cases = {
        "x.real": "x.real",
        "z + 1": "'z'",
        "foo(x)": "'foo'",
        "sin(x=1)": "keyword",
        "x**10**10": "exponent 1e+10",
        "x**x**x": "power tower",
        "x % 2": "x % 2",
        "x" + " + x" * 200: "characters",
        "-" * 100 + "x": "nested deeper",
    }
    for text, fragment in cases.items():
        with pytest.raises(InputError, match=None) as info:
            parse_target(text)
        assert fragment in str(info.value), (text, str(info.value))


@pytest.mark.parametrize("bad", [None, 3, 3.5, b"x", ["x"]])
def test_non_string_target_rejected(bad):
    with pytest.raises(InputError, match="must be a string"):
        parse_target(bad)


def test_not_finite_names_the_point():
    f = parse_target("1/(1+x)")
    with pytest.raises(InputError, match=r"not finite at x=-1\.0"):
        f(np.linspace(-2.0, 0.0, 3))
    with pytest.raises(InputError, match=r"at x=-1\.0"):
        dense("1/(1+x)", (-2.0, 0.0), points=3)
    with pytest.raises(InputError, match=r"at x=0\.0"):
        dense("log(x)", (0.0, 1.0))
    with pytest.raises(InputError, match="not finite"):
        dense("sqrt(x)", (-1.0, 0.0))
    with pytest.raises(InputError, match="not finite"):
        dense("exp(exp(exp(x)))", (0.0, 10.0))
    assert isinstance(InputError("x"), ValueError)


# ---------------------------------------------------------------------------------------------
# Dense and sparse data


def test_dense_is_linspace_and_test_equals_train():
    d = dense("x**3", points=500)
    assert isinstance(d, Dataset)
    np.testing.assert_array_equal(d.x, np.linspace(0.0, 1.0, 500))
    np.testing.assert_array_equal(d.y, d.x**3)
    np.testing.assert_array_equal(d.test_x, d.x)
    np.testing.assert_array_equal(d.test_y, d.y)
    assert d.interval == (0.0, 1.0) and d.name == "x**3"
    assert d.x.dtype == d.y.dtype == np.float64
    assert set(d.to_dict()) == {"name", "interval", "x", "y", "test_x", "test_y"}


@pytest.mark.parametrize("interval", [(1.0, 0.0), (0.0, 0.0), (0.0, math.inf), (math.nan, 1.0),
                                      (0.0,), (0.0, 1.0, 2.0), "ab", None, ("a", 1)])
def test_bad_interval_rejected(interval):
    with pytest.raises(InputError, match="interval"):
        dense("x", interval)
    with pytest.raises(InputError, match="interval"):
        sparse("x", interval)


@pytest.mark.parametrize("points", [0, 1, -5, 2.5, True, "10"])
def test_bad_point_count_rejected(points):
    with pytest.raises(InputError, match="points"):
        dense("x", (0, 1), points=points)


def test_sparse_is_seeded_sorted_and_separate():
    a = sparse("sin(x)", (-1.0, 2.0), n_train=10, seed=7)
    b = sparse("sin(x)", (-1.0, 2.0), n_train=10, seed=7)
    c = sparse("sin(x)", (-1.0, 2.0), n_train=10, seed=8)
    np.testing.assert_array_equal(a.x, b.x)
    np.testing.assert_array_equal(a.test_x, b.test_x)
    assert not np.array_equal(a.x, c.x)
    assert not np.array_equal(a.x, a.test_x)
    for arr in (a.x, a.test_x):
        assert np.all(np.diff(arr) > 0)
        assert arr.min() >= -1.0 and arr.max() <= 2.0
    np.testing.assert_array_equal(a.y, np.sin(a.x))
    np.testing.assert_array_equal(a.test_y, np.sin(a.test_x))
    assert a.x.size == 10 and a.test_x.size == 10  # n_test defaults to n_train
    # The training draw does not depend on the number of test points.
    d = sparse("sin(x)", (-1.0, 2.0), n_train=10, n_test=37, seed=7)
    np.testing.assert_array_equal(d.x, a.x)
    assert d.test_x.size == 37


def test_sparse_does_not_touch_global_random_state():
    np.random.seed(0)
    before = np.random.random()
    np.random.seed(0)
    sparse("x", n_train=5, seed=3)
    assert np.random.random() == before


@pytest.mark.parametrize("kw", [dict(n_train=1), dict(n_train=0), dict(n_train=3.0),
                                dict(n_test=0), dict(seed=-1), dict(seed=1.5), dict(seed=True)])
def test_sparse_bad_counts_rejected(kw):
    with pytest.raises(InputError):
        sparse("x", **kw)


# ---------------------------------------------------------------------------------------------
# CSV


def _write(tmp_path, text, name="data.csv", mode="w"):
    p = tmp_path / name
    if mode == "wb":
        p.write_bytes(text)
    else:
        p.write_text(text)
    return p


def test_csv_with_header_unsorted_comments_and_blanks(tmp_path):
    p = _write(tmp_path, "x, y\n# a comment\n0.5,0.25\n\n0.0, 0.0\n1.0,1.0\n")
    d = from_csv(p)
    np.testing.assert_array_equal(d.x, [0.0, 0.5, 1.0])
    np.testing.assert_array_equal(d.y, [0.0, 0.25, 1.0])
    np.testing.assert_array_equal(d.test_x, d.x)
    assert d.interval == (0.0, 1.0) and d.name == "data"


def test_csv_without_header(tmp_path):
    d = from_csv(_write(tmp_path, "1,2\n3,4\n-1e-3,5\n"))
    np.testing.assert_array_equal(d.x, [-1e-3, 1.0, 3.0])
    np.testing.assert_array_equal(d.y, [5.0, 2.0, 4.0])


@pytest.mark.parametrize("text,fragment", [
    ("", "0 data rows"),
    ("x,y\n", "0 data rows"),
    ("1,2\n", "1 data rows"),
    ("1,2,3,4\n4,5,6,7\n", "4 columns"),
    ("1\n2\n", "1 columns"),
    ("x,y\n1,2\n3,abc\n", "line 3"),
    ("1,2\nx,y\n3,4\n", "line 2"),  # a header only on the first data line
    ("1,y\n2,3\n4,5\n", "line 1"),  # half-numeric first row is not a header
    ("1,2\n2,nan\n", "not finite"),
    ("1,2\ninf,3\n", "not finite"),
    ("0,1\n0.5,2\n0.5,3\n", "duplicate x=0.5"),
])
def test_csv_invalid_content_rejected(tmp_path, text, fragment):
    with pytest.raises(InputError) as info:
        from_csv(_write(tmp_path, text))
    assert fragment in str(info.value), str(info.value)


def test_csv_missing_directory_and_binary_rejected(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        from_csv(tmp_path / "nope.csv")
    with pytest.raises(InputError, match="does not exist"):
        from_csv(tmp_path)
    with pytest.raises(InputError, match="cannot be read"):
        from_csv(_write(tmp_path, b"\xff\xfe\x00\x01,2\n", mode="wb"))
    with pytest.raises(InputError, match="path"):
        from_csv(None)


def test_csv_test_split_is_seeded_and_disjoint(tmp_path):
    rows = "\n".join(f"{i / 20},{(i / 20) ** 2}" for i in range(21))
    p = _write(tmp_path, rows)
    a = from_csv(p, test_fraction=0.25, seed=1)
    b = from_csv(p, test_fraction=0.25, seed=1)
    np.testing.assert_array_equal(a.test_x, b.test_x)
    assert a.test_x.size == 5 and a.x.size == 16
    assert not set(a.x) & set(a.test_x)
    np.testing.assert_array_equal(np.sort(np.r_[a.x, a.test_x]), np.arange(21) / 20)
    np.testing.assert_allclose(a.test_y, a.test_x**2)
    assert np.all(np.diff(a.x) > 0) and np.all(np.diff(a.test_x) > 0)
    for bad in (-0.1, 1.0, "half", math.nan):
        with pytest.raises(InputError, match="test_fraction"):
            from_csv(p, test_fraction=bad)
    with pytest.raises(InputError, match="training rows"):
        from_csv(_write(tmp_path, "0,0\n1,1\n", name="two.csv"), test_fraction=0.5)


# Survivors of `python tools/mutation.py targets --inprocess` (docs/testing.md), pinned.

def test_a_2d_target_reads_x_y_and_r_from_their_own_columns():
    t = parse_target("x - 2*y + 10*r")
    p = np.array([[3.0, 4.0], [1.0, 0.0]])
    np.testing.assert_array_equal(t(p), [3 - 8 + 50, 1 + 10])
    with pytest.raises(InputError, match="points must be"):
        t(np.ones(2))            # 1D points for a 2D target
    with pytest.raises(InputError, match="points must be"):
        t(np.ones((3, 3)))       # three columns


def test_nesting_is_refused_exactly_past_the_limit():
    from relu_regions.targets import MAX_DEPTH

    def nested(levels, wrap):
        text = "x"
        for _ in range(levels):
            text = wrap(text)
        return text

    for wrap in (lambda t: f"-({t})", lambda t: f"({t}) + 1", lambda t: f"1 + ({t})",
                 lambda t: f"sin({t})"):
        parse_target(nested(MAX_DEPTH, wrap))                    # the limit itself is allowed
        with pytest.raises(InputError, match=f"nested deeper than {MAX_DEPTH}"):
            parse_target(nested(MAX_DEPTH + 1, wrap))


def test_a_module_prefix_is_named_in_the_message():
    for text, name in (("np.pi * x", "pi"), ("math.e + x", "e")):
        with pytest.raises(InputError, match=f"write {name} without the prefix"):
            parse_target(text)
    with pytest.raises(InputError, match="by bare name, e.g. sin"):
        parse_target("np.sin(x)")
    with pytest.raises(InputError) as err:
        parse_target("x.real")
    assert "without the prefix" not in str(err.value)
