"""What a FitResult tells its user: a warning when predict leaves the fitted interval, and the
held-out error beside the training error with a note when it is far larger."""

import json
import warnings

import numpy as np
import pytest
import torch
from torch import nn

from relu_regions.cli import main
from relu_regions.targets import Dataset
from relu_regions.training.result import OVERFIT_RATIO, FitResult


def _result(interval=(0.0, 0.3), inputs=1, train_mse=(1e-4, 3e-4), test_mse=None, n_test=5):
    """A FitResult around a fixed net, without training: ``test_mse`` given means a held-out
    share of ``n_test`` points, None means the test points are the training points."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(inputs, 4), nn.ReLU(), nn.Linear(4, 1)).double()
    train_mse = np.array(train_mse)
    x = np.linspace(0, 0.3, 20) if inputs == 1 else np.zeros((20, 2))
    test_x = x if test_mse is None else x[:n_test] + 0.01
    data = Dataset(x, np.zeros(len(x)), test_x, np.zeros(len(test_x)), interval, "t")
    mse = train_mse.copy() if test_mse is None else np.array(test_mse)
    return FitResult(method="raai", target="t", depth=1, width=4, seeds=[0, 1],
                     interval=interval, mse=mse, train_mse=train_mse, pieces=np.array([2, 2]),
                     optimal_mse=None, efficiency=None, history={"phase_boundary": 0},
                     models=[model, model], widths=[inputs, 4, 1], data=data)


def _direct(result, x):
    with torch.no_grad():
        return result.best(torch.as_tensor(np.asarray(x, dtype=np.float64))).reshape(-1).numpy()


def test_predict_inside_the_interval_is_silent_even_for_float32_ends():
    r = _result()
    x = np.linspace(0.0, 0.3, 7, dtype=np.float32)  # float32(0.3) is 0.30000001
    assert np.float64(x[-1]) > 0.3
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        r.predict(x)
        r.predict(torch.tensor(x))


def test_predict_outside_the_interval_warns_and_returns_the_same_values():
    r = _result()
    x = np.array([-0.1, 0.0, 0.2, 0.45])
    with pytest.warns(UserWarning, match=r"2 of 4 points lie outside the fitted interval "
                                         r"\[0, 0\.3\] \(the points span \[-0\.1, 0\.45\]\)"):
        got = r.predict(x)
    np.testing.assert_array_equal(got, _direct(r, x[:, None]))
    with pytest.warns(UserWarning, match="outside the fitted interval"):
        r.predict([0.3 + 1e-4])  # just past the end: beyond the float rounding allowance


def test_predict_outside_a_2d_box_names_both_inputs():
    r = _result(interval=((0.0, 1.0), (-1.0, 1.0)), inputs=2)
    inside = np.array([[0.0, -1.0], [1.0, 1.0], [0.5, 0.0]])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        r.predict(inside)
    with pytest.warns(UserWarning, match=r"1 of 4 points lie outside the fitted box x in \[0, 1\], "
                                         r"y in \[-1, 1\] \(the points span x in \[0, 1\], "
                                         r"y in \[-1, 2\]\)"):
        got = r.predict(np.vstack([inside, [[0.5, 2.0]]]))
    np.testing.assert_array_equal(got[:3], _direct(r, inside))


def test_no_held_out_share_no_ratio_and_no_note():
    s = _result(train_mse=(1e-6, 1e-2)).summary()
    assert not s["held_out"] and s["test_over_train"] is None and s["overfit_note"] is None


@pytest.mark.parametrize("factor", [0.99, 1.01])
def test_the_note_appears_above_the_ratio_and_not_below(factor):
    train = (1e-4, 3e-4)
    test = tuple(factor * OVERFIT_RATIO * v for v in train)
    r = _result(train_mse=train, test_mse=test, n_test=6)
    s = r.summary()
    assert s["held_out"]
    assert s["test_over_train"] == pytest.approx(factor * OVERFIT_RATIO, rel=1e-12)
    # the numbers that were there before are unchanged
    assert (s["train_mse_mean"], s["mse_mean"]) == (np.mean(train), np.mean(test))
    assert s["mse_min"] == min(test)
    if factor > 1:
        assert s["overfit_note"] == (
            f"overfitting? the held-out MSE (6 points) is {factor * OVERFIT_RATIO:.3g}x the "
            f"training MSE, more than {OVERFIT_RATIO:g}x: noise, or too few points for this "
            f"many pieces; a smaller depth or more points would generalize better")
    else:
        assert s["overfit_note"] is None
    assert json.loads(json.dumps(r.to_dict()))["overfit_note"] == s["overfit_note"]


def test_a_zero_training_mse_still_gets_the_note():
    s = _result(train_mse=(0.0, 0.0), test_mse=(1e-3, 1e-3)).summary()
    assert s["test_over_train"] is None and "far above the training MSE" in s["overfit_note"]


def test_train_prints_the_note_for_a_net_that_interpolates_noise(tmp_path, capsys):
    rng = np.random.default_rng(1)
    x = np.linspace(0, 1, 14)
    y = x**2 + 0.05 * rng.standard_normal(x.size)
    csv = tmp_path / "noisy.csv"
    csv.write_text("x,y\n" + "".join(f"{a!r},{b!r}\n"
                                     for a, b in zip(x.tolist(), y.tolist(), strict=True)))
    argv = ["train", "--data", str(csv), "--depth", "4", "--seeds", "1", "--phase1", "lm:20",
            "--phase2", "lm:60", "--starts", "1", "--test-fraction", "0.3", "--quiet"]
    assert main([*argv, "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["mse_mean"] > OVERFIT_RATIO * d["train_mse_mean"]
    assert d["test_over_train"] == pytest.approx(d["mse_mean"] / d["train_mse_mean"])
    assert main(argv) == 0
    lines = capsys.readouterr().out.splitlines()
    at = next(i for i, line in enumerate(lines) if line.startswith("train MSE (fitted points)"))
    assert lines[at - 1].startswith("test MSE (held-out points)")
    assert lines[at + 1] == d["overfit_note"]
